//! Shared by the downloader and data-path tests (`mod local_server;`): the
//! local HTTP server and small file helpers.
#![allow(dead_code)]

pub mod http;

use std::fs;
use std::path::Path;

/// The names in `dir`, sorted (empty if it does not exist).
pub fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().to_string())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Deterministic bytes that do not compress to nothing.
pub fn payload(n: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}
