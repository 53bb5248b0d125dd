//! Convolutions on small output maps as GEMMs per output position and kernel
//! row, reading the input, the output gradient and the kernel where they lie:
//! no im2col, no col2im, and no multiply by padding.
//!
//! # Why
//! The im2col rows of a padded convolution hold a zero for every tap that
//! lands on padding, and the GEMM multiplies them all. On ResNet50's late
//! maps that is most of the work: a 3x3 'same' conv reads padding with 56%
//! of its taps on a 2x2 map and 31% on a 4x4 one. (On a 1x1 map every tap
//! but the centre is padding for *every* pixel; `conv.rs` trims those taps
//! away before anything else, and such a conv never comes here.)
//!
//! # How
//! Fix one output position `p = (oy, ox)`. Through kernel row `ky` it reads
//! input row `iy = oy * stride + ky - top`, and its live taps `kx_lo..kx_hi`
//! (those inside the row) read the consecutive pixels `ix_lo..`: in every
//! image the same run of `t * Cin` floats (`t = kx_hi - kx_lo`) at the same
//! offset. Over the batch that is a matrix `X(p, ky)`, `[N, t * Cin]`, with
//! row stride `H * W * Cin`, and the kernel rows of those taps are `t * Cin`
//! consecutive rows `W(p, ky)` of the HWIO kernel seen as
//! `[kh * kw * Cin, Cout]`. Output position `p` of every image is a matrix
//! `Y(p)`, `[N, Cout]`, with row stride `Ho * Wo * Cout`. So, summed over the
//! live kernel rows only:
//!
//! ```text
//! forward        Y(p)      = bias + sum_ky X(p, ky) x W(p, ky)     [N, t Cin] x [t Cin, Cout]
//! input grad     dX(p, ky) += dY(p) x W(p, ky)^T                  [N, Cout] x [Cout, t Cin]
//! kernel grad    dW(p, ky) += X(p, ky)^T x dY(p)                  [t Cin, N] x [N, Cout]
//! ```
//!
//! each one strided GEMM (`gemm::sgemm_strided`) on the tensors in place,
//! split across the threads. The positions run one after another: the
//! gradients' positions overlap in `dx` and `dw`.
//!
//! # When
//! Only for maps of at most [`MAX_POSITIONS`] output pixels with at least
//! [`MIN_PADDING_SHARE`] of the taps on padding, and batches of at least
//! [`MIN_BATCH`]: the GEMMs are `N` rows tall, and there are (live kernel
//! rows x positions) of them, so bigger maps or small batches make too
//! many small products. The 8x8 maps (16% padding) and conv1 (10%) stay on
//! im2col.

use crate::conv::{apply_par, live_kx};
use crate::epilogue::Epilogue;
use crate::gemm::{sgemm_strided, MatRef};
use crate::geometry::ConvGeometry;
use rayon::prelude::*;

/// Largest output map (`Ho * Wo`) computed by position.
const MAX_POSITIONS: usize = 16;
/// Smallest share of the nominal multiply-adds that must be padding.
const MIN_PADDING_SHARE: f64 = 0.2;
/// Smallest batch (the GEMMs' row count).
const MIN_BATCH: usize = 8;

/// One output position's GEMM through one kernel row: where its operands
/// start in `x` (input pixels) and `w` (kernel rows), and how long they are.
struct Segment {
    /// Offset of the run of input pixels inside one image.
    x_offset: usize,
    /// Offset of the first kernel row (in floats) inside the kernel.
    w_offset: usize,
    /// The run's length `t * Cin`: the GEMM's depth (forward) or width.
    len: usize,
}

/// The segments of output position `(oy, ox)`: one per kernel row that
/// reads inside the input, with the live taps of that row.
fn segments(g: &ConvGeometry, oy: usize, ox: usize) -> impl Iterator<Item = Segment> + '_ {
    let cin = g.in_c;
    let (kx_lo, kx_hi, ix_lo) = live_kx(g, ox);
    (0..g.kernel_h).filter_map(move |ky| {
        // wrapping_sub turns "above the image" into a huge row.
        let iy = (oy * g.stride + ky).wrapping_sub(g.padding.top);
        (iy < g.in_h && kx_hi > kx_lo).then(|| Segment {
            x_offset: (iy * g.in_w + ix_lo) * cin,
            w_offset: (ky * g.kernel_w + kx_lo) * cin * g.out_c,
            len: (kx_hi - kx_lo) * cin,
        })
    })
}

