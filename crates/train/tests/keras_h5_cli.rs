//! `--weights FILE.h5` as a user passes it: the `forward` and `grad` probes
//! on Keras's own files (`tests/fixtures/h5/`, see `tools/make_h5_fixtures.py`)
//! write byte for byte what they write from the converter's safetensors of
//! the same weights, and a bad file is a clear error, not a crash.

use flate2::read::GzDecoder;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
}

fn tmp_dir(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Unpacks `tests/fixtures/h5/<name>.gz` into `dir`.
fn unpack(dir: &Path, name: &str) -> PathBuf {
    let gz = std::fs::read(repo("tests/fixtures/h5").join(format!("{name}.gz"))).unwrap();
    let mut bytes = Vec::new();
    GzDecoder::new(&gz[..]).read_to_end(&mut bytes).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// A batch of three 32x32 images (the narrow fixture's input `x`).
fn input() -> PathBuf {
    repo("tests/fixtures/keras_narrow/reference.safetensors")
}

/// Class ids for that batch, within the tiny network's three classes.
fn labels(dir: &Path) -> PathBuf {
    let y = tensor::Tensor::from_vec(&[3], vec![0.0, 2.0, 1.0]).unwrap();
    let path = dir.join("labels.safetensors");
    let bytes = nn::checkpoint::to_bytes([("y", &y)], &Default::default());
    std::fs::write(&path, bytes).unwrap();
    path
}

fn train(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_train"))
        .args(args)
        .output()
        .unwrap()
}

/// Runs `forward` and `grad` on `weights`, returning what they wrote.
fn probes(weights: &Path, out: &Path) -> (Vec<u8>, Vec<u8>) {
    let (w, x, y) = (
        weights.to_str().unwrap(),
        input(),
        labels(out.parent().unwrap()),
    );
    let (fwd, grad) = (out.with_extension("fwd"), out.with_extension("grad"));
    let layers = "conv1_relu,conv2_block2_out,conv5_block2_out";
    let runs = [
        vec!["forward", "--weights", w, "--input", x.to_str().unwrap()]
            .into_iter()
            .chain(["--output", fwd.to_str().unwrap(), "--layers", layers])
            .collect::<Vec<_>>(),
        vec!["grad", "--weights", w, "--input", x.to_str().unwrap()]
            .into_iter()
            .chain([
                "--labels",
                y.to_str().unwrap(),
                "--output",
                grad.to_str().unwrap(),
            ])
            .chain(["--frozen-bn"])
            .collect(),
    ];
    for args in runs {
        let o = train(&args);
        assert!(
            o.status.success(),
            "{args:?} failed:\n{}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    (std::fs::read(fwd).unwrap(), std::fs::read(grad).unwrap())
}

#[test]
fn probes_on_h5_match_probes_on_safetensors() {
    let dir = tmp_dir("keras_h5_cli");
    let fixtures = repo("tests/fixtures/h5");
    let modern = probes(&fixtures.join("weights.safetensors"), &dir.join("st"));
    let caffe = probes(&fixtures.join("caffe.safetensors"), &dir.join("caffe_st"));
    assert_ne!(
        modern.0, caffe.0,
        "the caffe epsilon (1e-3) must change the outputs"
    );
    for (file, want) in [
        ("legacy.h5", &modern),
        ("keras3.weights.h5", &modern),
        ("keras3_unnamed.weights.h5", &modern),
        ("keras3_model.keras", &modern),
        ("caffe.h5", &caffe),
    ] {
        let got = probes(&unpack(&dir, file), &dir.join(file));
        assert!(got.0 == want.0, "{file}: forward output differs");
        assert!(got.1 == want.1, "{file}: grad output differs");
    }
}

#[test]
fn a_bad_h5_file_is_a_clear_error() {
    let dir = tmp_dir("keras_h5_cli_errors");
    let bad = unpack(&dir, "int_bias.h5");
    let cut = dir.join("cut.h5");
    let whole = std::fs::read(unpack(&dir, "legacy.h5")).unwrap();
    std::fs::write(&cut, &whole[..whole.len() / 2]).unwrap();
    for (path, says) in [
        (&bad, "'conv1_conv/bias' has dtype int32"),
        (&cut, "truncated"),
    ] {
        let x = input();
        let o = train(&[
            "forward",
            "--weights",
            path.to_str().unwrap(),
            "--input",
            x.to_str().unwrap(),
            "--output",
            dir.join("out").to_str().unwrap(),
        ]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{path:?} was accepted");
        assert!(
            err.contains(path.to_str().unwrap()) && err.contains(says),
            "{err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
}
