//! The one error type of the downloader.
//!
//! Why every variant names the URL and, where it applies, both the expected
//! and the actual value: a failed download is usually fixed by hand (another
//! mirror, a proxy, a file copied in), and the person doing it needs to know
//! which file, from where, and how far it got.

use std::io;
use std::path::PathBuf;

use thiserror::Error;

/// Errors fetching a file. None of them leaves a file at the destination.
#[derive(Debug, Error)]
pub enum FetchError {
    /// The server answered, but not with the file (404, 500, ...).
    #[error("{url}: the server answered HTTP {status} {reason}")]
    Http {
        url: String,
        status: u16,
        reason: String,
    },
    /// No answer: DNS failure, connection refused, TLS failure, timeout.
    #[error("{url}: cannot connect: {reason}")]
    Transport { url: String, reason: String },
    /// The connection broke, or the body ended before `Content-Length`.
    #[error(
        "{url}: transfer cut short after {received} bytes{}: {reason}",
        expected.map_or(String::new(), |n| format!(" of {n}"))
    )]
    Truncated {
        url: String,
        received: u64,
        expected: Option<u64>,
        reason: String,
    },
    /// The whole body arrived but is not the published file.
    #[error(
        "{url}: md5 mismatch: expected {expected}, got {actual} ({bytes} bytes received); \
         the download was discarded (a corrupt transfer, a changed file, or a wrong \
         checksum given)"
    )]
    Checksum {
        url: String,
        expected: String,
        actual: String,
        bytes: u64,
    },
    /// A checksum given by the user that cannot be an md5.
    #[error("{what}: '{value}' is not an md5 (32 hexadecimal digits)")]
    BadChecksum { what: String, value: String },
    /// A model Keras publishes no ImageNet weights for.
    #[error("no Keras ImageNet weights for model '{model}' (known: {known})")]
    UnknownModel { model: String, known: String },
    /// Local file system trouble (cache folder not writable, disk full...).
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl FetchError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> FetchError {
        let path = path.into();
        move |source| FetchError::Io { path, source }
    }
}
