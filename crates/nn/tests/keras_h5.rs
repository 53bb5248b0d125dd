//! Keras `.h5` weight files read in Rust (`nn::keras_h5`), on the files
//! `tools/make_h5_fixtures.py` wrote with tf_keras 2.21 and Keras 3.15
//! (`tests/fixtures/h5/`, committed gzipped): a tiny ResNet with ResNet50's
//! topology and names in every layout, and the same weights as safetensors
//! through `tools/keras_to_safetensors.py`.
//!
//! Each file must give the converter's tensors bit for bit, load into the
//! model through the same by-name, all-or-nothing loader as safetensors,
//! and fail with a message naming the file and the tensor.

use flate2::read::GzDecoder;
use nn::checkpoint::{self, CheckpointError, NamedTensors};
use nn::{Model, ResNet, ResNetConfig};
use std::io::Read;
use std::path::PathBuf;
use tempfile::TempDir;

/// Every h5 layout of the fixture, with the converter's `source_format`.
const LAYOUTS: &[(&str, &str)] = &[
    ("legacy.h5", "keras-legacy-h5"),
    ("full_model.h5", "keras-legacy-h5"),
    ("nested.h5", "keras-legacy-h5"),
    ("keras3_full_model.h5", "keras-legacy-h5"),
    ("keras3.weights.h5", "keras3-weights-h5"),
    (
        "keras3_model.keras",
        "keras3-weights-h5 (from .keras archive)",
    ),
    (
        "keras3_deflated.keras",
        "keras3-weights-h5 (from .keras archive)",
    ),
    ("keras3_nested.weights.h5", "keras3-weights-h5"),
    ("keras3_unnamed.weights.h5", "keras3-weights-h5"),
    ("caffe.h5", "keras2-legacy-h5-caffe-names"),
];

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/h5")
}

/// Unpacks `<name>.gz` of the fixture into `dir`, returning its path.
fn unpack(dir: &TempDir, name: &str) -> PathBuf {
    let gz = std::fs::read(fixture_dir().join(format!("{name}.gz"))).unwrap();
    let mut bytes = Vec::new();
    GzDecoder::new(&gz[..]).read_to_end(&mut bytes).unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// The tiny network of tools/make_h5_fixtures.py (CONFIG there).
fn tiny_config(num_classes: Option<usize>) -> ResNetConfig {
    ResNetConfig {
        stem_filters: 4,
        depths: vec![2, 2, 2, 2],
        widths: vec![2, 2, 4, 4],
        num_classes,
        ..ResNetConfig::resnet50(None)
    }
}

fn assert_same_tensors(file: &str, got: &NamedTensors, want: &NamedTensors) {
    let names = |t: &NamedTensors| t.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    assert_eq!(names(got), names(want), "{file}: tensor names");
    for ((name, a), (_, b)) in got.iter().zip(want) {
        assert_eq!(a.shape(), b.shape(), "{file}: {name} shape");
        let bits = |t: &tensor::Tensor| t.data().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(a), bits(b), "{file}: {name} values");
    }
}

#[test]
fn every_layout_gives_the_converters_tensors_bit_for_bit() {
    let dir = TempDir::new().unwrap();
    let (want, modern_meta) =
        checkpoint::read_tensors(&fixture_dir().join("weights.safetensors")).unwrap();
    let (caffe_want, caffe_meta) =
        checkpoint::read_tensors(&fixture_dir().join("caffe.safetensors")).unwrap();
    assert_eq!(want.len(), 176);
    assert_same_tensors("caffe.safetensors", &caffe_want, &want);
    for &(file, format) in LAYOUTS {
        let (got, meta) = checkpoint::read_tensors(&unpack(&dir, file)).unwrap();
        assert_same_tensors(file, &got, &want);
        let converter = if file == "caffe.h5" {
            &caffe_meta
        } else {
            &modern_meta
        };
        assert_eq!(
            meta.get("source_format").map(String::as_str),
            Some(format),
            "{file}"
        );
        assert_eq!(
            meta.get("bn_epsilon"),
            converter.get("bn_epsilon"),
            "{file}: bn_epsilon"
        );
    }
    assert_eq!(caffe_meta["bn_epsilon"], "0.001");
    // The superblock versions the layouts come in (byte 8 of the file):
    // Keras's writers use 0, the h5py-written caffe file the newest, 3.
    let superblock = |file: &str| std::fs::read(dir.path().join(file)).unwrap()[8];
    assert_eq!(superblock("legacy.h5"), 0);
    assert_eq!(superblock("keras3.weights.h5"), 0);
    assert_eq!(superblock("caffe.h5"), 3);
}

