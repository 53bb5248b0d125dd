//! Batchnorm's closed-form backward: the two per-channel sums, then the
//! input gradient, each through the ReLU that followed the batchnorm.

use super::{reduce_rows, BLOCK_ROWS, PARALLEL_MIN};
use rayon::prelude::*;

/// The ReLU after a batchnorm, as its backward needs it: which elements of
/// `dy` pass (where the ReLU's output is positive) and which become 0.
#[derive(Clone, Copy, Debug)]
pub enum Relu<'a> {
    /// No ReLU follows: every element passes.
    None,
    /// The mask recomputed from the batchnorm's input with the forward's
    /// own `scale` and `shift`: `x * scale + shift > 0` is the f32
    /// arithmetic of [`super::affine_relu`], so exactly its mask, and the output
    /// need not be read.
    OfAffine { scale: &'a [f32], shift: &'a [f32] },
    /// The mask read from the ReLU's output: needed when a residual was
    /// added before the ReLU, so that the input alone does not decide.
    OfOutput(&'a [f32]),
}

const NO_RELU: u8 = 0;
const OF_AFFINE: u8 = 1;
const OF_OUTPUT: u8 = 2;

/// The slices a pass reads for the mask `MASK`: `out` is the ReLU output
/// (or `x`, unread), `scale` and `shift` the forward's (or any slice of
/// the channel count, unread). One monomorphized loop per kind of mask.
#[derive(Clone, Copy)]
struct MaskArgs<'a> {
    out: &'a [f32],
    scale: &'a [f32],
    shift: &'a [f32],
}

impl<'a> Relu<'a> {
    /// `(MASK, args)` for the loops below; `x` and `per_channel` stand in
    /// for the slices this kind of mask does not read.
    fn args(self, x: &'a [f32], per_channel: &'a [f32]) -> (u8, MaskArgs<'a>) {
        match self {
            Relu::None => (
                NO_RELU,
                MaskArgs {
                    out: x,
                    scale: per_channel,
                    shift: per_channel,
                },
            ),
            Relu::OfAffine { scale, shift } => (
                OF_AFFINE,
                MaskArgs {
                    out: x,
                    scale,
                    shift,
                },
            ),
            Relu::OfOutput(out) => (
                OF_OUTPUT,
                MaskArgs {
                    out,
                    scale: per_channel,
                    shift: per_channel,
                },
            ),
        }
    }
}

/// `dy` where the ReLU passed, else 0 (a NaN output or a NaN `x` does not pass).
#[inline(always)]
fn through_relu<const MASK: u8>(dy: f32, x: f32, out: f32, scale: f32, shift: f32) -> f32 {
    let passes = match MASK {
        NO_RELU => true,
        OF_AFFINE => x * scale + shift > 0.0,
        _ => out > 0.0,
    };
    if passes {
        dy
    } else {
        0.0
    }
}

fn check_backward_shapes(x: &[f32], dy: &[f32], c: usize, relu: Relu) {
    assert!(
        c > 0 && x.len() == dy.len() && x.len().is_multiple_of(c),
        "batch norm backward: x has {} values, dy {}, channels {c}",
        x.len(),
        dy.len()
    );
    match relu {
        Relu::None => {}
        Relu::OfAffine { scale, shift } => assert!(
            scale.len() == c && shift.len() == c,
            "batch norm backward: the ReLU's scale/shift are not [{c}]"
        ),
        Relu::OfOutput(out) => assert_eq!(
            out.len(),
            x.len(),
            "batch norm backward: ReLU output length"
        ),
    }
}

