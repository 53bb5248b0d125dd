//! Lower the learning rate when a metric has stopped improving: Keras's
//! `ReduceLROnPlateau(monitor, factor, patience, min_delta, cooldown,
//! min_lr)`.
//!
//! After each epoch without improvement (by more than `min_delta`) the wait
//! grows; when it reaches `patience`, the learning rate is multiplied by
//! `factor` (never below `min_lr`), the wait restarts, and for `cooldown`
//! epochs nothing is counted. So with patience 1, factor 0.5 and val_loss
//! 0.9, 0.8, 0.85, 0.86 the rate halves after epoch 3 and again after 4.
//!
//! Why a scale and not a new rate: the run also has a schedule (warm-up,
//! cosine, steps). Keras cannot combine the two; here the reduction is a
//! factor on top of the schedule ([`Trainer::lr_scale`]), so both apply.
//! The factor is not saved anywhere: it is a function of the epoch history,
//! and a resumed run replays that history to get it back bit for bit.

use super::{Callback, EpochLogs, Monitor, TrainBegin};
use crate::report::EpochRecord;
use crate::trainer::Trainer;
use anyhow::{bail, Result};

pub struct ReduceLrOnPlateau {
    pub monitor: Monitor,
    /// Multiplies the learning rate at each reduction (0 < factor < 1).
    pub factor: f32,
    /// Epochs without improvement before a reduction.
    pub patience: usize,
    /// Epochs after a reduction during which nothing is counted.
    pub cooldown: usize,
    /// The learning rate is never reduced below this (absolute, compared
    /// with the schedule's base rate times the scale).
    pub min_lr: f32,
    best: Option<f64>,
    wait: usize,
    cooldown_left: usize,
    scale: f32,
    /// The epochs (1-based) after which the rate was reduced.
    reductions: Vec<usize>,
}

impl ReduceLrOnPlateau {
    /// Keras's defaults besides `monitor` and `patience`: factor 0.1, no
    /// cooldown, min_lr 0. (Keras's `min_delta` default is 1e-4: set it on
    /// the monitor.)
    pub fn new(monitor: Monitor, patience: usize) -> Self {
        ReduceLrOnPlateau {
            monitor,
            factor: 0.1,
            patience,
            cooldown: 0,
            min_lr: 0.0,
            best: None,
            wait: 0,
            cooldown_left: 0,
            scale: 1.0,
            reductions: Vec::new(),
        }
    }

    pub fn factor(self, factor: f32) -> Self {
        ReduceLrOnPlateau { factor, ..self }
    }

    pub fn cooldown(self, cooldown: usize) -> Self {
        ReduceLrOnPlateau { cooldown, ..self }
    }

    pub fn min_lr(self, min_lr: f32) -> Self {
        ReduceLrOnPlateau { min_lr, ..self }
    }

    /// The factor on the schedule's learning rate so far.
    pub fn scale(&self) -> f32 {
        self.scale
    }

    /// The epochs (1-based) after which the learning rate was reduced.
    pub fn reductions(&self) -> &[usize] {
        &self.reductions
    }

    /// Takes one epoch into account; the new scale if it reduced.
    fn observe(&mut self, record: &EpochRecord, base_lr: f32) -> Result<Option<f32>> {
        let current = self.monitor.value(record, "ReduceLROnPlateau")?;
        if self.cooldown_left > 0 {
            self.cooldown_left -= 1;
            self.wait = 0;
        }
        if self.monitor.improves(current, self.best) {
            self.best = Some(current);
            self.wait = 0;
            return Ok(None);
        }
        if self.cooldown_left > 0 {
            return Ok(None);
        }
        self.wait += 1;
        if self.wait < self.patience {
            return Ok(None);
        }
        // min_lr as a scale, so that the floor, once reached, compares
        // equal to the scale it was set to (no rounding in between).
        let floor = (self.min_lr as f64 / base_lr as f64) as f32;
        if self.scale <= floor {
            return Ok(None);
        }
        self.scale = (self.scale * self.factor).max(floor);
        self.cooldown_left = self.cooldown;
        self.wait = 0;
        self.reductions.push(record.epoch);
        Ok(Some(self.scale))
    }
}

impl Callback for ReduceLrOnPlateau {
    fn on_train_begin(&mut self, trainer: &mut Trainer, begin: &TrainBegin) -> Result<()> {
        self.monitor.check(begin, "ReduceLROnPlateau")?;
        if !(self.factor > 0.0 && self.factor < 1.0) {
            bail!(
                "ReduceLROnPlateau: factor {} must be in (0, 1)",
                self.factor
            );
        }
        *self = ReduceLrOnPlateau::new(self.monitor, self.patience)
            .factor(self.factor)
            .cooldown(self.cooldown)
            .min_lr(self.min_lr);
        let base_lr = trainer.schedule.base_lr;
        for r in begin.history {
            self.observe(r, base_lr)?;
        }
        trainer.lr_scale = self.scale;
        Ok(())
    }

    fn on_epoch_end(&mut self, trainer: &mut Trainer, logs: &EpochLogs) -> Result<()> {
        let base_lr = trainer.schedule.base_lr;
        if let Some(scale) = self.observe(&logs.record, base_lr)? {
            trainer.lr_scale = scale;
            println!(
                "ReduceLROnPlateau after epoch {}: {} has not improved; learning rate now {:e} ({scale:e} x the schedule's)",
                logs.record.epoch,
                self.monitor.metric,
                trainer.lr_at(trainer.global_step)
            );
        }
        Ok(())
    }
}
