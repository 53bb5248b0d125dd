//! The bf16 mixed-precision GEMM for CPUs with AVX512_BF16: f32 operands
//! in, rounded to bf16 while they are packed, multiplied by `vdpbf16ps`
//! into f32 accumulators, and written to C in f32 with the same alpha, beta
//! and bias-row rules as the fp32 kernels (`store_tile_avx512`, shared with
//! them).
//!
//! # Why this layout
//! `vdpbf16ps acc, a, b` treats each 32-bit lane `j` of its operands as a
//! *pair* of bf16 values and adds both products to lane `j` of the f32
//! accumulator: `acc[j] += a.lo[j] * b.lo[j] + a.hi[j] * b.hi[j]`. A pair
//! must therefore hold two consecutive k of the same row of A (or column
//! of B), and the unit of depth is a k-pair, not a k. So both operands are
//! packed k-pair-interleaved:
//! - B, in 16-column panels (one zmm = 16 columns x 1 k-pair): word
//!   `(panel * kp + t) * 16 + j` holds `B[2t][j]` in its low half and
//!   `B[2t + 1][j]` in its high half (`kp` = k-pairs in the block);
//! - A, in 6-row panels: word `(panel * kp + t) * 6 + i` holds
//!   `A[i][2t]` low and `A[i][2t + 1]` high; the kernel broadcasts that
//!   one 32-bit word to all 16 lanes, so lane j gets
//!   `A[i][2t] * B[2t][j] + A[i][2t + 1] * B[2t + 1][j]`.
//!
//! The register tile is the fp32 AVX-512 kernel's: 6 rows by two B panels
//! (32 columns), 12 zmm accumulators, one broadcast and two `vdpbf16ps`
//! per row and k-pair; each instruction does twice the multiply-adds of an
//! fp32 FMA, and the packed operands are half the bytes.
//!
//! An odd depth pads the last pair of both operands with zero (0 * 0 adds
//! nothing, even next to a NaN elsewhere in the row). The packed words live
//! in the same per-thread scratch slot as the fp32 packing (as u32, the
//! same size and alignment as f32).
//!
//! # Why the conversion happens while packing
//! Every element of A and B is loaded once per block to be packed anyway;
//! rounding it there (`vcvtne2ps2bf16`, two f32 vectors to one of bf16,
//! then `vpermw` to interleave them into pairs) costs two instructions per
//! 64 bytes written and no extra pass over memory, where a separate
//! conversion pass would read and write every operand once more. Edges
//! (ragged panels, leftover pairs, unusual strides) use the scalar
//! [`crate::bf16::to_bits`], which rounds bit for bit as the instruction
//! does (round to nearest even, subnormals to zero, NaN stays NaN).
//!
//! # Accuracy
//! Each product of two bf16 values (8-bit significands) is exact in f32;
//! `vdpbf16ps` rounds once per product added (round to nearest even, and
//! it flushes subnormal inputs and results to zero). So against the
//! product of the *rounded* inputs the error is that of an f32 sum; the
//! rounding of the inputs themselves (relative 2^-9 each) is the price of
//! bf16. Everything outside the GEMM stays f32.
//!
//! Only used after runtime detection of AVX512_BF16, F, BW and VL (see
//! `gemm::Kernel::Avx512Bf16`); single-threaded like `microkernel.rs`.

#![cfg(target_arch = "x86_64")]

use crate::bf16;
use crate::gemm_blocking::{PackFn, PackedKernel, TileFn};
use crate::microkernel::{store_6x8_interleaved, store_8x8_transposed, store_tile_avx512, MR, NR};
use std::arch::x86_64::*;
use std::mem::transmute;

/// Maximum depth of one packed block, in k (an even number, so only the
/// last block of an odd k has a padded pair). A pair of 16-column B
/// micro-panels is `KC / 2 * 128` bytes = 24 KiB, inside L1d, as the
/// fp32 kernel's are at its `KC` of 320.
const KC: usize = 384;
/// Maximum rows of one packed A block: `MC * KC * 2` bytes = 54 KiB of L2.
const MC: usize = 72;
/// Maximum columns of one packed B block: `KC * NC * 2` bytes = 1.5 MiB.
const NC: usize = 2048;

/// `vpermw` index that interleaves the two 16-word halves of a zmm (bf16
/// of row 2t, then of row 2t + 1) into pairs: word 2j <- j, 2j + 1 <- 16 + j.
pub(crate) static INTERLEAVE_512: [u16; 32] = interleave();
/// The same for the two 8-word halves of a ymm.
static INTERLEAVE_256: [u16; 16] = interleave();

