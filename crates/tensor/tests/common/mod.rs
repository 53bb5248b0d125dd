//! Helpers shared by the kernel test suites.
#![allow(dead_code)]

/// Deterministic pseudo-random values in [-1, 1) from a seed (xorshift), so a
/// proptest case is a handful of integers and shrinks quickly.
pub fn data(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// Values from a small set of integers, so that maxima tie often.
pub fn coarse(len: usize, seed: u64) -> Vec<f32> {
    data(len, seed)
        .into_iter()
        .map(|v| (v * 3.0).round())
        .collect()
}

pub fn abs(v: &[f32]) -> Vec<f32> {
    v.iter().map(|x| x.abs()).collect()
}

/// Relative tolerance for f32 sums of products, measured against `bound`, the
/// same sum taken over the absolute values of every term (`sum |a_i * b_i|`),
/// which is what floating-point error scales with.
///
/// Why 1e-5: the worst-case rounding error of a length-K f32 sum is about
/// `K * 2^-24 * bound`, and blocked/FMA summation as done by the GEMM kernels
/// behaves like `sqrt(K) * 2^-24 * bound` (~3e-6 * bound at K = 2700, the
/// largest K in these suites, ~1e-6 for most). 1e-5 leaves a 3x margin over
/// that, while a dropped, doubled or misplaced term changes a result by about
/// `bound / K`, at least 4e-4 * bound here: 40x above the tolerance.
pub const SUM_RTOL: f32 = 1e-5;

/// Asserts `|got - want| <= rtol * bound + 1e-30` element by element (and that
/// nothing is NaN where the reference is not), reporting the worst element.
pub fn assert_close(what: &str, got: &[f32], want: &[f32], bound: &[f32], rtol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    assert_eq!(bound.len(), want.len(), "{what}: bound length");
    let mut worst: Option<(usize, f32)> = None;
    for (i, ((&g, &w), &b)) in got.iter().zip(want).zip(bound).enumerate() {
        let err = (g - w).abs();
        let tol = rtol * b.abs() + 1e-30;
        if err > tol || g.is_nan() != w.is_nan() {
            let excess = if err.is_nan() {
                f32::INFINITY
            } else {
                err / tol
            };
            if worst.is_none_or(|(_, e)| excess > e) {
                worst = Some((i, excess));
            }
        }
    }
    if let Some((i, _)) = worst {
        panic!(
            "{what}: element {i} of {}: got {} want {} (bound {}, rtol {rtol})",
            want.len(),
            got[i],
            want[i],
            bound[i]
        );
    }
}
