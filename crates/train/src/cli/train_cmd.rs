//! The `train` command: the fine-tuning loop with progress bars, per-epoch
//! evaluation, metrics, checkpoints, resume and Ctrl-C handling.

use super::setup::{
    build_optimizer, build_schedule, in_pool, parse_freeze, parse_preprocess, subset,
};
use super::TrainArgs;
use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tensor::Tensor;
use train::data::{self, Augment, Preprocess, Sampler, IMAGE_SIDE};
use train::metrics::Meter;
use train::model_spec::ModelSpec;
use train::report::{EpochRecord, MetricsLog};
use train::run_config::RunConfig;
use train::run_state::{self, EpochTally, Progress};
use train::trainer::Trainer;

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
        seed: a.seed,
        preprocess: a.preprocess.clone(),
        weights: a.weights.clone(),
        data: a.data.clone(),
        model,
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
        None => (
            a.out.clone().unwrap_or_else(default_run_dir),
            config_from_args(&a),
        ),
    };
    if config.batch_size == 0 || config.eval_batch_size == 0 {
        bail!("batch sizes must be positive");
    }
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("creating run directory {}", dir.display()))?;
    run_state::write_config(&dir, &config)?;
    println!("run directory: {}", dir.display());
    train(&dir, &config, a.resume.is_some(), a.quiet)
}

fn bar_style() -> ProgressStyle {
    ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg} ETA {eta}")
        .expect("valid template")
        .progress_chars("=> ")
}