const fn interleave<const W: usize>() -> [u16; W] {
    let mut v = [0u16; W];
    let mut j = 0;
    while j < W / 2 {
        v[2 * j] = j as u16;
        v[2 * j + 1] = (W / 2 + j) as u16;
        j += 1;
    }
    v
}

/// The bf16 family for `gemm_blocking::drive` (`Kernel::Avx512Bf16`):
/// `C = alpha * bf16(A) * bf16(B) + beta * C` (or `+ row`) with f32
/// accumulation, depth in k-pairs, 6x32 tiles.
pub(crate) struct Bf16;

impl PackedKernel for Bf16 {
    type Word = u32;
    const MR: usize = MR;
    const NR: usize = NR;
    const PANELS: usize = 2;
    const K_UNIT: usize = 2;
    const KC: usize = KC;
    const MC: usize = MC;
    const NC: usize = NC;
    const PACK_A: PackFn<u32> = pack_a;
    const PACK_B: PackFn<u32> = pack_b_dense;
    const TILE: TileFn<u32> = kernel::<2>;
    const TILE_LAST_PANEL: TileFn<u32> = kernel::<1>;
}

/// [`pack_b`] with the panels back to back (`kc / 2` pairs apart, rounded
/// up), as the 6x32 tile reads them.
///
/// # Safety
/// As [`pack_b`].
unsafe fn pack_b_dense(
    kc: usize,
    nc: usize,
    b: *const f32,
    rsb: isize,
    csb: isize,
    out: &mut [u32],
) {
    unsafe { pack_b(kc, nc, b, rsb, csb, out, kc.div_ceil(2)) }
}

/// The pair (element k, element k + 1) of a row of A or a column of B that
/// starts at `p` and steps `ks` per k, zero past the block's depth `kc`.
///
/// # Safety
/// `p.offset(k * ks)` (and the next one, when `k + 1 < kc`) must be readable.
pub(crate) unsafe fn pair_at(p: *const f32, ks: isize, k: usize, kc: usize) -> u32 {
    unsafe {
        let lo = *p.offset(k as isize * ks);
        let hi = if k + 1 < kc {
            *p.offset((k + 1) as isize * ks)
        } else {
            0.0
        };
        bf16::pair(lo, hi)
    }
}

/// Packs the `kc x nc` block of B into 16-column panels of k-pairs (see the
/// module doc), rounding to bf16; the last panel is padded with zero
/// columns, an odd `kc` with a zero pair half. Panels are `kps` pairs
/// apart (`kps >= kc / 2` rounded up; this kernel packs them back to back,
/// the AMX kernel pads each to whole tiles), the pairs past `kc` zero.
#[target_feature(enable = "avx512bf16,avx512f,avx512bw,avx512vl,avx2,fma")]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn pack_b(
    kc: usize,
    nc: usize,
    b: *const f32,
    rsb: isize,
    csb: isize,
    out: &mut [u32],
    kps: usize,
) {
    let kp = kc.div_ceil(2);
    let full = nc / NR;
    assert!(kps >= kp && out.len() >= nc.next_multiple_of(NR) * kps);
    if csb == 1 {
        // Row-major B: rows 2t and 2t + 1, 16 columns at a time, rounded
        // together by one vcvtne2ps2bf16 and interleaved by one vpermw.
        unsafe {
            let idx = _mm512_loadu_si512(INTERLEAVE_512.as_ptr() as *const __m512i);
            for t in 0..kp {
                let r0 = b.offset((2 * t) as isize * rsb);
                let r1 = (2 * t + 1 < kc).then(|| b.offset((2 * t + 1) as isize * rsb));
                for p in 0..full {
                    let x0 = _mm512_loadu_ps(r0.add(p * NR));
                    let x1 = match r1 {
                        Some(r1) => _mm512_loadu_ps(r1.add(p * NR)),
                        None => _mm512_setzero_ps(),
                    };
                    // Words 0..16: bf16(x0); 16..32: bf16(x1).
                    let halves: __m512i = transmute(_mm512_cvtne2ps_pbh(x1, x0));
                    let pairs = _mm512_permutexvar_epi16(idx, halves);
                    let dst = out.as_mut_ptr().add((p * kps + t) * NR);
                    _mm512_storeu_si512(dst as *mut __m512i, pairs);
                }
            }
        }
    } else if rsb == 1 {
        // Column-major B (transposed): each column is contiguous along k,
        // so 16 of its values round straight into 8 pairs; 8 columns of 8
        // pairs are then transposed in registers.
        for p in 0..full {
            for half in 0..2 {
                let cols: [*const f32; 8] = std::array::from_fn(|j| unsafe {
                    b.offset((p * NR + half * 8 + j) as isize * csb)
                });
                unsafe { pack_cols8(kc, cols, out.as_mut_ptr().add(p * NR * kps + half * 8)) };
            }
        }
    } else {
        for p in 0..full {
            for t in 0..kp {
                for j in 0..NR {
                    out[(p * kps + t) * NR + j] =
                        unsafe { pair_at(b.offset((p * NR + j) as isize * csb), rsb, 2 * t, kc) };
                }
            }
        }
    }
    // Full panels' padding pairs.
    if kps > kp {
        for p in 0..full {
            out[(p * kps + kp) * NR..(p + 1) * kps * NR].fill(0);
        }
    }
    // The ragged last panel, padded with zero columns and pairs (any layout).
    let nr = nc - full * NR;
    if nr > 0 {
        let panel = &mut out[full * NR * kps..][..NR * kps];
        for (t, dst) in panel.chunks_exact_mut(NR).enumerate() {
            for (j, d) in dst.iter_mut().enumerate() {
                *d = if j < nr && t < kp {
                    unsafe { pair_at(b.offset((full * NR + j) as isize * csb), rsb, 2 * t, kc) }
                } else {
                    0
                };
            }
        }
    }
}

