//! Fault injection against the `train` binary as a hostile but realistic
//! user drives it: values that make no sense, run directories shared or
//! reused, signals, NaN weights, data whose classes do not match the run.
//! Every refusal must exit non-zero with a message naming the value, file
//! or tensor, and leave nothing behind; every fault must leave a run that
//! resumes. Tiny networks and generated image folders keep it fast.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

const TINY: [&str; 6] = [
    "--depths",
    "1,1,1,1",
    "--widths",
    "8,8,16,16",
    "--stem-filters",
    "8",
];

fn tmp_dir(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("refusals")
        .join(name);
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// The binary, with its download/decoded cache inside the test's tmp dir.
fn train() -> Command {
    common::train_binary()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{cmd:?} failed:\n{}", text(&out));
    text(&out)
}

/// Runs `cmd`, which must fail with exit code 1 and a message containing
/// `needle`; returns the output.
fn run_refused(cmd: &mut Command, needle: &str) -> String {
    let out = cmd.output().unwrap();
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{cmd:?} should fail:\n{all}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(needle),
        "{cmd:?}: expected '{needle}' in:\n{all}"
    );
    all
}

/// 4 classes (`class0`..`class3`), 8 training and 4 test images each.
fn image_folder(name: &str) -> PathBuf {
    let root = tmp_dir(name);
    common::write_image_folder(&root, 4, 8, 4);
    root
}

/// A finished one-epoch tiny run of `data` in `dir`.
fn tiny_run(data: &Path, dir: &Path) -> String {
    run_ok(
        train()
            .args(TINY)
            .arg("--data")
            .arg(data)
            .args(["--epochs", "1", "--batch-size", "8", "--quiet", "--out"])
            .arg(dir),
    )
}

#[test]
fn invalid_numbers_are_refused_by_name_before_a_run_directory_exists() {
    let data = image_folder("numbers_data");
    let cases: &[(&[&str], &str)] = &[
        (&["--lr=-1"], "--lr -1: must be a finite number > 0"),
        (&["--lr", "0"], "--lr 0"),
        (&["--lr", "NaN"], "--lr NaN"),
        (&["--momentum", "2"], "--momentum 2: must be in [0, 1)"),
        (&["--weight-decay=-0.5"], "--weight-decay -0.5"),
        (
            &["--optimizer", "lars", "--trust-coefficient", "0"],
            "--trust-coefficient 0: must be a finite number > 0",
        ),
        (&["--trust-coefficient=-1"], "--trust-coefficient -1"),
        (
            &["--optimizer", "lamb"],
            "--optimizer lamb: expected adam, sgd or lars",
        ),
        (&["--epochs", "0"], "--epochs 0: must be at least 1"),
        (&["--train-limit", "0"], "--train-limit 0"),
        (&["--test-limit", "0"], "--test-limit 0"),
        (&["--batch-size", "0"], "--batch-size 0"),
        (&["--eval-batch-size", "0"], "--eval-batch-size 0"),
        (
            &["--warmup-epochs", "5", "--epochs", "1"],
            "--warmup-epochs 5: must be less than --epochs (1)",
        ),
        (
            &["--reduce-lr-factor", "1.5"],
            "--reduce-lr-factor 1.5: must be in (0, 1)",
        ),
        (
            &["--val-split", "8", "--train-limit", "8"],
            "--val-split 8: must be less than --train-limit (8)",
        ),
        (&["--lr-schedule", "sometimes"], "--lr-schedule"),
        (&["--threads", "0"], "--threads 0: must be at least 1"),
        (
            &["--precision", "fp16"],
            "--precision fp16: \"fp16\" is not a precision: expected fp32 or bf16",
        ),
        // Found after the data loaded: the directory is removed again.
        (&["--val-split", "32"], "cannot hold out 32 of 32"),
        (
            &["--depths", "1,1,1,1,1", "--widths", "8,8,8,8,8"],
            "1 to 4 stages",
        ),
        // Hundreds of gigabytes: refused before allocating (not exit 134).
        (
            &["--depths", "1,1,1,1", "--widths", "8,8,8,100000"],
            "MemAvailable",
        ),
    ];
    for (i, (args, needle)) in cases.iter().enumerate() {
        let out = tmp_dir(&format!("numbers_run_{i}"));
        // A repeated list option appends: give the architecture once.
        let architecture = args
            .iter()
            .any(|a| a.starts_with("--depths") || a.starts_with("--widths"));
        run_refused(
            train()
                .args(if architecture { &[][..] } else { &TINY[..] })
                .arg("--data")
                .arg(&data)
                .args(["--quiet", "--out"])
                .arg(&out)
                .args(*args),
            needle,
        );
        assert!(!out.exists(), "{args:?} left {} behind", out.display());
    }
    // A data load that fails leaves no run directory either.
    let out = tmp_dir("numbers_no_data");
    run_refused(
        train()
            .args(TINY)
            .args(["--data", "/nonexistent/cifar", "--quiet", "--out"])
            .arg(&out),
        "/nonexistent/cifar",
    );
    assert!(!out.exists(), "a failed data load left {}", out.display());
}

