//! The per-channel passes of batch normalization over `[rows, channels]`
//! data (NHWC flattened): statistics forward, and the two passes of the
//! closed-form backward.
//!
//! Reductions split the rows into fixed blocks, sum each block in f32 over
//! short runs and in f64 across runs, and add the blocks *in order*: the
//! result depends only on the data, never on how rayon scheduled the blocks,
//! so training is bit-reproducible at any thread count.

use rayon::prelude::*;

/// Rows per parallel block (fixed: the summation order must not depend on
/// the thread count).
const BLOCK_ROWS: usize = 256;
/// Rows summed in f32 before being added into the f64 block total.
const RUN_ROWS: usize = 32;

/// Sums `f(row_range, acc)` over fixed row blocks; `acc` holds `width` f32
/// accumulators that `f` adds its rows into. Returns the f64 totals.
fn reduce_rows(
    rows: usize,
    width: usize,
    f: impl Fn(std::ops::Range<usize>, &mut [f32]) + Sync,
) -> Vec<f64> {
    let blocks = rows.div_ceil(BLOCK_ROWS);
    let block_total = |b: usize| {
        let mut total = vec![0.0f64; width];
        let mut run = vec![0.0f32; width];
        let end = ((b + 1) * BLOCK_ROWS).min(rows);
        for r0 in (b * BLOCK_ROWS..end).step_by(RUN_ROWS) {
            run.fill(0.0);
            f(r0..(r0 + RUN_ROWS).min(end), &mut run);
            total
                .iter_mut()
                .zip(&run)
                .for_each(|(t, &r)| *t += r as f64);
        }
        total
    };
    let partials: Vec<Vec<f64>> = if rows * width < 1 << 15 {
        (0..blocks).map(block_total).collect()
    } else {
        (0..blocks).into_par_iter().map(block_total).collect()
    };
    let mut sums = vec![0.0f64; width];
    for p in partials {
        sums.iter_mut().zip(p).for_each(|(s, v)| *s += v);
    }
    sums
}

/// Per-channel mean and biased variance (`sum((x - mean)^2) / rows`), in two
/// passes: a one-pass `E[x^2] - mean^2` cancels catastrophically when
/// `|mean| >> sigma`.
pub fn mean_and_variance(x: &[f32], c: usize) -> (Vec<f32>, Vec<f32>) {
    assert!(
        c > 0 && x.len().is_multiple_of(c),
        "batch norm: {} values are not rows of {c}",
        x.len()
    );
    let rows = x.len() / c;
    let n = rows.max(1) as f64;
    let sum = reduce_rows(rows, c, |r, acc| {
        for row in x[r.start * c..r.end * c].chunks_exact(c) {
            acc.iter_mut().zip(row).for_each(|(a, &v)| *a += v);
        }
    });
    let mean: Vec<f32> = sum.iter().map(|s| (s / n) as f32).collect();
    let sq = reduce_rows(rows, c, |r, acc| {
        for row in x[r.start * c..r.end * c].chunks_exact(c) {
            for ((a, &v), &m) in acc.iter_mut().zip(row).zip(&mean) {
                let d = v - m;
                *a += d * d;
            }
        }
    });
    (mean, sq.iter().map(|s| (s / n) as f32).collect())
}

/// `y = max(x * scale + shift, 0)` per channel: batchnorm's affine map and
/// the ReLU after it in one pass (a NaN passes through, as in
/// [`crate::elementwise::relu`]).
pub fn affine_relu(x: &[f32], scale: &[f32], shift: &[f32], y: &mut [f32]) {
    let c = scale.len();
    assert!(
        x.len() == y.len() && x.len().is_multiple_of(c),
        "batch norm: shapes"
    );
    let kernel = |y: &mut [f32], x: &[f32]| {
        for (yr, xr) in y.chunks_exact_mut(c).zip(x.chunks_exact(c)) {
            for i in 0..c {
                let v = xr[i] * scale[i] + shift[i];
                yr[i] = if v <= 0.0 { 0.0 } else { v };
            }
        }
    };
    let chunk = BLOCK_ROWS * c;
    if y.len() < 1 << 15 {
        kernel(y, x);
    } else {
        y.par_chunks_mut(chunk)
            .zip(x.par_chunks(chunk))
            .for_each(|(y, x)| kernel(y, x));
    }
}

