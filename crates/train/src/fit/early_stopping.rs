//! Stop training when a monitored metric has stopped improving: Keras's
//! `EarlyStopping(monitor, min_delta, patience, restore_best_weights)`.
//!
//! After each epoch: if the metric improves on the best so far (by more
//! than `min_delta`), it becomes the best and the wait restarts; otherwise
//! the wait grows, and when it reaches `patience` the run stops. So with
//! patience 2 and val_loss 0.9, 0.8, 0.85, 0.82 the run stops after epoch 4.

use super::{Callback, EndReason, EpochLogs, FitSummary, Monitor, TrainBegin};
use crate::report::EpochRecord;
use crate::trainer::Trainer;
use anyhow::Result;
use autograd::ParamStore;
use tensor::Tensor;

pub struct EarlyStopping {
    pub monitor: Monitor,
    /// Epochs without improvement after which the run stops.
    pub patience: usize,
    /// At the end of the run, put back the weights of the best epoch
    /// (in memory: the run directory's checkpoint stays the last epoch's, so
    /// the run can still be resumed).
    pub restore_best_weights: bool,
    best: Option<f64>,
    /// 1-based.
    best_epoch: Option<usize>,
    wait: usize,
    stopped_epoch: Option<usize>,
    /// Every parameter and statistic after the best epoch, in store order.
    best_weights: Option<Vec<Tensor>>,
}

impl EarlyStopping {
    pub fn new(monitor: Monitor, patience: usize) -> Self {
        EarlyStopping {
            monitor,
            patience,
            restore_best_weights: false,
            best: None,
            best_epoch: None,
            wait: 0,
            stopped_epoch: None,
            best_weights: None,
        }
    }

    pub fn restore_best_weights(self, restore: bool) -> Self {
        EarlyStopping {
            restore_best_weights: restore,
            ..self
        }
    }

    /// The epoch (1-based) after which it stopped the run, if it did.
    pub fn stopped_epoch(&self) -> Option<usize> {
        self.stopped_epoch
    }

    /// The best value so far and its epoch (1-based).
    pub fn best(&self) -> Option<(f64, usize)> {
        self.best.zip(self.best_epoch)
    }

    /// Takes one epoch's record into account; `true` if it is the new best.
    fn observe(&mut self, record: &EpochRecord) -> Result<bool> {
        let current = self.monitor.value(record, "EarlyStopping")?;
        self.wait += 1;
        if self.monitor.improves(current, self.best) {
            self.best = Some(current);
            self.best_epoch = Some(record.epoch);
            self.wait = 0;
            return Ok(true);
        }
        if self.wait >= self.patience {
            self.stopped_epoch = Some(record.epoch);
        }
        Ok(false)
    }
}

/// The weights the monitored metric measured (the moving average's, for
/// an `ema_` metric), to be restored into the trained ones at the end.
fn snapshot(store: &ParamStore) -> Vec<Tensor> {
    store.iter().map(|(_, p)| p.value.clone()).collect()
}

impl Callback for EarlyStopping {
    fn on_train_begin(&mut self, _: &mut Trainer, begin: &TrainBegin) -> Result<()> {
        self.monitor.check(begin, "EarlyStopping")?;
        *self = EarlyStopping::new(self.monitor, self.patience)
            .restore_best_weights(self.restore_best_weights);
        // The weights of a best epoch before a resume are not kept; the
        // state (best, wait, stopped) is rebuilt exactly.
        for r in begin.history {
            self.observe(r)?;
        }
        Ok(())
    }

    fn on_epoch_end(&mut self, trainer: &mut Trainer, logs: &EpochLogs) -> Result<()> {
        if self.observe(&logs.record)? && self.restore_best_weights {
            self.best_weights = Some(snapshot(self.monitor.metric.weights(trainer)));
        }
        if let Some(epoch) = self.stopped_epoch {
            println!(
                "early stopping after epoch {epoch}: {} has not improved for {} epochs (best {:.4} at epoch {})",
                self.monitor.metric,
                self.wait,
                self.best.unwrap_or(f64::NAN),
                self.best_epoch.unwrap_or(0)
            );
        }
        Ok(())
    }

    fn on_train_end(&mut self, trainer: &mut Trainer, summary: &FitSummary) -> Result<()> {
        // An interrupted run is resumed, not finished: leave its weights.
        if summary.reason == EndReason::Interrupted || !self.restore_best_weights {
            return Ok(());
        }
        match (self.best_weights.take(), self.best_epoch) {
            (Some(weights), Some(epoch)) => {
                let ids: Vec<_> = trainer.store.iter().map(|(id, _)| id).collect();
                for (id, value) in ids.into_iter().zip(weights) {
                    *trainer.store.value_mut(id) = value;
                }
                println!(
                    "restored the weights of epoch {epoch} ({} {:.4})",
                    self.monitor.metric,
                    self.best.unwrap_or(f64::NAN)
                );
            }
            (None, Some(epoch)) => println!(
                "the best epoch ({epoch}) was before the resume: its weights are not in memory"
            ),
            _ => {}
        }
        Ok(())
    }

    fn should_stop(&self) -> bool {
        self.stopped_epoch.is_some()
    }
}
