//! `metrics.csv`, `metrics.json` and `learning_curves.svg` in the run
//! directory, rewritten after every epoch ([`crate::report::MetricsLog`]).
//! Keras's `CSVLogger`, plus the JSON a resumed run reads its history from
//! and a picture.

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
        // A resumed run continues the log of the epochs it keeps.
        self.log.records = begin.history.to_vec();
        Ok(())
    }

    fn on_epoch_end(&mut self, _: &mut Trainer, logs: &EpochLogs) -> Result<()> {
        self.log.push(logs.record.clone());
        self.log.write_all(&self.dir)?;
        Ok(())
    }
}
