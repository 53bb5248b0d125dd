//! 2-D convolution over NHWC images with HWIO kernels: forward, input
//! gradient, kernel gradient and bias gradient.
//!
//! The three passes are one GEMM each over the im2col matrix `cols`, whose row
//! `r` holds every input value that output pixel `r` sees, in `(ky, kx, ci)`
//! order, which is exactly the row order of an HWIO kernel viewed as a
//! `[kh*kw*Cin, Cout]` matrix:
//!
//! ```text
//! forward        y     = cols  x W       [M, K] x [K, Cout] -> [M, Cout]
//! input grad     dcols = dy    x W^T     [M, Cout] x [Cout, K] -> [M, K], then col2im
//! kernel grad    dW    = cols^T x dy     [K, M] x [M, Cout] -> [K, Cout]
//! ```
//!
//! with `M = N*Ho*Wo` and `K = kh*kw*Cin`. A 1x1 stride-1 unpadded conv needs
//! no im2col at all: the NHWC input *is* `cols`. Otherwise `cols` is built in
//! tiles of rows so the scratch memory is bounded whatever the batch size.

use crate::error::{Result, TensorError};
use crate::gemm::{sgemm, Trans};
use crate::geometry::ConvGeometry;
use rayon::prelude::*;

/// Upper bound on the im2col scratch, in floats (4 MiB): big enough that each
/// tile is a GEMM of useful size, small enough to stay near the caches.
const SCRATCH_FLOATS: usize = 1 << 20;

fn check_len(what: &str, got: usize, shape: [usize; 4]) -> Result<()> {
    let expected: usize = shape.iter().product();
    if got != expected {
        return Err(TensorError::DataLength {
            what: what.into(),
            shape: shape.to_vec(),
            expected,
            got,
        });
    }
    Ok(())
}

/// Rows of `cols` per tile for this geometry.
fn tile_rows(g: &ConvGeometry) -> usize {
    (SCRATCH_FLOATS / g.gemm_k()).clamp(16, g.gemm_m().max(16))
}

/// Fills `cols` (`rows x K`) with the im2col rows `r0 .. r0 + rows`.
fn im2col(g: &ConvGeometry, x: &[f32], r0: usize, cols: &mut [f32]) {
    let (ho, wo, k, cin) = (g.out_h(), g.out_w(), g.gemm_k(), g.in_c);
    cols.par_chunks_mut(k).enumerate().for_each(|(i, row)| {
        let r = r0 + i;
        let (n, oy, ox) = (r / (ho * wo), (r / wo) % ho, r % wo);
        for ky in 0..g.kernel_h {
            let iy = (oy * g.stride + ky).wrapping_sub(g.padding.top);
            for kx in 0..g.kernel_w {
                let ix = (ox * g.stride + kx).wrapping_sub(g.padding.left);
                let dst = &mut row[(ky * g.kernel_w + kx) * cin..][..cin];
                // wrapping_sub turns "before the image" into a huge index.
                if iy < g.in_h && ix < g.in_w {
                    dst.copy_from_slice(&x[((n * g.in_h + iy) * g.in_w + ix) * cin..][..cin]);
                } else {
                    dst.fill(0.0);
                }
            }
        }
    });
}

/// Adds the im2col rows `r0 ..` held in `dcols` back onto the input pixels
/// they were read from (the adjoint of [`im2col`]).
fn col2im_add(g: &ConvGeometry, dcols: &[f32], r0: usize, dx: &mut [f32]) {
    let (ho, wo, k, cin) = (g.out_h(), g.out_w(), g.gemm_k(), g.in_c);
    for (i, row) in dcols.chunks_exact(k).enumerate() {
        let r = r0 + i;
        let (n, oy, ox) = (r / (ho * wo), (r / wo) % ho, r % wo);
        for ky in 0..g.kernel_h {
            let iy = (oy * g.stride + ky).wrapping_sub(g.padding.top);
            if iy >= g.in_h {
                continue;
            }
            for kx in 0..g.kernel_w {
                let ix = (ox * g.stride + kx).wrapping_sub(g.padding.left);
                if ix >= g.in_w {
                    continue;
                }
                let src = &row[(ky * g.kernel_w + kx) * cin..][..cin];
                let dst = &mut dx[((n * g.in_h + iy) * g.in_w + ix) * cin..][..cin];
                dst.iter_mut().zip(src).for_each(|(d, s)| *d += s);
            }
        }
    }
}

