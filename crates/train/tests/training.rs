//! The library's training loop ([`train::fit`]) and its callbacks, on
//! generated images: learning, exact resume through `fit`, each Keras-style
//! callback against a hand computation, the validation split. (Checkpoint
//! faults and old run directories: `checkpoint_faults.rs`.)

mod common;

use anyhow::Result;
use autograd::ParamStore;
use nn::ResNetConfig;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use train::data::{split_indices, Dataset};
use train::ema::EmaConfig;
use train::fit::{
    fit, Callback, EarlyStopping, EndReason, EpochLogs, FitConfig, FitData, Metric, MetricsFiles,
    ModelCheckpoint, Monitor, ReduceLrOnPlateau, Start, TrainBegin,
};
use train::optim::LrSchedule;
use train::report::EpochRecord;
use train::run_state::Progress;
use train::trainer::Trainer;

fn narrow(classes: usize, seed: u64) -> ResNetConfig {
    common::narrow_spec(Some(classes)).config(32, seed)
}

fn trainer_seeded(lr: f32, classes: usize, seed: u64) -> Trainer {
    common::narrow_adam(classes, seed, lr)
}

fn trainer(lr: f32) -> Trainer {
    trainer_seeded(lr, 4, 7)
}

fn tmp_dir(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn params_bits(store: &ParamStore) -> Vec<(String, Vec<u32>)> {
    store
        .iter()
        .map(|(_, p)| {
            (
                p.name.clone(),
                p.value.data().iter().map(|v| v.to_bits()).collect(),
            )
        })
        .collect()
}

fn config(epochs: usize, batch_size: usize) -> FitConfig {
    FitConfig {
        epochs,
        batch_size,
        eval_batch_size: 64,
        seed: 3,
        ..FitConfig::default()
    }
}

fn no_stop() -> AtomicBool {
    AtomicBool::new(false)
}

#[test]
fn fit_learns_generated_classes_and_reports_validation() {
    let all = common::dataset(240, 4, 11);
    let (train_set, val) = all.hold_out(48, 5).unwrap();
    let test = common::dataset(64, 4, 12);
    let mut t = trainer(2e-3);
    let data = FitData {
        train: &train_set,
        val: Some(&val),
        test: Some(&test),
    };
    let summary = fit(
        &mut t,
        &data,
        &config(6, 32),
        Start::fresh(),
        &mut [],
        &no_stop(),
    )
    .unwrap();
    assert_eq!(summary.reason, EndReason::Completed);
    assert_eq!(summary.at.epoch, 6);
    let h = &summary.history;
    assert_eq!(
        h.iter().map(|r| r.epoch).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5, 6]
    );
    assert!(h
        .iter()
        .all(|r| r.val_loss.is_some() && r.test_acc.is_some()));
    let (first, last) = (&h[0], &h[h.len() - 1]);
    assert!(last.train_loss < 0.7 * first.train_loss, "{h:#?}");
    // Chance is 0.25 on these 4 classes.
    assert!(last.train_acc > 0.6, "{h:#?}");
    assert_eq!(
        summary.last_test.as_ref().unwrap().accuracy,
        last.test_acc.unwrap()
    );
}

/// Raises the stop flag's equivalent after global step `at`.
struct StopAtStep(u64, bool);

impl Callback for StopAtStep {
    fn on_train_batch_end(
        &mut self,
        trainer: &mut Trainer,
        _: &train::fit::BatchLogs,
    ) -> Result<()> {
        self.1 = trainer.global_step >= self.0;
        Ok(())
    }
    fn should_stop(&self) -> bool {
        self.1
    }
}

/// A ReduceLROnPlateau that reduces after every epoch but the first (no
/// change is an improvement of more than 10), so the learning rate the
/// resumed steps use depends on the replayed history.
fn always_reduce() -> ReduceLrOnPlateau {
    ReduceLrOnPlateau::new(Monitor::new(Metric::ValLoss).min_delta(10.0), 1).factor(0.5)
}

/// Averaged every third step, so the run is interrupted (after step 10)
/// between two updates and the resumed run must count them on the global
/// step.
const EMA: EmaConfig = EmaConfig {
    decay: 0.9,
    every: 3,
};

fn ema_bits(t: &Trainer) -> Vec<(String, Vec<u32>)> {
    params_bits(t.ema_store().expect("the trainer keeps an average"))
}

