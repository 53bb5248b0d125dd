//! Our own packed single-precision GEMM for x86-64 with AVX2 and FMA, in the
//! BLIS style: C is computed in 6x16 register tiles (12 ymm accumulators)
//! from A packed into 6-row panels and B packed into 16-column panels, with
//! the operands blocked so a B micro-panel stays in L1, the packed A block in
//! L2 and the packed B block in L3. The blocking loops are
//! `gemm_blocking::drive`'s (shared with the bf16 kernel); this file holds
//! the fp32 packing and register tiles ([`Fp32`]).
//!
//! With AVX-512F the same packed panels feed 6x32 tiles instead (two
//! adjacent 16-column B panels, 12 zmm accumulators, `kernel_avx512`): the
//! packing and blocking are shared, only the register tile changes. (KC, MC
//! and NC were tuned for the AVX2 tile; the 6x32 tile's pair of B
//! micro-panels is 40 KiB at KC = 320, so a retune may pay off.)
//!
//! Only used after runtime detection of AVX2 and FMA, and of AVX-512F for
//! the wide tile (see `gemm::Kernel`); everything here is single-threaded
//! (the callers split C across threads).

#![cfg(target_arch = "x86_64")]

use crate::gemm_blocking::{PackFn, PackedKernel, TileFn};
use std::arch::x86_64::*;

/// Rows of a register tile.
pub(crate) const MR: usize = 6;
/// Columns of a register tile (two ymm registers).
pub(crate) const NR: usize = 16;
/// Maximum depth of one packed block: a 16-column B micro-panel is at most
/// `KC * 64` bytes = 20 KiB, inside the 32 KiB L1d. (Blocks are split
/// evenly, see `gemm_blocking`; KC, MC and NC were picked by a sweep on the
/// 2048^3 and conv shapes, within noise of each other between KC 256..384,
/// MC 72..144.)
const KC: usize = 320;
/// Maximum rows of one packed A block: `MC * KC * 4` bytes = 90 KiB of the
/// 1 MiB L2.
const MC: usize = 72;
/// Maximum columns of one packed B block: `KC * NC * 4` bytes = 2.5 MiB of L3.
const NC: usize = 2048;

/// The fp32 family for `gemm_blocking::drive`: this file's packing with
/// 6x16 AVX2+FMA tiles (`Fp32<false>`, `Kernel::Avx2Fma`) or, `WIDE`,
/// 6x32 AVX-512F tiles over two adjacent B panels (`Fp32<true>`,
/// `Kernel::Avx512`).
pub(crate) struct Fp32<const WIDE: bool>;

impl<const WIDE: bool> PackedKernel for Fp32<WIDE> {
    type Word = f32;
    const MR: usize = MR;
    const NR: usize = NR;
    const PANELS: usize = if WIDE { 2 } else { 1 };
    const K_UNIT: usize = 1;
    const KC: usize = KC;
    const MC: usize = MC;
    const NC: usize = NC;
    const PACK_A: PackFn<f32> = pack_a;
    const PACK_B: PackFn<f32> = pack_b;
    const TILE: TileFn<f32> = if WIDE {
        kernel_avx512::<2>
    } else {
        kernel_6x16
    };
    const TILE_LAST_PANEL: TileFn<f32> = if WIDE {
        kernel_avx512::<1>
    } else {
        kernel_6x16
    };
}