/// `y = max(residual + (x * scale + shift), 0)` per channel: batchnorm's
/// affine map, the residual addition after it and the block's last ReLU in
/// one pass; each step the same f32 operation as the separate kernels.
pub fn affine_add_relu(x: &[f32], scale: &[f32], shift: &[f32], residual: &[f32], y: &mut [f32]) {
    let c = scale.len();
    assert!(
        x.len() == y.len() && x.len() == residual.len() && x.len().is_multiple_of(c),
        "batch norm + add: shapes"
    );
    let kernel = |y: &mut [f32], x: &[f32], r: &[f32]| {
        for ((yr, xr), rr) in y
            .chunks_exact_mut(c)
            .zip(x.chunks_exact(c))
            .zip(r.chunks_exact(c))
        {
            for i in 0..c {
                let v = rr[i] + (xr[i] * scale[i] + shift[i]);
                yr[i] = if v <= 0.0 { 0.0 } else { v };
            }
        }
    };
    let chunk = BLOCK_ROWS * c;
    if y.len() < 1 << 15 {
        kernel(y, x, residual);
    } else {
        y.par_chunks_mut(chunk)
            .zip(x.par_chunks(chunk))
            .zip(residual.par_chunks(chunk))
            .for_each(|((y, x), r)| kernel(y, x, r));
    }
}

/// `dy`, or, when the batchnorm feeds a ReLU whose output is `relu_out`, `dy`
/// where that output is positive and 0 elsewhere (the ReLU's backward).
#[inline(always)]
fn through_relu<const RELU: bool>(dy: f32, relu_out: f32) -> f32 {
    if !RELU || relu_out > 0.0 {
        dy
    } else {
        0.0
    }
}

fn backward_sums_impl<const RELU: bool>(
    x: &[f32],
    relu_out: &[f32],
    dy: &[f32],
    mean: &[f32],
    inv_sigma: &[f32],
) -> (Vec<f32>, Vec<f32>) {
    let c = mean.len();
    assert!(
        x.len() == dy.len() && x.len() == relu_out.len() && x.len().is_multiple_of(c),
        "batch norm backward: shapes"
    );
    let rows = x.len() / c;
    let sums = reduce_rows(rows, 2 * c, |r, acc| {
        let (s_dy, s_dyx) = acc.split_at_mut(c);
        let span = r.start * c..r.end * c;
        let rows = x[span.clone()]
            .chunks_exact(c)
            .zip(relu_out[span.clone()].chunks_exact(c))
            .zip(dy[span].chunks_exact(c));
        for ((xr, yr), gr) in rows {
            for i in 0..c {
                let g = through_relu::<RELU>(gr[i], yr[i]);
                s_dy[i] += g;
                s_dyx[i] += g * (xr[i] - mean[i]) * inv_sigma[i];
            }
        }
    });
    let (a, b) = sums.split_at(c);
    (
        a.iter().map(|&v| v as f32).collect(),
        b.iter().map(|&v| v as f32).collect(),
    )
}

/// The two sums of the backward pass, in one read of `x` and `dy`:
/// `sum(dy)` and `sum(dy * xhat)` with `xhat = (x - mean) * inv_sigma`.
pub fn backward_sums(
    x: &[f32],
    dy: &[f32],
    mean: &[f32],
    inv_sigma: &[f32],
) -> (Vec<f32>, Vec<f32>) {
    backward_sums_impl::<false>(x, dy, dy, mean, inv_sigma)
}

/// [`backward_sums`] for a batchnorm followed by a ReLU with output
/// `relu_out`, `dy` being the gradient of that output.
pub fn backward_sums_relu(
    x: &[f32],
    relu_out: &[f32],
    dy: &[f32],
    mean: &[f32],
    inv_sigma: &[f32],
) -> (Vec<f32>, Vec<f32>) {
    backward_sums_impl::<true>(x, relu_out, dy, mean, inv_sigma)
}

