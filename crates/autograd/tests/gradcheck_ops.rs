//! Every op's backward against central finite differences (see
//! `autograd::gradcheck` for the step and tolerances), over random shapes.

use autograd::gradcheck::{assert_fused_equals_composed, check_op, GradCheck};
use autograd::ops;
use autograd::{Backward, BackwardCtx, Graph, OpInfo, ParamStore, Var};
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tensor::{reference, Padding, PoolGeometry, Tensor, Trans};

/// `batch_norm_infer`'s reference on inputs (x, gamma, beta, mean, var).
fn infer_reference(t: &[Tensor]) -> Vec<f32> {
    let d: Vec<&[f32]> = t.iter().map(|t| t.data()).collect();
    reference::batch_norm_infer(d[0], d[1], d[2], d[3], d[4], 1.001e-5)
}

fn random(shape: &[usize], seed: u64) -> Tensor {
    let mut rng = StdRng::seed_from_u64(seed);
    let n = shape.iter().product();
    Tensor::from_vec(shape, (0..n).map(|_| rng.gen_range(-1.0..1.0)).collect()).unwrap()
}

/// Values at least 0.1 from zero, so a finite-difference step of 1e-2 never
/// crosses the ReLU kink.
fn away_from_zero(shape: &[usize], seed: u64) -> Tensor {
    let mut t = random(shape, seed);
    t.data_mut()
        .iter_mut()
        .for_each(|v| *v = v.signum() * (0.1 + v.abs()));
    t
}

/// Distinct values at least 0.05 apart (a shuffled ramp), so no max-pool
/// window has a near tie that a 1e-2 step could flip.
fn distinct(shape: &[usize], seed: u64) -> Tensor {
    let n: usize = shape.iter().product();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut v: Vec<f32> = (0..n).map(|i| i as f32 * 0.05 - n as f32 * 0.025).collect();
    for i in (1..n).rev() {
        v.swap(i, rng.gen_range(0..=i));
    }
    Tensor::from_vec(shape, v).unwrap()
}

/// True when every batchnorm output (before the ReLU) is at least 0.01 from
/// zero: a step of 1e-3 moves an output by at most ~3e-3 here, so no
/// difference quotient straddles the ReLU's kink.
fn clear_of_the_kink(inputs: &[Tensor], training: bool) -> bool {
    let params = ParamStore::new();
    let mut g = Graph::new(
        &params,
        autograd::Mode {
            record: false,
            training,
            layer_outputs: false,
        },
    );
    let v: Vec<Var> = inputs.iter().map(|t| g.leaf(t.clone(), false)).collect();
    let y = if training {
        ops::batch_norm_train(&mut g, v[0], v[1], v[2], 1.001e-5).0
    } else {
        ops::batch_norm_infer(&mut g, v[0], v[1], v[2], v[3], v[4], 1.001e-5)
    };
    g.value(y).data().iter().all(|v| v.abs() > 0.01)
}

/// [`clear_of_the_kink`] for `residual + batch_norm_train(x)`, the inputs
/// being x, gamma, beta, residual.
fn residual_sum_clear_of_the_kink(inputs: &[Tensor]) -> bool {
    let params = ParamStore::new();
    let mode = autograd::Mode {
        record: false,
        training: true,
        layer_outputs: false,
    };
    let mut g = Graph::new(&params, mode);
    let v: Vec<Var> = inputs.iter().map(|t| g.leaf(t.clone(), false)).collect();
    let b = ops::batch_norm_train(&mut g, v[0], v[1], v[2], 1.001e-5).0;
    let y = ops::add(&mut g, v[3], b);
    g.value(y).data().iter().all(|v| v.abs() > 0.01)
}

fn check(inputs: &[Tensor], f: impl Fn(&mut Graph, &[Var]) -> Var) {
    check_with(GradCheck::default(), inputs, f)
}

