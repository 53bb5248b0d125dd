//! Crash-safe file writing and safetensors checkpoints.
//!
//! Why atomic writes: a training run can be killed at any moment (time limit,
//! Ctrl-C, out of memory). If a checkpoint or cache were written in place, a
//! kill mid-write would leave a truncated file that poisons the next resume.
//! [`write_atomic`] writes a temporary file in the *same* directory (so the
//! final `rename` never crosses a file system), fsyncs it and renames it over
//! the target, so readers see either the old file or the complete new one.
//!
//! Why safetensors: it is a trivial, documented format (8-byte header length,
//! JSON header, raw little-endian data) that Python tooling (`safetensors`,
//! PyTorch, Keras 3) reads directly, so weights can be compared against the
//! reference implementation. Reading accepts F32, F16, BF16 and F64 because
//! exported reference weights are often stored in half precision; everything
//! is widened to `f32` in memory. Writing always uses F32.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use nn::checkpoint::decode_f32;
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;
use thiserror::Error;

/// Errors from reading or writing checkpoints. Every variant names the file.
#[derive(Debug, Error)]
pub enum CheckpointError {
    /// The file could not be opened, read or written.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The bytes are not a valid safetensors file (often: truncated).
    #[error("{path}: not a valid safetensors file ({reason}); the file is probably truncated or corrupt")]
    Format { path: PathBuf, reason: String },
    /// A tensor is stored in a dtype we do not convert to f32.
    #[error("{path}: tensor '{name}' has dtype {dtype}, only F32, F16, BF16 and F64 can be read")]
    UnsupportedDtype {
        path: PathBuf,
        name: String,
        dtype: String,
    },
    /// A tensor's shape does not match its number of values (when saving) or
    /// the shape the caller expects (when loading).
    #[error("{path}: tensor '{name}': {reason}")]
    Shape {
        path: PathBuf,
        name: String,
        reason: String,
    },
    /// A tensor the caller needs is not in the file.
    #[error("{path}: tensor '{name}' is missing")]
    MissingTensor { path: PathBuf, name: String },
    /// A metadata entry is missing or malformed.
    #[error("{path}: metadata '{key}': {reason}")]
    Metadata {
        path: PathBuf,
        key: String,
        reason: String,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> CheckpointError + '_ {
    move |source| CheckpointError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Atomic writes live in `nn` (its weight files need them too); re-exported
/// here for the checkpoint, report and cache writers.
pub use nn::checkpoint::{write_atomic, write_atomic_with};

/// One named tensor: row-major (C order) `f32` values and their shape.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TensorData {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl TensorData {
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Self {
        Self { shape, data }
    }
}

/// A set of named tensors plus free-form string metadata (epoch, step,
/// config...), as stored in one safetensors file.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Checkpoint {
    pub tensors: BTreeMap<String, TensorData>,
    pub metadata: BTreeMap<String, String>,
    /// File this checkpoint was loaded from; used only to make errors from
    /// the accessors below name the file. Not saved.
    pub source: Option<PathBuf>,
}

impl Checkpoint {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) a tensor.
    pub fn insert(&mut self, name: impl Into<String>, shape: Vec<usize>, data: Vec<f32>) {
        self.tensors
            .insert(name.into(), TensorData::new(shape, data));
    }

    /// Adds (or replaces) a metadata entry.
    pub fn set_meta(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.metadata.insert(key.into(), value.into());
    }

    fn source_path(&self) -> PathBuf {
        self.source
            .clone()
            .unwrap_or_else(|| PathBuf::from("<checkpoint>"))
    }

    /// Returns the tensor `name`, checking that it has exactly `shape`.
    /// The error names the file and the tensor, so a checkpoint from a
    /// different architecture is diagnosed precisely.
    pub fn expect(&self, name: &str, shape: &[usize]) -> Result<&[f32], CheckpointError> {
        let t = self
            .tensors
            .get(name)
            .ok_or_else(|| CheckpointError::MissingTensor {
                path: self.source_path(),
                name: name.to_string(),
            })?;
        if t.shape != shape {
            return Err(CheckpointError::Shape {
                path: self.source_path(),
                name: name.to_string(),
                reason: format!("has shape {:?}, expected {:?}", t.shape, shape),
            });
        }
        Ok(&t.data)
    }

    /// Returns metadata `key` parsed as `T`, with an error naming the file.
    pub fn meta_parse<T: std::str::FromStr>(&self, key: &str) -> Result<T, CheckpointError>
    where
        T::Err: std::fmt::Display,
    {
        let raw = self
            .metadata
            .get(key)
            .ok_or_else(|| CheckpointError::Metadata {
                path: self.source_path(),
                key: key.to_string(),
                reason: "missing".to_string(),
            })?;
        raw.parse().map_err(|e: T::Err| CheckpointError::Metadata {
            path: self.source_path(),
            key: key.to_string(),
            reason: format!("cannot parse {raw:?}: {e}"),
        })
    }
}

