//! The safetensors files of a checkpoint: `model.safetensors` (every
//! parameter and batchnorm statistic under its Keras name),
//! `train_state.safetensors` (the optimizer's moments under their
//! parameters' names, and where the run is) and, when the run keeps a
//! moving average, `ema.safetensors` (the average under the parameters'
//! names). Encoded here, restored here;
//! where they live on disk is the caller's business (a checkpoint unit, or
//! the top of an old run directory).

use super::{EpochTally, Progress};
use crate::ema::Ema;
use crate::optim::OptimizerState;
use crate::trainer::Trainer;
use anyhow::{bail, Context, Result};
use nn::checkpoint::{self, Metadata, TensorFile};
use std::path::Path;

/// Metadata key of both files: the optimizer steps taken when they were
/// written, which must agree for the pair to be resumed from.
pub(crate) const GLOBAL_STEP: &str = "global_step";

/// The metadata of a model-shaped file (`model.safetensors`,
/// `ema.safetensors`): the step, the layout, the batchnorm epsilon (what
/// `eval` and `--weights` read).
fn model_meta(trainer: &Trainer, progress: Progress) -> Metadata {
    Metadata::from([
        (GLOBAL_STEP.to_string(), progress.global_step.to_string()),
        ("format".to_string(), "keras-names/f32".to_string()),
        (
            checkpoint::EPSILON_KEY.to_string(),
            trainer.model.bn_epsilon().to_string(),
        ),
    ])
}

/// The bytes of `model.safetensors` for `trainer` at `progress`.
pub(crate) fn model_bytes(trainer: &Trainer, progress: Progress) -> Vec<u8> {
    let meta = model_meta(trainer, progress);
    let params = trainer
        .store
        .iter()
        .map(|(_, p)| (p.name.as_str(), &p.value));
    checkpoint::to_bytes(params, &meta)
}

/// The bytes of `ema.safetensors` for `trainer` at `progress`; `None`
/// without a moving average. Loadable wherever a model file is (same
/// names, same metadata, plus the average's update count).
pub(crate) fn ema_bytes(trainer: &Trainer, progress: Progress) -> Option<Vec<u8>> {
    let ema = trainer.ema.as_ref()?;
    Some(ema.to_bytes(model_meta(trainer, progress)))
}

/// The bytes of `train_state.safetensors` for `trainer` at `progress`.
pub(crate) fn state_bytes(trainer: &Trainer, progress: Progress) -> Vec<u8> {
    let (tensors, mut meta) = trainer.optimizer.state().encode(&trainer.store);
    meta.extend([
        ("epoch".to_string(), progress.epoch.to_string()),
        ("step".to_string(), progress.step.to_string()),
        (GLOBAL_STEP.to_string(), progress.global_step.to_string()),
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
    checkpoint::to_bytes(tensors.iter().map(|(n, t)| (n.as_str(), t)), &meta)
}

/// Restores `trainer` from one pair, and its moving average from
/// `ema_file` if given (the trainer must then keep one). Everything is read
/// and checked before anything changes: the trainer is modified only by a
/// restore that succeeds (the average is rebuilt from its file before the
/// weights load all-or-nothing, then the optimizer adopts its state).
pub(crate) fn restore(
    model_file: &Path,
    state_file: &Path,
    ema_file: Option<&Path>,
    trainer: &mut Trainer,
) -> Result<Progress> {
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
    let ema = match (ema_file, &trainer.ema) {
        (Some(path), Some(current)) => {
            let file = TensorFile::read(path)?;
            let ema_step = file.metadata.get(GLOBAL_STEP).cloned().unwrap_or_default();
            if ema_step != progress.global_step.to_string() {
                bail!(
                    "{} is at step {ema_step} but {} is at step {}",
                    path.display(),
                    state_file.display(),
                    progress.global_step
                );
            }
            Some(Ema::restore(current.config(), &trainer.store, file)?)
        }
        _ => None,
    };
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
    if ema.is_some() {
        trainer.ema = ema;
    }
    trainer.global_step = progress.global_step;
    Ok(progress)
}
