//! A whole training run in a run directory, from its [`RunConfig`]: load
//! the data, build the model and the trainer (or restore them from the
//! checkpoint), assemble the callbacks the configuration asks for, call
//! [`fit`], and evaluate at the end. What the `train` command runs; a
//! program with its own data or model calls [`fit`] directly (see
//! `examples/finetune_folder.rs`).

use crate::data::{self, Dataset, Preprocess, IMAGE_SIDE};
use crate::evaluate::{self, EvalResult, Tta};
use crate::fit::{
    fit, Callback, Checkpoint, EarlyStopping, EndReason, FitData, FitSummary, Metric, MetricsFiles,
    ModelCheckpoint, Monitor, ReduceLrOnPlateau, Start, StepLog, BEST_FILE,
};
use crate::model_spec::ModelSpec;
use crate::run_config::{CallbackConfig, RunConfig};
use crate::run_state;
use crate::trainer::Trainer;
use anyhow::{anyhow, Result};
use autograd::ParamStore;
use nn::checkpoint::write_atomic;
use nn::Model;
use std::path::Path;
use std::sync::atomic::AtomicBool;

/// How a run ended.
pub struct RunOutcome {
    pub summary: FitSummary,
    /// The test evaluation of the final weights; `None` when the run was
    /// interrupted (it is to be resumed, not judged).
    pub final_test: Option<EvalResult>,
    /// The test-time augmentation `final_test` was evaluated with.
    pub tta: Tta,
    /// That of the final moving average of the weights (written to
    /// `ema.safetensors`), when the configuration keeps one; `None` also
    /// when interrupted.
    pub final_ema_test: Option<EvalResult>,
}

/// Builds the network `spec` describes, with its initial weights.
pub fn build_model(spec: &ModelSpec, seed: u64) -> Result<(Box<dyn Model>, ParamStore)> {
    Ok(spec.build(IMAGE_SIDE, seed)?)
}

/// A seeded random subset of `limit` images (all of them without a limit).
pub fn subset(data: Dataset, limit: Option<usize>, seed: u64) -> Dataset {
    match limit {
        Some(n) if n < data.len() => {
            let mut pick = data::epoch_permutation(data.len(), seed, u64::MAX)[..n].to_vec();
            pick.sort_unstable();
            data.subset(&pick)
        }
        _ => data,
    }
}

/// The training, validation and test sets of `config`: the seeded
/// `--train-limit` subset first, then `--val-split` images held out of it.
pub fn datasets(
    data: data::Cifar10,
    config: &RunConfig,
) -> Result<(Dataset, Option<Dataset>, Dataset)> {
    let train = subset(data.train, config.train_limit, config.seed);
    let test = subset(data.test, config.test_limit, config.seed ^ 1);
    if config.val_split == 0 {
        return Ok((train, None, test));
    }
    let (train, val) = train.hold_out(config.val_split, config.seed)?;
    Ok((train, Some(val), test))
}

