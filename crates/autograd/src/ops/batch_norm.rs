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
//!
//! The passes over the data are the `tensor::batch_norm` kernels: one read
//! for the statistics and one affine pass forward; one fused read for both
//! sums and one pass for `dx` backward. `xhat` is recomputed from the input
//! rather than stored, and so is a following ReLU's mask where no residual
//! joins before it.

use crate::graph::{Backward, BackwardCtx, Graph, OpInfo, Var};
use tensor::batch_norm as bn;
use tensor::elementwise::{channel_affine, relu_backward};
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

fn per_channel(v: Vec<f32>) -> Tensor {
    Tensor::from_vec(&[v.len()], v).expect("per-channel shape")
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
    train(g, x, gamma, beta, None, eps, false)
}

/// [`batch_norm_train`] followed by a ReLU, as one op: one pass forward, and
/// the ReLU's mask applied inside batchnorm's two backward passes. The same
/// function as the two ops in sequence, without the intermediate tensor.
pub fn batch_norm_relu_train(
    g: &mut Graph,
    x: Var,
    gamma: Var,
    beta: Var,
    eps: f32,
) -> (Var, BatchStats) {
    train(g, x, gamma, beta, None, eps, true)
}

/// `relu(residual + batch_norm_train(x))`, the end of a residual block, as
/// one op: one pass forward; backward, the ReLU's mask inside batchnorm's
/// passes as in [`batch_norm_relu_train`], and the masked `dy` handed to the
/// shortcut as its gradient. The same function as the three ops in sequence.
pub fn batch_norm_add_relu_train(
    g: &mut Graph,
    x: Var,
    gamma: Var,
    beta: Var,
    residual: Var,
    eps: f32,
) -> (Var, BatchStats) {
    train(g, x, gamma, beta, Some(residual), eps, true)
}

fn train(
    g: &mut Graph,
    x: Var,
    gamma: Var,
    beta: Var,
    residual: Option<Var>,
    eps: f32,
    relu: bool,
) -> (Var, BatchStats) {
    let (xv, gv, bv) = (g.value(x), g.value(gamma), g.value(beta));
    let c = channels_of(xv);
    assert!(
        gv.shape() == [c] && bv.shape() == [c],
        "batch_norm: gamma/beta must be [{c}]"
    );
    let (mean, var) = bn::mean_and_variance(xv.data(), c);
    let inv_sigma: Vec<f32> = var.iter().map(|v| 1.0 / (v + eps).sqrt()).collect();
    // y = (x - mean) * inv_sigma * gamma + beta, one affine map per channel.
    let scale: Vec<f32> = inv_sigma
        .iter()
        .zip(gv.data())
        .map(|(s, g)| s * g)
        .collect();
    let shift: Vec<f32> = (0..c).map(|i| bv.data()[i] - mean[i] * scale[i]).collect();
    let mut y = Tensor::for_overwrite(xv.shape());
    match residual {
        Some(r) => {
            let rv = g.value(r);
            assert_eq!(rv.shape(), xv.shape(), "batch_norm + add: residual shape");
            debug_assert!(relu, "the residual form always ends in a ReLU");
            bn::affine_add_relu(xv.data(), &scale, &shift, rv.data(), y.data_mut());
        }
        None if relu => bn::affine_relu(xv.data(), &scale, &shift, y.data_mut()),
        None => channel_affine(xv.data(), &scale, &shift, y.data_mut()),
    }
    let stats = BatchStats {
        mean: mean.clone(),
        var,
        count: xv.numel() / c,
    };
    let (mask, name) = match (relu, residual) {
        (false, _) => (Mask::None, "batch_norm_train"),
        (true, None) => (Mask::OfAffine { scale, shift }, "batch_norm_relu_train"),
        (true, Some(_)) => (Mask::OfOutput, "batch_norm_add_relu_train"),
    };
    let backward = BatchNormTrainBackward {
        mean,
        inv_sigma,
        relu: mask,
    };
    let y = match residual {
        Some(r) => g.push(y, &[x, gamma, beta, r], OpInfo::named(name), backward),
        None => g.push(y, &[x, gamma, beta], OpInfo::named(name), backward),
    };
    (y, stats)
}