fn backward_input_impl<const RELU: bool>(
    x: &[f32],
    relu_out: &[f32],
    dy: &[f32],
    k: &[f32],
    a: &[f32],
    b: &[f32],
    dx: &mut [f32],
) {
    let c = k.len();
    assert!(
        x.len() == dy.len() && x.len() == dx.len() && x.len() == relu_out.len(),
        "batch norm backward: shapes"
    );
    let kernel = |dx: &mut [f32], x: &[f32], y: &[f32], dy: &[f32]| {
        let rows = dx
            .chunks_exact_mut(c)
            .zip(x.chunks_exact(c))
            .zip(y.chunks_exact(c))
            .zip(dy.chunks_exact(c));
        for (((dr, xr), yr), gr) in rows {
            for i in 0..c {
                dr[i] = k[i] * through_relu::<RELU>(gr[i], yr[i]) + a[i] * xr[i] + b[i];
            }
        }
    };
    let chunk = BLOCK_ROWS * c;
    if dx.len() < 1 << 15 {
        kernel(dx, x, relu_out, dy);
    } else {
        dx.par_chunks_mut(chunk)
            .zip(x.par_chunks(chunk))
            .zip(relu_out.par_chunks(chunk))
            .zip(dy.par_chunks(chunk))
            .for_each(|(((dx, x), y), dy)| kernel(dx, x, y, dy));
    }
}

/// `dx = k * dy + a * x + b` per channel: the training-mode input gradient
/// `gamma / sigma * (dy - mean(dy) - xhat * mean(dy * xhat))` with its
/// per-channel constants folded into `k`, `a`, `b` by the caller.
pub fn backward_input(x: &[f32], dy: &[f32], k: &[f32], a: &[f32], b: &[f32], dx: &mut [f32]) {
    backward_input_impl::<false>(x, dy, dy, k, a, b, dx)
}

/// [`backward_input`] for a batchnorm followed by a ReLU with output
/// `relu_out` (`dy` is masked where that output is not positive).
pub fn backward_input_relu(
    x: &[f32],
    relu_out: &[f32],
    dy: &[f32],
    k: &[f32],
    a: &[f32],
    b: &[f32],
    dx: &mut [f32],
) {
    backward_input_impl::<true>(x, relu_out, dy, k, a, b, dx)
}

