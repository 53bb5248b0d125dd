//! The one error type of the data pipeline.
//!
//! Why every variant carries a path: with 60,000 files, "invalid JPEG" is
//! useless; the message must say which file (or which member of which
//! archive, written `archive.tar.gz/train/cat/0001.jpg`) to look at.

use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use thiserror::Error;

/// Errors loading CIFAR-10. Every variant names the file or folder at fault
/// (or, for a bad split, the counts).
#[derive(Debug, Error)]
pub enum DataError {
    /// A download setting that cannot work (e.g. a malformed `CIFAR10_MD5`).
    #[error(transparent)]
    Fetch(#[from] crate::fetch::FetchError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "{path}: size {size} bytes is not a multiple of the 3073-byte CIFAR-10 record \
         (1 label + 3072 pixels); the file is truncated or not a CIFAR-10 binary batch"
    )]
    Truncated { path: PathBuf, size: u64 },
    #[error("{path}: empty batch file (a CIFAR-10 batch holds at least one 3073-byte record)")]
    EmptyBatch { path: PathBuf },
    #[error("{path}: record {record} has label {label}, but CIFAR-10 labels are 0..=9")]
    BadLabel {
        path: PathBuf,
        record: usize,
        label: u8,
    },
    #[error("{path}: {reason}")]
    BadMeta { path: PathBuf, reason: String },
    #[error("{path}: cannot decode image: {reason}")]
    Decode { path: PathBuf, reason: String },
    #[error("{path}: image is {width}x{height}, expected 32x32")]
    WrongSize {
        path: PathBuf,
        width: usize,
        height: usize,
    },
    #[error(
        "{path}: class folder '{class}' is not a CIFAR-10 class (expected one of: {expected})"
    )]
    UnknownClass {
        path: PathBuf,
        class: String,
        expected: String,
    },
    #[error("{path}: image is not inside a class folder (expected {split}/<class>/<image>)")]
    NotInClassFolder { path: PathBuf, split: &'static str },
    #[error(
        "{path}: has no {split}/ folder (expected train/<class>/*.jpg|png and test/<class>/...)"
    )]
    MissingSplit { path: PathBuf, split: &'static str },
    #[error("{path}: {split}/ contains no .jpg/.jpeg/.png images")]
    NoImages { path: PathBuf, split: &'static str },
    #[error("{path}: not a CIFAR-10 source: {reason}")]
    Unrecognized { path: PathBuf, reason: String },
    #[error("{0}")]
    NotFound(String),
    #[error(
        "cannot hold out {held_out} of {len} training images for validation: \
         at least one must remain for training"
    )]
    Split { held_out: usize, len: usize },
    /// The stop flag was raised (SIGINT, SIGTERM, SIGHUP) while decoding.
    #[error("stopped while loading data; nothing to save")]
    Stopped,
}

impl DataError {
    /// [`DataError::Stopped`] if `stop` is raised: what the loaders check
    /// between images, archive members and batch files.
    pub(crate) fn check_stop(stop: &AtomicBool) -> Result<(), DataError> {
        if stop.load(Ordering::Relaxed) {
            Err(DataError::Stopped)
        } else {
            Ok(())
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> DataError {
        let path = path.into();
        move |source| DataError::Io { path, source }
    }
}