/// Writes `out[t * NR + j] = pair(cols[j][2t], cols[j][2t + 1])` for 8
/// columns of `kc` floats (contiguous along k).
#[target_feature(enable = "avx512bf16,avx512f,avx512bw,avx512vl,avx2,fma")]
unsafe fn pack_cols8(kc: usize, cols: [*const f32; 8], out: *mut u32) {
    unsafe { pack_lines::<8, NR>(kc, cols, out, |r, o| store_8x8_transposed(r, o)) }
}

/// Writes `out[t * W + l] = pair(lines[l][2t], lines[l][2t + 1])` for `L`
/// lines of `kc` floats, each contiguous along k (rows of A, `W` = `MR`;
/// columns of B, `W` = `NR`): 16 values of every line at a time rounded
/// to 8 pairs in one register each, which `store` lays out from its
/// pointer (pair t of the 8 at `t * W`); the rest one pair at a time.
///
/// Always inlined into its `target_feature` callers (the closures they
/// pass take their features, and `store` inlines with them).
///
/// # Safety
/// AVX512_BF16 must be available; each line must hold `kc` floats, and
/// `out` must be valid for `kc.div_ceil(2) * W` words.
#[inline(always)]
unsafe fn pack_lines<const L: usize, const W: usize>(
    kc: usize,
    lines: [*const f32; L],
    out: *mut u32,
    store: impl Fn([__m256; L], *mut f32),
) {
    unsafe {
        let mut t = 0;
        while 2 * (t + 8) <= kc {
            // Line l's k = 2t..2t + 16 as 8 pairs (even k in the low half).
            let r: [__m256; L] = std::array::from_fn(|l| {
                transmute::<__m256bh, __m256>(_mm512_cvtneps_pbh(_mm512_loadu_ps(
                    lines[l].add(2 * t),
                )))
            });
            store(r, out.add(t * W) as *mut f32);
            t += 8;
        }
        for t in t..kc.div_ceil(2) {
            for (l, &line) in lines.iter().enumerate() {
                *out.add(t * W + l) = pair_at(line, 1, 2 * t, kc);
            }
        }
    }
}

