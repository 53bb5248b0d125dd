//! Softmax cross-entropy from logits, averaged over the batch:
//! `L = mean_n( logsumexp(z_n) - z_n[label_n] )`, and
//! `dL/dz = (softmax(z) - onehot(label)) / N`.
//!
//! Computing from logits with the max subtracted never overflows and never
//! takes the log of a rounded-to-zero probability.

use crate::graph::{Backward, BackwardCtx, Graph, OpInfo, Var};
use tensor::Tensor;

/// Row-wise softmax of `[N, K]` logits.
pub fn softmax(logits: &Tensor) -> Tensor {
    let &[_, k] = logits.shape() else {
        panic!("softmax: logits must be [N, K], got {:?}", logits.shape())
    };
    let mut p = logits.clone();
    for row in p.data_mut().chunks_exact_mut(k) {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0.0f64;
        for v in row.iter_mut() {
            *v = (*v - max).exp();
            sum += *v as f64;
        }
        let inv = (1.0 / sum) as f32;
        row.iter_mut().for_each(|v| *v *= inv);
    }
    p
}

/// Mean cross-entropy of `[N, K]` logits against integer labels, in f64:
/// `mean_n(logsumexp(z_n) - z_n[label_n])`. Panics on a label out of range.
pub fn cross_entropy(logits: &Tensor, labels: &[usize]) -> f64 {
    let &[n, k] = logits.shape() else {
        panic!(
            "cross-entropy: logits must be [N, K], got {:?}",
            logits.shape()
        )
    };
    assert_eq!(
        labels.len(),
        n,
        "cross-entropy: {} labels for {n} rows of logits",
        labels.len()
    );
    let mut loss = 0.0f64;
    for (row, &label) in logits.data().chunks_exact(k).zip(labels) {
        assert!(
            label < k,
            "cross-entropy: label {label} is not below the {k} classes"
        );
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        let lse = max
            + row
                .iter()
                .map(|&v| (v as f64 - max).exp())
                .sum::<f64>()
                .ln();
        loss += lse - row[label] as f64;
    }
    loss / n.max(1) as f64
}

/// Mean cross-entropy of `[N, K]` logits against integer labels; a scalar.
pub fn softmax_cross_entropy(g: &mut Graph, logits: Var, labels: &[usize]) -> Var {
    let z = g.value(logits);
    let loss = cross_entropy(z, labels);
    let probs = softmax(z);
    let value = Tensor::scalar(loss as f32);
    g.push(
        value,
        &[logits],
        OpInfo::named("softmax_cross_entropy"),
        CrossEntropyBackward {
            probs,
            labels: labels.to_vec(),
        },
    )
}

struct CrossEntropyBackward {
    probs: Tensor,
    labels: Vec<usize>,
}

impl Backward for CrossEntropyBackward {
    fn backward(&self, _ctx: &BackwardCtx, dy: Tensor) -> Vec<Option<Tensor>> {
        let &[n, k] = self.probs.shape() else {
            unreachable!()
        };
        let scale = dy.item() / n as f32;
        let mut dz = self.probs.clone();
        for (row, &label) in dz.data_mut().chunks_exact_mut(k).zip(&self.labels) {
            row[label] -= 1.0;
            row.iter_mut().for_each(|v| *v *= scale);
        }
        vec![Some(dz)]
    }
}
