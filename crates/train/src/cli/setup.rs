//! Pieces every command shares: threads, model loading, dataset subsets.

use anyhow::{anyhow, bail, Context, Result};
use autograd::ParamStore;
use nn::checkpoint;
use nn::Model;
use std::path::Path;
use train::data::Preprocess;
use train::model_spec::ModelSpec;
use train::run_config::memory;

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
            bail!("--threads 0: must be at least 1");
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

/// A seeded random subset of `limit` images (all of them without a limit).
pub use train::run::subset;

/// Builds the model a weights file describes and loads it (the head must be
/// in the file); weights holding a NaN or infinity are refused, naming the
/// first such tensor. A network that cannot fit in memory even one image
/// at a time is refused before it is built (the caller checks its batch
/// size with [`check_batch_fits`]).
pub fn load_model(
    path: &Path,
    input_size: usize,
) -> Result<(Box<dyn Model>, ParamStore, ModelSpec)> {
    let (tensors, _) = checkpoint::read_tensors(path)?;
    let spec = ModelSpec::infer(&tensors).map_err(|e| anyhow!("{}: {e}", path.display()))?;
    if spec.num_classes.is_none() {
        bail!(
            "{}: has no classification head (predictions/kernel); it cannot classify",
            path.display()
        );
    }
    memory::check_fits_inference(&spec, 1, &path.display().to_string())?;
    let (mut model, mut store) = spec.build(input_size, 0)?;
    model
        .load_weights(&mut store, path, &[])
        .with_context(|| "loading the checkpoint")?;
    train::evaluate::check_finite_weights(&store)
        .map_err(|e| anyhow!("{}: {e}", path.display()))?;
    Ok((model, store, spec))
}

/// Refuses `batch` images per forward pass of the network `spec` of the
/// checkpoint `path` if they cannot fit in memory; `flag` names where the
/// batch size comes from.
pub fn check_batch_fits(spec: &ModelSpec, batch: usize, path: &Path, flag: &str) -> Result<()> {
    memory::check_fits_inference(
        spec,
        batch.max(1),
        &format!("{} with {flag}", path.display()),
    )
}