/// Packs the `mc x kc` block of A into 6-row panels of k-pairs (see the
/// module doc), rounding to bf16; the last panel is padded with zero rows,
/// an odd `kc` with a zero pair half.
#[target_feature(enable = "avx512bf16,avx512f,avx512bw,avx512vl,avx2,fma")]
unsafe fn pack_a(mc: usize, kc: usize, a: *const f32, rsa: isize, csa: isize, out: &mut [u32]) {
    let kp = kc.div_ceil(2);
    let full = mc / MR;
    assert!(out.len() >= mc.next_multiple_of(MR) * kp);
    if rsa == 1 {
        // Column-major A (transposed): k by k (as the fp32 packing, to stay
        // on each cache line while it is in L1), the 6 values of a panel
        // from k = 2t and 2t + 1 loaded masked, rounded and interleaved
        // together.
        unsafe {
            let idx = _mm256_loadu_si256(INTERLEAVE_256.as_ptr() as *const __m256i);
            for t in 0..kp {
                let r0 = a.offset((2 * t) as isize * csa);
                let r1 = (2 * t + 1 < kc).then(|| a.offset((2 * t + 1) as isize * csa));
                for p in 0..full {
                    let x0 = _mm256_maskz_loadu_ps(0x3F, r0.add(p * MR));
                    let x1 = match r1 {
                        Some(r1) => _mm256_maskz_loadu_ps(0x3F, r1.add(p * MR)),
                        None => _mm256_setzero_ps(),
                    };
                    let halves: __m256i = transmute(_mm256_cvtne2ps_pbh(x1, x0));
                    let pairs = _mm256_permutexvar_epi16(idx, halves);
                    let dst = out.as_mut_ptr().add((p * kp + t) * MR);
                    _mm256_mask_storeu_epi32(dst as *mut i32, 0x3F, pairs);
                }
            }
        }
    } else if csa == 1 {
        // Row-major A: each row contiguous along k, rounded 16 values (8
        // pairs) at a time, 6 rows interleaved in registers.
        for p in 0..full {
            let rows: [*const f32; MR] =
                std::array::from_fn(|i| unsafe { a.offset((p * MR + i) as isize * rsa) });
            unsafe { pack_rows6(kc, rows, out.as_mut_ptr().add(p * MR * kp)) };
        }
    } else {
        for p in 0..full {
            for t in 0..kp {
                for i in 0..MR {
                    out[(p * kp + t) * MR + i] =
                        unsafe { pair_at(a.offset((p * MR + i) as isize * rsa), csa, 2 * t, kc) };
                }
            }
        }
    }
    // The ragged last panel, padded with zero rows (any layout).
    let mr = mc - full * MR;
    if mr > 0 {
        let panel = &mut out[full * MR * kp..][..MR * kp];
        for (t, dst) in panel.chunks_exact_mut(MR).enumerate() {
            for (i, d) in dst.iter_mut().enumerate() {
                *d = if i < mr {
                    unsafe { pair_at(a.offset((full * MR + i) as isize * rsa), csa, 2 * t, kc) }
                } else {
                    0
                };
            }
        }
    }
}

/// Writes `out[t * MR + i] = pair(rows[i][2t], rows[i][2t + 1])` for six
/// rows of `kc` floats (contiguous along k).
#[target_feature(enable = "avx512bf16,avx512f,avx512bw,avx512vl,avx2,fma")]
unsafe fn pack_rows6(kc: usize, rows: [*const f32; MR], out: *mut u32) {
    unsafe { pack_lines::<MR, MR>(kc, rows, out, |r, o| store_6x8_interleaved(r, o)) }
}

