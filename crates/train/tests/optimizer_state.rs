//! Optimizer state in `train_state.safetensors`, keyed by parameter name:
//! save/resume continues bit-exactly for Adam and SGD, a file that does not
//! fit the model is an error naming the tensor, and checkpoints written in
//! the older position-keyed layout (`optimizer/m.12`) still resume.
//!
//! Synthetic images only: no dataset needed.

use autograd::ParamStore;
use nn::checkpoint::{self, Metadata, TensorFile};
use nn::ResNet;
use std::path::{Path, PathBuf};
use tensor::Tensor;
use train::model_spec::ModelSpec;
use train::optim::{Adam, AdamConfig, LrSchedule, Optimizer, Sgd, SgdConfig};
use train::run_state::{self, Progress};
use train::trainer::Trainer;

fn spec() -> ModelSpec {
    ModelSpec {
        version: train::model_spec::ResNetVersion::V1,
        stem_filters: 8,
        depths: vec![1, 1],
        widths: vec![4, 8],
        num_classes: Some(3),
        unbiased_moving_variance: false,
        bn_momentum: nn::layers::batch_norm::KERAS_MOMENTUM,
    }
}

#[derive(Clone, Copy)]
enum Opt {
    Adam,
    Sgd,
    Lars,
}

fn optimizer(opt: Opt) -> Box<dyn Optimizer> {
    match opt {
        Opt::Adam => Box::new(Adam::new(AdamConfig {
            weight_decay: 1e-2,
            ..AdamConfig::default()
        })),
        Opt::Sgd | Opt::Lars => Box::new(Sgd::new(SgdConfig {
            momentum: 0.9,
            nesterov: true,
            weight_decay: 1e-3,
            trust_coefficient: matches!(opt, Opt::Lars).then_some(1e-3),
        })),
    }
}

fn trainer(opt: Opt, seed: u64) -> Trainer {
    let (model, store) = ResNet::new(spec().config(32, seed)).unwrap();
    Trainer::new(
        Box::new(model),
        store,
        optimizer(opt),
        LrSchedule::constant(1e-2),
    )
}

/// Batch `i` of 4 deterministic pseudo-random images and labels.
fn batch(i: u64) -> (Tensor, Vec<usize>) {
    let mut state = 0x9E37_79B9_7F4A_7C15u64 ^ i.wrapping_mul(0xD1B5_4A32_D192_ED03);
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let x: Vec<f32> = (0..4 * 32 * 32 * 3)
        .map(|_| (next() >> 40) as f32 / (1u64 << 24) as f32)
        .collect();
    let y = (0..4).map(|_| (next() % 3) as usize).collect();
    (Tensor::from_vec(&[4, 32, 32, 3], x).unwrap(), y)
}

fn steps(t: &mut Trainer, range: std::ops::Range<u64>) {
    for i in range {
        let (x, y) = batch(i);
        t.train_step(x, &y);
    }
}

/// Every parameter's name and value bits.
type Bits = Vec<(String, Vec<u32>)>;

fn bits(store: &ParamStore) -> Bits {
    store
        .iter()
        .map(|(_, p)| {
            let b = p.value.data().iter().map(|v| v.to_bits()).collect();
            (p.name.clone(), b)
        })
        .collect()
}