/// The two sums of the backward pass, in one read of `x` and `dy`:
/// `sum(dy)` and `sum(dy * xhat)` with `xhat = (x - mean) * inv_sigma`,
/// `dy` first sent back through the ReLU `relu` when there is one.
pub fn backward_sums(
    x: &[f32],
    dy: &[f32],
    mean: &[f32],
    inv_sigma: &[f32],
    relu: Relu,
) -> (Vec<f32>, Vec<f32>) {
    let c = mean.len();
    check_backward_shapes(x, dy, c, relu);
    let (mask, args) = relu.args(x, mean);
    let sums = match mask {
        NO_RELU => sums_impl::<NO_RELU>(x, dy, mean, inv_sigma, args),
        OF_AFFINE => sums_impl::<OF_AFFINE>(x, dy, mean, inv_sigma, args),
        _ => sums_impl::<OF_OUTPUT>(x, dy, mean, inv_sigma, args),
    };
    let (a, b) = sums.split_at(c);
    (
        a.iter().map(|&v| v as f32).collect(),
        b.iter().map(|&v| v as f32).collect(),
    )
}

fn sums_impl<const MASK: u8>(
    x: &[f32],
    dy: &[f32],
    mean: &[f32],
    inv_sigma: &[f32],
    m: MaskArgs,
) -> Vec<f64> {
    let c = mean.len();
    reduce_rows(x.len() / c, 2 * c, |r, acc| {
        let (s_dy, s_dyx) = acc.split_at_mut(c);
        let span = r.start * c..r.end * c;
        let rows = x[span.clone()]
            .chunks_exact(c)
            .zip(m.out[span.clone()].chunks_exact(c))
            .zip(dy[span].chunks_exact(c));
        for ((xr, yr), gr) in rows {
            for i in 0..c {
                let g = through_relu::<MASK>(gr[i], xr[i], yr[i], m.scale[i], m.shift[i]);
                s_dy[i] += g;
                s_dyx[i] += g * (xr[i] - mean[i]) * inv_sigma[i];
            }
        }
    })
}

/// The per-channel constants of the training-mode input gradient
/// `gamma / sigma * (dy - mean(dy) - xhat * mean(dy * xhat))`, written as
/// `dx = k dy + a (x - mean) + b`:
/// `k = gamma / sigma`, `a = -k mean(dy xhat) / sigma`, `b = -k mean(dy)`.
/// Centring `x` before scaling keeps `a (x - mean)` small where `a` is large
/// (a channel of tiny variance); folding `- a mean` into `b` would cancel.
#[derive(Clone, Debug, PartialEq)]
pub struct InputGradient {
    pub k: Vec<f32>,
    pub a: Vec<f32>,
    pub b: Vec<f32>,
}

impl InputGradient {
    /// From the forward's `gamma` and `inv_sigma` and the backward sums
    /// `dbeta = sum(dy)`, `dgamma = sum(dy xhat)` over `rows` rows.
    pub fn training(
        gamma: &[f32],
        inv_sigma: &[f32],
        dbeta: &[f32],
        dgamma: &[f32],
        rows: usize,
    ) -> Self {
        let m = rows as f32;
        let k: Vec<f32> = gamma.iter().zip(inv_sigma).map(|(g, s)| g * s).collect();
        let a = (0..k.len())
            .map(|i| -k[i] * dgamma[i] / m * inv_sigma[i])
            .collect();
        let b = (0..k.len()).map(|i| -k[i] * dbeta[i] / m).collect();
        InputGradient { k, a, b }
    }

    /// `dx = scale dy`: inference mode, where the statistics are constants.
    pub fn fixed(scale: &[f32]) -> Self {
        let zeros = vec![0.0; scale.len()];
        InputGradient {
            k: scale.to_vec(),
            a: zeros.clone(),
            b: zeros,
        }
    }
}

