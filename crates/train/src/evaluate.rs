//! Inference with a trained model: logits for a batch, and loss, accuracy
//! and confusion matrix over a whole dataset. Needs only the model and its
//! parameters (no optimizer), so `eval` and `predict` use it directly.

use crate::data::{Dataset, Preprocess, IMAGE_SIDE};
use crate::metrics::{ConfusionMatrix, Meter};
use autograd::{ops, Graph, Mode, ParamStore};
use nn::Model;
use std::sync::atomic::{AtomicBool, Ordering};
use tensor::Tensor;

/// What one pass over a dataset measured.
#[derive(Clone, Debug)]
pub struct EvalResult {
    pub loss: f64,
    pub accuracy: f64,
    pub confusion: ConfusionMatrix,
    pub images: usize,
    pub seconds: f64,
}

/// Logits `[N, classes]` of the NHWC batch `x` in inference mode.
///
/// # Panics
/// If `x` is not a batch the model accepts (callers check with
/// [`Model::check_input`]) or the model has no head.
pub fn logits(model: &dyn Model, store: &ParamStore, x: Tensor) -> Tensor {
    let mut g = Graph::new(store, Mode::INFER);
    let xv = g.input(x);
    let out = model
        .forward(&mut g, xv)
        .expect("batch shape checked by the caller");
    g.take(out.logits.expect("a head"))
}

/// The first parameter holding a NaN or an infinity, as an error naming
/// it: such weights classify garbage (every logit NaN still "predicts"
/// class 0), so `eval` and `predict` refuse them.
pub fn check_finite_weights(store: &ParamStore) -> Result<(), String> {
    for (_, p) in store.iter() {
        if let Some(i) = p.value.data().iter().position(|v| !v.is_finite()) {
            return Err(format!(
                "tensor {} holds a non-finite value ({} at index {i}): the weights are corrupt \
                 or the training diverged",
                p.name,
                p.value.data()[i]
            ));
        }
    }
    Ok(())
}

/// Loss, accuracy and confusion matrix over `data`, in inference mode, in
/// batches of `batch_size`.
pub fn evaluate(
    model: &dyn Model,
    store: &ParamStore,
    data: &Dataset,
    batch_size: usize,
    preprocess: Preprocess,
) -> EvalResult {
    evaluate_until(
        model,
        store,
        data,
        batch_size,
        preprocess,
        &AtomicBool::new(false),
    )
    .expect("never stopped")
}

/// [`evaluate`], checking `stop` between batches: `None` if it was raised,
/// so a Ctrl-C or SIGTERM during a long evaluation is honoured at once.
pub fn evaluate_until(
    model: &dyn Model,
    store: &ParamStore,
    data: &Dataset,
    batch_size: usize,
    preprocess: Preprocess,
    stop: &AtomicBool,
) -> Option<EvalResult> {
    let started = std::time::Instant::now();
    let mut meter = Meter::new();
    let mut confusion = ConfusionMatrix::new(&data.classes);
    let indices: Vec<usize> = (0..data.len()).collect();
    let mut labels = Vec::new();
    assert!(batch_size > 0, "evaluate: batch size must be positive");
    for chunk in indices.chunks(batch_size) {
        if stop.load(Ordering::SeqCst) {
            return None;
        }
        let mut x = Tensor::for_overwrite(&[chunk.len(), IMAGE_SIDE, IMAGE_SIDE, 3]);
        labels.resize(chunk.len(), 0);
        data.fill_batch(chunk, preprocess, None, x.data_mut());
        data.fill_labels(chunk, &mut labels);
        let logits = logits(model, store, x);
        let loss = ops::cross_entropy(&logits, &labels);
        meter.update(loss, logits.data(), &labels);
        confusion.add_batch(logits.data(), &labels);
    }
    Some(EvalResult {
        loss: meter.loss(),
        accuracy: meter.accuracy(),
        confusion,
        images: data.len(),
        seconds: started.elapsed().as_secs_f64(),
    })
}
