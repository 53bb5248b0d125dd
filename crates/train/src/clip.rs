//! Global gradient-norm clipping, Keras's `global_clipnorm`.
//!
//! Why: a single batch can produce a gradient many times the typical size
//! (at high learning rates with a Keras-initialized ResNet50 the scratch
//! recipe's train accuracy fell from 0.73 to 0.59 within two epochs, several
//! times per run). Clipping the norm of all gradients taken together bounds
//! the step such a batch can take, without changing the direction of the
//! step and without touching the steps of ordinary batches.
//!
//! The rule is `tf.clip_by_global_norm`'s, which Keras's optimizers apply
//! with `global_clipnorm = c`: with `n = sqrt(sum over every parameter's
//! gradient of sum g^2)`, each gradient becomes `g * c / max(n, c)`. Here a
//! gradient whose norm is at most `c` is left exactly as it is (Keras
//! multiplies it by `c * (1 / c)`, which rounds to 1 or to one ulp off it).
//!
//! What it clips: the gradient of the optimized loss (the label-smoothed
//! cross-entropy). This engine's SGD adds its L2 weight decay inside the
//! optimizer update, after clipping, as Keras's optimizers add their
//! `weight_decay`: the decay term is neither measured nor clipped.

use rayon::prelude::*;

/// The Euclidean norm of all the `grads` taken as one vector.
///
/// Summed in f64 (each tensor's squares first in 8 f32 lanes per chunk of
/// 1024, so the sum vectorizes): with 23.6 million gradients an f32 running
/// sum would lose most of its digits. The result does not depend on the
/// number of threads (tensors and chunks are added in a fixed order).
pub fn global_norm(grads: &[&[f32]]) -> f32 {
    let per_tensor: Vec<f64> = grads.par_iter().map(|g| sum_of_squares(g)).collect();
    per_tensor.iter().sum::<f64>().sqrt() as f32
}

fn sum_of_squares(g: &[f32]) -> f64 {
    let mut total = 0.0f64;
    for chunk in g.chunks(1024) {
        let mut lanes = [0.0f32; 8];
        let mut eights = chunk.chunks_exact(8);
        for x in &mut eights {
            for (l, v) in lanes.iter_mut().zip(x) {
                *l += v * v;
            }
        }
        let tail: f32 = eights.remainder().iter().map(|v| v * v).sum();
        total += lanes.iter().map(|&l| l as f64).sum::<f64>() + tail as f64;
    }
    total
}

/// The factor that clips gradients of global norm `norm` to `clip`: 1 when
/// `norm <= clip`, else `clip / norm`. `norm` must be finite.
pub fn clip_factor(norm: f32, clip: f32) -> f32 {
    debug_assert!(norm.is_finite() && clip > 0.0);
    if norm <= clip {
        1.0
    } else {
        clip / norm
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_norm_of_a_hand_made_set_of_gradients() {
        // 3-4-12-84 Pythagorean chain: |(3, 4)| = 5, |(5, 12)| = 13,
        // |(13, 84)| = 85.
        let a = [3.0f32, 4.0];
        let b = [12.0f32];
        let c = [0.0f32, 84.0, 0.0];
        assert_eq!(global_norm(&[&a, &b, &c]), 85.0);
        assert_eq!(global_norm(&[]), 0.0);
    }

    #[test]
    fn the_norm_matches_f64_over_many_values_and_chunk_tails() {
        // Lengths that leave tails of chunks and of 8-lane groups.
        let tensors: Vec<Vec<f32>> = [1usize, 7, 8, 9, 1023, 1024, 1025, 5000]
            .iter()
            .enumerate()
            .map(|(t, &n)| {
                (0..n)
                    .map(|i| (((i * 37 + t * 11) % 101) as f32 - 50.0) * 1e-3)
                    .collect()
            })
            .collect();
        let refs: Vec<&[f32]> = tensors.iter().map(|v| v.as_slice()).collect();
        let exact: f64 = tensors
            .iter()
            .flatten()
            .map(|&v| v as f64 * v as f64)
            .sum::<f64>()
            .sqrt();
        let got = global_norm(&refs) as f64;
        assert!((got - exact).abs() <= 1e-6 * exact, "{got} vs {exact}");
    }

    #[test]
    fn clipping_scales_only_norms_above_the_limit() {
        assert_eq!(clip_factor(85.0, 100.0), 1.0);
        assert_eq!(clip_factor(100.0, 100.0), 1.0);
        assert_eq!(clip_factor(85.0, 17.0), 0.2);
        // Clipped gradients have the limit as their norm.
        let (a, b) = ([3.0f32, 4.0], [12.0f32]);
        let f = clip_factor(global_norm(&[&a, &b]), 6.5);
        let (a2, b2): (Vec<f32>, Vec<f32>) = (
            a.iter().map(|v| v * f).collect(),
            b.iter().map(|v| v * f).collect(),
        );
        assert_eq!(f, 0.5);
        assert_eq!(global_norm(&[&a2, &b2]), 6.5);
    }
}
