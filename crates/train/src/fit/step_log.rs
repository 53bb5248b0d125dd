//! `steps.csv` in the run directory: one row per optimizer step with that
//! step's own training loss, appended as the run goes.
//!
//! Why: `metrics.csv` holds epoch means, which hide how two engines' losses
//! drift apart step by step. Comparing this engine with Keras from the same
//! initial weights on the same batches (`tools/keras_step_compare.py`)
//! needs each batch's own loss; Keras's per-batch logs are running means of
//! the epoch, this file is not.
//!
//! Columns: `epoch` (1-based, as in `metrics.csv`), `step` (1-based within
//! the epoch), `global_step` (optimizer updates done, this one included),
//! `loss` (the batch's mean loss, computed by the forward pass *before* this
//! step's update), `correct` (the batch's correctly classified images, by
//! the same forward pass), `lr` (the rate this step's update used),
//! `grad_norm` (the global norm of the loss's gradients before clipping,
//! written only by runs that clip: `--global-clipnorm`; empty otherwise). Numbers
//! are written in Rust's shortest round-trip form: parsed back as `f32`
//! they are the exact values.
//!
//! A resumed run keeps the rows up to its checkpoint and drops the later
//! ones (steps a killed run took after its last checkpoint, which are taken
//! again), so the file holds every step once, as a straight run would. A
//! file from before the `grad_norm` column gets the column, empty in its
//! old rows.

use super::{BatchLogs, Callback, TrainBegin};
use crate::trainer::Trainer;
use anyhow::{Context, Result};
use nn::checkpoint::write_atomic;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::PathBuf;

/// The file [`StepLog`] writes in the run directory.
pub const STEPS_FILE: &str = "steps.csv";

const HEADER: &str = "epoch,step,global_step,loss,correct,lr,grad_norm";
/// The header of files written before `grad_norm` was logged.
const HEADER_WITHOUT_NORM: &str = "epoch,step,global_step,loss,correct,lr";

pub struct StepLog {
    path: PathBuf,
    file: Option<File>,
}

impl StepLog {
    /// Writes `steps.csv` into the run directory `dir` (which must exist).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        StepLog {
            path: dir.into().join(STEPS_FILE),
            file: None,
        }
    }

    /// The rows of the existing file taken at global steps up to `upto`,
    /// header first (just the header if there is no file). A last line
    /// without its newline was cut by a kill while being written: dropped
    /// (its step is after the checkpoint, which is saved after the row).
    fn kept_rows(&self, upto: u64) -> Result<String> {
        let text = match fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e).with_context(|| format!("reading {}", self.path.display())),
        };
        let pad = text.lines().next() == Some(HEADER_WITHOUT_NORM);
        let mut kept = format!("{HEADER}\n");
        for (i, line) in text.split_inclusive('\n').enumerate().skip(1) {
            let Some(line) = line.strip_suffix('\n') else {
                break;
            };
            let global_step = line
                .split(',')
                .nth(2)
                .and_then(|s| s.parse::<u64>().ok())
                .with_context(|| {
                    format!(
                        "{} line {}: no global step in {line:?}",
                        self.path.display(),
                        i + 1
                    )
                })?;
            if global_step <= upto {
                kept.push_str(line);
                kept.push_str(if pad { ",\n" } else { "\n" });
            }
        }
        Ok(kept)
    }
}

impl Callback for StepLog {
    fn on_train_begin(&mut self, _: &mut Trainer, begin: &TrainBegin) -> Result<()> {
        let start = begin.start.global_step;
        let content = if start == 0 {
            format!("{HEADER}\n")
        } else {
            self.kept_rows(start)?
        };
        write_atomic(&self.path, content.as_bytes())
            .with_context(|| format!("writing {}", self.path.display()))?;
        let file = OpenOptions::new()
            .append(true)
            .open(&self.path)
            .with_context(|| format!("opening {}", self.path.display()))?;
        self.file = Some(file);
        Ok(())
    }

    fn on_train_batch_end(&mut self, trainer: &mut Trainer, logs: &BatchLogs) -> Result<()> {
        let Some(file) = self.file.as_mut() else {
            return Ok(()); // not begun: fit always calls on_train_begin first
        };
        let s = &logs.stats;
        // One unbuffered write per row (a step takes far longer): a killed
        // run leaves every row but at most a cut last one.
        let grad_norm = s.grad_norm.map(|n| n.to_string()).unwrap_or_default();
        let row = format!(
            "{},{},{},{},{},{},{grad_norm}\n",
            logs.epoch + 1,
            logs.step + 1,
            trainer.global_step,
            s.loss,
            s.correct,
            s.lr
        );
        file.write_all(row.as_bytes())
            .with_context(|| format!("writing {}", self.path.display()))?;
        Ok(())
    }
}
