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
//! no im2col at all: the NHWC input *is* `cols`.
//!
//! Otherwise `cols` is built in tiles of rows, in per-thread scratch buffers
//! that are reused across calls (no allocation per call once warm). When there
//! are enough rows, each rayon task owns a tile end to end: it builds its
//! im2col rows and runs a single-threaded GEMM on them while they are still in
//! its core's cache (for the input gradient a task owns whole images, so its
//! col2im writes touch no other task's pixels; for the kernel gradient each
//! thread accumulates a partial gradient over its share of the rows, and the
//! partials are added at the end). With few rows (the late stages, M = 64)
//! one shared tile is built in parallel and the GEMM itself is split across
//! the threads; that path's col2im gathers per input row, in parallel too.
//!
//! Kernel taps that read only padding for *every* output pixel (a 3x3 'same'
//! conv on a 1x1 map uses only its centre tap) are trimmed away first. The
//! naive reference skips padding taps as well, so only the rounding order
//! changes, and the GEMM is up to 9x smaller.
//!
//! Small maps where many taps read padding for *some* pixels (a 3x3 'same'
//! conv on 2x2 or 4x4) skip im2col altogether: `conv_by_position` runs one
//! strided GEMM per output position and live kernel row on the tensors in
//! place, so no pass multiplies padding there either.

use crate::conv_by_position as by_position;
use crate::epilogue::Epilogue;
use crate::error::Result;
use crate::gemm::{sgemm, sgemm_bias, sgemm_serial, sgemm_serial_bias, Trans};
use crate::geometry::{ConvGeometry, Padding};
use crate::scratch::{with_scratch, Slot};
use rayon::prelude::*;

/// Upper bound on a shared im2col tile, in floats (4 MiB).
const SCRATCH_FLOATS: usize = 1 << 20;

/// Target im2col floats per task on the per-task path (1 MiB: one L2).
const TASK_FLOATS: usize = 1 << 18;

/// The per-task path needs at least this many rows per thread, so each task's
/// GEMM is tall enough to amortise packing the kernel matrix.
const MIN_TASK_ROWS: usize = 64;

/// Asserts that a buffer holds a `shape`: a kernel's precondition, checked
/// by the caller (the autograd op, from tensors whose shapes it validated).
fn check_len(what: &str, got: usize, shape: [usize; 4]) {
    let expected: usize = shape.iter().product();
    assert_eq!(
        got, expected,
        "{what}: {got} values, but shape {shape:?} holds {expected}"
    );
}

/// Asserts that a result the caller should have checked is `Ok`.
pub(crate) fn require(r: Result<()>) {
    if let Err(e) = r {
        panic!("{e}");
    }
}

/// Rows of `cols` per tile when one tile is shared by all threads.
fn shared_tile_rows(g: &ConvGeometry) -> usize {
    (SCRATCH_FLOATS / g.gemm_k()).clamp(16, g.gemm_m().max(16))
}

/// Whether the per-task path pays off: enough rows per thread, and the GEMM's
/// other operand (`n` columns, packed once per task) not much bigger than a
/// task's share of rows.
fn per_task(m: usize, n: usize, threads: usize) -> bool {
    threads == 1 || m / threads >= MIN_TASK_ROWS.max(n / 2)
}

/// Number of per-task tiles for `m` rows of `k` floats: about [`TASK_FLOATS`]
/// each, and a multiple of the thread count so the last wave is full.
fn task_count(m: usize, k: usize, threads: usize) -> usize {
    (m * k)
        .div_ceil(TASK_FLOATS)
        .max(1)
        .next_multiple_of(threads)
}

/// Fills `cols` (`rows x K`) with the im2col rows `r0 .. r0 + rows`, on the
/// calling thread.
fn im2col(g: &ConvGeometry, x: &[f32], r0: usize, cols: &mut [f32]) {
    let k = g.gemm_k();
    for (i, row) in cols.chunks_exact_mut(k).enumerate() {
        im2col_row(g, x, r0 + i, row);
    }
}

/// [`im2col`] split across the rayon threads.
fn im2col_par(g: &ConvGeometry, x: &[f32], r0: usize, cols: &mut [f32]) {
    let k = g.gemm_k();
    let min_rows = (4096 / k).max(1);
    cols.par_chunks_mut(k)
        .with_min_len(min_rows)
        .enumerate()
        .for_each(|(i, row)| im2col_row(g, x, r0 + i, row));
}