/// `--precision bf16` trains through the bf16 kernel and is recorded in
/// config.json (so `--resume` keeps it), and `bench` says so; on a CPU
/// without AVX512_BF16 both refuse, naming the missing feature.
#[test]
fn bf16_precision_runs_where_the_cpu_has_it_and_is_refused_elsewhere() {
    let data = image_folder("bf16_data");
    let dir = tmp_dir("bf16_run");
    let mut run = train();
    run.args(TINY)
        .arg("--data")
        .arg(&data)
        .args(["--epochs", "1", "--batch-size", "8", "--quiet"])
        .args(["--precision", "bf16", "--out"])
        .arg(&dir);
    let mut bench = train();
    bench.args([
        "bench", "--only", "training", "--steps", "1", "--warmup", "0",
    ]);
    bench.args([
        "--batch-size",
        "2",
        "--model",
        "resnet50",
        "--precision",
        "bf16",
    ]);
    if !tensor::Kernel::Avx512Bf16.is_supported() {
        run_refused(&mut run, "avx512_bf16");
        assert!(!dir.exists(), "a refused precision left {}", dir.display());
        run_refused(&mut bench, "avx512_bf16");
        println!("SKIPPED bf16 training (refusals checked): this CPU has no AVX512_BF16");
        return;
    }
    let out = run_ok(&mut run);
    let kernel = tensor::Precision::Bf16.kernel().unwrap().name();
    assert!(
        out.contains(&format!("gemm: {kernel} (bf16 operands")),
        "{out}"
    );
    assert!(out.contains("Test accuracy:"), "{out}");
    let config = std::fs::read_to_string(dir.join("config.json")).unwrap();
    assert!(config.contains("\"precision\": \"bf16\""), "{config}");
    let out = run_ok(&mut bench);
    assert!(
        out.contains(&format!("gemm kernel {kernel}, precision bf16")),
        "{out}"
    );
}

/// `--precision auto` is never refused: bf16 where the CPU has
/// AVX512_BF16, fp32 elsewhere, and the kernel it took is printed.
#[test]
fn auto_precision_takes_bf16_where_the_cpu_has_it_and_fp32_elsewhere() {
    let out = run_ok(train().args([
        "bench",
        "--only",
        "training",
        "--steps",
        "1",
        "--warmup",
        "0",
        "--batch-size",
        "2",
        "--precision",
        "auto",
    ]));
    let want = if tensor::Kernel::Avx512Bf16.is_supported() {
        tensor::Precision::Bf16
    } else {
        tensor::Precision::Fp32
    };
    let kernel = want.kernel().unwrap().name();
    assert!(
        out.contains(&format!("gemm kernel {kernel}, precision {want}")),
        "{out}"
    );
}