/// Trains per `config` in `dir`, resuming from its checkpoint if `resume`.
pub fn train(dir: &Path, config: &RunConfig, resume: bool, quiet: bool) -> Result<()> {
    let preprocess = parse_preprocess(&config.preprocess)?;
    let freeze = parse_freeze(&config.freeze)?;
    let (cifar, report) = data::load(config.data.as_deref(), Some(&data::default_cache_dir()))?;
    println!("{report}");
    let train_set = subset(cifar.train, config.train_limit, config.seed);
    let test_set = subset(cifar.test, config.test_limit, config.seed ^ 1);
    println!(
        "train images: {}, test images: {}",
        train_set.len(),
        test_set.len()
    );

    // The class names, for `predict` on this run's checkpoints.
    let names = train_set.classes.join("\n") + "\n";
    train::checkpoint_io::write_atomic(&dir.join(run_state::CLASSES_FILE), names.as_bytes())?;
    let mut spec = config.model.clone();
    spec.num_classes = Some(train_set.classes.len());
    let (mut model, mut store) = spec.build(IMAGE_SIDE, config.seed)?;
    // On resume every parameter comes from the checkpoint instead.
    if let Some(w) = config.weights.as_ref().filter(|_| !resume) {
        let r = model.load_weights(&mut store, w, &["predictions/"])?;
        println!("batchnorm epsilon: {}", model.bn_epsilon());
        println!("loaded {} tensors from {}", r.loaded, w.display());
        if !r.left_at_init.is_empty() {
            println!("left at initialization: {}", r.left_at_init.join(", "));
        }
        if preprocess == Preprocess::Unit {
            eprintln!(
                "warning: pretrained weights with --preprocess unit; Keras's ImageNet weights expect --preprocess caffe"
            );
        }
    }
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

    let sampler = Sampler::new(train_set.len(), config.batch_size, config.seed);
    let steps_per_epoch = sampler.num_batches();
    let schedule = build_schedule(config, steps_per_epoch)?;
    let mut trainer = Trainer::new(model, store, build_optimizer(config)?, schedule);
    let mut progress = Progress::default();
    if resume {
        progress = run_state::resume(dir, &mut trainer)?;
        println!(
            "resumed at epoch {} step {} (global step {})",
            progress.epoch + 1,
            progress.step,
            progress.global_step
        );
    }
    let mut log = MetricsLog::read_dir(dir)?;

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

    let mut last_eval = None;
    let mut train_images_per_s = 0.0;
    let mut labels = Vec::new();
    for epoch in progress.epoch..config.epochs {
        let started = Instant::now();
        let batches = sampler.batches(epoch as u64);
        let augment = config
            .augment
            .then(|| Augment::standard(config.seed).with_epoch(epoch as u64));
        // A live bar on a terminal; into a log file, a line every tenth of an epoch.
        let live = !quiet && std::io::stderr().is_terminal();
        let bar = if live {
            ProgressBar::new(batches.len() as u64)
        } else {
            ProgressBar::hidden()
        };
        let log_every = (batches.len() / 10).max(1);
        bar.set_style(bar_style());
        bar.set_prefix(format!("epoch {}/{}", epoch + 1, config.epochs));
        let start_step = if epoch == progress.epoch {
            progress.step
        } else {
            0
        };
        bar.set_position(start_step as u64);
        let mut meter = Meter::new();
        if epoch == progress.epoch && progress.tally.seen > 0 {
            // The steps of this epoch taken before the run was resumed.
            let t = progress.tally;
            meter.add_counts(
                t.loss_sum / t.seen as f64,
                t.correct as usize,
                t.seen as usize,
            );
        }
        let mut images = 0usize;
        let mut last_lr = 0.0;
        for (step, indices) in batches.iter().enumerate().skip(start_step) {
            // A pool-backed tensor: its buffer is the one the previous
            // step's batch gave back.
            let mut x = Tensor::zeros(&[indices.len(), IMAGE_SIDE, IMAGE_SIDE, 3]);
            labels.resize(indices.len(), 0);
            train_set.fill_batch(indices, preprocess, augment.as_ref(), x.data_mut());
            train_set.fill_labels(indices, &mut labels);
            let s = trainer.train_step(x, &labels);
            if !s.loss.is_finite() {
                bail!(
                    "loss became {} at epoch {} step {}: lower --lr?",
                    s.loss,
                    epoch + 1,
                    step
                );
            }
            meter.add_counts(s.loss as f64, s.correct, indices.len());
            images += indices.len();
            last_lr = s.lr;
            let rate = images as f64 / started.elapsed().as_secs_f64();
            let status = format!(
                "loss {:.4} acc {:.4} {:.0} img/s",
                meter.loss(),
                meter.accuracy(),
                rate
            );
            if !live && !quiet && (step + 1) % log_every == 0 {
                println!(
                    "epoch {}/{} step {}/{}: {status}",
                    epoch + 1,
                    config.epochs,
                    step + 1,
                    batches.len()
                );
            }
            bar.set_message(status);
            bar.inc(1);
            if stop.load(Ordering::SeqCst) {
                bar.abandon();
                let at = Progress {
                    epoch,
                    step: step + 1,
                    global_step: trainer.global_step,
                    tally: EpochTally {
                        loss_sum: meter.loss() * meter.count() as f64,
                        correct: (meter.accuracy() * meter.count() as f64).round() as u64,
                        seen: meter.count(),
                    },
                };
                run_state::save(dir, &trainer, at)?;
                println!(
                    "saved at epoch {} step {}; continue with --resume {}",
                    epoch + 1,
                    step + 1,
                    dir.display()
                );
                return Ok(());
            }
        }
        bar.finish_and_clear();
        let train_seconds = started.elapsed().as_secs_f64();
        train_images_per_s = images as f64 / train_seconds.max(1e-9);
        // Training and evaluation use buffers of different sizes: hand the
        // idle ones back to the system between the phases instead of keeping
        // both sets resident (a few page faults per epoch).
        tensor::buffer_pool::clear();
        let eval = trainer.evaluate(&test_set, config.eval_batch_size, preprocess);
        tensor::buffer_pool::clear();
        let record = EpochRecord {
            epoch: epoch + 1,
            lr: last_lr as f64,
            train_loss: meter.loss(),
            train_acc: meter.accuracy(),
            test_loss: Some(eval.loss),
            test_acc: Some(eval.accuracy),
            seconds: started.elapsed().as_secs_f64(),
        };
        println!(
            "epoch {}/{}: train loss {:.4} acc {:.4} | test loss {:.4} acc {:.4} | {:.1}s ({:.0} train img/s, {:.0} eval img/s)",
            epoch + 1,
            config.epochs,
            record.train_loss,
            record.train_acc,
            eval.loss,
            eval.accuracy,
            record.seconds,
            train_images_per_s,
            eval.images as f64 / eval.seconds.max(1e-9)
        );
        log.push(record);
        log.write_all(dir)?;
        let next = Progress {
            epoch: epoch + 1,
            step: 0,
            global_step: trainer.global_step,
            tally: EpochTally::default(),
        };
        run_state::save(dir, &trainer, next)?;
        last_eval = Some(eval);
    }

    let eval = match last_eval {
        Some(e) => e,
        None => trainer.evaluate(&test_set, config.eval_batch_size, preprocess),
    };
    let matrix = eval.confusion.render();
    println!("\n{matrix}");
    train::checkpoint_io::write_atomic(&dir.join("confusion.txt"), matrix.as_bytes())?;
    println!(
        "training: {:.1} images/s (last epoch); evaluation: {:.1} images/s",
        train_images_per_s,
        eval.images as f64 / eval.seconds.max(1e-9)
    );
    println!("Test loss: {:.4}", eval.loss);
    println!("Test accuracy: {:.4}", eval.accuracy);
    Ok(())
}