/// Packs the `mc x kc` block of A into `MR`-row panels, each stored k-major
/// (`MR` values per k), the last panel padded with zeros.
#[target_feature(enable = "avx2,fma")]
unsafe fn pack_a(mc: usize, kc: usize, a: *const f32, rsa: isize, csa: isize, out: &mut [f32]) {
    let full = mc / MR;
    if rsa == 1 {
        // Column-major A (transposed): walk it k by k, each a contiguous run
        // of `mc` values handed out MR at a time to the panels. (Panel by
        // panel would revisit every k's cache line once per panel, at a
        // stride that is often a multiple of 4 KiB: cache-set thrashing.)
        assert!(out.len() >= full * MR * kc);
        for kk in 0..kc {
            for p in 0..full {
                // SAFETY: row kk of op(A)^T holds `mc` values from `a`, and
                // the destination is inside `out` (asserted above).
                unsafe {
                    let src = a.offset(kk as isize * csa + (p * MR) as isize);
                    let dst = out.as_mut_ptr().add((p * kc + kk) * MR);
                    _mm_storeu_ps(dst, _mm_loadu_ps(src));
                    _mm_store_sd(
                        dst.add(4) as *mut f64,
                        _mm_load_sd(src.add(4) as *const f64),
                    );
                }
            }
        }
    } else if csa == 1 {
        // Row-major A: MR contiguous rows, interleaved by 8x8 transposes.
        for p in 0..full {
            let rows: [*const f32; MR] =
                std::array::from_fn(|i| unsafe { a.offset((p * MR + i) as isize * rsa) });
            unsafe { pack_rows6(kc, rows, out[p * MR * kc..].as_mut_ptr()) };
        }
    } else {
        for p in 0..full {
            for kk in 0..kc {
                for i in 0..MR {
                    out[(p * kc + kk) * MR + i] =
                        unsafe { *a.offset((p * MR + i) as isize * rsa + kk as isize * csa) };
                }
            }
        }
    }
    // The ragged last panel, zero-padded to MR rows (any layout).
    let mr = mc - full * MR;
    if mr > 0 {
        let panel = &mut out[full * MR * kc..][..MR * kc];
        for (kk, dst) in panel.chunks_exact_mut(MR).enumerate() {
            for (i, d) in dst.iter_mut().enumerate() {
                *d = if i < mr {
                    unsafe { *a.offset((full * MR + i) as isize * rsa + kk as isize * csa) }
                } else {
                    0.0
                };
            }
        }
    }
}

/// Interleaves six rows of `kc` floats into `out[k * 6 + i] = rows[i][k]`,
/// eight k at a time through registers.
#[target_feature(enable = "avx2,fma")]
unsafe fn pack_rows6(kc: usize, rows: [*const f32; MR], out: *mut f32) {
    unsafe {
        let mut kk = 0;
        while kk + 8 <= kc {
            let r: [__m256; MR] = std::array::from_fn(|i| _mm256_loadu_ps(rows[i].add(kk)));
            store_6x8_interleaved(r, out.add(kk * MR));
            kk += 8;
        }
        for k in kk..kc {
            for (i, row) in rows.iter().enumerate() {
                *out.add(k * MR + i) = *row.add(k);
            }
        }
    }
}

/// `out[j * MR + i] = r[i][j]` for 6 registers of 8 32-bit lanes: 8
/// consecutive k of six rows, interleaved as an A panel stores them.
/// Lanes are moved, never computed on, so the bf16 packing passes its
/// pairs through these f32 shuffles unchanged (`microkernel_bf16.rs`).
///
/// Always inlined, without a `target_feature` of its own (as
/// `store_tile_avx512`): it takes its callers' features.
///
/// # Safety
/// AVX must be available; `out` must be valid for `8 * MR` floats.
#[inline(always)]
pub(crate) unsafe fn store_6x8_interleaved(r: [__m256; MR], out: *mut f32) {
    unsafe {
        // Pairs of rows interleaved: lane-wise k = (0,1 | 4,5) and (2,3 | 6,7).
        let t0 = _mm256_unpacklo_ps(r[0], r[1]);
        let t1 = _mm256_unpackhi_ps(r[0], r[1]);
        let t2 = _mm256_unpacklo_ps(r[2], r[3]);
        let t3 = _mm256_unpackhi_ps(r[2], r[3]);
        let t4 = _mm256_unpacklo_ps(r[4], r[5]);
        let t5 = _mm256_unpackhi_ps(r[4], r[5]);
        // Rows 0-3 of k = j (low lane) and j + 4 (high lane).
        let q = [
            _mm256_shuffle_ps::<0x44>(t0, t2),
            _mm256_shuffle_ps::<0xEE>(t0, t2),
            _mm256_shuffle_ps::<0x44>(t1, t3),
            _mm256_shuffle_ps::<0xEE>(t1, t3),
        ];
        // Rows 4-5 of k = j and j + 4, in the low 64 bits of each lane.
        let p = [
            t4,
            _mm256_shuffle_ps::<0xEE>(t4, t4),
            t5,
            _mm256_shuffle_ps::<0xEE>(t5, t5),
        ];
        for j in 0..4 {
            let lo = out.add(j * MR);
            let hi = out.add((j + 4) * MR);
            _mm_storeu_ps(lo, _mm256_castps256_ps128(q[j]));
            _mm_store_sd(
                lo.add(4) as *mut f64,
                _mm_castps_pd(_mm256_castps256_ps128(p[j])),
            );
            _mm_storeu_ps(hi, _mm256_extractf128_ps::<1>(q[j]));
            _mm_store_sd(
                hi.add(4) as *mut f64,
                _mm_castps_pd(_mm256_extractf128_ps::<1>(p[j])),
            );
        }
    }
}