fn tmp_dir(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn progress(t: &Trainer) -> Progress {
    Progress {
        epoch: 1,
        step: t.global_step as usize,
        global_step: t.global_step,
        ..Progress::default()
    }
}

/// Trains 2 steps, saves, resumes into a differently seeded trainer and
/// trains 2 more; returns the parameters of a straight 4-step run and of
/// the resumed one.
fn resume_round_trip(opt: Opt, dir: &Path) -> (Bits, Bits) {
    let mut straight = trainer(opt, 1);
    steps(&mut straight, 0..4);
    let mut first = trainer(opt, 1);
    steps(&mut first, 0..2);
    run_state::save(dir, &first, progress(&first), &[]).unwrap();
    let mut resumed = trainer(opt, 99);
    assert_eq!(
        run_state::resume(dir, &mut resumed).unwrap(),
        progress(&first)
    );
    assert_eq!(resumed.optimizer.step(), 2);
    steps(&mut resumed, 2..4);
    (bits(&straight.store), bits(&resumed.store))
}

#[test]
fn adam_sgd_and_lars_state_by_name_resume_bit_exactly() {
    for (name, opt, slots) in [
        ("adam", Opt::Adam, vec!["m", "v"]),
        ("sgd", Opt::Sgd, vec!["velocity"]),
        ("lars", Opt::Lars, vec!["velocity"]),
    ] {
        let dir = tmp_dir(&format!("by_name_{name}"));
        let (straight, resumed) = resume_round_trip(opt, &dir);
        assert_eq!(straight, resumed, "{slots:?}");

        // The file names each buffer `optimizer/<slot>/<parameter>`, with
        // the parameter's shape, for every trained weight and nothing else.
        let file = TensorFile::read(&newest_unit(&dir).join(run_state::STATE_FILE)).unwrap();
        let t = trainer(opt, 1);
        let mut want: Vec<(String, Vec<usize>)> = Vec::new();
        for slot in &slots {
            for (_, p) in t.store.iter().filter(|(_, p)| p.trainable) {
                want.push((
                    format!("optimizer/{slot}/{}", p.name),
                    p.value.shape().to_vec(),
                ));
            }
        }
        want.sort();
        let got: Vec<(String, Vec<usize>)> = file
            .tensors
            .iter()
            .map(|(n, t)| (n.clone(), t.shape().to_vec()))
            .collect();
        assert_eq!(got, want);
        assert!(got
            .iter()
            .any(|(n, _)| n == &format!("optimizer/{}/conv1_conv/kernel", slots[0])));
        assert_eq!(file.metadata["optimizer/layout"], "by-name");
        assert_eq!(file.metadata["optimizer/step"], "2");
    }
}

/// The newest checkpoint unit of the run directory `dir`.
fn newest_unit(dir: &Path) -> PathBuf {
    run_state::unit::list(dir).unwrap()[0].path.clone()
}

/// Rewrites the state file of `dir`'s newest checkpoint with `edit`
/// applied to its contents (and the unit's manifest to match).
fn edit_state(dir: &Path, edit: impl FnOnce(&mut TensorFile)) {
    let unit = newest_unit(dir);
    let path = unit.join(run_state::STATE_FILE);
    let mut file = TensorFile::read(&path).unwrap();
    edit(&mut file);
    checkpoint::write(
        &path,
        file.tensors.iter().map(|(n, t)| (n.as_str(), t)),
        &file.metadata,
    )
    .unwrap();
    run_state::unit::reseal(&unit).unwrap();
}

fn saved_run(name: &str, opt: Opt) -> PathBuf {
    let dir = tmp_dir(name);
    let mut t = trainer(opt, 1);
    steps(&mut t, 0..1);
    run_state::save(&dir, &t, progress(&t), &[]).unwrap();
    dir
}

fn resume_error(dir: &Path, opt: Opt) -> String {
    let mut t = trainer(opt, 5);
    let before = bits(&t.store);
    let err = format!("{:#}", run_state::resume(dir, &mut t).unwrap_err());
    assert_eq!(
        bits(&t.store),
        before,
        "a failed resume changed the weights"
    );
    assert_eq!(
        t.optimizer.step(),
        0,
        "a failed resume changed the optimizer"
    );
    err
}

#[test]
fn a_state_file_that_does_not_fit_the_model_names_the_tensor() {
    // A parameter the model does not have.
    let dir = saved_run("state_unknown", Opt::Adam);
    edit_state(&dir, |f| {
        let t = f.tensors["optimizer/m/conv1_conv/kernel"].clone();
        f.tensors.insert("optimizer/m/conv9_conv/kernel".into(), t);
    });
    let err = resume_error(&dir, Opt::Adam);
    assert!(
        err.contains("train_state.safetensors")
            && err.contains("'optimizer/m/conv9_conv/kernel'")
            && err.contains("'conv9_conv/kernel', which this model does not have"),
        "{err}"
    );

    // A parameter of the model without its buffer.
    let dir = saved_run("state_missing", Opt::Adam);
    edit_state(&dir, |f| {
        f.tensors.remove("optimizer/v/conv1_conv/kernel");
    });
    let err = resume_error(&dir, Opt::Adam);
    assert!(
        err.contains("train_state.safetensors")
            && err.contains("missing 1 optimizer state tensor(s): optimizer/v/conv1_conv/kernel"),
        "{err}"
    );

    // A buffer of the wrong shape: both shapes are in the message.
    let dir = saved_run("state_shape", Opt::Sgd);
    edit_state(&dir, |f| {
        let name = "optimizer/velocity/conv1_conv/kernel";
        let t = &f.tensors[name];
        let swapped = Tensor::from_vec(&[7, 7, 8, 3], t.data().to_vec()).unwrap();
        f.tensors.insert(name.into(), swapped);
    });
    let err = resume_error(&dir, Opt::Sgd);
    assert!(
        err.contains("'optimizer/velocity/conv1_conv/kernel' has shape [7, 7, 8, 3]")
            && err.contains("[7, 7, 3, 8]"),
        "{err}"
    );

    // Another optimizer's state.
    let dir = saved_run("state_kind", Opt::Adam);
    let err = resume_error(&dir, Opt::Sgd);
    assert!(
        err.contains("train_state.safetensors") && err.contains("saved by 'adam'"),
        "{err}"
    );

    // A layout from the future.
    let dir = saved_run("state_layout", Opt::Adam);
    edit_state(&dir, |f| {
        f.metadata
            .insert("optimizer/layout".into(), "by-uuid".into());
    });
    let err = resume_error(&dir, Opt::Adam);
    assert!(
        err.contains("'by-uuid'") && err.contains("newer version"),
        "{err}"
    );
}

#[test]
fn state_covers_exactly_the_trained_weights_so_freezing_comes_first() {
    let freeze = |t: &mut Trainer| {
        assert!(t.store.set_trainable_prefix("conv1_", false) > 0);
    };
    let dir = tmp_dir("state_frozen");
    let mut t = trainer(Opt::Adam, 1);
    freeze(&mut t);
    steps(&mut t, 0..1);
    let unit = run_state::save(&dir, &t, progress(&t), &[]).unwrap();
    let file = TensorFile::read(&unit.join(run_state::STATE_FILE)).unwrap();
    assert!(!file.tensors.contains_key("optimizer/m/conv1_conv/kernel"));

    let mut same = trainer(Opt::Adam, 5);
    freeze(&mut same);
    run_state::resume(&dir, &mut same).unwrap();
    // Resumed without the freezing, the frozen weights' moments are missing.
    let err = resume_error(&dir, Opt::Adam);
    assert!(err.contains("optimizer/m/conv1_conv/kernel"), "{err}");
}

/// Writes `t`'s training state the way versions before named optimizer
/// state did: `optimizer/<slot>.<position>` as 1-D tensors, no layout key,
/// into `dir`'s newest checkpoint.
fn write_old_state(dir: &Path, t: &Trainer, p: Progress) {
    let unit = newest_unit(dir);
    let state = t.optimizer.state();
    let mut meta = Metadata::from([
        ("optimizer/kind".to_string(), state.kind.clone()),
        ("optimizer/step".to_string(), state.step.to_string()),
        ("epoch".to_string(), p.epoch.to_string()),
        ("step".to_string(), p.step.to_string()),
        ("global_step".to_string(), p.global_step.to_string()),
    ]);
    meta.insert("epoch_loss_sum".into(), format!("{:e}", 0.0));
    meta.insert("epoch_correct".into(), "0".into());
    meta.insert("epoch_seen".into(), "0".into());
    let tensors: Vec<(String, Tensor)> = state
        .buffers
        .iter()
        .map(|(k, v)| {
            let name = format!("optimizer/{}.{}", k.slot, k.param);
            (name, Tensor::from_vec(&[v.len()], v.clone()).unwrap())
        })
        .collect();
    checkpoint::write(
        &unit.join(run_state::STATE_FILE),
        tensors.iter().map(|(n, t)| (n.as_str(), t)),
        &meta,
    )
    .unwrap();
    run_state::unit::reseal(&unit).unwrap();
}

#[test]
fn checkpoints_keyed_by_position_still_resume() {
    for opt in [Opt::Adam, Opt::Sgd] {
        let mut straight = trainer(opt, 1);
        steps(&mut straight, 0..4);

        let dir = tmp_dir("old_layout");
        let mut first = trainer(opt, 1);
        steps(&mut first, 0..2);
        let at = progress(&first);
        run_state::save(&dir, &first, at, &[]).unwrap();
        write_old_state(&dir, &first, at);
        let file = TensorFile::read(&newest_unit(&dir).join(run_state::STATE_FILE)).unwrap();
        assert!(file
            .tensors
            .keys()
            .all(|n| !n["optimizer/".len()..].contains('/')));

        let mut resumed = trainer(opt, 99);
        assert_eq!(run_state::resume(&dir, &mut resumed).unwrap(), at);
        steps(&mut resumed, 2..4);
        assert_eq!(bits(&straight.store), bits(&resumed.store));

        // Saving again writes the named layout.
        let unit = run_state::save(&dir, &resumed, progress(&resumed), &[]).unwrap();
        let file = TensorFile::read(&unit.join(run_state::STATE_FILE)).unwrap();
        assert_eq!(file.metadata["optimizer/layout"], "by-name");
    }
}

#[test]
fn an_old_checkpoint_that_does_not_fit_says_it_is_from_an_older_version() {
    let dir = tmp_dir("old_layout_mismatch");
    let mut t = trainer(Opt::Adam, 1);
    steps(&mut t, 0..1);
    let at = progress(&t);
    run_state::save(&dir, &t, at, &[]).unwrap();
    write_old_state(&dir, &t, at);
    // Position 0 is conv1_conv/kernel (7*7*3*8 values); give it another size,
    // as a model whose parameters were registered in another order would.
    edit_state(&dir, |f| {
        f.tensors
            .insert("optimizer/m.0".into(), Tensor::zeros(&[8]));
    });
    let err = resume_error(&dir, Opt::Adam);
    assert!(
        err.contains("train_state.safetensors")
            && err.contains("older version")
            && err.contains("'optimizer/m.0' has 8 values")
            && err.contains("conv1_conv/kernel"),
        "{err}"
    );
    // A position past the end of the model.
    edit_state(&dir, |f| {
        let t = f.tensors.remove("optimizer/m.0").unwrap();
        f.tensors.insert("optimizer/m.999".into(), t);
    });
    let err = resume_error(&dir, Opt::Adam);
    assert!(
        err.contains("older version") && err.contains("position 999"),
        "{err}"
    );
}
