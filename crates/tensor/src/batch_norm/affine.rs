//! Batchnorm's forward affine map with the ReLU (and the residual) after it.

use super::{BLOCK_ROWS, PARALLEL_MIN};
use rayon::prelude::*;

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
    if y.len() < PARALLEL_MIN {
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
    if y.len() < PARALLEL_MIN {
        kernel(y, x, residual);
    } else {
        y.par_chunks_mut(chunk)
            .zip(x.par_chunks(chunk))
            .zip(residual.par_chunks(chunk))
            .for_each(|((y, x), r)| kernel(y, x, r));
    }
}