/// Packs the `kc x nc` block of B into `NR`-column panels, each stored
/// k-major (`NR` values per k), the last panel padded with zeros.
#[target_feature(enable = "avx2,fma")]
unsafe fn pack_b(kc: usize, nc: usize, b: *const f32, rsb: isize, csb: isize, out: &mut [f32]) {
    let full = nc / NR;
    if csb == 1 {
        // Row-major B: walk it k by k, each row's run of `nc` values handed
        // out NR at a time to the panels.
        for kk in 0..kc {
            for p in 0..full {
                unsafe {
                    let src = b.offset(kk as isize * rsb + (p * NR) as isize);
                    let dst = out.as_mut_ptr().add((p * kc + kk) * NR);
                    _mm256_storeu_ps(dst, _mm256_loadu_ps(src));
                    _mm256_storeu_ps(dst.add(8), _mm256_loadu_ps(src.add(8)));
                }
            }
        }
    } else if rsb == 1 {
        // Column-major B (transposed): each column is contiguous along k.
        // Transpose 8 columns x 8 k at a time in registers; going down the
        // columns in step uses each cache line fully while it is in L1.
        for p in 0..full {
            for half in 0..2 {
                let cols: [*const f32; 8] = std::array::from_fn(|j| unsafe {
                    b.offset((p * NR + half * 8 + j) as isize * csb)
                });
                unsafe {
                    transpose_8_cols(kc, cols, out.as_mut_ptr().add(p * NR * kc + half * 8));
                }
            }
        }
    } else {
        for p in 0..full {
            for kk in 0..kc {
                for j in 0..NR {
                    out[(p * kc + kk) * NR + j] =
                        unsafe { *b.offset(kk as isize * rsb + (p * NR + j) as isize * csb) };
                }
            }
        }
    }
    // The ragged last panel, zero-padded to NR columns (any layout).
    let nr = nc - full * NR;
    if nr > 0 {
        let panel = &mut out[full * NR * kc..][..NR * kc];
        for (kk, dst) in panel.chunks_exact_mut(NR).enumerate() {
            for (j, d) in dst.iter_mut().enumerate() {
                *d = if j < nr {
                    unsafe { *b.offset(kk as isize * rsb + (full * NR + j) as isize * csb) }
                } else {
                    0.0
                };
            }
        }
    }
}

/// Writes `out[k * NR + j] = cols[j][k]` for 8 columns of `kc` floats.
#[target_feature(enable = "avx2,fma")]
unsafe fn transpose_8_cols(kc: usize, cols: [*const f32; 8], out: *mut f32) {
    unsafe {
        let mut kk = 0;
        while kk + 8 <= kc {
            let r: [__m256; 8] = std::array::from_fn(|j| _mm256_loadu_ps(cols[j].add(kk)));
            store_8x8_transposed(r, out.add(kk * NR));
            kk += 8;
        }
        for k in kk..kc {
            for (j, col) in cols.iter().enumerate() {
                *out.add(k * NR + j) = *col.add(k);
            }
        }
    }
}

