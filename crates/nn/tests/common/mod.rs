//! Test support shared by several test files of this crate (cargo builds
//! each test file as its own crate, which uses only part of it).
#![allow(dead_code)]

pub mod keras_fixture;
