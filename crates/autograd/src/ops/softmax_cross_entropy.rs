//! Softmax cross-entropy from logits, averaged over the batch:
//! `L = mean_n( logsumexp(z_n) - z_n[label_n] )`, and
//! `dL/dz = (softmax(z) - onehot(label)) / N`.
//!
//! Computing from logits with the max subtracted never overflows and never
//! takes the log of a rounded-to-zero probability.
//!
//! The label-smoothed variant is Keras's
//! `CategoricalCrossentropy(label_smoothing=s)`: the target of a row is
//! `onehot(label) * (1 - s) + s / K`, so
//! `L = mean_n( logsumexp(z_n) - sum_k t_nk z_nk )` (the targets sum to 1)
//! and `dL/dz = (softmax(z) - t) / N`.

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
    let (n, rows) = labelled_rows(logits, labels);
    let mut loss = 0.0f64;
    for (row, label) in rows {
        loss += logsumexp(row) - row[label] as f64;
    }
    loss / n.max(1) as f64
}

/// The rows of `[N, K]` logits with their labels, and N; panics on a shape
/// that is not `[N, K]`, a label count other than N, or (as the rows are
/// taken) a label not below K.
fn labelled_rows<'a>(
    logits: &'a Tensor,
    labels: &'a [usize],
) -> (usize, impl Iterator<Item = (&'a [f32], usize)>) {
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
    let rows = logits
        .data()
        .chunks_exact(k)
        .zip(labels)
        .map(move |(row, &label)| {
            assert!(
                label < k,
                "cross-entropy: label {label} is not below the {k} classes"
            );
            (row, label)
        });
    (n, rows)
}

/// `log(sum(exp(row)))` in f64, with the max subtracted first.
fn logsumexp(row: &[f32]) -> f64 {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    max + row
        .iter()
        .map(|&v| (v as f64 - max).exp())
        .sum::<f64>()
        .ln()
}

/// Panics unless `smoothing` is in `[0, 1)`: at 1 every target is uniform
/// and the labels no longer matter. The caller validates user input.
fn check_smoothing(smoothing: f32) {
    assert!(
        (0.0..1.0).contains(&smoothing),
        "label smoothing {smoothing}: must be in [0, 1)"
    );
}

/// Mean label-smoothed cross-entropy of `[N, K]` logits, in f64: each row's
/// target is `onehot(label) * (1 - smoothing) + smoothing / K` (Keras's
/// `label_smoothing`), so the loss is
/// `mean_n(logsumexp(z_n) - (1 - s) z_n[label_n] - (s / K) sum_k z_nk)`.
/// With `smoothing` 0 this is [`cross_entropy`] bit for bit. Panics on a
/// label out of range or a smoothing outside `[0, 1)`.
pub fn smoothed_cross_entropy(logits: &Tensor, labels: &[usize], smoothing: f32) -> f64 {
    check_smoothing(smoothing);
    let (n, rows) = labelled_rows(logits, labels);
    let s = smoothing as f64;
    let mut loss = 0.0f64;
    for (row, label) in rows {
        let sum: f64 = row.iter().map(|&v| v as f64).sum();
        // At s = 0 the last term is an exact 0 and (1 - s) an exact 1: the
        // same f64 operations as `cross_entropy`.
        loss += logsumexp(row) - (1.0 - s) * row[label] as f64 - s / row.len() as f64 * sum;
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

/// Mean label-smoothed cross-entropy ([`smoothed_cross_entropy`]) of
/// `[N, K]` logits against integer labels; a scalar. `smoothing` 0 is
/// [`softmax_cross_entropy`], value and gradient bit for bit. Panics on a
/// smoothing outside `[0, 1)`.
pub fn softmax_cross_entropy_smoothed(
    g: &mut Graph,
    logits: Var,
    labels: &[usize],
    smoothing: f32,
) -> Var {
    let z = g.value(logits);
    let loss = smoothed_cross_entropy(z, labels, smoothing);
    let probs = softmax(z);
    let value = Tensor::scalar(loss as f32);
    g.push(
        value,
        &[logits],
        OpInfo::named("softmax_cross_entropy_smoothed"),
        SmoothedCrossEntropyBackward {
            probs,
            labels: labels.to_vec(),
            smoothing,
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

struct SmoothedCrossEntropyBackward {
    probs: Tensor,
    labels: Vec<usize>,
    smoothing: f32,
}

impl Backward for SmoothedCrossEntropyBackward {
    /// `dL/dz = (softmax(z) - t) / N` with `t = onehot * (1 - s) + s / K`.
    fn backward(&self, _ctx: &BackwardCtx, dy: Tensor) -> Vec<Option<Tensor>> {
        let &[n, k] = self.probs.shape() else {
            unreachable!()
        };
        let scale = dy.item() / n as f32;
        let off = self.smoothing / k as f32;
        // The label's target, 1 exactly when s = 0.
        let on = 1.0 - self.smoothing + off;
        let mut dz = self.probs.clone();
        for (row, &label) in dz.data_mut().chunks_exact_mut(k).zip(&self.labels) {
            for (j, v) in row.iter_mut().enumerate() {
                *v -= if j == label { on } else { off };
                *v *= scale;
            }
        }
        vec![Some(dz)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Mode, ParamStore};

    /// The loss and the logits' gradient of `loss_op` on `logits`.
    fn value_and_grad(
        logits: &Tensor,
        loss_op: impl Fn(&mut Graph, Var) -> Var,
    ) -> (Tensor, Tensor) {
        let params = ParamStore::new();
        let mut g = Graph::new(&params, Mode::TRAIN);
        let z = g.leaf(logits.clone(), true);
        let loss = loss_op(&mut g, z);
        let value = g.value(loss).clone();
        let grads = g.backward(loss);
        (value, grads.leaf(z).unwrap().clone())
    }

    /// Row 0 is `[0, ln 2, 0]`: softmax `[1/4, 1/2, 1/4]`, logsumexp `ln 4`;
    /// row 1 is `[0, 0, 0]`: softmax `1/3` each, logsumexp `ln 3`. Labels
    /// `[1, 0]`, smoothing 0.3 over K = 3: targets `[0.1, 0.8, 0.1]` and
    /// `[0.8, 0.1, 0.1]`.
    /// Loss: row 0 `ln 4 - 0.8 ln 2 = 1.2 ln 2 = 0.8317766`, row 1
    /// `ln 3 - 0 = 1.0986123`, mean `0.9651945`.
    /// Gradient `(p - t) / 2`: row 0 `[0.15, -0.3, 0.15] / 2`, row 1
    /// `[1/3 - 0.8, 1/3 - 0.1, 1/3 - 0.1] / 2`.
    #[test]
    fn smoothed_loss_and_gradient_by_hand() {
        let ln2 = std::f32::consts::LN_2;
        let logits = Tensor::from_vec(&[2, 3], vec![0.0, ln2, 0.0, 0.0, 0.0, 0.0]).unwrap();
        let (value, grad) = value_and_grad(&logits, |g, z| {
            softmax_cross_entropy_smoothed(g, z, &[1, 0], 0.3)
        });
        assert!(
            (value.item() - 0.965_194_45).abs() < 1e-6,
            "{}",
            value.item()
        );
        let want = [
            0.075,
            -0.15,
            0.075,
            -0.233_333_33,
            0.116_666_67,
            0.116_666_67,
        ];
        for (i, (g, w)) in grad.data().iter().zip(want).enumerate() {
            assert!((g - w).abs() < 1e-6, "element {i}: {g} vs {w}");
        }
    }

    /// Smoothing 0 is the plain op, value and gradient bit for bit.
    #[test]
    fn zero_smoothing_is_the_plain_op_bit_for_bit() {
        let logits = Tensor::from_vec(
            &[3, 4],
            vec![
                0.3, -1.7, 2.9, 0.01, 5.5, -3.25, 0.0, 1.125, -0.7, -0.7, 0.4, 12.0,
            ],
        )
        .unwrap();
        let labels = [2, 0, 1];
        let plain = value_and_grad(&logits, |g, z| softmax_cross_entropy(g, z, &labels));
        let smoothed = value_and_grad(&logits, |g, z| {
            softmax_cross_entropy_smoothed(g, z, &labels, 0.0)
        });
        assert_eq!(plain.0.item().to_bits(), smoothed.0.item().to_bits());
        let bits = |t: &Tensor| t.data().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&plain.1), bits(&smoothed.1));
        assert_eq!(
            cross_entropy(&logits, &labels).to_bits(),
            smoothed_cross_entropy(&logits, &labels, 0.0).to_bits()
        );
        // And a smoothing above 0 changes both.
        let other = value_and_grad(&logits, |g, z| {
            softmax_cross_entropy_smoothed(g, z, &labels, 0.1)
        });
        assert_ne!(plain.0.item(), other.0.item());
        assert_ne!(bits(&plain.1), bits(&other.1));
    }

    #[test]
    #[should_panic(expected = "label smoothing 1: must be in [0, 1)")]
    fn smoothing_of_one_is_refused() {
        let logits = Tensor::zeros(&[1, 2]);
        smoothed_cross_entropy(&logits, &[0], 1.0);
    }

    #[test]
    #[should_panic(expected = "label smoothing -0.1: must be in [0, 1)")]
    fn negative_smoothing_is_refused() {
        let params = ParamStore::new();
        let mut g = Graph::new(&params, Mode::TRAIN);
        let z = g.leaf(Tensor::zeros(&[1, 2]), true);
        softmax_cross_entropy_smoothed(&mut g, z, &[0], -0.1);
    }

    #[test]
    #[should_panic(expected = "label smoothing NaN: must be in [0, 1)")]
    fn nan_smoothing_is_refused() {
        smoothed_cross_entropy(&Tensor::zeros(&[1, 2]), &[0], f32::NAN);
    }
}
