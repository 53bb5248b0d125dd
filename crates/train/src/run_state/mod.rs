//! Saving and resuming a run: the checkpoint protocol.
//!
//! A run directory holds `config.json`, `classes.txt`, the human-facing
//! `metrics.csv`/`.json`/`.md` and `learning_curves.svg` (written by the
//! `MetricsFiles` callback), the user-facing `model.safetensors`, and
//! `checkpoints/`, where every save is one **unit**: a directory
//! `checkpoints/<seq>-step<global_step>/` holding
//!
//! - `model.safetensors`: every parameter and batchnorm statistic under its
//!   Keras name;
//! - `train_state.safetensors`: the optimizer's moments, named after their
//!   parameters (layout in `optim::state`), and where the run is (epoch,
//!   step within it, global step, the epoch's running loss/accuracy);
//! - `ema.safetensors`, when the trainer keeps a moving average of its
//!   parameters ([`crate::ema`]): the average under the parameters' names,
//!   and its update count (a run with EMA on refuses to resume from a unit
//!   without it; a run with EMA off ignores it);
//! - `history.json`: the records of the epochs finished so far, from which
//!   a resumed run's callbacks rebuild their state;
//! - `manifest.json`, written last: step, epoch, and each file's size and
//!   md5.
//!
//! The protocol, and why it survives any sequence of kills and full disks:
//!
//! 1. A save first removes leftovers of dead saves (temporary unit
//!    directories `checkpoints/.tmp-*`, atomic-write temporaries
//!    `.<file>.<random>.tmp` of the run's own files at the top).
//! 2. It writes the unit's files, then the manifest, into
//!    `checkpoints/.tmp-<name>/`, each fsynced. A failure here removes the
//!    temporary directory; a kill leaves it for step 1 of the next save or
//!    for the next resume. Either way no unit changed.
//! 3. It renames the temporary directory to `<name>`: the commit. A unit is
//!    complete exactly when its manifest is there and every file matches
//!    its size (and, at resume, its md5).
//! 4. Only then it refreshes the top-level `model.safetensors` from the new
//!    unit (hard link, or copy, under a temporary name, renamed over the
//!    old file: `eval`, `predict`, `--weights` and
//!    `tools/safetensors_to_keras.py` always see a complete model; being a
//!    link, it is to be read or copied, never edited in place), and
//!    removes every unit but the newest two complete ones (each renamed to
//!    a temporary name before it is deleted, so a cut removal leaves a
//!    leftover, never a unit with a file missing). A failure in step 4 is
//!    reported, but the new unit is already complete.
//!
//! So a complete unit is never replaced or altered by an incomplete one,
//! and the previous complete unit exists until a newer one is complete.
//!
//! Disk use, by design: two complete units are kept, and a save writes a
//! third before it removes the oldest, so a run needs room for **three
//! units** at its peak. For ResNet50 (23.6 M parameters, f32) a unit is
//! `model.safetensors` 94 MB + `train_state.safetensors` 188 MB with Adam
//! (two moments; 94 MB with SGD momentum) + `ema.safetensors` 94 MB when
//! the run keeps an average + a few kB of history and manifest: 283 MB
//! (377 MB with EMA), so 0.85 GB at the peak (1.1 GB with EMA). The
//! top-level `model.safetensors` is a hard link into the newest unit and
//! costs nothing more (another 94 MB where links are not possible). Each
//! file's md5 is computed while it is written (no second pass over it);
//! only a resume reads the files back to check them.
//! Resume takes the newest unit that checks complete, says which, and says
//! why it skipped any newer one. A fresh run saves a unit before its first
//! step (the `Checkpoint` callback), so even a kill during the first
//! epoch's save leaves the run resumable from its start.
//!
//! Run directories of older versions (a top-level `model.safetensors` +
//! `train_state.safetensors` pair, and a `*.prev` pair) still resume; their
//! epoch history then comes from `metrics.json`, and their first new save
//! replaces those files by a unit. Data order and augmentation are
//! functions of (seed, epoch, index), so (epoch, step) is all the random
//! state there is. The safetensors files go through `nn::checkpoint`, the
//! one codec.
//!
//! [`fault`] lets tests make any write boundary of a save fail.

