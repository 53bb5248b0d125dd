//! Import/export by name: round trips bit-exactly, accepts F16/BF16, and
//! rejects each kind of bad file with an error naming the file and tensor.

use autograd::ParamStore;
use nn::weights_io::{self, WeightsError};
use nn::{Model, ResNet, ResNetConfig};
use safetensors::tensor::{Dtype, TensorView};
use std::collections::HashMap;
use std::path::PathBuf;

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
    weights_io::save(&a, &path, &meta).unwrap();
    let mut b = narrow(2, Some(10));
    let report = weights_io::load(&mut b, &path, &[]).unwrap();
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
    weights_io::save(&base, &path, &HashMap::new()).unwrap();
    let mut full = narrow(2, Some(10));
    let err = weights_io::load(&mut full, &path, &[]).unwrap_err();
    assert!(
        matches!(&err, WeightsError::Missing { names, .. } if names.len() == 2),
        "{err}"
    );
    assert!(err.to_string().contains("predictions/kernel"), "{err}");
    let report = weights_io::load(&mut full, &path, &["predictions/"]).unwrap();
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
        weights_io::load(&mut target, &path, &[]).unwrap();
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
    weights_io::save(&store, &path, &HashMap::new()).unwrap();
    let mut target = narrow(2, None);
    let before = target.clone();

    // Truncated.
    let bytes = std::fs::read(&path).unwrap();
    let truncated = tmp("truncated.safetensors");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let err = weights_io::load(&mut target, &truncated, &[])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("truncated.safetensors") && err.contains("not a valid safetensors"),
        "{err}"
    );

    // Wrong dtype.
    let p = tmp("dtype.safetensors");
    write_edited(&store, &p, |raw| raw[3].1 = Dtype::I32);
    let err = weights_io::load(&mut target, &p, &[])
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
    let err = weights_io::load(&mut target, &p, &[])
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
    let err = weights_io::load(&mut target, &p, &[])
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
    let err = weights_io::load(&mut target, &p, &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("'bn_conv1/gamma' is not a parameter"), "{err}");

    // Not a file at all.
    let err = weights_io::load(&mut target, &tmp("nope.safetensors"), &[])
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
    weights_io::save(&store, &path, &meta).unwrap();
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
    weights_io::save(&store, &bad, &meta).unwrap();
    let err = model
        .load_weights(&mut target, &bad, &[])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("bad_eps.safetensors") && err.contains("'tiny'"),
        "{err}"
    );
}
