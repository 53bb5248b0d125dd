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

mod common;

use autograd::{Mode, ParamStore};
use common::keras_fixture::{narrow_config, Fixture};
use nn::layers::VarianceUpdate;
use nn::ResNetV2;

const FIXTURE: Fixture = Fixture {
    dir: "keras_narrow_v2",
    probed_layers: 12,
    trainable: 94,
    batch_norms: 25,
    zero_training_grad: is_bias_only_batchnorms_see,
};

/// In V2 a constant a shortcut or `_3_conv` bias adds travels along the
/// identity shortcuts into batchnorms only (the next blocks' preact_bn, or
/// post_bn), and each subtracts it back out with its batch mean in training
/// mode: its true gradient is zero. conv1's bias is real: pool1_pad's zeros
/// do not move with it.
fn is_bias_only_batchnorms_see(param: &str) -> bool {
    param.ends_with("_conv/bias") && param != "conv1_conv/bias"
}

fn model(update: VarianceUpdate) -> (ResNetV2, ParamStore) {
    let (model, mut store) = ResNetV2::new(narrow_config(update)).unwrap();
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

/// Pure inference (no tape) runs every conv + batchnorm + ReLU as one fused
/// op; its logits match Keras and, bit for bit, the layer-by-layer pass
/// (`Mode::PROBE`), which fuses nothing.
#[test]
fn fused_inference_matches_keras_and_the_layer_by_layer_pass() {
    let (model, store) = model(VarianceUpdate::Biased);
    // Each block's `_1` and `_2` units; conv1, the shortcuts and `_3_conv`
    // have no batchnorm after them.
    let units = 2 * model.blocks.len();
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