/// `dx = k dy + a (x - mean) + b` per channel ([`InputGradient`]), `dy`
/// first sent back through the ReLU `relu` when there is one.
///
/// With `mask_dy`, `dy` is also left masked by that ReLU, in the same pass:
/// when a residual was added before the ReLU, the masked `dy` is the
/// residual's gradient, and a separate ReLU backward pass is saved. Without
/// it `dy` is only read (it is borrowed mutably either way: one pass, one
/// signature).
pub fn backward_input(
    x: &[f32],
    dy: &mut [f32],
    mean: &[f32],
    grad: &InputGradient,
    relu: Relu,
    mask_dy: bool,
    dx: &mut [f32],
) {
    let c = check_input_shapes(x, dy, mean, grad, relu, dx);
    let (mask, args) = relu.args(x, mean);
    let pass = match (mask, mask_dy) {
        (NO_RELU, _) => input_pass::<NO_RELU, false>,
        (OF_AFFINE, false) => input_pass::<OF_AFFINE, false>,
        (OF_AFFINE, true) => input_pass::<OF_AFFINE, true>,
        (_, false) => input_pass::<OF_OUTPUT, false>,
        (_, true) => input_pass::<OF_OUTPUT, true>,
    };
    if dx.len() < PARALLEL_MIN {
        pass(dx, x, args.out, dy, mean, grad, &args);
    } else {
        let chunk = BLOCK_ROWS * c;
        dx.par_chunks_mut(chunk)
            .zip(x.par_chunks(chunk))
            .zip(args.out.par_chunks(chunk))
            .zip(dy.par_chunks_mut(chunk))
            .for_each(|(((dx, x), out), dy)| pass(dx, x, out, dy, mean, grad, &args));
    }
}

/// [`backward_input`] over whole rows: `MASK` the kind of ReLU mask,
/// `MASK_DY` whether `dy` is left masked.
fn input_pass<const MASK: u8, const MASK_DY: bool>(
    dx: &mut [f32],
    x: &[f32],
    out: &[f32],
    dy: &mut [f32],
    mean: &[f32],
    grad: &InputGradient,
    m: &MaskArgs,
) {
    let c = mean.len();
    let (k, a, b) = (&grad.k[..c], &grad.a[..c], &grad.b[..c]);
    let (scale, shift) = (&m.scale[..c], &m.shift[..c]);
    let rows = dx
        .chunks_exact_mut(c)
        .zip(x.chunks_exact(c))
        .zip(out.chunks_exact(c))
        .zip(dy.chunks_exact_mut(c));
    for (((dr, xr), yr), gr) in rows {
        for i in 0..c {
            let g = through_relu::<MASK>(gr[i], xr[i], yr[i], scale[i], shift[i]);
            dr[i] = k[i] * g + a[i] * (xr[i] - mean[i]) + b[i];
            if MASK_DY {
                gr[i] = g;
            }
        }
    }
}

