//! The conv + batchnorm (+ add) (+ ReLU) unit computes the same function in
//! each of its forms (`nn::layers::Form`): fused inference and the layers
//! one by one bit for bit, training and frozen batchnorm with the same
//! values, gradients and statistic updates as the layer-by-layer ops.

use autograd::{ops, Graph, Mode, ParamStore, Var};
use nn::layers::batch_norm::KERAS_MOMENTUM;
use nn::layers::{BatchNorm, BnRelu, Conv2d, ConvBn, Form, PaddingMode, VarianceUpdate};
use nn::BuildCtx;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tensor::Tensor;

fn random(shape: &[usize], seed: u64, lo: f32) -> Tensor {
    let mut rng = StdRng::seed_from_u64(seed);
    let n = shape.iter().product();
    Tensor::from_vec(shape, (0..n).map(|_| rng.gen_range(lo..1.0)).collect()).unwrap()
}

/// Gives every parameter random values (variances positive), so that no
/// batchnorm is the identity and the ReLUs cut.
fn randomize(store: &mut ParamStore) {
    let ids: Vec<_> = store.iter().map(|(id, p)| (id, p.name.clone())).collect();
    for (i, (id, name)) in ids.into_iter().enumerate() {
        let shape = store.value(id).shape().to_vec();
        let lo = if name.ends_with("moving_variance") {
            0.5
        } else {
            -1.0
        };
        store.set(id, random(&shape, 100 + i as u64, lo)).unwrap();
    }
}

const C: usize = 4;

/// `relu(residual + bn(conv(x)))` named like the last unit of a block,
/// and a `BnRelu`.
fn units() -> (ConvBn, BnRelu, ParamStore) {
    let mut ctx = BuildCtx::new(0, VarianceUpdate::Biased, KERAS_MOMENTUM);
    let conv = Conv2d::new(&mut ctx, "b_3_conv", 3, C, 3, 1, PaddingMode::Same);
    let bn = BatchNorm::new(&mut ctx, "b_3_bn", C);
    let unit = ConvBn::new(conv, bn).then_add("b_add").then_relu("b_out");
    let bn_relu = BnRelu {
        bn: BatchNorm::new(&mut ctx, "post_bn", C),
        relu: "post_relu".into(),
    };
    let mut store = ctx.store;
    randomize(&mut store);
    (unit, bn_relu, store)
}

/// What one run of both units in `mode` produced: the two outputs, their
/// forms, the names tapped, and with a tape the gradients of every parameter
/// and input for a fixed seed.
struct Run {
    outputs: [Tensor; 2],
    forms: [Form; 2],
    tapped: Vec<String>,
    grads: Vec<Tensor>,
    stats: Vec<Tensor>,
}

fn run(mode: Mode, frozen: bool) -> Run {
    tensor::buffer_pool::poison_recycled(true);
    let (unit, bn_relu, mut store) = units();
    if frozen {
        store.set_trainable_prefix("", false);
    }
    let mut g = Graph::new(&store, mode);
    let x = g.leaf(random(&[2, 5, 5, 3], 1, -1.0), true);
    let r = g.leaf(random(&[2, 5, 5, C], 2, -1.0), true);
    let forms = [Form::of(&g, &unit.bn), Form::of(&g, &bn_relu.bn)];
    let y1 = unit.forward(&mut g, x, Some(r));
    let y2 = bn_relu.forward(&mut g, r);
    let tapped = g.tap_names().map(String::from).collect();
    let outputs = [g.value(y1).clone(), g.value(y2).clone()];
    let mut grads = Vec::new();
    if mode.record {
        // One scalar through both outputs: sum(y1 * s1) + sum(y2 * s2).
        let both = ops::add(&mut g, y1, y2);
        let seed = random(g.value(both).shape(), 3, -1.0);
        let all = g.backward_with(both, seed);
        let leaves = [x, r].map(|v: Var| all.leaf(v).unwrap().clone());
        grads.extend(leaves);
        let mut params: Vec<_> = all.params().collect();
        params.sort_by_key(|(id, _)| *id);
        grads.extend(params.into_iter().map(|(_, t)| t.clone()));
    }
    let stats = g.take_stat_updates().into_iter().map(|u| u.value).collect();
    Run {
        outputs,
        forms,
        tapped,
        grads,
        stats,
    }
}

