//! The recipes' training features together: a run with every one of them
//! on (label smoothing, EMA, reflect padding, cutout, a one-cycle or
//! warm-up + linear schedule, BN momentum, shuffle once, TTA) interrupted in
//! the middle of an epoch and resumed ends bit for bit where the straight
//! run ends; and the `train` command's recipe handling.

mod common;

use anyhow::Result;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::AtomicBool;
use train::fit::{Callback, EndReason, ProgressDisplay};
use train::recipe::Recipe;
use train::run_config::RunConfig;
use train::trainer::Trainer;

fn tmp_dir(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The scratch recipe on a narrow network and a generated image folder of
/// 4 classes (48 training images: 3 steps of 16 per epoch), every optional
/// feature on.
fn everything_on(data: &Path, schedule: &str, warmup_epochs: f32) -> RunConfig {
    let mut c = Recipe::Scratch.config();
    c.epochs = 3;
    c.batch_size = 16;
    c.eval_batch_size = 32;
    c.lr = 0.02;
    c.lr_schedule = schedule.into();
    c.warmup_epochs = warmup_epochs;
    c.cutout = 8;
    c.shuffle = "once".into();
    c.tta = "flip-translate".into();
    c.ema = Some(train::ema::EmaConfig {
        decay: 0.9,
        every: 2,
    });
    // Some steps are clipped and others not (the first steps have norms 34-39, the later ones 4-26: checked below).
    c.global_clipnorm = Some(30.0);
    c.data = Some(data.to_path_buf());
    c.model.stem_filters = 8;
    c.model.depths = vec![1, 1, 1, 1];
    c.model.widths = vec![8, 8, 16, 16];
    assert_eq!(c.model.bn_momentum, 0.9);
    assert_eq!(c.pad_mode, "reflect");
    assert!(c.label_smoothing > 0.0 && c.augment);
    c.validate().unwrap();
    c
}

/// Asks to stop after global step `at` (the stop flag's equivalent).
struct StopAt(u64, bool);

impl Callback for StopAt {
    fn on_train_batch_end(&mut self, t: &mut Trainer, _: &train::fit::BatchLogs) -> Result<()> {
        self.1 = t.global_step >= self.0;
        Ok(())
    }
    fn should_stop(&self) -> bool {
        self.1
    }
}

fn read(dir: &Path, file: &str) -> Vec<u8> {
    std::fs::read(dir.join(file)).unwrap_or_else(|e| panic!("{}/{file}: {e}", dir.display()))
}

/// A tensor's name, shape and value bits.
type TensorBits = (String, Vec<usize>, Vec<u32>);

/// A weights file's tensors (name, shape, bits) and metadata, in name order
/// (the file's byte layout may order its metadata differently).
fn weights(dir: &Path, file: &str) -> (Vec<TensorBits>, Vec<(String, String)>) {
    let (tensors, meta) = nn::checkpoint::read_tensors(&dir.join(file)).unwrap();
    let mut t: Vec<_> = tensors
        .into_iter()
        .map(|(name, v)| {
            (
                name,
                v.shape().to_vec(),
                v.data().iter().map(|x| x.to_bits()).collect(),
            )
        })
        .collect();
    t.sort();
    let mut m: Vec<_> = meta.into_iter().collect();
    m.sort();
    (t, m)
}

/// metrics.csv without its wall-time column.
fn metrics_without_time(dir: &Path) -> Vec<String> {
    let csv = String::from_utf8(read(dir, train::report::CSV_FILE)).unwrap();
    let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    let seconds = header.iter().position(|h| *h == "seconds").unwrap();
    csv.lines()
        .map(|l| {
            let mut f: Vec<&str> = l.split(',').collect();
            f.remove(seconds);
            f.join(",")
        })
        .collect()
}

/// The `grad_norm` column of a run's `steps.csv`.
fn grad_norms(dir: &Path) -> Vec<f32> {
    let text = String::from_utf8(read(dir, "steps.csv")).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let col = header.iter().position(|&h| h == "grad_norm").unwrap();
    lines
        .map(|l| l.split(',').nth(col).unwrap().parse().unwrap())
        .collect()
}

fn resume_is_bit_exact(name: &str, schedule: &str, warmup_epochs: f32) {
    let data = tmp_dir(&format!("{name}_data"));
    common::write_image_folder(&data, 4, 12, 6);
    let config = everything_on(&data, schedule, warmup_epochs);
    let stop = AtomicBool::new(false);

    let straight = tmp_dir(&format!("{name}_straight"));
    let mut quiet = ProgressDisplay::epochs_only();
    let whole = train::run::train(&straight, &config, None, false, &mut quiet, &stop).unwrap();
    assert_eq!(whole.summary.reason, EndReason::Completed);
    assert!(whole.final_ema_test.is_some());

    // Stopped after step 5 of 9 (the middle of epoch 2, between two EMA
    // updates), then resumed in a new process's worth of state.
    let split = tmp_dir(&format!("{name}_split"));
    let mut stopper = StopAt(5, false);
    let part = train::run::train(&split, &config, None, false, &mut stopper, &stop).unwrap();
    assert_eq!(part.summary.reason, EndReason::Interrupted);
    assert_eq!((part.summary.at.epoch, part.summary.at.step), (1, 2));
    let mut quiet = ProgressDisplay::epochs_only();
    let rest = train::run::train(&split, &config, None, true, &mut quiet, &stop).unwrap();
    assert_eq!(rest.summary.reason, EndReason::Completed);

    for file in ["model.safetensors", "ema.safetensors"] {
        let (a, b) = (weights(&straight, file), weights(&split, file));
        assert!(
            a == b,
            "{name}: {file} differs between the straight and the resumed run"
        );
    }
    assert!(
        read(&straight, "steps.csv") == read(&split, "steps.csv"),
        "{name}: steps.csv"
    );
    let limit = config.global_clipnorm.unwrap();
    let norms = grad_norms(&straight);
    assert!(
        norms.iter().any(|&n| n > limit) && norms.iter().any(|&n| n <= limit),
        "{name}: the clipping limit should clip some steps and not others: {norms:?}"
    );
    assert_eq!(
        metrics_without_time(&straight),
        metrics_without_time(&split)
    );
    let (a, b) = (whole.final_test.unwrap(), rest.final_test.unwrap());
    assert_eq!((a.loss, a.accuracy), (b.loss, b.accuracy));
    assert_eq!(whole.tta, train::evaluate::Tta::FlipTranslate);
}

#[test]
fn resume_is_bit_exact_with_every_feature_on_linear_schedule() {
    resume_is_bit_exact("recipe_linear", "linear", 1.0);
}

#[test]
fn resume_is_bit_exact_with_every_feature_on_one_cycle() {
    resume_is_bit_exact("recipe_one_cycle", "one-cycle:0.4", 0.0);
}

fn train_cmd() -> Command {
    common::train_binary()
}

fn output(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn the_command_line_overrides_a_recipe_field_by_field() {
    let data = tmp_dir("recipe_cli_data");
    common::write_image_folder(&data, 4, 12, 6);
    let dir = tmp_dir("recipe_cli_run").join("run");
    let (ok, text) = output(
        train_cmd()
            .args(["--recipe", "scratch", "--epochs", "3", "--batch-size", "32"])
            .args(["--nesterov", "false", "--cutout", "4", "--quiet"])
            .args([
                "--depths",
                "1,1,1,1",
                "--widths",
                "4,8,8,16",
                "--stem-filters",
                "8",
            ])
            .arg("--data")
            .arg(&data)
            .arg("--out")
            .arg(&dir),
    );
    assert!(ok, "{text}");
    // Printed in full, the given fields marked, the rate's scaling stated.
    assert!(text.contains("recipe scratch:\n{\n"), "{text}");
    assert!(text.contains("\"epochs\": 3,   <- given"), "{text}");
    assert!(text.contains("\"label_smoothing\": 0.1,\n"), "{text}");
    assert!(
        text.contains("lr 0.0125 at batch 32 = 0.025 per 64 images"),
        "{text}"
    );
    assert!(
        text.contains("(flip-translate test-time augmentation)"),
        "{text}"
    );
    assert!(
        text.contains("EMA weights (ema.safetensors): test loss"),
        "{text}"
    );
    // Saved in full: the recipe's fields, the overrides, the scaled rate.
    let saved = train::run_state::read_config(&dir).unwrap();
    let mut want = Recipe::Scratch.config();
    want.epochs = 3;
    want.batch_size = 32;
    want.lr = 0.0125;
    want.nesterov = false;
    want.cutout = 4;
    assert_eq!(saved.lr, want.lr);
    assert_eq!(
        saved.overridden,
        [
            "epochs",
            "batch_size",
            "nesterov",
            "cutout",
            "data",
            "model"
        ]
    );
    assert_eq!(saved.ema, want.ema);
    assert_eq!(saved.model.bn_momentum, 0.9);
    // bf16 GEMMs where the CPU has them, decided (and printed) at the start.
    assert_eq!(saved.precision, "auto");
    assert!(text.contains("; --precision auto)"), "{text}");
    assert_eq!(
        (saved.nesterov, saved.cutout, saved.tta.as_str()),
        (false, 4, "flip-translate")
    );
    assert_eq!(
        saved.weights, None,
        "the scratch recipe starts from Keras's initialization"
    );

    // --lr given: taken as it is, not scaled.
    let (ok, text) = output(
        train_cmd()
            .args(["--recipe", "scratch", "--batch-size", "32", "--lr", "0.3"])
            .args(["--epochs", "3", "--train-limit", "1"])
            .arg("--data")
            .arg(&data)
            .args(["--out", "/dev/null/never"]),
    );
    assert!(!ok);
    assert!(text.contains("\"lr\": 0.3,   <- given"), "{text}");
}

#[test]
fn invalid_recipe_options_are_refused_by_name() {
    for (args, needle) in [
        (vec!["--recipe", "fast"], "unknown recipe 'fast'"),
        (
            vec!["--recipe", "scratch", "--label-smoothing", "1"],
            "--label-smoothing 1: must be in [0, 1)",
        ),
        (
            vec!["--label-smoothing", "1"],
            "--label-smoothing 1: must be in [0, 1)",
        ),
        (vec!["--pad-mode", "wrap"], "--pad-mode"),
        (vec!["--shuffle", "sometimes"], "--shuffle"),
        (vec!["--tta", "rotate"], "--tta"),
        (vec!["--ema-decay", "2"], "ema decay 2"),
        (vec!["--ema-every", "0"], "ema every 0"),
        (vec!["--bn-momentum", "1"], "--bn-momentum 1"),
        (vec!["--cutout", "40"], "--cutout 40"),
        (
            vec!["--head-lr-scale", "0"],
            "--head-lr-scale 0: must be in (0, 1000]",
        ),
        (
            vec!["--head-lr-scale", "NaN"],
            "--head-lr-scale NaN: must be in (0, 1000]",
        ),
        (
            vec!["--lr-schedule", "one-cycle", "--warmup-epochs", "1"],
            "ramps up by itself",
        ),
    ] {
        let (ok, text) = output(
            train_cmd()
                .args(["--epochs", "3", "--weights", "none"])
                .args(&args)
                .args(["--out", "/dev/null/never"]),
        );
        assert!(!ok, "{args:?} was accepted:\n{text}");
        assert!(
            text.contains(needle),
            "{args:?}: wanted '{needle}' in:\n{text}"
        );
    }
}