/// `out[j * NR + i] = r[i][j]` for 8 registers of 8 32-bit lanes: 8
/// consecutive k of 8 columns, transposed into half of a B panel's rows.
/// Shared with the bf16 packing and inlined like
/// [`store_6x8_interleaved`].
///
/// # Safety
/// AVX must be available; `out` must be valid for `7 * NR + 8` floats.
#[inline(always)]
pub(crate) unsafe fn store_8x8_transposed(r: [__m256; 8], out: *mut f32) {
    unsafe {
        let t0 = _mm256_unpacklo_ps(r[0], r[1]);
        let t1 = _mm256_unpackhi_ps(r[0], r[1]);
        let t2 = _mm256_unpacklo_ps(r[2], r[3]);
        let t3 = _mm256_unpackhi_ps(r[2], r[3]);
        let t4 = _mm256_unpacklo_ps(r[4], r[5]);
        let t5 = _mm256_unpackhi_ps(r[4], r[5]);
        let t6 = _mm256_unpacklo_ps(r[6], r[7]);
        let t7 = _mm256_unpackhi_ps(r[6], r[7]);
        // Columns 0-3 / 4-7 of k = j (low lane) and j + 4 (high lane).
        let lo = [
            _mm256_shuffle_ps::<0x44>(t0, t2),
            _mm256_shuffle_ps::<0xEE>(t0, t2),
            _mm256_shuffle_ps::<0x44>(t1, t3),
            _mm256_shuffle_ps::<0xEE>(t1, t3),
        ];
        let hi = [
            _mm256_shuffle_ps::<0x44>(t4, t6),
            _mm256_shuffle_ps::<0xEE>(t4, t6),
            _mm256_shuffle_ps::<0x44>(t5, t7),
            _mm256_shuffle_ps::<0xEE>(t5, t7),
        ];
        for j in 0..4 {
            _mm256_storeu_ps(
                out.add(j * NR),
                _mm256_permute2f128_ps::<0x20>(lo[j], hi[j]),
            );
            _mm256_storeu_ps(
                out.add((j + 4) * NR),
                _mm256_permute2f128_ps::<0x31>(lo[j], hi[j]),
            );
        }
    }
}

