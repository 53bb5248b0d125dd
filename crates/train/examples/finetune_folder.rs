//! Fine-tune Keras's ResNet50 on your own images, from your own program.
//!
//! ```text
//! cargo run --release -p train --example finetune_folder -- FOLDER [EPOCHS] [WEIGHTS]
//! ```
//!
//! `FOLDER` holds `train/<class>/*.png|jpg` and `test/<class>/...` (32x32
//! images; the class folder names are the classes). `EPOCHS` defaults
//! to 10. `WEIGHTS` is e.g. the converted Keras ImageNet weights (see the
//! README); without them the network starts from scratch. A tenth of the training images is held
//! out for validation: the best epoch's weights go to
//! `runs/finetune_folder/best.safetensors`, training stops when the
//! validation loss stops improving, and the learning rate halves on a
//! plateau.

use anyhow::{Context, Result};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use train::data::{self, AugmentConfig, Preprocess};
use train::evaluate::EvalResult;
use train::fit::{
    fit, EarlyStopping, FitConfig, FitData, FitSummary, Metric, ModelCheckpoint, Monitor,
    ProgressDisplay, ReduceLrOnPlateau, Start, BEST_FILE,
};
use train::model_spec::ModelSpec;
use train::optim::{Adam, AdamConfig, LrSchedule};
use train::trainer::Trainer;

pub struct Options {
    pub folder: PathBuf,
    pub weights: Option<PathBuf>,
    pub epochs: usize,
    /// The network: ResNet50 (a test passes a narrower one).
    pub model: ModelSpec,
    /// Where `best.safetensors` goes.
    pub out: PathBuf,
}

/// The whole fine-tuning: data, model, trainer, callbacks, `fit`; then the
/// test set on the weights it ended with (the best epoch's).
pub fn finetune(o: &Options) -> Result<(FitSummary, EvalResult)> {
    let (images, _) = data::load(Some(&o.folder), None)?;
    let (train_set, val_set) = images.train.hold_out(images.train.len() / 10, 0)?;

    let mut spec = o.model.clone();
    spec.num_classes = Some(train_set.classes.len());
    let (mut model, mut store) = train::run::build_model(&spec, 0)?;
    // Keras's ImageNet weights expect Caffe preprocessing; the head is new.
    let mut preprocess = Preprocess::Unit;
    if let Some(w) = &o.weights {
        model.load_weights(&mut store, w, &["predictions/"])?;
        preprocess = Preprocess::Caffe;
    }
    let optimizer = Box::new(Adam::new(AdamConfig::default()));
    let mut trainer = Trainer::new(model, store, optimizer, LrSchedule::constant(1e-4));

    std::fs::create_dir_all(&o.out)?;
    let mut display = ProgressDisplay::auto();
    let mut best = ModelCheckpoint::best_only(o.out.join(BEST_FILE), Monitor::new(Metric::ValLoss));
    let mut early = EarlyStopping::new(Monitor::new(Metric::ValLoss), 3).restore_best_weights(true);
    let mut plateau = ReduceLrOnPlateau::new(Monitor::new(Metric::ValLoss), 1).factor(0.5);

    let config = FitConfig {
        epochs: o.epochs,
        batch_size: 32,
        augment: Some(AugmentConfig::STANDARD),
        preprocess,
        ..FitConfig::default()
    };
    let data = FitData {
        train: &train_set,
        val: Some(&val_set),
        test: Some(&images.test),
    };
    let callbacks: &mut [&mut dyn train::fit::Callback] =
        &mut [&mut display, &mut best, &mut early, &mut plateau];
    let summary = fit(
        &mut trainer,
        &data,
        &config,
        Start::fresh(),
        callbacks,
        &AtomicBool::new(false),
    )?;
    let test = trainer.evaluate(&images.test, config.eval_batch_size, preprocess);
    Ok((summary, test))
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let folder = args
        .next()
        .context("usage: finetune_folder FOLDER [EPOCHS] [WEIGHTS]")?;
    let options = Options {
        folder: folder.into(),
        epochs: args.next().map(|e| e.parse()).transpose()?.unwrap_or(10),
        weights: args.next().map(PathBuf::from),
        model: ModelSpec::resnet50(None),
        out: PathBuf::from("runs/finetune_folder"),
    };
    let (summary, test) = finetune(&options)?;
    println!("{}", test.confusion.render());
    println!(
        "{} epochs ({:?}); Test accuracy: {:.4}",
        summary.history.len(),
        summary.reason,
        test.accuracy
    );
    Ok(())
}