#[test]
fn loads_into_the_network_like_safetensors() {
    let dir = TempDir::new().unwrap();
    let (_, mut want) = ResNet::new(tiny_config(Some(3))).unwrap();
    checkpoint::load(&mut want, &fixture_dir().join("weights.safetensors"), &[]).unwrap();
    for &(file, _) in LAYOUTS {
        let (mut model, mut store) = ResNet::new(tiny_config(Some(3))).unwrap();
        let report = model
            .load_weights(&mut store, &unpack(&dir, file), &[])
            .unwrap();
        assert_eq!(report.loaded, store.len(), "{file}");
        for ((_, a), (_, b)) in store.iter().zip(want.iter()) {
            assert_eq!(a.name, b.name);
            assert_eq!(a.value.data(), b.value.data(), "{file}: {}", a.name);
        }
        let expected_eps = if file == "caffe.h5" { 1e-3 } else { 1.001e-5 };
        assert_eq!(
            model.bn_epsilon(),
            expected_eps,
            "{file}: batchnorm epsilon adopted"
        );
    }
}

/// Loads `file` of the fixture into a tiny network built from `config`.
fn load_err(file: &str, config: ResNetConfig) -> (String, CheckpointError) {
    let dir = TempDir::new().unwrap();
    let path = unpack(&dir, file);
    let (mut model, mut store) = ResNet::new(config).unwrap();
    let before: Vec<_> = store.iter().map(|(_, p)| p.value.data().to_vec()).collect();
    let err = model.load_weights(&mut store, &path, &[]).unwrap_err();
    let after: Vec<_> = store.iter().map(|(_, p)| p.value.data().to_vec()).collect();
    assert!(before == after, "{file}: a failed load changed parameters");
    let msg = err.to_string();
    assert!(msg.contains(file), "message does not name the file: {msg}");
    (msg, err)
}

#[test]
fn unexpected_tensor_is_named() {
    // The files have a head; a network without one has no predictions/*.
    for file in ["legacy.h5", "keras3.weights.h5"] {
        let (msg, err) = load_err(file, tiny_config(None));
        assert!(matches!(err, CheckpointError::Unexpected { .. }), "{msg}");
        assert!(msg.contains("'predictions/bias'"), "{msg}");
    }
}

#[test]
fn missing_tensors_are_named() {
    // A third block in conv2 has parameters the files do not hold.
    let config = ResNetConfig {
        depths: vec![3, 2, 2, 2],
        ..tiny_config(Some(3))
    };
    for file in ["nested.h5", "caffe.h5"] {
        let (msg, err) = load_err(file, config.clone());
        let CheckpointError::Missing { names, .. } = &err else {
            panic!("{file}: not a missing-tensor error: {msg}");
        };
        assert_eq!(names.len(), 18, "{msg}");
        assert!(msg.contains("conv2_block3_1_conv/kernel"), "{msg}");
    }
}

#[test]
fn wrong_shape_names_both_shapes() {
    let config = ResNetConfig {
        stem_filters: 8,
        ..tiny_config(Some(3))
    };
    let (msg, err) = load_err("full_model.h5", config);
    assert!(matches!(err, CheckpointError::Shape { .. }), "{msg}");
    assert!(
        msg.contains("'conv1_bn/beta' has shape [4], the model's parameter has shape [8]"),
        "{msg}"
    );
}