#[doc(hidden)]
pub mod fault;
mod pair;
pub mod unit;

use crate::report::{EpochRecord, MetricsLog};
use crate::run_config::RunConfig;
use crate::trainer::Trainer;
use anyhow::{bail, Context, Result};
use nn::checkpoint;
use std::path::{Path, PathBuf};
use unit::{Manifest, HISTORY_FILE};

pub const MODEL_FILE: &str = "model.safetensors";
pub const STATE_FILE: &str = "train_state.safetensors";
/// The moving average of the parameters, in a unit (when the run keeps
/// one) and, at the end of a run, at the top of the run directory.
pub const EMA_FILE: &str = "ema.safetensors";
pub const CONFIG_FILE: &str = "config.json";
/// One class name per line, in label order.
pub const CLASSES_FILE: &str = "classes.txt";

/// The class names a run directory records, if it is a run directory.
pub fn read_classes(checkpoint: &Path) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(checkpoint.join(CLASSES_FILE)).ok()?;
    Some(
        text.lines()
            .map(str::to_string)
            .filter(|l| !l.is_empty())
            .collect(),
    )
}

/// Where a run is: the next step to take is `step` of `epoch` (0-based),
/// with the running totals of that epoch's steps so far.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Progress {
    pub epoch: usize,
    pub step: usize,
    pub global_step: u64,
    pub tally: EpochTally,
}

/// Training loss and accuracy accumulated over the steps of the current
/// epoch, so an epoch resumed in the middle still reports all of them.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct EpochTally {
    /// Sum over images of the loss.
    pub loss_sum: f64,
    pub correct: u64,
    pub seen: u64,
}

/// The old layout's previous pair: `model.safetensors.prev`...
const PREV: &str = "prev";

pub fn write_config(dir: &Path, config: &RunConfig) -> Result<()> {
    let json = serde_json::to_string_pretty(config)?;
    checkpoint::write_atomic(&dir.join(CONFIG_FILE), json.as_bytes())
        .with_context(|| format!("writing {}", dir.join(CONFIG_FILE).display()))
}

pub fn read_config(dir: &Path) -> Result<RunConfig> {
    let path = dir.join(CONFIG_FILE);
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text)
        .with_context(|| format!("{}: not a run configuration", path.display()))
}

/// Saves the model, the optimizer state, `progress` and the records of the
/// epochs finished so far (`history`) as one new unit of the run directory
/// `dir`, following the protocol in the module docs. Returns the unit's
/// path. After an error the newest complete unit is still there (and still
/// the newest, unless the error came after the commit: the message says).
pub fn save(
    dir: &Path,
    trainer: &Trainer,
    progress: Progress,
    history: &[EpochRecord],
) -> Result<PathBuf> {
    unit::remove_leftovers(dir).with_context(|| {
        format!(
            "removing leftovers of interrupted saves in {}",
            dir.display()
        )
    })?;
    let log = MetricsLog {
        records: history.to_vec(),
    };
    let head = Manifest {
        format: unit::FORMAT.to_string(),
        global_step: progress.global_step,
        epoch: progress.epoch,
        step: progress.step,
        files: Vec::new(),
    };
    let model = || pair::model_bytes(trainer, progress);
    let state = || pair::state_bytes(trainer, progress);
    let ema = || pair::ema_bytes(trainer, progress).unwrap_or_default();
    let history = || log.to_json().into_bytes();
    let mut files: Vec<(&str, &dyn Fn() -> Vec<u8>)> =
        vec![(MODEL_FILE, &model), (STATE_FILE, &state)];
    if trainer.ema.is_some() {
        files.push((EMA_FILE, &ema));
    }
    files.push((HISTORY_FILE, &history));
    let saved = unit::write(dir, head, &files)?;
    let committed = || {
        format!(
            "checkpoint {} is complete and resumable, but",
            saved.display()
        )
    };
    unit::refresh_model(dir, &saved).with_context(|| {
        format!(
            "{} refreshing {} failed",
            committed(),
            dir.join(MODEL_FILE).display()
        )
    })?;
    unit::prune(dir, &saved)
        .with_context(|| format!("{} removing older checkpoints failed", committed()))?;
    Ok(saved)
}