/// Trains per `config` in `dir` (which must exist), from its checkpoint if
/// `resume`, showing progress through `display` and stopping (resumably)
/// when `stop` is raised. Raised while the data loads, it ends the run
/// with the error [`data::DataError::Stopped`] before anything is written.
/// Decoded image folders are cached in `cache` (the command line passes
/// [`data::default_cache_dir`]; `None` decodes every time, as tests do so as
/// not to write into the user's cache).
pub fn train(
    dir: &Path,
    config: &RunConfig,
    cache: Option<&Path>,
    resume: bool,
    display: &mut dyn Callback,
    stop: &AtomicBool,
) -> Result<RunOutcome> {
    // Process-wide (every GEMM below reads it); fp32 unless the run asks.
    tensor::gemm::set_precision(config.precision()?).map_err(|e| anyhow!("--precision: {e}"))?;
    println!(
        "gemm: {} ({} operands, f32 accumulation{})",
        tensor::gemm::kernel_name(),
        tensor::gemm::precision(),
        if config.precision == "auto" {
            "; --precision auto"
        } else {
            ""
        }
    );
    let preprocess = config.preprocess()?;
    let tta = config.tta()?;
    let freeze = config.freeze()?;
    let fit_config = config.fit_config()?;
    // A stop while decoding ends the run with `DataError::Stopped`
    // (nothing trained, nothing to save).
    let (cifar, report) = data::load_until(config.data.as_deref(), cache, stop)?;
    println!("{report}");
    let (train_set, val_set, test_set) = datasets(cifar, config)?;
    match &val_set {
        Some(v) => println!(
            "train images: {}, validation images: {}, test images: {}",
            train_set.len(),
            v.len(),
            test_set.len()
        ),
        None => println!(
            "train images: {}, test images: {}",
            train_set.len(),
            test_set.len()
        ),
    }

    // The class names, for `predict` on this run's checkpoints.
    let names = train_set.classes.join("\n") + "\n";
    write_atomic(&dir.join(run_state::CLASSES_FILE), names.as_bytes())?;
    let mut spec = config.model.clone();
    spec.num_classes = Some(train_set.classes.len());
    let (mut model, mut store) = build_model(&spec, config.seed)?;
    // On resume every parameter comes from the checkpoint instead.
    if let Some(w) = config.weights.as_ref().filter(|_| !resume) {
        let r = model.load_weights(&mut store, w, &["predictions/"])?;
        println!("batchnorm epsilon: {}", model.bn_epsilon());
        println!("loaded {} tensors from {}", r.loaded, w.display());
        if !r.left_at_init.is_empty() {
            println!("left at initialization: {}", r.left_at_init.join(", "));
        }
    }
    println!(
        "preprocessing: {preprocess} ({})",
        match preprocess {
            Preprocess::Unit if config.weights.is_some() && !resume =>
                "x / 255, as the tutorial does even with ImageNet weights; \
                 --preprocess caffe is Keras's own ImageNet preprocessing",
            Preprocess::Unit => "x / 255",
            Preprocess::Caffe => "Keras's ImageNet preprocessing: BGR, ImageNet mean subtracted",
        }
    );
    let frozen = nn::freeze::apply(&mut store, model.as_ref(), freeze);
    if frozen > 0 {
        println!("frozen weights: {frozen} ({})", config.freeze);
    }
    println!(
        "model: {} stages {:?} widths {:?}, {} parameters",
        spec.name(),
        spec.depths,
        spec.widths,
        store.num_scalars()
    );

    let steps_per_epoch = fit_config.sampler(train_set.len()).num_batches();
    let schedule = config.schedule(steps_per_epoch)?;
    let mut trainer = Trainer::new(model, store, config.optimizer()?, schedule);
    trainer.label_smoothing = config.label_smoothing;
    trainer.global_clipnorm = config.global_clipnorm;
    if config.head_lr_scale != 1.0 {
        trainer.scale_head_lr(config.head_lr_scale);
    }
    if let Some(ema) = config.ema {
        // From the initial (or `--weights`, frozen) parameters; a resume
        // replaces it by the checkpoint's average.
        trainer.enable_ema(ema)?;
    }
    let start = if resume {
        let start = Start::resume(dir, &mut trainer)?;
        let p = start.progress;
        println!(
            "resumed at epoch {} step {} (global step {})",
            p.epoch + 1,
            p.step,
            p.global_step
        );
        start
    } else {
        Start::fresh()
    };

    let mut keras = keras_callbacks(dir, &config.callbacks)?;
    let mut metrics = MetricsFiles::new(dir);
    let mut steps = StepLog::new(dir);
    let mut checkpoint = Checkpoint::new(dir);
    let mut callbacks: Vec<&mut dyn Callback> = vec![display, &mut metrics, &mut steps];
    callbacks.extend(keras.iter_mut().map(|c| c.as_mut() as &mut dyn Callback));
    // Last: the checkpoint records what the others did.
    callbacks.push(&mut checkpoint);
    let data = FitData {
        train: &train_set,
        val: val_set.as_ref(),
        test: Some(&test_set),
    };
    let summary = fit(
        &mut trainer,
        &data,
        &fit_config,
        start,
        &mut callbacks,
        stop,
    )?;
    if summary.reason == EndReason::Interrupted {
        return Ok(RunOutcome {
            summary,
            final_test: None,
            tta,
            final_ema_test: None,
        });
    }
    let Some((eval, ema_eval)) = final_evaluations(&trainer, &summary, &test_set, config, stop)?
    else {
        // Stopped during the final evaluation: the trained state is saved;
        // resuming evaluates again.
        return Ok(RunOutcome {
            summary,
            final_test: None,
            tta,
            final_ema_test: None,
        });
    };
    write_atomic(
        &dir.join("confusion.txt"),
        eval.confusion.render().as_bytes(),
    )?;
    run_state::write_ema(&dir.join(run_state::EMA_FILE), &trainer, summary.at)?;
    Ok(RunOutcome {
        summary,
        final_test: Some(eval),
        tta,
        final_ema_test: ema_eval,
    })
}