/// Serializes a checkpoint to safetensors bytes (all tensors F32).
/// `path` is only used in error messages.
pub fn encode_safetensors(ckpt: &Checkpoint, path: &Path) -> Result<Vec<u8>, CheckpointError> {
    let mut raw: Vec<(&str, &[usize], Vec<u8>)> = Vec::with_capacity(ckpt.tensors.len());
    for (name, t) in &ckpt.tensors {
        let expected: usize = t.shape.iter().product();
        if expected != t.data.len() {
            return Err(CheckpointError::Shape {
                path: path.to_path_buf(),
                name: name.clone(),
                reason: format!(
                    "shape {:?} needs {} values but {} were given",
                    t.shape,
                    expected,
                    t.data.len()
                ),
            });
        }
        let mut bytes = Vec::with_capacity(t.data.len() * 4);
        for v in &t.data {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        raw.push((name, &t.shape, bytes));
    }
    let mut views = Vec::with_capacity(raw.len());
    for (name, shape, bytes) in &raw {
        let view = TensorView::new(Dtype::F32, shape.to_vec(), bytes).map_err(|e| {
            CheckpointError::Shape {
                path: path.to_path_buf(),
                name: name.to_string(),
                reason: e.to_string(),
            }
        })?;
        views.push((name.to_string(), view));
    }
    let meta: Option<HashMap<String, String>> = if ckpt.metadata.is_empty() {
        None
    } else {
        Some(
            ckpt.metadata
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        )
    };
    safetensors::serialize(views, &meta).map_err(|e| CheckpointError::Format {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// Parses safetensors bytes; `path` is only used in error messages.
pub fn decode_safetensors(bytes: &[u8], path: &Path) -> Result<Checkpoint, CheckpointError> {
    let format_err = |e: safetensors::SafeTensorError| CheckpointError::Format {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let (_, header) = SafeTensors::read_metadata(bytes).map_err(format_err)?;
    let st = SafeTensors::deserialize(bytes).map_err(format_err)?;
    let mut ckpt = Checkpoint {
        source: Some(path.to_path_buf()),
        ..Checkpoint::default()
    };
    if let Some(meta) = header.metadata() {
        ckpt.metadata = meta.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    }
    for (name, view) in st.tensors() {
        let data = decode_f32(view.data(), view.dtype()).ok_or_else(|| {
            CheckpointError::UnsupportedDtype {
                path: path.to_path_buf(),
                name: name.clone(),
                dtype: format!("{:?}", view.dtype()),
            }
        })?;
        ckpt.tensors
            .insert(name, TensorData::new(view.shape().to_vec(), data));
    }
    Ok(ckpt)
}

/// Saves a checkpoint to `path` atomically (see [`write_atomic`]).
pub fn save_safetensors(path: &Path, ckpt: &Checkpoint) -> Result<(), CheckpointError> {
    let bytes = encode_safetensors(ckpt, path)?;
    write_atomic(path, &bytes).map_err(io_err(path))
}

/// Loads a checkpoint from `path`; tensors of any float dtype are widened to f32.
pub fn load_safetensors(path: &Path) -> Result<Checkpoint, CheckpointError> {
    let bytes = fs::read(path).map_err(io_err(path))?;
    decode_safetensors(&bytes, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Checkpoint {
        let mut c = Checkpoint::new();
        c.insert(
            "conv1/kernel",
            vec![2, 3],
            vec![1.0, -2.5, 3.25, 0.0, 1e-8, -7.0],
        );
        c.insert("bn/gamma", vec![3], vec![0.5, 1.5, 2.5]);
        c.insert("scalar", vec![], vec![42.0]);
        c.set_meta("epoch", "7");
        c.set_meta("optimizer", "adam");
        c
    }

    #[test]
    fn round_trip_preserves_tensors_and_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/ckpt.safetensors");
        let c = sample();
        save_safetensors(&path, &c).unwrap();
        let back = load_safetensors(&path).unwrap();
        assert_eq!(back.tensors, c.tensors);
        assert_eq!(back.metadata, c.metadata);
        assert_eq!(back.meta_parse::<u32>("epoch").unwrap(), 7);
        assert_eq!(back.expect("bn/gamma", &[3]).unwrap(), &[0.5, 1.5, 2.5]);
        // No temp files left behind.
        let names: Vec<_> = fs::read_dir(dir.path().join("sub"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[test]
    fn truncated_file_is_a_clear_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ckpt.safetensors");
        save_safetensors(&path, &sample()).unwrap();
        let bytes = fs::read(&path).unwrap();
        for cut in [3, 8, 20, bytes.len() - 1] {
            fs::write(&path, &bytes[..cut]).unwrap();
            let err = load_safetensors(&path).unwrap_err();
            let msg = err.to_string();
            assert!(matches!(err, CheckpointError::Format { .. }), "{msg}");
            assert!(msg.contains("ckpt.safetensors"), "{msg}");
            assert!(msg.contains("truncated"), "{msg}");
        }
    }

    #[test]
    fn missing_file_names_the_file() {
        let err = load_safetensors(Path::new("/nonexistent/x.safetensors")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/x.safetensors"));
    }

    #[test]
    fn expect_reports_missing_and_wrong_shape_with_file_and_tensor() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.safetensors");
        save_safetensors(&path, &sample()).unwrap();
        let c = load_safetensors(&path).unwrap();
        let e = c.expect("nope", &[1]).unwrap_err().to_string();
        assert!(e.contains("m.safetensors") && e.contains("'nope'"), "{e}");
        let e = c.expect("conv1/kernel", &[3, 2]).unwrap_err().to_string();
        assert!(
            e.contains("m.safetensors") && e.contains("conv1/kernel"),
            "{e}"
        );
        assert!(e.contains("[2, 3]") && e.contains("[3, 2]"), "{e}");
        let e = c.meta_parse::<u32>("optimizer").unwrap_err().to_string();
        assert!(
            e.contains("optimizer") && e.contains("m.safetensors"),
            "{e}"
        );
    }

    #[test]
    fn save_rejects_inconsistent_shape() {
        let mut c = Checkpoint::new();
        c.insert("w", vec![2, 2], vec![1.0; 3]);
        let err = encode_safetensors(&c, Path::new("out.safetensors")).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("out.safetensors") && msg.contains("'w'"),
            "{msg}"
        );
    }

    #[test]
    fn reads_f16_bf16_and_rejects_integers() {
        let f16s: Vec<u8> = [1.5f32, -2.0]
            .iter()
            .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
            .collect();
        let bf16s: Vec<u8> = [0.25f32, 3.0, -1.0]
            .iter()
            .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes())
            .collect();
        let ints: Vec<u8> = [1i32, 2].iter().flat_map(|v| v.to_le_bytes()).collect();
        let views = vec![
            ("a", TensorView::new(Dtype::F16, vec![2], &f16s).unwrap()),
            (
                "b",
                TensorView::new(Dtype::BF16, vec![3, 1], &bf16s).unwrap(),
            ),
        ];
        let bytes = safetensors::serialize(views, &None).unwrap();
        let c = decode_safetensors(&bytes, Path::new("half.safetensors")).unwrap();
        assert_eq!(c.tensors["a"].data, vec![1.5, -2.0]);
        assert_eq!(c.tensors["b"].data, vec![0.25, 3.0, -1.0]);
        assert_eq!(c.tensors["b"].shape, vec![3, 1]);

        let views = vec![("ids", TensorView::new(Dtype::I32, vec![2], &ints).unwrap())];
        let bytes = safetensors::serialize(views, &None).unwrap();
        let e = decode_safetensors(&bytes, Path::new("int.safetensors"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("int.safetensors") && e.contains("'ids'") && e.contains("I32"),
            "{e}"
        );
    }

    #[test]
    fn write_atomic_replaces_and_failed_fill_keeps_old_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.bin");
        write_atomic(&path, b"old").unwrap();
        write_atomic(&path, b"new content").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new content");
        let r = write_atomic_with(&path, |w| {
            w.write_all(b"partial")?;
            Err(io::Error::other("boom"))
        });
        assert!(r.is_err());
        assert_eq!(fs::read(&path).unwrap(), b"new content");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