/// Multiply-adds of one pass that read real input: the nominal count
/// ([`ConvGeometry::macs`]) less every tap on padding.
pub fn useful_macs(g: &ConvGeometry) -> usize {
    let live_taps: usize = (0..g.out_h())
        .flat_map(|oy| (0..g.out_w()).map(move |ox| (oy, ox)))
        .map(|(oy, ox)| segments(g, oy, ox).map(|s| s.len).sum::<usize>())
        .sum();
    g.batch * live_taps * g.out_c
}

/// Whether `g` is computed by position (see the module docs).
pub fn applies(g: &ConvGeometry) -> bool {
    let nominal = g.macs();
    g.out_h() * g.out_w() <= MAX_POSITIONS
        && g.batch >= MIN_BATCH
        && nominal > 0
        && (nominal - useful_macs(g)) as f64 >= MIN_PADDING_SHARE * nominal as f64
}

/// Row strides of one position across the batch: input image, output image.
fn image_strides(g: &ConvGeometry) -> (usize, usize) {
    (g.in_h * g.in_w * g.in_c, g.out_h() * g.out_w() * g.out_c)
}

/// Forward: `y = conv(x, w) + bias`, then `epi`, overwriting `y`.
pub fn forward(
    g: &ConvGeometry,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    epi: &Epilogue,
    y: &mut [f32],
) {
    let (co, wo) = (g.out_c, g.out_w());
    let (x_image, y_image) = image_strides(g);
    for p in 0..g.out_h() * wo {
        let c = &mut y[p * co..];
        let mut first = true;
        for s in segments(g, p / wo, p % wo) {
            let a = MatRef::new(x, s.x_offset, x_image, 1);
            let b = MatRef::new(w, s.w_offset, co, 1);
            let (beta, row) = if first { (0.0, bias) } else { (1.0, None) };
            sgemm_strided(g.batch, co, s.len, 1.0, a, b, beta, row, c, y_image);
            first = false;
        }
        if first {
            // No kernel row reads real input: a product of depth 0, which
            // leaves the bias (or 0).
            let none = MatRef::new(x, 0, x_image, 1);
            sgemm_strided(g.batch, co, 0, 1.0, none, none, 0.0, bias, c, y_image);
        }
    }
    apply_par(epi, y, 0, co);
}

/// Input gradient: `dx = conv^T(dy, w)`, overwriting `dx`.
pub fn backward_input(g: &ConvGeometry, dy: &[f32], w: &[f32], dx: &mut [f32]) {
    let (co, wo) = (g.out_c, g.out_w());
    let (x_image, y_image) = image_strides(g);
    dx.par_chunks_mut(1 << 14).for_each(|d| d.fill(0.0));
    for p in 0..g.out_h() * wo {
        let a = MatRef::new(dy, p * co, y_image, 1);
        for s in segments(g, p / wo, p % wo) {
            // W(p, ky)^T: the kernel rows read column-wise.
            let b = MatRef::new(w, s.w_offset, co, 1).t();
            let c = &mut dx[s.x_offset..];
            sgemm_strided(g.batch, s.len, co, 1.0, a, b, 1.0, None, c, x_image);
        }
    }
}

/// Kernel gradient: `dw = cols^T x dy`, overwriting `dw` when `accumulate`
/// is false and adding to it otherwise.
pub fn backward_kernel(g: &ConvGeometry, x: &[f32], dy: &[f32], dw: &mut [f32], accumulate: bool) {
    let (co, wo) = (g.out_c, g.out_w());
    let (x_image, y_image) = image_strides(g);
    if !accumulate {
        dw.par_chunks_mut(1 << 14).for_each(|d| d.fill(0.0));
    }
    for p in 0..g.out_h() * wo {
        let b = MatRef::new(dy, p * co, y_image, 1);
        for s in segments(g, p / wo, p % wo) {
            // X(p, ky)^T: the batch's runs of input read column-wise.
            let a = MatRef::new(x, s.x_offset, x_image, 1).t();
            let c = &mut dw[s.w_offset..];
            sgemm_strided(s.len, co, g.batch, 1.0, a, b, 1.0, None, c, co);
        }
    }
}