#[test]
fn resume_through_fit_gives_the_same_parameters_as_a_straight_run() {
    let all = common::dataset(72, 4, 21);
    let (train_set, val) = all.hold_out(16, 3).unwrap();
    let data = FitData {
        train: &train_set,
        val: Some(&val),
        test: None,
    };
    let cfg = config(3, 16); // 56 images: 4 steps per epoch
    let schedule = LrSchedule {
        warmup_steps: 3,
        ..LrSchedule::constant(1e-3)
    };

    let mut straight = trainer(1e-3);
    straight.schedule = schedule.clone();
    straight.enable_ema(EMA).unwrap();
    let mut reduce = always_reduce();
    let full = fit(
        &mut straight,
        &data,
        &cfg,
        Start::fresh(),
        &mut [&mut reduce],
        &no_stop(),
    )
    .unwrap();
    assert_eq!(reduce.reductions(), [2, 3]);

    // Interrupted in the middle of epoch 3 (after step 10 of 12), after the
    // reduction at the end of epoch 2.
    let dir = tmp_dir("fit_resume");
    let mut first = trainer(1e-3);
    first.schedule = schedule.clone();
    first.enable_ema(EMA).unwrap();
    let mut reduce = always_reduce();
    let mut metrics = MetricsFiles::new(&dir);
    let mut stopper = StopAtStep(10, false);
    let mut ckpt = train::fit::Checkpoint::new(&dir);
    let part = fit(
        &mut first,
        &data,
        &cfg,
        Start::fresh(),
        &mut [&mut reduce, &mut metrics, &mut stopper, &mut ckpt],
        &no_stop(),
    )
    .unwrap();
    assert_eq!(part.reason, EndReason::Interrupted);
    assert_eq!(
        (part.at.epoch, part.at.step, part.at.global_step),
        (2, 2, 10)
    );
    drop(first);

    // A differently seeded model: everything must come from the run directory.
    let mut resumed = trainer_seeded(1e-3, 4, 99);
    resumed.schedule = schedule;
    resumed.enable_ema(EMA).unwrap();
    let start = Start::resume(&dir, &mut resumed).unwrap();
    assert_eq!(start.progress, part.at);
    assert_eq!(start.history.len(), 2);
    let mut reduce = always_reduce();
    let mut metrics = MetricsFiles::new(&dir);
    let rest = fit(
        &mut resumed,
        &data,
        &cfg,
        start,
        &mut [&mut reduce, &mut metrics],
        &no_stop(),
    )
    .unwrap();
    assert_eq!(rest.reason, EndReason::Completed);
    assert_eq!(
        reduce.reductions(),
        [2, 3],
        "replayed, then reduced after 3"
    );
    assert_eq!(resumed.lr_scale, straight.lr_scale);
    assert_eq!(resumed.lr_scale, 0.25);
    // Same kernels, same thread count, same order of operations: bit-identical.
    assert_eq!(params_bits(&straight.store), params_bits(&resumed.store));
    // And so is the average, updated after steps 3, 6, 9 | 12.
    assert_eq!(straight.ema.as_ref().unwrap().updates(), 4);
    assert_eq!(resumed.ema.as_ref().unwrap().updates(), 4);
    assert_eq!(ema_bits(&straight), ema_bits(&resumed));
    assert_ne!(
        ema_bits(&straight),
        params_bits(&straight.store),
        "the average is not the weights"
    );
    // The resumed epoch reports all of its steps, not only those after the resume.
    let (a, b) = (&full.history[2], &rest.history[2]);
    assert!((a.train_loss - b.train_loss).abs() < 1e-12, "{a:?} {b:?}");
    assert_eq!(a.train_acc, b.train_acc);
    assert_eq!(a.val_loss, b.val_loss);
    for (a, b) in full.history.iter().zip(&rest.history) {
        assert!(a.ema_val_loss.is_some() && a.ema_val_acc.is_some(), "{a:?}");
        assert_eq!(a.test_acc, None, "no test set");
        assert_eq!(a.ema_test_acc, None, "no test set");
        assert_eq!(
            (a.ema_val_loss, a.ema_val_acc),
            (b.ema_val_loss, b.ema_val_acc)
        );
    }
    assert_ne!(
        b.ema_val_loss, b.val_loss,
        "the average is evaluated, not the weights"
    );
    let log = train::report::MetricsLog::read_dir(&dir).unwrap();
    assert_eq!(log.records.len(), 3);
    assert_eq!(log.records[2].ema_val_loss, b.ema_val_loss);
    let csv = std::fs::read_to_string(dir.join(train::report::CSV_FILE)).unwrap();
    assert!(
        csv.lines()
            .next()
            .unwrap()
            .ends_with(",seconds,ema_val_loss,ema_val_acc,ema_test_loss,ema_test_acc"),
        "{csv}"
    );

    // The evaluation of the average is that of a store built by hand from
    // the averaged tensors, by name.
    let mut by_hand = resumed.store.clone();
    for (_, p) in resumed.ema_store().unwrap().iter() {
        let id = by_hand.id(&p.name).unwrap();
        by_hand.set(id, p.value.clone()).unwrap();
    }
    let e = train::evaluate::evaluate(resumed.model.as_ref(), &by_hand, &val, 64, cfg.preprocess);
    assert_eq!(Some(e.loss), b.ema_val_loss);
    assert_eq!(Some(e.accuracy), b.ema_val_acc);
}

