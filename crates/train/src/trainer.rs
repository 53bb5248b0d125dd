//! One model, its parameters and its optimizer: the training step and the
//! evaluation pass, independent of where batches come from.

use crate::clip;
use crate::data::{Dataset, Preprocess};
use crate::ema::{Ema, EmaConfig};
use crate::evaluate::{self, EvalResult, Tta};
use crate::metrics::count_correct;
use crate::optim::{LrSchedule, Optimizer};
use autograd::{ops, Graph, Mode, ParamId, ParamKind, ParamStore};
use nn::Model;
use std::time::{Duration, Instant};
use tensor::Tensor;

pub struct Trainer {
    pub model: Box<dyn Model>,
    pub store: ParamStore,
    pub optimizer: Box<dyn Optimizer>,
    pub schedule: LrSchedule,
    /// Optimizer steps taken so far (the schedule's clock).
    pub global_step: u64,
    /// Multiplies the schedule's learning rate (1 unless a callback such as
    /// [`crate::fit::ReduceLrOnPlateau`] lowered it). A factor on top of the
    /// schedule, not a replacement of it, so warm-up and decay still apply.
    pub lr_scale: f32,
    /// The moving average of the parameters, updated after each optimizer
    /// update ([`Ema::after_step`]); `None` unless enabled
    /// ([`Trainer::enable_ema`]). Saved in and restored from the
    /// checkpoint like the parameters.
    pub ema: Option<Ema>,
    /// Keras's `label_smoothing` of the training loss: each target is
    /// `onehot * (1 - s) + s / classes` ([`ops::softmax_cross_entropy_smoothed`]);
    /// 0 (the default) is the plain cross-entropy. It shapes only the loss
    /// that is optimized: evaluation losses stay the plain cross-entropy, so
    /// the test loss stays comparable across recipes. Must be in `[0, 1)`
    /// (the caller validates it; [`Trainer::train_step`] panics otherwise).
    pub label_smoothing: f32,
    /// Keras's `global_clipnorm`: the gradients of every step are scaled
    /// down together to this global norm when theirs is larger
    /// ([`crate::clip`]); `None` (the default) leaves them as they are.
    pub global_clipnorm: Option<f32>,
}

/// What one training step measured.
#[derive(Clone, Copy, Debug)]
pub struct StepStats {
    pub loss: f32,
    pub correct: usize,
    pub lr: f32,
    /// The global norm of the loss's gradients before clipping, measured
    /// only when [`Trainer::global_clipnorm`] is set (it costs a pass over
    /// every gradient). Not finite: the step's update was not applied.
    pub grad_norm: Option<f32>,
    /// A batchnorm moving statistic the step would have made infinite or
    /// NaN, if any: the step's update was not applied. It is how a layer's
    /// input overflowing f32 shows (values past ~1e19 square to infinity):
    /// the variance becomes infinite, the layer outputs its `beta` and
    /// passes zero gradients back, the loss stays finite, and training
    /// would go on without learning anything below that layer.
    pub non_finite_statistic: Option<ParamId>,
    /// Wall time of forward + backward (the graph) and of applying the
    /// batchnorm statistics, the optimizer update and the EMA update, for
    /// the profile.
    pub graph_time: Duration,
    pub update_time: Duration,
}

impl Trainer {
    pub fn new(
        model: Box<dyn Model>,
        store: ParamStore,
        optimizer: Box<dyn Optimizer>,
        schedule: LrSchedule,
    ) -> Self {
        let mut t = Trainer {
            model,
            store,
            optimizer,
            schedule,
            global_step: 0,
            lr_scale: 1.0,
            ema: None,
            label_smoothing: 0.0,
            global_clipnorm: None,
        };
        // No weight decay on biases and batchnorm parameters (the usual
        // practice; Keras decays whatever it is told to, everything by default).
        for (id, p) in t.store.iter() {
            if p.kind == ParamKind::Weight && p.value.rank() == 1 {
                t.optimizer.exclude_from_weight_decay(id.0);
            }
        }
        t
    }

    /// The classifier (every parameter [`Model::stage_of`] places in no
    /// stage: ResNet's `predictions` Dense layer) learns at `scale` times the
    /// step's rate.
    ///
    /// Why the head may need its own rate: in training mode the pooled
    /// features of a Keras-initialized ResNet50 at 32x32 have mean ~1.0
    /// (measured with Keras: mean |x|^2 = 4965 over 2048 channels, x_i.x_j =
    /// 2191 between two images), so one SGD step on the Dense kernel moves
    /// every logit by about `lr * x_i.x_j * mean(p - y)`: ~9 per step at lr
    /// 0.04, before momentum multiplies it. Fast CIFAR-10 recipes scale the
    /// logits for this (Page's ResNet-9 multiplies them by 0.125, for SGD the
    /// same as an initial kernel 0.125x as large and a rate 1/64 as large).
    /// Measured here, it smooths the warm-up but did not make whole runs
    /// better (docs/recipes.md).
    pub fn scale_head_lr(&mut self, scale: f32) {
        for (id, p) in self.store.iter() {
            if self.model.stage_of(&p.name).is_none() {
                self.optimizer.scale_lr(id.0, scale);
            }
        }
    }

