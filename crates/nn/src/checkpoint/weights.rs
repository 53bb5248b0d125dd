//! A model's parameters in and out of safetensors files, by Keras name.
//!
//! The file format is the one `tools/keras_to_safetensors.py` writes and
//! `tools/safetensors_to_keras.py` reads: one tensor per parameter named
//! `<layer>/<weight>` (`conv1_conv/kernel`, `conv1_bn/moving_variance`),
//! kernels HWIO, dense kernels `[in, out]`, written as F32. Loading is by
//! name, never by position (Keras 2 and 3 order the `_0_conv` shortcut
//! differently), and all-or-nothing: every tensor is validated before any
//! parameter changes.

use super::error::CheckpointError;
use super::safetensors::{write, Metadata, TensorFile};
use autograd::ParamStore;
use std::collections::BTreeSet;
use std::path::Path;

/// Metadata key for the batchnorm epsilon the weights were trained with
/// (`tools/keras_to_safetensors.py` writes it: 1.001e-5 for Keras's
/// ResNet50, 1e-3 for the old caffe-named release).
pub const EPSILON_KEY: &str = "bn_epsilon";

/// What [`load`] did.
#[derive(Debug, Default)]
pub struct LoadReport {
    pub loaded: usize,
    /// Parameters the file did not hold, left at their initialization
    /// (allowed only under the prefixes the caller named, e.g. the head).
    pub left_at_init: Vec<String>,
    pub metadata: Metadata,
}

impl LoadReport {
    /// The batchnorm epsilon the file at `path` declares, if it declares one.
    pub fn bn_epsilon(&self, path: &Path) -> Result<Option<f32>, CheckpointError> {
        let Some(value) = self.metadata.get(EPSILON_KEY) else {
            return Ok(None);
        };
        match value.trim().parse::<f32>() {
            Ok(e) if e > 0.0 && e.is_finite() => Ok(Some(e)),
            _ => Err(CheckpointError::Metadata {
                path: path.into(),
                key: EPSILON_KEY.into(),
                reason: format!("'{value}' is not a positive number"),
            }),
        }
    }
}

/// Loads a safetensors file into `store` by name. Every tensor in the file
/// must be a parameter of the same shape; every parameter must be in the
/// file unless its name starts with one of `optional_prefixes` (load an
/// ImageNet base into a model with a fresh head: `&["predictions/"]`).
pub fn load(
    store: &mut ParamStore,
    path: &Path,
    optional_prefixes: &[&str],
) -> Result<LoadReport, CheckpointError> {
    load_from(store, TensorFile::read(path)?, optional_prefixes)
}

/// [`load`] from a file already read (resume reads the model file once, to
/// check its metadata before anything changes).
pub fn load_from(
    store: &mut ParamStore,
    file: TensorFile,
    optional_prefixes: &[&str],
) -> Result<LoadReport, CheckpointError> {
    let TensorFile {
        path,
        tensors,
        metadata,
    } = file;
    let mut updates = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        let id = store.id(&name).map_err(|_| CheckpointError::Unexpected {
            path: path.clone(),
            tensor: name.clone(),
        })?;
        let expected = store.value(id).shape();
        if expected != t.shape() {
            return Err(CheckpointError::Shape {
                path,
                tensor: name,
                expected: expected.to_vec(),
                got: t.shape().to_vec(),
            });
        }
        updates.push((id, t));
    }
    let present: BTreeSet<_> = updates.iter().map(|(id, _)| *id).collect();
    let absent = store
        .iter()
        .filter(|(id, _)| !present.contains(id))
        .map(|(_, p)| p.name.clone());
    let (left_at_init, missing): (Vec<_>, Vec<_>) =
        absent.partition(|n| optional_prefixes.iter().any(|p| n.starts_with(p)));
    if !missing.is_empty() {
        return Err(CheckpointError::Missing {
            path,
            what: "parameter",
            names: missing,
        });
    }
    let loaded = updates.len();
    for (id, t) in updates {
        store.set(id, t).expect("shape checked above");
    }
    Ok(LoadReport {
        loaded,
        left_at_init,
        metadata,
    })
}

/// Saves every parameter of `store` (weights and batchnorm statistics) as
/// F32 under its name, atomically.
pub fn save(store: &ParamStore, path: &Path, metadata: &Metadata) -> Result<(), CheckpointError> {
    write(
        path,
        store.iter().map(|(_, p)| (p.name.as_str(), &p.value)),
        metadata,
    )
}