/// One im2col row: the `kh x kw x Cin` input values output pixel `r` reads.
#[inline]
fn im2col_row(g: &ConvGeometry, x: &[f32], r: usize, row: &mut [f32]) {
    let (ho, wo, cin) = (g.out_h(), g.out_w(), g.in_c);
    let (n, oy, ox) = (r / (ho * wo), (r / wo) % ho, r % wo);
    for ky in 0..g.kernel_h {
        // wrapping_sub turns "before the image" into a huge index.
        let iy = (oy * g.stride + ky).wrapping_sub(g.padding.top);
        let dst_row = &mut row[ky * g.kernel_w * cin..][..g.kernel_w * cin];
        if iy >= g.in_h {
            dst_row.fill(0.0);
            continue;
        }
        let x_row = &x[(n * g.in_h + iy) * g.in_w * cin..][..g.in_w * cin];
        // The taps whose pixels land inside the row are contiguous in both
        // the input row and the im2col row: one copy.
        let (kx_lo, kx_hi, ix_lo) = live_kx(g, ox);
        dst_row[..kx_lo * cin].fill(0.0);
        if kx_hi > kx_lo {
            dst_row[kx_lo * cin..kx_hi * cin]
                .copy_from_slice(&x_row[ix_lo * cin..][..(kx_hi - kx_lo) * cin]);
        }
        dst_row[kx_hi * cin..].fill(0.0);
    }
}

/// The taps `kx_lo..kx_hi` of output column `ox` that land inside the input
/// row; they read the contiguous pixels `ix_lo .. ix_lo + (kx_hi - kx_lo)`.
#[inline]
pub(crate) fn live_kx(g: &ConvGeometry, ox: usize) -> (usize, usize, usize) {
    let x0 = ox * g.stride;
    let kx_lo = g.padding.left.saturating_sub(x0).min(g.kernel_w);
    let kx_hi = (g.in_w + g.padding.left)
        .saturating_sub(x0)
        .clamp(kx_lo, g.kernel_w);
    (kx_lo, kx_hi, (x0 + kx_lo).saturating_sub(g.padding.left))
}

/// Adds the im2col rows `r0 ..` held in `dcols` back onto the input pixels
/// they were read from (the adjoint of [`im2col`]), on the calling thread.
/// `dx` holds the images from `n0` on.
fn col2im_add(g: &ConvGeometry, dcols: &[f32], r0: usize, n0: usize, dx: &mut [f32]) {
    let (ho, wo, k, cin) = (g.out_h(), g.out_w(), g.gemm_k(), g.in_c);
    let row_len = g.in_w * cin;
    for (i, row) in dcols.chunks_exact(k).enumerate() {
        let r = r0 + i;
        let (n, oy, ox) = (r / (ho * wo) - n0, (r / wo) % ho, r % wo);
        let (kx_lo, kx_hi, ix_lo) = live_kx(g, ox);
        if kx_hi == kx_lo {
            continue;
        }
        let seg = (kx_hi - kx_lo) * cin;
        for ky in 0..g.kernel_h {
            let iy = (oy * g.stride + ky).wrapping_sub(g.padding.top);
            if iy >= g.in_h {
                continue;
            }
            // The live taps of this kernel row read one contiguous run of
            // the input row: one vector add.
            let src = &row[(ky * g.kernel_w + kx_lo) * cin..][..seg];
            let dst = &mut dx[(n * g.in_h + iy) * row_len + ix_lo * cin..][..seg];
            crate::elementwise::add_kernel(dst, src);
        }
    }
}

/// [`col2im_add`] split across the rayon threads by input row: each task
/// *gathers* into one row `(n, iy)` of `dx` every `dcols` row in
/// `r0 .. r0 + rows` that read it, so no two tasks write the same pixel.
fn col2im_add_par(g: &ConvGeometry, dcols: &[f32], r0: usize, dx: &mut [f32]) {
    let (ho, wo, k, cin) = (g.out_h(), g.out_w(), g.gemm_k(), g.in_c);
    let rows = dcols.len() / k;
    let r1 = r0 + rows;
    let (n_lo, n_hi) = (r0 / (ho * wo), (r1 - 1) / (ho * wo) + 1);
    let row_len = g.in_w * cin;
    let images = &mut dx[n_lo * g.in_h * row_len..n_hi * g.in_h * row_len];
    images
        .par_chunks_mut(row_len)
        .enumerate()
        .for_each(|(j, dx_row)| {
            let (n, iy) = (n_lo + j / g.in_h, j % g.in_h);
            for ky in 0..g.kernel_h {
                // oy * stride = iy + top - ky
                let Some(t) = (iy + g.padding.top).checked_sub(ky) else {
                    continue;
                };
                if t % g.stride != 0 || t / g.stride >= ho {
                    continue;
                }
                let oy = t / g.stride;
                for ox in 0..wo {
                    let r = (n * ho + oy) * wo + ox;
                    if r < r0 || r >= r1 {
                        continue;
                    }
                    let (kx_lo, kx_hi, ix_lo) = live_kx(g, ox);
                    if kx_hi == kx_lo {
                        continue;
                    }
                    let seg = (kx_hi - kx_lo) * cin;
                    let src = &dcols[(r - r0) * k + (ky * g.kernel_w + kx_lo) * cin..][..seg];
                    crate::elementwise::add_kernel(&mut dx_row[ix_lo * cin..][..seg], src);
                }
            }
        });
}

