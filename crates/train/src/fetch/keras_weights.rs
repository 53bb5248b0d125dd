//! Finding Keras's ImageNet weights files, or fetching them.
//!
//! Keras keeps them in `$KERAS_HOME/models` (default `~/.keras/models`)
//! under names like `resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5`;
//! a machine that ever ran `ResNet50(weights="imagenet")` already has the
//! file, so that folder is looked in first (read only: we never write into
//! Keras's cache), then ours, and only then is the file downloaded, into
//! ours. Names, URL and md5 hashes are Keras's own (`WEIGHTS_HASHES` in
//! `keras/src/applications/resnet.py`, shared by `resnet_v2.py`).
//!
//! `IMAGENET_WEIGHTS_URL` / `IMAGENET_WEIGHTS_MD5` replace the URL and md5
//! of the tutorial's file only: ResNet50 without its top
//! (`include_top=False`). Other models and the with-top files keep Keras's
//! URL and md5. The file keeps Keras's name either way, so a mirror's copy
//! and Keras's copy are the same cache entry.

use std::fmt;
use std::path::{Path, PathBuf};

use super::checksum::{file_md5, parse_md5};
use super::download::{fetch, Remote};
use super::error::FetchError;
use super::{cache_dir, home_dir, non_empty_env};

/// Where Keras's application weights are published.
pub const IMAGENET_WEIGHTS_BASE_URL: &str =
    "https://storage.googleapis.com/tensorflow/keras-applications/resnet/";

/// Keras's `WEIGHTS_HASHES`: (model, md5 with top, md5 without top).
pub const KERAS_WEIGHTS: [(&str, &str, &str); 6] = [
    (
        "resnet50",
        "2cb95161c43110f7111970584f804107",
        "4d473c1dd8becc155b73f8504c6f6626",
    ),
    (
        "resnet101",
        "f1aeb4b969a6efcfb50fad2f0c20cfc5",
        "88cf7a10940856eca736dc7b7e228a21",
    ),
    (
        "resnet152",
        "100835be76be38e30d865e96f2aaae62",
        "ee4c566cf9a93f14d82f913c2dc6dd0c",
    ),
    (
        "resnet50v2",
        "3ef43a0b657b3be2300d5770ece849e0",
        "fac2f116257151a9d068a22e544a4917",
    ),
    (
        "resnet101v2",
        "6343647c601c52e1368623803854d971",
        "c0ed64b8031c3730f411d2eb4eea35b5",
    ),
    (
        "resnet152v2",
        "a49b44d1979771252814e80f8ec446f9",
        "ed17cf2e0169df9d443503ef94b23b33",
    ),
];

/// Environment variable replacing the URL of ResNet50's no-top file.
pub const IMAGENET_WEIGHTS_URL_ENV: &str = "IMAGENET_WEIGHTS_URL";
/// Environment variable replacing the md5 of ResNet50's no-top file.
pub const IMAGENET_WEIGHTS_MD5_ENV: &str = "IMAGENET_WEIGHTS_MD5";

/// `$KERAS_HOME`, else `~/.keras` (Keras's `config.keras_home()`).
pub fn keras_home() -> Option<PathBuf> {
    non_empty_env("KERAS_HOME")
        .map(PathBuf::from)
        .or_else(|| home_dir().map(|h| h.join(".keras")))
}

/// "resnet50", "ResNet50V2", "resnet_101" ... to Keras's `model_name`.
/// Whether Keras publishes ImageNet weights for `model` (a Keras model name).
pub fn keras_weights_known(model: &str) -> bool {
    let name = keras_model_name(model);
    KERAS_WEIGHTS.iter().any(|w| w.0 == name)
}

fn keras_model_name(model: &str) -> String {
    model
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect::<String>()
        .to_ascii_lowercase()
}

/// The weights file for `model` given both overrides (`None`: not set;
/// they apply to ResNet50 without top only).
pub fn weights_remote_from(
    model: &str,
    include_top: bool,
    url: Option<String>,
    md5: Option<String>,
) -> Result<Remote, FetchError> {
    let name = keras_model_name(model);
    let Some(&(_, top_md5, notop_md5)) = KERAS_WEIGHTS.iter().find(|w| w.0 == name) else {
        return Err(FetchError::UnknownModel {
            model: model.to_string(),
            known: KERAS_WEIGHTS.map(|w| w.0).join(", "),
        });
    };
    let file_name = if include_top {
        format!("{name}_weights_tf_dim_ordering_tf_kernels.h5")
    } else {
        format!("{name}_weights_tf_dim_ordering_tf_kernels_notop.h5")
    };
    let mut remote = Remote {
        url: format!("{IMAGENET_WEIGHTS_BASE_URL}{file_name}"),
        md5: (if include_top { top_md5 } else { notop_md5 }).to_string(),
        file_name,
    };
    if name == "resnet50" && !include_top {
        if let Some(url) = url {
            remote.url = url;
        }
        if let Some(md5) = md5 {
            remote.md5 = parse_md5(IMAGENET_WEIGHTS_MD5_ENV, &md5)?;
        }
    }
    Ok(remote)
}

