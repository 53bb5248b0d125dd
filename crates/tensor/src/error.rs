//! One error type for the numeric core. Every variant carries the shapes a
//! user needs to see what went wrong, so a mismatch is diagnosed from the
//! message alone.

use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq)]
pub enum TensorError {
    #[error("{what}: shape {shape:?} holds {expected} elements but {got} were given")]
    DataLength {
        what: String,
        shape: Vec<usize>,
        expected: usize,
        got: usize,
    },
    #[error("{what}: expected shape {expected:?}, got {got:?}")]
    Shape {
        what: String,
        expected: Vec<usize>,
        got: Vec<usize>,
    },
    #[error("{what}: expected a rank-{expected} tensor, got shape {got:?}")]
    Rank {
        what: String,
        expected: usize,
        got: Vec<usize>,
    },
    #[error("{0}")]
    Geometry(String),
}

pub type Result<T> = std::result::Result<T, TensorError>;
