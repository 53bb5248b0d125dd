//! The batchnorm kernels against the textbook formulas in
//! `tensor::reference`, composed the way the autograd ops compose them:
//! statistics, the affine map (with ReLU, with residual + ReLU), and the
//! closed-form backward's two sums and input-gradient pass. Row counts on
//! both sides of the parallel threshold and of the fixed reduction blocks.

use proptest::prelude::*;
use tensor::batch_norm::{self as bn, Relu};
use tensor::reference;
use tensor::testing::{assert_close, check_tensor, data, SUM_RTOL};

const EPS: f32 = 1.001e-5;

/// A batch of `rows` x `c` values with a per-channel offset, so the mean is
/// far from zero and a one-pass variance would cancel visibly.
fn batch(rows: usize, c: usize, seed: u64) -> Vec<f32> {
    data(rows * c, seed)
        .into_iter()
        .enumerate()
        .map(|(i, v)| v + (i % c) as f32 * 3.0 - 4.0)
        .collect()
}

fn rows() -> impl Strategy<Value = usize> {
    prop_oneof![1usize..40, 250usize..300, Just(2048), Just(8192)]
}

/// `sum(dy)` and `sum(dy * xhat)` against the reference. The tolerance is
/// [`SUM_RTOL`] of the same sum over absolute values (what a long sum's
/// rounding scales with; the sums themselves may cancel to almost nothing),
/// plus the rounding of `x - mean` in f32, an ulp of `|x| + |mean|` per row
/// magnified by `1 / sigma` (large where a channel's variance is small).
fn check_sums(x: &[f32], dy: &[f32], c: usize, got: (&[f32], &[f32]), want: (&[f32], &[f32])) {
    let (mean, var) = reference::batch_norm_statistics(x, c);
    let (mut tol_dy, mut tol_dyx) = (vec![0.0f32; c], vec![0.0f32; c]);
    for (row, g) in x.chunks_exact(c).zip(dy.chunks_exact(c)) {
        for i in 0..c {
            let inv_sigma = 1.0 / (var[i] + EPS).sqrt();
            let xhat = (row[i] - mean[i]) * inv_sigma;
            let centering = f32::EPSILON * (row[i].abs() + mean[i].abs()) * inv_sigma;
            tol_dy[i] += SUM_RTOL * g[i].abs();
            tol_dyx[i] += SUM_RTOL * (g[i] * xhat).abs() + 2.0 * centering * g[i].abs();
        }
    }
    assert_close("dbeta", got.0, want.0, &tol_dy, 1.0);
    assert_close("dgamma", got.1, want.1, &tol_dyx, 1.0);
}