#[test]
fn run_directories_are_never_shared_or_overwritten_silently() {
    let data = image_folder("dirs_data");
    let dir = tmp_dir("dirs_run");
    tiny_run(&data, &dir);
    let model = std::fs::read(dir.join("model.safetensors")).unwrap();

    // A second run into it is refused, and the first one is untouched.
    run_refused(
        train()
            .args(TINY)
            .arg("--data")
            .arg(&data)
            .args(["--epochs", "1", "--quiet", "--out"])
            .arg(&dir),
        "--overwrite",
    );
    assert_eq!(std::fs::read(dir.join("model.safetensors")).unwrap(), model);
    // A non-empty directory that is no run is never deleted.
    let stranger = tmp_dir("dirs_stranger");
    std::fs::create_dir_all(&stranger).unwrap();
    std::fs::write(stranger.join("thesis.tex"), "precious").unwrap();
    run_refused(
        train()
            .args(TINY)
            .arg("--data")
            .arg(&data)
            .args(["--quiet", "--overwrite", "--out"])
            .arg(&stranger),
        "holds no run",
    );
    assert!(stranger.join("thesis.tex").exists());

    // A live process's lock (this test's own pid) is refused, naming it.
    let lock = dir.join(train::run_dir::LOCK_FILE);
    std::fs::write(&lock, format!("{}\n", std::process::id())).unwrap();
    run_refused(
        train()
            .args(["--epochs", "2", "--quiet", "--resume"])
            .arg(&dir),
        &format!("process {} is training into it", std::process::id()),
    );
    run_refused(
        train()
            .args(TINY)
            .arg("--data")
            .arg(&data)
            .args(["--quiet", "--overwrite", "--out"])
            .arg(&dir),
        "is in use",
    );
    assert_eq!(std::fs::read(dir.join("model.safetensors")).unwrap(), model);
    // A dead process's lock is taken over, with a note, and released after.
    std::fs::write(&lock, "4294967295\n").unwrap();
    let elsewhere = tmp_dir("dirs_elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let out = run_ok(
        train()
            .current_dir(&elsewhere)
            .args(["--epochs", "2", "--quiet", "--resume"])
            .arg(&dir),
    );
    assert!(out.contains("taking over the stale lock"), "{out}");
    assert!(out.contains("resumed at epoch 2 step 0"), "{out}");
    assert!(!lock.exists(), "the lock outlived the run");

    // --overwrite replaces the run.
    let out = run_ok(
        train()
            .args(TINY)
            .arg("--data")
            .arg(&data)
            .args(["--epochs", "1", "--quiet", "--overwrite", "--out"])
            .arg(&dir),
    );
    assert!(out.contains("--overwrite: replaced the run"), "{out}");
    let csv = std::fs::read_to_string(dir.join("metrics.csv")).unwrap();
    assert_eq!(csv.lines().count(), 2, "a fresh one-epoch run: {csv}");
}

