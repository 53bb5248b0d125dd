//! Numerical parity with Keras for ResNet V2 on the committed narrow fixture
//! (`tests/fixtures/keras_narrow_v2/`, made by `tools/make_fixture_v2.py`
//! with tf_keras 2.21 / Keras 3.15): the same topology and names as
//! ResNet50V2 at widths 4/8/8/16, two blocks per stage, weights and reference
//! outputs written by Keras itself. The V2 twin of `keras_fixture.rs`.
//!
//! Tolerances (max |ours - keras| / max |keras| over a tensor), as there:
//! - inference outputs 1e-5 and frozen-BN gradients 1e-4: the same f32 sums
//!   in different orders (Keras's own float32 results are 5e-7 and 7e-7 from
//!   float64 on this fixture).
//! - training mode, outputs 2e-3 and gradients 1e-2: batchnorm over batch 3
//!   sees 3 numbers per channel on conv4's and conv5's 1x1 maps, which
//!   amplifies rounding; Keras's float32 is 1.2e-4 (outputs) and 5.2e-4
//!   (gradients) from float64 here.

use autograd::{ops, Graph, Mode, ParamStore};
use nn::checkpoint::{load, read_tensors};
use nn::layers::VarianceUpdate;
use nn::{Model, ResNetConfig, ResNetV2};
use std::collections::HashMap;
use std::path::PathBuf;
use tensor::Tensor;

fn fixture(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/keras_narrow_v2")
        .join(file)
}

fn reference() -> HashMap<String, Tensor> {
    read_tensors(&fixture("reference.safetensors"))
        .unwrap()
        .0
        .into_iter()
        .collect()
}

fn model(update: VarianceUpdate) -> (ResNetV2, ParamStore) {
    let config = ResNetConfig {
        stem_filters: 8,
        depths: vec![2, 2, 2, 2],
        widths: vec![4, 8, 8, 16],
        num_classes: Some(10),
        variance_update: update,
        ..ResNetConfig::resnet50(None)
    };
    let (model, mut store) = ResNetV2::new(config).unwrap();
    let report = load(&mut store, &fixture("weights.safetensors"), &[]).unwrap();
    assert_eq!(report.loaded, store.len());
    (model, store)
}

/// max |a - b| / max |b|, with the first values printed on failure
/// (llm.c's `check_tensor`).
fn check(name: &str, ours: &Tensor, keras: &Tensor, tol: f32) -> f32 {
    // Keras stores a scalar loss as [1]; everything else must match exactly.
    if ours.numel() == 1 {
        assert_eq!(
            keras.numel(),
            1,
            "{name}: {:?} vs keras {:?}",
            ours.shape(),
            keras.shape()
        );
    } else {
        assert_eq!(ours.shape(), keras.shape(), "{name}: shape");
    }
    let scale = keras
        .data()
        .iter()
        .fold(0.0f32, |m, v| m.max(v.abs()))
        .max(1e-30);
    let diff = ours
        .data()
        .iter()
        .zip(keras.data())
        .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
    let rel = diff / scale;
    assert!(
        rel <= tol,
        "{name}: max rel diff {rel:.3e} > {tol:.0e}\n  ours  {:?}\n  keras {:?}",
        &ours.data()[..ours.numel().min(5)],
        &keras.data()[..keras.numel().min(5)]
    );
    rel
}

fn labels(r: &HashMap<String, Tensor>) -> Vec<usize> {
    r["y"].data().iter().map(|&v| v as usize).collect()
}

