//! Batch normalization over the last (channel) axis, as one op with a
//! closed-form backward in each mode.
//!
//! Training mode, per channel over the `M = N*H*W` rows of a batch:
//!
//! ```text
//! mean = sum(x) / M            var = sum((x - mean)^2) / M      (biased)
//! xhat = (x - mean) / sigma    sigma = sqrt(var + eps)
//! y    = gamma * xhat + beta
//!
//! dbeta  = sum(dy)             dgamma = sum(dy * xhat)
//! dx     = gamma / sigma * (dy - dbeta / M - xhat * dgamma / M)
//! ```
//!
//! The `dx` line is the whole chain rule through mean and variance folded
//! together: subtracting the means of `dy` and `dy * xhat` removes exactly the
//! components of the gradient that a shift or a scale of the batch would not
//! change. Inference mode normalizes with fixed moving statistics, so it is a
//! per-channel affine map, and its backward is too.

use crate::graph::{Backward, BackwardCtx, Graph, Var};
use rayon::prelude::*;
use tensor::elementwise::{channel_affine, channel_dot, channel_sum, channel_sum_sq};
use tensor::Tensor;

/// The statistics of one training-mode batch, for the moving averages.
#[derive(Clone, Debug)]
pub struct BatchStats {
    pub mean: Vec<f32>,
    /// Biased (divided by the row count).
    pub var: Vec<f32>,
    /// Rows per channel, to derive the unbiased variance Keras 2 averages.
    pub count: usize,
}

fn channels_of(x: &Tensor) -> usize {
    *x.shape()
        .last()
        .expect("batch_norm: a rank-0 input has no channel axis")
}

/// `y[r, c] = x[r, c] * scale[c] + shift[c]`, in place.
fn affine_in_place(y: &mut [f32], scale: &[f32], shift: &[f32]) {
    let c = scale.len();
    let rows_per_task = (1 << 14) / c + 1;
    y.par_chunks_mut(rows_per_task * c).for_each(|chunk| {
        for row in chunk.chunks_exact_mut(c) {
            for ((v, &a), &b) in row.iter_mut().zip(scale).zip(shift) {
                *v = *v * a + b;
            }
        }
    });
}

/// Training-mode batch normalization. Returns the output and the batch
/// statistics (the caller folds them into the moving averages).
pub fn batch_norm_train(
    g: &mut Graph,
    x: Var,
    gamma: Var,
    beta: Var,
    eps: f32,
) -> (Var, BatchStats) {
    let (xv, gv, bv) = (g.value(x), g.value(gamma), g.value(beta));
    let c = channels_of(xv);
    assert!(
        gv.shape() == [c] && bv.shape() == [c],
        "batch_norm: gamma/beta must be [{c}]"
    );
    let m = xv.numel() / c;
    let mean: Vec<f32> = channel_sum(xv.data(), c)
        .iter()
        .map(|s| s / m as f32)
        .collect();
    // Two passes (centre, then square) rather than E[x^2] - mean^2, which
    // cancels catastrophically when |mean| >> sigma.
    let mut y = Tensor::zeros(xv.shape());
    let neg_mean: Vec<f32> = mean.iter().map(|v| -v).collect();
    channel_affine(xv.data(), &vec![1.0; c], &neg_mean, y.data_mut());
    let var: Vec<f32> = channel_sum_sq(y.data(), c)
        .iter()
        .map(|s| s / m as f32)
        .collect();
    let inv_sigma: Vec<f32> = var.iter().map(|v| 1.0 / (v + eps).sqrt()).collect();
    let scale: Vec<f32> = inv_sigma
        .iter()
        .zip(gv.data())
        .map(|(s, g)| s * g)
        .collect();
    affine_in_place(y.data_mut(), &scale, bv.data());
    let stats = BatchStats {
        mean: mean.clone(),
        var,
        count: m,
    };
    let y = g.push(
        y,
        &[x, gamma, beta],
        BatchNormTrainBackward { mean, inv_sigma },
    );
    (y, stats)
}

struct BatchNormTrainBackward {
    mean: Vec<f32>,
    inv_sigma: Vec<f32>,
}

