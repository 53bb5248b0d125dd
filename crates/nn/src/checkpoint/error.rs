//! The one error type of everything that reads or writes checkpoint and
//! weight files.
//!
//! Every variant names the file, and the tensor where one is at fault, so a
//! message alone says what to fix: which file is truncated, which tensor has
//! the wrong shape (with both shapes), which parameters a file lacks.

use std::io;
use std::path::PathBuf;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum CheckpointError {
    /// The file could not be opened or read.
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// The file (or its temporary sibling) could not be written.
    #[error("{path}: cannot write: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// The file is shorter than its own header says: an interrupted copy or
    /// a write that did not go through [`super::write_atomic`].
    #[error(
        "{path}: truncated: {got} of {} bytes (an interrupted write or an incomplete copy)",
        needed_text(*.needed, *.at_least)
    )]
    Truncated {
        path: PathBuf,
        got: u64,
        needed: u64,
        /// Only a lower bound is known (the header itself is cut).
        at_least: bool,
    },

    /// The bytes are not a safetensors file (corrupt header, bad offsets...).
    #[error("{path}: not a valid safetensors file: {reason}")]
    Format { path: PathBuf, reason: String },

    /// A Keras `.h5` file that cannot be read (see [`crate::keras_h5`]).
    #[error("{path}: {msg}")]
    H5 { path: PathBuf, msg: String },

    /// A tensor is stored in a dtype that is not widened to f32.
    #[error(
        "{path}: tensor '{tensor}' has dtype {dtype}; only F32, F16, BF16 and F64 can be read"
    )]
    Dtype {
        path: PathBuf,
        tensor: String,
        dtype: String,
    },

    /// A tensor's shape differs from the shape its parameter has.
    #[error(
        "{path}: tensor '{tensor}' has shape {got:?}, the model's parameter has shape {expected:?}"
    )]
    Shape {
        path: PathBuf,
        tensor: String,
        expected: Vec<usize>,
        got: Vec<usize>,
    },

    /// A weights tensor that is not a parameter of the model.
    #[error("{path}: tensor '{tensor}' is not a parameter of this model")]
    Unexpected { path: PathBuf, tensor: String },

    /// A state tensor (optimizer moment...) for a parameter the model lacks.
    #[error("{path}: tensor '{tensor}' holds state of parameter '{param}', which this model does not have")]
    UnknownParameter {
        path: PathBuf,
        tensor: String,
        param: String,
    },

    /// Tensors the model needs that the file lacks (`what`: "parameter",
    /// "optimizer state tensor").
    #[error("{path}: missing {} {what}(s): {}", .names.len(), .names.join(", "))]
    Missing {
        path: PathBuf,
        what: &'static str,
        names: Vec<String>,
    },

    /// A metadata entry is missing or malformed.
    #[error("{path}: metadata '{key}': {reason}")]
    Metadata {
        path: PathBuf,
        key: String,
        reason: String,
    },

    /// The file was written by an older version of this program in a layout
    /// that cannot be mapped onto this model.
    #[error("{path}: written by an older version of this program and cannot be read: {reason}")]
    OldFormat { path: PathBuf, reason: String },
}

fn needed_text(needed: u64, at_least: bool) -> String {
    if at_least {
        format!("at least {needed}")
    } else {
        needed.to_string()
    }
}
