//! `metrics.csv`, `metrics.json`, `learning_curves.svg` and `metrics.md` in
//! the run directory, rewritten after every epoch
//! ([`crate::report::MetricsLog`]). Keras's `CSVLogger`, plus JSON for
//! scripts, a picture and a table to quote. (A resumed run
//! reads its history from its checkpoint, not from these files.)

use super::{Callback, EpochLogs, TrainBegin};
use crate::report::MetricsLog;
use crate::trainer::Trainer;
use anyhow::Result;
use std::path::PathBuf;

pub struct MetricsFiles {
    dir: PathBuf,
    log: MetricsLog,
}

impl MetricsFiles {
    /// Writes into `dir` (which must exist).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        MetricsFiles {
            dir: dir.into(),
            log: MetricsLog::new(),
        }
    }
}

impl Callback for MetricsFiles {
    fn on_train_begin(&mut self, _: &mut Trainer, begin: &TrainBegin) -> Result<()> {
        // A resumed run continues the log of the epochs it keeps. Rewritten
        // at once: after a kill the files may hold an epoch the checkpoint
        // does not (it is trained again), and should agree with it.
        self.log.records = begin.history.to_vec();
        if begin.start.global_step > 0 {
            self.log.write_all(&self.dir)?;
        }
        Ok(())
    }

    fn on_epoch_end(&mut self, _: &mut Trainer, logs: &EpochLogs) -> Result<()> {
        self.log.push(logs.record.clone());
        self.log.write_all(&self.dir)?;
        Ok(())
    }
}