/// The error bound of `dx = k dy + a (x - mean) + b` against the f64
/// reference. `dx` subtracts two means from `dy`: an absolute error on the
/// scale of `gamma / sigma` (sigma ~ 0.6 here) and a relative one; a few
/// ulps of each of the three terms (where a channel's variance is tiny, `a`
/// is large, but `x - mean` is small: the centred form does not cancel); and
/// `a` times the difference between our mean and the reference's (both
/// rounded to f32 from nearly the same value, usually equal).
fn dx_bound(
    x: &[f32],
    dy: &[f32],
    gamma: &[f32],
    mean: &[f32],
    grad: &bn::InputGradient,
    want: &[f32],
) -> Vec<f32> {
    let c = gamma.len();
    let (ref_mean, _) = reference::batch_norm_statistics(x, c);
    let scale = gamma.iter().map(|g| g.abs()).fold(0.0f32, f32::max) * 4.0;
    let (k, a, b) = (&grad.k, &grad.a, &grad.b);
    (0..x.len())
        .map(|j| {
            let i = j % c;
            let terms = (k[i] * dy[j]).abs() + (a[i] * (x[j] - mean[i])).abs() + b[i].abs();
            let mean_difference = (a[i] * (mean[i] - ref_mean[i])).abs();
            1e-4 * scale.max(1.0)
                + 1e-4 * want[j].abs()
                + 4.0 * f32::EPSILON * terms
                + mean_difference
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn statistics_and_affine_relu(rows in rows(), c in 1usize..20, seed in any::<u32>()) {
        let seed = seed as u64;
        let x = batch(rows, c, seed);
        let (gamma, beta) = (data(c, seed + 1), data(c, seed + 2));
        let (mean, var) = bn::mean_and_variance(&x, c);
        let (rmean, rvar) = reference::batch_norm_statistics(&x, c);
        check_tensor("mean", &mean, &rmean, 1e-5, 1e-6);
        check_tensor("variance", &var, &rvar, 1e-6, 1e-5);

        let inv: Vec<f32> = var.iter().map(|v| 1.0 / (v + EPS).sqrt()).collect();
        let scale: Vec<f32> = (0..c).map(|i| inv[i] * gamma[i]).collect();
        let shift: Vec<f32> = (0..c).map(|i| beta[i] - mean[i] * scale[i]).collect();
        let want = reference::batch_norm_train(&x, &gamma, &beta, EPS);
        // `x * scale + shift` rounds on the scale of its terms, `x * scale`
        // and `mean * scale` (large when a channel's variance is tiny), not
        // on the scale of the (cancelled) result.
        let residual = data(x.len(), seed + 3);
        let bound = |with_residual: bool| -> Vec<f32> {
            (0..x.len())
                .map(|j| {
                    let i = j % c;
                    let r = if with_residual { residual[j].abs() } else { 0.0 };
                    (x[j] * scale[i]).abs() + (mean[i] * scale[i]).abs() + beta[i].abs() + r
                })
                .collect()
        };
        let mut y = vec![f32::NAN; x.len()];
        bn::affine_relu(&x, &scale, &shift, &mut y);
        assert_close("bn + relu", &y, &reference::relu(&want), &bound(false), 4e-6);

        bn::affine_add_relu(&x, &scale, &shift, &residual, &mut y);
        let sum = reference::add(&residual, &want);
        assert_close("bn + add + relu", &y, &reference::relu(&sum), &bound(true), 4e-6);
    }

    #[test]
    fn closed_form_backward(rows in rows(), c in 1usize..20, seed in any::<u32>()) {
        let seed = seed as u64;
        let x = batch(rows, c, seed);
        let dy = data(x.len(), seed + 1);
        let gamma = data(c, seed + 2);
        let (mean, var) = bn::mean_and_variance(&x, c);
        let inv: Vec<f32> = var.iter().map(|v| 1.0 / (v + EPS).sqrt()).collect();
        let (rdx, rdgamma, rdbeta) = reference::batch_norm_train_backward(&x, &dy, &gamma, EPS);

        let (dbeta, dgamma) = bn::backward_sums(&x, &dy, &mean, &inv, Relu::None);
        check_sums(&x, &dy, c, (&dbeta, &dgamma), (&rdbeta, &rdgamma));

        let grad = bn::InputGradient::training(&gamma, &inv, &dbeta, &dgamma, rows);
        let mut dx = vec![f32::NAN; x.len()];
        bn::backward_input(&x, &mut dy.clone(), &mean, &grad, Relu::None, false, &mut dx);
        assert_close("dx", &dx, &rdx, &dx_bound(&x, &dy, &gamma, &mean, &grad, &rdx), 1.0);
    }

    #[test]
    fn backward_through_the_relu(rows in rows(), c in 1usize..20, seed in any::<u32>()) {
        let seed = seed as u64;
        let x = batch(rows, c, seed);
        let dy = data(x.len(), seed + 1);
        let (gamma, beta) = (data(c, seed + 2), data(c, seed + 3));

        let (mean, var) = bn::mean_and_variance(&x, c);
        let inv: Vec<f32> = var.iter().map(|v| 1.0 / (v + EPS).sqrt()).collect();
        // The op's own forward (its mask is what the backward must match),
        // then the ReLU's backward and batchnorm's in the reference: what the
        // fused passes do at once, with the mask read from the output and
        // recomputed from the input.
        let shift: Vec<f32> = (0..c).map(|i| beta[i] - mean[i] * inv[i] * gamma[i]).collect();
        let scale: Vec<f32> = (0..c).map(|i| inv[i] * gamma[i]).collect();
        let mut y32 = vec![f32::NAN; x.len()];
        bn::affine_relu(&x, &scale, &shift, &mut y32);
        let masks = [Relu::OfOutput(&y32), Relu::OfAffine { scale: &scale, shift: &shift }];
        let masked = reference::relu_backward(&y32, &dy);
        let (rdx, rdgamma, rdbeta) = reference::batch_norm_train_backward(&x, &masked, &gamma, EPS);
        for relu in masks {
            let (dbeta, dgamma) = bn::backward_sums(&x, &dy, &mean, &inv, relu);
            check_sums(&x, &masked, c, (&dbeta, &dgamma), (&rdbeta, &rdgamma));
            let grad = bn::InputGradient::training(&gamma, &inv, &dbeta, &dgamma, rows);
            let mut dx = vec![f32::NAN; x.len()];
            bn::backward_input(&x, &mut dy.clone(), &mean, &grad, relu, false, &mut dx);
            assert_close("dx", &dx, &rdx, &dx_bound(&x, &masked, &gamma, &mean, &grad, &rdx), 1.0);

            let mut dy_masked = dy.clone();
            let mut dx2 = vec![f32::NAN; x.len()];
            bn::backward_input(&x, &mut dy_masked, &mean, &grad, relu, true, &mut dx2);
            prop_assert_eq!(&dx2, &dx);
            prop_assert_eq!(&dy_masked, &masked);
        }
    }
}
