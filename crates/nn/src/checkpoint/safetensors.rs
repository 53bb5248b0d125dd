//! The one safetensors encoder and decoder: named [`Tensor`]s plus string
//! metadata.
//!
//! Why safetensors: it is a trivial, documented format (an 8-byte
//! little-endian header length, a JSON header naming each tensor's dtype,
//! shape and byte range, then the raw little-endian data) that Python tooling
//! (`safetensors`, PyTorch, Keras 3, `tools/*.py`) reads directly, so weights
//! can be compared against the reference implementation.
//!
//! Reading accepts F32, F16, BF16 and F64, because exported reference weights
//! are often stored in half precision; everything is widened to `f32` in
//! memory. Writing always uses F32. Parsing and validation of the header are
//! the `safetensors` crate's; this file adds the f32 conversion and errors
//! that name the file and the tensor (a short file says how short it is).

use super::atomic::write_atomic;
use super::error::CheckpointError;
use ::safetensors::tensor::{Dtype, View};
use ::safetensors::SafeTensors;
use half::{bf16, f16};
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use tensor::Tensor;

/// String metadata of a file (`__metadata__` in the header).
pub type Metadata = HashMap<String, String>;

/// Named tensors, sorted by name.
pub type NamedTensors = Vec<(String, Tensor)>;

/// Everything one safetensors file holds, widened to f32, with the path it
/// was read from so that later lookups can name the file in their errors.
#[derive(Clone, Debug)]
pub struct TensorFile {
    pub path: PathBuf,
    pub tensors: BTreeMap<String, Tensor>,
    pub metadata: Metadata,
}

impl TensorFile {
    /// Reads and decodes `path`: a safetensors file, or a Keras `.h5`
    /// file (HDF5 signature, or an `.h5`, `.hdf5` or `.keras` name) through
    /// [`crate::keras_h5`], whose tensors then go through the same by-name
    /// loading as ours.
    pub fn read(path: &Path) -> Result<Self, CheckpointError> {
        let bytes = std::fs::read(path).map_err(|source| CheckpointError::Read {
            path: path.into(),
            source,
        })?;
        let h5_name = path.extension().is_some_and(|e| {
            ["h5", "hdf5", "keras"]
                .iter()
                .any(|x| e.eq_ignore_ascii_case(x))
        });
        if h5_name || crate::keras_h5::is_hdf5(&bytes) {
            let (tensors, metadata) = crate::keras_h5::read(path, bytes)?;
            return Ok(TensorFile {
                path: path.into(),
                tensors: tensors.into_iter().collect(),
                metadata,
            });
        }
        Self::from_bytes(&bytes, path)
    }

    /// Decodes the bytes of a safetensors file; `path` names it in errors.
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Self, CheckpointError> {
        check_length(bytes, path)?;
        let format = |e: ::safetensors::SafeTensorError| CheckpointError::Format {
            path: path.into(),
            reason: e.to_string(),
        };
        let (_, header) = SafeTensors::read_metadata(bytes).map_err(format)?;
        let st = SafeTensors::deserialize(bytes).map_err(format)?;
        let mut tensors = BTreeMap::new();
        for (name, view) in st.tensors() {
            let data =
                decode_f32(view.data(), view.dtype()).ok_or_else(|| CheckpointError::Dtype {
                    path: path.into(),
                    tensor: name.clone(),
                    dtype: format!("{:?}", view.dtype()),
                })?;
            let t = Tensor::from_vec(view.shape(), data).map_err(|e| CheckpointError::Format {
                path: path.into(),
                reason: format!("tensor '{name}': {e}"),
            })?;
            tensors.insert(name, t);
        }
        Ok(TensorFile {
            path: path.into(),
            tensors,
            metadata: header.metadata().clone().unwrap_or_default(),
        })
    }

    /// The tensor `name`, which must have exactly `shape`.
    pub fn tensor(&self, name: &str, shape: &[usize]) -> Result<&Tensor, CheckpointError> {
        let t = self
            .tensors
            .get(name)
            .ok_or_else(|| CheckpointError::Missing {
                path: self.path.clone(),
                what: "tensor",
                names: vec![name.to_string()],
            })?;
        if t.shape() != shape {
            return Err(CheckpointError::Shape {
                path: self.path.clone(),
                tensor: name.to_string(),
                expected: shape.to_vec(),
                got: t.shape().to_vec(),
            });
        }
        Ok(t)
    }

