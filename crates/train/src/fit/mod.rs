//! The training loop as a library call: [`fit`] runs the epochs and their
//! steps, evaluates after each epoch, and reports to [`Callback`]s, which do
//! everything else (display, metrics files, checkpoints, early stopping,
//! learning-rate reduction).
//!
//! Like Keras's `model.fit` (and burn's `Learner::fit`): the loop owns the
//! order of things and the callbacks own the side effects, so the command
//! line and a user's own program train through the same code.
//!
//! ```no_run
//! # fn demo(trainer: &mut train::trainer::Trainer, data: &train::data::Cifar10) -> anyhow::Result<()> {
//! use std::sync::atomic::AtomicBool;
//! use train::fit::{fit, EarlyStopping, FitConfig, FitData, Metric, Monitor, ProgressDisplay, Start};
//! let (train_set, val) = data.train.hold_out(5000, 0)?;
//! let config = FitConfig { epochs: 10, ..FitConfig::default() };
//! let data = FitData { train: &train_set, val: Some(&val), test: Some(&data.test) };
//! let mut display = ProgressDisplay::auto();
//! let mut early = EarlyStopping::new(Monitor::new(Metric::ValLoss), 3);
//! let stop = AtomicBool::new(false);
//! let summary = fit(trainer, &data, &config, Start::fresh(), &mut [&mut display, &mut early], &stop)?;
//! # Ok(()) }
//! ```
//!
//! Resuming is exact: data order and augmentation are functions of
//! (seed, epoch, index), the checkpoint holds the parameters, the optimizer
//! state, the moving average of the parameters (if the trainer keeps one,
//! [`Trainer::ema`]) and the [`Progress`], and the callbacks rebuild their
//! state from the epoch history ([`TrainBegin::history`]).
//!
//! A trainer with a moving average has it evaluated after every epoch too,
//! on the same sets: [`EpochLogs::ema_val`] / [`EpochLogs::ema_test`] and
//! the `ema_*` fields of the [`EpochRecord`].

mod callbacks;
mod checkpoint;
mod early_stopping;
mod metrics_files;
mod model_checkpoint;
mod monitor;
mod progress;
mod reduce_lr;
mod step_log;

pub use callbacks::Callback;
pub use checkpoint::Checkpoint;
pub use early_stopping::EarlyStopping;
pub use metrics_files::MetricsFiles;
pub use model_checkpoint::{ModelCheckpoint, BEST_FILE};
pub use monitor::{Metric, Mode, Monitor};
pub use progress::ProgressDisplay;
pub use reduce_lr::ReduceLrOnPlateau;
pub use step_log::{StepLog, STEPS_FILE};

use crate::data::{AugmentConfig, Dataset, Preprocess, Sampler, Shuffle, IMAGE_SIDE};
use crate::evaluate::EvalResult;
use crate::metrics::Meter;
use crate::report::{EpochRecord, MetricsLog};
use crate::run_state::{self, EpochTally, Progress};
use crate::trainer::{StepStats, Trainer};
use anyhow::{bail, Result};
use autograd::ParamStore;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;
use tensor::Tensor;

/// How to train: everything [`fit`] needs besides the trainer and the data.
#[derive(Clone, Debug, PartialEq)]
pub struct FitConfig {
    pub epochs: usize,
    pub batch_size: usize,
    /// Batch size of the evaluation passes (no gradients: can be larger).
    pub eval_batch_size: usize,
    /// Seeds the shuffle and the augmentation.
    pub seed: u64,
    /// Training-set augmentation (crop, flip, cutout), seeded by `seed`
    /// and the epoch; `None` for none. `Some(AugmentConfig::STANDARD)` is
    /// the classic 4-pixel zero-padding crop + flip.
    pub augment: Option<AugmentConfig>,
    /// The order of the training set each epoch.
    pub shuffle: Shuffle,
    pub preprocess: Preprocess,
}

impl Default for FitConfig {
    /// The recipe's: 10 epochs of batch 64, inputs in [0, 1], no
    /// augmentation, a new order each epoch.
    fn default() -> Self {
        FitConfig {
            epochs: 10,
            batch_size: 64,
            eval_batch_size: 256,
            seed: 0,
            augment: None,
            shuffle: Shuffle::Epoch,
            preprocess: Preprocess::Unit,
        }
    }
}

