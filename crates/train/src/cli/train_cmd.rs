//! The `train` command: turns the arguments into a [`RunConfig`] (or reads
//! the run's own for `--resume`) and validates all of it, claims and locks
//! the run directory ([`train::run_dir`]), installs the signal handler
//! (SIGINT, SIGTERM, SIGHUP) and the progress display, and runs
//! [`train::run::train`]. The loop, its callbacks and the run directory's
//! files are the library's.

use super::setup::in_pool;
use super::{Interrupted, TrainArgs};
use anyhow::{Context, Result};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use train::ema::EmaConfig;
use train::evaluate::Tta;
use train::fit::ProgressDisplay;
use train::model_spec::ModelSpec;
use train::recipe::{self, Overrides};
use train::run_config::{CallbackConfig, RunConfig};
use train::run_dir::{self, RunLock};
use train::run_state;
use train::weights_choice::{self, WeightsChoice};

/// The recipe's configuration with every option given on the command line
/// in place of its value ([`Overrides`]), and the weights to start from.
fn config_from_args(a: &TrainArgs) -> Result<(RunConfig, WeightsChoice)> {
    let recipe = a.recipe;
    let mut c = recipe.config();
    let mut o = Overrides { config: &mut c };
    o.set("epochs", |c| &mut c.epochs, a.epochs);
    o.set("batch_size", |c| &mut c.batch_size, a.batch_size);
    o.set("lr", |c| &mut c.lr, a.lr);
    if let (None, Some(b)) = (a.lr, a.batch_size) {
        // The recipe's rate at the batch size given (scaled, for SGD
        // recipes): derived, not given, so not recorded as overridden.
        o.config.lr = recipe.lr_at_batch(b);
    }
    o.set(
        "eval_batch_size",
        |c| &mut c.eval_batch_size,
        a.eval_batch_size,
    );
    o.set("optimizer", |c| &mut c.optimizer, a.optimizer.clone());
    o.set("momentum", |c| &mut c.momentum, a.momentum);
    o.set("nesterov", |c| &mut c.nesterov, a.nesterov);
    o.set("weight_decay", |c| &mut c.weight_decay, a.weight_decay);
    o.set(
        "trust_coefficient",
        |c| &mut c.trust_coefficient,
        a.trust_coefficient,
    );
    o.set("lr_schedule", |c| &mut c.lr_schedule, a.lr_schedule.clone());
    o.set("warmup_epochs", |c| &mut c.warmup_epochs, a.warmup_epochs);
    o.set("augment", |c| &mut c.augment, a.augment);
    o.set("pad_mode", |c| &mut c.pad_mode, a.pad_mode.clone());
    o.set("cutout", |c| &mut c.cutout, a.cutout);
    o.set("shuffle", |c| &mut c.shuffle, a.shuffle.clone());
    o.set(
        "label_smoothing",
        |c| &mut c.label_smoothing,
        a.label_smoothing,
    );
    o.set("head_lr_scale", |c| &mut c.head_lr_scale, a.head_lr_scale);
    o.set(
        "global_clipnorm",
        |c| &mut c.global_clipnorm,
        a.global_clipnorm.map(|c| (c != 0.0).then_some(c)),
    );
    o.set("tta", |c| &mut c.tta, a.tta.clone());
    let ema = match (a.ema_decay, a.ema_every) {
        (None, None) => None,
        (Some(0.0), _) => Some(None),
        (decay, every) => {
            let base = o.config.ema.unwrap_or_default();
            Some(Some(EmaConfig {
                decay: decay.unwrap_or(base.decay),
                every: every.unwrap_or(base.every),
            }))
        }
    };
    o.set("ema", |c| &mut c.ema, ema);
    o.set("freeze", |c| &mut c.freeze, a.freeze.clone());
    o.set(
        "train_limit",
        |c| &mut c.train_limit,
        a.train_limit.map(Some),
    );
    o.set("test_limit", |c| &mut c.test_limit, a.test_limit.map(Some));
    o.set("val_split", |c| &mut c.val_split, a.val_split);
    o.set("seed", |c| &mut c.seed, a.seed);
    o.set("preprocess", |c| &mut c.preprocess, a.preprocess.clone());
    o.set("precision", |c| &mut c.precision, a.precision.clone());
    // Stored absolute, so `--resume` works from any directory.
    let data = match &a.data {
        Some(d) => Some(std::path::absolute(d).with_context(|| format!("--data {}", d.display()))?),
        None => None,
    };
    o.set("data", |c| &mut c.data, data.map(Some));
    // Another architecture keeps the recipe's batchnorm momentum.
    let momentum = o.config.model.bn_momentum;
    let model = a.model.clone().map(|m| ModelSpec {
        bn_momentum: momentum,
        ..m
    });
    o.set("model", |c| &mut c.model, model);
    o.set("model", |c| &mut c.model.depths, a.depths.clone());
    o.set("model", |c| &mut c.model.widths, a.widths.clone());
    o.set("model", |c| &mut c.model.stem_filters, a.stem_filters);
    o.set("model", |c| &mut c.model.bn_momentum, a.bn_momentum);
    let unbiased = a.unbiased_moving_variance.then_some(true);
    o.set("model", |c| &mut c.model.unbiased_moving_variance, unbiased);
    c.overridden.dedup();
    c.model.num_classes = Some(10);
    c.callbacks = CallbackConfig {
        monitor: a.monitor.clone(),
        save_best: a.save_best,
        early_stopping_patience: a.early_stopping_patience,
        early_stopping_min_delta: a.early_stopping_min_delta,
        restore_best_weights: a.restore_best_weights,
        reduce_lr_patience: a.reduce_lr_patience,
        reduce_lr_factor: a.reduce_lr_factor,
        reduce_lr_min_lr: a.reduce_lr_min_lr,
        ..CallbackConfig::default()
    };
    let weights = a.weights.clone().unwrap_or(recipe.weights());
    Ok((c, weights))
}