#[test]
fn fit_evaluates_the_average_on_validation_and_test_and_reports_it() {
    let all = common::dataset(48, 4, 31);
    let (train_set, val) = all.hold_out(16, 3).unwrap();
    let test = common::dataset(24, 4, 32);
    let data = FitData {
        train: &train_set,
        val: Some(&val),
        test: Some(&test),
    };
    let mut t = trainer(1e-3);
    t.enable_ema(EmaConfig {
        decay: 0.99,
        every: 1,
    })
    .unwrap();
    struct Seen(Vec<(Option<f64>, Option<f64>)>);
    impl Callback for Seen {
        fn on_epoch_end(&mut self, _: &mut Trainer, logs: &EpochLogs) -> Result<()> {
            let acc = |e: &Option<train::evaluate::EvalResult>| e.as_ref().map(|e| e.accuracy);
            self.0.push((acc(&logs.ema_val), acc(&logs.ema_test)));
            Ok(())
        }
    }
    let mut seen = Seen(Vec::new());
    let s = fit(
        &mut t,
        &data,
        &config(2, 16),
        Start::fresh(),
        &mut [&mut seen],
        &no_stop(),
    )
    .unwrap();
    assert_eq!(t.ema.as_ref().unwrap().updates(), t.global_step);
    for (r, logged) in s.history.iter().zip(&seen.0) {
        assert_eq!((r.ema_val_acc, r.ema_test_acc), *logged);
        assert!(
            r.ema_val_loss.is_some() && r.ema_test_loss.is_some(),
            "{r:?}"
        );
    }
    let last = s.last_ema_test.as_ref().unwrap();
    assert_eq!(Some(last.loss), s.history[1].ema_test_loss);
    let direct = train::evaluate::evaluate(
        t.model.as_ref(),
        t.ema_store().unwrap(),
        &test,
        64,
        config(2, 16).preprocess,
    );
    assert_eq!(direct.loss, last.loss);
    assert_eq!(direct.accuracy, last.accuracy);
    // Without an average nothing of it is reported.
    let mut plain = trainer(1e-3);
    let s = fit(
        &mut plain,
        &data,
        &config(1, 16),
        Start::fresh(),
        &mut [],
        &no_stop(),
    )
    .unwrap();
    assert!(!s.history[0].has_ema() && s.last_ema_test.is_none());
}

