//! Elementwise and per-channel kernels: what batchnorm, ReLU and residual
//! additions are made of.
//!
//! Each kernel runs on the calling thread for small inputs and splits into
//! rayon chunks above [`PARALLEL_MIN`] elements. The inner loops are plain
//! slice zips, which the compiler turns into SIMD without bounds checks; each
//! is built for both the baseline x86-64 target (SSE2, 4 lanes) and AVX2 (8
//! lanes), picked at run time (see `multiversion!`).
//!
//! On other CPUs the portable build runs alone. It is vectorized there as
//! well: aarch64's baseline target includes NEON (4 lanes), so the same
//! loops compile to NEON code with no dispatch (reasoned from the target's
//! baseline; no ARM machine was at hand to measure it). The `wide` crate's
//! portable SIMD types were considered for these kernels and not used: they
//! pick their backend at compile time from the target's features, so inside
//! a run-time-dispatched AVX2 function they still emit 4-lane SSE, and for
//! plain slice zips like these the compiler already emits the vector code a
//! hand-written `f32x4` / `f32x8` loop would.
//! Per-channel reductions accumulate in f32 over short runs of rows and add
//! the runs in f64, so a sum over 16,384 rows keeps f32's full precision.

use rayon::prelude::*;

/// Defines `fn $name(args)` whose body is compiled twice, for the baseline
/// target (SSE2 on x86-64) and with AVX2 enabled, and picks the AVX2 build at
/// run time when the CPU has it. The body must be plain arithmetic: Rust
/// never fuses `a * b + c` into an FMA, so both builds give identical bits.
macro_rules! multiversion {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $body:block) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) {
            #[inline(always)]
            fn portable($($arg: $ty),*) $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2")]
                unsafe fn avx2($($arg: $ty),*) {
                    portable($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx2") {
                    // SAFETY: the CPU supports AVX2 (checked just above).
                    return unsafe { avx2($($arg),*) };
                }
            }
            portable($($arg),*)
        }
    };
}

pub(crate) use multiversion;

/// Below this many elements a kernel stays on the calling thread.
pub const PARALLEL_MIN: usize = 1 << 15;

/// Elements per parallel task (a multiple of every SIMD width).
const CHUNK: usize = 1 << 14;

multiversion! {
    /// `d += s` on the calling thread (also used by the col2im scatter).
    pub(crate) fn add_kernel(d: &mut [f32], s: &[f32]) {
        d.iter_mut().zip(s).for_each(|(d, s)| *d += s)
    }
}

multiversion! {
    fn scale_kernel(x: &mut [f32], s: f32) {
        x.iter_mut().for_each(|v| *v *= s)
    }
}

multiversion! {
    fn relu_kernel(y: &mut [f32], x: &[f32]) {
        // `if x <= 0 { 0 } else { x }`: one compare-and-mask, and a NaN passes
        // through (as in TensorFlow and PyTorch) instead of being silently
        // turned into 0, so a diverging network shows in its loss.
        y.iter_mut()
            .zip(x)
            .for_each(|(y, &x)| *y = if x <= 0.0 { 0.0 } else { x })
    }
}

multiversion! {
    fn relu_backward_kernel(d: &mut [f32], y: &[f32]) {
        for (d, &y) in d.iter_mut().zip(y) {
            *d = if y > 0.0 { *d } else { 0.0 };
        }
    }
}

multiversion! {
    fn affine_kernel(y: &mut [f32], x: &[f32], scale: &[f32], shift: &[f32]) {
        let c = scale.len();
        for (yr, xr) in y.chunks_exact_mut(c).zip(x.chunks_exact(c)) {
            for (((y, &x), &a), &b) in yr.iter_mut().zip(xr).zip(scale).zip(shift) {
                *y = x * a + b;
            }
        }
    }
}

/// The per-channel reductions: what each row contributes.
#[derive(Clone, Copy)]
enum Reduce {
    Sum,
    SumSq,
    Dot,
}

multiversion! {
    /// Adds each row of `a` (and `b`) into `run` according to `op`.
    fn reduce_kernel(run: &mut [f32], a: &[f32], b: &[f32], op: Reduce) {
        let c = run.len();
        for (ra, rb) in a.chunks_exact(c).zip(b.chunks_exact(c)) {
            match op {
                Reduce::Sum => run.iter_mut().zip(ra).for_each(|(s, &x)| *s += x),
                Reduce::SumSq => run.iter_mut().zip(ra).for_each(|(s, &x)| *s += x * x),
                Reduce::Dot => run
                    .iter_mut()
                    .zip(ra)
                    .zip(rb)
                    .for_each(|((s, &x), &y)| *s += x * y),
            }
        }
    }
}

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
    assert_eq!(a.len(), out.len(), "add: length mismatch");
    if out.len() < PARALLEL_MIN {
        out.copy_from_slice(a);
        add_kernel(out, b);
    } else {
        out.par_chunks_mut(CHUNK)
            .zip(a.par_chunks(CHUNK))
            .zip(b.par_chunks(CHUNK))
            .for_each(|((o, a), b)| {
                o.copy_from_slice(a);
                add_kernel(o, b);
            });
    }
}

