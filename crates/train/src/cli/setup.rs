//! Pieces every command shares: threads, model loading, optimizer and
//! schedule construction, dataset subsets.

use anyhow::{anyhow, bail, Context, Result};
use autograd::ParamStore;
use nn::freeze::Freeze;
use nn::weights_io::{self, LoadReport};
use nn::Model;
use std::path::Path;
use train::data::{epoch_permutation, Dataset, Preprocess};
use train::model_spec::ModelSpec;
use train::optim::{Adam, AdamConfig, LrSchedule, Optimizer, ScheduleKind, Sgd, SgdConfig};
use train::run_config::RunConfig;

/// Runs `body` on a rayon pool of `threads` workers (default: all cores,
/// or `RAYON_NUM_THREADS`), *inside* the pool: the command's own serial work
/// runs on a worker, so each parallel kernel starts on the calling worker at
/// once and wakes only the others, instead of handing every kernel from the
/// main thread to the pool and sleeping until it is done.
pub fn in_pool<T: Send>(
    threads: Option<usize>,
    body: impl FnOnce() -> Result<T> + Send,
) -> Result<T> {
    let mut builder = rayon::ThreadPoolBuilder::new();
    if let Some(n) = threads {
        if n == 0 {
            bail!("--threads must be positive");
        }
        builder = builder.num_threads(n);
    }
    let pool = builder
        .build()
        .map_err(|e| anyhow!("creating the thread pool: {e}"))?;
    pool.install(body)
}

pub fn parse_preprocess(s: &str) -> Result<Preprocess> {
    s.parse().map_err(|e| anyhow!("--preprocess: {e}"))
}

pub fn parse_freeze(s: &str) -> Result<Freeze> {
    Ok(match s {
        "none" => Freeze::None,
        "base" => Freeze::Base,
        n => match n.parse::<usize>() {
            Ok(k) if (1..=5).contains(&k) => Freeze::Through(k),
            _ => bail!("--freeze {s}: expected none, base, or a stage number 1..5"),
        },
    })
}

pub fn build_optimizer(c: &RunConfig) -> Result<Box<dyn Optimizer>> {
    Ok(match c.optimizer.as_str() {
        "adam" => Box::new(Adam::new(AdamConfig {
            weight_decay: c.weight_decay,
            ..AdamConfig::default()
        })),
        "sgd" => Box::new(Sgd::new(SgdConfig {
            momentum: c.momentum,
            nesterov: c.nesterov,
            weight_decay: c.weight_decay,
        })),
        other => bail!("--optimizer {other}: expected adam or sgd"),
    })
}

pub fn build_schedule(c: &RunConfig, steps_per_epoch: usize) -> Result<LrSchedule> {
    let kind: ScheduleKind = c
        .lr_schedule
        .parse()
        .map_err(|e| anyhow!("--lr-schedule: {e}"))?;
    Ok(LrSchedule {
        base_lr: c.lr,
        kind,
        warmup_steps: (c.warmup_epochs * steps_per_epoch as f32).round() as u64,
        total_steps: (c.epochs * steps_per_epoch) as u64,
        steps_per_epoch: steps_per_epoch as u64,
    })
}

/// A seeded random subset of `limit` images (all of them without a limit).
pub fn subset(data: Dataset, limit: Option<usize>, seed: u64) -> Dataset {
    match limit {
        Some(n) if n < data.len() => {
            let mut pick = epoch_permutation(data.len(), seed, u64::MAX)[..n].to_vec();
            pick.sort_unstable();
            data.subset(&pick)
        }
        _ => data,
    }
}

/// Builds the model a weights file describes and loads it (the head must be
/// in the file).
pub fn load_model(
    path: &Path,
    input_size: usize,
) -> Result<(Box<dyn Model>, ParamStore, LoadReport)> {
    let (tensors, _) = weights_io::read_tensors(path)?;
    let spec = ModelSpec::infer(&tensors).map_err(|e| anyhow!("{}: {e}", path.display()))?;
    if spec.num_classes.is_none() {
        bail!(
            "{}: has no classification head (predictions/kernel); it cannot classify",
            path.display()
        );
    }
    let (mut model, mut store) = spec.build(input_size, 0)?;
    let report = model
        .load_weights(&mut store, path, &[])
        .with_context(|| "loading the checkpoint")?;
    Ok((model, store, report))
}