#[test]
fn default_run_names_are_per_process_under_the_current_directory() {
    let cwd = tmp_dir("default_cwd");
    std::fs::create_dir_all(&cwd).unwrap();
    // A relative --data, stored absolute: the run resumes from anywhere.
    common::write_image_folder(&cwd.join("images"), 4, 8, 4);
    let start = || {
        train()
            .current_dir(&cwd)
            .args(TINY)
            .args(["--data", "images", "--epochs", "1", "--quiet"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    // Two runs started in the same second.
    let (a, b) = (start(), start());
    for child in [a, b] {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", text(&out));
    }
    let runs: Vec<PathBuf> = std::fs::read_dir(cwd.join("runs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(runs.len(), 2, "{runs:?}");
    for r in &runs {
        assert!(r.join("model.safetensors").exists(), "{}", r.display());
        let name = r.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.starts_with("run-"), "{name}");
    }
    let elsewhere = tmp_dir("default_elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let out = run_ok(
        train()
            .current_dir(&elsewhere)
            .args(["--epochs", "2", "--quiet", "--resume"])
            .arg(&runs[0]),
    );
    assert!(out.contains("Test accuracy: "), "{out}");
}

/// What a run signalled while training printed and how it ended.
struct Signalled {
    /// stdout and stderr, in full.
    all: String,
    code: Option<i32>,
    /// From the signal to the process's exit.
    took: std::time::Duration,
}

/// Spawns `cmd`, waits until it is training (the model line is printed
/// after the handler is installed and the data loaded, just before the
/// first step), then `delay` more, sends `signal` once and collects the rest.
fn signal_once_training(cmd: &mut Command, signal: &str, delay: Duration) -> Signalled {
    signal_once_at(cmd, "model: ", signal, delay)
}

/// Spawns `cmd` with the test hook pausing it at `point` (see
/// `train::test_hook`): it waits there for the stop flag, so the signal
/// sent on its marker lands at that point, whatever the machine's load.
fn signal_once_paused(cmd: &mut Command, point: &str, signal: &str) -> Signalled {
    cmd.env(train::test_hook::VAR, point);
    let marker = format!("test hook: paused at {point}");
    signal_once_at(cmd, &marker, signal, Duration::ZERO)
}

/// Spawns `cmd`, waits for a line of its stdout starting with `marker`,
/// then `delay` more, sends `signal` once and collects the rest.
fn signal_once_at(cmd: &mut Command, marker: &str, signal: &str, delay: Duration) -> Signalled {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        assert!(
            stdout.read_line(&mut line).unwrap() > 0,
            "ended early: {seen}"
        );
        seen.push_str(&line);
        if line.starts_with(marker) {
            break;
        }
    }
    std::thread::sleep(delay);
    let signalled = std::time::Instant::now();
    let status = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    let out = child.wait_with_output().unwrap();
    Signalled {
        all: format!("{seen}{rest}{}", text(&out)),
        code: out.status.code(),
        took: signalled.elapsed(),
    }
}

/// Starts a long tiny run in `dir`, sends `signal` once it is training, and
/// returns the output of the process, which must have saved and exited 130.
fn interrupt(data: &Path, dir: &Path, signal: &str) -> String {
    let mut cmd = train();
    cmd.args(TINY)
        .arg("--data")
        .arg(data)
        .args(["--epochs", "500", "--batch-size", "4", "--quiet", "--out"])
        .arg(dir);
    let run = signal_once_training(&mut cmd, signal, Duration::ZERO);
    assert_eq!(run.code, Some(130), "{signal}:\n{}", run.all);
    run.all
}

#[test]
fn sigterm_and_sighup_save_and_exit_130_like_ctrl_c() {
    let data = image_folder("signal_data");
    for signal in ["-TERM", "-HUP", "-INT"] {
        let dir = tmp_dir(&format!("signal_run{signal}"));
        let out = interrupt(&data, &dir, signal);
        assert!(out.contains("continue with --resume"), "{out}");
        assert!(dir.join("model.safetensors").exists(), "{out}");
        assert!(!dir.join(train::run_dir::LOCK_FILE).exists(), "{out}");
        // "saved at epoch E step S": finishing epoch E completes the run.
        let epoch: usize = out
            .split("saved at epoch ")
            .nth(1)
            .and_then(|s| s.split(' ').next())
            .and_then(|e| e.parse().ok())
            .unwrap_or_else(|| panic!("{out}"));
        let resumed = run_ok(
            train()
                .args(["--epochs", &epoch.to_string(), "--quiet", "--resume"])
                .arg(&dir),
        );
        assert!(resumed.contains("Test accuracy: "), "{resumed}");
    }
}

/// Sets element 0 of tensor `name` in the safetensors file `path` to NaN.
fn poison(path: &Path, name: &str) {
    set_all(path, name, None);
}

/// Sets element 0 of tensor `name` to NaN (`None`), or every element to `value`.
fn set_all(path: &Path, name: &str, value: Option<f32>) {
    let (mut tensors, meta) = nn::checkpoint::read_tensors(path).unwrap();
    let t = &mut tensors.iter_mut().find(|(n, _)| n == name).unwrap().1;
    match value {
        None => t.data_mut()[0] = f32::NAN,
        Some(v) => t.data_mut().fill(v),
    }
    nn::checkpoint::write(path, tensors.iter().map(|(n, t)| (n.as_str(), t)), &meta).unwrap();
}

#[test]
fn nan_weights_are_refused_by_eval_and_predict_naming_the_tensor() {
    let data = image_folder("nan_data");
    let dir = tmp_dir("nan_run");
    tiny_run(&data, &dir);
    poison(&dir.join("model.safetensors"), "conv2_block1_2_conv/kernel");
    run_refused(
        train()
            .args(["eval", "--data"])
            .arg(&data)
            .arg("--checkpoint")
            .arg(&dir),
        "tensor conv2_block1_2_conv/kernel holds a non-finite value",
    );
    let image = data.join("test/class1/0000.png");
    run_refused(
        train()
            .args(["predict", "--checkpoint"])
            .arg(&dir)
            .arg(&image),
        "conv2_block1_2_conv/kernel",
    );

    // Finite weights whose outputs overflow to infinity and NaN.
    let dir = tmp_dir("nan_run_huge");
    tiny_run(&data, &dir);
    set_all(
        &dir.join("model.safetensors"),
        "conv1_conv/kernel",
        Some(3e38),
    );
    run_refused(
        train()
            .args(["eval", "--data"])
            .arg(&data)
            .arg("--checkpoint")
            .arg(&dir),
        "outputs are not finite",
    );
    run_refused(
        train()
            .args(["predict", "--checkpoint"])
            .arg(&dir)
            .arg(&image),
        "outputs for",
    );
}

#[test]
fn a_diverging_run_stops_with_a_clear_message() {
    let data = image_folder("diverge_data");
    let dir = tmp_dir("diverge_run");
    let out = run_refused(
        train()
            .args(TINY)
            .arg("--data")
            .arg(&data)
            .args([
                "--epochs",
                "3",
                "--lr",
                "1e30",
                "--optimizer",
                "sgd",
                "--quiet",
                "--out",
            ])
            .arg(&dir),
        "lower --lr",
    );
    assert!(out.contains("loss became"), "{out}");
}

/// The confusion-matrix rows of `out` (those starting with a class name).
fn rows(out: &str, classes: &[&str]) -> Vec<String> {
    out.lines()
        .filter(|l| classes.iter().any(|c| l.starts_with(c)))
        .map(str::to_string)
        .collect()
}

#[test]
fn eval_and_predict_follow_the_runs_classes() {
    let data = image_folder("classes_data");
    let dir = tmp_dir("classes_run");
    tiny_run(&data, &dir);
    let full = run_ok(
        train()
            .args(["eval", "--data"])
            .arg(&data)
            .arg("--checkpoint")
            .arg(&dir),
    );
    // The same data without class0: sorted folders now start at class1,
    // which would shift every label; remapped by name, class1..3's rows
    // are exactly those of the full evaluation.
    let partial = tmp_dir("classes_partial");
    common::write_image_folder(&partial, 4, 8, 4);
    for split in ["train", "test"] {
        std::fs::remove_dir_all(partial.join(split).join("class0")).unwrap();
    }
    let out = run_ok(
        train()
            .args(["eval", "--data"])
            .arg(&partial)
            .arg("--checkpoint")
            .arg(&dir),
    );
    assert!(out.contains("no images of class class0"), "{out}");
    let named = ["class1", "class2", "class3"];
    assert_eq!(rows(&out, &named), rows(&full, &named), "{out}\n{full}");

    // A class the run does not know is an error naming it.
    let stranger = tmp_dir("classes_stranger");
    common::write_image_folder(&stranger, 4, 8, 4);
    for split in ["train", "test"] {
        std::fs::rename(
            stranger.join(split).join("class3"),
            stranger.join(split).join("zebra"),
        )
        .unwrap();
    }
    run_refused(
        train()
            .args(["eval", "--data"])
            .arg(&stranger)
            .arg("--checkpoint")
            .arg(&dir),
        "'zebra'",
    );

    // predict: good files printed, the bad one named, exit non-zero.
    let good = data.join("test/class2/0001.png");
    let bad = tmp_dir("classes_bad.png");
    std::fs::write(&bad, b"not a png").unwrap();
    let out = run_refused(
        train()
            .args(["predict", "--checkpoint"])
            .arg(&dir)
            .arg(&good)
            .arg(&bad),
        "1 of 2 images could not be read",
    );
    assert!(out.contains(&format!("{}: class", good.display())), "{out}");
    assert!(out.contains(&bad.display().to_string()), "{out}");

    // 300 files go in two batches; a bad one in the second still leaves
    // every good one of both printed.
    let mut many: Vec<PathBuf> = vec![good.clone(); 299];
    many.insert(280, bad.clone());
    let out = run_refused(
        train()
            .args(["predict", "--checkpoint"])
            .arg(&dir)
            .args(&many),
        "1 of 300 images could not be read",
    );
    let printed = format!("{}: class", good.display());
    assert_eq!(out.matches(&printed).count(), 299, "{out}");

    // A classes.txt of the wrong length is an error, not CIFAR's names.
    std::fs::write(dir.join("classes.txt"), "a\nb\nc\n").unwrap();
    run_refused(
        train()
            .args(["predict", "--checkpoint"])
            .arg(&dir)
            .arg(&good),
        "classes.txt lists 3 classes but the model classifies 4",
    );
}

#[test]
fn a_test_split_missing_a_class_is_warned_about_by_name() {
    let data = image_folder("split_data");
    std::fs::remove_dir_all(data.join("test/class2")).unwrap();
    let out = tiny_run(&data, &tmp_dir("split_run"));
    assert!(out.contains("test/ has no images of class class2"), "{out}");
}

#[test]
fn io_errors_print_their_cause_once() {
    let out = run_refused(
        train().args(["eval", "--checkpoint", "/nonexistent/model.safetensors"]),
        "/nonexistent/model.safetensors",
    );
    assert_eq!(out.matches("No such file or directory").count(), 1, "{out}");
}

#[test]
fn a_stop_during_the_evaluation_saves_the_trained_epoch_at_once() {
    // One training step, then a long evaluation (10000 images, one at a
    // time, by a network a little wider than TINY: seconds), the signal
    // sent as it starts.
    let data = tmp_dir("eval_stop_data");
    common::write_image_folder(&data, 4, 1, 2500);
    let dir = tmp_dir("eval_stop_run");
    let mut cmd = train();
    cmd.args(["--depths", "1,1,1,1", "--widths", "16,16,32,32"])
        .args(["--stem-filters", "16", "--data"])
        .arg(&data)
        .args([
            "--epochs",
            "1",
            "--batch-size",
            "4",
            "--eval-batch-size",
            "1",
            "--quiet",
            "--out",
        ])
        .arg(&dir);
    // Paused at the start of the evaluation until the signal arrives.
    let run = signal_once_paused(&mut cmd, train::test_hook::EVALUATION, "-TERM");
    let all = run.all;
    // Without the check between batches the run would finish the
    // evaluation and, its only epoch done, exit 0 with a test accuracy.
    assert_eq!(run.code, Some(130), "{all}");
    assert!(all.contains("saved at epoch 1 step 1;"), "{all}");
    assert!(run.took.as_secs() < 5, "{all}");
    // Resuming skips the trained step and evaluates the epoch.
    let resumed = run_ok(train().args(["--quiet", "--resume"]).arg(&dir));
    assert!(resumed.contains("resumed at epoch 1 step 1"), "{resumed}");
    assert!(resumed.contains("Test accuracy: "), "{resumed}");
    let csv = std::fs::read_to_string(dir.join("metrics.csv")).unwrap();
    assert_eq!(csv.lines().count(), 2, "{csv}");
}

#[test]
fn eval_predict_and_train_refuse_batches_that_cannot_fit_in_memory() {
    use train::run_config::memory::{inference_lower_bound_bytes, LIMIT_VAR};
    let data = image_folder("memory_data");
    let dir = tmp_dir("memory_run");
    tiny_run(&data, &dir);
    // The network of the run (TINY with 4 classes), as `eval` infers it.
    let mut spec = train::model_spec::ModelSpec::resnet50(Some(4));
    spec.depths = vec![1, 1, 1, 1];
    spec.widths = vec![8, 8, 16, 16];
    spec.stem_filters = 8;
    let fits = |batch| inference_lower_bound_bytes(&spec, batch).to_string();
    let eval = |batch: &str, limit: &str| {
        let mut c = train();
        c.env(LIMIT_VAR, limit)
            .args(["eval", "--batch-size", batch, "--data"])
            .arg(&data)
            .arg("--checkpoint")
            .arg(&dir);
        c
    };
    // Exactly enough for 8 images at a time: 8 pass, 16 are refused.
    run_ok(&mut eval("8", &fits(8)));
    let out = run_refused(
        &mut eval("16", &fits(8)),
        "model.safetensors with --batch-size 16: the network",
    );
    assert!(out.contains(LIMIT_VAR), "{out}");
    // Batches never exceed the 16 test images: a huge --batch-size needs
    // what 16 need.
    run_ok(&mut eval("1000000000", &fits(16)));
    // Not even the weights fit: refused before the network is built.
    run_refused(&mut eval("1", "1000"), "model.safetensors: the network");

    let image = data.join("test/class1/0000.png");
    let predict = |images: usize, limit: &str| {
        let mut c = train();
        c.env(LIMIT_VAR, limit)
            .args(["predict", "--checkpoint"])
            .arg(&dir)
            .args(vec![&image; images]);
        c
    };
    run_ok(&mut predict(1, &fits(1)));
    run_refused(
        &mut predict(2, &fits(1)),
        "with 2 images (256 per batch): the network",
    );

    // train: the same limit, before a run directory exists.
    let out_dir = tmp_dir("memory_train");
    run_refused(
        train()
            .env(LIMIT_VAR, "1000")
            .args(TINY)
            .arg("--data")
            .arg(&data)
            .args([
                "--batch-size",
                "8",
                "--eval-batch-size",
                "8",
                "--quiet",
                "--out",
            ])
            .arg(&out_dir),
        "to train at batch size 8",
    );
    assert!(!out_dir.exists());
}

/// Every file under `dir` (none if it does not exist).
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in entries {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out.sort();
    out
}

#[test]
fn a_stop_while_loading_the_data_exits_at_once_leaving_nothing() {
    use train::test_hook::LOADING;
    let data = image_folder("load_stop_data");
    // A cache of its own: the data is decoded (not a cache hit) and the
    // test can see that no cache file is written.
    let cache = tmp_dir("load_stop_cache");
    let dir = tmp_dir("load_stop_run");
    let mut cmd = train();
    cmd.env("RESNET_RS_CACHE", &cache)
        .args(TINY)
        .arg("--data")
        .arg(&data)
        .args(["--epochs", "1", "--quiet", "--out"])
        .arg(&dir);
    let run = signal_once_paused(&mut cmd, LOADING, "-TERM");
    let all = &run.all;
    // Without the checks in the loaders, the run would load, train one
    // step, save it and say "saved at epoch 1 step 1".
    assert_eq!(run.code, Some(130), "{all}");
    assert!(
        all.contains("stopped while loading data; nothing to save"),
        "{all}"
    );
    assert!(!all.contains("saved at epoch"), "{all}");
    assert!(run.took.as_secs() < 5, "{all}");
    assert!(!dir.exists(), "the new run directory was left: {all}");
    assert_eq!(files_under(&cache), Vec::<PathBuf>::new(), "{all}");

    // A resumed run stopped while loading is left as it was.
    let dir = tmp_dir("load_stop_resumed");
    tiny_run(&data, &dir);
    let before: Vec<(PathBuf, Vec<u8>)> = files_under(&dir)
        .into_iter()
        .map(|p| (p.clone(), std::fs::read(&p).unwrap()))
        .collect();
    let mut cmd = train();
    cmd.env("RESNET_RS_CACHE", tmp_dir("load_stop_cache_2"))
        .args(["--epochs", "2", "--quiet", "--resume"])
        .arg(&dir);
    let run = signal_once_paused(&mut cmd, LOADING, "-HUP");
    let all = &run.all;
    assert_eq!(run.code, Some(130), "{all}");
    assert!(
        all.contains("nothing to save; the run is as it was: continue with --resume"),
        "{all}"
    );
    let after: Vec<(PathBuf, Vec<u8>)> = files_under(&dir)
        .into_iter()
        .map(|p| (p.clone(), std::fs::read(&p).unwrap()))
        .collect();
    // Every file as it was, config.json included (--epochs 2 not recorded).
    assert!(before == after, "{all}");
    let resumed = run_ok(
        train()
            .args(["--epochs", "2", "--quiet", "--resume"])
            .arg(&dir),
    );
    assert!(resumed.contains("resumed at epoch 2 step 0"), "{resumed}");
}