/// The sub-window of kernel taps that some output pixel reads real input
/// with, as the equivalent smaller geometry and the tap offset `(ky0, kx0)`,
/// or `None` when every tap is live (or trimming would need negative padding).
fn trimmed(g: &ConvGeometry) -> Option<(ConvGeometry, usize, usize)> {
    // Live taps of one axis: some output o has 0 <= o*s + t - pad < len.
    let live = |len: usize, pad: usize, kernel: usize, out: usize| {
        let is_live = |t: usize| {
            (0..out).any(|o| (o * g.stride + t).checked_sub(pad).is_some_and(|i| i < len))
        };
        let lo = (0..kernel).find(|&t| is_live(t))?;
        let hi = (0..kernel).rev().find(|&t| is_live(t))? + 1;
        Some((lo, hi))
    };
    let (ky0, ky1) = live(g.in_h, g.padding.top, g.kernel_h, g.out_h())?;
    let (kx0, kx1) = live(g.in_w, g.padding.left, g.kernel_w, g.out_w())?;
    if (ky1 - ky0) * (kx1 - kx0) == g.kernel_h * g.kernel_w {
        return None;
    }
    let padding = Padding {
        top: g.padding.top.checked_sub(ky0)?,
        bottom: g.padding.bottom.checked_sub(g.kernel_h - ky1)?,
        left: g.padding.left.checked_sub(kx0)?,
        right: g.padding.right.checked_sub(g.kernel_w - kx1)?,
    };
    let t = ConvGeometry {
        kernel_h: ky1 - ky0,
        kernel_w: kx1 - kx0,
        padding,
        ..*g
    };
    debug_assert_eq!(t.output_shape(), g.output_shape());
    Some((t, ky0, kx0))
}

/// Multiply-adds the convolution kernels actually execute per pass for `g`:
/// [`ConvGeometry::macs`], less the taps that only ever read padding
/// (trimmed) and, on maps computed by position, every tap on padding.
pub fn executed_macs(g: &ConvGeometry) -> usize {
    let t = trimmed(g).map_or(*g, |(t, _, _)| t);
    if by_position::applies(&t) {
        by_position::useful_macs(&t)
    } else {
        t.macs()
    }
}

/// Copies the taps of trimmed geometry `t` (offset `ky0, kx0`) out of the
/// full HWIO kernel `w` of `g` into `wt`.
fn gather_taps(
    g: &ConvGeometry,
    t: &ConvGeometry,
    (ky0, kx0): (usize, usize),
    w: &[f32],
    wt: &mut [f32],
) {
    let tap = g.in_c * g.out_c;
    for ky in 0..t.kernel_h {
        let full = &w[((ky0 + ky) * g.kernel_w + kx0) * tap..][..t.kernel_w * tap];
        wt[ky * t.kernel_w * tap..][..t.kernel_w * tap].copy_from_slice(full);
    }
}

/// The inverse of [`gather_taps`]: writes `wt` back into its taps of `w`.
fn scatter_taps(
    g: &ConvGeometry,
    t: &ConvGeometry,
    (ky0, kx0): (usize, usize),
    wt: &[f32],
    w: &mut [f32],
) {
    let tap = g.in_c * g.out_c;
    for ky in 0..t.kernel_h {
        w[((ky0 + ky) * g.kernel_w + kx0) * tap..][..t.kernel_w * tap]
            .copy_from_slice(&wt[ky * t.kernel_w * tap..][..t.kernel_w * tap]);
    }
}

/// Forward pass: `y = conv(x, w) + bias`, written into `y` (`[N, Ho, Wo, Cout]`).
pub fn conv2d_forward(g: &ConvGeometry, x: &[f32], w: &[f32], bias: Option<&[f32]>, y: &mut [f32]) {
    conv2d_forward_fused(g, x, w, bias, Epilogue::default(), y)
}

/// [`conv2d_forward`] followed by `epilogue` (an inference batchnorm, a
/// residual add, a ReLU), applied to each tile of `y` while it is in cache.
pub fn conv2d_forward_fused(
    g: &ConvGeometry,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    epilogue: Epilogue,
    y: &mut [f32],
) {
    require(g.validate());
    check_len("conv2d input", x.len(), g.input_shape());
    check_len("conv2d kernel", w.len(), g.kernel_shape());
    check_len("conv2d output", y.len(), g.output_shape());
    if let Some(b) = bias {
        check_len("conv2d bias", b.len(), [1, 1, 1, g.out_c]);
    }
    require(epilogue.validate(y.len(), g.out_c));
    if let Some((t, ky0, kx0)) = trimmed(g) {
        let len: usize = t.kernel_shape().iter().product();
        return with_scratch(Slot::Side, len, |wt| {
            gather_taps(g, &t, (ky0, kx0), w, wt);
            forward_untrimmed(&t, x, wt, bias, &epilogue, y);
        });
    }
    forward_untrimmed(g, x, w, bias, &epilogue, y);
}