/// The test evaluations of the final weights and of their moving average
/// (if kept): the last epoch's where they stand, else evaluated now;
/// `None` if `stop` was raised meanwhile.
///
/// Evaluated again: restored best weights (new weights) and any test-time
/// augmentation, which the per-epoch evaluations leave out because it
/// multiplies their cost by its number of views. The average is not
/// touched by restored best weights.
fn final_evaluations(
    trainer: &Trainer,
    summary: &FitSummary,
    test: &Dataset,
    config: &RunConfig,
    stop: &AtomicBool,
) -> Result<Option<(EvalResult, Option<EvalResult>)>> {
    let (tta, preprocess, batch) = (config.tta()?, config.preprocess()?, config.eval_batch_size);
    let restored =
        config.callbacks.restore_best_weights && config.callbacks.early_stopping_patience.is_some();
    let eval = match (&summary.last_test, restored, tta) {
        (Some(e), false, Tta::None) => e.clone(),
        _ => match trainer.evaluate_tta(test, batch, preprocess, tta, stop) {
            Some(e) => e,
            None => return Ok(None),
        },
    };
    let model = trainer.model.as_ref();
    let ema = match (trainer.ema_store(), &summary.last_ema_test, tta) {
        (None, _, _) => None,
        (Some(_), Some(e), Tta::None) => Some(e.clone()),
        (Some(store), _, _) => {
            match evaluate::evaluate_tta(model, store, test, batch, preprocess, tta, stop) {
                Some(e) => Some(e),
                None => return Ok(None),
            }
        }
    };
    Ok(Some((eval, ema)))
}

/// ModelCheckpoint, EarlyStopping and ReduceLROnPlateau, as configured.
fn keras_callbacks(dir: &Path, c: &CallbackConfig) -> Result<Vec<Box<dyn Callback>>> {
    let metric: Metric = c.monitor.parse().map_err(|e| anyhow!("--monitor: {e}"))?;
    let mut callbacks: Vec<Box<dyn Callback>> = Vec::new();
    if c.save_best {
        callbacks.push(Box::new(ModelCheckpoint::best_only(
            dir.join(BEST_FILE),
            Monitor::new(metric),
        )));
    }
    if let Some(patience) = c.early_stopping_patience {
        let monitor = Monitor::new(metric).min_delta(c.early_stopping_min_delta);
        callbacks.push(Box::new(
            EarlyStopping::new(monitor, patience).restore_best_weights(c.restore_best_weights),
        ));
    }
    if let Some(patience) = c.reduce_lr_patience {
        let monitor = Monitor::new(metric).min_delta(c.reduce_lr_min_delta);
        callbacks.push(Box::new(
            ReduceLrOnPlateau::new(monitor, patience)
                .factor(c.reduce_lr_factor)
                .min_lr(c.reduce_lr_min_lr)
                .cooldown(c.reduce_lr_cooldown),
        ));
    }
    Ok(callbacks)
}
