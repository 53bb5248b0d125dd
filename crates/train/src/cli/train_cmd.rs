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
use train::fit::ProgressDisplay;
use train::model_spec::ModelSpec;
use train::run_config::{CallbackConfig, RunConfig};
use train::run_dir::{self, RunLock};
use train::run_state;
use train::weights_choice::{self, WeightsChoice};

fn config_from_args(a: &TrainArgs) -> Result<RunConfig> {
    let mut model = ModelSpec {
        num_classes: Some(10),
        ..a.model.clone()
    };
    if let Some(d) = &a.depths {
        model.depths = d.clone();
    }
    if let Some(w) = &a.widths {
        model.widths = w.clone();
    }
    if let Some(s) = a.stem_filters {
        model.stem_filters = s;
    }
    model.unbiased_moving_variance = a.unbiased_moving_variance;
    // Stored absolute, so `--resume` works from any directory.
    let data = match &a.data {
        Some(d) => Some(std::path::absolute(d).with_context(|| format!("--data {}", d.display()))?),
        None => None,
    };
    Ok(RunConfig {
        epochs: a.epochs.unwrap_or(10),
        batch_size: a.batch_size,
        eval_batch_size: a.eval_batch_size,
        lr: a.lr,
        optimizer: a.optimizer.clone(),
        momentum: a.momentum,
        nesterov: a.nesterov,
        weight_decay: a.weight_decay,
        lr_schedule: a.lr_schedule.clone(),
        warmup_epochs: a.warmup_epochs,
        augment: a.augment,
        freeze: a.freeze.clone(),
        train_limit: a.train_limit,
        test_limit: a.test_limit,
        val_split: a.val_split,
        seed: a.seed,
        preprocess: a.preprocess.clone(),
        weights: None,
        data,
        model,
        callbacks: CallbackConfig {
            monitor: a.monitor.clone(),
            save_best: a.save_best,
            early_stopping_patience: a.early_stopping_patience,
            early_stopping_min_delta: a.early_stopping_min_delta,
            restore_best_weights: a.restore_best_weights,
            reduce_lr_patience: a.reduce_lr_patience,
            reduce_lr_factor: a.reduce_lr_factor,
            reduce_lr_min_lr: a.reduce_lr_min_lr,
            ..CallbackConfig::default()
        },
        ema: None,
    })
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
            let config = config_from_args(&a)?;
            // Checked before the weights are looked up (or fetched).
            config.validate()?;
            let choice = a.weights.clone().unwrap_or(WeightsChoice::Auto);
            RunConfig {
                weights: weights_choice::resolve(&choice, &config.model)?,
                ..config
            }
        }
    };
    config.validate()?;
    match &a.resume {
        Some(dir) => {
            let _lock = RunLock::acquire(dir)?;
            run_state::write_config(dir, &config)?;
            train_into(&a, dir, &config, true)
        }
        None => {
            let run = run_dir::claim_fresh(a.out.as_deref(), a.overwrite)?;
            let result = run_state::write_config(&run.dir, &config)
                .and_then(|()| train_into(&a, &run.dir, &config, false));
            if result.as_ref().is_err_and(|e| !e.is::<Interrupted>()) {
                // A run refused before its first checkpoint leaves nothing.
                run.discard_if_unused(&[run_state::CONFIG_FILE, run_state::CLASSES_FILE]);
            }
            result
        }
    }
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
            eprintln!("\ninterrupted: finishing the current step, then saving");
        });
    }
    println!("run directory: {}", dir.display());
    let mut display = if a.quiet {
        ProgressDisplay::epochs_only()
    } else {
        ProgressDisplay::auto()
    };

    let outcome = train::run::train(dir, config, resume, &mut display, &stop)?;
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
        }
        .into());
    };
    println!("\n{}", eval.confusion.render());
    println!(
        "training: {:.1} images/s (last epoch); evaluation: {:.1} images/s",
        summary.train_images_per_s,
        eval.images as f64 / eval.seconds.max(1e-9)
    );
    println!("Test loss: {:.4}", eval.loss);
    println!("Test accuracy: {:.4}", eval.accuracy);
    Ok(())
}
