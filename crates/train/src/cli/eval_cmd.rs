//! The `eval` command: a checkpoint's loss, accuracy and confusion matrix on
//! the test set.

use super::setup::{check_batch_fits, in_pool, load_model, parse_preprocess, subset};
use super::EvalArgs;
use anyhow::{anyhow, bail, Result};
use std::sync::atomic::AtomicBool;
use train::data::{self, IMAGE_SIDE};
use train::evaluate::{evaluate_tta, Tta};
use train::run_state;

/// The preprocessing a checkpoint was trained with: the flag, else the run's
/// config.json, else unit.
pub fn preprocess_for(
    checkpoint: &std::path::Path,
    flag: Option<&str>,
) -> Result<data::Preprocess> {
    let name = match flag {
        Some(f) => f.to_string(),
        None => run_state::read_config(checkpoint)
            .map(|c| c.preprocess)
            .unwrap_or_else(|_| "unit".into()),
    };
    parse_preprocess(&name)
}

pub fn run(a: EvalArgs) -> Result<()> {
    in_pool(a.threads, || run_in_pool(a))
}

fn run_in_pool(a: EvalArgs) -> Result<()> {
    if a.batch_size == 0 {
        bail!("--batch-size 0: must be at least 1");
    }
    let preprocess = preprocess_for(&a.checkpoint, a.preprocess.as_deref())?;
    let model_file = run_state::model_file(&a.checkpoint);
    let (model, store, spec) = load_model(&model_file, IMAGE_SIDE)?;
    let (cifar, report) = data::load(a.data.as_deref(), Some(&data::default_cache_dir()))?;
    println!("{report}");
    let classes = model.num_classes().unwrap_or(0);
    let mut cifar_test = cifar.test;
    match run_state::read_classes(&a.checkpoint) {
        // A run directory: labels follow its classes.txt by name.
        Some(names) => {
            if names.len() != classes {
                bail!(
                    "{}: {} lists {} classes but the model classifies {classes}",
                    a.checkpoint.display(),
                    run_state::CLASSES_FILE,
                    names.len()
                );
            }
            let missing = data::remap_to(&mut cifar_test, &names)
                .map_err(|e| anyhow!("{}: {e}", a.checkpoint.display()))?;
            if !missing.is_empty() {
                eprintln!(
                    "warning: the test data has no images of class {}",
                    missing.join(", ")
                );
            }
        }
        None if cifar_test.classes.len() != classes => bail!(
            "{}: the model classifies {classes} classes but the data has {} ({})",
            a.checkpoint.display(),
            cifar_test.classes.len(),
            cifar_test.classes.join(", ")
        ),
        None => {}
    }
    // The same subset the run evaluated on (train_cmd picks it with seed ^ 1).
    let seed = run_state::read_config(&a.checkpoint)
        .map(|c| c.seed)
        .unwrap_or(0);
    if a.test_limit == Some(0) {
        bail!("--test-limit 0: must be at least 1");
    }
    let test = subset(cifar_test, a.test_limit, seed ^ 1);
    // The batches are never larger than the test set.
    let batch = a.batch_size.min(test.len());
    check_batch_fits(
        &spec,
        batch,
        &model_file,
        &format!("--batch-size {}", a.batch_size),
    )?;
    let never = AtomicBool::new(false);
    let eval = evaluate_tta(
        model.as_ref(),
        &store,
        &test,
        a.batch_size,
        preprocess,
        a.tta,
        &never,
    )
    .expect("never stopped");
    if !eval.loss.is_finite() {
        bail!(
            "{}: the test loss is {}: the model's outputs are not finite",
            a.checkpoint.display(),
            eval.loss
        );
    }
    println!("{}", eval.confusion.render());
    println!(
        "evaluation: {} images, {:.1} images/s",
        eval.images,
        eval.images as f64 / eval.seconds.max(1e-9)
    );
    let with = match a.tta {
        Tta::None => String::new(),
        tta => format!(" ({tta} test-time augmentation)"),
    };
    println!("Test loss: {:.4}{with}", eval.loss);
    println!("Test accuracy: {:.4}{with}", eval.accuracy);
    Ok(())
}