/// `dst += src`: gradient accumulation and residual sums.
pub fn add_assign(dst: &mut [f32], src: &[f32]) {
    zip_map(dst, src, add_kernel);
}

/// `x *= s`.
pub fn scale(x: &mut [f32], s: f32) {
    if x.len() < PARALLEL_MIN {
        scale_kernel(x, s);
    } else {
        x.par_chunks_mut(CHUNK).for_each(|c| scale_kernel(c, s));
    }
}

/// `y = max(x, 0)`.
pub fn relu(x: &[f32], y: &mut [f32]) {
    zip_map(y, x, relu_kernel);
}

/// `d = d * [y > 0]` in place (`d` holds `dy` on entry, `dx` on return),
/// from the ReLU's *output* `y` (positive exactly where the input was), so
/// the input need not be kept.
pub fn relu_backward(y: &[f32], d: &mut [f32]) {
    assert_eq!(y.len(), d.len(), "relu_backward: length mismatch");
    if d.len() < PARALLEL_MIN {
        relu_backward_kernel(d, y);
    } else {
        d.par_chunks_mut(CHUNK)
            .zip(y.par_chunks(CHUNK))
            .for_each(|(d, y)| relu_backward_kernel(d, y));
    }
}

/// Per-channel reduction over the rows of `[rows, channels]` matrices `a`
/// and `b`.
fn channel_reduce(a: &[f32], b: &[f32], channels: usize, op: Reduce) -> Vec<f32> {
    assert_eq!(a.len(), b.len(), "channel reduction: length mismatch");
    assert!(
        channels > 0 && a.len().is_multiple_of(channels),
        "channel reduction: {} values are not rows of {channels}",
        a.len()
    );
    // Rows per run summed in f32 before being added in f64.
    const RUN: usize = 64;
    let run_len = RUN * channels;
    // One f32 run buffer and one f64 total per block, not per run.
    let fold = |(mut run, mut total): (Vec<f32>, Vec<f64>), (a, b): (&[f32], &[f32])| {
        run.fill(0.0);
        reduce_kernel(&mut run, a, b, op);
        total
            .iter_mut()
            .zip(&run)
            .for_each(|(t, &r)| *t += r as f64);
        (run, total)
    };
    let init = || (vec![0.0f32; channels], vec![0.0f64; channels]);
    let add = |mut s: Vec<f64>, t: Vec<f64>| {
        s.iter_mut().zip(t).for_each(|(s, t)| *s += t);
        s
    };
    // Fixed blocks of runs, each summed on its own and then added in order:
    // the result never depends on how rayon scheduled the blocks, so
    // training is bit-reproducible (a `reduce` would add partials in an
    // order set by work stealing).
    let block_len = 8 * run_len;
    let block_total = |(a, b): (&[f32], &[f32])| {
        a.chunks(run_len)
            .zip(b.chunks(run_len))
            .fold(init(), fold)
            .1
    };
    let partials: Vec<Vec<f64>> = if a.len() < PARALLEL_MIN {
        a.chunks(block_len)
            .zip(b.chunks(block_len))
            .map(block_total)
            .collect()
    } else {
        a.par_chunks(block_len)
            .zip(b.par_chunks(block_len))
            .map(block_total)
            .collect()
    };
    let sums = partials.into_iter().fold(vec![0.0; channels], add);
    sums.into_iter().map(|s| s as f32).collect()
}

/// `s[c] = sum over rows of v[row, c]`.
pub fn channel_sum(v: &[f32], channels: usize) -> Vec<f32> {
    channel_reduce(v, v, channels, Reduce::Sum)
}

/// `s[c] = sum over rows of v[row, c]^2`.
pub fn channel_sum_sq(v: &[f32], channels: usize) -> Vec<f32> {
    channel_reduce(v, v, channels, Reduce::SumSq)
}

/// `s[c] = sum over rows of a[row, c] * b[row, c]`.
pub fn channel_dot(a: &[f32], b: &[f32], channels: usize) -> Vec<f32> {
    channel_reduce(a, b, channels, Reduce::Dot)
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
    assert_eq!(x.len(), y.len(), "channel_affine: length mismatch");
    let rows_per_task = (CHUNK / c).max(1) * c;
    if x.len() < PARALLEL_MIN {
        affine_kernel(y, x, scale, shift);
    } else {
        y.par_chunks_mut(rows_per_task)
            .zip(x.par_chunks(rows_per_task))
            .for_each(|(y, x)| affine_kernel(y, x, scale, shift));
    }
}
