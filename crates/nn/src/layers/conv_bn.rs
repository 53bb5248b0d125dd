//! The units ResNets are made of, and the one place that decides how they
//! run: fused or as separate ops.
//!
//! [`ConvBn`] is Keras's `Conv2D -> BatchNormalization (-> Add) (-> ReLU)`,
//! the unit of every ResNet V1 layer; [`BnRelu`] is
//! `BatchNormalization -> ReLU` without a convolution before it (ResNet V2's
//! pre-activation `preact_bn`/`preact_relu` and `post_bn`/`post_relu`). Both
//! compute the same function in every mode; [`Form::of`] picks, from the
//! graph's [`Mode`](autograd::Mode) and whether the batchnorm is frozen, the
//! ops that compute it:
//!
//! | form | when | ops |
//! |------|------|-----|
//! | [`Form::LayerByLayer`] | `layer_outputs` (probes) | every Keras layer its own op, its output tapped |
//! | [`Form::FusedInference`] | no tape, moving statistics | [`ops::conv_bn_infer`]: batchnorm, add and ReLU in the conv's epilogue |
//! | [`Form::Training`] | batch statistics | the conv, then one batchnorm op that also adds and applies the ReLU |
//! | [`Form::MovingStatistics`] | a tape, moving statistics (frozen) | the conv, then the differentiable inference batchnorm (with its ReLU), add, ReLU |
//!
//! The fused forms give the same numbers as the layers one by one
//! (bit for bit in inference, `tests/keras_fixture.rs` checks it), so a
//! student can read a block as its Keras layers and trust that what runs is
//! that. A unit taps its output under the name of its last Keras layer; in
//! `LayerByLayer` form every layer's output is tapped.

use super::{BatchNorm, Conv2d};
use autograd::{ops, Graph, Var};

/// How a unit runs in a graph; see the module docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Form {
    /// Every Keras layer its own op and its output tapped (`layer_outputs`).
    LayerByLayer,
    /// No tape, moving statistics: one fused op where there is a conv.
    FusedInference,
    /// Batch statistics (Keras `training=True`, batchnorm not frozen):
    /// batchnorm, add and ReLU as one op, and the moving averages updated.
    Training,
    /// A tape and the moving statistics (a frozen batchnorm, or Keras
    /// `training=False` under a tape): the differentiable inference ops.
    MovingStatistics,
}

impl Form {
    /// The form a unit whose batchnorm is `bn` takes in `g`: the only
    /// decision between fused and separate ops in the network.
    pub fn of(g: &Graph, bn: &BatchNorm) -> Form {
        let mode = g.mode();
        if mode.layer_outputs {
            Form::LayerByLayer
        } else if !bn.uses_moving_statistics(g) {
            Form::Training
        } else if mode.record {
            Form::MovingStatistics
        } else {
            Form::FusedInference
        }
    }
}

/// `Conv2D -> BatchNormalization (-> Add) (-> ReLU)`:
/// `relu?(residual? + bn(conv(x)))`.
#[derive(Clone, Debug)]
pub struct ConvBn {
    pub conv: Conv2d,
    pub bn: BatchNorm,
    /// Keras name of the `Add` layer that sums a residual into the
    /// batchnorm's output (`conv2_block1_add`), in the last unit of a block.
    pub add: Option<String>,
    /// Keras name of the ReLU that ends the unit (`conv1_relu`,
    /// `conv2_block1_out`), if it has one.
    pub relu: Option<String>,
}

impl ConvBn {
    /// A conv and its batchnorm, with neither add nor ReLU.
    pub fn new(conv: Conv2d, bn: BatchNorm) -> Self {
        ConvBn {
            conv,
            bn,
            add: None,
            relu: None,
        }
    }

    /// This unit followed by the Keras `Add` layer `name` (which takes the
    /// residual [`ConvBn::forward`] is given).
    pub fn then_add(self, name: &str) -> Self {
        ConvBn {
            add: Some(name.into()),
            ..self
        }
    }

    /// This unit followed by the ReLU layer `name`.
    pub fn then_relu(self, name: &str) -> Self {
        ConvBn {
            relu: Some(name.into()),
            ..self
        }
    }

