//! `Trainer::global_clipnorm` (Keras's `global_clipnorm`) against a hand
//! computation: the step's gradients taken from the graph independently,
//! their norm summed here in f64, the plain-SGD update applied by hand.

mod common;

use autograd::{ops, Graph, Mode, ParamId};
use std::collections::BTreeMap;
use tensor::Tensor;
use train::optim::{LrSchedule, Sgd, SgdConfig};
use train::trainer::Trainer;

const LR: f32 = 0.05;

fn trainer() -> Trainer {
    // Plain SGD (no momentum, no decay): the update is w - lr * g exactly.
    let sgd = Box::new(Sgd::new(SgdConfig::default()));
    common::narrow_trainer(4, 11, sgd, LrSchedule::constant(LR))
}

fn batch(scale: f32) -> (Tensor, Vec<usize>) {
    let n = 4 * 32 * 32 * 3;
    let x = (0..n)
        .map(|i| scale * (((i * 7919) % 255) as f32 / 255.0 - 0.5))
        .collect();
    (
        Tensor::from_vec(&[4, 32, 32, 3], x).unwrap(),
        vec![0, 1, 2, 3],
    )
}

/// The step's gradients, computed as the trainer computes them.
fn gradients(t: &Trainer, x: Tensor, labels: &[usize]) -> BTreeMap<ParamId, Vec<f32>> {
    let mut g = Graph::new(&t.store, Mode::TRAIN);
    let xv = g.input(x);
    let logits = t.model.forward(&mut g, xv).unwrap().logits.unwrap();
    let loss = ops::softmax_cross_entropy_smoothed(&mut g, logits, labels, 0.0);
    let grads = g.backward(loss);
    grads
        .params()
        .map(|(id, v)| (id, v.data().to_vec()))
        .collect()
}

fn norm_f64(grads: &BTreeMap<ParamId, Vec<f32>>) -> f64 {
    grads
        .values()
        .flatten()
        .map(|&v| v as f64 * v as f64)
        .sum::<f64>()
        .sqrt()
}

fn weights(t: &Trainer) -> BTreeMap<ParamId, Vec<f32>> {
    t.store
        .iter()
        .map(|(id, p)| (id, p.value.data().to_vec()))
        .collect()
}

#[test]
fn a_norm_above_the_limit_scales_every_gradient_to_the_limit() {
    let (x, labels) = batch(1.0);
    let mut t = trainer();
    let grads = gradients(&t, x.clone(), &labels);
    let norm = norm_f64(&grads);
    let limit = (norm / 4.0) as f32;
    let before = weights(&t);

    t.global_clipnorm = Some(limit);
    let stats = t.train_step(x, &labels);
    let reported = stats.grad_norm.expect("clipping measures the norm") as f64;
    assert!(
        (reported - norm).abs() <= 1e-6 * norm,
        "{reported} vs {norm}"
    );

    let factor = limit / stats.grad_norm.unwrap();
    assert!((factor - 0.25).abs() < 1e-6, "{factor}");
    let after = weights(&t);
    for (id, g) in &grads {
        let want: Vec<f32> = before[id]
            .iter()
            .zip(g)
            .map(|(&w, &g)| w - LR * (g * factor))
            .collect();
        assert_eq!(after[id], want, "parameter {id:?}");
    }
    assert_eq!(t.global_step, 1);
}

#[test]
fn a_norm_within_the_limit_changes_nothing() {
    let (x, labels) = batch(1.0);
    let mut plain = trainer();
    let norm = norm_f64(&gradients(&plain, x.clone(), &labels));
    let mut clipped = trainer();
    clipped.global_clipnorm = Some(norm as f32 * 1.01);
    assert_eq!(plain.train_step(x.clone(), &labels).grad_norm, None);
    assert!(clipped.train_step(x, &labels).grad_norm.is_some());
    assert_eq!(weights(&plain), weights(&clipped));
}

#[test]
fn a_gradient_of_infinite_norm_is_not_applied() {
    // One NaN pixel: through the batch statistics every gradient is NaN.
    let (mut x, labels) = batch(1.0);
    x.data_mut()[5] = f32::NAN;
    let mut t = trainer();
    t.global_clipnorm = Some(1.0);
    let before = weights(&t);
    let stats = t.train_step(x, &labels);
    assert!(!stats.grad_norm.unwrap().is_finite(), "{stats:?}");
    assert_eq!(weights(&t), before);
    assert_eq!(t.global_step, 0);
    assert_eq!(t.optimizer.step(), 0);
}
