//! The graph's bookkeeping: stages free what nothing reads again, taps name
//! layer outputs, op metadata travels beside the op, and the inference-only
//! fused conv computes exactly what its differentiable parts compute.

use autograd::ops::{self, BatchNormArgs, ConvArgs};
use autograd::{Graph, Mode, ParamKind, ParamStore, Var};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tensor::{Padding, Tensor};

fn random(shape: &[usize], seed: u64) -> Tensor {
    let mut rng = StdRng::seed_from_u64(seed);
    let n = shape.iter().product();
    Tensor::from_vec(shape, (0..n).map(|_| rng.gen_range(-1.0..1.0)).collect()).unwrap()
}

/// A stage of two ReLUs after an add: `relu(relu(x + x))`, its inner values
/// tapped as `sum` and `inner`.
fn two_relus(g: &mut Graph, x: Var) -> (Var, Var, Var) {
    let sum = ops::add(g, x, x);
    let sum = g.tap("sum", sum);
    let inner = ops::relu(g, sum);
    let inner = g.tap("inner", inner);
    let out = ops::relu(g, inner);
    (sum, inner, g.tap("out", out))
}

#[test]
fn a_stage_without_a_tape_frees_its_input_and_intermediates() {
    tensor::buffer_pool::poison_recycled(true);
    let store = ParamStore::new();
    let mut g = Graph::new(&store, Mode::INFER);
    let before = g.input(random(&[4], 1));
    let x = g.input(random(&[6], 2));
    let mut inner = (x, x);
    let out = g.stage(x, |g, x| {
        let (sum, i, out) = two_relus(g, x);
        inner = (sum, i);
        out
    });
    assert!(
        g.is_live(out) && g.is_live(before),
        "output and outside values stay"
    );
    assert!(!g.is_live(x) && !g.is_live(inner.0) && !g.is_live(inner.1));
    assert_eq!(g.live_values(), 2);
    // Taps of freed values are not offered.
    assert_eq!(g.tap_names().collect::<Vec<_>>(), ["out"]);
    assert_eq!(g.tapped("inner"), None);
    assert_eq!(g.tapped("out"), Some(out));
}

#[test]
fn a_stage_keeps_what_is_retained_and_every_tap_in_layer_outputs_mode() {
    let store = ParamStore::new();
    let mut g = Graph::new(&store, Mode::INFER);
    let x = g.input(random(&[6], 2));
    let mut kept = x;
    g.stage(x, |g, x| {
        let (sum, _, out) = two_relus(g, x);
        kept = g.retain(sum);
        out
    });
    assert!(g.is_live(kept));
    assert_eq!(g.tapped("inner"), None);

    let mut g = Graph::new(&store, Mode::PROBE);
    let x = g.input(random(&[6], 2));
    let out = g.stage(x, |g, x| two_relus(g, x).2);
    assert_eq!(g.tap_names().collect::<Vec<_>>(), ["sum", "inner", "out"]);
    let inner = g.value(g.tapped("inner").unwrap()).clone();
    assert_eq!(g.value(out), &inner, "relu(relu(v)) == relu(v)");
    assert!(!g.is_live(x), "the untapped input is freed");
}

#[test]
fn a_stage_with_a_tape_frees_nothing_and_gradients_flow() {
    let store = ParamStore::new();
    let mut g = Graph::new(&store, Mode::TRAIN);
    let x = g.leaf(Tensor::from_vec(&[3], vec![-1.0, 2.0, 3.0]).unwrap(), true);
    let out = g.stage(x, |g, x| two_relus(g, x).2);
    let live = g.live_values();
    assert_eq!(live, 4, "x, sum, inner, out");
    let grads = g.backward_with(out, Tensor::full(&[3], 1.0));
    assert_eq!(grads.leaf(x).unwrap().data(), [0.0, 2.0, 2.0]);
}

#[test]
#[should_panic(expected = "conv_bn_infer runs only without a tape")]
fn the_fused_conv_refuses_a_recording_graph() {
    let (store, conv, bn) = conv_bn_params(2, 3, 0);
    let mut g = Graph::new(&store, Mode::FROZEN_BN);
    let x = g.input(random(&[1, 4, 4, 2], 1));
    let (c, b) = (conv(&mut g), bn(&mut g));
    ops::conv_bn_infer(&mut g, x, c, b, None, true);
}