    /// The Keras name of the unit's last layer, under which its output is tapped.
    pub fn output_name(&self) -> &str {
        let last = self.relu.as_ref().or(self.add.as_ref());
        last.unwrap_or(&self.bn.name)
    }

    /// `relu?(residual? + bn(conv(x)))`, in the form [`Form::of`] picks.
    /// `residual` must be given exactly when the unit has an add.
    pub fn forward(&self, g: &mut Graph, x: Var, residual: Option<Var>) -> Var {
        assert_eq!(
            residual.is_some(),
            self.add.is_some(),
            "{}: a residual goes with an Add layer and only with one",
            self.conv.name
        );
        let residual = residual.zip(self.add.as_deref());
        match Form::of(g, &self.bn) {
            Form::FusedInference => {
                let (conv, bn) = (self.conv.args(g, x), self.bn.moving_args(g));
                let relu = self.relu.is_some();
                let y = ops::conv_bn_infer(g, x, conv, bn, residual.map(|(r, _)| r), relu);
                g.tap(self.output_name(), y)
            }
            form => {
                let c = self.conv.forward(g, x);
                normalize(g, form, &self.bn, c, residual, self.relu.as_deref())
            }
        }
    }
}

/// `BatchNormalization -> ReLU`: `relu(bn(x))`, as one op except in
/// [`Form::LayerByLayer`].
#[derive(Clone, Debug)]
pub struct BnRelu {
    pub bn: BatchNorm,
    /// Keras name of the ReLU (`conv2_block1_preact_relu`, `post_relu`).
    pub relu: String,
}

impl BnRelu {
    pub fn forward(&self, g: &mut Graph, x: Var) -> Var {
        let form = Form::of(g, &self.bn);
        normalize(g, form, &self.bn, x, None, Some(&self.relu))
    }
}

/// What follows a unit's convolution: `bn`, then the add of `residual`
/// (with its layer name) and the ReLU `relu` when there are ones, in `form`.
/// Taps the output under its last layer's name (every layer's in
/// `LayerByLayer` form). Without a conv before it there is nothing to fuse
/// into, so `FusedInference` runs the inference ops as `MovingStatistics` does.
fn normalize(
    g: &mut Graph,
    form: Form,
    bn: &BatchNorm,
    x: Var,
    residual: Option<(Var, &str)>,
    relu: Option<&str>,
) -> Var {
    let y = match form {
        Form::LayerByLayer => {
            let mut y = bn.forward(g, x);
            if let Some((r, add)) = residual {
                let sum = ops::add(g, r, y);
                y = g.tap(add, sum);
            }
            if let Some(relu) = relu {
                let out = ops::relu(g, y);
                y = g.tap(relu, out);
            }
            return y;
        }
        Form::Training => {
            let (gamma, beta) = (g.param(bn.gamma), g.param(bn.beta));
            let eps = bn.epsilon;
            let (y, stats) = match (residual, relu) {
                (Some((r, _)), Some(_)) => {
                    ops::batch_norm_add_relu_train(g, x, gamma, beta, r, eps)
                }
                (None, Some(_)) => ops::batch_norm_relu_train(g, x, gamma, beta, eps),
                (None, None) => ops::batch_norm_train(g, x, gamma, beta, eps),
                (Some((r, _)), None) => {
                    let (b, stats) = ops::batch_norm_train(g, x, gamma, beta, eps);
                    (ops::add(g, r, b), stats)
                }
            };
            bn.update_moving_statistics(g, &stats);
            y
        }
        Form::MovingStatistics | Form::FusedInference => {
            let a = bn.moving_args(g);
            let moving = (a.gamma, a.beta, a.moving_mean, a.moving_var);
            let (gamma, beta, mean, var) = moving;
            match residual {
                None if relu.is_some() => {
                    ops::batch_norm_relu_infer(g, x, gamma, beta, mean, var, a.eps)
                }
                None => ops::batch_norm_infer(g, x, gamma, beta, mean, var, a.eps),
                Some((r, _)) => {
                    let b = ops::batch_norm_infer(g, x, gamma, beta, mean, var, a.eps);
                    let sum = ops::add(g, r, b);
                    match relu {
                        Some(_) => ops::relu(g, sum),
                        None => sum,
                    }
                }
            }
        }
    };
    let name = relu.or(residual.map(|(_, add)| add)).unwrap_or(&bn.name);
    g.tap(name, y)
}