#[test]
fn a_resume_without_the_epoch_history_is_refused() {
    let data = common::dataset(16, 4, 1);
    let start = Start {
        progress: Progress {
            epoch: 2,
            ..Progress::default()
        },
        history: Vec::new(),
    };
    let d = FitData {
        train: &data,
        val: None,
        test: None,
    };
    let err = fit(
        &mut trainer(1e-3),
        &d,
        &config(3, 8),
        start,
        &mut [],
        &no_stop(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("after epoch 2") && err.contains("metrics"),
        "{err}"
    );
}

#[test]
fn the_stop_flag_interrupts_after_the_current_step() {
    let data = common::dataset(32, 4, 1);
    let d = FitData {
        train: &data,
        val: None,
        test: None,
    };
    let stop = AtomicBool::new(true);
    let mut t = trainer(1e-3);
    let s = fit(&mut t, &d, &config(2, 8), Start::fresh(), &mut [], &stop).unwrap();
    assert_eq!(s.reason, EndReason::Interrupted);
    assert_eq!((s.at.epoch, s.at.step, s.at.global_step), (0, 1, 1));
    assert_eq!(s.at.tally.seen, 8);
    assert!(s.history.is_empty());
}

#[test]
fn a_non_finite_loss_is_an_error_naming_the_step() {
    let data = common::dataset(32, 4, 1);
    let d = FitData {
        train: &data,
        val: None,
        test: None,
    };
    let err = fit(
        &mut trainer(1e30),
        &d,
        &config(3, 8),
        Start::fresh(),
        &mut [],
        &no_stop(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("loss became") && err.contains("step"), "{err}");
}

/// `Trainer::label_smoothing` is what `train_step` optimizes and reports:
/// the smoothed cross-entropy of the batch's training-mode logits.
#[test]
fn train_step_optimizes_the_label_smoothed_loss() {
    let mut t = trainer(0.01);
    assert_eq!(t.label_smoothing, 0.0);
    t.label_smoothing = 0.2;
    let labels = [0, 1, 2, 3];
    let x = tensor::Tensor::from_vec(
        &[4, 32, 32, 3],
        (0..4 * 32 * 32 * 3)
            .map(|i| ((i * 37) % 101) as f32 / 50.0 - 1.0)
            .collect(),
    )
    .unwrap();
    let logits = {
        let mut g = autograd::Graph::new(&t.store, autograd::Mode::TRAIN);
        let xv = g.input(x.clone());
        let out = t.model.forward(&mut g, xv).unwrap();
        g.value(out.logits.unwrap()).clone()
    };
    let smoothed = autograd::ops::smoothed_cross_entropy(&logits, &labels, 0.2) as f32;
    let plain = autograd::ops::cross_entropy(&logits, &labels) as f32;
    assert_ne!(smoothed, plain);
    let stats = t.train_step(x, &labels);
    assert_eq!(
        stats.loss.to_bits(),
        smoothed.to_bits(),
        "{} vs {smoothed}",
        stats.loss
    );
}

#[test]
fn the_head_learns_at_its_scaled_rate_and_nothing_else_changes() {
    // Plain SGD (no momentum, no decay): a step moves every parameter by
    // -lr * grad, so with the same start and batch the head's move is
    // exactly scaled and every other parameter's is bit-identical.
    let sgd = |scale: Option<f32>| {
        let (model, store) = nn::ResNet::new(narrow(4, 7)).unwrap();
        let mut t = Trainer::new(
            Box::new(model),
            store,
            Box::new(train::optim::Sgd::new(Default::default())),
            LrSchedule::constant(0.1),
        );
        if let Some(s) = scale {
            t.scale_head_lr(s);
        }
        t
    };
    let (mut plain, mut scaled) = (sgd(None), sgd(Some(0.25)));
    let before = params_bits(&plain.store);
    let x = tensor::Tensor::from_vec(
        &[4, 32, 32, 3],
        (0..4 * 32 * 32 * 3)
            .map(|i| ((i * 37) % 101) as f32 / 50.0 - 1.0)
            .collect(),
    )
    .unwrap();
    plain.train_step(x.clone(), &[0, 1, 2, 3]);
    scaled.train_step(x, &[0, 1, 2, 3]);
    let mut head = 0;
    for (((name, w0), (_, p)), (_, s)) in before
        .iter()
        .zip(plain.store.iter())
        .zip(scaled.store.iter())
    {
        let (p, s) = (p.value.data(), s.value.data());
        if name.starts_with("predictions/") {
            head += 1;
            let mut moved = false;
            for ((&w0, &p), &s) in w0.iter().zip(p).zip(s) {
                let w0 = f32::from_bits(w0);
                let (dp, ds) = ((p - w0) as f64, (s - w0) as f64);
                moved |= dp != 0.0;
                assert!(
                    (ds - 0.25 * dp).abs() <= 1e-6 * (w0.abs() as f64 + dp.abs()),
                    "{name}: moved {ds} where a quarter of {dp} was due"
                );
            }
            assert!(moved, "{name} did not move");
        } else {
            assert_eq!(p, s, "{name} changed with the head's rate");
        }
    }
    assert_eq!(head, 2, "the Dense kernel and bias");
}

// ---- Callbacks against hand computations, on scripted epoch metrics ----

fn record(epoch: usize, val_loss: f64) -> EpochRecord {
    EpochRecord {
        epoch,
        lr: 1e-3,
        train_loss: 1.0,
        train_acc: 0.5,
        val_loss: Some(val_loss),
        val_acc: Some(1.0 - val_loss),
        test_loss: None,
        test_acc: None,
        seconds: 1.0,
        ema_val_loss: None,
        ema_val_acc: None,
        ema_test_loss: None,
        ema_test_acc: None,
    }
}

fn logs(epoch: usize, val_loss: f64) -> EpochLogs {
    EpochLogs {
        record: record(epoch, val_loss),
        epochs: 100,
        val: None,
        test: None,
        ema_val: None,
        ema_test: None,
        train_images_per_s: 0.0,
        next: Progress {
            epoch,
            ..Progress::default()
        },
    }
}

fn begin(history: &[EpochRecord]) -> TrainBegin<'_> {
    TrainBegin {
        epochs: 100,
        steps_per_epoch: 1,
        start: Progress {
            epoch: history.len(),
            ..Progress::default()
        },
        history,
        has_validation: true,
        has_test: false,
        has_ema: false,
    }
}

/// Feeds `values` (val_loss per epoch) to `cb` until it asks to stop;
/// returns the epoch (1-based) after which it did.
fn run_script(cb: &mut dyn Callback, t: &mut Trainer, values: &[f64]) -> Option<usize> {
    cb.on_train_begin(t, &begin(&[])).unwrap();
    for (i, &v) in values.iter().enumerate() {
        cb.on_epoch_end(t, &logs(i + 1, v)).unwrap();
        if cb.should_stop() {
            return Some(i + 1);
        }
    }
    None
}

#[test]
fn early_stopping_stops_after_patience_epochs_without_improvement() {
    let mut t = trainer(1e-3);
    // Best 0.80 at epoch 2; epochs 3, 4 do not improve; patience 2 -> stop after 4.
    let vals = [0.9, 0.8, 0.85, 0.82, 0.7, 0.6];
    let mut es = EarlyStopping::new(Monitor::new(Metric::ValLoss), 2);
    assert_eq!(run_script(&mut es, &mut t, &vals), Some(4));
    assert_eq!(es.best(), Some((0.8, 2)));
    // min_delta 0.05: 0.8 beats 0.9 by more than 0.05; 0.85 and 0.82 do not
    // beat 0.8 by that much; 0.7 comes too late.
    let mut es = EarlyStopping::new(Monitor::new(Metric::ValLoss).min_delta(0.05), 2);
    assert_eq!(run_script(&mut es, &mut t, &vals), Some(4));
    // With min_delta 0.15 not even epoch 2 improves: stop after epoch 3.
    let mut es = EarlyStopping::new(Monitor::new(Metric::ValLoss).min_delta(0.15), 2);
    assert_eq!(run_script(&mut es, &mut t, &vals), Some(3));
    assert_eq!(es.best(), Some((0.9, 1)));
    // Patience 3: epoch 5 improves in time, then no more stops.
    let mut es = EarlyStopping::new(Monitor::new(Metric::ValLoss), 3);
    assert_eq!(run_script(&mut es, &mut t, &vals), None);
    // Accuracy is maximized: 0.1, 0.2, 0.15, 0.18 (1 - loss) -> stop after 4.
    let mut es = EarlyStopping::new(Monitor::new(Metric::ValAccuracy), 2);
    assert_eq!(run_script(&mut es, &mut t, &vals), Some(4));

    // Replaying a history that had stopped asks to stop at once.
    let history: Vec<_> = vals[..4]
        .iter()
        .enumerate()
        .map(|(i, &v)| record(i + 1, v))
        .collect();
    let mut es = EarlyStopping::new(Monitor::new(Metric::ValLoss), 2);
    es.on_train_begin(&mut t, &begin(&history)).unwrap();
    assert!(es.should_stop());
    assert_eq!(es.stopped_epoch(), Some(4));
    let mut es = EarlyStopping::new(Monitor::new(Metric::ValLoss), 2);
    es.on_train_begin(&mut t, &begin(&history[..3])).unwrap();
    assert!(!es.should_stop());
    es.on_epoch_end(&mut t, &logs(4, 0.82)).unwrap();
    assert!(es.should_stop(), "the replayed wait counts on");
}

/// Records one parameter's first value after every epoch.
struct WeightSpy(Vec<u32>);

impl Callback for WeightSpy {
    fn on_epoch_end(&mut self, t: &mut Trainer, _: &EpochLogs) -> Result<()> {
        self.0.push(first_value_bits(t));
        Ok(())
    }
}

fn first_value_bits(t: &Trainer) -> u32 {
    let (_, p) = t.store.iter().next().unwrap();
    p.value.data()[0].to_bits()
}

#[test]
fn early_stopping_in_fit_ends_the_run_and_restores_the_best_weights() {
    let data = common::dataset(32, 4, 4);
    let d = FitData {
        train: &data,
        val: None,
        test: None,
    };
    // Only epoch 1 counts as an improvement (min_delta 10): stop after 3.
    let monitor = Monitor::new(Metric::Loss).min_delta(10.0);
    let mut es = EarlyStopping::new(monitor, 2).restore_best_weights(true);
    let mut spy = WeightSpy(Vec::new());
    let mut t = trainer(1e-3);
    let s = fit(
        &mut t,
        &d,
        &config(10, 16),
        Start::fresh(),
        &mut [&mut spy, &mut es],
        &no_stop(),
    )
    .unwrap();
    assert_eq!(s.reason, EndReason::StoppedEarly);
    assert_eq!(s.history.len(), 3);
    assert_eq!(s.at.epoch, 3);
    assert_eq!(es.stopped_epoch(), Some(3));
    assert_ne!(spy.0[0], spy.0[2], "training moved the weights");
    assert_eq!(first_value_bits(&t), spy.0[0], "epoch 1's weights are back");
}

#[test]
fn monitoring_validation_without_a_validation_split_is_refused() {
    let data = common::dataset(16, 4, 1);
    let d = FitData {
        train: &data,
        val: None,
        test: None,
    };
    let mut es = EarlyStopping::new(Monitor::new(Metric::ValLoss), 2);
    let err = fit(
        &mut trainer(1e-3),
        &d,
        &config(1, 8),
        Start::fresh(),
        &mut [&mut es],
        &no_stop(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("val_loss") && err.contains("--val-split"),
        "{err}"
    );
}

#[test]
fn reduce_lr_on_plateau_reduces_at_the_right_epochs() {
    let mut t = trainer(1e-2);
    let vals = [0.9, 0.8, 0.85, 0.86, 0.7, 0.75, 0.76, 0.77];
    // Patience 1: every epoch that does not improve reduces: 3, 4, 6, 7, 8.
    let mut r = ReduceLrOnPlateau::new(Monitor::new(Metric::ValLoss), 1).factor(0.5);
    run_script(&mut r, &mut t, &vals);
    assert_eq!(r.reductions(), [3, 4, 6, 7, 8]);
    assert_eq!(r.scale(), 0.5f32.powi(5));
    assert_eq!(t.lr_scale, r.scale());
    assert_eq!(t.lr_at(0), t.schedule.lr(0) * t.lr_scale);
    // Patience 2: the second epoch in a row without improvement: 4, then 7.
    let mut r = ReduceLrOnPlateau::new(Monitor::new(Metric::ValLoss), 2).factor(0.5);
    run_script(&mut r, &mut t, &vals);
    assert_eq!(r.reductions(), [4, 7]);
    // Cooldown 2 after each reduction: epochs 4 and 7 fall in the cooldowns
    // after the reductions at 3 and 6 (Keras counts the epoch a cooldown
    // ends in, 5 and 8, again).
    let mut r = ReduceLrOnPlateau::new(Monitor::new(Metric::ValLoss), 1)
        .factor(0.5)
        .cooldown(2);
    run_script(&mut r, &mut t, &vals);
    assert_eq!(r.reductions(), [3, 6, 8]);
    // min_lr 3e-3 on base 1e-2: 1e-2 -> 5e-3 -> 3e-3 (floor), then no more.
    let mut r = ReduceLrOnPlateau::new(Monitor::new(Metric::ValLoss), 1)
        .factor(0.5)
        .min_lr(3e-3);
    run_script(&mut r, &mut t, &vals);
    assert_eq!(r.reductions(), [3, 4]);
    assert!((r.scale() - 0.3).abs() < 1e-6, "{}", r.scale());
    // Replaying the history gives the same state and sets the trainer's scale.
    let history: Vec<_> = vals
        .iter()
        .enumerate()
        .map(|(i, &v)| record(i + 1, v))
        .collect();
    let mut replayed = ReduceLrOnPlateau::new(Monitor::new(Metric::ValLoss), 1).factor(0.5);
    t.lr_scale = 1.0;
    replayed.on_train_begin(&mut t, &begin(&history)).unwrap();
    assert_eq!(replayed.reductions(), [3, 4, 6, 7, 8]);
    assert_eq!(t.lr_scale, 0.5f32.powi(5));
}

#[test]
fn model_checkpoint_keeps_the_best_epoch() {
    let dir = tmp_dir("model_checkpoint");
    let path = dir.join(train::fit::BEST_FILE);
    let mut t = trainer(1e-3);
    let id = t.store.iter().next().unwrap().0;
    let mut mc = ModelCheckpoint::best_only(&path, Monitor::new(Metric::ValLoss));
    mc.on_train_begin(&mut t, &begin(&[])).unwrap();
    // Mark the weights with the epoch number before each epoch end; after
    // each, read back which epoch's weights the file holds.
    let vals = [0.9, 0.7, 0.8, 0.6, 0.65];
    let name = t.store.get(id).name.clone();
    let mut in_file = Vec::new();
    for (i, &v) in vals.iter().enumerate() {
        t.store.value_mut(id).data_mut()[0] = (i + 1) as f32;
        mc.on_epoch_end(&mut t, &logs(i + 1, v)).unwrap();
        let (tensors, meta) = nn::checkpoint::read_tensors(&path).unwrap();
        let (_, saved) = tensors.iter().find(|(n, _)| *n == name).unwrap();
        in_file.push((
            saved.data()[0],
            meta["epoch"].clone(),
            meta["val_loss"].clone(),
        ));
    }
    let epochs: Vec<f32> = in_file.iter().map(|f| f.0).collect();
    assert_eq!(epochs, [1.0, 2.0, 2.0, 4.0, 4.0], "the best epoch so far");
    assert_eq!(in_file[4].1, "4");
    assert_eq!(in_file[4].2, "0.6");
    assert_eq!(mc.best(), Some((0.6, 4)));
    // A resumed run rebuilds the best from the history: 0.65 is not better.
    let history: Vec<_> = vals[..4]
        .iter()
        .enumerate()
        .map(|(i, &v)| record(i + 1, v))
        .collect();
    let mut mc = ModelCheckpoint::best_only(&path, Monitor::new(Metric::ValLoss));
    mc.on_train_begin(&mut t, &begin(&history)).unwrap();
    assert_eq!(mc.best(), Some((0.6, 4)));
    std::fs::remove_file(&path).unwrap();
    mc.on_epoch_end(&mut t, &logs(5, 0.65)).unwrap();
    assert!(!path.exists());
}

/// Monitoring `ema_val_accuracy`: the best file holds the average's weights
/// of the best epoch, restore_best_weights puts those into the trained
/// weights, and a run without an average is refused before training.
#[test]
fn callbacks_that_monitor_the_average_keep_the_averages_weights() {
    let dir = tmp_dir("ema_monitor");
    let path = dir.join(train::fit::BEST_FILE);
    let mut t = trainer(1e-3);
    t.enable_ema(EmaConfig {
        decay: 0.9,
        every: 1,
    })
    .unwrap();
    let id = t.store.iter().next().unwrap().0;
    let name = t.store.get(id).name.clone();
    let monitor = Monitor::new(Metric::EmaValAccuracy);
    let mut mc = ModelCheckpoint::best_only(&path, monitor);
    let mut es = EarlyStopping::new(monitor, 10).restore_best_weights(true);
    let with_ema = TrainBegin {
        has_ema: true,
        ..begin(&[])
    };
    mc.on_train_begin(&mut t, &with_ema).unwrap();
    es.on_train_begin(&mut t, &with_ema).unwrap();
    let mut averaged = Vec::new();
    for (i, acc) in [0.5, 0.7, 0.6].into_iter().enumerate() {
        t.store.value_mut(id).data_mut()[0] = 100.0 + i as f32;
        t.ema.as_mut().unwrap().update(&t.store);
        let avg = t.ema.as_ref().unwrap().store().get(id).value.data()[0];
        assert_ne!(
            avg,
            100.0 + i as f32,
            "the average differs from the live weight"
        );
        averaged.push(avg);
        let mut l = logs(i + 1, 0.5);
        (l.record.ema_val_acc, l.record.ema_val_loss) = (Some(acc), Some(1.0 - acc));
        mc.on_epoch_end(&mut t, &l).unwrap();
        es.on_epoch_end(&mut t, &l).unwrap();
    }
    let (tensors, meta) = nn::checkpoint::read_tensors(&path).unwrap();
    let (_, saved) = tensors.iter().find(|(n, _)| *n == name).unwrap();
    assert_eq!(saved.data()[0], averaged[1], "epoch 2's average");
    assert_eq!(
        (meta["epoch"].as_str(), meta["ema_val_accuracy"].as_str()),
        ("2", "0.7")
    );
    let summary = train::fit::FitSummary {
        reason: EndReason::Completed,
        at: Progress::default(),
        history: Vec::new(),
        last_test: None,
        last_ema_test: None,
        train_images_per_s: 0.0,
    };
    es.on_train_end(&mut t, &summary).unwrap();
    assert_eq!(t.store.get(id).value.data()[0], averaged[1]);

    let err = EarlyStopping::new(monitor, 2)
        .on_train_begin(&mut trainer(1e-3), &begin(&[]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("ema_val_accuracy") && err.contains("--ema-decay"),
        "{err}"
    );
    assert_eq!("ema_val_loss".parse::<Metric>(), Ok(Metric::EmaValLoss));
}

#[test]
fn the_validation_split_is_disjoint_complete_and_seeded() {
    let (train_idx, val_idx) = split_indices(100, 20, 7);
    assert_eq!(val_idx.len(), 20);
    assert_eq!(train_idx.len(), 80);
    let mut all: Vec<usize> = train_idx.iter().chain(&val_idx).copied().collect();
    all.sort_unstable();
    assert_eq!(all, (0..100).collect::<Vec<_>>(), "disjoint and complete");
    assert_eq!(
        split_indices(100, 20, 7),
        (train_idx.clone(), val_idx.clone())
    );
    assert_ne!(
        split_indices(100, 20, 8).1,
        val_idx,
        "another seed, another split"
    );
    assert_ne!(
        val_idx,
        (80..100).collect::<Vec<_>>(),
        "shuffled, not the tail"
    );

    // On images: every image ends up on exactly one side.
    let data: Dataset = common::dataset(50, 5, 9);
    let (train_set, val) = data.hold_out(10, 7).unwrap();
    assert_eq!((train_set.len(), val.len()), (40, 10));
    for i in 0..val.len() {
        assert!(
            (0..train_set.len()).all(|j| train_set.image(j) != val.image(i)),
            "validation image {i} is also a training image"
        );
    }
    let mut seen: Vec<&[u8]> = (0..40)
        .map(|j| train_set.image(j))
        .chain((0..10).map(|i| val.image(i)))
        .collect();
    seen.sort();
    let mut want: Vec<&[u8]> = (0..50).map(|i| data.image(i)).collect();
    want.sort();
    assert_eq!(seen, want);
    let err = data.hold_out(50, 7).unwrap_err().to_string();
    assert!(err.contains("50 of 50"), "{err}");
}

/// Real CIFAR-10 from `../shared`, when this machine has it.
#[test]
fn fit_on_real_cifar_beats_chance_when_available() {
    let path = train::data::workspace_root().join(train::data::SHARED_ARCHIVE);
    if !path.exists() {
        eprintln!("skipping: {} not found", path.display());
        return;
    }
    let (cifar, _) =
        train::data::load(Some(&path), Some(&train::data::default_cache_dir())).unwrap();
    let pick: Vec<usize> = (0..320).map(|i| i * (cifar.train.len() / 320)).collect();
    let data = cifar.train.subset(&pick);
    let mut t = trainer_seeded(2e-3, 10, 7);
    let d = FitData {
        train: &data,
        val: None,
        test: None,
    };
    let s = fit(
        &mut t,
        &d,
        &config(8, 32),
        Start::fresh(),
        &mut [],
        &no_stop(),
    )
    .unwrap();
    let (first, last) = (&s.history[0], &s.history[7]);
    assert!(last.train_loss < 0.7 * first.train_loss, "{:#?}", s.history);
    // Chance is 0.1 on these 10 classes.
    assert!(last.train_acc > 0.3, "{:#?}", s.history);
}

#[test]
fn a_configured_run_writes_its_average_and_judges_it() {
    let data = tmp_dir("run_ema_data");
    common::write_image_folder(&data, 4, 12, 6);
    let dir = tmp_dir("run_ema");
    let config = train::run_config::RunConfig {
        epochs: 2,
        batch_size: 16,
        eval_batch_size: 32,
        lr: 1e-3,
        seed: 1,
        weights: None,
        data: Some(data),
        model: common::narrow_spec(Some(4)),
        ema: Some(EmaConfig {
            decay: 0.9,
            every: 1,
        }),
        ..train::recipe::Recipe::KerasTutorial.config()
    };
    let mut display = train::fit::ProgressDisplay::epochs_only();
    let outcome = train::run::train(&dir, &config, None, false, &mut display, &no_stop()).unwrap();
    let ema_test = outcome.final_ema_test.expect("the average is judged");
    assert_eq!(
        Some(ema_test.accuracy),
        outcome.summary.history[1].ema_test_acc
    );
    // ema.safetensors is a model file: loaded by name into a fresh network
    // and evaluated, it gives the run's figure.
    let path = dir.join(train::run_state::EMA_FILE);
    let (model, mut store) = nn::ResNet::new(narrow(4, 5)).unwrap();
    nn::checkpoint::load(&mut store, &path, &[]).unwrap();
    let (tensors, meta) = nn::checkpoint::read_tensors(&path).unwrap();
    assert_eq!(meta["global_step"], "6", "3 steps per epoch");
    assert_eq!(meta[train::ema::UPDATES_KEY], "6");
    assert!(meta.contains_key(nn::checkpoint::EPSILON_KEY));
    assert_eq!(tensors.len(), store.len());
    let (cifar, _) = train::data::load(config.data.as_deref(), None).unwrap();
    let again = train::evaluate::evaluate(
        &model,
        &store,
        &cifar.test,
        32,
        config.preprocess().unwrap(),
    );
    assert_eq!(again.loss, ema_test.loss);
    assert_eq!(again.accuracy, ema_test.accuracy);
    // The plain test figure is the trained weights': another network.
    let final_test = outcome.final_test.unwrap();
    assert_ne!(final_test.loss, ema_test.loss);
}
