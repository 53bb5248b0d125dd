//! The `train` command: turns the arguments into a [`RunConfig`] (or reads
//! the run's own for `--resume`), installs the Ctrl-C handler and the
//! progress display, and runs [`train::run::train`]. The loop, its
//! callbacks and the run directory's files are the library's.

use super::setup::in_pool;
use super::TrainArgs;
use anyhow::{Context, Result};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use train::data;
use train::fit::ProgressDisplay;
use train::model_spec::ModelSpec;
use train::run_config::{CallbackConfig, RunConfig};
use train::run_state;
use train::weights_choice::{self, WeightsChoice};

fn config_from_args(a: &TrainArgs) -> RunConfig {
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
    RunConfig {
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
        data: a.data.clone(),
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
    }
}

fn default_run_dir() -> PathBuf {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    data::workspace_root()
        .join("runs")
        .join(format!("run-{secs}"))
}

pub fn run(a: TrainArgs) -> Result<()> {
    in_pool(a.threads, || run_in_pool(a))
}

fn run_in_pool(a: TrainArgs) -> Result<()> {
    let (dir, config) = match &a.resume {
        Some(dir) => {
            let mut c = run_state::read_config(dir)?;
            if let Some(e) = a.epochs {
                c.epochs = e;
            }
            (dir.clone(), c)
        }
        None => {
            let mut config = config_from_args(&a);
            let choice = a.weights.clone().unwrap_or(WeightsChoice::Auto);
            config.weights = weights_choice::resolve(&choice, &config.model)?;
            (a.out.clone().unwrap_or_else(default_run_dir), config)
        }
    };
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("creating run directory {}", dir.display()))?;
    run_state::write_config(&dir, &config)?;
    println!("run directory: {}", dir.display());

    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        // Ctrl-C finishes the current step, saves and exits; a second one kills.
        let _ = ctrlc::set_handler(move || {
            if stop.swap(true, Ordering::SeqCst) {
                std::process::exit(130);
            }
            eprintln!("\ninterrupted: finishing the current step, then saving");
        });
    }
    let mut display = if a.quiet {
        ProgressDisplay::epochs_only()
    } else {
        ProgressDisplay::auto()
    };

    let outcome = train::run::train(&dir, &config, a.resume.is_some(), &mut display, &stop)?;
    let summary = &outcome.summary;
    // No final evaluation means the run was interrupted, to be resumed.
    let Some(eval) = outcome.final_test else {
        println!(
            "saved at epoch {} step {}; continue with --resume {}",
            summary.at.epoch + 1,
            summary.at.step,
            dir.display()
        );
        return Ok(());
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
