//! The legacy Keras 2 layout: tf_keras `save_weights('x.h5')`, the official
//! `resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5`, and the
//! `model_weights` group of a full `model.save('x.h5')`.
//!
//! The group holding the weights has a `layer_names` attribute (possibly
//! split into `layer_names0`, `layer_names1`, ...); each listed layer's group
//! has `weight_names` (`conv1_conv/kernel:0`, ...) naming datasets relative to
//! it, so the tensor is `<layer>/<layer>/kernel:0`. A nested model (the
//! tutorial's base inside an outer model) is one layer whose group holds all
//! its layers' weights, and whose weight names say which layer each is.

use super::caffe::{self, Kind};
use super::h5::{self, bail, Result};
use super::{Layout, Tensors};
use hdf5_reader::Hdf5File;
use std::collections::BTreeSet;

/// The group holding `layer_names`: the root, or a full-model file's
/// `model_weights`; `None` if the file has neither.
pub(crate) fn weights_group(file: &Hdf5File) -> Result<Option<String>> {
    for path in ["/", "/model_weights"] {
        if path != "/" && !h5::has_group(file, "/", "model_weights")? {
            continue;
        }
        let attrs = h5::attributes(file, path)?;
        if h5::string_list(&attrs, path, "layer_names")?.is_some() {
            return Ok(Some(path.to_string()));
        }
    }
    Ok(None)
}

/// `conv1_bn/gamma:0` -> (Some(`conv1_bn`), `gamma`); `gamma:0` -> (None, `gamma`).
fn split_weight_name(name: &str) -> (Option<&str>, &str) {
    let name = match name.rsplit_once(':') {
        Some((n, idx)) if !idx.is_empty() && idx.chars().all(|c| c.is_ascii_digit()) => n,
        _ => name,
    };
    let mut parts = name.rsplit('/');
    let weight = parts.next().unwrap_or(name);
    (parts.next(), weight)
}

/// `conv1_bn_1` -> `conv1_bn`: the uniquifying suffix Keras gives a layer
/// name when a model is built twice in one session. Only a name whose
/// remainder is a weighted Keras layer name (`..._conv`, `..._bn`,
/// `predictions`) is stripped, so `conv1_conv` itself never is.
fn strip_uniquifier(layer: &str) -> &str {
    match layer.rsplit_once('_') {
        Some((base, n))
            if !n.is_empty()
                && n.chars().all(|c| c.is_ascii_digit())
                && (base.ends_with("_conv") || base.ends_with("_bn") || base == "predictions") =>
        {
            base
        }
        _ => layer,
    }
}

/// A weighted Keras layer name of the modern applications (`conv1_conv`,
/// `conv2_block1_0_bn`, `post_bn`, `predictions`).
fn is_modern(layer: &str) -> bool {
    layer.ends_with("_conv") || layer.ends_with("_bn") || layer == "predictions"
}

/// Reads every weight under `root` (see the module docs).
pub(crate) fn read(file: &Hdf5File, root: &str) -> Result<(Tensors, Layout)> {
    let attrs = h5::attributes(file, root)?;
    let layer_names = h5::string_list(&attrs, root, "layer_names")?.unwrap_or_default();
    let version = match h5::string_attr(&attrs, root, "keras_version")? {
        Some(v) => Some(v),
        None => h5::string_attr(&h5::attributes(file, "/")?, "/", "keras_version")?,
    };
    if let Some(backend) = h5::string_attr(&attrs, root, "backend")? {
        if backend.eq_ignore_ascii_case("theano") {
            bail!(
                "saved with the Theano backend (channels-first, flipped kernels); only \
                 TensorFlow-ordered files are supported"
            );
        }
    }

    // (layer, weight, dataset path) under the names the file records.
    let mut raw = Vec::new();
    let (groups, _) = h5::members(file, root)?;
    for layer in &layer_names {
        if !groups.contains(layer) {
            bail!(
                "layer_names lists '{layer}' but the file has no group {}",
                h5::join(root, layer)
            );
        }
        let gpath = h5::join(root, layer);
        let weight_names = h5::string_list(&h5::attributes(file, &gpath)?, &gpath, "weight_names")?
            .unwrap_or_default();
        let owners: BTreeSet<&str> = weight_names
            .iter()
            .filter_map(|w| split_weight_name(w).0)
            .filter(|o| o != layer)
            .collect();
        let nested = owners.len() > 1;
        for w in &weight_names {
            let (owner, weight) = split_weight_name(w);
            // A plain layer's group name is authoritative: its weight names
            // can carry a uniquifying suffix (`conv1_conv_1/kernel:0`).
            let name = if nested {
                owner.unwrap_or(layer)
            } else {
                layer.as_str()
            };
            raw.push((name.to_string(), weight.to_string(), h5::join(&gpath, w)));
        }
    }

    let has_caffe = raw.iter().any(|(l, _, _)| caffe::modern_layer(l).is_some());
    let has_modern = raw.iter().any(|(l, _, _)| is_modern(l));
    if has_caffe && has_modern {
        bail!("mixes caffe-style layer names (res2a_branch2a ...) with modern ones (conv2_block1_1_conv ...); cannot tell which network it is");
    }
    let layout = if has_caffe && !has_modern {
        Layout::legacy_caffe(version)
    } else {
        Layout::legacy(version)
    };

    let mut tensors = Tensors::new();
    for (layer, weight, path) in raw {
        let (name, is_scale) = if has_caffe {
            let Some((modern, kind)) = caffe::modern_layer(&layer) else {
                bail!("dataset {path}: layer '{layer}' is not part of the caffe-named ResNet");
            };
            let role = caffe::modern_weight(kind, &weight, &layer)
                .or_else(|e| h5::fail(format!("dataset {path}: {e}")))?;
            (format!("{modern}/{role}"), kind == Kind::Scale)
        } else {
            (format!("{}/{weight}", strip_uniquifier(&layer)), false)
        };
        if is_scale && tensors.contains(&name) {
            bail!("dataset {path}: both the batchnorm and the caffe Scale layer define {name}; folding two affine transforms is not supported");
        }
        tensors.insert(file, name, &path)?;
    }
    Ok((tensors, layout))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weight_names() {
        assert_eq!(
            split_weight_name("conv1_bn/gamma:0"),
            (Some("conv1_bn"), "gamma")
        );
        assert_eq!(
            split_weight_name("resnet/conv1_bn/gamma:0"),
            (Some("conv1_bn"), "gamma")
        );
        assert_eq!(split_weight_name("gamma"), (None, "gamma"));
        assert_eq!(strip_uniquifier("conv1_bn_1"), "conv1_bn");
        assert_eq!(strip_uniquifier("predictions_12"), "predictions");
        assert_eq!(strip_uniquifier("conv1_conv"), "conv1_conv");
        assert_eq!(
            strip_uniquifier("conv2_block1_1_conv"),
            "conv2_block1_1_conv"
        );
    }
}