fn forward_untrimmed(
    g: &ConvGeometry,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    epi: &Epilogue,
    y: &mut [f32],
) {
    let (m, k, co) = (g.gemm_m(), g.gemm_k(), g.out_c);
    let threads = rayon::current_num_threads();
    if by_position::applies(g) {
        by_position::forward(g, x, w, bias, epi, y);
    } else if g.is_pointwise() && (epi.is_identity() || !per_task(m, co, threads)) {
        // [M, Cin] x [Cin, Cout] -> [M, Cout], one threaded GEMM.
        product(Threads::All, m, co, k, x, w, bias, y);
        apply_par(epi, y, 0, co);
    } else if per_task(m, co, threads) {
        forward_per_task(
            g,
            x,
            w,
            bias,
            epi,
            y,
            m.div_ceil(task_count(m, k + co, threads)),
        );
    } else {
        forward_shared(g, x, w, bias, epi, y, shared_tile_rows(g));
    }
}

/// Applies `epi` to `y` (output rows from flat offset `offset` on), split
/// across the rayon threads.
pub(crate) fn apply_par(epi: &Epilogue, y: &mut [f32], offset: usize, co: usize) {
    if epi.is_identity() {
        return;
    }
    let chunk = co * (1usize << 14).div_ceil(co);
    y.par_chunks_mut(chunk)
        .enumerate()
        .for_each(|(i, y)| epi.apply(y, offset + i * chunk, co));
}

/// Whether a GEMM may use all the rayon threads or runs on the caller's.
#[derive(Clone, Copy)]
enum Threads {
    All,
    Caller,
}

/// `y = cols x w (+ bias on every row)`: `[rows, K] x [K, Cout] -> [rows, Cout]`.
/// The bias goes in with the product's first write of `y` (no pass that
/// writes the bias first, no read of `y`).
#[allow(clippy::too_many_arguments)]
fn product(
    threads: Threads,
    rows: usize,
    co: usize,
    k: usize,
    cols: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
) {
    match (threads, bias) {
        (Threads::All, Some(b)) => sgemm_bias(rows, co, k, 1.0, cols, Trans::N, w, Trans::N, b, y),
        (Threads::All, None) => sgemm(rows, co, k, 1.0, cols, Trans::N, w, Trans::N, 0.0, y),
        (Threads::Caller, Some(b)) => {
            sgemm_serial_bias(rows, co, k, 1.0, cols, Trans::N, w, Trans::N, b, y)
        }
        (Threads::Caller, None) => {
            sgemm_serial(rows, co, k, 1.0, cols, Trans::N, w, Trans::N, 0.0, y)
        }
    }
}

/// Forward, one task per `rows` output pixels: im2col of its rows into the
/// task thread's scratch (a 1x1 stride-1 conv reads its rows of `x` as they
/// are), a single-threaded GEMM, then the epilogue on the rows just written.
fn forward_per_task(
    g: &ConvGeometry,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    epi: &Epilogue,
    y: &mut [f32],
    rows: usize,
) {
    let (k, co) = (g.gemm_k(), g.out_c);
    y.par_chunks_mut(rows * co).enumerate().for_each(|(i, y)| {
        let (r0, nr) = (i * rows, y.len() / co);
        let multiply = |cols: &[f32], y: &mut [f32]| {
            product(Threads::Caller, nr, co, k, cols, w, bias, y);
            epi.apply(y, r0 * co, co);
        };
        if g.is_pointwise() {
            multiply(&x[r0 * k..(r0 + nr) * k], y);
        } else {
            with_scratch(Slot::Cols, nr * k, |cols| {
                im2col(g, x, r0, cols);
                multiply(cols, y);
            });
        }
    });
}

/// Forward over shared tiles of `tile` rows: each built by all threads, then
/// multiplied by the threaded GEMM.
fn forward_shared(
    g: &ConvGeometry,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    epi: &Epilogue,
    y: &mut [f32],
    tile: usize,
) {
    let (m, k, co) = (g.gemm_m(), g.gemm_k(), g.out_c);
    with_scratch(Slot::Cols, tile.min(m) * k, |cols| {
        for r0 in (0..m).step_by(tile) {
            let rows = tile.min(m - r0);
            let cols = &mut cols[..rows * k];
            im2col_par(g, x, r0, cols);
            let y = &mut y[r0 * co..(r0 + rows) * co];
            product(Threads::All, rows, co, k, cols, w, bias, y);
            apply_par(epi, y, r0 * co, co);
        }
    });
}

