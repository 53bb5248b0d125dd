//! Elementwise and per-channel kernels: what batchnorm, ReLU and residual
//! additions are made of.
//!
//! Each kernel runs on the calling thread for small inputs and splits into
//! rayon chunks above [`PARALLEL_MIN`] elements. The inner loops are plain
//! slice zips, which the compiler turns into SIMD without bounds checks.
//! Per-channel reductions accumulate in f32 over short runs of rows and add
//! the runs in f64, so a sum over 16,384 rows keeps f32's full precision.

use rayon::prelude::*;

/// Below this many elements a kernel stays on the calling thread.
pub const PARALLEL_MIN: usize = 1 << 15;

/// Elements per parallel task (a multiple of every SIMD width).
const CHUNK: usize = 1 << 14;

/// Applies `f` to matching chunks of `out` and `a`, in parallel when large.
fn zip_map(out: &mut [f32], a: &[f32], f: impl Fn(&mut [f32], &[f32]) + Sync) {
    assert_eq!(out.len(), a.len(), "elementwise: length mismatch");
    if out.len() < PARALLEL_MIN {
        f(out, a);
    } else {
        out.par_chunks_mut(CHUNK)
            .zip(a.par_chunks(CHUNK))
            .for_each(|(o, a)| f(o, a));
    }
}

/// `out = a + b`.
pub fn add(a: &[f32], b: &[f32], out: &mut [f32]) {
    assert_eq!(a.len(), b.len(), "add: length mismatch");
    out.copy_from_slice(a);
    add_assign(out, b);
}

/// `dst += src`: gradient accumulation and residual sums.
pub fn add_assign(dst: &mut [f32], src: &[f32]) {
    zip_map(dst, src, |d, s| {
        d.iter_mut().zip(s).for_each(|(d, s)| *d += s)
    });
}

/// `x *= s`.
pub fn scale(x: &mut [f32], s: f32) {
    if x.len() < PARALLEL_MIN {
        x.iter_mut().for_each(|v| *v *= s);
    } else {
        x.par_chunks_mut(CHUNK)
            .for_each(|c| c.iter_mut().for_each(|v| *v *= s));
    }
}

/// `y = max(x, 0)`.
pub fn relu(x: &[f32], y: &mut [f32]) {
    zip_map(y, x, |y, x| {
        y.iter_mut().zip(x).for_each(|(y, &x)| *y = x.max(0.0))
    });
}

/// `dx = dy * [y > 0]`, from the ReLU's *output* `y` (positive exactly where
/// the input was), so the input need not be kept.
pub fn relu_backward(y: &[f32], dy: &[f32], dx: &mut [f32]) {
    assert!(
        y.len() == dy.len() && y.len() == dx.len(),
        "relu_backward: length mismatch"
    );
    let kernel = |dx: &mut [f32], y: &[f32], dy: &[f32]| {
        for ((d, &y), &g) in dx.iter_mut().zip(y).zip(dy) {
            *d = if y > 0.0 { g } else { 0.0 };
        }
    };
    if dx.len() < PARALLEL_MIN {
        kernel(dx, y, dy);
    } else {
        dx.par_chunks_mut(CHUNK)
            .zip(y.par_chunks(CHUNK))
            .zip(dy.par_chunks(CHUNK))
            .for_each(|((dx, y), dy)| kernel(dx, y, dy));
    }
}

/// Per-channel reduction of `f(a, b)` over the rows of `[rows, channels]`
/// matrices `a` and `b`.
fn channel_reduce(
    a: &[f32],
    b: &[f32],
    channels: usize,
    f: impl Fn(f32, f32) -> f32 + Sync,
) -> Vec<f32> {
    assert_eq!(a.len(), b.len(), "channel reduction: length mismatch");
    assert!(
        channels > 0 && a.len().is_multiple_of(channels),
        "channel reduction: {} values are not rows of {channels}",
        a.len()
    );
    // Rows per run summed in f32 before being added in f64.
    const RUN: usize = 64;
    let run_len = RUN * channels;
    let partial = |(a, b): (&[f32], &[f32])| {
        let mut run = vec![0.0f32; channels];
        for (ra, rb) in a.chunks_exact(channels).zip(b.chunks_exact(channels)) {
            for ((s, &x), &y) in run.iter_mut().zip(ra).zip(rb) {
                *s += f(x, y);
            }
        }
        run.into_iter().map(f64::from).collect::<Vec<f64>>()
    };
    let add = |mut s: Vec<f64>, t: Vec<f64>| {
        s.iter_mut().zip(t).for_each(|(s, t)| *s += t);
        s
    };
    let sums = if a.len() < PARALLEL_MIN {
        a.chunks(run_len)
            .zip(b.chunks(run_len))
            .map(partial)
            .fold(vec![0.0; channels], add)
    } else {
        a.par_chunks(run_len)
            .zip(b.par_chunks(run_len))
            .map(partial)
            .reduce(|| vec![0.0; channels], add)
    };
    sums.into_iter().map(|s| s as f32).collect()
}

/// `s[c] = sum over rows of v[row, c]`.
pub fn channel_sum(v: &[f32], channels: usize) -> Vec<f32> {
    channel_reduce(v, v, channels, |x, _| x)
}

/// `s[c] = sum over rows of v[row, c]^2`.
pub fn channel_sum_sq(v: &[f32], channels: usize) -> Vec<f32> {
    channel_reduce(v, v, channels, |x, _| x * x)
}

/// `s[c] = sum over rows of a[row, c] * b[row, c]`.
pub fn channel_dot(a: &[f32], b: &[f32], channels: usize) -> Vec<f32> {
    channel_reduce(a, b, channels, |x, y| x * y)
}

/// `y[row, c] = x[row, c] * scale[c] + shift[c]`.
pub fn channel_affine(x: &[f32], scale: &[f32], shift: &[f32], y: &mut [f32]) {
    let c = scale.len();
    assert_eq!(
        shift.len(),
        c,
        "channel_affine: scale and shift differ in length"
    );
    assert!(
        c > 0 && x.len().is_multiple_of(c),
        "channel_affine: {} values are not rows of {c}",
        x.len()
    );
    let rows_per_task = (CHUNK / c).max(1) * c;
    let kernel = |y: &mut [f32], x: &[f32]| {
        for (yr, xr) in y.chunks_exact_mut(c).zip(x.chunks_exact(c)) {
            for (((y, &x), &a), &b) in yr.iter_mut().zip(xr).zip(scale).zip(shift) {
                *y = x * a + b;
            }
        }
    };
    assert_eq!(x.len(), y.len(), "channel_affine: length mismatch");
    if x.len() < PARALLEL_MIN {
        kernel(y, x);
    } else {
        y.par_chunks_mut(rows_per_task)
            .zip(x.par_chunks(rows_per_task))
            .for_each(|(y, x)| kernel(y, x));
    }
}
