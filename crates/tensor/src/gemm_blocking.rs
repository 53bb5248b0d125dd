//! The BLIS-style blocking shared by the packed GEMM kernels: one driver,
//! [`drive`], for every [`PackedKernel`] (the fp32 AVX2 and AVX-512 tiles
//! of `microkernel.rs`, the `vdpbf16ps` tile of `microkernel_bf16.rs`, the
//! AMX `tdpbf16ps` block of `microkernel_amx.rs`).
//! A kernel family brings its block sizes, its packing and its register
//! tiles; the order in which C is computed is decided here, once.
//!
//! # Why this blocking
//! A register tile (`MR` rows of C by one or two `NR`-column B panels)
//! streams one packed A micro-panel and one packed B micro-panel over the
//! depth of a block, so the loops around it are chosen for where each
//! packed operand lives while it is reused (BLIS, Van Zee & van de Geijn
//! 2015):
//! - a B micro-panel (`KC` deep) is read once per A micro-panel of the
//!   block, back to back: it stays in L1;
//! - the packed A block (`MC x KC`) is read once per B micro-panel: it
//!   stays in L2;
//! - the packed B block (`KC x NC`) is read once per A block: it stays in
//!   L3, and is packed once per (`jc`, `pc`) for all of them.
//!
//! Hence the loop nest, outermost first: `jc` (B blocks of `NC` columns),
//! `pc` (depth blocks of `KC`), `ic` (A blocks of `MC` rows), `jr` (tile
//! columns), `ir` (tile rows); B is packed under `pc`, A under `ic`.
//!
//! # Why even blocks
//! Each dimension is cut into equal blocks no bigger than the maximum
//! (k = 650 with KC = 320 runs as 2 x 217 + 216, not 320 + 320 + 10),
//! rounded up to whole tiles (and whole depth units: a k-pair for bf16,
//! 32 k for an AMX tile), so no block is a thin remainder that pays the packing, the tile
//! start-up and C's reads and writes for little work.
//!
//! # Why beta on the first depth block only
//! C is the sum of the products of all depth blocks. The tiles of the
//! first one apply `beta * C` (or add the bias row instead, C's old
//! contents unread) as they write C; each later block's tiles add onto
//! what the earlier ones wrote (beta 1, no row). So no separate pass
//! scales C or writes the bias, beta 0 ignores C's old contents (even
//! NaN), and each element's sum runs over k in order, block after block.
//!
//! Everything here is single-threaded (the callers split C across
//! threads).

#![cfg(target_arch = "x86_64")]

use crate::scratch::{with_scratch, Slot};

/// An element of the packed buffers: f32 (fp32 kernels) or u32 (a pair of
/// bf16). The packs are carved out of the f32 scratch buffer.
///
/// # Safety
/// The type must have the size and alignment of f32, and every bit
/// pattern must be a valid value.
pub(crate) unsafe trait PackWord: Copy {}

// SAFETY: f32 itself.
unsafe impl PackWord for f32 {}
// SAFETY: 4 bytes, aligned to 4, no invalid bit patterns.
unsafe impl PackWord for u32 {}

/// Packs a block of A (`mc x kc`, strides `rsa`, `csa`) or of B (`kc x
/// nc`, strides `rsb`, `csb`): `(rows or columns, depth kc, operand, row
/// stride, column stride, out)`.
///
/// # Safety
/// The CPU must support the kernel family; the operand must be valid for
/// the block.
pub(crate) type PackFn<W> = unsafe fn(usize, usize, *const f32, isize, isize, &mut [W]);

/// One register tile: `(kd, a, b, c, rsc, alpha, beta, row, mr, nr)`
/// computes `C[..mr, ..nr] = alpha * Ap * Bp + beta * C` over `kd` depth
/// units, or `+ row[..nr]` on every row instead of `beta * C` (C unread).
/// Panel `p` of B starts `p * NR * kd` words after `b`.
///
/// # Safety
/// The CPU must support the kernel family; `a` and `b` must hold packed
/// panels of depth `kd`; C must be valid for `mr` rows (stride `rsc`) of
/// `nr` columns, and `row`, when given, for `nr` values.
pub(crate) type TileFn<W> = unsafe fn(
    usize,
    *const W,
    *const W,
    *mut f32,
    isize,
    f32,
    f32,
    Option<*const f32>,
    usize,
    usize,
);