impl FitConfig {
    /// The sampler of the training set (what the schedule's
    /// `steps_per_epoch` must agree with).
    pub fn sampler(&self, train_len: usize) -> Sampler {
        Sampler {
            shuffle: self.shuffle,
            ..Sampler::new(train_len, self.batch_size, self.seed)
        }
    }
}

/// The images of a run.
#[derive(Clone, Copy, Debug)]
pub struct FitData<'a> {
    pub train: &'a Dataset,
    /// Evaluated after every epoch as `val_loss` / `val_accuracy`, the
    /// metrics callbacks may monitor.
    pub val: Option<&'a Dataset>,
    /// Evaluated after every epoch and reported, never monitored.
    pub test: Option<&'a Dataset>,
}

/// Where [`fit`] starts: at the beginning, or where a checkpoint left off.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Start {
    pub progress: Progress,
    /// The records of the epochs finished before `progress` (one per epoch,
    /// 1..=`progress.epoch`), from which callbacks rebuild their state.
    pub history: Vec<EpochRecord>,
}

impl Start {
    pub fn fresh() -> Self {
        Start::default()
    }

    /// Restores `trainer` from the newest complete checkpoint in the run
    /// directory `dir` ([`run_state::resume_run`]), with the epoch history
    /// saved in it (a run directory of the old layout: from its
    /// `metrics.json`). A run to be resumed trains with a [`Checkpoint`]
    /// callback in `dir`.
    pub fn resume(dir: &Path, trainer: &mut Trainer) -> Result<Self> {
        let resumed = run_state::resume_run(dir, trainer)?;
        let history = match resumed.history {
            Some(h) => h,
            None => MetricsLog::read_dir(dir)?.records,
        };
        Ok(Start {
            progress: resumed.progress,
            history,
        })
    }
}

/// What [`Callback::on_train_begin`] receives.
#[derive(Clone, Debug)]
pub struct TrainBegin<'a> {
    pub epochs: usize,
    pub steps_per_epoch: usize,
    /// Where the run starts (epoch 0 step 0 unless resumed).
    pub start: Progress,
    /// The epochs finished before `start`, in order (empty on a fresh run).
    pub history: &'a [EpochRecord],
    pub has_validation: bool,
    pub has_test: bool,
    /// Whether the trainer keeps a moving average of the weights.
    pub has_ema: bool,
}

/// What [`Callback::on_epoch_begin`] receives.
#[derive(Clone, Copy, Debug)]
pub struct EpochBegin {
    /// 0-based.
    pub epoch: usize,
    pub epochs: usize,
    pub steps: usize,
    /// The first step to take (not 0 in an epoch resumed in the middle).
    pub first_step: usize,
}

/// What [`Callback::on_train_batch_end`] receives after each step.
#[derive(Clone, Copy, Debug)]
pub struct BatchLogs {
    /// 0-based epoch and step within it.
    pub epoch: usize,
    pub step: usize,
    pub epochs: usize,
    pub steps: usize,
    /// This step's own loss, accuracy count, learning rate and timings.
    pub stats: StepStats,
    /// Mean loss and accuracy of the epoch's steps so far.
    pub loss: f64,
    pub accuracy: f64,
    /// Training images per second over the epoch so far.
    pub images_per_s: f64,
}

/// What [`Callback::on_epoch_end`] receives.
#[derive(Clone, Debug)]
pub struct EpochLogs {
    /// The epoch's metrics (1-based `epoch`), as written to `metrics.csv`.
    pub record: EpochRecord,
    pub epochs: usize,
    pub val: Option<EvalResult>,
    pub test: Option<EvalResult>,
    /// The same evaluations of the moving average of the weights, when
    /// the trainer keeps one ([`Trainer::ema`]).
    pub ema_val: Option<EvalResult>,
    pub ema_test: Option<EvalResult>,
    pub train_images_per_s: f64,
    /// Where the run is now: the checkpoint to save after this epoch.
    pub next: Progress,
}

/// Why [`fit`] returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndReason {
    /// Every epoch was trained.
    Completed,
    /// A callback ended the run after an epoch (e.g. [`EarlyStopping`]).
    StoppedEarly,
    /// The stop flag was raised (Ctrl-C) or a callback asked to stop after
    /// a step: the run ended in the middle of an epoch, and resuming from
    /// [`FitSummary::at`] continues it exactly.
    Interrupted,
}

