//! Keras `BatchNormalization` over the channel axis.
//!
//! In training mode it normalizes with the batch statistics and folds them
//! into the moving averages: `moving = momentum * moving + (1 - momentum) * batch`.
//! Keras 3 averages the biased batch variance; Keras 2 (tf_keras) the
//! unbiased one (`* M / (M - 1)`), which [`VarianceUpdate`] selects.
//! A batchnorm whose gamma is frozen always runs in inference mode, as Keras
//! does for `trainable = False`.

use crate::BuildCtx;
use autograd::{ops, Graph, ParamId, ParamKind, Var};
use tensor::Tensor;

/// Keras ResNet50's batchnorm epsilon.
pub const RESNET_EPSILON: f32 = 1.001e-5;
/// Keras's default batchnorm momentum.
pub const KERAS_MOMENTUM: f32 = 0.99;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum VarianceUpdate {
    /// Keras 3: the biased batch variance (divided by M).
    #[default]
    Biased,
    /// Keras 2 / tf_keras: the unbiased batch variance (divided by M - 1).
    Unbiased,
}

#[derive(Clone, Debug)]
pub struct BatchNorm {
    pub name: String,
    pub gamma: ParamId,
    pub beta: ParamId,
    pub moving_mean: ParamId,
    pub moving_variance: ParamId,
    pub epsilon: f32,
    pub momentum: f32,
    pub variance_update: VarianceUpdate,
}

impl BatchNorm {
    /// Adds `<name>/{gamma, beta, moving_mean, moving_variance}`, each `[channels]`.
    pub fn new(ctx: &mut BuildCtx, name: &str, channels: usize) -> Self {
        let mut add = |w: &str, v: f32, kind| {
            ctx.add(&format!("{name}/{w}"), Tensor::full(&[channels], v), kind)
        };
        BatchNorm {
            name: name.into(),
            gamma: add("gamma", 1.0, ParamKind::Weight),
            beta: add("beta", 0.0, ParamKind::Weight),
            moving_mean: add("moving_mean", 0.0, ParamKind::Statistic),
            moving_variance: add("moving_variance", 1.0, ParamKind::Statistic),
            epsilon: RESNET_EPSILON,
            momentum: KERAS_MOMENTUM,
            variance_update: ctx.variance_update,
        }
    }

    /// The Keras layer on its own, its output tapped under its name: batch
    /// statistics (and the moving averages updated) in training mode, the
    /// moving statistics otherwise or when frozen. The units in
    /// [`super::conv_bn`] fuse it with what comes before and after.
    pub fn forward(&self, g: &mut Graph, x: Var) -> Var {
        let y = if self.uses_moving_statistics(g) {
            let a = self.moving_args(g);
            let (gamma, beta, mean, var) = (a.gamma, a.beta, a.moving_mean, a.moving_var);
            ops::batch_norm_infer(g, x, gamma, beta, mean, var, a.eps)
        } else {
            let (gamma, beta) = (g.param(self.gamma), g.param(self.beta));
            let (y, stats) = ops::batch_norm_train(g, x, gamma, beta, self.epsilon);
            self.update_moving_statistics(g, &stats);
            y
        };
        g.tap(&self.name, y)
    }

    /// Whether this layer normalizes with its moving statistics in `g`: in
    /// inference, and whenever it is frozen (Keras semantics).
    pub fn uses_moving_statistics(&self, g: &Graph) -> bool {
        !(g.mode().training && g.params().is_trainable(self.gamma))
    }

    /// The parameters of this layer as an inference batchnorm.
    pub fn moving_args(&self, g: &mut Graph) -> ops::BatchNormArgs {
        ops::BatchNormArgs {
            gamma: g.param(self.gamma),
            beta: g.param(self.beta),
            moving_mean: g.param(self.moving_mean),
            moving_var: g.param(self.moving_variance),
            eps: self.epsilon,
        }
    }

    /// Folds one training batch's statistics into the moving averages
    /// (recorded in `g`, applied by the caller once the graph is dropped):
    /// `moving = momentum * moving + (1 - momentum) * batch`.
    pub fn update_moving_statistics(&self, g: &mut Graph, stats: &ops::BatchStats) {
        let unbias = match self.variance_update {
            VarianceUpdate::Biased => 1.0,
            VarianceUpdate::Unbiased => stats.count as f32 / (stats.count.max(2) - 1) as f32,
        };
        let m = self.momentum;
        let blend = |old: &Tensor, batch: &[f32], factor: f32| {
            let v = old
                .data()
                .iter()
                .zip(batch)
                .map(|(o, b)| o * m + b * factor * (1.0 - m))
                .collect();
            Tensor::from_vec(old.shape(), v).expect("per-channel shape")
        };
        let mean = blend(g.params().value(self.moving_mean), &stats.mean, 1.0);
        let var = blend(g.params().value(self.moving_variance), &stats.var, unbias);
        g.push_stat_update(self.moving_mean, mean);
        g.push_stat_update(self.moving_variance, var);
    }
}
