//! Training end to end on real CIFAR-10 images (from `../shared`), resume,
//! checkpoints and prediction.

use autograd::ParamStore;
use nn::{ResNet, ResNetConfig};
use std::path::PathBuf;
use tensor::Tensor;
use train::data::{self, Dataset, Preprocess, Sampler, IMAGE_BYTES};
use train::model_spec::ModelSpec;
use train::optim::{Adam, AdamConfig, LrSchedule};
use train::run_state::{self, Progress};
use train::trainer::Trainer;

fn narrow() -> ResNetConfig {
    ModelSpec {
        version: train::model_spec::ResNetVersion::V1,
        stem_filters: 8,
        depths: vec![1, 1, 1, 1],
        widths: vec![8, 8, 16, 16],
        num_classes: Some(10),
        unbiased_moving_variance: false,
    }
    .config(32, 7)
}

fn trainer(lr: f32) -> Trainer {
    let (model, store) = ResNet::new(narrow()).unwrap();
    Trainer::new(
        Box::new(model),
        store,
        Box::new(Adam::new(AdamConfig::default())),
        LrSchedule::constant(lr),
    )
}

/// A few hundred real CIFAR-10 training images, the same ones every run.
fn real_images(n: usize) -> Dataset {
    let (cifar, _) = data::load(None, Some(&data::default_cache_dir()))
        .expect("CIFAR-10 from ../shared/data (see README)");
    let pick: Vec<usize> = (0..n).map(|i| i * (cifar.train.len() / n)).collect();
    cifar.train.subset(&pick)
}

fn batch(data: &Dataset, indices: &[usize]) -> (Tensor, Vec<usize>) {
    let mut x = vec![0.0; indices.len() * IMAGE_BYTES];
    let mut y = vec![0; indices.len()];
    data.fill_batch(indices, Preprocess::Unit, None, &mut x);
    data.fill_labels(indices, &mut y);
    (Tensor::from_vec(&[indices.len(), 32, 32, 3], x).unwrap(), y)
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

#[test]
fn smoke_training_on_real_images_beats_chance() {
    let data = real_images(320);
    let mut t = trainer(2e-3);
    let sampler = Sampler::new(data.len(), 32, 1);
    // (mean loss, accuracy) of each epoch, as the training steps saw them
    // (batchnorm in training mode; the moving statistics need far more than
    // 80 steps at momentum 0.99 before inference mode is meaningful).
    let mut epochs = Vec::new();
    for epoch in 0..8 {
        let (mut loss, mut correct) = (0.0, 0);
        for indices in sampler.batches(epoch) {
            let (x, y) = batch(&data, &indices);
            let s = t.train_step(x, &y);
            loss += s.loss as f64 * indices.len() as f64;
            correct += s.correct;
        }
        epochs.push((loss / data.len() as f64, correct as f64 / data.len() as f64));
    }
    let (first, last) = (epochs[0], epochs[epochs.len() - 1]);
    assert!(last.0 < 0.7 * first.0, "loss per epoch: {epochs:?}");
    // Chance is 0.1 on these 10 classes.
    assert!(last.1 > 0.3, "accuracy per epoch: {epochs:?}");
}

#[test]
fn resume_gives_the_same_parameters_as_a_straight_run() {
    let data = real_images(96);
    let sampler = Sampler::new(data.len(), 16, 3);
    let batches: Vec<Vec<usize>> = (0..2).flat_map(|e| sampler.batches(e)).collect();
    let n = batches.len();

    let mut straight = trainer(1e-3);
    for b in &batches {
        let (x, y) = batch(&data, b);
        straight.train_step(x, &y);
    }

    let dir = tmp_dir("resume");
    let mut first = trainer(1e-3);
    for b in &batches[..n / 2] {
        let (x, y) = batch(&data, b);
        first.train_step(x, &y);
    }
    let at = Progress {
        epoch: 0,
        step: n / 2,
        global_step: first.global_step,
        ..Progress::default()
    };
    run_state::save(&dir, &first, at).unwrap();
    drop(first);

    // A differently seeded model: everything must come from the checkpoint.
    let (model, store) = ResNet::new(ResNetConfig {
        seed: 99,
        ..narrow()
    })
    .unwrap();
    let mut resumed = Trainer::new(
        Box::new(model),
        store,
        Box::new(Adam::new(AdamConfig::default())),
        LrSchedule::constant(1e-3),
    );
    assert_eq!(run_state::resume(&dir, &mut resumed).unwrap(), at);
    for b in &batches[n / 2..] {
        let (x, y) = batch(&data, b);
        resumed.train_step(x, &y);
    }
    // Same kernels, same thread count, same order of operations: bit-identical.
    assert_eq!(params_bits(&straight.store), params_bits(&resumed.store));
}

#[test]
fn a_half_written_checkpoint_falls_back_to_the_previous_pair() {
    let dir = tmp_dir("half_written");
    let mut t = trainer(1e-3);
    let first = Progress::default();
    run_state::save(&dir, &t, first).unwrap();
    t.global_step = 5;
    let second = Progress {
        global_step: 5,
        step: 5,
        ..first
    };
    run_state::save(&dir, &t, second).unwrap();
    // Both pairs are there: the current one resumes at step 5.
    assert_eq!(run_state::resume(&dir, &mut trainer(1e-3)).unwrap(), second);
    // A third save that died after writing the model but before the state:
    // `save` first links the current pair to *.prev (done by hand here),
    // then the model file gets ahead of the state file.
    for f in [run_state::MODEL_FILE, run_state::STATE_FILE] {
        let prev = dir.join(format!("{f}.prev"));
        std::fs::remove_file(&prev).unwrap();
        std::fs::hard_link(dir.join(f), prev).unwrap();
    }
    t.global_step = 9;
    let model = dir.join(run_state::MODEL_FILE);
    let meta = std::collections::HashMap::from([("global_step".to_string(), "9".to_string())]);
    nn::weights_io::save(&t.store, &model, &meta).unwrap();
    let resumed = run_state::resume(&dir, &mut trainer(1e-3)).unwrap();
    assert_eq!(
        resumed, second,
        "falls back to the pair before the interrupted save"
    );
    // Without a previous pair, the mismatch is an error that says what happened.
    for f in [run_state::MODEL_FILE, run_state::STATE_FILE] {
        std::fs::remove_file(dir.join(format!("{f}.prev"))).unwrap();
    }
    let err = run_state::resume(&dir, &mut trainer(1e-3))
        .unwrap_err()
        .to_string();
    assert!(err.contains("between the two writes"), "{err}");
}
