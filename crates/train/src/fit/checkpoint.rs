//! The run's resumable checkpoint ([`run_state::save`]): before the first
//! step of a fresh run, after every epoch, and where an interrupted run
//! stopped. Keras's `BackupAndRestore`.
//!
//! Each save is one unit holding the weights, the optimizer state, the
//! moving average of the weights (if the trainer keeps one), the progress
//! and the epoch history, so a resumed run's callbacks rebuild
//! exactly the state the checkpoint was saved with. Put it last among the
//! callbacks: the checkpoint then records what the others did to the epoch.
//! The save before the first step is what makes a run killed during its
//! first epoch-end save resumable (from its start, with its initial and
//! `--weights` parameters).

use super::{Callback, EndReason, EpochLogs, FitSummary, TrainBegin};
use crate::report::EpochRecord;
use crate::run_state::{self, Progress};
use crate::trainer::Trainer;
use anyhow::Result;
use std::path::PathBuf;

pub struct Checkpoint {
    dir: PathBuf,
    /// The records of the epochs finished so far, saved with each unit.
    history: Vec<EpochRecord>,
}

impl Checkpoint {
    /// Saves into the run directory `dir` (which must exist).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Checkpoint {
            dir: dir.into(),
            history: Vec::new(),
        }
    }
}

impl Callback for Checkpoint {
    fn on_train_begin(&mut self, trainer: &mut Trainer, begin: &TrainBegin) -> Result<()> {
        self.history = begin.history.to_vec();
        if begin.start == Progress::default() && begin.history.is_empty() {
            run_state::save(&self.dir, trainer, begin.start, &self.history)?;
        }
        Ok(())
    }

    fn on_epoch_end(&mut self, trainer: &mut Trainer, logs: &EpochLogs) -> Result<()> {
        self.history.retain(|r| r.epoch < logs.record.epoch);
        self.history.push(logs.record.clone());
        run_state::save(&self.dir, trainer, logs.next, &self.history)?;
        Ok(())
    }

    fn on_train_end(&mut self, trainer: &mut Trainer, summary: &FitSummary) -> Result<()> {
        if summary.reason == EndReason::Interrupted {
            run_state::save(&self.dir, trainer, summary.at, &self.history)?;
        }
        Ok(())
    }
}
