//! The per-channel passes of batch normalization over `[rows, channels]`
//! data (NHWC flattened): the statistics, the affine map with the ReLU (and
//! residual) after it, and the two passes of the closed-form backward.
//!
//! Reductions split the rows into fixed blocks, sum each block in f32 over
//! short runs and in f64 across runs, and add the blocks *in order*: the
//! result depends only on the data, never on how rayon scheduled the blocks,
//! so training is bit-reproducible at any thread count.
//!
//! Every pass here is memory-bound (a few flops per element), so each is
//! written to read each tensor once: the statistics read `x` once (a run of
//! rows is centred while it is still in cache), the backward reads `x` and
//! `dy` once per pass, and a ReLU's mask is recomputed from `x` rather than
//! read from the op's output wherever `x` alone decides it.

mod affine;
mod backward;
mod statistics;

pub use affine::{affine_add_relu, affine_relu};
pub use backward::{backward_input, backward_sums, InputGradient, Relu};
pub use statistics::mean_and_variance;

use rayon::prelude::*;

/// Rows per parallel block (fixed: the summation order must not depend on
/// the thread count).
const BLOCK_ROWS: usize = 256;
/// Rows summed in f32 before being added into the f64 block total; also the
/// run of rows the statistics centre while it is in cache (32 rows of 2048
/// channels are 256 KiB).
const RUN_ROWS: usize = 32;
/// Below this many values a pass runs on the calling thread.
const PARALLEL_MIN: usize = 1 << 15;

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
    let partials: Vec<Vec<f64>> = if rows * width < PARALLEL_MIN {
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

/// Test data: `rows` x `c` values around 55 with a spread of about 3, so
/// that a one-pass variance would cancel visibly.
#[cfg(test)]
fn test_data(rows: usize, c: usize) -> Vec<f32> {
    (0..rows * c)
        .map(|i| ((i * 7919 % 1009) as f32) / 100.0 + 50.0)
        .collect()
}