/// A kernel family as the driver sees it: block sizes, packing of A and
/// B into micro-panels, and the register tile(s) that multiply them. The
/// functions are constants, so each [`drive`] instance calls them
/// directly.
///
/// Depth is counted in the family's unit (`K_UNIT` consecutive k: 1 for
/// fp32, a k-pair for bf16): a block of `kc` k is packed [`depth`] units
/// deep (`kc.div_ceil(K_UNIT)` rounded up to a multiple of `KD_ALIGN`,
/// the padding zero), and a packed micro-panel holds `MR` (A) or `NR` (B)
/// words per unit, panels stored back to back.
pub(crate) trait PackedKernel {
    /// The packed buffers' element.
    type Word: PackWord;
    /// Rows of an A micro-panel (and of a register tile).
    const MR: usize;
    /// Columns of a B micro-panel.
    const NR: usize;
    /// B micro-panels per register tile (1 or 2).
    const PANELS: usize;
    /// k per depth unit; depth blocks are whole units.
    const K_UNIT: usize;
    /// Packed micro-panels are a multiple of this many units deep (AMX
    /// tiles: 16 pairs), and depth blocks a multiple of as many k.
    const KD_ALIGN: usize = 1;
    /// Maximum depth of a block, in k: sized so the tile's B micro-panels
    /// stay in L1.
    const KC: usize;
    /// Maximum rows of a packed A block: sized for L2.
    const MC: usize;
    /// Maximum columns of a packed B block: sized for L3.
    const NC: usize;
    /// Packs an `mc x kc` block of A into `MR`-row panels of [`depth`] units
    /// each, the last one padded with zero rows.
    const PACK_A: PackFn<Self::Word>;
    /// Packs a `kc x nc` block of B into `NR`-column panels of [`depth`] units
    /// each, the last one padded with zero columns.
    const PACK_B: PackFn<Self::Word>;
    /// The tile of `MR` rows by `PANELS` B panels.
    const TILE: TileFn<Self::Word>;
    /// The tile for a block's last, single B panel (`nr <= NR`) when
    /// `PANELS` is 2; with one panel per tile, `TILE` itself.
    const TILE_LAST_PANEL: TileFn<Self::Word> = Self::TILE;

    /// Called on the calling thread before a product's first tile (AMX:
    /// configures the tile registers).
    ///
    /// # Safety
    /// The CPU must support the kernel family.
    unsafe fn begin() {}

    /// Called after the product's last tile (AMX: releases the tiles).
    ///
    /// # Safety
    /// [`PackedKernel::begin`] must have been called on this thread.
    unsafe fn end() {}
}

/// How many depth units deep kernel `K` packs a block of `kc` k.
pub(crate) fn depth<K: PackedKernel>(kc: usize) -> usize {
    kc.div_ceil(K::K_UNIT).next_multiple_of(K::KD_ALIGN)
}