/// What [`fit`] returns (and [`Callback::on_train_end`] receives).
#[derive(Clone, Debug)]
pub struct FitSummary {
    pub reason: EndReason,
    /// Where the run stopped: resuming from here continues it.
    pub at: Progress,
    /// Every finished epoch's record, those before a resume included
    /// (Keras's `History`).
    pub history: Vec<EpochRecord>,
    /// The test evaluation after the last epoch trained, if any.
    pub last_test: Option<EvalResult>,
    /// That of the moving average of the weights, if the trainer keeps one.
    pub last_ema_test: Option<EvalResult>,
    /// Training speed of the last epoch trained (0 if none was).
    pub train_images_per_s: f64,
}

/// Trains `trainer` on `data` from `start` for `config.epochs` epochs,
/// reporting to `callbacks` in order. `stop` is checked after every step
/// and between evaluation batches (set it from a Ctrl-C handler); the run
/// then ends [`EndReason::Interrupted`] (stopped during an evaluation, at
/// the epoch's last step: resuming evaluates the epoch).
///
/// The trainer's schedule should count `config.sampler(train.len())`'s
/// batches per epoch. Errors from a callback end the run with that error;
/// so does a non-finite loss.
pub fn fit(
    trainer: &mut Trainer,
    data: &FitData,
    config: &FitConfig,
    start: Start,
    callbacks: &mut [&mut dyn Callback],
    stop: &AtomicBool,
) -> Result<FitSummary> {
    if config.batch_size == 0 || config.eval_batch_size == 0 {
        bail!("batch sizes must be positive");
    }
    if data.train.is_empty() {
        bail!("the training set is empty");
    }
    let Start {
        progress: start,
        mut history,
    } = start;
    history.retain(|r| r.epoch <= start.epoch);
    check_history(&history, start.epoch)?;
    let sampler = config.sampler(data.train.len());
    let begin = TrainBegin {
        epochs: config.epochs,
        steps_per_epoch: sampler.num_batches(),
        start,
        history: &history,
        has_validation: data.val.is_some(),
        has_test: data.test.is_some(),
        has_ema: trainer.ema.is_some(),
    };
    for c in callbacks.iter_mut() {
        c.on_train_begin(trainer, &begin)?;
    }
    let mut run = Run {
        history,
        last_test: None,
        last_ema_test: None,
        train_images_per_s: 0.0,
    };
    if callbacks.iter().any(|c| c.should_stop()) {
        // E.g. an early-stopped run resumed with more epochs: the replayed
        // history says it stopped.
        return run.end(EndReason::StoppedEarly, start, trainer, callbacks);
    }

    let epochs = Epochs {
        data,
        config,
        sampler,
        stop,
    };
    for epoch in start.epoch..config.epochs {
        let started = Instant::now();
        let resumed = (epoch == start.epoch).then_some(start);
        let (meter, images, last_lr) = match epochs.train(epoch, resumed, trainer, callbacks)? {
            Steps::Done {
                meter,
                images,
                last_lr,
            } => (meter, images, last_lr),
            Steps::Interrupted(at) => {
                return run.end(EndReason::Interrupted, at, trainer, callbacks)
            }
        };
        let train_images_per_s = images as f64 / started.elapsed().as_secs_f64().max(1e-9);
        let Some(evals) = epochs.evaluate(trainer) else {
            // Stopped during the evaluation: save the epoch's trained state
            // without it; resuming skips the steps and evaluates.
            let at = Progress {
                epoch,
                step: epochs.sampler.num_batches(),
                global_step: trainer.global_step,
                tally: tally(&meter),
            };
            return run.end(EndReason::Interrupted, at, trainer, callbacks);
        };
        if let Some(warning) = check_evaluations(epoch, &meter, &evals.named())? {
            eprintln!("warning: {warning}");
        }
        let Evaluations {
            val,
            test,
            ema_val,
            ema_test,
        } = evals;
        let record = EpochRecord {
            epoch: epoch + 1,
            lr: last_lr as f64,
            train_loss: meter.loss(),
            train_acc: meter.accuracy(),
            val_loss: val.as_ref().map(|e| e.loss),
            val_acc: val.as_ref().map(|e| e.accuracy),
            test_loss: test.as_ref().map(|e| e.loss),
            test_acc: test.as_ref().map(|e| e.accuracy),
            seconds: started.elapsed().as_secs_f64(),
            ema_val_loss: ema_val.as_ref().map(|e| e.loss),
            ema_val_acc: ema_val.as_ref().map(|e| e.accuracy),
            ema_test_loss: ema_test.as_ref().map(|e| e.loss),
            ema_test_acc: ema_test.as_ref().map(|e| e.accuracy),
        };
        let next = Progress {
            epoch: epoch + 1,
            step: 0,
            global_step: trainer.global_step,
            tally: EpochTally::default(),
        };
        run.history.push(record.clone());
        let logs = EpochLogs {
            record,
            epochs: config.epochs,
            val,
            test,
            ema_val,
            ema_test,
            train_images_per_s,
            next,
        };
        for c in callbacks.iter_mut() {
            c.on_epoch_end(trainer, &logs)?;
        }
        run.last_test = logs.test;
        run.last_ema_test = logs.ema_test;
        run.train_images_per_s = train_images_per_s;
        if callbacks.iter().any(|c| c.should_stop()) {
            return run.end(EndReason::StoppedEarly, next, trainer, callbacks);
        }
    }
    let at = if start.epoch >= config.epochs {
        start // nothing was left to train
    } else {
        Progress {
            epoch: config.epochs,
            step: 0,
            global_step: trainer.global_step,
            tally: EpochTally::default(),
        }
    };
    run.end(EndReason::Completed, at, trainer, callbacks)
}

