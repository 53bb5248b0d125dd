//! Keep the weights of the best epoch: Keras's
//! `ModelCheckpoint(filepath, monitor, mode, save_best_only=True,
//! save_weights_only=True)`.
//!
//! After each epoch whose monitored metric is better than every earlier
//! epoch's, every parameter and batchnorm statistic is written (atomically)
//! to the file, under its Keras name, with the epoch and the value in the
//! file's metadata: `eval` and `predict` take it as a `--checkpoint`, and
//! `--weights` starts a new run from it. Which file holds the best
//! weights does not depend on interruptions: a resumed run rebuilds the
//! best value from the history and only overwrites the file on a better
//! epoch.

use super::{Callback, EpochLogs, Monitor, TrainBegin};
use crate::report::EpochRecord;
use crate::trainer::Trainer;
use anyhow::{Context, Result};
use std::collections::HashMap;
use std::path::PathBuf;

/// The usual file name, in the run directory.
pub const BEST_FILE: &str = "best.safetensors";

pub struct ModelCheckpoint {
    pub path: PathBuf,
    pub monitor: Monitor,
    best: Option<f64>,
    best_epoch: Option<usize>,
}

impl ModelCheckpoint {
    /// Writes the best epoch's weights to `path`.
    pub fn best_only(path: impl Into<PathBuf>, monitor: Monitor) -> Self {
        ModelCheckpoint {
            path: path.into(),
            monitor,
            best: None,
            best_epoch: None,
        }
    }

    /// The best value so far and its epoch (1-based): the one in the file.
    pub fn best(&self) -> Option<(f64, usize)> {
        self.best.zip(self.best_epoch)
    }

    /// Takes one epoch into account; `true` if it is the new best.
    fn observe(&mut self, record: &EpochRecord) -> Result<bool> {
        let current = self.monitor.value(record, "ModelCheckpoint")?;
        let better = self.monitor.improves(current, self.best);
        if better {
            self.best = Some(current);
            self.best_epoch = Some(record.epoch);
        }
        Ok(better)
    }
}

impl Callback for ModelCheckpoint {
    fn on_train_begin(&mut self, _: &mut Trainer, begin: &TrainBegin) -> Result<()> {
        self.monitor.check(begin, "ModelCheckpoint")?;
        self.best = None;
        self.best_epoch = None;
        for r in begin.history {
            self.observe(r)?;
        }
        Ok(())
    }

    fn on_epoch_end(&mut self, trainer: &mut Trainer, logs: &EpochLogs) -> Result<()> {
        if !self.observe(&logs.record)? {
            return Ok(());
        }
        let value = self.best.expect("just set");
        let meta = HashMap::from([
            ("epoch".to_string(), logs.record.epoch.to_string()),
            (self.monitor.metric.to_string(), value.to_string()),
            (
                nn::checkpoint::EPSILON_KEY.to_string(),
                trainer.model.bn_epsilon().to_string(),
            ),
        ]);
        nn::checkpoint::save(self.monitor.metric.weights(trainer), &self.path, &meta)
            .with_context(|| format!("writing the best weights to {}", self.path.display()))?;
        println!(
            "epoch {}: {} {value:.4} is the best so far; weights saved to {}",
            logs.record.epoch,
            self.monitor.metric,
            self.path.display()
        );
        Ok(())
    }
}