fn check_input_shapes(
    x: &[f32],
    dy: &[f32],
    mean: &[f32],
    grad: &InputGradient,
    relu: Relu,
    dx: &[f32],
) -> usize {
    let c = mean.len();
    check_backward_shapes(x, dy, c, relu);
    assert!(
        grad.k.len() == c && grad.a.len() == c && grad.b.len() == c && dx.len() == x.len(),
        "batch norm backward: dx or the gradient constants do not match x"
    );
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch_norm::{affine_relu, test_data as data};

    /// A few constants of each sign, for a fold with every term non-zero.
    fn constants() -> InputGradient {
        InputGradient {
            k: vec![0.5, -1.0, 2.0, 0.1, 3.0],
            a: vec![1.0, -0.5, 0.25, 2.0, -1.5],
            b: vec![-0.25, 0.5, 0.0, 1.0, -2.0],
        }
    }

    #[test]
    fn masking_input_gradient_equals_the_two_passes() {
        let (rows, c) = (700, 5);
        let x = data(rows, c);
        let mean = vec![55.0; c];
        let y: Vec<f32> = x
            .iter()
            .map(|v| if (*v as i32) % 3 == 0 { 0.0 } else { *v })
            .collect();
        let dy: Vec<f32> = x.iter().map(|v| v.sin()).collect();
        let grad = constants();
        let mut want = vec![f32::NAN; x.len()];
        backward_input(
            &x,
            &mut dy.clone(),
            &mean,
            &grad,
            Relu::OfOutput(&y),
            false,
            &mut want,
        );
        let mut want_dy = dy.clone();
        crate::elementwise::relu_backward(&y, &mut want_dy);
        let (mut dx, mut masked) = (vec![f32::NAN; x.len()], dy.clone());
        backward_input(
            &x,
            &mut masked,
            &mean,
            &grad,
            Relu::OfOutput(&y),
            true,
            &mut dx,
        );
        assert_eq!(dx, want);
        assert_eq!(masked, want_dy);
        assert!(masked.contains(&0.0) && masked.iter().any(|&v| v != 0.0));
    }

    /// The mask recomputed from `x` is the forward ReLU's, element for
    /// element, including outputs that round to exactly 0 and NaN inputs.
    #[test]
    fn the_recomputed_relu_mask_is_the_forwards() {
        let (rows, c) = (600, 5);
        let mut x: Vec<f32> = data(rows, c).iter().map(|v| v - 55.0).collect();
        x[7] = f32::NAN;
        x[11] = f32::INFINITY;
        let scale = [1.0, -0.7, 0.3, 2.5, 0.0];
        // Channel 0's shift makes x * scale + shift exactly 0 at x = 0.5.
        let shift = [-0.5, 0.1, -0.2, 3.0, 0.0];
        x[5] = 0.5;
        let mut y = vec![f32::NAN; x.len()];
        affine_relu(&x, &scale, &shift, &mut y);
        assert_eq!(y[5], 0.0);
        let mean = vec![0.0; c];
        let dy: Vec<f32> = (0..x.len()).map(|i| 1.0 + i as f32).collect();
        let affine = Relu::OfAffine {
            scale: &scale,
            shift: &shift,
        };
        let grad = constants();
        for relu in [Relu::OfOutput(&y), affine] {
            let (mut dx, mut masked) = (vec![0.0; x.len()], dy.clone());
            backward_input(&x, &mut masked, &mean, &grad, relu, true, &mut dx);
            let passed: Vec<bool> = masked.iter().map(|&g| g != 0.0).collect();
            let want: Vec<bool> = y.iter().map(|&v| v > 0.0).collect();
            assert_eq!(passed, want, "{relu:?}");
        }
        let sums = |relu| backward_sums(&x, &dy, &mean, &[1.0; 5], relu);
        assert_eq!(
            format!("{:?}", sums(affine)),
            format!("{:?}", sums(Relu::OfOutput(&y)))
        );
    }

    #[test]
    fn backward_sums_match_f64() {
        let (rows, c) = (3000, 9);
        let x = data(rows, c);
        let dy: Vec<f32> = (0..rows * c)
            .map(|i| ((i * 31 % 97) as f32) / 50.0 - 1.0)
            .collect();
        let mean: Vec<f32> = (0..c).map(|i| 55.0 + i as f32 * 0.1).collect();
        let inv: Vec<f32> = (0..c).map(|i| 0.3 + i as f32 * 0.01).collect();
        let (s1, s2) = backward_sums(&x, &dy, &mean, &inv, Relu::None);
        for ch in 0..c {
            let (mut e1, mut e2) = (0.0f64, 0.0f64);
            for r in 0..rows {
                let (xv, g) = (x[r * c + ch] as f64, dy[r * c + ch] as f64);
                e1 += g;
                e2 += g * (xv - mean[ch] as f64) * inv[ch] as f64;
            }
            assert!(
                (s1[ch] as f64 - e1).abs() < 1e-4 * (1.0 + e1.abs()),
                "sum dy {ch}"
            );
            assert!(
                (s2[ch] as f64 - e2).abs() < 1e-4 * (1.0 + e2.abs()),
                "sum dy*xhat {ch}"
            );
        }
    }
}