/// One 6x16 tile: `C[..mr, ..nr] = alpha * Ap * Bp + beta * C` over depth
/// `kc`, or `+ row[..nr]` on every row instead of `beta * C` when `row` is
/// given (`row + acc` rounds exactly like `1 * C + acc` with C = row).
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn kernel_6x16(
    kc: usize,
    a: *const f32,
    mut b: *const f32,
    c: *mut f32,
    rsc: isize,
    alpha: f32,
    beta: f32,
    row: Option<*const f32>,
    mr: usize,
    nr: usize,
) {
    let mut acc = [[_mm256_setzero_ps(); 2]; MR];
    unsafe {
        // Start pulling this tile of C into cache now: it is needed only
        // after the k loop, and a miss there would stall the whole tile.
        for i in 0..mr {
            let cp = c.offset(i as isize * rsc) as *const i8;
            _mm_prefetch::<_MM_HINT_T0>(cp);
            // wrapping_add: the last row's second line may lie past C (a
            // prefetch never faults, but `add` out of bounds would be UB).
            _mm_prefetch::<_MM_HINT_T0>(cp.wrapping_add(60));
        }
        // One step of k: two 8-wide loads of the B panel, MR broadcasts
        // from the A panel, 2 * MR FMAs.
        let mut a = a;
        let step = |a: &mut *const f32, b: &mut *const f32, acc: &mut [[__m256; 2]; MR]| {
            let b0 = _mm256_loadu_ps(*b);
            let b1 = _mm256_loadu_ps(b.add(8));
            for (i, row) in acc.iter_mut().enumerate() {
                let ai = _mm256_broadcast_ss(&*a.add(i));
                row[0] = _mm256_fmadd_ps(ai, b0, row[0]);
                row[1] = _mm256_fmadd_ps(ai, b1, row[1]);
            }
            *a = a.add(MR);
            *b = b.add(NR);
        };
        for _ in 0..kc / 4 {
            step(&mut a, &mut b, &mut acc);
            step(&mut a, &mut b, &mut acc);
            step(&mut a, &mut b, &mut acc);
            step(&mut a, &mut b, &mut acc);
        }
        for _ in 0..kc % 4 {
            step(&mut a, &mut b, &mut acc);
        }
        let va = _mm256_set1_ps(alpha);
        if mr == MR && nr == NR {
            let bias = row.map(|r| (_mm256_loadu_ps(r), _mm256_loadu_ps(r.add(8))));
            for (i, row) in acc.iter().enumerate() {
                let cp = c.offset(i as isize * rsc);
                let (mut r0, mut r1) = (_mm256_mul_ps(row[0], va), _mm256_mul_ps(row[1], va));
                if let Some((b0, b1)) = bias {
                    r0 = _mm256_add_ps(b0, r0);
                    r1 = _mm256_add_ps(b1, r1);
                } else if beta != 0.0 {
                    let vb = _mm256_set1_ps(beta);
                    r0 = _mm256_fmadd_ps(_mm256_loadu_ps(cp), vb, r0);
                    r1 = _mm256_fmadd_ps(_mm256_loadu_ps(cp.add(8)), vb, r1);
                }
                _mm256_storeu_ps(cp, r0);
                _mm256_storeu_ps(cp.add(8), r1);
            }
            return;
        }
        // Edge tile: spill and write the valid part.
        let mut tile = [[0.0f32; NR]; MR];
        for (t, row) in tile.iter_mut().zip(&acc) {
            _mm256_storeu_ps(t.as_mut_ptr(), row[0]);
            _mm256_storeu_ps(t.as_mut_ptr().add(8), row[1]);
        }
        for (i, t) in tile.iter().enumerate().take(mr) {
            let cp = c.offset(i as isize * rsc);
            for (j, &v) in t.iter().enumerate().take(nr) {
                *cp.add(j) = finish(v, alpha, beta, cp.add(j), row.map(|r| *r.add(j)));
            }
        }
    }
}

/// One AVX-512 tile of 6 rows by `P` B panels (`P * 16` columns, one zmm
/// per row and panel): `C[..mr, ..nr] = alpha * Ap * Bp + beta * C` over
/// depth `kc`, or `+ row[..nr]` instead of `beta * C`, exactly as in
/// `kernel_6x16`. Panel `p` of B starts `p * NR * kc` floats after `b`
/// (packed panels are stored back to back). With `P = 2` the 12
/// accumulators cover the FMA latency as the AVX2 kernel's 12 ymm do;
/// `P = 1` covers the odd last panel of a block.
#[target_feature(enable = "avx512f,avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn kernel_avx512<const P: usize>(
    kc: usize,
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    rsc: isize,
    alpha: f32,
    beta: f32,
    row: Option<*const f32>,
    mr: usize,
    nr: usize,
) {
    let mut acc = [[_mm512_setzero_ps(); P]; MR];
    unsafe {
        for i in 0..mr {
            let cp = c.offset(i as isize * rsc) as *const i8;
            for p in 0..P {
                // wrapping_add: see `kernel_6x16`.
                _mm_prefetch::<_MM_HINT_T0>(cp.wrapping_add(64 * p));
            }
        }
        let panels: [*const f32; P] = std::array::from_fn(|p| b.wrapping_add(p * NR * kc));
        let mut a = a;
        let mut kk = 0;
        let step = |a: &mut *const f32, kk: &mut usize, acc: &mut [[__m512; P]; MR]| {
            let bv: [__m512; P] = std::array::from_fn(|p| _mm512_loadu_ps(panels[p].add(*kk * NR)));
            for (i, row) in acc.iter_mut().enumerate() {
                let ai = _mm512_set1_ps(*a.add(i));
                for p in 0..P {
                    row[p] = _mm512_fmadd_ps(ai, bv[p], row[p]);
                }
            }
            *a = a.add(MR);
            *kk += 1;
        };
        for _ in 0..kc / 4 {
            step(&mut a, &mut kk, &mut acc);
            step(&mut a, &mut kk, &mut acc);
            step(&mut a, &mut kk, &mut acc);
            step(&mut a, &mut kk, &mut acc);
        }
        for _ in 0..kc % 4 {
            step(&mut a, &mut kk, &mut acc);
        }
        store_tile_avx512(&acc, c, rsc, alpha, beta, row, mr, nr);
    }
}

