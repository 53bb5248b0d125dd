//! Inference with a trained model: logits for a batch, and loss, accuracy
//! and confusion matrix over a whole dataset. Needs only the model and its
//! parameters (no optimizer), so `eval` and `predict` use it directly.
//! With test-time augmentation ([`Tta`]), each image is classified from
//! several views and the views' logits combined.

mod tta;

pub use tta::Tta;

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
    evaluate_tta(model, store, data, batch_size, preprocess, Tta::None, stop)
}

/// The combined logits `[indices.len(), classes]` of the images at
/// `indices` under test-time augmentation `tta`: one inference pass per
/// view ([`Tta::views`], built on the u8 images before preprocessing),
/// combined by [`Tta::combine`]. `Tta::None` is [`logits`] of the batch.
///
/// # Panics
/// As [`logits`], or if an index is out of range.
pub fn tta_logits(
    model: &dyn Model,
    store: &ParamStore,
    data: &Dataset,
    indices: &[usize],
    preprocess: Preprocess,
    tta: Tta,
) -> Tensor {
    let views = tta
        .views()
        .iter()
        .map(|view| {
            let mut x = Tensor::for_overwrite(&[indices.len(), IMAGE_SIDE, IMAGE_SIDE, 3]);
            data.fill_batch_view(indices, preprocess, view, x.data_mut());
            logits(model, store, x)
        })
        .collect();
    tta.combine(views)
}