/// What stays fixed from epoch to epoch.
struct Epochs<'a> {
    data: &'a FitData<'a>,
    config: &'a FitConfig,
    sampler: Sampler,
    stop: &'a AtomicBool,
}

/// How an epoch's training steps ended.
enum Steps {
    /// All taken: the epoch's loss and accuracy (resumed steps included),
    /// the images trained on now, the last step's learning rate.
    Done {
        meter: Meter,
        images: usize,
        last_lr: f32,
    },
    /// Stopped after a step; resuming from here continues the epoch.
    Interrupted(Progress),
}

impl Epochs<'_> {
    /// The training steps of `epoch`, from where `resumed` left it if given.
    fn train(
        &self,
        epoch: usize,
        resumed: Option<Progress>,
        trainer: &mut Trainer,
        callbacks: &mut [&mut dyn Callback],
    ) -> Result<Steps> {
        let (config, train) = (self.config, self.data.train);
        let started = Instant::now();
        let batches = self.sampler.batches(epoch as u64);
        let augment = config
            .augment
            .map(|a| a.seeded(config.seed).with_epoch(epoch as u64));
        let first_step = resumed.map_or(0, |p| p.step);
        let begin = EpochBegin {
            epoch,
            epochs: config.epochs,
            steps: batches.len(),
            first_step,
        };
        for c in callbacks.iter_mut() {
            c.on_epoch_begin(trainer, &begin)?;
        }
        let mut meter = Meter::new();
        if let Some(t) = resumed.map(|p| p.tally).filter(|t| t.seen > 0) {
            // The steps of this epoch taken before the run was resumed.
            meter.add_counts(
                t.loss_sum / t.seen as f64,
                t.correct as usize,
                t.seen as usize,
            );
        }
        let mut images = 0usize;
        let mut last_lr = trainer.lr_at(trainer.global_step.saturating_sub(1));
        let mut labels = Vec::new();
        for (step, indices) in batches.iter().enumerate().skip(first_step) {
            // A pool-backed tensor: its buffer is the one the previous
            // step's batch gave back.
            let mut x = Tensor::zeros(&[indices.len(), IMAGE_SIDE, IMAGE_SIDE, 3]);
            labels.resize(indices.len(), 0);
            train.fill_batch(indices, config.preprocess, augment.as_ref(), x.data_mut());
            train.fill_labels(indices, &mut labels);
            let stats = trainer.train_step(x, &labels);
            if let Some(norm) = stats.grad_norm.filter(|n| !n.is_finite()) {
                bail!(
                    "the gradients' global norm became {norm} at epoch {} step {} (loss {}); \
                     the update was not applied: lower --lr? (the last checkpoint saved, if any, is kept)",
                    epoch + 1,
                    step,
                    stats.loss
                );
            }
            if !stats.loss.is_finite() {
                bail!(
                    "loss became {} at epoch {} step {}: lower --lr? (the last checkpoint saved, if any, is kept)",
                    stats.loss,
                    epoch + 1,
                    step
                );
            }
            // A finite loss with a non-finite statistic: the silent case.
            if let Some(id) = stats.non_finite_statistic {
                bail!(
                    "batchnorm statistic {} became non-finite at epoch {} step {} (loss {}): \
                     the layer's input overflowed f32; the update was not applied: lower --lr? \
                     (the last checkpoint saved, if any, is kept)",
                    trainer.store.get(id).name,
                    epoch + 1,
                    step,
                    stats.loss
                );
            }
            meter.add_counts(stats.loss as f64, stats.correct, indices.len());
            images += indices.len();
            last_lr = stats.lr;
            let logs = BatchLogs {
                epoch,
                step,
                epochs: config.epochs,
                steps: batches.len(),
                stats,
                loss: meter.loss(),
                accuracy: meter.accuracy(),
                images_per_s: images as f64 / started.elapsed().as_secs_f64(),
            };
            for c in callbacks.iter_mut() {
                c.on_train_batch_end(trainer, &logs)?;
            }
            if self.stop.load(Ordering::SeqCst) || callbacks.iter().any(|c| c.should_stop()) {
                return Ok(Steps::Interrupted(Progress {
                    epoch,
                    step: step + 1,
                    global_step: trainer.global_step,
                    tally: tally(&meter),
                }));
            }
        }
        Ok(Steps::Done {
            meter,
            images,
            last_lr,
        })
    }

    /// The validation and test passes after an epoch, of the trained
    /// weights and then of their moving average if the trainer keeps one;
    /// `None` if the stop flag was raised during them.
    fn evaluate(&self, trainer: &Trainer) -> Option<Evaluations> {
        crate::test_hook::pause(crate::test_hook::EVALUATION, self.stop);
        // Training and evaluation use buffers of different sizes: hand the
        // idle ones back to the system between the phases instead of keeping
        // both sets resident (a few page faults per epoch).
        tensor::buffer_pool::clear();
        let (batch, preprocess) = (self.config.eval_batch_size, self.config.preprocess);
        let pass = |store: Option<&ParamStore>, d: Option<&Dataset>| match (store, d) {
            (Some(store), Some(d)) => crate::evaluate::evaluate_until(
                trainer.model.as_ref(),
                store,
                d,
                batch,
                preprocess,
                self.stop,
            )
            .map(Some),
            _ => Some(None),
        };
        let all = || {
            let live = Some(&trainer.store);
            let ema = trainer.ema_store();
            Some(Evaluations {
                val: pass(live, self.data.val)?,
                test: pass(live, self.data.test)?,
                ema_val: pass(ema, self.data.val)?,
                ema_test: pass(ema, self.data.test)?,
            })
        };
        let evals = all();
        tensor::buffer_pool::clear();
        evals
    }
}