/// Input gradient: `dx = conv^T(dy, w)`, overwriting `dx` (`[N, H, W, Cin]`).
pub fn conv2d_backward_input(g: &ConvGeometry, dy: &[f32], w: &[f32], dx: &mut [f32]) {
    require(g.validate());
    check_len("conv2d output gradient", dy.len(), g.output_shape());
    check_len("conv2d kernel", w.len(), g.kernel_shape());
    check_len("conv2d input gradient", dx.len(), g.input_shape());
    if let Some((t, ky0, kx0)) = trimmed(g) {
        let len: usize = t.kernel_shape().iter().product();
        return with_scratch(Slot::Side, len, |wt| {
            gather_taps(g, &t, (ky0, kx0), w, wt);
            backward_input_untrimmed(&t, dy, wt, dx);
        });
    }
    backward_input_untrimmed(g, dy, w, dx);
}

fn backward_input_untrimmed(g: &ConvGeometry, dy: &[f32], w: &[f32], dx: &mut [f32]) {
    let (m, k, co) = (g.gemm_m(), g.gemm_k(), g.out_c);
    let threads = rayon::current_num_threads();
    let per_image = g.out_h() * g.out_w();
    if by_position::applies(g) {
        by_position::backward_input(g, dy, w, dx);
    } else if g.is_pointwise() {
        // [M, Cout] x [Cout, Cin] -> [M, Cin]
        sgemm(m, k, co, 1.0, dy, Trans::N, w, Trans::T, 0.0, dx);
    } else if g.batch >= threads && per_image * k <= SCRATCH_FLOATS && per_task(m, k, threads) {
        let tasks = task_count(m, k, threads).min(g.batch);
        backward_input_per_task(g, dy, w, dx, g.batch.div_ceil(tasks));
    } else {
        backward_input_shared(g, dy, w, dx, shared_tile_rows(g));
    }
}

/// Input gradient, one task per `images` whole images: GEMM of their rows
/// into the task thread's scratch, then col2im into their own pixels.
fn backward_input_per_task(g: &ConvGeometry, dy: &[f32], w: &[f32], dx: &mut [f32], images: usize) {
    let (k, co) = (g.gemm_k(), g.out_c);
    let per_image = g.out_h() * g.out_w();
    let image_len = g.in_h * g.in_w * g.in_c;
    dx.par_chunks_mut(images * image_len)
        .enumerate()
        .for_each(|(i, dx)| {
            let (n0, nr) = (i * images, dx.len() / image_len * per_image);
            let r0 = n0 * per_image;
            with_scratch(Slot::Cols, nr * k, |dcols| {
                let dy = &dy[r0 * co..(r0 + nr) * co];
                // [rows, Cout] x [Cout, K] -> [rows, K]
                sgemm_serial(nr, k, co, 1.0, dy, Trans::N, w, Trans::T, 0.0, dcols);
                dx.fill(0.0);
                col2im_add(g, dcols, r0, n0, dx);
            });
        });
}

/// Input gradient over shared tiles of `tile` rows (any split, even inside an
/// image): threaded GEMM, then a threaded gathering col2im.
fn backward_input_shared(g: &ConvGeometry, dy: &[f32], w: &[f32], dx: &mut [f32], tile: usize) {
    let (m, k, co) = (g.gemm_m(), g.gemm_k(), g.out_c);
    dx.par_chunks_mut(1 << 14).for_each(|d| d.fill(0.0));
    with_scratch(Slot::Cols, tile.min(m) * k, |dcols| {
        for r0 in (0..m).step_by(tile) {
            let rows = tile.min(m - r0);
            let dcols = &mut dcols[..rows * k];
            // [rows, Cout] x [Cout, K] -> [rows, K]
            let dy = &dy[r0 * co..(r0 + rows) * co];
            sgemm(rows, k, co, 1.0, dy, Trans::N, w, Trans::T, 0.0, dcols);
            col2im_add_par(g, dcols, r0, dx);
        }
    });
}