/// `C = alpha * A * B + beta * C` for strided A (`m x k`) and B (`k x n`)
/// and C with unit column stride, by kernel family `K`; with a `row` (`n`
/// values), `C = alpha * A * B + row` broadcast over the rows instead, C's
/// old contents unread. The blocking and its reasons are in the module
/// doc.
///
/// # Safety
/// The CPU must support `K`; the operands must be valid for their
/// strides, and nobody else may access C meanwhile.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn drive<K: PackedKernel>(
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: *const f32,
    rsa: isize,
    csa: isize,
    b: *const f32,
    rsb: isize,
    csb: isize,
    beta: f32,
    row: Option<&[f32]>,
    c: *mut f32,
    rsc: isize,
) {
    let (mr_tile, nr_panel) = (K::MR, K::NR);
    // Equal blocks no bigger than the maximum, in whole tiles and units.
    let even = |len: usize, max: usize, align: usize| {
        len.div_ceil(len.div_ceil(max)).next_multiple_of(align)
    };
    let kcb = even(k, K::KC, K::K_UNIT * K::KD_ALIGN);
    let mcb = even(m, K::MC, mr_tile);
    let ncb = even(n, K::NC, nr_panel);
    let mc_max = mcb.min(m.next_multiple_of(mr_tile));
    let nc_max = ncb.min(n.next_multiple_of(nr_panel));
    let kd_max = depth::<K>(kcb.min(k));
    // One scratch buffer holds both packed blocks, plus 64 bytes of slack
    // each (16 words) to align them.
    let a_len = mc_max * kd_max + 16;
    let b_len = nc_max * kd_max + 16;
    // Columns per tile: one B panel, or two adjacent ones.
    let step = K::PANELS * nr_panel;
    with_scratch(Slot::Pack, a_len + b_len, |buf| {
        // SAFETY: `PackWord` types have f32's size and alignment, and
        // every bit pattern is valid.
        let buf =
            unsafe { std::slice::from_raw_parts_mut(buf.as_mut_ptr() as *mut K::Word, buf.len()) };
        let (abuf, bbuf) = buf.split_at_mut(a_len);
        let apack = align64(abuf);
        let bpack = align64(bbuf);
        // SAFETY: the caller guarantees the CPU supports `K`.
        unsafe { K::begin() };
        for jc in (0..n).step_by(ncb) {
            let nc = ncb.min(n - jc);
            for pc in (0..k).step_by(kcb) {
                let kc = kcb.min(k - pc);
                let kd = depth::<K>(kc);
                // The first depth block applies beta (or adds the row);
                // later ones add onto C.
                let (beta, row) = if pc == 0 {
                    (beta, row.map(|r| r[jc..].as_ptr()))
                } else {
                    (1.0, None)
                };
                unsafe {
                    let b_block = b.offset(pc as isize * rsb + jc as isize * csb);
                    (K::PACK_B)(kc, nc, b_block, rsb, csb, bpack);
                }
                for ic in (0..m).step_by(mcb) {
                    let mc = mcb.min(m - ic);
                    unsafe {
                        let a_block = a.offset(ic as isize * rsa + pc as isize * csa);
                        (K::PACK_A)(mc, kc, a_block, rsa, csa, apack);
                    }
                    for jr in (0..nc).step_by(step) {
                        let nr = step.min(nc - jr);
                        let bp = unsafe { bpack.as_ptr().add(jr * kd) };
                        for ir in (0..mc).step_by(mr_tile) {
                            let mr = mr_tile.min(mc - ir);
                            unsafe {
                                let ap = apack.as_ptr().add(ir * kd);
                                let cp = c.offset((ic + ir) as isize * rsc + (jc + jr) as isize);
                                let rp = row.map(|r| r.add(jr));
                                // Two calls, not a chosen pointer: each is
                                // then a direct call to a constant.
                                if nr > (K::PANELS - 1) * nr_panel {
                                    (K::TILE)(kd, ap, bp, cp, rsc, alpha, beta, rp, mr, nr);
                                } else {
                                    // The last, single B panel of this block.
                                    (K::TILE_LAST_PANEL)(
                                        kd, ap, bp, cp, rsc, alpha, beta, rp, mr, nr,
                                    );
                                }
                            }
                        }
                    }
                }
            }
        }
        // SAFETY: `begin` was called above, on this thread.
        unsafe { K::end() };
    });
}

/// The 64-byte-aligned tail of `buf`, a packing buffer with 64 bytes of
/// slack (16 floats, or 16 words of bf16 pairs in the bf16 kernels).
pub(crate) fn align64<T>(buf: &mut [T]) -> &mut [T] {
    let slack = 64 / std::mem::size_of::<T>();
    let off = buf.as_ptr().align_offset(64).min(slack);
    &mut buf[off..]
}
