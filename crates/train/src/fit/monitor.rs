//! Which epoch metric a callback watches, and what counts as better.
//!
//! Shared by [`super::EarlyStopping`], [`super::ReduceLrOnPlateau`] and
//! [`super::ModelCheckpoint`], as Keras's `monitor`, `mode` and `min_delta`
//! arguments are. Only training and validation metrics can be monitored:
//! choosing epochs or weights by the test set would make the test score
//! an optimistic one. The validation metrics of the moving average of the
//! weights (`ema_val_loss`, `ema_val_accuracy`) can be: a callback that
//! keeps weights then keeps the average's, the weights that were measured.

use super::TrainBegin;
use crate::report::EpochRecord;
use crate::trainer::Trainer;
use anyhow::{bail, Result};
use autograd::ParamStore;
use std::fmt;
use std::str::FromStr;

/// An epoch metric, by its Keras name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metric {
    /// `loss`: the mean training loss of the epoch.
    Loss,
    /// `accuracy`: the training accuracy of the epoch.
    Accuracy,
    /// `val_loss`: the loss on the validation split.
    ValLoss,
    /// `val_accuracy`: the accuracy on the validation split.
    ValAccuracy,
    /// `ema_val_loss`: the validation loss of the moving average of the weights.
    EmaValLoss,
    /// `ema_val_accuracy`: its validation accuracy.
    EmaValAccuracy,
}

impl Metric {
    /// The metric's value in an epoch's record (`None` if not measured).
    pub fn value(self, r: &EpochRecord) -> Option<f64> {
        match self {
            Metric::Loss => Some(r.train_loss),
            Metric::Accuracy => Some(r.train_acc),
            Metric::ValLoss => r.val_loss,
            Metric::ValAccuracy => r.val_acc,
            Metric::EmaValLoss => r.ema_val_loss,
            Metric::EmaValAccuracy => r.ema_val_acc,
        }
    }

    /// Keras's `mode="auto"`: losses go down, accuracies up.
    pub fn auto_mode(self) -> Mode {
        match self {
            Metric::Loss | Metric::ValLoss | Metric::EmaValLoss => Mode::Min,
            Metric::Accuracy | Metric::ValAccuracy | Metric::EmaValAccuracy => Mode::Max,
        }
    }

    pub fn needs_validation(self) -> bool {
        !matches!(self, Metric::Loss | Metric::Accuracy)
    }

    /// Whether the metric measures the moving average of the weights.
    pub fn of_average(self) -> bool {
        matches!(self, Metric::EmaValLoss | Metric::EmaValAccuracy)
    }

    /// The weights the metric measures: the trained ones, or their moving
    /// average (a run that monitors an average keeps one: [`Monitor::check`]).
    pub fn weights(self, trainer: &Trainer) -> &ParamStore {
        match (&trainer.ema, self.of_average()) {
            (Some(ema), true) => ema.store(),
            _ => &trainer.store,
        }
    }
}

impl FromStr for Metric {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "loss" => Metric::Loss,
            "accuracy" => Metric::Accuracy,
            "val_loss" => Metric::ValLoss,
            "val_accuracy" => Metric::ValAccuracy,
            "ema_val_loss" => Metric::EmaValLoss,
            "ema_val_accuracy" => Metric::EmaValAccuracy,
            _ => {
                return Err(format!(
                    "unknown metric '{s}': use loss, accuracy, val_loss, val_accuracy, \
                     ema_val_loss or ema_val_accuracy"
                ))
            }
        })
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Metric::Loss => "loss",
            Metric::Accuracy => "accuracy",
            Metric::ValLoss => "val_loss",
            Metric::ValAccuracy => "val_accuracy",
            Metric::EmaValLoss => "ema_val_loss",
            Metric::EmaValAccuracy => "ema_val_accuracy",
        })
    }
}

/// Whether smaller or larger values of the metric are better.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Min,
    Max,
}

/// A metric, its direction, and the smallest change that counts.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Monitor {
    pub metric: Metric,
    pub mode: Mode,
    /// An epoch improves on the best so far only if it is better by more
    /// than this (Keras's `min_delta`, an absolute amount).
    pub min_delta: f64,
}

impl Monitor {
    /// `metric` in its natural direction, any improvement counting.
    pub fn new(metric: Metric) -> Self {
        Monitor {
            metric,
            mode: metric.auto_mode(),
            min_delta: 0.0,
        }
    }

    pub fn min_delta(self, min_delta: f64) -> Self {
        Monitor {
            min_delta: min_delta.abs(),
            ..self
        }
    }

    /// Whether `current` improves on `best` (any finite value improves on
    /// nothing). NaN never improves: a diverged epoch is not a best one.
    pub fn improves(&self, current: f64, best: Option<f64>) -> bool {
        if current.is_nan() {
            return false;
        }
        match (best, self.mode) {
            (None, _) => true,
            (Some(b), Mode::Min) => current < b - self.min_delta,
            (Some(b), Mode::Max) => current > b + self.min_delta,
        }
    }

    /// The monitored value of `record`, or an error saying the run does not
    /// measure it.
    pub fn value(&self, record: &EpochRecord, who: &str) -> Result<f64> {
        match self.metric.value(record) {
            Some(v) => Ok(v),
            None => bail!(
                "{who} monitors {}, which epoch {} did not measure (no validation split?)",
                self.metric,
                record.epoch
            ),
        }
    }

    /// Fails before training if the run will not measure the metric.
    pub fn check(&self, begin: &TrainBegin, who: &str) -> Result<()> {
        if self.metric.needs_validation() && !begin.has_validation {
            bail!(
                "{who} monitors {}, but the run has no validation split \
                 (hold images out with --val-split N, or monitor loss or accuracy)",
                self.metric
            );
        }
        if self.metric.of_average() && !begin.has_ema {
            bail!(
                "{who} monitors {}, but the run keeps no moving average of the weights \
                 (--ema-decay D, or monitor val_loss or val_accuracy)",
                self.metric
            );
        }
        Ok(())
    }
}