impl Backward for BatchNormTrainBackward {
    fn name(&self) -> &'static str {
        "batch_norm_train"
    }

    fn backward(&self, ctx: &BackwardCtx, dy: &Tensor) -> Vec<Option<Tensor>> {
        let (x, gamma) = (ctx.inputs[0], ctx.inputs[1]);
        let c = self.mean.len();
        let m = x.numel() / c;
        // xhat, recomputed from the input rather than stored with the op.
        let neg_shift: Vec<f32> = self
            .mean
            .iter()
            .zip(&self.inv_sigma)
            .map(|(mu, s)| -mu * s)
            .collect();
        let mut buf = Tensor::zeros(x.shape());
        channel_affine(x.data(), &self.inv_sigma, &neg_shift, buf.data_mut());
        let dbeta = channel_sum(dy.data(), c);
        let dgamma = channel_dot(dy.data(), buf.data(), c);
        let dx = ctx.needs_grad[0].then(|| {
            // dx = k * (dy - dbeta/M - xhat * dgamma/M), k = gamma / sigma; in place over xhat.
            let k: Vec<f32> = gamma
                .data()
                .iter()
                .zip(&self.inv_sigma)
                .map(|(g, s)| g * s)
                .collect();
            let mdy: Vec<f32> = dbeta.iter().map(|v| v / m as f32).collect();
            let mdx: Vec<f32> = dgamma.iter().map(|v| v / m as f32).collect();
            buf.data_mut()
                .par_chunks_mut(c * 256)
                .zip(dy.data().par_chunks(c * 256))
                .for_each(|(xhat, dy)| {
                    for (xr, dr) in xhat.chunks_exact_mut(c).zip(dy.chunks_exact(c)) {
                        for ch in 0..c {
                            xr[ch] = k[ch] * (dr[ch] - mdy[ch] - xr[ch] * mdx[ch]);
                        }
                    }
                });
            buf
        });
        let to_tensor = |v: Vec<f32>| Tensor::from_vec(&[c], v).expect("per-channel shape");
        vec![
            dx,
            ctx.needs_grad[1].then(|| to_tensor(dgamma)),
            ctx.needs_grad[2].then(|| to_tensor(dbeta)),
        ]
    }
}

/// Inference-mode batch normalization with the moving statistics:
/// `y = (x - mean) / sqrt(var + eps) * gamma + beta`, computed as one
/// per-channel affine map.
pub fn batch_norm_infer(
    g: &mut Graph,
    x: Var,
    gamma: Var,
    beta: Var,
    moving_mean: Var,
    moving_var: Var,
    eps: f32,
) -> Var {
    let xv = g.value(x);
    let c = channels_of(xv);
    let (gv, bv, mv, vv) = (
        g.value(gamma),
        g.value(beta),
        g.value(moving_mean),
        g.value(moving_var),
    );
    for (t, name) in [
        (gv, "gamma"),
        (bv, "beta"),
        (mv, "moving_mean"),
        (vv, "moving_variance"),
    ] {
        assert_eq!(t.shape(), [c], "batch_norm: {name} must be [{c}]");
    }
    let inv_sigma: Vec<f32> = vv.data().iter().map(|v| 1.0 / (v + eps).sqrt()).collect();
    let scale: Vec<f32> = inv_sigma
        .iter()
        .zip(gv.data())
        .map(|(s, g)| s * g)
        .collect();
    let shift: Vec<f32> = (0..c)
        .map(|i| bv.data()[i] - mv.data()[i] * scale[i])
        .collect();
    let mut y = Tensor::zeros(xv.shape());
    channel_affine(xv.data(), &scale, &shift, y.data_mut());
    let backward = BatchNormInferBackward {
        mean: mv.data().to_vec(),
        inv_sigma,
        scale,
    };
    g.push(y, &[x, gamma, beta, moving_mean, moving_var], backward)
}

struct BatchNormInferBackward {
    mean: Vec<f32>,
    inv_sigma: Vec<f32>,
    /// gamma / sigma
    scale: Vec<f32>,
}

impl Backward for BatchNormInferBackward {
    fn name(&self) -> &'static str {
        "batch_norm_infer"
    }

    fn backward(&self, ctx: &BackwardCtx, dy: &Tensor) -> Vec<Option<Tensor>> {
        let x = ctx.inputs[0];
        let c = self.mean.len();
        let dx = ctx.needs_grad[0].then(|| {
            let mut dx = Tensor::zeros(dy.shape());
            channel_affine(dy.data(), &self.scale, &vec![0.0; c], dx.data_mut());
            dx
        });
        let dbeta = channel_sum(dy.data(), c);
        let to_tensor = |v: Vec<f32>| Tensor::from_vec(&[c], v).expect("per-channel shape");
        let dgamma = ctx.needs_grad[1].then(|| {
            // sum(dy * xhat) = (sum(dy * x) - mean * sum(dy)) / sigma
            let dot = channel_dot(dy.data(), x.data(), c);
            to_tensor(
                (0..c)
                    .map(|i| (dot[i] - self.mean[i] * dbeta[i]) * self.inv_sigma[i])
                    .collect(),
            )
        });
        // The statistics are never trained, but the op is a function of them
        // too; their gradients make the gradient check complete:
        // dL/dmean = -sum(dy) * gamma / sigma,
        // dL/dvar  = -sum(dy * (x - mean)) * gamma / (2 sigma^3).
        let dmean = ctx.needs_grad[3]
            .then(|| to_tensor((0..c).map(|i| -dbeta[i] * self.scale[i]).collect()));
        let dvar = ctx.needs_grad[4].then(|| {
            let dot = channel_dot(dy.data(), x.data(), c);
            to_tensor(
                (0..c)
                    .map(|i| {
                        let centred = dot[i] - self.mean[i] * dbeta[i];
                        -0.5 * centred * self.scale[i] * self.inv_sigma[i] * self.inv_sigma[i]
                    })
                    .collect(),
            )
        });
        vec![
            dx,
            dgamma,
            ctx.needs_grad[2].then(|| to_tensor(dbeta)),
            dmean,
            dvar,
        ]
    }
}
