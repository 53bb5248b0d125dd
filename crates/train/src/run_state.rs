//! Saving and resuming a run. A run directory holds:
//!
//! - `model.safetensors`: every parameter and batchnorm statistic under its
//!   Keras name (loadable by `--weights`, `eval`, `predict`, and
//!   `tools/safetensors_to_keras.py`);
//! - `train_state.safetensors`: the optimizer's moments, named after their
//!   parameters (layout in `optim::state`), and where the run is (epoch,
//!   step within it, global step);
//! - `config.json`, `metrics.csv`/`.json`, `learning_curves.svg`.
//!
//! Both checkpoint files are written atomically and carry the global step, so
//! a crash between the two writes is detected on resume rather than
//! silently mixing states. Data order and augmentation are functions of
//! (seed, epoch, index), so (epoch, step) is all the random state there is.
//! Both files go through `nn::checkpoint`, the one safetensors codec.

use crate::optim::OptimizerState;
use crate::run_config::RunConfig;
use crate::trainer::Trainer;
use anyhow::{bail, Context, Result};
use nn::checkpoint::{self, Metadata, TensorFile};
use std::path::{Path, PathBuf};

pub const MODEL_FILE: &str = "model.safetensors";
pub const STATE_FILE: &str = "train_state.safetensors";
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

/// The previous checkpoint's files are kept under this suffix until the new
/// pair is complete.
const PREV: &str = "prev";

/// Metadata key of both files: the optimizer steps taken when they were
/// written, which must agree for the pair to be resumed from.
const GLOBAL_STEP: &str = "global_step";

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

/// Writes the model and the training state for `progress`.
///
/// The two files are written one after the other, each atomically. Before
/// either is replaced, the current pair is hard-linked to `*.prev`, so a crash
/// between the two writes leaves the previous complete pair to resume from.
pub fn save(dir: &Path, trainer: &Trainer, progress: Progress) -> Result<()> {
    keep_previous(dir)?;
    let step = progress.global_step.to_string();
    let meta = Metadata::from([
        (GLOBAL_STEP.to_string(), step.clone()),
        ("format".to_string(), "keras-names/f32".to_string()),
        (
            checkpoint::EPSILON_KEY.to_string(),
            trainer.model.bn_epsilon().to_string(),
        ),
    ]);
    checkpoint::save(&trainer.store, &dir.join(MODEL_FILE), &meta)?;
    let (tensors, mut meta) = trainer.optimizer.state().encode(&trainer.store);
    meta.extend([
        ("epoch".to_string(), progress.epoch.to_string()),
        ("step".to_string(), progress.step.to_string()),
        (GLOBAL_STEP.to_string(), step),
        (
            "epoch_loss_sum".to_string(),
            format!("{:e}", progress.tally.loss_sum),
        ),
        (
            "epoch_correct".to_string(),
            progress.tally.correct.to_string(),
        ),
        ("epoch_seen".to_string(), progress.tally.seen.to_string()),
    ]);
    checkpoint::write(
        &dir.join(STATE_FILE),
        tensors.iter().map(|(n, t)| (n.as_str(), t)),
        &meta,
    )?;
    Ok(())
}

fn prev(dir: &Path, file: &str) -> PathBuf {
    dir.join(format!("{file}.{PREV}"))
}

/// Hard-links the current checkpoint pair (if complete) to `*.prev`.
fn keep_previous(dir: &Path) -> Result<()> {
    if !(dir.join(MODEL_FILE).exists() && dir.join(STATE_FILE).exists()) {
        return Ok(());
    }
    for file in [MODEL_FILE, STATE_FILE] {
        let p = prev(dir, file);
        if p.exists() {
            std::fs::remove_file(&p).with_context(|| format!("removing {}", p.display()))?;
        }
        std::fs::hard_link(dir.join(file), &p)
            .with_context(|| format!("linking {}", p.display()))?;
    }
    Ok(())
}

/// Restores parameters, optimizer state and progress from a run directory:
/// from its checkpoint pair, or, if that pair is incomplete or inconsistent
/// (the run died between the two writes), from the previous pair.
///
/// Freeze `trainer`'s parameters as the run did before resuming: the saved
/// optimizer state covers exactly the weights that were being trained, and
/// a trained weight without its moments is an error naming it.
pub fn resume(dir: &Path, trainer: &mut Trainer) -> Result<Progress> {
    let current = (dir.join(MODEL_FILE), dir.join(STATE_FILE));
    match resume_from(&current.0, &current.1, trainer) {
        Ok(p) => Ok(p),
        Err(e) => {
            let previous = (prev(dir, MODEL_FILE), prev(dir, STATE_FILE));
            if !(previous.0.exists() && previous.1.exists()) {
                return Err(e);
            }
            eprintln!(
                "warning: {e:#}\nresuming from the previous checkpoint ({}.{PREV})",
                MODEL_FILE
            );
            resume_from(&previous.0, &previous.1, trainer)
        }
    }
}

/// Resumes from one checkpoint pair. Everything is read and checked before
/// anything changes: the trainer is modified only by a resume that succeeds
/// (the weights load all-or-nothing, then the optimizer adopts its state).
fn resume_from(model_file: &Path, state_file: &Path, trainer: &mut Trainer) -> Result<Progress> {
    let model = TensorFile::read(model_file)?;
    let state = TensorFile::read(state_file)?;
    let parse_or_zero = |key: &str| state.meta_parse::<f64>(key).unwrap_or(0.0);
    let progress = Progress {
        epoch: state.meta_parse("epoch")?,
        step: state.meta_parse("step")?,
        global_step: state.meta_parse(GLOBAL_STEP)?,
        tally: EpochTally {
            loss_sum: parse_or_zero("epoch_loss_sum"),
            correct: parse_or_zero("epoch_correct") as u64,
            seen: parse_or_zero("epoch_seen") as u64,
        },
    };
    let model_step = model.metadata.get(GLOBAL_STEP).cloned().unwrap_or_default();
    if model_step != progress.global_step.to_string() {
        bail!(
            "{} is at step {model_step} but {} is at step {}: the run stopped between the two writes",
            model_file.display(),
            state_file.display(),
            progress.global_step
        );
    }
    let optimizer_state = OptimizerState::decode(&state, &trainer.store)?;
    if let Some(s) = &optimizer_state {
        s.check_kind(trainer.optimizer.name())
            .with_context(|| format!("{}", state_file.display()))?;
    }
    trainer
        .model
        .load_weights_from(&mut trainer.store, model, &[])?;
    if let Some(s) = &optimizer_state {
        trainer
            .optimizer
            .load_state(s)
            .with_context(|| format!("{}", state_file.display()))?;
    }
    trainer.global_step = progress.global_step;
    Ok(progress)
}

/// The weights file a `--checkpoint` argument names: a run directory or a file.
pub fn model_file(checkpoint: &Path) -> PathBuf {
    if checkpoint.is_dir() {
        checkpoint.join(MODEL_FILE)
    } else {
        checkpoint.to_path_buf()
    }
}