/// Kernel gradient: `dw = cols^T x dy`, written into `dw` (`[kh, kw, Cin, Cout]`),
/// overwriting when `accumulate` is false and adding otherwise.
pub fn conv2d_backward_kernel(
    g: &ConvGeometry,
    x: &[f32],
    dy: &[f32],
    dw: &mut [f32],
    accumulate: bool,
) {
    require(g.validate());
    check_len("conv2d input", x.len(), g.input_shape());
    check_len("conv2d output gradient", dy.len(), g.output_shape());
    check_len("conv2d kernel gradient", dw.len(), g.kernel_shape());
    if let Some((t, ky0, kx0)) = trimmed(g) {
        let len: usize = t.kernel_shape().iter().product();
        return with_scratch(Slot::Side, len, |dwt| {
            if accumulate {
                gather_taps(g, &t, (ky0, kx0), dw, dwt);
            } else {
                // Dead taps get a zero gradient.
                dw.fill(0.0);
            }
            backward_kernel_untrimmed(&t, x, dy, dwt, accumulate);
            scatter_taps(g, &t, (ky0, kx0), dwt, dw);
        });
    }
    backward_kernel_untrimmed(g, x, dy, dw, accumulate);
}

fn backward_kernel_untrimmed(
    g: &ConvGeometry,
    x: &[f32],
    dy: &[f32],
    dw: &mut [f32],
    accumulate: bool,
) {
    let (m, k, co) = (g.gemm_m(), g.gemm_k(), g.out_c);
    let beta = if accumulate { 1.0 } else { 0.0 };
    let threads = rayon::current_num_threads();
    if by_position::applies(g) {
        by_position::backward_kernel(g, x, dy, dw, accumulate);
    } else if threads > 1 && m / threads >= MIN_REDUCE_ROWS {
        // A long reduction (many pixels into a small kernel): per-thread
        // partial gradients over contiguous rows, each packing only its own
        // rows of both operands.
        let tile = (TASK_FLOATS / k).max(16);
        backward_kernel_per_task(g, x, dy, dw, beta, threads, tile);
    } else if g.is_pointwise() {
        // [Cin, M] x [M, Cout] -> [Cin, Cout]
        sgemm(k, co, m, 1.0, x, Trans::T, dy, Trans::N, beta, dw);
    } else {
        backward_kernel_shared(g, x, dy, dw, beta, shared_tile_rows(g));
    }
}

/// Below this many rows per thread the kernel gradient is one shared GEMM at
/// a time rather than a sum of per-thread partial gradients.
const MIN_REDUCE_ROWS: usize = 512;

/// Kernel gradient as `tasks` partial sums over contiguous ranges of rows,
/// each task working through its range in tiles of `tile` rows on its own
/// thread; task 0 accumulates into `dw`, the others into scratch, added last.
fn backward_kernel_per_task(
    g: &ConvGeometry,
    x: &[f32],
    dy: &[f32],
    dw: &mut [f32],
    beta: f32,
    tasks: usize,
    tile: usize,
) {
    let (m, k, co) = (g.gemm_m(), g.gemm_k(), g.out_c);
    let per = m.div_ceil(tasks);
    let len = k * co;
    with_scratch(Slot::Partial, (tasks - 1) * len, |partials| {
        let targets = rayon::iter::once(&mut *dw).chain(partials.par_chunks_exact_mut(len));
        targets.enumerate().for_each(|(t, out)| {
            let (start, end) = ((t * per).min(m), ((t + 1) * per).min(m));
            let mut beta = if t == 0 { beta } else { 0.0 };
            if start == end && beta == 0.0 {
                out.fill(0.0);
            }
            if g.is_pointwise() {
                // The input rows are the im2col rows already.
                let (rows, cols) = (end - start, &x[start * k..end * k]);
                let dy = &dy[start * co..end * co];
                // [K, rows] x [rows, Cout] -> [K, Cout]
                sgemm_serial(k, co, rows, 1.0, cols, Trans::T, dy, Trans::N, beta, out);
                return;
            }
            with_scratch(Slot::Cols, tile.min(per) * k, |cols| {
                for r0 in (start..end).step_by(tile) {
                    let rows = tile.min(end - r0);
                    let cols = &mut cols[..rows * k];
                    im2col(g, x, r0, cols);
                    // [K, rows] x [rows, Cout] -> [K, Cout]
                    let dy = &dy[r0 * co..(r0 + rows) * co];
                    sgemm_serial(k, co, rows, 1.0, cols, Trans::T, dy, Trans::N, beta, out);
                    beta = 1.0;
                }
            });
        });
        let partials = &*partials;
        dw.par_chunks_mut(4096).enumerate().for_each(|(i, d)| {
            for p in partials.chunks_exact(len) {
                crate::elementwise::add_kernel(d, &p[i * 4096..][..d.len()]);
            }
        });
    });
}