/// Runs forward (+ loss and backward) in `mode` and checks outputs under
/// `out_prefix` and gradients under `grad_prefix`.
fn run(mode: Mode, out_prefix: &str, grad_prefix: &str, out_tol: f32, grad_tol: f32) {
    // Unwritten output elements would be NaN, not stale values.
    tensor::buffer_pool::poison_recycled(true);
    let r = reference();
    let (model, store) = model(VarianceUpdate::Biased);
    let mut g = Graph::new(&store, mode);
    let x = g.input(r["x"].clone());
    let out = model.forward(&mut g, x).unwrap();
    let mut checked = 0;
    let mut worst_out = 0.0f32;
    let names: Vec<String> = g.tap_names().map(String::from).collect();
    for name in &names {
        if let Some(k) = r.get(&format!("{out_prefix}/{name}")) {
            worst_out = worst_out.max(check(name, g.value(g.tapped(name).unwrap()), k, out_tol));
            checked += 1;
        }
    }
    assert_eq!(checked, 12, "probed layers found in the fixture");
    let logits = out.logits.unwrap();
    check(
        "logits",
        g.value(logits),
        &r[&format!("{out_prefix}/logits")],
        out_tol,
    );
    check(
        "probs",
        &ops::softmax(g.value(logits)),
        &r[&format!("{out_prefix}/probs")],
        out_tol,
    );
    let loss = ops::softmax_cross_entropy(&mut g, logits, &labels(&r));
    check(
        "loss",
        g.value(loss),
        &r[&format!("{out_prefix}/loss")],
        out_tol,
    );
    let grads = g.backward(loss);
    let mut n = 0;
    let mut worst_grad = 0.0f32;
    for (id, p) in store.iter() {
        let Some(k) = r.get(&format!("{grad_prefix}/{}", p.name)) else {
            continue;
        };
        let ours = grads.param(id).unwrap();
        n += 1;
        if mode.training && p.name.ends_with("_conv/bias") && p.name != "conv1_conv/bias" {
            // In V2 a constant a shortcut or `_3_conv` bias adds travels along
            // the identity shortcuts into batchnorms only (the next blocks'
            // preact_bn, or post_bn), and each subtracts it back out with its
            // batch mean: its true gradient is zero, and both engines hold
            // only rounding noise there. Check that it is noise. (conv1's
            // bias is real: pool1_pad's zeros do not move with it.)
            let kernel = grads
                .param(store.id(&p.name.replace("/bias", "/kernel")).unwrap())
                .unwrap();
            let max = |t: &Tensor| t.data().iter().fold(0.0f32, |m, v| m.max(v.abs()));
            assert!(
                max(ours) <= 1e-3 * max(kernel) && max(k) <= 1e-3 * max(kernel),
                "{}",
                p.name
            );
            continue;
        }
        worst_grad = worst_grad.max(check(&p.name, ours, k, grad_tol));
    }
    eprintln!("{out_prefix}: worst layer output {worst_out:.2e}, worst gradient {worst_grad:.2e}");
    assert_eq!(n, 94, "every trainable weight's gradient compared");
}

#[test]
fn inference_outputs_and_frozen_bn_gradients_match_keras() {
    run(Mode::FROZEN_BN, "infer", "grad_infer", 1e-5, 1e-4);
}

/// Pure inference (no tape) runs every conv + batchnorm + ReLU as one fused
/// op; its logits match Keras and, bit for bit, the layer-by-layer pass
/// (`Mode::PROBE`), which fuses nothing.
#[test]
fn fused_inference_matches_keras_and_the_layer_by_layer_pass() {
    tensor::buffer_pool::poison_recycled(true);
    let r = reference();
    let (model, store) = model(VarianceUpdate::Biased);
    let logits = |mode: Mode| {
        let mut g = Graph::new(&store, mode);
        g.enable_profile();
        let x = g.input(r["x"].clone());
        let out = model.forward(&mut g, x).unwrap();
        let fused = g
            .profile()
            .unwrap()
            .ops
            .iter()
            .filter(|o| o.name == "conv_bn_infer")
            .count();
        (g.take(out.logits.unwrap()), fused)
    };
    let (fused, n_fused) = logits(Mode::INFER);
    let (layered, n_layered) = logits(Mode::PROBE);
    // Each block's `_1` and `_2` units; conv1, the shortcuts and `_3_conv`
    // have no batchnorm after them.
    let units = 2 * model.blocks.len();
    assert_eq!((n_fused, n_layered), (units, 0), "fused conv units");
    check("fused logits", &fused, &r["infer/logits"], 1e-5);
    assert_eq!(fused, layered);
}

#[test]
fn training_mode_outputs_and_gradients_match_keras() {
    run(Mode::TRAIN, "train", "grad_train", 2e-3, 1e-2);
}

#[test]
fn moving_statistics_match_keras_2_and_keras_3() {
    let r = reference();
    for (update, prefix) in [
        (VarianceUpdate::Unbiased, "train_stats"),
        (VarianceUpdate::Biased, "train_stats_k3"),
    ] {
        let (model, mut store) = model(update);
        let stats = {
            let mut g = Graph::new(&store, Mode::TRAIN);
            let x = g.input(r["x"].clone());
            model.forward(&mut g, x).unwrap();
            g.take_stat_updates()
        };
        store.apply_stat_updates(stats);
        let mut n = 0;
        for (_, p) in store.iter() {
            if let Some(k) = r.get(&format!("{prefix}/{}", p.name)) {
                check(&format!("{prefix}/{}", p.name), &p.value, k, 1e-5);
                n += 1;
            }
        }
        assert_eq!(
            n,
            2 * 25,
            "{prefix}: every batchnorm's two statistics compared"
        );
    }
}
