//! The checkpoint module: the safetensors codec round trips every dtype it
//! reads, weights load by name all-or-nothing, every kind of bad file is
//! rejected with an error naming the file (and the tensor, with both shapes),
//! and atomic writes never leave a half-written file.

use autograd::ParamStore;
use nn::checkpoint::{self, CheckpointError, TensorFile};
use nn::{Model, ResNet, ResNetConfig};
use safetensors::tensor::{Dtype, TensorView};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

fn narrow(seed: u64, head: Option<usize>) -> ParamStore {
    let config = ResNetConfig {
        stem_filters: 8,
        depths: vec![1, 1],
        widths: vec![4, 8],
        num_classes: head,
        seed,
        ..ResNetConfig::resnet50(None)
    };
    ResNet::new(config).unwrap().1
}

fn tmp(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name)
}

/// Writes `store`'s tensors with `edit` applied to the (name, dtype, shape, bytes) list.
fn write_edited(
    store: &ParamStore,
    path: &PathBuf,
    edit: impl FnOnce(&mut Vec<(String, Dtype, Vec<usize>, Vec<u8>)>),
) {
    let mut raw: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = store
        .iter()
        .map(|(_, p)| {
            let bytes = p
                .value
                .data()
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect();
            (p.name.clone(), Dtype::F32, p.value.shape().to_vec(), bytes)
        })
        .collect();
    edit(&mut raw);
    let views: Vec<(String, TensorView)> = raw
        .iter()
        .map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    std::fs::write(path, safetensors::serialize(views, &None).unwrap()).unwrap();
}

#[test]
fn round_trip_is_bit_exact() {
    let a = narrow(1, Some(10));
    let path = tmp("roundtrip.safetensors");
    let meta = HashMap::from([("source".to_string(), "test".to_string())]);
    checkpoint::save(&a, &path, &meta).unwrap();
    let mut b = narrow(2, Some(10));
    let report = checkpoint::load(&mut b, &path, &[]).unwrap();
    assert_eq!(report.loaded, a.len());
    assert_eq!(
        report.metadata.get("source").map(String::as_str),
        Some("test")
    );
    for ((_, pa), (_, pb)) in a.iter().zip(b.iter()) {
        assert_eq!(pa.name, pb.name);
        let bits = |t: &tensor::Tensor| t.data().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&pa.value), bits(&pb.value), "{}", pa.name);
    }
}

#[test]
fn base_loads_into_a_model_with_a_head() {
    let base = narrow(1, None);
    let path = tmp("base.safetensors");
    checkpoint::save(&base, &path, &HashMap::new()).unwrap();
    let mut full = narrow(2, Some(10));
    let err = checkpoint::load(&mut full, &path, &[]).unwrap_err();
    assert!(
        matches!(&err, CheckpointError::Missing { names, .. } if names.len() == 2),
        "{err}"
    );
    assert!(err.to_string().contains("predictions/kernel"), "{err}");
    let report = checkpoint::load(&mut full, &path, &["predictions/"]).unwrap();
    assert_eq!(
        report.left_at_init,
        vec!["predictions/kernel", "predictions/bias"]
    );
}

#[test]
fn half_precision_is_accepted() {
    let store = narrow(1, None);
    for dtype in [Dtype::F16, Dtype::BF16] {
        let path = tmp(&format!("half_{dtype:?}.safetensors"));
        write_edited(&store, &path, |raw| {
            for (_, d, _, bytes) in raw.iter_mut() {
                let vals: Vec<f32> = bytes
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                    .collect();
                *bytes = vals
                    .iter()
                    .flat_map(|&v| match dtype {
                        Dtype::F16 => half::f16::from_f32(v).to_le_bytes(),
                        _ => half::bf16::from_f32(v).to_le_bytes(),
                    })
                    .collect();
                *d = dtype;
            }
        });
        let mut target = narrow(5, None);
        checkpoint::load(&mut target, &path, &[]).unwrap();
        for ((_, a), (_, b)) in store.iter().zip(target.iter()) {
            for (x, y) in a.value.data().iter().zip(b.value.data()) {
                let tol = if dtype == Dtype::F16 { 1e-3 } else { 8e-3 };
                assert!(
                    (x - y).abs() <= tol * x.abs().max(1e-2),
                    "{}: {x} vs {y}",
                    a.name
                );
            }
        }
    }
}

