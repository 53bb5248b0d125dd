//! The run's resumable checkpoint ([`run_state::save`]): after every epoch,
//! and where an interrupted run stopped. Keras's `BackupAndRestore`.
//!
//! Put it last among the callbacks: the checkpoint then records what the
//! others did to the epoch (the metrics log it replays from is written
//! first, so a crash between the two only redoes the epoch).

use super::{Callback, EndReason, EpochLogs, FitSummary};
use crate::run_state;
use crate::trainer::Trainer;
use anyhow::Result;
use std::path::PathBuf;

pub struct Checkpoint {
    dir: PathBuf,
}

impl Checkpoint {
    /// Saves into the run directory `dir` (which must exist).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Checkpoint { dir: dir.into() }
    }
}

impl Callback for Checkpoint {
    fn on_epoch_end(&mut self, trainer: &mut Trainer, logs: &EpochLogs) -> Result<()> {
        run_state::save(&self.dir, trainer, logs.next)
    }

    fn on_train_end(&mut self, trainer: &mut Trainer, summary: &FitSummary) -> Result<()> {
        if summary.reason == EndReason::Interrupted {
            run_state::save(&self.dir, trainer, summary.at)?;
        }
        Ok(())
    }
}
