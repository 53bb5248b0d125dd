//! Elementwise and per-channel kernels against the naive references, at
//! lengths on both sides of the parallel threshold and with channel counts
//! that are not multiples of any SIMD width.

use proptest::prelude::*;
use tensor::elementwise::{
    add, add_assign, channel_affine, channel_dot, channel_sum, channel_sum_sq, relu, relu_backward,
    scale, PARALLEL_MIN,
};
use tensor::reference;
use tensor::testing::{abs, assert_close, data};

fn length() -> impl Strategy<Value = usize> {
    prop_oneof![
        0usize..=100,
        101usize..=PARALLEL_MIN + 5000,
        Just(PARALLEL_MIN)
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// One rounding each and the same operation order as the reference:
    /// these must be bit-exact.
    #[test]
    fn pointwise_kernels_are_exact(len in length(), s in -3.0f32..3.0, seed in any::<u32>()) {
        let seed = seed as u64;
        let mut a = data(len, seed);
        // Some exact zeros, where relu's choice matters.
        for v in a.iter_mut().step_by(7) {
            *v = 0.0;
        }
        let b = data(len, seed + 1);
        let mut out = vec![f32::NAN; len];
        add(&a, &b, &mut out);
        prop_assert_eq!(&out, &reference::add(&a, &b));
        let mut acc = a.clone();
        add_assign(&mut acc, &b);
        prop_assert_eq!(&acc, &reference::add(&a, &b));
        let mut sc = a.clone();
        scale(&mut sc, s);
        prop_assert_eq!(&sc, &reference::scale(&a, s));
        let mut y = vec![f32::NAN; len];
        relu(&a, &mut y);
        prop_assert_eq!(&y, &reference::relu(&a));
        let mut d = b.clone();
        relu_backward(&y, &mut d);
        prop_assert_eq!(&d, &reference::relu_backward(&y, &b));
    }

    /// Per-channel reductions (f32 runs added in f64) and the affine map
    /// (two roundings against the reference's one).
    #[test]
    fn channel_kernels_match_reference(
        rows in prop_oneof![1usize..=40, 500usize..=3000],
        c in 1usize..=70,
        seed in any::<u32>(),
    ) {
        let seed = seed as u64;
        let a = data(rows * c, seed);
        let b = data(rows * c, seed + 1);
        // Sums over at most 3000 rows: error ~ sqrt(runs) * 64 * 2^-24 relative
        // to the absolute sum, far below SUM_RTOL's 1e-5.
        let bound = reference::channel_sum(&abs(&a), c);
        assert_close("channel_sum", &channel_sum(&a, c), &reference::channel_sum(&a, c), &bound, 1e-5);
        let sq = reference::channel_sum_sq(&a, c);
        assert_close("channel_sum_sq", &channel_sum_sq(&a, c), &sq, &sq, 1e-5);
        let bound = reference::channel_dot(&abs(&a), &abs(&b), c);
        assert_close("channel_dot", &channel_dot(&a, &b, c), &reference::channel_dot(&a, &b, c), &bound, 1e-5);

        let scale = data(c, seed + 2);
        let shift = data(c, seed + 3);
        let mut y = vec![f32::NAN; a.len()];
        channel_affine(&a, &scale, &shift, &mut y);
        let want = reference::channel_affine(&a, &scale, &shift);
        let bound: Vec<f32> = a
            .iter()
            .enumerate()
            .map(|(i, &x)| (x * scale[i % c]).abs() + shift[i % c].abs())
            .collect();
        // x * a + b rounded twice in f32 (or once, fused): 2 ulps of the bound.
        assert_close("channel_affine", &y, &want, &bound, 2.5e-7);
    }
}