/// Writes `trainer`'s moving average to `path` atomically, as a unit's
/// `ema.safetensors` at `progress` (the weights a run ends with, for
/// `eval --checkpoint`). Returns whether there was one to write.
pub fn write_ema(path: &Path, trainer: &Trainer, progress: Progress) -> Result<bool> {
    let Some(bytes) = pair::ema_bytes(trainer, progress) else {
        return Ok(false);
    };
    checkpoint::write_atomic(path, &bytes)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(true)
}

/// What [`resume_run`] restored, and from where.
#[derive(Clone, Debug, PartialEq)]
pub struct Resumed {
    pub progress: Progress,
    /// The epochs finished before `progress`, from the unit; `None` for a
    /// run directory of the old layout (its history is in `metrics.json`).
    pub history: Option<Vec<EpochRecord>>,
    /// The unit (or, old layout, the model file) resumed from.
    pub source: PathBuf,
    /// Newer units that were not complete, and why.
    pub skipped: Vec<(PathBuf, String)>,
    /// Leftovers of interrupted saves that were removed.
    pub removed: Vec<PathBuf>,
}

/// Restores parameters, optimizer state, the moving average (if the
/// trainer keeps one) and progress from the run
/// directory `dir` ([`resume_run`], for callers that need only the progress).
pub fn resume(dir: &Path, trainer: &mut Trainer) -> Result<Progress> {
    Ok(resume_run(dir, trainer)?.progress)
}