/// [`backward_input_relu`] that also leaves `dy` masked by the ReLU (`dy`
/// where `relu_out` is positive, 0 elsewhere), in the same pass: when a
/// residual was added before the ReLU, that masked `dy` is the residual's
/// gradient, and a separate ReLU backward pass is saved.
pub fn backward_input_relu_masking(
    x: &[f32],
    relu_out: &[f32],
    dy: &mut [f32],
    k: &[f32],
    a: &[f32],
    b: &[f32],
    dx: &mut [f32],
) {
    let c = k.len();
    assert!(
        x.len() == dy.len() && x.len() == dx.len() && x.len() == relu_out.len(),
        "batch norm backward: shapes"
    );
    let kernel = |dx: &mut [f32], x: &[f32], y: &[f32], dy: &mut [f32]| {
        let rows = dx
            .chunks_exact_mut(c)
            .zip(x.chunks_exact(c))
            .zip(y.chunks_exact(c))
            .zip(dy.chunks_exact_mut(c));
        for (((dr, xr), yr), gr) in rows {
            for i in 0..c {
                let g = through_relu::<true>(gr[i], yr[i]);
                dr[i] = k[i] * g + a[i] * xr[i] + b[i];
                gr[i] = g;
            }
        }
    };
    let chunk = BLOCK_ROWS * c;
    if dx.len() < 1 << 15 {
        kernel(dx, x, relu_out, dy);
    } else {
        dx.par_chunks_mut(chunk)
            .zip(x.par_chunks(chunk))
            .zip(relu_out.par_chunks(chunk))
            .zip(dy.par_chunks_mut(chunk))
            .for_each(|(((dx, x), y), dy)| kernel(dx, x, y, dy));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masking_input_gradient_equals_the_two_passes() {
        let (rows, c) = (700, 5);
        let x = data(rows, c);
        let y: Vec<f32> = x
            .iter()
            .map(|v| if (*v as i32) % 3 == 0 { 0.0 } else { *v })
            .collect();
        let dy: Vec<f32> = x.iter().map(|v| v.sin()).collect();
        let (k, a, b) = ([0.5, -1.0, 2.0, 0.1, 3.0], [1.0; 5], [-0.25; 5]);
        let mut want = vec![f32::NAN; x.len()];
        backward_input_relu(&x, &y, &dy, &k, &a, &b, &mut want);
        let mut want_dy = dy.clone();
        crate::elementwise::relu_backward(&y, &mut want_dy);
        let (mut dx, mut masked) = (vec![f32::NAN; x.len()], dy.clone());
        backward_input_relu_masking(&x, &y, &mut masked, &k, &a, &b, &mut dx);
        assert_eq!(dx, want);
        assert_eq!(masked, want_dy);
        assert!(masked.contains(&0.0) && masked.iter().any(|&v| v != 0.0));
    }

    fn data(rows: usize, c: usize) -> Vec<f32> {
        (0..rows * c)
            .map(|i| ((i * 7919 % 1009) as f32) / 100.0 + 50.0)
            .collect()
    }

    #[test]
    fn statistics_match_f64_and_survive_a_large_mean() {
        for &(rows, c) in &[(1, 3), (33, 5), (4096, 64), (16384, 7)] {
            let x = data(rows, c);
            let (mean, var) = mean_and_variance(&x, c);
            for ch in 0..c {
                let v: Vec<f64> = x.iter().skip(ch).step_by(c).map(|&v| v as f64).collect();
                let m = v.iter().sum::<f64>() / rows as f64;
                let s = v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / rows as f64;
                // The mean is ~55 and the spread ~3: a one-pass formula would
                // lose ~3 digits here; the two-pass one keeps f32 precision.
                assert!(
                    (mean[ch] as f64 - m).abs() <= 1e-6 * m.abs(),
                    "{rows}x{c} mean"
                );
                assert!(
                    (var[ch] as f64 - s).abs() <= 1e-5 * s.max(1e-3),
                    "{rows}x{c} var {} vs {s}",
                    var[ch]
                );
            }
        }
    }

    #[test]
    fn backward_sums_match_f64() {
        let (rows, c) = (3000, 9);
        let x = data(rows, c);
        let dy: Vec<f32> = (0..rows * c)
            .map(|i| ((i * 31 % 97) as f32) / 50.0 - 1.0)
            .collect();
        let mean: Vec<f32> = (0..c).map(|i| 55.0 + i as f32 * 0.1).collect();
        let inv: Vec<f32> = (0..c).map(|i| 0.3 + i as f32 * 0.01).collect();
        let (s1, s2) = backward_sums(&x, &dy, &mean, &inv);
        for ch in 0..c {
            let (mut e1, mut e2) = (0.0f64, 0.0f64);
            for r in 0..rows {
                let (xv, g) = (x[r * c + ch] as f64, dy[r * c + ch] as f64);
                e1 += g;
                e2 += g * (xv - mean[ch] as f64) * inv[ch] as f64;
            }
            assert!(
                (s1[ch] as f64 - e1).abs() < 1e-4 * (1.0 + e1.abs()),
                "sum dy {ch}"
            );
            assert!(
                (s2[ch] as f64 - e2).abs() < 1e-4 * (1.0 + e2.abs()),
                "sum dy*xhat {ch}"
            );
        }
    }

    #[test]
    fn reductions_do_not_depend_on_the_thread_count() {
        let x = data(20000, 16);
        let serial = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        let a = serial.install(|| mean_and_variance(&x, 16));
        let b = mean_and_variance(&x, 16);
        assert_eq!(a, b);
    }
}
