//! The `train` binary as a user runs it: a short training run, then `eval`,
//! `predict` and `--resume` on what it wrote, and clear errors on bad input.
//! The data is an image folder the test generates.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

fn train() -> Command {
    common::train_binary()
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

fn tmp_dir(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&d);
    d
}

const NARROW: [&str; 6] = [
    "--depths",
    "1,1,1,1",
    "--widths",
    "4,8,8,16",
    "--stem-filters",
    "8",
];

/// 4 classes, 40 training and 16 test images each.
fn image_folder(name: &str) -> PathBuf {
    let root = tmp_dir(name);
    common::write_image_folder(&root, 4, 40, 16);
    root
}

#[test]
fn train_eval_predict_and_resume() {
    let data = image_folder("cli_data");
    let dir = tmp_dir("cli_run");
    let out = run_ok(
        train()
            .args(NARROW)
            .arg("--data")
            .arg(&data)
            .args([
                "--epochs",
                "1",
                "--train-limit",
                "128",
                "--test-limit",
                "48",
                "--val-split",
                "32",
                "--save-best",
                "--early-stopping-patience",
                "3",
                "--reduce-lr-patience",
                "2",
                "--quiet",
                "--out",
            ])
            .arg(&dir),
    );
    assert!(
        out.contains("train images: 96, validation images: 32, test images: 48"),
        "{out}"
    );
    let epoch_line = out.lines().find(|l| l.starts_with("epoch 1/1:")).unwrap();
    assert!(
        epoch_line.contains("| val loss ") && epoch_line.contains("| test loss "),
        "{epoch_line}"
    );
    assert!(out.contains("Test loss: "), "{out}");
    assert!(out.contains("Test accuracy: 0."), "{out}");
    assert!(dir.join("best.safetensors").exists(), "{out}");
    let config = std::fs::read_to_string(dir.join("config.json")).unwrap();
    assert!(config.contains("\"val_split\": 32"), "{config}");
    assert!(
        config.contains("\"early_stopping_patience\": 3"),
        "{config}"
    );
    for f in [
        "model.safetensors",
        "checkpoints", // the resumable units (run_state)
        "config.json",
        "classes.txt",
        "metrics.csv",
        "metrics.json",
        "learning_curves.svg",
        "metrics.md",
        "confusion.txt",
    ] {
        assert!(dir.join(f).exists(), "{f} missing from the run directory");
    }
    let csv = std::fs::read_to_string(dir.join("metrics.csv")).unwrap();
    assert_eq!(csv.lines().count(), 2, "{csv}");
    assert!(csv.starts_with("epoch,lr,train_loss,train_acc,val_loss,val_acc,"));
    let row: Vec<&str> = csv.lines().nth(1).unwrap().split(',').collect();
    assert!(row[4].parse::<f64>().is_ok(), "val_loss measured: {csv}");

    // Extending the run by one epoch continues from the checkpoint.
    let out = run_ok(
        train()
            .args(["--epochs", "2", "--quiet", "--resume"])
            .arg(&dir),
    );
    assert!(out.contains("resumed at epoch 2 step 0"), "{out}");
    let csv = std::fs::read_to_string(dir.join("metrics.csv")).unwrap();
    assert_eq!(csv.lines().count(), 3, "{csv}");

    let out = run_ok(
        train()
            .args(["eval", "--test-limit", "48", "--data"])
            .arg(&data)
            .arg("--checkpoint")
            .arg(&dir),
    );
    assert!(out.contains("Test accuracy: 0."), "{out}");
    let out = run_ok(
        train()
            .args(["eval", "--data"])
            .arg(&data)
            .arg("--checkpoint")
            .arg(dir.join("best.safetensors")),
    );
    assert!(out.contains("Test accuracy: 0."), "{out}");

    // Predict on a real image written as PNG by the test.
    let img = dir.join("probe.png");
    write_png(&img);
    let out = run_ok(
        train()
            .args(["predict", "--checkpoint"])
            .arg(&dir)
            .arg(&img),
    );
    let line = out
        .lines()
        .find(|l| l.contains("probe.png"))
        .unwrap_or_else(|| panic!("{out}"));
    assert_eq!(line.matches(", ").count(), 2, "top-3 classes: {line}");
}

fn write_png(path: &Path) {
    let file = std::fs::File::create(path).unwrap();
    let mut enc = png::Encoder::new(file, 32, 32);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let pixels: Vec<u8> = (0..32 * 32 * 3).map(|i| (i * 7 % 256) as u8).collect();
    enc.write_header()
        .unwrap()
        .write_image_data(&pixels)
        .unwrap();
}

#[test]
fn missing_data_and_bad_options_are_clear_errors() {
    let out = train()
        .args(["--data", "/nonexistent/cifar", "--quiet", "--out"])
        .arg(tmp_dir("bad_data"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/cifar"), "{err}");

    // Callback options that cannot work are refused before any training.
    let data = tmp_dir("bad_callbacks_data");
    common::write_image_folder(&data, 3, 4, 2);
    for (args, needle) in [
        (&["--val-split", "12"][..], "cannot hold out 12 of 12"),
        (&["--early-stopping-patience", "2"][..], "--val-split"),
        (
            &["--save-best", "--monitor", "val_acc"][..],
            "unknown metric 'val_acc'",
        ),
    ] {
        let out = train()
            .args(NARROW)
            .arg("--data")
            .arg(&data)
            .args(args)
            .args(["--quiet", "--out"])
            .arg(tmp_dir("bad_callbacks"))
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
    }

    let out = train()
        .args(["--freeze", "7", "--out"])
        .arg(tmp_dir("bad_freeze"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--freeze 7"));

    // A run option next to --resume would be silently overridden by the
    // run's config.json: it is refused instead.
    let out = train()
        .args(["--resume", "/nonexistent/run", "--lr", "0.1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--resume") && err.contains("--lr"), "{err}");

    let out = train()
        .args(["eval", "--checkpoint", "/nonexistent/model.safetensors"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/model.safetensors"));
}

/// The line of `out` that starts with `prefix`.
fn line<'a>(out: &'a str, prefix: &str) -> &'a str {
    out.lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no '{prefix}' line in: {out}"))
}

#[test]
fn eval_repeats_the_runs_final_test_time_augmented_evaluation() {
    let data = image_folder("cli_tta_data");
    let dir = tmp_dir("cli_tta_run");
    let limits = ["--test-limit", "48"];
    let out = run_ok(
        train()
            .args(NARROW)
            .arg("--data")
            .arg(&data)
            .args([
                "--epochs",
                "1",
                "--train-limit",
                "64",
                "--tta",
                "flip-translate",
            ])
            .args(limits)
            .args(["--quiet", "--out"])
            .arg(&dir),
    );
    let trained = line(&out, "Test loss:");
    assert!(
        trained.ends_with("(flip-translate test-time augmentation)"),
        "{out}"
    );
    let eval = |tta: &str| {
        run_ok(
            train()
                .args(["eval", "--tta", tta, "--data"])
                .arg(&data)
                .args(limits)
                .arg("--checkpoint")
                .arg(&dir),
        )
    };
    assert_eq!(line(&eval("flip-translate"), "Test loss:"), trained);
    let plain = eval("none");
    let plain = line(&plain, "Test loss:");
    assert!(!plain.contains("augmentation"), "{plain}");
}
