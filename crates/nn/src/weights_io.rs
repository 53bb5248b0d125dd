//! Parameters in and out of safetensors files, by Keras name (and in from
//! Keras's own `.h5` files, read by [`crate::keras_h5`]).
//!
//! The file format is the one `tools/keras_to_safetensors.py` writes: one
//! tensor per parameter named `<layer>/<weight>` (`conv1_conv/kernel`,
//! `conv1_bn/moving_variance`), kernels HWIO, dense kernels `[in, out]`, in
//! F32, F16, BF16 (or F64). Loading is by name, never by position (Keras 2 and 3
//! order the `_0_conv` shortcut differently), and all-or-nothing: every
//! tensor is validated before any parameter changes.

use autograd::ParamStore;
use half::{bf16, f16};
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use tensor::Tensor;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum WeightsError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a valid safetensors file: {msg}")]
    Format { path: PathBuf, msg: String },
    /// A Keras `.h5` file that cannot be read (see [`crate::keras_h5`]).
    #[error("{path}: {msg}")]
    H5 { path: PathBuf, msg: String },
    #[error("{path}: tensor '{name}' has dtype {dtype}; only F32, F16, BF16 and F64 are accepted")]
    Dtype {
        path: PathBuf,
        name: String,
        dtype: String,
    },
    #[error(
        "{path}: tensor '{name}' has shape {got:?}, the model's parameter has shape {expected:?}"
    )]
    Shape {
        path: PathBuf,
        name: String,
        expected: Vec<usize>,
        got: Vec<usize>,
    },
    #[error("{path}: tensor '{name}' is not a parameter of this model")]
    Unexpected { path: PathBuf, name: String },
    #[error("{path}: missing {} parameter(s): {}", names.len(), names.join(", "))]
    Missing { path: PathBuf, names: Vec<String> },
    #[error("{path}: metadata bn_epsilon = '{value}' is not a positive number")]
    Epsilon { path: PathBuf, value: String },
    #[error("{path}: cannot write: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What [`load`] did.
#[derive(Debug, Default)]
pub struct LoadReport {
    pub loaded: usize,
    /// Parameters the file did not hold, left at their initialization
    /// (allowed only under the prefixes the caller named, e.g. the head).
    pub left_at_init: Vec<String>,
    pub metadata: HashMap<String, String>,
}

/// Metadata key for the batchnorm epsilon the weights were trained with
/// (`tools/keras_to_safetensors.py` writes it: 1.001e-5 for Keras's
/// ResNet50, 1e-3 for the old caffe-named release).
pub const EPSILON_KEY: &str = "bn_epsilon";

impl LoadReport {
    /// The batchnorm epsilon the file declares, if it declares one.
    pub fn bn_epsilon(&self, path: &Path) -> Result<Option<f32>, WeightsError> {
        let Some(value) = self.metadata.get(EPSILON_KEY) else {
            return Ok(None);
        };
        match value.trim().parse::<f32>() {
            Ok(e) if e > 0.0 && e.is_finite() => Ok(Some(e)),
            _ => Err(WeightsError::Epsilon {
                path: path.into(),
                value: value.clone(),
            }),
        }
    }
}

/// Widens a safetensors tensor's little-endian element bytes to f32 (F32,
/// F16, BF16 and F64); `None` for any other dtype. The one decoder of both
/// weight files and training checkpoints.
pub fn decode_f32(bytes: &[u8], dtype: Dtype) -> Option<Vec<f32>> {
    Some(match dtype {
        Dtype::F32 => bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::F16 => bytes
            .chunks_exact(2)
            .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::BF16 => bytes
            .chunks_exact(2)
            .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::F64 => bytes
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().expect("chunk of 8")) as f32)
            .collect(),
        _ => return None,
    })
}

/// Named tensors, sorted by name.
pub type NamedTensors = Vec<(String, Tensor)>;