    /// Forward, backward and one optimizer update on the batch `x`
    /// (`[N, H, W, 3]`), with the new batchnorm statistics applied. The
    /// loss optimized and reported is smoothed by [`Trainer::label_smoothing`],
    /// its gradients clipped by [`Trainer::global_clipnorm`]. A gradient of
    /// infinite or NaN norm changes nothing (no update, no statistics, no
    /// step counted): its [`StepStats::grad_norm`] says so, for the caller
    /// to stop on; so does a non-finite batchnorm statistic
    /// ([`StepStats::non_finite_statistic`]).
    pub fn train_step(&mut self, x: Tensor, labels: &[usize]) -> StepStats {
        let lr = self.lr_at(self.global_step);
        let started = Instant::now();
        let (loss, correct, mut grads, stats) = {
            let mut g = Graph::new(&self.store, Mode::TRAIN);
            let xv = g.input(x);
            let out = self
                .model
                .forward(&mut g, xv)
                .expect("batch shape checked by the caller");
            let logits = out.logits.expect("training needs a head");
            let correct = count_correct(g.value(logits).data(), labels);
            let loss =
                ops::softmax_cross_entropy_smoothed(&mut g, logits, labels, self.label_smoothing);
            let value = g.value(loss).item();
            let grads = g.backward(loss);
            (value, correct, grads, g.take_stat_updates())
        };
        let graph_time = started.elapsed();
        let started = Instant::now();
        let mut updates: Vec<_> = grads.params_mut().collect();
        updates.sort_by_key(|(id, _)| *id);
        let grad_norm = self.global_clipnorm.map(|clip| {
            let all: Vec<&[f32]> = updates.iter().map(|(_, g)| g.data()).collect();
            let norm = clip::global_norm(&all);
            if norm.is_finite() {
                let factor = clip::clip_factor(norm, clip);
                if factor != 1.0 {
                    for (_, g) in &mut updates {
                        tensor::elementwise::scale(g.data_mut(), factor);
                    }
                }
            }
            norm
        });
        let non_finite_statistic = stats
            .iter()
            .find(|u| u.value.data().iter().any(|v| !v.is_finite()))
            .map(|u| u.id);
        let stats_step = StepStats {
            loss,
            correct,
            lr,
            grad_norm,
            non_finite_statistic,
            graph_time,
            update_time: Duration::ZERO,
        };
        if grad_norm.is_some_and(|n| !n.is_finite()) || non_finite_statistic.is_some() {
            return stats_step;
        }
        self.store.apply_stat_updates(stats);
        self.optimizer.begin_step(lr);
        for (id, grad) in updates {
            self.optimizer
                .update(id.0, self.store.value_mut(id).data_mut(), grad.data());
        }
        self.global_step += 1;
        if let Some(ema) = &mut self.ema {
            ema.after_step(&self.store, self.global_step);
        }
        StepStats {
            update_time: started.elapsed(),
            ..stats_step
        }
    }

    /// Starts averaging the parameters from their current values (call it
    /// after loading `--weights` and freezing; a resume then replaces the
    /// average by the checkpoint's).
    pub fn enable_ema(&mut self, config: EmaConfig) -> anyhow::Result<()> {
        self.ema = Some(Ema::new(config, &self.store)?);
        Ok(())
    }

    /// The averaged parameters, if the trainer keeps an average: a store
    /// for [`evaluate::evaluate`] with [`Trainer::model`], or to save by
    /// name. Borrowed, not built: the average already is a store shaped like
    /// [`Trainer::store`], so evaluating or saving it copies nothing.
    pub fn ema_store(&self) -> Option<&ParamStore> {
        self.ema.as_ref().map(Ema::store)
    }

    /// The learning rate of 0-based global `step`: the schedule's, times
    /// [`Trainer::lr_scale`].
    pub fn lr_at(&self, step: u64) -> f32 {
        self.schedule.lr(step) * self.lr_scale
    }

    /// Logits `[N, classes]` in inference mode ([`evaluate::logits`]).
    pub fn logits(&self, x: Tensor) -> Tensor {
        evaluate::logits(self.model.as_ref(), &self.store, x)
    }

    /// [`Trainer::evaluate`], returning `None` as soon as `stop` is raised.
    pub fn evaluate_until(
        &self,
        data: &Dataset,
        batch_size: usize,
        preprocess: Preprocess,
        stop: &std::sync::atomic::AtomicBool,
    ) -> Option<EvalResult> {
        evaluate::evaluate_until(
            self.model.as_ref(),
            &self.store,
            data,
            batch_size,
            preprocess,
            stop,
        )
    }

    /// Loss, accuracy and confusion matrix over `data` under test-time
    /// augmentation `tta` ([`evaluate::evaluate_tta`]); `None` as soon as
    /// `stop` is raised.
    pub fn evaluate_tta(
        &self,
        data: &Dataset,
        batch_size: usize,
        preprocess: Preprocess,
        tta: Tta,
        stop: &std::sync::atomic::AtomicBool,
    ) -> Option<EvalResult> {
        evaluate::evaluate_tta(
            self.model.as_ref(),
            &self.store,
            data,
            batch_size,
            preprocess,
            tta,
            stop,
        )
    }

    /// Loss, accuracy and confusion matrix over `data`
    /// ([`evaluate::evaluate`]).
    pub fn evaluate(
        &self,
        data: &Dataset,
        batch_size: usize,
        preprocess: Preprocess,
    ) -> EvalResult {
        evaluate::evaluate(
            self.model.as_ref(),
            &self.store,
            data,
            batch_size,
            preprocess,
        )
    }
}