/// Loss, accuracy and confusion matrix over `data` under test-time
/// augmentation `tta` ([`tta_logits`]), checking `stop` between batches
/// (`None` if it was raised). Accuracy and confusion matrix are those of
/// the combined logits' argmax; the loss is the cross-entropy of the
/// combined logits, `mean(logsumexp(z) - z[label])` with `z` the weighted
/// mean of the views' logits (the softmax of averaged logits, not an
/// average of the views' probabilities or losses). `Tta::None` is
/// [`evaluate_until`].
pub fn evaluate_tta(
    model: &dyn Model,
    store: &ParamStore,
    data: &Dataset,
    batch_size: usize,
    preprocess: Preprocess,
    tta: Tta,
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
        labels.resize(chunk.len(), 0);
        data.fill_labels(chunk, &mut labels);
        let logits = tta_logits(model, store, data, chunk, preprocess, tta);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{synthetic, IMAGE_BYTES};
    use crate::model_spec::{ModelSpec, ResNetVersion};

    /// A narrow untrained ResNet (its logits still depend on every pixel)
    /// and 20 generated images of 10 classes.
    fn setup() -> (nn::ResNet, ParamStore, Dataset) {
        let spec = ModelSpec {
            version: ResNetVersion::V1,
            stem_filters: 8,
            depths: vec![1, 1, 1, 1],
            widths: vec![8, 8, 16, 16],
            num_classes: Some(10),
            unbiased_moving_variance: false,
            bn_momentum: nn::layers::batch_norm::KERAS_MOMENTUM,
        };
        let (model, store) = nn::ResNet::new(spec.config(32, 3)).unwrap();
        (model, store, synthetic::cifar10(2, 1, 5).train)
    }

    /// The preprocessed batch of all of `data`, as written by the caller.
    fn batch(data: &Dataset, pre: Preprocess) -> Tensor {
        let idx: Vec<usize> = (0..data.len()).collect();
        let mut x = Tensor::zeros(&[data.len(), 32, 32, 3]);
        data.fill_batch(&idx, pre, None, x.data_mut());
        x
    }

    /// `x` mirrored left-right, by index arithmetic on the NHWC floats.
    fn mirrored(x: &Tensor) -> Tensor {
        let mut m = x.clone();
        for (img, src) in m
            .data_mut()
            .chunks_exact_mut(IMAGE_BYTES)
            .zip(x.data().chunks_exact(IMAGE_BYTES))
        {
            for y in 0..32 {
                for col in 0..32 {
                    let (o, s) = ((y * 32 + col) * 3, (y * 32 + 31 - col) * 3);
                    img[o..o + 3].copy_from_slice(&src[s..s + 3]);
                }
            }
        }
        m
    }

    /// `data`'s images shifted by (`d`, `d`) (output (y, x) = image
    /// (y + d, x + d)), borders reflected: -1 -> 1, 32 -> 30.
    fn shifted(data: &Dataset, d: isize) -> Dataset {
        let r = |i: isize| match i {
            -1 => 1,
            32 => 30,
            i => i as usize,
        };
        let mut out = data.clone();
        for (n, img) in out.images.chunks_exact_mut(IMAGE_BYTES).enumerate() {
            let src = data.image(n);
            for y in 0..32 {
                for x in 0..32 {
                    let (sy, sx) = (r(y as isize + d), r(x as isize + d));
                    let o = (y * 32 + x) * 3;
                    img[o..o + 3].copy_from_slice(&src[(sy * 32 + sx) * 3..][..3]);
                }
            }
        }
        out
    }

    fn labels(data: &Dataset) -> Vec<usize> {
        data.labels.iter().map(|&l| l as usize).collect()
    }

    #[test]
    fn flip_logits_are_the_mean_of_the_image_and_mirror_logits() {
        let (model, store, data) = setup();
        let pre = Preprocess::Unit;
        let x = batch(&data, pre);
        let a = logits(&model, &store, x.clone());
        let b = logits(&model, &store, mirrored(&x));
        assert_ne!(a.data(), b.data(), "the model is not mirror-symmetric");
        let want: Vec<f32> = a
            .data()
            .iter()
            .zip(b.data())
            .map(|(a, b)| 0.5 * a + 0.5 * b)
            .collect();
        let idx: Vec<usize> = (0..data.len()).collect();
        let got = tta_logits(&model, &store, &data, &idx, pre, Tta::Flip);
        assert_eq!(got.shape(), [20, 10]);
        assert_eq!(got.data(), &want[..]);
        let none = tta_logits(&model, &store, &data, &idx, pre, Tta::None);
        assert_eq!(none.data(), a.data());

        // The evaluation's loss and accuracy are those of the combined
        // logits (one batch: no batch-size effects on the logits).
        let r = evaluate_tta(
            &model,
            &store,
            &data,
            20,
            pre,
            Tta::Flip,
            &AtomicBool::new(false),
        )
        .unwrap();
        let labels = labels(&data);
        assert_eq!(r.loss, ops::cross_entropy(&got, &labels));
        let correct = crate::metrics::count_correct(got.data(), &labels);
        assert_eq!(r.accuracy, correct as f64 / 20.0);
        assert_eq!(r.confusion.correct(), correct as u64);
        assert_eq!(r.images, 20);
    }

    #[test]
    fn flip_translate_logits_weight_six_views_like_airbench() {
        let (model, store, data) = setup();
        let pre = Preprocess::Caffe;
        let idx: Vec<usize> = (0..data.len()).collect();
        let view = |d: &Dataset| {
            let x = batch(d, pre);
            (
                logits(&model, &store, x.clone()),
                logits(&model, &store, mirrored(&x)),
            )
        };
        let (plain, (window_00, window_22)) = (
            view(&data),
            (view(&shifted(&data, -1)), view(&shifted(&data, 1))),
        );
        let got = tta_logits(&model, &store, &data, &idx, pre, Tta::FlipTranslate);
        for i in 0..got.numel() {
            let want = 0.25 * (plain.0.data()[i] + plain.1.data()[i])
                + 0.125
                    * (window_00.0.data()[i]
                        + window_00.1.data()[i]
                        + window_22.0.data()[i]
                        + window_22.1.data()[i]);
            let g = got.data()[i];
            assert!(
                (g - want).abs() <= 1e-5 * want.abs().max(1.0),
                "logit {i}: {g} vs {want}"
            );
        }
        // Not the flip-only combination: the shifted views count.
        let flip = tta_logits(&model, &store, &data, &idx, pre, Tta::Flip);
        assert_ne!(got.data(), flip.data());
    }

    #[test]
    fn no_tta_is_the_plain_evaluation() {
        let (model, store, data) = setup();
        let pre = Preprocess::Unit;
        let stop = AtomicBool::new(false);
        // The evaluation as written before test-time augmentation existed:
        // plain batches of 7 (a partial last one), batch-size-weighted mean
        // of the batch losses.
        let idx: Vec<usize> = (0..data.len()).collect();
        let mut meter = Meter::new();
        let mut confusion = ConfusionMatrix::new(&data.classes);
        for chunk in idx.chunks(7) {
            let mut x = Tensor::zeros(&[chunk.len(), 32, 32, 3]);
            data.fill_batch(chunk, pre, None, x.data_mut());
            let l: Vec<usize> = chunk.iter().map(|&i| data.labels[i] as usize).collect();
            let z = logits(&model, &store, x);
            meter.update(ops::cross_entropy(&z, &l), z.data(), &l);
            confusion.add_batch(z.data(), &l);
        }
        let plain = evaluate(&model, &store, &data, 7, pre);
        let none = evaluate_tta(&model, &store, &data, 7, pre, Tta::None, &stop).unwrap();
        for r in [&plain, &none] {
            assert_eq!(r.loss.to_bits(), meter.loss().to_bits());
            assert_eq!(r.accuracy, meter.accuracy());
            assert_eq!(r.confusion, confusion);
            assert_eq!(r.images, 20);
        }
        let flip = evaluate_tta(&model, &store, &data, 7, pre, Tta::Flip, &stop).unwrap();
        assert_ne!(flip.loss, plain.loss);
        // A raised stop flag ends the pass.
        let stopped = AtomicBool::new(true);
        assert!(evaluate_tta(&model, &store, &data, 7, pre, Tta::Flip, &stopped).is_none());
    }
}