#[test]
fn wrong_dtype_is_named() {
    let (msg, err) = load_err("int_bias.h5", tiny_config(Some(3)));
    assert!(matches!(err, CheckpointError::Dtype { .. }), "{msg}");
    assert!(
        msg.contains("'conv1_conv/bias'") && msg.contains("int32"),
        "{msg}"
    );
}

/// `bytes` with every `from` replaced by `to` (of the same length).
fn replace_all(bytes: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    let mut i = 0;
    while i + from.len() <= out.len() {
        if &out[i..i + from.len()] == from {
            out[i..i + from.len()].copy_from_slice(to);
        }
        i += 1;
    }
    out
}

#[test]
fn a_file_that_is_not_hdf5_is_refused() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("notes.h5");
    std::fs::write(&path, "these are not weights").unwrap();
    let err = checkpoint::read_tensors(&path).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, CheckpointError::H5 { .. }), "{msg}");
    assert!(
        msg.contains("notes.h5") && msg.contains("not an HDF5 file"),
        "{msg}"
    );

    // A zip that is not a Keras 3 `.keras` model, and one that is broken.
    let keras = std::fs::read(unpack(&dir, "keras3_model.keras")).unwrap();
    let renamed = replace_all(&keras, b"model.weights.h5", b"model.weights.xx");
    let other = dir.path().join("other.keras");
    std::fs::write(&other, renamed).unwrap();
    let msg = checkpoint::read_tensors(&other).unwrap_err().to_string();
    assert!(
        msg.contains("other.keras") && msg.contains("without model.weights.h5"),
        "{msg}"
    );
    let broken = dir.path().join("broken.keras");
    std::fs::write(&broken, b"PK\x03\x04 and no more of a zip archive").unwrap();
    let msg = checkpoint::read_tensors(&broken).unwrap_err().to_string();
    assert!(
        msg.contains("broken.keras") && msg.contains("corrupt or truncated zip"),
        "{msg}"
    );
}

#[test]
fn truncated_files_fail_cleanly() {
    let dir = TempDir::new().unwrap();
    for &(file, _) in LAYOUTS {
        let bytes = std::fs::read(unpack(&dir, file)).unwrap();
        // Cuts through the superblock, the metadata and the data alike.
        for k in 1..40 {
            let len = bytes.len() * k / 40;
            let path = dir.path().join(format!("cut_{len}_{file}"));
            std::fs::write(&path, &bytes[..len]).unwrap();
            let msg = match checkpoint::read_tensors(&path) {
                Err(e) => e.to_string(),
                Ok((t, _)) => panic!("{file} cut to {len} bytes read as {} tensors", t.len()),
            };
            assert!(msg.contains(&format!("cut_{len}_{file}")), "{msg}");
            assert!(
                ["truncated", "not an HDF5 file", "not a readable HDF5 file"]
                    .iter()
                    .any(|w| msg.contains(w)),
                "{msg}"
            );
            std::fs::remove_file(&path).unwrap();
        }
    }
}

/// Damage anywhere (headers, heaps, B-trees, gzip chunks) gives an error or
/// other values, never a panic or an abort.
#[test]
fn corrupt_bytes_never_panic() {
    let dir = TempDir::new().unwrap();
    for file in [
        "legacy.h5",
        "keras3.weights.h5",
        "caffe.h5",
        "keras3_deflated.keras",
    ] {
        let bytes = std::fs::read(unpack(&dir, file)).unwrap();
        let path = dir.path().join(format!("corrupt_{file}"));
        let mut errors = 0;
        for k in 0..150 {
            let mut damaged = bytes.clone();
            let at = (k * 7919 + 13) % damaged.len();
            damaged[at] ^= 0xa5;
            std::fs::write(&path, &damaged).unwrap();
            if let Err(e) = checkpoint::read_tensors(&path) {
                assert!(e.to_string().contains("corrupt_"), "{e}");
                errors += 1;
            }
        }
        // Most flips land in zero-filled free space or in values, but some
        // must have hit structure the reader checks.
        assert!(errors > 0, "{file}: no damage detected");
    }
}
