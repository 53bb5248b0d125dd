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
    /// Adds `<name>/{gamma, beta, moving_mean, moving_variance}`, each
    /// `[channels]`; the moving averages follow `ctx`'s momentum and
    /// variance update.
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
            momentum: ctx.bn_momentum,
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

#[cfg(test)]
mod tests {
    use super::*;
    use autograd::Mode;

    /// One training step of a 2-channel batchnorm built with momentum 0.9
    /// on the batch `[[1, 10], [3, 20]]` (N = 2, 1x1 images): batch means
    /// `[2, 15]`, biased variances `[1, 25]`. From moving means `[1, -1]`
    /// and variances `[2, 4]`:
    /// means `0.9 * [1, -1] + 0.1 * [2, 15] = [1.1, 0.6]`,
    /// variances `0.9 * [2, 4] + 0.1 * [1, 25] = [1.9, 6.1]`; with the
    /// unbiased variance (`* 2 / 1`, `[2, 50]`): `[2.0, 8.6]`.
    #[test]
    fn a_training_step_updates_the_moving_statistics_by_the_momentum() {
        for (update, want_var) in [
            (VarianceUpdate::Biased, [1.9, 6.1]),
            (VarianceUpdate::Unbiased, [2.0, 8.6]),
        ] {
            let mut ctx = BuildCtx::new(0, update, 0.9);
            let bn = BatchNorm::new(&mut ctx, "bn", 2);
            assert_eq!(bn.momentum, 0.9);
            let mut store = ctx.store;
            *store.value_mut(bn.moving_mean) = Tensor::from_vec(&[2], vec![1.0, -1.0]).unwrap();
            *store.value_mut(bn.moving_variance) = Tensor::from_vec(&[2], vec![2.0, 4.0]).unwrap();
            let updates = {
                let mut g = Graph::new(&store, Mode::TRAIN);
                let x =
                    g.input(Tensor::from_vec(&[2, 1, 1, 2], vec![1.0, 10.0, 3.0, 20.0]).unwrap());
                bn.forward(&mut g, x);
                g.take_stat_updates()
            };
            store.apply_stat_updates(updates);
            let close = |got: &Tensor, want: [f32; 2]| {
                got.data()
                    .iter()
                    .zip(want)
                    .all(|(g, w)| (g - w).abs() < 1e-6)
            };
            let mean = store.value(bn.moving_mean);
            let var = store.value(bn.moving_variance);
            assert!(
                close(mean, [1.1, 0.6]),
                "{update:?}: mean {:?}",
                mean.data()
            );
            assert!(
                close(var, want_var),
                "{update:?}: variance {:?}",
                var.data()
            );
        }
    }
}
