//! The `predict` command: top-3 classes of each image file.

use super::eval_cmd::preprocess_for;
use super::setup::load_model;
use super::PredictArgs;
use anyhow::Result;
use autograd::ops::softmax;
use tensor::Tensor;
use train::data::{self, CIFAR10_CLASSES, IMAGE_BYTES, IMAGE_SIDE};
use train::evaluate::logits;
use train::run_state;

pub fn run(a: PredictArgs) -> Result<()> {
    let preprocess = preprocess_for(&a.checkpoint, a.preprocess.as_deref())?;
    let (model, store, _) = load_model(&run_state::model_file(&a.checkpoint), IMAGE_SIDE)?;
    let k = model.num_classes().expect("load_model requires a head");
    // The run's own class names, else CIFAR-10's for a 10-class head.
    let classes: Vec<String> = match run_state::read_classes(&a.checkpoint) {
        Some(names) if names.len() == k => names,
        _ if k == 10 => CIFAR10_CLASSES.iter().map(|s| s.to_string()).collect(),
        _ => (0..k).map(|i| format!("class {i}")).collect(),
    };
    let mut x = vec![0.0f32; a.images.len() * IMAGE_BYTES];
    for (img, out) in a.images.iter().zip(x.chunks_exact_mut(IMAGE_BYTES)) {
        let rgb = data::read_image(img)?;
        preprocess.apply(&rgb, out);
    }
    let x = Tensor::from_vec(&[a.images.len(), IMAGE_SIDE, IMAGE_SIDE, 3], x)?;
    let probs = softmax(&logits(model.as_ref(), &store, x));
    for (img, row) in a.images.iter().zip(probs.data().chunks_exact(k)) {
        let mut order: Vec<usize> = (0..k).collect();
        order.sort_by(|&i, &j| row[j].total_cmp(&row[i]));
        let top: Vec<String> = order
            .iter()
            .take(3)
            .map(|&i| format!("{} {:.3}", classes[i], row[i]))
            .collect();
        println!("{}: {}", img.display(), top.join(", "));
    }
    Ok(())
}