/// One tile of 6 rows by `P` B panels (`P * 16` columns): `C[..mr, ..nr] =
/// alpha * Ap * Bp + beta * C` over `kp` k-pairs, or `+ row[..nr]` instead
/// of `beta * C`, written by `store_tile_avx512` as the fp32 kernel's.
/// Panel `p` of B starts `p * NR * kp` words after `b`.
#[target_feature(enable = "avx512bf16,avx512f,avx512bw,avx512vl,avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn kernel<const P: usize>(
    kp: usize,
    a: *const u32,
    b: *const u32,
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
                // wrapping_add: see `microkernel::kernel_6x16`.
                _mm_prefetch::<_MM_HINT_T0>(cp.wrapping_add(64 * p));
            }
        }
        let panels: [*const u32; P] = std::array::from_fn(|p| b.wrapping_add(p * NR * kp));
        let mut a = a;
        let mut t = 0;
        // One k-pair: P loads of B, MR broadcasts of an A pair, MR * P
        // vdpbf16ps (each 32 multiply-adds).
        let step = |a: &mut *const u32, t: &mut usize, acc: &mut [[__m512; P]; MR]| {
            let bv: [__m512bh; P] = std::array::from_fn(|p| {
                transmute::<__m512i, __m512bh>(_mm512_loadu_si512(
                    panels[p].add(*t * NR) as *const __m512i
                ))
            });
            for (i, row) in acc.iter_mut().enumerate() {
                let ai = transmute::<__m512i, __m512bh>(_mm512_set1_epi32(*a.add(i) as i32));
                for p in 0..P {
                    row[p] = _mm512_dpbf16_ps(row[p], ai, bv[p]);
                }
            }
            *a = a.add(MR);
            *t += 1;
        };
        for _ in 0..kp / 4 {
            step(&mut a, &mut t, &mut acc);
            step(&mut a, &mut t, &mut acc);
            step(&mut a, &mut t, &mut acc);
            step(&mut a, &mut t, &mut acc);
        }
        for _ in 0..kp % 4 {
            step(&mut a, &mut t, &mut acc);
        }
        store_tile_avx512(&acc, c, rsc, alpha, beta, row, mr, nr);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// f32 bit patterns of every kind: normal, subnormal, zero, infinite,
    /// NaN (quiet and signalling, payload high and low), near the top.
    fn patterns(len: usize) -> Vec<f32> {
        let special = [
            0x0000_0000u32,
            0x8000_0000,
            0x0000_0001,
            0x807F_FFFF,
            0x7F80_0000,
            0xFF80_0000,
            0x7FC0_0000,
            0x7F80_0001,
            0xFF80_8000,
            0x7F7F_FFFF,
            0x3F80_8000,
            0x3F81_8000,
            0x3F80_8001,
        ];
        let mut s = 0x1234_5678_9ABC_DEF1u64;
        (0..len)
            .map(|i| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                let bits = if i % 3 == 0 {
                    special[(s as usize >> 8) % special.len()]
                } else {
                    s as u32
                };
                f32::from_bits(bits)
            })
            .collect()
    }

    /// The vector conversion and interleave of every packing path give the
    /// same words as the scalar `bf16::pair`, bit for bit, on every kind of
    /// f32 (so edges and whole panels round alike). `kc` 37: full runs of
    /// 16 k, a leftover, and an odd padded pair; 3 panels plus a ragged one.
    #[test]
    fn vector_packing_rounds_exactly_as_the_scalar_rounding() {
        let supported = std::arch::is_x86_feature_detected!("avx512bf16")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vl");
        if !supported {
            println!("SKIPPED vector_packing_rounds_exactly_as_the_scalar_rounding: this CPU has no AVX512_BF16");
            return;
        }
        let (kc, rows): (usize, usize) = (37, 3 * 16 + 5);
        let kp = kc.div_ceil(2);
        let x = patterns(kc * rows);
        // x as a k x rows matrix, read through each of the three layouts.
        let at = |k: usize, r: usize| if k < kc { x[k * rows + r] } else { 0.0 };
        let want_b = |t: usize, j: usize| {
            if j < rows {
                bf16::pair(at(2 * t, j), at(2 * t + 1, j))
            } else {
                0
            }
        };
        let xt: Vec<f32> = (0..rows)
            .flat_map(|r| (0..kc).map(move |k| (k, r)))
            .map(|(k, r)| x[k * rows + r])
            .collect();
        let panels_b = rows.div_ceil(NR);
        for (what, ptr, rs, cs) in [
            ("B row-major", x.as_ptr(), rows as isize, 1),
            ("B column-major", xt.as_ptr(), 1, kc as isize),
        ] {
            let mut out = vec![0xDEAD_BEEFu32; panels_b * NR * kp];
            unsafe { pack_b(kc, rows, ptr, rs, cs, &mut out, kp) };
            for p in 0..panels_b {
                for t in 0..kp {
                    for j in 0..NR {
                        let got = out[(p * kp + t) * NR + j];
                        let want = want_b(t, p * NR + j);
                        assert_eq!(got, want, "{what}: panel {p} pair {t} column {j}");
                    }
                }
            }
        }
        // A = x^T (rows x kc): stored as xt row-major, or x column-major.
        let panels_a = rows.div_ceil(MR);
        for (what, ptr, rs, cs) in [
            ("A row-major", xt.as_ptr(), kc as isize, 1),
            ("A column-major", x.as_ptr(), 1, rows as isize),
        ] {
            let mut out = vec![0xDEAD_BEEFu32; panels_a * MR * kp];
            unsafe { pack_a(rows, kc, ptr, rs, cs, &mut out) };
            for p in 0..panels_a {
                for t in 0..kp {
                    for i in 0..MR {
                        let got = out[(p * kp + t) * MR + i];
                        let want = want_b(t, p * MR + i);
                        assert_eq!(got, want, "{what}: panel {p} pair {t} row {i}");
                    }
                }
            }
        }
    }
}
