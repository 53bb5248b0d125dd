//! Keras's own weight files (`.h5`), read in pure Rust: no Python, no C
//! libhdf5.
//!
//! Every layout `tools/keras_to_safetensors.py` knows, detected from the
//! file, never from its name:
//! - the legacy Keras 2 layout (`legacy.rs`): tf_keras `save_weights`, the
//!   official `resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5`, a
//!   full-model file's `model_weights` (Keras 3's legacy writer too), a
//!   nested base model;
//! - the old caffe-named release (`caffe.rs`), renamed, with the batchnorm
//!   epsilon it was trained with (1e-3);
//! - Keras 3 `.weights.h5` (`keras3.rs`).
//!
//! A Keras 3 `.keras` archive is read through the `model.weights.h5` it
//! holds (`archive.rs`).
//!
//! The result is what [`crate::checkpoint::read_tensors`] returns for a
//! safetensors file: tensors named `<layer>/<weight>` in Keras's layouts
//! (HWIO conv kernels, `[in, out]` dense kernels), sorted by name, and the
//! metadata the converter would write (`bn_epsilon`, `source_format`,
//! `keras_version`). Checking them against a model is not done here but by
//! the one loader both formats go through ([`crate::checkpoint::load`]).

mod archive;
mod caffe;
mod h5;
mod keras3;
mod legacy;

pub use h5::is_hdf5;

use crate::checkpoint::{CheckpointError, NamedTensors, EPSILON_KEY};
use h5::ReadError;
use hdf5_reader::{Hdf5File, OpenOptions};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// The largest dataset a read may decode: 1 GiB (ResNet152's largest tensor
/// is 9 MiB). A corrupt shape then fails instead of exhausting memory.
const MAX_READ_BYTES: usize = 1 << 30;

/// Batchnorm epsilon of Keras's ResNet family (the smallest TF's fused
/// batchnorm accepts), written as the converter writes it.
const MODERN_EPSILON: &str = "1.001e-05";
/// The caffe-named release used Keras's default batchnorm epsilon.
const CAFFE_EPSILON: &str = "0.001";

/// Which layout a file has, and what it implies: the metadata.
pub(crate) struct Layout {
    metadata: HashMap<String, String>,
}

impl Layout {
    fn new(format: &str, epsilon: &str, keras_version: Option<String>) -> Self {
        let mut metadata = HashMap::from([
            ("source_format".to_string(), format.to_string()),
            (EPSILON_KEY.to_string(), epsilon.to_string()),
        ]);
        if let Some(v) = keras_version {
            metadata.insert("keras_version".into(), v);
        }
        Layout { metadata }
    }

    pub(crate) fn legacy(keras_version: Option<String>) -> Self {
        Self::new("keras-legacy-h5", MODERN_EPSILON, keras_version)
    }

    pub(crate) fn legacy_caffe(keras_version: Option<String>) -> Self {
        Self::new("keras2-legacy-h5-caffe-names", CAFFE_EPSILON, keras_version)
    }

    pub(crate) fn keras3(mapped_by_order: bool) -> Self {
        let mut layout = Self::new("keras3-weights-h5", MODERN_EPSILON, None);
        if mapped_by_order {
            layout.metadata.insert(
                "mapped_by".into(),
                "Keras 3 layer order (file has no name attributes)".into(),
            );
        }
        layout
    }
}

/// Tensors read so far, by their Keras name; a name seen twice is an error.
pub(crate) struct Tensors {
    by_name: BTreeMap<String, tensor::Tensor>,
}

impl Tensors {
    pub(crate) fn new() -> Self {
        Tensors {
            by_name: BTreeMap::new(),
        }
    }

    pub(crate) fn contains(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    /// Reads the dataset at `path` as tensor `name`.
    pub(crate) fn insert(&mut self, file: &Hdf5File, name: String, path: &str) -> h5::Result<()> {
        if self.contains(&name) {
            h5::bail!("tensor '{name}' found twice (the second at dataset {path})");
        }
        let t = h5::read_tensor(file, path, &name)?;
        self.by_name.insert(name, t);
        Ok(())
    }
}

/// Reads a Keras weights file whose bytes are `bytes` (see the module docs).
pub fn read(
    path: &Path,
    bytes: Vec<u8>,
) -> Result<(NamedTensors, HashMap<String, String>), CheckpointError> {
    let err = |e: ReadError| match e {
        ReadError::Msg(msg) => CheckpointError::H5 {
            path: path.into(),
            msg,
        },
        ReadError::Dtype { name, dtype } => CheckpointError::Dtype {
            path: path.into(),
            tensor: name,
            dtype,
        },
    };
    let (bytes, container) = if archive::is_zip(&bytes) {
        let inner = archive::entry(&bytes, archive::WEIGHTS_ENTRY)
            .map_err(|msg| err(ReadError::Msg(msg)))?;
        (inner, Some(archive::WEIGHTS_ENTRY))
    } else {
        (bytes, None)
    };
    let err = |e: ReadError| match (e, container) {
        (ReadError::Msg(msg), Some(entry)) => err(ReadError::Msg(format!("{entry}: {msg}"))),
        (e, _) => err(e),
    };
    if !is_hdf5(&bytes) {
        return Err(err(ReadError::Msg(
            "not an HDF5 file (no HDF5 signature); Keras weights are .h5 or .weights.h5 files"
                .into(),
        )));
    }
    let len = bytes.len() as u64;
    let options = OpenOptions::default().with_max_read_bytes(MAX_READ_BYTES);
    let file = Hdf5File::from_vec_with_options(bytes, options).map_err(|e| {
        err(ReadError::Msg(format!(
            "not a readable HDF5 file (truncated or corrupt?): {e}"
        )))
    })?;
    // A cut transfer: say so, rather than which object was the first missing.
    let sb = file.superblock();
    let end = sb.base_address.saturating_add(sb.eof_address);
    if end > len {
        return Err(err(ReadError::Msg(format!(
            "truncated: the HDF5 superblock says the file is {end} bytes long, it has {len}"
        ))));
    }
    let (tensors, mut layout) = read_layout(&file).map_err(err)?;
    if let Some(format) = layout
        .metadata
        .get_mut("source_format")
        .filter(|_| container.is_some())
    {
        format.push_str(" (from .keras archive)");
    }
    Ok((tensors.by_name.into_iter().collect(), layout.metadata))
}

fn read_layout(file: &Hdf5File) -> h5::Result<(Tensors, Layout)> {
    if let Some(root) = legacy::weights_group(file)? {
        return legacy::read(file, &root);
    }
    let (groups, datasets) = h5::members(file, "/")?;
    if groups.iter().any(|g| g == "layers") {
        return keras3::read(file);
    }
    let mut top: Vec<_> = groups.into_iter().chain(datasets).collect();
    top.truncate(10);
    h5::bail!(
        "neither a legacy Keras h5 (no 'layer_names' attribute) nor a Keras 3 weights file \
         (no 'layers' group); top-level objects: {top:?}"
    )
}