/// Kernel gradient over shared tiles of `tile` rows: each built by all
/// threads, then multiplied by the threaded GEMM.
fn backward_kernel_shared(
    g: &ConvGeometry,
    x: &[f32],
    dy: &[f32],
    dw: &mut [f32],
    beta: f32,
    tile: usize,
) {
    let (m, k, co) = (g.gemm_m(), g.gemm_k(), g.out_c);
    with_scratch(Slot::Cols, tile.min(m) * k, |cols| {
        for (t, r0) in (0..m).step_by(tile).enumerate() {
            let rows = tile.min(m - r0);
            let cols = &mut cols[..rows * k];
            im2col_par(g, x, r0, cols);
            let beta = if t == 0 { beta } else { 1.0 };
            // [K, rows] x [rows, Cout] -> [K, Cout]
            let dy = &dy[r0 * co..(r0 + rows) * co];
            sgemm(k, co, rows, 1.0, cols, Trans::T, dy, Trans::N, beta, dw);
        }
    });
}

/// Bias gradient: the sum of `dy` over every output pixel, per channel.
pub fn conv2d_backward_bias(g: &ConvGeometry, dy: &[f32], db: &mut [f32], accumulate: bool) {
    check_len("conv2d output gradient", dy.len(), g.output_shape());
    check_len("conv2d bias gradient", db.len(), [1, 1, 1, g.out_c]);
    let sums = crate::elementwise::channel_sum(dy, g.out_c);
    for (d, s) in db.iter_mut().zip(sums) {
        *d = if accumulate { *d + s } else { s };
    }
}

#[cfg(test)]
mod tests {
    //! Every execution strategy, forced with tile sizes that split images and
    //! leave partial last tiles, against the references. (The public entry
    //! points pick one strategy per shape; tests/conv.rs covers those.)
    use super::*;
    use crate::reference;

    fn data(len: usize, seed: u32) -> Vec<f32> {
        (0..len)
            .map(|i| {
                (((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 8) % 1000) as f32
                    / 500.0
                    - 1.0
            })
            .collect()
    }

    fn close(what: &str, got: &[f32], want: &[f32], k: usize) {
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            // Sums of k products of numbers in [-1, 1].
            assert!(
                (g - w).abs() <= 1e-5 * k as f32,
                "{what}: element {i}: {g} vs {w}"
            );
        }
    }

    #[test]
    fn every_strategy_matches_reference() {
        let geometries = [
            (
                3,
                7,
                5,
                3,
                3,
                2,
                Padding {
                    top: 1,
                    bottom: 0,
                    left: 2,
                    right: 1,
                },
            ),
            (2, 9, 8, 7, 1, 1, Padding::uniform(1)),
            (1, 6, 6, 4, 7, 2, Padding::uniform(3)),
            (4, 5, 5, 2, 3, 1, Padding::ZERO),
            (3, 4, 5, 6, 1, 1, Padding::ZERO),
        ];
        for (batch, h, w_, cin, kk, stride, padding) in geometries {
            let g = ConvGeometry {
                batch,
                in_h: h,
                in_w: w_,
                in_c: cin,
                kernel_h: kk,
                kernel_w: kk,
                out_c: 5,
                stride,
                padding,
            };
            let (m, k) = (g.gemm_m(), g.gemm_k());
            let x = data(g.input_shape().iter().product(), 1);
            let w = data(g.kernel_shape().iter().product(), 2);
            let bias = data(g.out_c, 3);
            let dy = data(g.output_shape().iter().product(), 4);
            let want_y = reference::conv2d_forward(&g, &x, &w, Some(&bias));
            let want_dx = reference::conv2d_backward_input(&g, &dy, &w);
            let want_dw = reference::conv2d_backward_kernel(&g, &x, &dy);
            for tile in [1, 7, 16, m.div_ceil(2), m] {
                let mut y = vec![f32::NAN; dy.len()];
                forward_per_task(&g, &x, &w, Some(&bias), &Epilogue::default(), &mut y, tile);
                close(&format!("{g:?} fwd per-task {tile}"), &y, &want_y, k);
                let mut y = vec![f32::NAN; dy.len()];
                forward_shared(&g, &x, &w, Some(&bias), &Epilogue::default(), &mut y, tile);
                close(&format!("{g:?} fwd shared {tile}"), &y, &want_y, k);

                let mut dx = vec![f32::NAN; x.len()];
                backward_input_shared(&g, &dy, &w, &mut dx, tile);
                close(&format!("{g:?} dx shared {tile}"), &dx, &want_dx, k);

                for tasks in [1, 2, 3] {
                    let mut dw = vec![f32::NAN; w.len()];
                    backward_kernel_per_task(&g, &x, &dy, &mut dw, 0.0, tasks, tile);
                    close(
                        &format!("{g:?} dw per-task {tasks} {tile}"),
                        &dw,
                        &want_dw,
                        m,
                    );
                    let mut dw = vec![1.0; w.len()];
                    backward_kernel_per_task(&g, &x, &dy, &mut dw, 1.0, tasks, tile);
                    let want: Vec<f32> = want_dw.iter().map(|v| v + 1.0).collect();
                    close(&format!("{g:?} dw+ per-task {tasks} {tile}"), &dw, &want, m);
                }
                let mut dw = vec![f32::NAN; w.len()];
                backward_kernel_shared(&g, &x, &dy, &mut dw, 0.0, tile);
                close(&format!("{g:?} dw shared {tile}"), &dw, &want_dw, m);
            }
            for images in [1, 2, batch] {
                let mut dx = vec![f32::NAN; x.len()];
                backward_input_per_task(&g, &dy, &w, &mut dx, images);
                close(&format!("{g:?} dx per-task {images}"), &dx, &want_dx, k);
            }
        }
    }

