//! A run that diverges: the loop stops with a clear error *before* the
//! epoch's checkpoint, so the last good one stays and the run resumes from
//! it (with a lower learning rate, say).

mod common;

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use train::fit::{fit, Checkpoint, FitConfig, FitData, MetricsFiles, Start};
use train::run_state;
use train::trainer::Trainer;

fn trainer(lr: f32) -> Trainer {
    common::narrow_adam(4, 7, lr)
}

#[test]
fn a_non_finite_loss_keeps_the_last_good_checkpoint() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("divergence_run");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let train_set = common::dataset(32, 4, 1);
    let test_set = common::dataset(16, 4, 2);
    let data = FitData {
        train: &train_set,
        val: None,
        test: Some(&test_set),
    };
    let config = |epochs| FitConfig {
        epochs,
        batch_size: 8,
        eval_batch_size: 16,
        seed: 3,
        ..FitConfig::default()
    };
    let stop = AtomicBool::new(false);
    // One good epoch, checkpointed.
    let mut good = trainer(1e-3);
    let (mut metrics, mut ckpt) = (MetricsFiles::new(&dir), Checkpoint::new(&dir));
    fit(
        &mut good,
        &data,
        &config(1),
        Start::fresh(),
        &mut [&mut metrics, &mut ckpt],
        &stop,
    )
    .unwrap();
    let saved = std::fs::read(dir.join(run_state::MODEL_FILE)).unwrap();

    // Resumed with an absurd learning rate: the loss becomes non-finite.
    let mut wild = trainer(1e30);
    let start = Start::resume(&dir, &mut wild).unwrap();
    let (mut metrics, mut ckpt) = (MetricsFiles::new(&dir), Checkpoint::new(&dir));
    let err = fit(
        &mut wild,
        &data,
        &config(3),
        start,
        &mut [&mut metrics, &mut ckpt],
        &stop,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("became") && err.contains("lower --lr"),
        "{err}"
    );
    // Nothing of the diverged epoch was saved: the good checkpoint resumes.
    assert_eq!(
        std::fs::read(dir.join(run_state::MODEL_FILE)).unwrap(),
        saved
    );
    let mut again = trainer(1e-3);
    let p = Start::resume(&dir, &mut again).unwrap().progress;
    assert_eq!((p.epoch, p.step), (1, 0));
}

/// Inputs so large that the stem convolution's outputs square to infinity:
/// the first batchnorm's variance overflows while the loss stays finite
/// (the layer outputs its beta). The step reports the statistic and
/// changes nothing, where it would otherwise train on silently with zero
/// gradients below that layer.
#[test]
fn an_overflowing_batchnorm_input_stops_the_step_by_name() {
    let n = 4 * 32 * 32 * 3;
    let x: Vec<f32> = (0..n).map(|i| 1e20 * ((i % 17) as f32 - 8.0)).collect();
    let x = tensor::Tensor::from_vec(&[4, 32, 32, 3], x).unwrap();
    let mut t = trainer(1e-3);
    let before: Vec<Vec<f32>> = t
        .store
        .iter()
        .map(|(_, p)| p.value.data().to_vec())
        .collect();
    let stats = t.train_step(x, &[0, 1, 2, 3]);
    assert!(stats.loss.is_finite(), "the loss hides it: {stats:?}");
    let id = stats
        .non_finite_statistic
        .expect("the overflow is reported");
    let name = &t.store.get(id).name;
    assert!(name.starts_with("conv1_bn/moving_"), "{name}");
    let after: Vec<Vec<f32>> = t
        .store
        .iter()
        .map(|(_, p)| p.value.data().to_vec())
        .collect();
    assert_eq!(after, before, "nothing was applied");
    assert_eq!(t.global_step, 0);

    // A normal batch reports nothing.
    let x = tensor::Tensor::from_vec(&[4, 32, 32, 3], vec![0.5; n]).unwrap();
    assert_eq!(t.train_step(x, &[0, 1, 2, 3]).non_finite_statistic, None);
}