/// Restores parameters and optimizer state from the newest complete unit
/// of `dir` (telling on stderr which, and why any newer one was skipped),
/// or from an old-layout pair if `dir` has no complete unit, and removes
/// leftovers of interrupted saves.
///
/// Freeze `trainer`'s parameters as the run did before resuming: the saved
/// optimizer state covers exactly the weights that were being trained, and
/// a trained weight without its moments is an error naming it. A complete
/// unit that does not fit the model is an error, not a reason to take an
/// older one. The trainer changes only if the resume succeeds.
///
/// A trainer with an [`crate::ema::Ema`] needs the unit's `ema.safetensors`:
/// a unit without one (saved by the run before EMA was turned on) is an
/// error naming the file, as is an old-layout run directory. A trainer
/// without one ignores the file.
pub fn resume_run(dir: &Path, trainer: &mut Trainer) -> Result<Resumed> {
    let removed = unit::remove_leftovers(dir).with_context(|| {
        format!(
            "removing leftovers of interrupted saves in {}",
            dir.display()
        )
    })?;
    let mut skipped = Vec::new();
    let units = unit::list(dir)
        .with_context(|| format!("listing {}", dir.join(unit::CHECKPOINTS_DIR).display()))?;
    for u in units {
        let manifest = match unit::check(&u.path, true) {
            Ok(m) => m,
            Err(reason) => {
                skipped.push((u.path, reason));
                continue;
            }
        };
        let has_ema = manifest.files.iter().any(|f| f.name == EMA_FILE);
        let ema_file = u.path.join(EMA_FILE);
        if trainer.ema.is_some() && !has_ema {
            bail!(
                "{}: no {EMA_FILE}, but this run keeps a moving average of the weights (ema in \
                 its configuration): the checkpoint was saved without one; resume with ema off, \
                 or start the run again",
                u.path.display()
            );
        }
        if trainer.ema.is_none() && has_ema {
            eprintln!(
                "note: {} is not restored: this run keeps no moving average (ema off)",
                ema_file.display()
            );
        }
        let progress = pair::restore(
            &u.path.join(MODEL_FILE),
            &u.path.join(STATE_FILE),
            trainer.ema.is_some().then_some(ema_file.as_path()),
            trainer,
        )?;
        if (progress.global_step, progress.epoch, progress.step)
            != (manifest.global_step, manifest.epoch, manifest.step)
        {
            bail!(
                "{}: {STATE_FILE} is at epoch {} step {} (global step {}) but {} says epoch {} step {} (global step {})",
                u.path.display(),
                progress.epoch,
                progress.step,
                progress.global_step,
                unit::MANIFEST_FILE,
                manifest.epoch,
                manifest.step,
                manifest.global_step
            );
        }
        let history_path = u.path.join(HISTORY_FILE);
        let text = std::fs::read_to_string(&history_path)
            .with_context(|| format!("reading {}", history_path.display()))?;
        let history = MetricsLog::from_json(&text, &history_path)?.records;
        report_skipped(&skipped);
        eprintln!("resuming from {}", u.path.display());
        // What the save that wrote this unit may not have finished.
        if let Err(e) = unit::refresh_model(dir, &u.path) {
            eprintln!(
                "warning: {} not refreshed from {}: {e}",
                dir.join(MODEL_FILE).display(),
                u.path.display()
            );
        }
        if let Err(e) = unit::prune(dir, &u.path) {
            eprintln!("warning: older checkpoints not removed: {e}");
        }
        return Ok(Resumed {
            progress,
            history: Some(history),
            source: u.path,
            skipped,
            removed,
        });
    }
    if dir.join(STATE_FILE).exists() || prev(dir, STATE_FILE).exists() {
        report_skipped(&skipped);
        if trainer.ema.is_some() {
            bail!(
                "{}: a run directory of the old layout, which has no {EMA_FILE}, but this run keeps \
                 a moving average of the weights (ema in its configuration): resume with ema off",
                dir.display()
            );
        }
        let (progress, source) = resume_old_layout(dir, trainer)?;
        return Ok(Resumed {
            progress,
            history: None,
            source,
            skipped,
            removed,
        });
    }
    let why: String = skipped
        .iter()
        .map(|(p, r)| format!("\n  {}: {r}", p.display()))
        .collect();
    bail!(
        "{}: no complete checkpoint to resume from{}{why}\n\
         the run stopped before its first checkpoint was complete: start it again without --resume",
        dir.display(),
        if skipped.is_empty() {
            ""
        } else {
            "; incomplete:"
        }
    )
}

fn report_skipped(skipped: &[(PathBuf, String)]) {
    for (p, reason) in skipped {
        eprintln!("warning: skipping checkpoint {}: {reason}", p.display());
    }
}

fn prev(dir: &Path, file: &str) -> PathBuf {
    dir.join(format!("{file}.{PREV}"))
}

/// The layout before units: the top-level pair, or, if it is incomplete
/// or inconsistent (the run died between the two writes), the `*.prev` pair.
fn resume_old_layout(dir: &Path, trainer: &mut Trainer) -> Result<(Progress, PathBuf)> {
    let current = (dir.join(MODEL_FILE), dir.join(STATE_FILE));
    match pair::restore(&current.0, &current.1, None, trainer) {
        Ok(p) => Ok((p, current.0)),
        Err(e) => {
            let previous = (prev(dir, MODEL_FILE), prev(dir, STATE_FILE));
            if !(previous.0.exists() && previous.1.exists()) {
                return Err(e);
            }
            eprintln!(
                "warning: {e:#}\nresuming from the previous checkpoint ({}.{PREV})",
                MODEL_FILE
            );
            Ok((
                pair::restore(&previous.0, &previous.1, None, trainer)?,
                previous.0,
            ))
        }
    }
}

/// The weights file a `--checkpoint` argument names: a run directory or a file.
pub fn model_file(checkpoint: &Path) -> PathBuf {
    if checkpoint.is_dir() {
        checkpoint.join(MODEL_FILE)
    } else {
        checkpoint.to_path_buf()
    }
}