/// Reads every tensor of a weights file as f32, with the file's metadata:
/// a safetensors file, or a Keras `.h5` file (HDF5 signature, or an `.h5`,
/// `.hdf5` or `.keras` name) through [`crate::keras_h5`].
pub fn read_tensors(path: &Path) -> Result<(NamedTensors, HashMap<String, String>), WeightsError> {
    let bytes = std::fs::read(path).map_err(|source| WeightsError::Read {
        path: path.into(),
        source,
    })?;
    let h5_name = path.extension().is_some_and(|e| {
        ["h5", "hdf5", "keras"]
            .iter()
            .any(|x| e.eq_ignore_ascii_case(x))
    });
    if h5_name || crate::keras_h5::is_hdf5(&bytes) {
        return crate::keras_h5::read(path, bytes);
    }
    let format = |msg: String| WeightsError::Format {
        path: path.into(),
        msg,
    };
    let (_, meta) = SafeTensors::read_metadata(&bytes).map_err(|e| format(e.to_string()))?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| format(e.to_string()))?;
    let mut names: Vec<String> = st.names().into_iter().cloned().collect();
    names.sort();
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        let view = st.tensor(&name).map_err(|e| format(e.to_string()))?;
        let data = decode_f32(view.data(), view.dtype()).ok_or_else(|| WeightsError::Dtype {
            path: path.into(),
            name: name.clone(),
            dtype: format!("{:?}", view.dtype()),
        })?;
        let t = Tensor::from_vec(view.shape(), data)
            .map_err(|e| format(format!("tensor '{name}': {e}")))?;
        out.push((name, t));
    }
    Ok((out, meta.metadata().clone().unwrap_or_default()))
}

/// Loads a weights file (safetensors or Keras `.h5`, see [`read_tensors`])
/// into `store` by name. Every tensor in the file
/// must be a parameter of the same shape; every parameter must be in the
/// file unless its name starts with one of `optional_prefixes` (load an
/// ImageNet base into a model with a fresh head: `&["predictions/"]`).
pub fn load(
    store: &mut ParamStore,
    path: &Path,
    optional_prefixes: &[&str],
) -> Result<LoadReport, WeightsError> {
    let (tensors, metadata) = read_tensors(path)?;
    let mut updates = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        let id = store.id(&name).map_err(|_| WeightsError::Unexpected {
            path: path.into(),
            name: name.clone(),
        })?;
        let expected = store.value(id).shape();
        if expected != t.shape() {
            return Err(WeightsError::Shape {
                path: path.into(),
                name,
                expected: expected.to_vec(),
                got: t.shape().to_vec(),
            });
        }
        updates.push((id, t));
    }
    let present: BTreeSet<_> = updates.iter().map(|(id, _)| *id).collect();
    let absent: Vec<String> = store
        .iter()
        .filter(|(id, _)| !present.contains(id))
        .map(|(_, p)| p.name.clone())
        .collect();
    let (left_at_init, missing): (Vec<_>, Vec<_>) = absent
        .into_iter()
        .partition(|n| optional_prefixes.iter().any(|p| n.starts_with(p)));
    if !missing.is_empty() {
        return Err(WeightsError::Missing {
            path: path.into(),
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

/// Serializes named f32 tensors (and metadata) to safetensors bytes.
pub fn to_bytes<'a>(
    tensors: impl IntoIterator<Item = (&'a str, &'a Tensor)>,
    metadata: &HashMap<String, String>,
) -> Vec<u8> {
    let owned: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .into_iter()
        .map(|(n, t)| {
            let bytes = t.data().iter().flat_map(|v| v.to_le_bytes()).collect();
            (n.to_string(), t.shape().to_vec(), bytes)
        })
        .collect();
    let views: Vec<(String, TensorView)> = owned
        .iter()
        .map(|(n, s, b)| {
            (
                n.clone(),
                TensorView::new(Dtype::F32, s.clone(), b).expect("consistent view"),
            )
        })
        .collect();
    let meta = (!metadata.is_empty()).then(|| metadata.clone());
    safetensors::serialize(views, &meta).expect("serializing in-memory tensors")
}

/// Saves every parameter of `store` (weights and batchnorm statistics) as F32.
pub fn save(
    store: &ParamStore,
    path: &Path,
    metadata: &HashMap<String, String>,
) -> Result<(), WeightsError> {
    let bytes = to_bytes(
        store.iter().map(|(_, p)| (p.name.as_str(), &p.value)),
        metadata,
    );
    crate::atomic_write::write_atomic(path, &bytes).map_err(|source| WeightsError::Write {
        path: path.into(),
        source,
    })
}