    /// Metadata `key` parsed as `T`; an error names the file and the key.
    pub fn meta_parse<T: std::str::FromStr>(&self, key: &str) -> Result<T, CheckpointError>
    where
        T::Err: std::fmt::Display,
    {
        let raw = self
            .metadata
            .get(key)
            .ok_or_else(|| CheckpointError::Metadata {
                path: self.path.clone(),
                key: key.to_string(),
                reason: "missing".to_string(),
            })?;
        raw.parse().map_err(|e: T::Err| CheckpointError::Metadata {
            path: self.path.clone(),
            key: key.to_string(),
            reason: format!("cannot parse {raw:?}: {e}"),
        })
    }

    /// The tensors as a list sorted by name.
    pub fn into_named(self) -> NamedTensors {
        self.tensors.into_iter().collect()
    }
}

/// Reads every tensor of a safetensors file as f32 (sorted by name), with
/// the file's metadata: [`TensorFile::read`] for callers that want a list.
pub fn read_tensors(path: &Path) -> Result<(NamedTensors, Metadata), CheckpointError> {
    let file = TensorFile::read(path)?;
    let metadata = file.metadata.clone();
    Ok((file.into_named(), metadata))
}

/// Serializes named tensors (as F32) and metadata to safetensors bytes.
pub fn to_bytes<'a>(
    tensors: impl IntoIterator<Item = (&'a str, &'a Tensor)>,
    metadata: &Metadata,
) -> Vec<u8> {
    let views = tensors.into_iter().map(|(n, t)| (n, F32View(t)));
    let meta = (!metadata.is_empty()).then(|| metadata.clone());
    // Cannot fail: every view's byte count matches its shape by construction
    // and names are unique per caller (a duplicate is a programming error).
    ::safetensors::serialize(views, &meta).expect("serializing in-memory f32 tensors")
}

/// Writes named tensors (as F32) and metadata to `path` atomically
/// (see [`write_atomic`]).
pub fn write<'a>(
    path: &Path,
    tensors: impl IntoIterator<Item = (&'a str, &'a Tensor)>,
    metadata: &Metadata,
) -> Result<(), CheckpointError> {
    let bytes = to_bytes(tensors, metadata);
    write_atomic(path, &bytes).map_err(|source| CheckpointError::Write {
        path: path.into(),
        source,
    })
}

/// A tensor seen by the `safetensors` serializer: F32, its little-endian
/// bytes made only when the serializer copies them into the file buffer.
struct F32View<'a>(&'a Tensor);

impl View for F32View<'_> {
    fn dtype(&self) -> Dtype {
        Dtype::F32
    }
    fn shape(&self) -> &[usize] {
        self.0.shape()
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Owned(self.0.data().iter().flat_map(|v| v.to_le_bytes()).collect())
    }
    fn data_len(&self) -> usize {
        self.0.numel() * 4
    }
}

/// Widens a tensor's little-endian element bytes to f32 (F32, F16, BF16 and
/// F64); `None` for any other dtype.
pub(crate) fn decode_f32(bytes: &[u8], dtype: Dtype) -> Option<Vec<f32>> {
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

/// Reports a file shorter than its header says as [`CheckpointError::Truncated`]
/// (the `safetensors` crate only says "invalid header length" or "incomplete
/// buffer"). Anything else wrong is left to the crate's validation.
fn check_length(bytes: &[u8], path: &Path) -> Result<(), CheckpointError> {
    let truncated = |needed: u64, at_least: bool| CheckpointError::Truncated {
        path: path.into(),
        got: bytes.len() as u64,
        needed,
        at_least,
    };
    let Some(len_bytes) = bytes.get(..8) else {
        return Err(truncated(8, true));
    };
    let header_len = u64::from_le_bytes(len_bytes.try_into().expect("8 bytes"));
    let header_end = header_len.saturating_add(8);
    let Some(header) = usize::try_from(header_end)
        .ok()
        .and_then(|end| bytes.get(8..end))
    else {
        return Err(truncated(header_end, true));
    };
    // The data ends where the last tensor's byte range ends.
    let Ok(serde_json::Value::Object(entries)) = serde_json::from_slice(header) else {
        return Ok(()); // corrupt header: the crate's error says so
    };
    let data_len = entries
        .iter()
        .filter(|(name, _)| name.as_str() != "__metadata__")
        .filter_map(|(_, info)| info.get("data_offsets")?.get(1)?.as_u64())
        .max()
        .unwrap_or(0);
    let needed = header_end.saturating_add(data_len);
    if (bytes.len() as u64) < needed {
        return Err(truncated(needed, false));
    }
    Ok(())
}