    /// The epilogue's result equals the separate kernels' (affine map, then
    /// the residual add, then the ReLU) bit for bit, on every execution path.
    #[test]
    fn epilogue_equals_the_separate_kernels_exactly() {
        use crate::elementwise::{add, channel_affine, relu};
        for (batch, h, kk, stride, pad) in [(3, 6, 1, 1, 0), (2, 7, 3, 1, 1), (2, 9, 3, 2, 1)] {
            let g = ConvGeometry {
                batch,
                in_h: h,
                in_w: h,
                in_c: 5,
                kernel_h: kk,
                kernel_w: kk,
                out_c: 6,
                stride,
                padding: Padding::uniform(pad),
            };
            let x = data(g.input_shape().iter().product(), 1);
            let w = data(g.kernel_shape().iter().product(), 2);
            let bias = data(g.out_c, 3);
            let residual = data(g.output_shape().iter().product(), 4);
            let (scale, shift) = (data(g.out_c, 5), data(g.out_c, 6));
            let n = residual.len();
            for (affine, with_residual, relu_last) in [
                (true, false, false),
                (true, false, true),
                (true, true, true),
                (false, true, false),
                (false, false, true),
            ] {
                let epi = Epilogue {
                    affine: affine.then_some((&scale[..], &shift[..])),
                    residual: with_residual.then_some(&residual[..]),
                    relu: relu_last,
                };
                let separate = |mut y: Vec<f32>| {
                    if affine {
                        let t = y.clone();
                        channel_affine(&t, &scale, &shift, &mut y);
                    }
                    if with_residual {
                        let t = y.clone();
                        add(&residual, &t, &mut y);
                    }
                    if relu_last {
                        let t = y.clone();
                        relu(&t, &mut y);
                    }
                    y
                };
                type Path<'a> = &'a dyn Fn(&Epilogue, &mut [f32]);
                let per_task = |e: &Epilogue, y: &mut [f32]| {
                    forward_per_task(&g, &x, &w, Some(&bias), e, y, 7)
                };
                let shared =
                    |e: &Epilogue, y: &mut [f32]| forward_shared(&g, &x, &w, Some(&bias), e, y, 7);
                let public = |e: &Epilogue, y: &mut [f32]| {
                    conv2d_forward_fused(&g, &x, &w, Some(&bias), *e, y)
                };
                let paths: [(&str, Path); 3] = [
                    ("per-task", &per_task),
                    ("shared", &shared),
                    ("public", &public),
                ];
                for (name, path) in paths {
                    let mut plain = vec![f32::NAN; n];
                    path(&Epilogue::default(), &mut plain);
                    let mut fused = vec![f32::NAN; n];
                    path(&epi, &mut fused);
                    assert_eq!(fused, separate(plain), "{name} {g:?} {epi:?}");
                }
            }
        }
    }

    #[test]
    fn trimming_keeps_only_live_taps() {
        let g = ConvGeometry {
            batch: 1,
            in_h: 1,
            in_w: 1,
            in_c: 2,
            kernel_h: 3,
            kernel_w: 3,
            out_c: 2,
            stride: 1,
            padding: Padding::uniform(1),
        };
        let (t, ky0, kx0) = trimmed(&g).unwrap();
        assert!(t.is_pointwise());
        assert_eq!((ky0, kx0), (1, 1));
        // 2x2 'same': every tap is read by some output.
        let g2 = ConvGeometry {
            in_h: 2,
            in_w: 2,
            padding: Padding::same(2, 2, 3, 3, 1),
            ..g
        };
        assert!(trimmed(&g2).is_none());
        // A 7-tall kernel on a 2-row input padded 3/3: rows 2..=4 only.
        let g3 = ConvGeometry {
            in_h: 2,
            kernel_h: 7,
            kernel_w: 1,
            padding: Padding {
                top: 3,
                bottom: 3,
                left: 0,
                right: 0,
            },
            ..g
        };
        let (t3, ky0, _) = trimmed(&g3).unwrap();
        assert_eq!(
            (t3.kernel_h, ky0, t3.padding.top, t3.padding.bottom),
            (3, 2, 1, 1)
        );
    }
}
