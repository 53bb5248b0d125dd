//! Saving and resuming a run. A run directory holds:
//!
//! - `model.safetensors`: every parameter and batchnorm statistic under its
//!   Keras name (loadable by `--weights`, `eval`, `predict`, and
//!   `tools/safetensors_to_keras.py`);
//! - `train_state.safetensors`: the optimizer's moments and where the run is
//!   (epoch, step within it, global step);
//! - `config.json`, `metrics.csv`/`.json`, `learning_curves.svg`.
//!
//! Both checkpoint files are written atomically and carry the global step, so
//! a crash between the two writes is detected on resume rather than
//! silently mixing states. Data order and augmentation are functions of
//! (seed, epoch, index), so (epoch, step) is all the random state there is.

use crate::checkpoint_io::{load_safetensors, save_safetensors, Checkpoint};
use crate::optim::OptimizerState;
use crate::run_config::RunConfig;
use crate::trainer::Trainer;
use anyhow::{bail, Context, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub const MODEL_FILE: &str = "model.safetensors";
pub const STATE_FILE: &str = "train_state.safetensors";
pub const CONFIG_FILE: &str = "config.json";

/// Where a run is: the next step to take is `step` of `epoch` (0-based).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    pub epoch: usize,
    pub step: usize,
    pub global_step: u64,
}

pub fn write_config(dir: &Path, config: &RunConfig) -> Result<()> {
    let json = serde_json::to_string_pretty(config)?;
    crate::checkpoint_io::write_atomic(&dir.join(CONFIG_FILE), json.as_bytes())
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
pub fn save(dir: &Path, trainer: &Trainer, progress: Progress) -> Result<()> {
    let step = progress.global_step.to_string();
    let meta = HashMap::from([
        ("global_step".to_string(), step.clone()),
        ("format".to_string(), "keras-names/f32".to_string()),
        (
            nn::weights_io::EPSILON_KEY.to_string(),
            trainer.model.bn_epsilon().to_string(),
        ),
    ]);
    nn::weights_io::save(&trainer.store, &dir.join(MODEL_FILE), &meta)?;
    let mut ckpt = Checkpoint::new();
    trainer.optimizer.state().write_to(&mut ckpt, "optimizer/");
    ckpt.set_meta("epoch", progress.epoch.to_string());
    ckpt.set_meta("step", progress.step.to_string());
    ckpt.set_meta("global_step", step);
    save_safetensors(&dir.join(STATE_FILE), &ckpt)?;
    Ok(())
}

/// Restores parameters, optimizer state and progress from a run directory.
pub fn resume(dir: &Path, trainer: &mut Trainer) -> Result<Progress> {
    let report = trainer
        .model
        .load_weights(&mut trainer.store, &dir.join(MODEL_FILE), &[])?;
    let ckpt = load_safetensors(&dir.join(STATE_FILE))?;
    let progress = Progress {
        epoch: ckpt.meta_parse("epoch")?,
        step: ckpt.meta_parse("step")?,
        global_step: ckpt.meta_parse("global_step")?,
    };
    let model_step = report
        .metadata
        .get("global_step")
        .cloned()
        .unwrap_or_default();
    if model_step != progress.global_step.to_string() {
        bail!(
            "{}: model is at step {model_step} but {} is at step {}: the run stopped between the two writes; \
             resume from an earlier copy",
            dir.display(),
            STATE_FILE,
            progress.global_step
        );
    }
    if let Some(state) = OptimizerState::read_from(&ckpt, "optimizer/")? {
        trainer
            .optimizer
            .load_state(&state)
            .with_context(|| format!("{}", dir.join(STATE_FILE).display()))?;
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
