//! Numerical parity with Keras on the committed narrow fixture
//! (`tests/fixtures/keras_narrow/`, made by `tools/make_fixture.py` with
//! tf_keras 2.21 / Keras 3.15): the same topology and names as ResNet50 at
//! widths 4/8/8/16, weights and reference outputs written by Keras itself.
//!
//! Tolerances (max |ours - keras| / max |keras| over a tensor):
//! - inference outputs 1e-5 and frozen-BN gradients 1e-4: both engines
//!   compute the same f32 sums in different orders; the differences seen are
//!   ~1e-7 and ~1e-6.
//! - training mode, outputs 2e-3 and gradients 1e-2: batchnorm over batch 3
//!   normalizes 3 numbers per channel at conv5 (1x1 pixels), which amplifies
//!   rounding by 1/sigma of a tiny sample. Keras's own float32 results are
//!   2.2e-4 (outputs) and 3.0e-3 (gradients) away from the same network in
//!   float64 (the fixture README's `float64_agreement`); the tolerances sit
//!   a few times above that floor.

mod common;

use autograd::{Mode, ParamStore};
use common::keras_fixture::{narrow_config, Fixture};
use nn::layers::VarianceUpdate;
use nn::ResNet;

const FIXTURE: Fixture = Fixture {
    dir: "keras_narrow",
    probed_layers: 11,
    trainable: 118,
    batch_norms: 29,
    zero_training_grad: is_conv_bias,
};

/// Every conv bias sits before a batchnorm, which in training mode subtracts
/// it right back out with the batch mean: its true gradient is zero.
fn is_conv_bias(param: &str) -> bool {
    param.ends_with("_conv/bias")
}

fn model(update: VarianceUpdate) -> (ResNet, ParamStore) {
    let (model, mut store) = ResNet::new(narrow_config(update)).unwrap();
    FIXTURE.load_weights(&mut store);
    (model, store)
}

#[test]
fn inference_outputs_and_frozen_bn_gradients_match_keras() {
    let (model, store) = model(VarianceUpdate::Biased);
    FIXTURE.check_outputs_and_gradients(
        &model,
        &store,
        Mode::FROZEN_BN,
        ("infer", 1e-5),
        ("grad_infer", 1e-4),
    );
}

/// Pure inference (no tape) runs every conv + batchnorm (+ add) (+ ReLU) as
/// one fused op; its logits match Keras and, bit for bit, the layer-by-layer
/// pass (`Mode::PROBE`), which fuses nothing.
#[test]
fn fused_inference_matches_keras_and_the_layer_by_layer_pass() {
    let (model, store) = model(VarianceUpdate::Biased);
    // conv1 and every block's three units plus its projection shortcut.
    let units = 1 + model
        .blocks
        .iter()
        .map(|b| 3 + b.shortcut.is_some() as usize)
        .sum::<usize>();
    FIXTURE.check_fused_inference(&model, &store, units);
}

#[test]
fn training_mode_outputs_and_gradients_match_keras() {
    let (model, store) = model(VarianceUpdate::Biased);
    FIXTURE.check_outputs_and_gradients(
        &model,
        &store,
        Mode::TRAIN,
        ("train", 2e-3),
        ("grad_train", 1e-2),
    );
}

#[test]
fn moving_statistics_match_keras_2_and_keras_3() {
    FIXTURE.check_moving_statistics(model);
}
