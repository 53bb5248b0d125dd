//! The `predict` command: top-3 classes of each image file.
//!
//! Images are classified [`BATCH`] at a time (3000 files are not one 1.2 GB
//! batch); a file that cannot be read is reported and skipped, the others
//! are still printed, and the command then exits non-zero.

use super::eval_cmd::preprocess_for;
use super::setup::{check_batch_fits, load_model};
use super::PredictArgs;
use anyhow::{bail, Result};
use autograd::ops::softmax;
use std::path::PathBuf;
use tensor::Tensor;
use train::data::{self, CIFAR10_CLASSES, IMAGE_BYTES, IMAGE_SIDE};
use train::evaluate::logits;
use train::run_state;

/// Images per forward pass.
const BATCH: usize = 256;

pub fn run(a: PredictArgs) -> Result<()> {
    let preprocess = preprocess_for(&a.checkpoint, a.preprocess.as_deref())?;
    let model_file = run_state::model_file(&a.checkpoint);
    let (model, store, spec) = load_model(&model_file, IMAGE_SIDE)?;
    let batch = BATCH.min(a.images.len());
    check_batch_fits(
        &spec,
        batch,
        &model_file,
        &format!("{} images ({BATCH} per batch)", a.images.len()),
    )?;
    let k = model.num_classes().expect("load_model requires a head");
    // The run's own class names; CIFAR-10's for a bare 10-class model file.
    let classes: Vec<String> = match run_state::read_classes(&a.checkpoint) {
        Some(names) if names.len() == k => names,
        Some(names) => bail!(
            "{}: {} lists {} classes but the model classifies {k}",
            a.checkpoint.display(),
            run_state::CLASSES_FILE,
            names.len()
        ),
        None if k == 10 => CIFAR10_CLASSES.iter().map(|s| s.to_string()).collect(),
        None => (0..k).map(|i| format!("class {i}")).collect(),
    };
    let mut failed = 0usize;
    for files in a.images.chunks(BATCH) {
        // The readable files of this chunk, and their preprocessed pixels.
        let mut good: Vec<&PathBuf> = Vec::with_capacity(files.len());
        let mut x = Vec::with_capacity(files.len() * IMAGE_BYTES);
        let mut out = vec![0.0f32; IMAGE_BYTES];
        for img in files {
            match data::read_image(img) {
                Ok(rgb) => {
                    preprocess.apply(&rgb, &mut out);
                    x.extend_from_slice(&out);
                    good.push(img);
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    failed += 1;
                }
            }
        }
        if good.is_empty() {
            continue;
        }
        let x = Tensor::from_vec(&[good.len(), IMAGE_SIDE, IMAGE_SIDE, 3], x)?;
        let probs = softmax(&logits(model.as_ref(), &store, x));
        for (img, row) in good.iter().zip(probs.data().chunks_exact(k)) {
            if row.iter().any(|p| !p.is_finite()) {
                bail!(
                    "{}: the model's outputs for {} are not finite",
                    a.checkpoint.display(),
                    img.display()
                );
            }
            let mut order: Vec<usize> = (0..k).collect();
            order.sort_by(|&i, &j| row[j].total_cmp(&row[i]));
            let top: Vec<String> = order
                .iter()
                .take(3)
                .map(|&i| format!("{} {:.3}", classes[i], row[i]))
                .collect();
            println!("{}: {}", img.display(), top.join(", "));
        }
    }
    if failed > 0 {
        bail!("{failed} of {} images could not be read", a.images.len());
    }
    Ok(())
}