type ArgsOf<T> = Box<dyn Fn(&mut Graph) -> T>;

/// A 3x3 'same' conv `cin -> cout` with bias and an inference batchnorm
/// with non-trivial statistics, in a store.
fn conv_bn_params(
    cin: usize,
    cout: usize,
    seed: u64,
) -> (ParamStore, ArgsOf<ConvArgs>, ArgsOf<BatchNormArgs>) {
    let mut store = ParamStore::new();
    let mut add = |name: &str, t: Tensor, kind| store.add(name, t, kind).unwrap();
    let kernel = add("k", random(&[3, 3, cin, cout], seed), ParamKind::Weight);
    let bias = add("b", random(&[cout], seed + 1), ParamKind::Weight);
    let gamma = add("gamma", random(&[cout], seed + 2), ParamKind::Weight);
    let beta = add("beta", random(&[cout], seed + 3), ParamKind::Weight);
    let mean = add("mean", random(&[cout], seed + 4), ParamKind::Statistic);
    let mut var = random(&[cout], seed + 5);
    var.data_mut().iter_mut().for_each(|v| *v = v.abs() + 0.5);
    let var = add("var", var, ParamKind::Statistic);
    let conv = Box::new(move |g: &mut Graph| ConvArgs {
        kernel: g.param(kernel),
        bias: Some(g.param(bias)),
        stride: 1,
        padding: Padding::uniform(1),
    });
    let bn = Box::new(move |g: &mut Graph| BatchNormArgs {
        gamma: g.param(gamma),
        beta: g.param(beta),
        moving_mean: g.param(mean),
        moving_var: g.param(var),
        eps: 1e-3,
    });
    (store, conv, bn)
}

/// The fused op is bit-identical to conv, batchnorm, add and ReLU run one by
/// one, in all four combinations of residual and ReLU; it is one op in the
/// profile, pushed without a backward.
#[test]
fn the_fused_conv_equals_its_parts_bit_for_bit() {
    tensor::buffer_pool::poison_recycled(true);
    let (cin, cout) = (3, 5);
    let (store, conv, bn) = conv_bn_params(cin, cout, 7);
    let x = random(&[2, 5, 6, cin], 11);
    let r = random(&[2, 5, 6, cout], 12);
    for residual in [false, true] {
        for relu in [false, true] {
            let fused = {
                let mut g = Graph::new(&store, Mode::INFER);
                g.enable_profile();
                let (xv, rv) = (g.input(x.clone()), g.input(r.clone()));
                let (c, b) = (conv(&mut g), bn(&mut g));
                let y = ops::conv_bn_infer(&mut g, xv, c, b, residual.then_some(rv), relu);
                let names: Vec<_> = g.profile().unwrap().ops.iter().map(|o| o.name).collect();
                assert_eq!(names, ["conv_bn_infer"]);
                let op = &g.profile().unwrap().ops[0];
                assert_eq!(op.detail, "3x3/1 3->5 @5x6");
                assert_eq!(op.forward_flops, 2.0 * (2 * 5 * 6 * 9 * cin * cout) as f64);
                g.take(y)
            };
            let parts = {
                let mut g = Graph::new(&store, Mode::INFER);
                let (xv, rv) = (g.input(x.clone()), g.input(r.clone()));
                let (c, b) = (conv(&mut g), bn(&mut g));
                let y = ops::conv2d(&mut g, xv, c.kernel, c.bias, c.stride, c.padding);
                let (gamma, beta, mean, var) = (b.gamma, b.beta, b.moving_mean, b.moving_var);
                let mut y = ops::batch_norm_infer(&mut g, y, gamma, beta, mean, var, b.eps);
                if residual {
                    y = ops::add(&mut g, rv, y);
                }
                if relu {
                    y = ops::relu(&mut g, y);
                }
                g.take(y)
            };
            assert_eq!(fused, parts, "residual {residual}, relu {relu}");
        }
    }
}