fn probe(mode: Mode) -> Mode {
    Mode {
        layer_outputs: true,
        ..mode
    }
}

fn assert_close(what: &str, a: &[Tensor], b: &[Tensor], tol: f32) {
    assert_eq!(a.len(), b.len(), "{what}: count");
    for (i, (a, b)) in a.iter().zip(b).enumerate() {
        assert_eq!(a.shape(), b.shape(), "{what} {i}: shape");
        let scale = b.data().iter().fold(1e-30f32, |m, v| m.max(v.abs()));
        let diff = a
            .data()
            .iter()
            .zip(b.data())
            .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()));
        assert!(
            diff <= tol * scale,
            "{what} {i}: max diff {diff:e} (scale {scale:e})\n  {:?}\n  {:?}",
            &a.data()[..a.numel().min(5)],
            &b.data()[..b.numel().min(5)]
        );
    }
}

#[test]
fn fused_inference_equals_the_layers_one_by_one_bit_for_bit() {
    let fused = run(Mode::INFER, false);
    let layered = run(Mode::PROBE, false);
    assert_eq!(fused.forms, [Form::FusedInference; 2]);
    assert_eq!(layered.forms, [Form::LayerByLayer; 2]);
    assert_eq!(fused.outputs, layered.outputs);
    // Fused, each unit's output goes by its last layer's name (the stage
    // that frees the rest is the caller's); layer by layer every layer's does.
    assert_eq!(fused.tapped, ["b_out", "post_relu"]);
    let every = [
        "b_3_conv",
        "b_3_bn",
        "b_add",
        "b_out",
        "post_bn",
        "post_relu",
    ];
    assert_eq!(layered.tapped, every);
}

#[test]
fn frozen_batchnorm_under_a_tape_equals_the_layers_one_by_one() {
    for (mode, frozen) in [(Mode::FROZEN_BN, false), (Mode::TRAIN, true)] {
        let moving = run(mode, frozen);
        let layered = run(probe(mode), frozen);
        assert_eq!(moving.forms, [Form::MovingStatistics; 2]);
        assert_eq!(moving.outputs, run(Mode::INFER, frozen).outputs);
        assert_close("outputs", &moving.outputs, &layered.outputs, 0.0);
        assert_close("gradients", &moving.grads, &layered.grads, 1e-6);
        assert!(moving.stats.is_empty() && layered.stats.is_empty());
        let n = if frozen { 2 } else { 2 + 6 };
        assert_eq!(moving.grads.len(), n, "inputs and trainable weights");
    }
}

#[test]
fn training_equals_the_layers_one_by_one() {
    let fused = run(Mode::TRAIN, false);
    let layered = run(probe(Mode::TRAIN), false);
    assert_eq!(fused.forms, [Form::Training; 2]);
    assert_close("outputs", &fused.outputs, &layered.outputs, 1e-6);
    assert_close("gradients", &fused.grads, &layered.grads, 1e-5);
    assert_eq!(fused.grads.len(), 2 + 6);
    // Both batchnorms report their moving mean and variance, identically.
    assert_eq!(fused.stats.len(), 4);
    assert_close("statistics", &fused.stats, &layered.stats, 0.0);
    // Batch statistics differ from the moving ones: a real change of mode.
    let inference = run(Mode::INFER, false);
    assert_ne!(fused.outputs[0], inference.outputs[0]);
}

#[test]
#[should_panic(expected = "a residual goes with an Add layer")]
fn a_unit_with_an_add_needs_its_residual() {
    let (unit, _, store) = units();
    let mut g = Graph::new(&store, Mode::INFER);
    let x = g.input(random(&[1, 5, 5, 3], 1, -1.0));
    unit.forward(&mut g, x, None);
}

#[test]
fn the_unit_names_its_output_by_its_last_layer() {
    let (unit, _, _) = units();
    assert_eq!(unit.output_name(), "b_out");
    let plain = ConvBn {
        add: None,
        relu: None,
        ..unit.clone()
    };
    assert_eq!(plain.output_name(), "b_3_bn");
}
