//! The test kit every crate's tests share: deterministic data, and
//! comparisons that say at a glance what went wrong.
//!
//! A failed comparison names the tensor, prints its first values next to the
//! expected ones and the largest difference (as llm.c's `check_tensor`
//! does), so a mismatch is diagnosed from the message alone.

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

/// How many leading values a failure message shows.
const SHOWN: usize = 5;

fn first_values(v: &[f32]) -> String {
    let shown: Vec<String> = v.iter().take(SHOWN).map(|x| format!("{x:.7e}")).collect();
    let more = if v.len() > SHOWN { ", ..." } else { "" };
    format!("[{}{more}]", shown.join(", "))
}

/// Panics with the worst element, the first values of both sides and the
/// largest absolute difference, if `fails(i)` holds for some element;
/// `excess(i)` ranks the failing elements (how far past its tolerance).
fn report(
    what: &str,
    got: &[f32],
    want: &[f32],
    tolerance: &str,
    excess: impl Fn(usize) -> Option<f32>,
) {
    assert_eq!(
        got.len(),
        want.len(),
        "{what}: {} values, the reference has {}",
        got.len(),
        want.len()
    );
    let worst = (0..want.len())
        .filter_map(|i| excess(i).map(|e| (i, e)))
        .max_by(|a, b| a.1.total_cmp(&b.1));
    if let Some((i, _)) = worst {
        let max_diff = got
            .iter()
            .zip(want)
            .map(|(g, w)| (g - w).abs())
            .fold(0.0f32, |m, d| if d.is_nan() { f32::NAN } else { m.max(d) });
        panic!(
            "{what}: element {i} of {}: got {:e} want {:e} ({tolerance})\n  \
             got  {}\n  want {}\n  max |got - want| = {max_diff:e}",
            want.len(),
            got[i],
            want[i],
            first_values(got),
            first_values(want),
        );
    }
}

/// Whether `got` fails against `want` with tolerance `tol` (a NaN on one
/// side only always fails); how far past the tolerance, for ranking.
fn excess(got: f32, want: f32, tol: f32) -> Option<f32> {
    let err = (got - want).abs();
    if got.is_nan() != want.is_nan() || err.is_nan() && !want.is_nan() {
        return Some(f32::INFINITY);
    }
    (err > tol).then(|| err / tol)
}

/// Asserts `|got - want| <= rtol * |bound| + 1e-30` element by element (and
/// that nothing is NaN where the reference is not). `bound` is what rounding
/// error scales with: for a sum of products, the same sum over absolute
/// values (see [`SUM_RTOL`]).
pub fn assert_close(what: &str, got: &[f32], want: &[f32], bound: &[f32], rtol: f32) {
    assert_eq!(bound.len(), want.len(), "{what}: bound length");
    let tolerance = format!("rtol {rtol} of the bound");
    report(what, got, want, &tolerance, |i| {
        excess(got[i], want[i], rtol * bound[i].abs() + 1e-30)
    });
}

/// Asserts `|got - want| <= atol + rtol * |want|` element by element (the
/// usual `allclose`), for values whose error does not come from one long sum.
pub fn check_tensor(what: &str, got: &[f32], want: &[f32], atol: f32, rtol: f32) {
    let tolerance = format!("atol {atol}, rtol {rtol}");
    report(what, got, want, &tolerance, |i| {
        excess(got[i], want[i], atol + rtol * want[i].abs() + 1e-30)
    });
}

/// Asserts that `f` panics with a message containing `expected`: how a
/// kernel's violated precondition is tested (kernels assert, see the crate
/// docs).
pub fn assert_panics(expected: &str, f: impl FnOnce()) {
    let payload = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(()) => panic!("expected a panic containing {expected:?}; there was none"),
        Err(p) => p,
    };
    let message = payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default();
    assert!(
        message.contains(expected),
        "expected a panic containing {expected:?}, got {message:?}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_names_the_tensor_and_shows_the_values() {
        let got = [1.0, 2.0, 3.5];
        let want = [1.0, 2.0, 3.0];
        let message = std::panic::catch_unwind(|| check_tensor("probe", &got, &want, 1e-6, 1e-6))
            .unwrap_err()
            .downcast::<String>()
            .unwrap();
        assert!(message.starts_with("probe: element 2 of 3"), "{message}");
        assert!(message.contains("max |got - want| = 5e-1"), "{message}");
    }

    #[test]
    fn nan_on_one_side_fails_and_on_both_passes() {
        check_tensor("both", &[f32::NAN], &[f32::NAN], 0.0, 0.0);
        assert!(
            std::panic::catch_unwind(|| check_tensor("one", &[f32::NAN], &[1.0], 1.0, 1.0))
                .is_err()
        );
        assert!(
            std::panic::catch_unwind(|| assert_close("one", &[1.0], &[f32::NAN], &[1.0], 1.0))
                .is_err()
        );
    }

    #[test]
    fn within_tolerance_passes() {
        check_tensor("close", &[1.0, -2.0], &[1.0 + 1e-7, -2.0], 1e-6, 0.0);
        assert_close("sum", &[10.0], &[10.0001], &[100.0], 1e-5);
    }
}