/// The ReLU inside the op, for the backward (see [`bn::Relu`]).
enum Mask {
    None,
    /// No residual: the mask is recomputed from `x` with the forward's
    /// `scale` and `shift`, the same f32 arithmetic, so the op's output is
    /// not read again.
    OfAffine {
        scale: Vec<f32>,
        shift: Vec<f32>,
    },
    /// A residual was added before the ReLU: the mask is the op's output.
    OfOutput,
}

impl Mask {
    fn relu<'a>(&'a self, ctx: &'a BackwardCtx) -> bn::Relu<'a> {
        match self {
            Mask::None => bn::Relu::None,
            Mask::OfAffine { scale, shift } => bn::Relu::OfAffine { scale, shift },
            Mask::OfOutput => bn::Relu::OfOutput(ctx.output.data()),
        }
    }
}

struct BatchNormTrainBackward {
    mean: Vec<f32>,
    inv_sigma: Vec<f32>,
    /// The ReLU after the batchnorm (after the residual, when the op has a
    /// fourth input): `dy` is the ReLU output's gradient.
    relu: Mask,
}

impl Backward for BatchNormTrainBackward {
    fn backward(&self, ctx: &BackwardCtx, mut dy: Tensor) -> Vec<Option<Tensor>> {
        let (x, gamma) = (ctx.inputs[0].data(), ctx.inputs[1].data());
        let (mean, inv) = (&self.mean, &self.inv_sigma);
        let relu = self.relu.relu(ctx);
        let residual = matches!(self.relu, Mask::OfOutput);
        // dbeta = sum(dy), dgamma = sum(dy * xhat), in one read of x and dy,
        // through the ReLU first when there is one.
        let (dbeta, dgamma) = bn::backward_sums(x, dy.data(), mean, inv, relu);
        // With a residual, `dy` ends up masked by the ReLU: the residual's
        // gradient (done in the input-gradient pass when there is one).
        let mut masked = false;
        let dx = ctx.needs_grad[0].then(|| {
            let rows = x.len() / mean.len();
            let grad = bn::InputGradient::training(gamma, inv, &dbeta, &dgamma, rows);
            let mut dx = Tensor::for_overwrite(ctx.inputs[0].shape());
            bn::backward_input(x, dy.data_mut(), mean, &grad, relu, residual, dx.data_mut());
            masked = residual;
            dx
        });
        let mut grads = vec![
            dx,
            ctx.needs_grad[1].then(|| per_channel(dgamma)),
            ctx.needs_grad[2].then(|| per_channel(dbeta)),
        ];
        if residual {
            // The residual's gradient is dy through the ReLU, in dy's buffer.
            grads.push(ctx.needs_grad[3].then(|| {
                if !masked {
                    relu_backward(ctx.output.data(), dy.data_mut());
                }
                dy
            }));
        }
        grads
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
    infer(g, [x, gamma, beta, moving_mean, moving_var], eps, false)
}

/// [`batch_norm_infer`] followed by a ReLU, as one op (see
/// [`batch_norm_relu_train`]).
pub fn batch_norm_relu_infer(
    g: &mut Graph,
    x: Var,
    gamma: Var,
    beta: Var,
    moving_mean: Var,
    moving_var: Var,
    eps: f32,
) -> Var {
    infer(g, [x, gamma, beta, moving_mean, moving_var], eps, true)
}

/// The per-channel affine map of inference batchnorm with the moving
/// statistics: `y = x * scale + shift` with `inv_sigma = 1 / sqrt(var + eps)`,
/// `scale = inv_sigma * gamma` and `shift = beta - mean * scale`. Returns
/// `(inv_sigma, scale, shift)`; the fused conv op uses the same numbers.
pub(crate) fn moving_affine(
    gamma: &Tensor,
    beta: &Tensor,
    moving_mean: &Tensor,
    moving_var: &Tensor,
    eps: f32,
    c: usize,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    for (t, name) in [
        (gamma, "gamma"),
        (beta, "beta"),
        (moving_mean, "moving_mean"),
        (moving_var, "moving_variance"),
    ] {
        assert_eq!(t.shape(), [c], "batch_norm: {name} must be [{c}]");
    }
    let inv_sigma: Vec<f32> = moving_var
        .data()
        .iter()
        .map(|v| 1.0 / (v + eps).sqrt())
        .collect();
    let scale: Vec<f32> = inv_sigma
        .iter()
        .zip(gamma.data())
        .map(|(s, g)| s * g)
        .collect();
    let shift: Vec<f32> = (0..c)
        .map(|i| beta.data()[i] - moving_mean.data()[i] * scale[i])
        .collect();
    (inv_sigma, scale, shift)
}

/// `inputs` = x, gamma, beta, moving mean, moving variance.
fn infer(g: &mut Graph, inputs: [Var; 5], eps: f32, relu: bool) -> Var {
    let [x, gamma, beta, moving_mean, moving_var] = inputs;
    let xv = g.value(x);
    let c = channels_of(xv);
    let mv = g.value(moving_mean);
    let (inv_sigma, scale, shift) = moving_affine(
        g.value(gamma),
        g.value(beta),
        mv,
        g.value(moving_var),
        eps,
        c,
    );
    let mut y = Tensor::for_overwrite(xv.shape());
    if relu {
        bn::affine_relu(xv.data(), &scale, &shift, y.data_mut());
    } else {
        channel_affine(xv.data(), &scale, &shift, y.data_mut());
    }
    let backward = BatchNormInferBackward {
        mean: mv.data().to_vec(),
        inv_sigma,
        relu: relu.then(|| shift.clone()),
        scale,
    };
    let name = if relu {
        "batch_norm_relu_infer"
    } else {
        "batch_norm_infer"
    };
    g.push(y, &inputs, OpInfo::named(name), backward)
}

struct BatchNormInferBackward {
    mean: Vec<f32>,
    inv_sigma: Vec<f32>,
    /// gamma / sigma
    scale: Vec<f32>,
    /// The forward's shift when a ReLU follows inside the op (its mask is
    /// recomputed from `x`, `scale` and this).
    relu: Option<Vec<f32>>,
}

impl Backward for BatchNormInferBackward {
    fn backward(&self, ctx: &BackwardCtx, mut dy: Tensor) -> Vec<Option<Tensor>> {
        let x = ctx.inputs[0].data();
        let c = self.mean.len();
        let relu = match &self.relu {
            Some(shift) => bn::Relu::OfAffine {
                scale: &self.scale,
                shift,
            },
            None => bn::Relu::None,
        };
        let dx = ctx.needs_grad[0].then(|| {
            // dx = gamma / sigma * dy (through the ReLU's mask if there is one).
            let mut dx = Tensor::for_overwrite(dy.shape());
            if self.relu.is_some() {
                let grad = bn::InputGradient::fixed(&self.scale);
                bn::backward_input(
                    x,
                    dy.data_mut(),
                    &self.mean,
                    &grad,
                    relu,
                    false,
                    dx.data_mut(),
                );
            } else {
                channel_affine(dy.data(), &self.scale, &vec![0.0; c], dx.data_mut());
            }
            dx
        });
        // sum(dy) and sum(dy * xhat), xhat from the moving statistics.
        let (dbeta, dgamma) = bn::backward_sums(x, dy.data(), &self.mean, &self.inv_sigma, relu);
        // The statistics are never trained, but the op is a function of them
        // too; their gradients make the gradient check complete:
        // dL/dmean = -sum(dy) * gamma / sigma,
        // dL/dvar  = -sum(dy * xhat) * gamma / (2 sigma^2).
        let dmean = ctx.needs_grad[3]
            .then(|| per_channel((0..c).map(|i| -dbeta[i] * self.scale[i]).collect()));
        let dvar = ctx.needs_grad[4].then(|| {
            per_channel(
                (0..c)
                    .map(|i| -0.5 * dgamma[i] * self.scale[i] * self.inv_sigma[i])
                    .collect(),
            )
        });
        vec![
            dx,
            ctx.needs_grad[1].then(|| per_channel(dgamma)),
            ctx.needs_grad[2].then(|| per_channel(dbeta)),
            dmean,
            dvar,
        ]
    }
}
