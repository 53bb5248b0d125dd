//! `fit::StepLog` (`steps.csv`): each step's own loss, taken before the
//! step's update, and a resumed run's file equal to a straight run's.

mod common;

use anyhow::Result;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use train::fit::{fit, BatchLogs, Callback, Checkpoint, FitConfig, FitData, Start, StepLog};
use train::trainer::Trainer;

fn trainer(lr: f32, seed: u64) -> Trainer {
    common::narrow_adam(4, seed, lr)
}

fn config() -> FitConfig {
    FitConfig {
        epochs: 2,
        batch_size: 8,
        eval_batch_size: 64,
        seed: 3,
        ..FitConfig::default()
    }
}

fn tmp_dir(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// What fit itself reports for each step, and a stop after global step `stop_at`.
#[derive(Default)]
struct Recorder {
    losses: Vec<f32>,
    stop_at: Option<u64>,
    stop: bool,
}

impl Callback for Recorder {
    fn on_train_batch_end(&mut self, t: &mut Trainer, logs: &BatchLogs) -> Result<()> {
        self.losses.push(logs.stats.loss);
        self.stop = self.stop_at.is_some_and(|s| t.global_step >= s);
        Ok(())
    }
    fn should_stop(&self) -> bool {
        self.stop
    }
}

struct Row {
    epoch: usize,
    step: usize,
    global_step: u64,
    loss: f32,
    correct: usize,
    lr: f32,
    grad_norm: Option<f32>,
}

fn read(dir: &std::path::Path) -> (String, Vec<Row>) {
    let text = std::fs::read_to_string(dir.join("steps.csv")).unwrap();
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some("epoch,step,global_step,loss,correct,lr,grad_norm")
    );
    let rows = lines
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            assert_eq!(f.len(), 7, "{l}");
            Row {
                epoch: f[0].parse().unwrap(),
                step: f[1].parse().unwrap(),
                global_step: f[2].parse().unwrap(),
                loss: f[3].parse().unwrap(),
                correct: f[4].parse().unwrap(),
                lr: f[5].parse().unwrap(),
                grad_norm: (!f[6].is_empty()).then(|| f[6].parse().unwrap()),
            }
        })
        .collect();
    (text, rows)
}

/// 2 epochs of 24 images in batches of 8: 3 steps per epoch.
fn run(t: &mut Trainer, dir: &std::path::Path, start: Start, rec: &mut Recorder) {
    let data = common::dataset(24, 4, 5);
    let d = FitData {
        train: &data,
        val: None,
        test: None,
    };
    let mut log = StepLog::new(dir);
    let mut ckpt = Checkpoint::new(dir);
    let stop = AtomicBool::new(false);
    fit(
        t,
        &d,
        &config(),
        start,
        &mut [rec, &mut log, &mut ckpt],
        &stop,
    )
    .unwrap();
}

#[test]
fn each_row_is_its_steps_loss_before_the_update() {
    let dir = tmp_dir("step_log_rows");
    let mut rec = Recorder::default();
    run(&mut trainer(1e-2, 7), &dir, Start::fresh(), &mut rec);
    let (_, rows) = read(&dir);
    let ids: Vec<_> = rows
        .iter()
        .map(|r| (r.epoch, r.step, r.global_step))
        .collect();
    assert_eq!(
        ids,
        [
            (1, 1, 1),
            (1, 2, 2),
            (1, 3, 3),
            (2, 1, 4),
            (2, 2, 5),
            (2, 3, 6)
        ]
    );
    // Exactly the values fit computed (shortest round-trip form), not a
    // running mean.
    let logged: Vec<f32> = rows.iter().map(|r| r.loss).collect();
    assert_eq!(logged, rec.losses);
    assert!(rows.iter().all(|r| r.lr == 1e-2 && r.correct <= 8));
    // No clipping, so no norm measured.
    assert!(rows.iter().all(|r| r.grad_norm.is_none()));

    // The same model and batches with a learning rate of 0 never leaves its
    // initial weights: its first loss equals the logged first loss only if
    // that was computed before the update; its later ones differ from the
    // trained run's (so the comparison could fail).
    let dir0 = tmp_dir("step_log_rows_lr0");
    let mut rec0 = Recorder::default();
    run(&mut trainer(0.0, 7), &dir0, Start::fresh(), &mut rec0);
    let (_, rows0) = read(&dir0);
    assert_eq!(rows0[0].loss, rows[0].loss);
    assert_ne!(rows0[1].loss, rows[1].loss);
}

#[test]
fn a_resumed_run_writes_the_same_file_as_a_straight_run() {
    let straight = tmp_dir("step_log_straight");
    run(
        &mut trainer(1e-2, 7),
        &straight,
        Start::fresh(),
        &mut Recorder::default(),
    );
    let (want, rows) = read(&straight);
    assert_eq!(rows.len(), 6);

    // Interrupted after global step 4 (epoch 2 step 1)...
    let dir = tmp_dir("step_log_resumed");
    let mut rec = Recorder {
        stop_at: Some(4),
        ..Recorder::default()
    };
    run(&mut trainer(1e-2, 7), &dir, Start::fresh(), &mut rec);
    assert_eq!(read(&dir).1.len(), 4);
    // ...then, as if killed later, a row past the checkpoint and a cut one.
    let path = dir.join("steps.csv");
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str("2,2,5,9.5,1,0.01\n2,3,");
    std::fs::write(&path, text).unwrap();

    let mut t = trainer(1e-2, 99);
    let start = Start::resume(&dir, &mut t).unwrap();
    assert_eq!(start.progress.global_step, 4);
    run(&mut t, &dir, start, &mut Recorder::default());
    assert_eq!(read(&dir).0, want);
}

#[test]
fn a_clipping_run_logs_each_steps_gradient_norm() {
    let dir = tmp_dir("step_log_norms");
    let mut t = trainer(1e-2, 7);
    t.global_clipnorm = Some(1e-3);
    run(&mut t, &dir, Start::fresh(), &mut Recorder::default());
    let (_, rows) = read(&dir);
    let norms: Vec<f32> = rows.iter().map(|r| r.grad_norm.unwrap()).collect();
    assert!(
        norms.iter().all(|n| n.is_finite() && *n > 1e-3),
        "{norms:?}"
    );
}

#[test]
fn a_file_from_before_the_norm_column_gets_it_on_resume() {
    let dir = tmp_dir("step_log_old_format");
    let mut rec = Recorder {
        stop_at: Some(4),
        ..Recorder::default()
    };
    run(&mut trainer(1e-2, 7), &dir, Start::fresh(), &mut rec);
    // Rewrite the file as a binary from before the column wrote it.
    let path = dir.join("steps.csv");
    let old: String = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(|l| {
            format!(
                "{}\n",
                l.strip_suffix(",grad_norm").unwrap_or(&l[..l.len() - 1])
            )
        })
        .collect();
    assert!(old.starts_with("epoch,step,global_step,loss,correct,lr\n1,1,1,"));
    std::fs::write(&path, &old).unwrap();

    let mut t = trainer(1e-2, 99);
    let start = Start::resume(&dir, &mut t).unwrap();
    run(&mut t, &dir, start, &mut Recorder::default());
    let (text, rows) = read(&dir);
    assert_eq!(rows.len(), 6);
    let old_rows: Vec<&str> = old.lines().skip(1).collect();
    let new_rows: Vec<&str> = text.lines().skip(1).take(4).collect();
    for (o, n) in old_rows.iter().zip(&new_rows) {
        assert_eq!(format!("{o},"), *n);
    }
}