#[test]
fn bad_files_are_rejected_with_names() {
    let store = narrow(1, None);
    let path = tmp("good.safetensors");
    checkpoint::save(&store, &path, &HashMap::new()).unwrap();
    let mut target = narrow(2, None);
    let before = target.clone();

    // Truncated.
    let bytes = std::fs::read(&path).unwrap();
    let truncated = tmp("truncated.safetensors");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let err = checkpoint::load(&mut target, &truncated, &[])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("truncated.safetensors")
            && err.contains(&format!(
                "truncated: {} of {} bytes",
                bytes.len() / 2,
                bytes.len()
            )),
        "{err}"
    );

    // Wrong dtype.
    let p = tmp("dtype.safetensors");
    write_edited(&store, &p, |raw| raw[3].1 = Dtype::I32);
    let err = checkpoint::load(&mut target, &p, &[])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&raw_name(&store, 3)) && err.contains("I32"),
        "{err}"
    );

    // Wrong shape: a kernel with in/out swapped.
    let p = tmp("shape.safetensors");
    write_edited(&store, &p, |raw| {
        let s = &mut raw[0].2;
        s.swap(2, 3);
    });
    let err = checkpoint::load(&mut target, &p, &[])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("conv1_conv/kernel")
            && err.contains("[7, 7, 8, 3]")
            && err.contains("[7, 7, 3, 8]"),
        "{err}"
    );

    // Missing tensor.
    let p = tmp("missing.safetensors");
    write_edited(&store, &p, |raw| {
        raw.retain(|r| r.0 != "conv2_block1_2_bn/moving_variance");
    });
    let err = checkpoint::load(&mut target, &p, &[])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("missing 1 parameter(s): conv2_block1_2_bn/moving_variance"),
        "{err}"
    );

    // Unexpected tensor.
    let p = tmp("extra.safetensors");
    write_edited(&store, &p, |raw| {
        raw.push(("bn_conv1/gamma".into(), Dtype::F32, vec![1], vec![0; 4]))
    });
    let err = checkpoint::load(&mut target, &p, &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("'bn_conv1/gamma' is not a parameter"), "{err}");

    // Not a file at all.
    let err = checkpoint::load(&mut target, &tmp("nope.safetensors"), &[])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("nope.safetensors") && err.contains("cannot read"),
        "{err}"
    );

    // Nothing was changed by any failed load.
    for ((_, a), (_, b)) in before.iter().zip(target.iter()) {
        assert_eq!(a.value, b.value, "{} changed by a failed load", a.name);
    }
}

fn raw_name(store: &ParamStore, i: usize) -> String {
    store.iter().nth(i).unwrap().1.name.clone()
}

#[test]
fn the_files_batchnorm_epsilon_is_adopted() {
    let config = ResNetConfig {
        stem_filters: 8,
        depths: vec![1],
        widths: vec![4],
        ..ResNetConfig::resnet50(None)
    };
    let (_, store) = ResNet::new(config.clone()).unwrap();
    let path = tmp("caffe_eps.safetensors");
    let meta = HashMap::from([("bn_epsilon".to_string(), "0.001".to_string())]);
    checkpoint::save(&store, &path, &meta).unwrap();
    let (mut model, mut target) = ResNet::new(config.clone()).unwrap();
    assert_eq!(model.bn_epsilon(), 1.001e-5);
    model.load_weights(&mut target, &path, &[]).unwrap();
    assert_eq!(model.bn_epsilon(), 1e-3);
    assert!(model
        .blocks
        .iter()
        .all(|b| b.main.iter().all(|unit| unit.bn.epsilon == 1e-3)));

    let bad = tmp("bad_eps.safetensors");
    let meta = HashMap::from([("bn_epsilon".to_string(), "tiny".to_string())]);
    checkpoint::save(&store, &bad, &meta).unwrap();
    let err = model
        .load_weights(&mut target, &bad, &[])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("bad_eps.safetensors") && err.contains("'tiny'"),
        "{err}"
    );
}

/// Raw safetensors bytes of one tensor per dtype, from the reference crate.
fn every_float_dtype() -> Vec<u8> {
    let values = [1.5f32, -2.0, 0.25, 3.0, -0.0, 1e-3];
    let f32s: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let f16s: Vec<u8> = values
        .iter()
        .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
        .collect();
    let bf16s: Vec<u8> = values
        .iter()
        .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes())
        .collect();
    let f64s: Vec<u8> = values
        .iter()
        .flat_map(|&v| (v as f64).to_le_bytes())
        .collect();
    let views = vec![
        (
            "a32",
            TensorView::new(Dtype::F32, vec![2, 3], &f32s).unwrap(),
        ),
        ("b16", TensorView::new(Dtype::F16, vec![6], &f16s).unwrap()),
        (
            "cbf",
            TensorView::new(Dtype::BF16, vec![3, 2], &bf16s).unwrap(),
        ),
        (
            "d64",
            TensorView::new(Dtype::F64, vec![1, 6], &f64s).unwrap(),
        ),
    ];
    let meta = HashMap::from([("epoch".to_string(), "7".to_string())]);
    safetensors::serialize(views, &Some(meta)).unwrap()
}