fn check_with(c: GradCheck, inputs: &[Tensor], f: impl Fn(&mut Graph, &[Var]) -> Var) {
    let params = ParamStore::new();
    if let Err(e) = c.run(&params, inputs, f) {
        panic!("gradient check failed: {e}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn conv2d(n in 1usize..3, h in 1usize..6, w in 1usize..6, cin in 1usize..4, cout in 1usize..4,
              k in prop::sample::select(vec![1usize, 2, 3]), stride in 1usize..3,
              pads in prop::array::uniform4(0usize..2), bias in any::<bool>(), seed in any::<u64>()) {
        let padding = Padding { top: pads[0], bottom: pads[1], left: pads[2], right: pads[3] };
        prop_assume!(h + pads[0] + pads[1] >= k && w + pads[2] + pads[3] >= k);
        let mut inputs = vec![random(&[n, h, w, cin], seed), random(&[k, k, cin, cout], seed + 1)];
        if bias { inputs.push(random(&[cout], seed + 2)); }
        check_op("conv2d", GradCheck::default(), &inputs,
            |g, v| ops::conv2d(g, v[0], v[1], v.get(2).copied(), stride, padding),
            |t| {
                let geom = autograd::ops::conv2d::geometry(&t[0], &t[1], stride, padding);
                reference::conv2d_forward(&geom, t[0].data(), t[1].data(), t.get(2).map(|b| b.data()))
            },
            (1e-5, 1e-5));
    }

    #[test]
    fn batch_norm_training(n in 1usize..4, hw in 1usize..4, c in 1usize..5, seed in any::<u64>()) {
        // At least two rows per channel, or the batch variance is zero and
        // the op is 0/0 up to epsilon.
        // Distinct values at least 0.25 apart: two nearly equal rows make the
        // normalized output swing between -1 and 1 within one step.
        prop_assume!(n * hw * hw >= 2);
        let mut x = distinct(&[n, hw, hw, c], seed);
        x.data_mut().iter_mut().for_each(|v| *v *= 5.0);
        let inputs = [x, random(&[c], seed + 1), random(&[c], seed + 2)];
        check_op("batch_norm_train", GradCheck::default(), &inputs,
            |g, v| ops::batch_norm_train(g, v[0], v[1], v[2], 1.001e-5).0,
            |t| reference::batch_norm_train(t[0].data(), t[1].data(), t[2].data(), 1.001e-5),
            (1e-5, 1e-5));
    }

    #[test]
    fn batch_norm_inference(n in 1usize..3, hw in 1usize..4, c in 1usize..5, seed in any::<u64>()) {
        let mut var = random(&[c], seed + 4);
        var.data_mut().iter_mut().for_each(|v| *v = 0.5 + v.abs());
        let inputs = [random(&[n, hw, hw, c], seed), random(&[c], seed + 1), random(&[c], seed + 2),
                      random(&[c], seed + 3), var];
        let c = GradCheck { training: false, ..GradCheck::default() };
        check_op("batch_norm_infer", c, &inputs,
            |g, v| ops::batch_norm_infer(g, v[0], v[1], v[2], v[3], v[4], 1.001e-5),
            infer_reference,
            (1e-5, 1e-5));
    }

    #[test]
    fn batch_norm_relu_training(n in 1usize..4, hw in 1usize..4, c in 1usize..5, seed in any::<u64>()) {
        // Over two rows the normalized values are exactly -1 and 1 and the
        // ReLU keeps one: the gradient is all epsilon and rounding.
        prop_assume!(n * hw * hw >= 3);
        let mut x = distinct(&[n, hw, hw, c], seed);
        x.data_mut().iter_mut().for_each(|v| *v *= 5.0);
        let inputs = [x, random(&[c], seed + 1), random(&[c], seed + 2)];
        prop_assume!(clear_of_the_kink(&inputs, true));
        let check = GradCheck { step: 1e-3, ..GradCheck::default() };
        check_op("batch_norm_relu_train", check, &inputs,
            |g, v| ops::batch_norm_relu_train(g, v[0], v[1], v[2], 1.001e-5).0,
            |t| reference::relu(&reference::batch_norm_train(t[0].data(), t[1].data(), t[2].data(), 1.001e-5)),
            (1e-5, 1e-5));
    }

    #[test]
    fn batch_norm_add_relu_training(n in 1usize..4, hw in 1usize..4, c in 1usize..5, seed in any::<u64>()) {
        prop_assume!(n * hw * hw >= 3);
        let mut x = distinct(&[n, hw, hw, c], seed);
        x.data_mut().iter_mut().for_each(|v| *v *= 5.0);
        let inputs = [x, random(&[c], seed + 1), random(&[c], seed + 2), random(&[n, hw, hw, c], seed + 3)];
        prop_assume!(residual_sum_clear_of_the_kink(&inputs));
        let check = GradCheck { step: 1e-3, ..GradCheck::default() };
        check_op("batch_norm_add_relu_train", check, &inputs,
            |g, v| ops::batch_norm_add_relu_train(g, v[0], v[1], v[2], v[3], 1.001e-5).0,
            |t| {
                let b = reference::batch_norm_train(t[0].data(), t[1].data(), t[2].data(), 1.001e-5);
                reference::relu(&reference::add(t[3].data(), &b))
            },
            (1e-5, 1e-5));
    }

    #[test]
    fn batch_norm_relu_inference(n in 1usize..3, hw in 1usize..4, c in 1usize..5, seed in any::<u64>()) {
        let mut var = random(&[c], seed + 4);
        var.data_mut().iter_mut().for_each(|v| *v = 0.5 + v.abs());
        let inputs = [random(&[n, hw, hw, c], seed), random(&[c], seed + 1), random(&[c], seed + 2),
                      random(&[c], seed + 3), var];
        prop_assume!(clear_of_the_kink(&inputs, false));
        let c = GradCheck { training: false, step: 1e-3, ..GradCheck::default() };
        check_op("batch_norm_relu_infer", c, &inputs,
            |g, v| ops::batch_norm_relu_infer(g, v[0], v[1], v[2], v[3], v[4], 1.001e-5),
            |t| reference::relu(&infer_reference(t)),
            (1e-5, 1e-5));
    }

    #[test]
    fn relu(n in 1usize..40, seed in any::<u64>()) {
        // Inputs keep clear of the kink, so nothing may be skipped here.
        check_op("relu", GradCheck::default(), &[away_from_zero(&[n, 3], seed)],
            |g, v| ops::relu(g, v[0]), |t| reference::relu(t[0].data()), (0.0, 0.0));
    }

    #[test]
    fn add_with_an_input_used_twice(n in 1usize..30, seed in any::<u64>()) {
        // y = (a + b) + a: a's gradient is the sum of both paths.
        check(&[random(&[n], seed), random(&[n], seed + 1)], |g, v| {
            let s = ops::add(g, v[0], v[1]);
            ops::add(g, s, v[0])
        });
    }

    #[test]
    fn zero_pad(n in 1usize..3, h in 1usize..4, w in 1usize..4, c in 1usize..3,
                pads in prop::array::uniform4(0usize..3), seed in any::<u64>()) {
        let p = Padding { top: pads[0], bottom: pads[1], left: pads[2], right: pads[3] };
        check(&[random(&[n, h, w, c], seed)], |g, v| ops::zero_pad(g, v[0], p));
    }

    #[test]
    fn max_pool(n in 1usize..3, h in 3usize..7, w in 3usize..7, c in 1usize..3,
                k in 2usize..4, stride in 1usize..3, pad in 0usize..2, seed in any::<u64>()) {
        let padding = Padding::uniform(pad);
        let geom = PoolGeometry { batch: n, in_h: h, in_w: w, channels: c, kernel: k, stride, padding };
        prop_assume!(geom.validate().is_ok());
        check_op("max_pool", GradCheck::default(), &[distinct(&[n, h, w, c], seed)],
            |g, v| ops::max_pool(g, v[0], k, stride, padding),
            |t| reference::max_pool_forward(&geom, t[0].data()).0, (0.0, 0.0));
    }

    #[test]
    fn global_avg_pool(n in 1usize..3, h in 1usize..4, w in 1usize..4, c in 1usize..4, seed in any::<u64>()) {
        check_op("global_avg_pool", GradCheck::default(), &[random(&[n, h, w, c], seed)],
            |g, v| ops::global_avg_pool(g, v[0]),
            |t| reference::global_avg_pool_forward(t[0].data(), n, h * w, c), (1e-6, 1e-6));
    }

    #[test]
    fn dense(n in 1usize..4, fin in 1usize..6, fout in 1usize..6, seed in any::<u64>()) {
        let inputs = [random(&[n, fin], seed), random(&[fin, fout], seed + 1), random(&[fout], seed + 2)];
        check_op("dense", GradCheck::default(), &inputs,
            |g, v| ops::dense(g, v[0], v[1], v[2]),
            |t| {
                // y = x w + b: the bias broadcast into C first, then the product added.
                let mut y: Vec<f32> = (0..n).flat_map(|_| t[2].data().to_vec()).collect();
                reference::gemm(n, fout, fin, 1.0, t[0].data(), Trans::N, t[1].data(), Trans::N, 1.0, &mut y);
                y
            },
            (1e-5, 1e-5));
    }

    #[test]
    fn softmax_cross_entropy(n in 1usize..5, k in 2usize..6, seed in any::<u64>()) {
        let labels: Vec<usize> = (0..n).map(|i| (i * 7 + seed as usize) % k).collect();
        let mut logits = random(&[n, k], seed);
        logits.data_mut().iter_mut().for_each(|v| *v *= 3.0);
        check(&[logits], |g, v| ops::softmax_cross_entropy(g, v[0], &labels));
    }

    #[test]
    fn softmax_cross_entropy_smoothed(n in 1usize..5, k in 2usize..6, smoothing in 0.0f32..0.99, seed in any::<u64>()) {
        let labels: Vec<usize> = (0..n).map(|i| (i * 7 + seed as usize) % k).collect();
        let mut logits = random(&[n, k], seed);
        logits.data_mut().iter_mut().for_each(|v| *v *= 3.0);
        check(&[logits], |g, v| ops::softmax_cross_entropy_smoothed(g, v[0], &labels, smoothing));
    }
}

/// conv - BN - ReLU - conv - BN, plus the block input, then ReLU: the
/// residual block of ResNet in training mode, checked as one function of its
/// input and all six weights.
#[test]
fn residual_block_in_training_mode() {
    let c = 3;
    let mut inputs = vec![random(&[2, 4, 4, c], 1)];
    for (i, shape) in [[3, 3, c, c], [3, 3, c, c]].iter().enumerate() {
        inputs.push(random(shape, 10 + i as u64));
    }
    inputs.extend([
        random(&[c], 20),
        random(&[c], 21),
        random(&[c], 22),
        random(&[c], 23),
    ]);
    // Every weight moves every BN output, so many ReLU inputs shift at once;
    // a smaller step keeps them from crossing the kink (the rounding noise it
    // adds, ~1e-6 / 2e-3 = 5e-4 of a unit gradient, is under the tolerance).
    let check = GradCheck {
        step: 1e-3,
        skip_kinks: true,
        ..GradCheck::default()
    };
    let report = check
        .run(&ParamStore::new(), &inputs, |g, v| {
            let same = Padding::same(4, 4, 3, 3, 1);
            let y = ops::conv2d(g, v[0], v[1], None, 1, same);
            let y = ops::batch_norm_train(g, y, v[3], v[4], 1.001e-5).0;
            let y = ops::relu(g, y);
            let y = ops::conv2d(g, y, v[2], None, 1, same);
            let y = ops::batch_norm_train(g, y, v[5], v[6], 1.001e-5).0;
            let y = ops::add(g, y, v[0]);
            ops::relu(g, y)
        })
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(report.checked >= 100, "{report:?}");
}

/// `y = 2x` with a backward that is off by 5%: the check must reject it, or
/// it could not catch a real mistake either.
#[test]
fn the_check_catches_a_wrong_backward() {
    struct DoubleWrongBackward;
    impl Backward for DoubleWrongBackward {
        fn backward(&self, _ctx: &BackwardCtx, dy: Tensor) -> Vec<Option<Tensor>> {
            let mut dx = dy.clone();
            dx.data_mut().iter_mut().for_each(|v| *v *= 2.1);
            vec![Some(dx)]
        }
    }
    let double = |g: &mut Graph, v: &[Var]| {
        let mut y = g.value(v[0]).clone();
        y.data_mut().iter_mut().for_each(|v| *v *= 2.0);
        g.push(
            y,
            &[v[0]],
            OpInfo::named("double_wrong"),
            DoubleWrongBackward,
        )
    };
    let err = GradCheck::default().run(&ParamStore::new(), &[random(&[10], 3)], double);
    assert!(err.is_err(), "a 5% error in a backward went unnoticed");

    // And a real op with one term of its backward dropped: batchnorm without
    // the mean-of-dy term is wrong by O(1).
    struct BnMissingTerm;
    impl Backward for BnMissingTerm {
        fn backward(&self, ctx: &BackwardCtx, dy: Tensor) -> Vec<Option<Tensor>> {
            let _ = ctx;
            vec![Some(dy.clone())]
        }
    }
    let bn_as_identity_grad = |g: &mut Graph, v: &[Var]| {
        let y = ops::batch_norm_train(g, v[0], v[1], v[2], 1e-3).0;
        let y = g.value(y).clone();
        g.push(y, &[v[0]], OpInfo::named("bn_missing_term"), BnMissingTerm)
    };
    let c = 2;
    let inputs = [
        random(&[3, 2, 2, c], 5),
        Tensor::full(&[c], 1.0),
        Tensor::zeros(&[c]),
    ];
    assert!(GradCheck::default()
        .run(&ParamStore::new(), &inputs, bn_as_identity_grad)
        .is_err());
}

/// The fused batchnorm + ReLU computes exactly what the two ops in sequence
/// do, forward and backward, in both modes.
#[test]
fn fused_batch_norm_relu_equals_the_two_ops() {
    let mut var = random(&[5], 5);
    var.data_mut().iter_mut().for_each(|v| *v = 0.5 + v.abs());
    let inputs = [
        random(&[3, 4, 4, 5], 1),
        random(&[5], 2),
        random(&[5], 3),
        random(&[5], 4),
        var,
    ];
    assert_fused_equals_composed(
        "batch_norm_relu_train",
        autograd::Mode::TRAIN,
        &inputs[..3],
        |g, v| ops::batch_norm_relu_train(g, v[0], v[1], v[2], 1e-3).0,
        |g, v| {
            let b = ops::batch_norm_train(g, v[0], v[1], v[2], 1e-3).0;
            ops::relu(g, b)
        },
        1e-5,
    );
    assert_fused_equals_composed(
        "batch_norm_relu_infer",
        autograd::Mode::FROZEN_BN,
        &inputs,
        |g, v| ops::batch_norm_relu_infer(g, v[0], v[1], v[2], v[3], v[4], 1e-3),
        |g, v| {
            let b = ops::batch_norm_infer(g, v[0], v[1], v[2], v[3], v[4], 1e-3);
            ops::relu(g, b)
        },
        1e-5,
    );
}

/// Batchnorm + residual add + ReLU as one training op computes exactly what
/// the three ops do forward, and the same gradients up to rounding.
#[test]
fn fused_batch_norm_add_relu_equals_the_three_ops() {
    trait TrainOp: Fn(&mut Graph, &[Var]) -> (Var, ops::BatchStats) {}
    impl<F: Fn(&mut Graph, &[Var]) -> (Var, ops::BatchStats)> TrainOp for F {}
    let inputs = [
        random(&[3, 4, 4, 5], 1),
        random(&[5], 2),
        random(&[5], 3),
        random(&[3, 4, 4, 5], 4),
    ];
    let fused =
        |g: &mut Graph, v: &[Var]| ops::batch_norm_add_relu_train(g, v[0], v[1], v[2], v[3], 1e-3);
    let composed = |g: &mut Graph, v: &[Var]| {
        let (b, stats) = ops::batch_norm_train(g, v[0], v[1], v[2], 1e-3);
        let sum = ops::add(g, v[3], b);
        (ops::relu(g, sum), stats)
    };
    assert_fused_equals_composed(
        "batch_norm_add_relu_train",
        autograd::Mode::TRAIN,
        &inputs,
        |g, v| fused(g, v).0,
        |g, v| composed(g, v).0,
        1e-5,
    );
    // The same batch statistics, and a ReLU that cut something.
    let params = ParamStore::new();
    let stats_and_output = |f: &dyn TrainOp| {
        let mut g = Graph::new(&params, autograd::Mode::TRAIN);
        let v: Vec<Var> = inputs.iter().map(|t| g.leaf(t.clone(), true)).collect();
        let (y, stats) = f(&mut g, &v);
        (stats.mean, stats.var, g.value(y).clone())
    };
    let (mean, var, y) = stats_and_output(&fused);
    let (mean_parts, var_parts, _) = stats_and_output(&composed);
    assert_eq!((mean, var), (mean_parts, var_parts), "batch statistics");
    assert!(y.data().contains(&0.0), "the ReLU cut something");
}

/// `check_op` compares the forward too: a reference that disagrees fails it.
#[test]
fn check_op_catches_a_wrong_forward() {
    let x = away_from_zero(&[4, 3], 3);
    tensor::testing::assert_panics("relu forward: element", || {
        check_op(
            "relu",
            GradCheck::default(),
            &[x],
            |g, v| ops::relu(g, v[0]),
            |t| t[0].data().iter().map(|v| v.abs()).collect(),
            (0.0, 0.0),
        )
    });
}