/// The evaluations after an epoch.
struct Evaluations {
    val: Option<EvalResult>,
    test: Option<EvalResult>,
    ema_val: Option<EvalResult>,
    ema_test: Option<EvalResult>,
}

impl Evaluations {
    /// Each with the name an error about it uses.
    fn named(&self) -> [(&'static str, Option<&EvalResult>); 4] {
        [
            ("validation", self.val.as_ref()),
            ("test", self.test.as_ref()),
            ("EMA validation", self.ema_val.as_ref()),
            ("EMA test", self.ema_test.as_ref()),
        ]
    }
}

/// What the loop accumulates for its [`FitSummary`].
struct Run {
    history: Vec<EpochRecord>,
    last_test: Option<EvalResult>,
    last_ema_test: Option<EvalResult>,
    train_images_per_s: f64,
}

impl Run {
    fn end(
        self,
        reason: EndReason,
        at: Progress,
        trainer: &mut Trainer,
        callbacks: &mut [&mut dyn Callback],
    ) -> Result<FitSummary> {
        let summary = FitSummary {
            reason,
            at,
            history: self.history,
            last_test: self.last_test,
            last_ema_test: self.last_ema_test,
            train_images_per_s: self.train_images_per_s,
        };
        for c in callbacks.iter_mut() {
            c.on_train_end(trainer, &summary)?;
        }
        Ok(summary)
    }
}

/// A training loss above this has diverged (cross-entropy starts near
/// ln(classes), a few units): warned about, as the run goes on uselessly.
const DIVERGED_LOSS: f64 = 1e4;

/// Ends the run on a non-finite loss of one of the `evals` (validation,
/// test, and those of the moving average; before the epoch's checkpoint,
/// so the last good one is kept); returns a warning for a diverged but
/// finite training loss.
fn check_evaluations(
    epoch: usize,
    train: &Meter,
    evals: &[(&str, Option<&EvalResult>)],
) -> Result<Option<String>> {
    for &(name, e) in evals {
        if let Some(loss) = e.map(|e| e.loss).filter(|l| !l.is_finite()) {
            bail!(
                "{name} loss became {loss} after epoch {}: the weights diverged (lower --lr?); \
                 the checkpoint of the previous epoch is kept",
                epoch + 1
            );
        }
    }
    let loss = train.loss();
    Ok((loss > DIVERGED_LOSS).then(|| {
        format!(
            "training loss {loss:.3e} at epoch {}: the run has diverged (lower --lr?)",
            epoch + 1
        )
    }))
}

/// The running totals a mid-epoch checkpoint keeps.
fn tally(meter: &Meter) -> EpochTally {
    EpochTally {
        loss_sum: meter.loss() * meter.count() as f64,
        correct: (meter.accuracy() * meter.count() as f64).round() as u64,
        seen: meter.count(),
    }
}

/// The history of a resumed run must hold every finished epoch, or the
/// callbacks would rebuild a state the run never had.
fn check_history(history: &[EpochRecord], finished: usize) -> Result<()> {
    let epochs: Vec<usize> = history.iter().map(|r| r.epoch).collect();
    if epochs != (1..=finished).collect::<Vec<_>>() {
        bail!(
            "the checkpoint is after epoch {finished} but the metrics log has epochs {epochs:?}: \
             the callbacks' state cannot be rebuilt (was metrics.json edited or lost?)"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::ConfusionMatrix;

    fn eval(loss: f64) -> EvalResult {
        EvalResult {
            loss,
            accuracy: 0.1,
            confusion: ConfusionMatrix::new(&["a".to_string(), "b".to_string()]),
            images: 2,
            seconds: 1.0,
        }
    }

    fn meter(loss: f64) -> Meter {
        let mut m = Meter::new();
        m.add_counts(loss, 1, 2);
        m
    }

    fn evals<'a>(
        val: Option<&'a EvalResult>,
        test: Option<&'a EvalResult>,
    ) -> [(&'static str, Option<&'a EvalResult>); 2] {
        [("validation", val), ("test", test)]
    }

    #[test]
    fn the_sampler_follows_the_shuffle_setting() {
        let config = |shuffle| FitConfig {
            batch_size: 4,
            seed: 6,
            shuffle,
            ..FitConfig::default()
        };
        let epoch = config(Shuffle::Epoch).sampler(30);
        assert_eq!(epoch, Sampler::new(30, 4, 6), "the default is unchanged");
        assert_ne!(epoch.batches(2), epoch.batches(0));
        let once = config(Shuffle::Once).sampler(30);
        assert_eq!(once.batches(2), epoch.batches(0));
        let none = config(Shuffle::None).sampler(30);
        assert_eq!(none.batches(2)[0], [0, 1, 2, 3]);
        assert_eq!(FitConfig::default().shuffle, Shuffle::Epoch);
        assert_eq!(FitConfig::default().augment, None);
    }

    #[test]
    fn a_nan_evaluation_ends_the_run_and_a_huge_loss_is_warned_about() {
        let ok = meter(2.3);
        assert_eq!(
            check_evaluations(0, &ok, &evals(Some(&eval(2.0)), None)).unwrap(),
            None
        );
        let e = check_evaluations(4, &ok, &evals(None, Some(&eval(f64::NAN))))
            .unwrap_err()
            .to_string();
        assert!(e.contains("test loss became NaN after epoch 5"), "{e}");
        let e = check_evaluations(0, &ok, &evals(Some(&eval(f64::INFINITY)), None))
            .unwrap_err()
            .to_string();
        assert!(e.contains("validation loss became inf"), "{e}");
        let nan = eval(f64::NAN);
        let e = check_evaluations(0, &ok, &[("EMA test", Some(&nan))])
            .unwrap_err()
            .to_string();
        assert!(e.contains("EMA test loss became NaN"), "{e}");
        let w = check_evaluations(1, &meter(1e19), &evals(None, Some(&eval(1e19)))).unwrap();
        assert!(w.is_some_and(|w| w.contains("1.000e19 at epoch 2")));
    }
}