/// The weights file for `model`, with the environment's overrides.
pub fn weights_remote(model: &str, include_top: bool) -> Result<Remote, FetchError> {
    weights_remote_from(
        model,
        include_top,
        non_empty_env(IMAGENET_WEIGHTS_URL_ENV),
        non_empty_env(IMAGENET_WEIGHTS_MD5_ENV),
    )
}

/// Where a weights file was found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WeightsOrigin {
    /// In Keras's own cache.
    KerasCache,
    /// In ours, from an earlier download.
    OurCache,
    /// Downloaded by this call.
    Downloaded { url: String },
}

/// A verified weights file and where it came from (for the log).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WeightsFound {
    pub path: PathBuf,
    pub origin: WeightsOrigin,
}

impl fmt::Display for WeightsFound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = self.path.display();
        match &self.origin {
            WeightsOrigin::KerasCache => write!(f, "{p} (Keras's cache, md5 verified)"),
            WeightsOrigin::OurCache => write!(f, "{p} (our cache, md5 verified)"),
            WeightsOrigin::Downloaded { url } => write!(f, "{p} (downloaded from {url})"),
        }
    }
}

/// [`keras_weights`] with the folders given: `keras_models` (looked in,
/// never written; `None` when there is no home) then `our_models` (looked
/// in, downloaded into).
pub fn keras_weights_in(
    remote: &Remote,
    keras_models: Option<&Path>,
    our_models: &Path,
) -> Result<WeightsFound, FetchError> {
    if let Some(dir) = keras_models {
        let path = dir.join(&remote.file_name);
        if path.is_file() {
            // No sidecar: Keras's folder is not ours to write in.
            match file_md5(&path, false) {
                Ok(md5) if md5 == remote.md5 => {
                    return Ok(WeightsFound {
                        path,
                        origin: WeightsOrigin::KerasCache,
                    })
                }
                Ok(md5) => eprintln!(
                    "ignoring {}: md5 {md5}, expected {}",
                    path.display(),
                    remote.md5
                ),
                Err(e) => eprintln!("ignoring {e}"),
            }
        }
    }
    let fetched = fetch(remote, our_models)?;
    Ok(WeightsFound {
        path: fetched.path,
        origin: if fetched.downloaded {
            WeightsOrigin::Downloaded {
                url: remote.url.clone(),
            }
        } else {
            WeightsOrigin::OurCache
        },
    })
}

/// Keras's ImageNet weights for `model` ("resnet50", "resnet101",
/// "resnet152", "resnet50v2", "resnet101v2", "resnet152v2"; case and `_`
/// ignored), `include_top` as in Keras: from `$KERAS_HOME/models`, else
/// from our cache's `models/`, else downloaded there and md5 verified.
pub fn keras_weights(model: &str, include_top: bool) -> Result<WeightsFound, FetchError> {
    let remote = weights_remote(model, include_top)?;
    let keras_models = keras_home().map(|h| h.join("models"));
    keras_weights_in(
        &remote,
        keras_models.as_deref(),
        &cache_dir().join("models"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keras_names_hashes_and_overrides() {
        let r = weights_remote_from("resnet50", false, None, None).unwrap();
        assert_eq!(
            r.file_name,
            "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
        );
        assert_eq!(
            r.url,
            "https://storage.googleapis.com/tensorflow/keras-applications/resnet/\
             resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
        );
        assert_eq!(r.md5, "4d473c1dd8becc155b73f8504c6f6626");

        let r = weights_remote_from("ResNet152V2", true, None, None).unwrap();
        assert_eq!(
            r.file_name,
            "resnet152v2_weights_tf_dim_ordering_tf_kernels.h5"
        );
        assert_eq!(r.md5, "a49b44d1979771252814e80f8ec446f9");

        let url = Some("http://127.0.0.1:1/w.h5".to_string());
        let md5 = Some("00000000000000000000000000000001".to_string());
        let r = weights_remote_from("resnet_50", false, url.clone(), md5.clone()).unwrap();
        assert_eq!(r.url, "http://127.0.0.1:1/w.h5");
        assert_eq!(r.md5, "00000000000000000000000000000001");
        assert_eq!(
            r.file_name, "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
            "Keras's name kept"
        );
        // The overrides concern ResNet50's no-top file only.
        let r = weights_remote_from("resnet50", true, url.clone(), md5.clone()).unwrap();
        assert_eq!(r.md5, "2cb95161c43110f7111970584f804107");
        let r = weights_remote_from("resnet101", false, url, md5).unwrap();
        assert_eq!(r.md5, "88cf7a10940856eca736dc7b7e228a21");

        let e = weights_remote_from("vgg16", false, None, None).unwrap_err();
        assert!(
            e.to_string().contains("vgg16") && e.to_string().contains("resnet152v2"),
            "{e}"
        );
        let e = weights_remote_from("resnet50", false, None, Some("x".into())).unwrap_err();
        assert!(e.to_string().contains("IMAGENET_WEIGHTS_MD5"), "{e}");
    }
}