/// Forward pass: `y = conv(x, w) + bias`, written into `y` (`[N, Ho, Wo, Cout]`).
pub fn conv2d_forward(
    g: &ConvGeometry,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
) -> Result<()> {
    g.validate()?;
    check_len("conv2d input", x.len(), g.input_shape())?;
    check_len("conv2d kernel", w.len(), g.kernel_shape())?;
    check_len("conv2d output", y.len(), g.output_shape())?;
    if let Some(b) = bias {
        check_len("conv2d bias", b.len(), [1, 1, 1, g.out_c])?;
    }
    let (m, k, co) = (g.gemm_m(), g.gemm_k(), g.out_c);
    // Start from the bias (or zero) and accumulate the GEMM on top (beta = 1).
    let beta = match bias {
        Some(b) => {
            y.par_chunks_mut(co).for_each(|row| row.copy_from_slice(b));
            1.0
        }
        None => 0.0,
    };
    if g.is_pointwise() {
        // [M, Cin] x [Cin, Cout] -> [M, Cout]
        sgemm(m, co, k, 1.0, x, Trans::N, w, Trans::N, beta, y);
        return Ok(());
    }
    let tile = tile_rows(g);
    let mut cols = vec![0.0; tile.min(m) * k];
    for r0 in (0..m).step_by(tile) {
        let rows = tile.min(m - r0);
        let cols = &mut cols[..rows * k];
        im2col(g, x, r0, cols);
        // [rows, K] x [K, Cout] -> [rows, Cout]
        sgemm(
            rows,
            co,
            k,
            1.0,
            cols,
            Trans::N,
            w,
            Trans::N,
            beta,
            &mut y[r0 * co..(r0 + rows) * co],
        );
    }
    Ok(())
}

/// Input gradient: `dx = conv^T(dy, w)`, overwriting `dx` (`[N, H, W, Cin]`).
pub fn conv2d_backward_input(
    g: &ConvGeometry,
    dy: &[f32],
    w: &[f32],
    dx: &mut [f32],
) -> Result<()> {
    g.validate()?;
    check_len("conv2d output gradient", dy.len(), g.output_shape())?;
    check_len("conv2d kernel", w.len(), g.kernel_shape())?;
    check_len("conv2d input gradient", dx.len(), g.input_shape())?;
    let (m, k, co) = (g.gemm_m(), g.gemm_k(), g.out_c);
    if g.is_pointwise() {
        // [M, Cout] x [Cout, Cin] -> [M, Cin]
        sgemm(m, k, co, 1.0, dy, Trans::N, w, Trans::T, 0.0, dx);
        return Ok(());
    }
    dx.fill(0.0);
    let tile = tile_rows(g);
    let mut dcols = vec![0.0; tile.min(m) * k];
    for r0 in (0..m).step_by(tile) {
        let rows = tile.min(m - r0);
        let dcols = &mut dcols[..rows * k];
        // [rows, Cout] x [Cout, K] -> [rows, K]
        sgemm(
            rows,
            k,
            co,
            1.0,
            &dy[r0 * co..(r0 + rows) * co],
            Trans::N,
            w,
            Trans::T,
            0.0,
            dcols,
        );
        col2im_add(g, dcols, r0, dx);
    }
    Ok(())
}

/// Kernel gradient: `dw = cols^T x dy`, written into `dw` (`[kh, kw, Cin, Cout]`),
/// overwriting when `accumulate` is false and adding otherwise.
pub fn conv2d_backward_kernel(
    g: &ConvGeometry,
    x: &[f32],
    dy: &[f32],
    dw: &mut [f32],
    accumulate: bool,
) -> Result<()> {
    g.validate()?;
    check_len("conv2d input", x.len(), g.input_shape())?;
    check_len("conv2d output gradient", dy.len(), g.output_shape())?;
    check_len("conv2d kernel gradient", dw.len(), g.kernel_shape())?;
    let (m, k, co) = (g.gemm_m(), g.gemm_k(), g.out_c);
    let beta0 = if accumulate { 1.0 } else { 0.0 };
    if g.is_pointwise() {
        // [Cin, M] x [M, Cout] -> [Cin, Cout]
        sgemm(k, co, m, 1.0, x, Trans::T, dy, Trans::N, beta0, dw);
        return Ok(());
    }
    let tile = tile_rows(g);
    let mut cols = vec![0.0; tile.min(m) * k];
    for (t, r0) in (0..m).step_by(tile).enumerate() {
        let rows = tile.min(m - r0);
        let cols = &mut cols[..rows * k];
        im2col(g, x, r0, cols);
        let beta = if t == 0 { beta0 } else { 1.0 };
        // [K, rows] x [rows, Cout] -> [K, Cout]
        sgemm(
            k,
            co,
            rows,
            1.0,
            cols,
            Trans::T,
            &dy[r0 * co..(r0 + rows) * co],
            Trans::N,
            beta,
            dw,
        );
    }
    Ok(())
}

/// Bias gradient: the sum of `dy` over every output pixel, per channel.
pub fn conv2d_backward_bias(
    g: &ConvGeometry,
    dy: &[f32],
    db: &mut [f32],
    accumulate: bool,
) -> Result<()> {
    check_len("conv2d output gradient", dy.len(), g.output_shape())?;
    check_len("conv2d bias gradient", db.len(), [1, 1, 1, g.out_c])?;
    let sums = crate::elementwise::channel_sum(dy, g.out_c);
    for (d, s) in db.iter_mut().zip(sums) {
        *d = if accumulate { *d + s } else { s };
    }
    Ok(())
}