/// Writes a 6-row AVX-512 tile of `P` 16-column panels (`acc`, before
/// alpha) to C: `C[..mr, ..nr] = alpha * acc + beta * C`, or `+ row[..nr]`
/// on every row instead of `beta * C` (C's old contents unread; with beta
/// 0 they are unread too, so NaN there is ignored). Full tiles go straight
/// from the registers, fusing `beta * C + alpha * acc` into one FMA; edge
/// tiles are spilled and only the valid part written, by [`finish`] (the
/// same arithmetic). Shared by the fp32 kernel `kernel_avx512`, the bf16
/// kernel (`microkernel_bf16.rs`) and the AMX one (`microkernel_amx.rs`),
/// so all follow the same rules for C.
///
/// Always inlined, and so without a `target_feature` of its own (the two
/// cannot be combined): it takes its callers' AVX-512 features, and the
/// accumulators stay in registers instead of being spilled for a call.
///
/// # Safety
/// AVX-512F must be available; C must be valid for `mr` rows (stride
/// `rsc`) of `nr` columns, and `row`, when given, for `nr` values.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn store_tile_avx512<const P: usize>(
    acc: &[[__m512; P]; MR],
    c: *mut f32,
    rsc: isize,
    alpha: f32,
    beta: f32,
    row: Option<*const f32>,
    mr: usize,
    nr: usize,
) {
    unsafe {
        let va = _mm512_set1_ps(alpha);
        if mr == MR && nr == P * NR {
            for (i, acc_row) in acc.iter().enumerate() {
                let cp = c.offset(i as isize * rsc);
                for (p, &acc) in acc_row.iter().enumerate() {
                    let mut r = _mm512_mul_ps(acc, va);
                    if let Some(bias) = row {
                        r = _mm512_add_ps(_mm512_loadu_ps(bias.add(p * NR)), r);
                    } else if beta != 0.0 {
                        let vb = _mm512_set1_ps(beta);
                        r = _mm512_fmadd_ps(_mm512_loadu_ps(cp.add(p * NR)), vb, r);
                    }
                    _mm512_storeu_ps(cp.add(p * NR), r);
                }
            }
            return;
        }
        // Edge tile: spill and write the valid part.
        let mut tile = [[[0.0f32; NR]; P]; MR];
        for (t, acc_row) in tile.iter_mut().zip(acc) {
            for p in 0..P {
                _mm512_storeu_ps(t[p].as_mut_ptr(), acc_row[p]);
            }
        }
        for (i, t) in tile.iter().enumerate().take(mr) {
            let cp = c.offset(i as isize * rsc);
            for (j, &v) in t.as_flattened().iter().enumerate().take(nr) {
                *cp.add(j) = finish(v, alpha, beta, cp.add(j), row.map(|r| *r.add(j)));
            }
        }
    }
}

/// One element of an edge tile, in scalar code, exactly as a full tile's
/// vector code computes it: `alpha * acc`, then the row added, or `beta *
/// C` fused onto it in one rounding (C unread when beta is 0). So an
/// element's bits do not depend on whether its tile is full or an edge
/// one, which is where the threads' split of C and the block sizes put it.
///
/// # Safety
/// `c` must be readable when `row` is None and beta is not 0.
#[inline(always)]
unsafe fn finish(acc: f32, alpha: f32, beta: f32, c: *const f32, row: Option<f32>) -> f32 {
    let scaled = alpha * acc;
    match row {
        Some(r) => r + scaled,
        None if beta == 0.0 => scaled,
        None => unsafe { *c }.mul_add(beta, scaled),
    }
}
