//! Keras's default initializers, seeded: glorot-uniform kernels, zero
//! biases, batchnorm gamma 1 / beta 0 / moving mean 0 / moving variance 1.
//! (Same distributions as Keras; the random streams differ, so seeded weights
//! match Keras only in law. Imported weights match exactly.)
//!
//! Why `rand` alone and not `rand_distr`: the only random initializer the
//! Keras ResNets use is glorot-uniform, and a uniform range is `rand`'s own
//! `gen_range`. `rand_distr` earns its place with normal-based initializers
//! (he_normal, truncated normal), which none of these models has; the
//! augmentations draw integers and booleans. So the dependency is gone.

use rand::rngs::StdRng;
use rand::Rng;
use tensor::Tensor;

/// Glorot (Xavier) uniform: `U(-l, l)` with `l = sqrt(6 / (fan_in + fan_out))`,
/// where for a `[kh, kw, cin, cout]` kernel `fan_in = kh*kw*cin` and
/// `fan_out = kh*kw*cout` (Keras's `compute_fans`), and for `[in, out]` the two dims.
pub fn glorot_uniform(shape: &[usize], rng: &mut StdRng) -> Tensor {
    let receptive: usize = shape[..shape.len() - 2].iter().product();
    let fan_in = receptive * shape[shape.len() - 2];
    let fan_out = receptive * shape[shape.len() - 1];
    let limit = (6.0 / (fan_in + fan_out) as f64).sqrt() as f32;
    let n = shape.iter().product();
    Tensor::from_vec(
        shape,
        (0..n).map(|_| rng.gen_range(-limit..limit)).collect(),
    )
    .expect("shape")
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn glorot_limit_and_spread() {
        let t = glorot_uniform(&[3, 3, 64, 64], &mut StdRng::seed_from_u64(0));
        let limit = (6.0f32 / (9.0 * 128.0)).sqrt();
        assert!(t.data().iter().all(|v| v.abs() <= limit));
        // Variance of U(-l, l) is l^2 / 3.
        let var = t.data().iter().map(|v| v * v).sum::<f32>() / t.numel() as f32;
        assert!(
            (var / (limit * limit / 3.0) - 1.0).abs() < 0.05,
            "variance {var}"
        );
    }
}
