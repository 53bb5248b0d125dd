//! Fetching what the tutorial needs from the network, once: the CIFAR-10
//! binary release and Keras's ImageNet weights.
//!
//! A Keras user writes `cifar10.load_data()` and
//! `ResNet50(weights="imagenet")`; Keras's `get_file` downloads, checks the
//! md5 and caches. This module does the same job (see [`fetch`]), with two
//! differences: a transfer goes to a temporary file and is renamed only once
//! complete and verified, and a verified file gets a sidecar so later runs
//! do not hash it again.
//!
//! Where things go ([`cache_dir`]): `$RESNET_RS_CACHE` if set, else
//! `$XDG_CACHE_HOME/resnet-rs`, else `~/.cache/resnet-rs`; data sets under
//! `datasets/`, weights under `models/` (Keras's own layout below
//! `~/.keras`, which [`keras_weights`] also looks in).

mod checksum;
mod cifar10;
mod download;
mod error;
mod keras_weights;

use std::path::{Path, PathBuf};

pub use checksum::{file_md5, md5_file, md5_hex, parse_md5, sidecar_path};
pub use cifar10::{
    cifar10_remote, cifar10_remote_from, CIFAR10_DEFAULT_MD5, CIFAR10_DEFAULT_URL, CIFAR10_FILE,
    CIFAR10_MD5_ENV, CIFAR10_URL_ENV,
};
pub use download::{download, fetch, Fetched, Remote};
pub use error::FetchError;
pub use keras_weights::{
    keras_home, keras_weights, keras_weights_in, keras_weights_known, weights_remote,
    weights_remote_from, WeightsFound, WeightsOrigin, IMAGENET_WEIGHTS_BASE_URL,
    IMAGENET_WEIGHTS_MD5_ENV, IMAGENET_WEIGHTS_URL_ENV, KERAS_WEIGHTS,
};

/// Environment variable that moves the cache folder.
pub const CACHE_ENV: &str = "RESNET_RS_CACHE";

fn non_empty_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// The user's home folder (`$HOME`, or `%USERPROFILE%` on Windows).
pub(crate) fn home_dir() -> Option<PathBuf> {
    non_empty_env("HOME")
        .or_else(|| non_empty_env("USERPROFILE"))
        .map(PathBuf::from)
}

/// Our download cache: `$RESNET_RS_CACHE`, else `$XDG_CACHE_HOME/resnet-rs`,
/// else `~/.cache/resnet-rs`, else (no home at all) `./.cache/resnet-rs`.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = non_empty_env(CACHE_ENV) {
        return PathBuf::from(dir);
    }
    // The XDG spec: a relative XDG_CACHE_HOME is invalid and ignored.
    if let Some(xdg) = non_empty_env("XDG_CACHE_HOME").filter(|p| Path::new(p).is_absolute()) {
        return PathBuf::from(xdg).join("resnet-rs");
    }
    home_dir()
        .unwrap_or_else(|| PathBuf::from("."))
        .join(".cache/resnet-rs")
}