#[test]
fn codec_reads_every_float_dtype_and_writes_f32() {
    let path = tmp("dtypes.safetensors");
    let file = TensorFile::from_bytes(&every_float_dtype(), &path).unwrap();
    // Every value above is exact in f16 and bf16 except 1e-3.
    let want = [1.5f32, -2.0, 0.25, 3.0, -0.0];
    for (name, shape, tol) in [
        ("a32", vec![2, 3], 0.0),
        ("b16", vec![6], 1e-6),
        ("cbf", vec![3, 2], 1e-5),
        ("d64", vec![1, 6], 0.0),
    ] {
        let t = file.tensor(name, &shape).unwrap();
        assert_eq!(&t.data()[..5], &want, "{name}");
        assert!((t.data()[5] - 1e-3).abs() <= tol, "{name}: {}", t.data()[5]);
    }
    assert_eq!(file.meta_parse::<u32>("epoch").unwrap(), 7);

    // Written back, everything is F32 and reads back bit-exactly.
    checkpoint::write(
        &path,
        file.tensors.iter().map(|(n, t)| (n.as_str(), t)),
        &file.metadata,
    )
    .unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let raw = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert!(raw.tensors().iter().all(|(_, v)| v.dtype() == Dtype::F32));
    let back = TensorFile::read(&path).unwrap();
    assert_eq!(back.metadata, file.metadata);
    for (name, t) in &file.tensors {
        let b = &back.tensors[name];
        assert_eq!(b.shape(), t.shape(), "{name}");
        let bits = |t: &tensor::Tensor| t.data().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(b), bits(t), "{name}");
    }
}

#[test]
fn short_and_corrupt_files_name_the_file_and_say_how_short() {
    let bytes = every_float_dtype();
    let path = tmp("short.safetensors");
    let header_end = 8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    for cut in [0, 3, 8, 20, header_end, bytes.len() - 1] {
        let err = TensorFile::from_bytes(&bytes[..cut], &path).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, CheckpointError::Truncated { .. }), "{msg}");
        assert!(msg.starts_with(&path.display().to_string()), "{msg}");
        let want = if cut < 8 {
            format!("truncated: {cut} of at least 8 bytes")
        } else if cut < header_end {
            format!("truncated: {cut} of at least {header_end} bytes")
        } else {
            format!("truncated: {cut} of {} bytes", bytes.len())
        };
        assert!(msg.contains(&want), "cut {cut}: {msg}");
    }
    // A damaged header is corrupt, not short.
    let mut bad = bytes.clone();
    bad[9] = b'#';
    let err = TensorFile::from_bytes(&bad, &path).unwrap_err();
    assert!(matches!(err, CheckpointError::Format { .. }), "{err}");
    assert!(err.to_string().contains("short.safetensors"), "{err}");
    // Extra bytes after the data are corrupt too.
    let mut long = bytes.clone();
    long.extend_from_slice(&[0; 4]);
    let err = TensorFile::from_bytes(&long, &path).unwrap_err();
    assert!(matches!(err, CheckpointError::Format { .. }), "{err}");
}

#[test]
fn lookups_name_the_file_the_tensor_and_both_shapes() {
    let path = tmp("lookups.safetensors");
    let file = TensorFile::from_bytes(&every_float_dtype(), &path).unwrap();
    let e = file.tensor("nope", &[1]).unwrap_err().to_string();
    assert!(
        e.contains("lookups.safetensors") && e.contains("nope"),
        "{e}"
    );
    let e = file.tensor("a32", &[3, 2]).unwrap_err().to_string();
    assert!(
        e.contains("lookups.safetensors")
            && e.contains("'a32'")
            && e.contains("[2, 3]")
            && e.contains("[3, 2]"),
        "{e}"
    );
    let e = file.meta_parse::<u32>("step").unwrap_err().to_string();
    assert!(
        e.contains("lookups.safetensors") && e.contains("'step'"),
        "{e}"
    );
    let e = file.meta_parse::<bool>("epoch").unwrap_err().to_string();
    assert!(e.contains("'epoch'") && e.contains("\"7\""), "{e}");

    let ints: Vec<u8> = [1i32, 2].iter().flat_map(|v| v.to_le_bytes()).collect();
    let views = vec![("ids", TensorView::new(Dtype::I32, vec![2], &ints).unwrap())];
    let bytes = safetensors::serialize(views, &None).unwrap();
    let e = TensorFile::from_bytes(&bytes, Path::new("int.safetensors"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("int.safetensors") && e.contains("'ids'") && e.contains("I32"),
        "{e}"
    );
}

#[test]
fn atomic_write_replaces_whole_files_only() {
    use nn::checkpoint::{write_atomic, write_atomic_with};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub/f.bin");
    write_atomic(&path, b"old").unwrap();
    write_atomic(&path, b"new content").unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"new content");
    let r = write_atomic_with(&path, |w| {
        w.write_all(b"partial")?;
        Err(std::io::Error::other("boom"))
    });
    assert!(r.is_err());
    assert_eq!(std::fs::read(&path).unwrap(), b"new content");
    // No temporary file is left behind, after success or failure.
    let names: Vec<_> = std::fs::read_dir(dir.path().join("sub"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["f.bin"]);
    // The file gets the permissions a plain create gives, not a temp file's 0o600.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let plain = dir.path().join("plain.bin");
        std::fs::write(&plain, b"x").unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), mode(&plain));
    }
}