pub fn run(a: TrainArgs) -> Result<()> {
    in_pool(a.threads, || run_in_pool(a))
}

fn run_in_pool(a: TrainArgs) -> Result<()> {
    // Every option is checked before a directory is created or data loaded.
    let config = match &a.resume {
        Some(dir) => {
            let mut c = run_state::read_config(dir)?;
            if let Some(e) = a.epochs {
                c.epochs = e;
            }
            c
        }
        None => {
            let (config, choice) = config_from_args(&a)?;
            // Checked before the weights are looked up (or fetched).
            config.validate()?;
            let config = RunConfig {
                weights: weights_choice::resolve(&choice, &config.model)?,
                ..config
            };
            print!("{}", recipe::describe(&config));
            println!("{}", a.recipe.lr_statement(config.lr, config.batch_size));
            config
        }
    };
    config.validate()?;
    match &a.resume {
        Some(dir) => {
            let _lock = RunLock::acquire(dir)?;
            let original = run_state::read_config(dir)?;
            run_state::write_config(dir, &config)?;
            train_into(&a, dir, &config, true).map_err(|e| left_as_it_was(e, dir, &original))
        }
        None => {
            let run = run_dir::claim_fresh(a.out.as_deref(), a.overwrite)?;
            let result = run_state::write_config(&run.dir, &config)
                .and_then(|()| train_into(&a, &run.dir, &config, false));
            let saved =
                |e: &anyhow::Error| e.downcast_ref::<Interrupted>().is_some_and(|i| i.saved);
            if result.as_ref().is_err_and(|e| !saved(e)) {
                // A run refused, failed or stopped before its first
                // checkpoint leaves nothing.
                run.discard_if_unused(&[run_state::CONFIG_FILE, run_state::CLASSES_FILE]);
            }
            result
        }
    }
}

/// A resumed run stopped before it trained (while loading its data): its
/// configuration is written back as it was (not even an extended
/// `--epochs` recorded), and the message says how to continue. Any other
/// error is returned as it is.
fn left_as_it_was(e: anyhow::Error, dir: &Path, original: &RunConfig) -> anyhow::Error {
    match e.downcast::<Interrupted>() {
        Ok(Interrupted {
            resume_hint,
            saved: false,
        }) => {
            if let Err(e) = run_state::write_config(dir, original) {
                return e;
            }
            Interrupted {
                resume_hint: format!(
                    "{resume_hint}; the run is as it was: continue with --resume {}",
                    dir.display()
                ),
                saved: false,
            }
            .into()
        }
        Ok(saved) => saved.into(),
        Err(e) => e,
    }
}

/// Whether `e` is the data load's answer to a raised stop flag.
fn stopped_loading(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        matches!(
            c.downcast_ref::<train::data::DataError>(),
            Some(train::data::DataError::Stopped)
        )
    })
}

/// Trains into the claimed (locked) run directory `dir`.
fn train_into(a: &TrainArgs, dir: &Path, config: &RunConfig, resume: bool) -> Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        // Ctrl-C, SIGTERM (docker stop, systemd, SLURM) and SIGHUP finish
        // the current step (or evaluation batch), save and exit 130; a
        // second one exits at once (the last saved checkpoint stays).
        let _ = ctrlc::set_handler(move || {
            if stop.swap(true, Ordering::SeqCst) {
                std::process::exit(i32::from(Interrupted::EXIT_CODE));
            }
            eprintln!(
                "\ninterrupted: finishing the current step, then saving \
                 (while loading data: stopping at once, nothing to save)"
            );
        });
    }
    println!("run directory: {}", dir.display());
    let mut display = if a.quiet {
        ProgressDisplay::epochs_only()
    } else {
        ProgressDisplay::auto()
    };

    let cache = train::data::default_cache_dir();
    let outcome = match train::run::train(dir, config, Some(&cache), resume, &mut display, &stop) {
        Err(e) if stopped_loading(&e) => {
            return Err(Interrupted {
                resume_hint: e.to_string(),
                saved: false,
            }
            .into())
        }
        outcome => outcome?,
    };
    let summary = &outcome.summary;
    // No final evaluation means the run was interrupted, to be resumed.
    let Some(eval) = outcome.final_test else {
        return Err(Interrupted {
            resume_hint: format!(
                "saved at epoch {} step {}; continue with --resume {}",
                summary.at.epoch + 1,
                summary.at.step,
                dir.display()
            ),
            saved: true,
        }
        .into());
    };
    println!("\n{}", eval.confusion.render());
    println!(
        "training: {:.1} images/s (last epoch); evaluation: {:.1} images/s",
        summary.train_images_per_s,
        eval.images as f64 / eval.seconds.max(1e-9)
    );
    let with = match outcome.tta {
        Tta::None => String::new(),
        tta => format!(" ({tta} test-time augmentation)"),
    };
    if let Some(ema) = &outcome.final_ema_test {
        println!(
            "EMA weights (ema.safetensors): test loss {:.4}, test accuracy {:.4}{with}",
            ema.loss, ema.accuracy
        );
    }
    println!("Test loss: {:.4}{with}", eval.loss);
    println!("Test accuracy: {:.4}{with}", eval.accuracy);
    Ok(())
}
