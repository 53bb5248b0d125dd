//! The bf16 GEMM on AMX tiles (`tdpbf16ps`), for CPUs with AMX-BF16: the
//! same numbers as `microkernel_bf16.rs` (operands rounded to bf16 while
//! packed, f32 accumulation, C written by `store_tile_avx512`), a 32x32 C
//! block per step in four f32 tiles (32x16 in two for a block's odd last
//! B panel), in the loop nest of `gemm_blocking::drive` shared with the
//! other kernels.
//!
//! # The tiles
//! A tile is up to 16 rows of 64 bytes. `tdpbf16ps c, a, b` adds to the
//! 16 x 16 f32 tile c the product of a (16 rows x 16 bf16 pairs: rows of A,
//! 32 consecutive k) and b (16 rows of 16 pairs: row t holds, for each of
//! 16 columns, the pair (B[2t][j], B[2t + 1][j])), `c[i][j] += sum_t
//! a.lo[i][t] * b.lo[t][j] + a.hi[i][t] * b.hi[t][j]`: 16 x 16 x 32
//! multiply-adds in one instruction. The B layout is exactly
//! `microkernel_bf16::pack_b`'s 16-column panels (64 bytes per pair), so B
//! is packed by that function, each panel padded to whole tiles (a
//! multiple of 16 pairs) with zeros. A is packed row-major in pairs (row i
//! is `kps` consecutive words), which is what a tile load of 16 rows reads
//! (row stride `kps * 4` bytes), padded to 32 rows and whole tiles with
//! zeros. Tiles 0-3 hold the 2 x 2 C tiles, 4-5 two A tiles, 6-7 two B
//! tiles: each A and B tile loaded is used twice.
//!
//! # Using AMX at all
//! The tile registers hold 8 KiB of state that Linux saves only for
//! processes that ask: `arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`
//! once per process (made here, by a raw syscall, the first time support
//! is checked), else the first tile instruction kills the process. Each
//! product configures the tiles (`ldtilecfg`: palette 1, all eight 16 rows x
//! 64 bytes) and releases them at the end (`tilerelease`), so a thread
//! holds tile state only while it multiplies. Rust has no stable AMX
//! intrinsics or feature detection yet, so the instructions are inline
//! assembly and detection reads CPUID (leaf 7: EDX bit 22 AMX-BF16, bit 24
//! AMX-TILE) directly.

#![cfg(target_arch = "x86_64")]

use crate::gemm_blocking::{depth, PackFn, PackedKernel, TileFn};
use crate::microkernel::{store_tile_avx512, MR, NR};
use crate::microkernel_bf16::{pack_b, pair_at, INTERLEAVE_512};
use std::arch::asm;
use std::arch::x86_64::*;
use std::sync::OnceLock;

/// Maximum depth of one block, in k (a multiple of 32, one tile's depth):
/// a 32-row A strip and a 32-column B strip are 32 KiB each.
const KC: usize = 512;
/// Maximum rows of one packed A block (a multiple of 32).
const MC: usize = 96;
/// Maximum columns of one packed B block (a multiple of 32).
const NC: usize = 2048;

/// Whether the CPU has AMX-BF16 and AMX-TILE and the OS lets this process
/// use the tile data (asked for once, here).
pub(crate) fn is_available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        // SAFETY: CPUID leaf 7 exists on every x86-64 CPU with AVX-512,
        // checked by the caller before this; on older ones it reads zeros.
        #[allow(unused_unsafe)]
        let leaf7 = unsafe { __cpuid_count(7, 0) };
        let amx_bf16 = (leaf7.edx >> 22) & 1 == 1;
        let amx_tile = (leaf7.edx >> 24) & 1 == 1;
        amx_bf16 && amx_tile && request_tile_permission()
    })
}

/// `arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`: 0 on success.
#[cfg(target_os = "linux")]
fn request_tile_permission() -> bool {
    const SYS_ARCH_PRCTL: i64 = 158;
    const ARCH_REQ_XCOMP_PERM: u64 = 0x1023;
    const XFEATURE_XTILEDATA: u64 = 18;
    let ret: i64;
    // SAFETY: a plain syscall; it only changes which state the kernel
    // saves for this process. rcx and r11 are clobbered by `syscall`.
    unsafe {
        asm!(
            "syscall",
            inlateout("rax") SYS_ARCH_PRCTL => ret,
            in("rdi") ARCH_REQ_XCOMP_PERM,
            in("rsi") XFEATURE_XTILEDATA,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret == 0
}

#[cfg(not(target_os = "linux"))]
fn request_tile_permission() -> bool {
    false
}

/// The 64-byte operand of `ldtilecfg`.
#[repr(C, align(64))]
struct TileConfig {
    palette: u8,
    start_row: u8,
    reserved: [u8; 14],
    colsb: [u16; 16],
    rows: [u8; 16],
}

/// `C = alpha * bf16(A) * bf16(B) + beta * C` (or `+ row`), as
/// `Kernel::Avx512Bf16` (`microkernel_bf16.rs`), on AMX tiles, driven by
/// `gemm_blocking::drive`: 32-row A panels, 16-column B panels two at a
/// time (a block's odd last panel by the 32 x 16 block), panels padded to
/// whole tiles (16 pairs) in depth, the tile registers configured once per
/// product on the thread that computes it.
///
/// Its callers must have seen [`is_available`] return true.
pub(crate) struct Amx;

/// The tile configuration of every product: palette 1, tiles 0-7 of 16
/// rows x 64 bytes.
static CONFIG: TileConfig = TileConfig {
    palette: 1,
    start_row: 0,
    reserved: [0; 14],
    colsb: [64, 64, 64, 64, 64, 64, 64, 64, 0, 0, 0, 0, 0, 0, 0, 0],
    rows: [16, 16, 16, 16, 16, 16, 16, 16, 0, 0, 0, 0, 0, 0, 0, 0],
};

impl PackedKernel for Amx {
    type Word = u32;
    const MR: usize = 32;
    const NR: usize = NR;
    const PANELS: usize = 2;
    const K_UNIT: usize = 2;
    const KD_ALIGN: usize = 16;
    const KC: usize = KC;
    const MC: usize = MC;
    const NC: usize = NC;
    const PACK_A: PackFn<u32> = pack_a;
    const PACK_B: PackFn<u32> = pack_b_tiled;
    const TILE: TileFn<u32> = block::<2>;
    const TILE_LAST_PANEL: TileFn<u32> = block::<1>;

    unsafe fn begin() {
        // SAFETY: a valid palette-1 configuration; the caller guarantees
        // AMX (and the OS's permission, asked for by `is_available`).
        unsafe { asm!("ldtilecfg [{}]", in(reg) &CONFIG, options(nostack, readonly)) };
    }

    unsafe fn end() {
        // SAFETY: ends this thread's use of the tiles.
        unsafe { asm!("tilerelease", options(nostack, nomem)) };
    }
}

/// Pairs per packed row or column of a `kc`-deep block: whole tiles.
fn tile_pairs(kc: usize) -> usize {
    depth::<Amx>(kc)
}

/// [`pack_b`] with each panel padded to whole tiles in depth.
///
/// # Safety
/// As [`pack_b`].
unsafe fn pack_b_tiled(
    kc: usize,
    nc: usize,
    b: *const f32,
    rsb: isize,
    csb: isize,
    out: &mut [u32],
) {
    unsafe { pack_b(kc, nc, b, rsb, csb, out, tile_pairs(kc)) }
}

/// Packs the `mc x kc` block of A row-major in bf16 pairs: word `i * kps +
/// t` = (A[i][2t], A[i][2t + 1]) with `kps` = [`tile_pairs`], zero for
/// pairs past `kc` and for rows `mc..` up to a multiple of 32.
#[target_feature(enable = "avx512bf16,avx512f,avx512bw,avx512vl,avx2,fma")]
unsafe fn pack_a(mc: usize, kc: usize, a: *const f32, rsa: isize, csa: isize, out: &mut [u32]) {
    let kp = kc.div_ceil(2);
    let kps = tile_pairs(kc);
    let rows = mc.next_multiple_of(32);
    assert!(out.len() >= rows * kps);
    if rsa == 1 && csa != 1 {
        unsafe { pack_a_transposed(mc, kc, a, csa, out, kps) };
        out[mc * kps..rows * kps].fill(0);
        return;
    }
    for i in 0..mc {
        let src = unsafe { a.offset(i as isize * rsa) };
        let dst = &mut out[i * kps..(i + 1) * kps];
        let mut t = 0;
        if csa == 1 {
            // Row i is contiguous along k: 32 values round into 16 pairs
            // in order (the low half of the instruction's result is its
            // second operand).
            while 2 * t + 32 <= kc {
                unsafe {
                    let lo = _mm512_loadu_ps(src.add(2 * t));
                    let hi = _mm512_loadu_ps(src.add(2 * t + 16));
                    let v: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(hi, lo));
                    _mm512_storeu_si512(dst.as_mut_ptr().add(t) as *mut __m512i, v);
                }
                t += 16;
            }
        }
        for (t, d) in dst.iter_mut().enumerate().skip(t) {
            *d = if t < kp {
                unsafe { pair_at(src, csa, 2 * t, kc) }
            } else {
                0
            };
        }
    }
    out[mc * kps..rows * kps].fill(0);
}

/// `pack_a` for column-major A (transposed: row k of the stored matrix
/// holds `A[..][k]`, contiguous over i): 16 rows by 16 pairs at a time, each
/// pair of stored rows rounded and interleaved into the 16 pairs of one k
/// pair (`vcvtne2ps2bf16` + `vpermw`), then transposed through a small
/// buffer into A's rows; the ragged rows and pairs by scalar code.
#[target_feature(enable = "avx512bf16,avx512f,avx512bw,avx512vl,avx2,fma")]
unsafe fn pack_a_transposed(
    mc: usize,
    kc: usize,
    a: *const f32,
    csa: isize,
    out: &mut [u32],
    kps: usize,
) {
    let kp = kc.div_ceil(2);
    // Whole 16-pair groups with both k of every pair inside the block.
    let t_full = (kc / 2) / 16 * 16;
    let i_full = mc / 16 * 16;
    unsafe {
        let idx = _mm512_loadu_si512(INTERLEAVE_512.as_ptr() as *const __m512i);
        let mut tmp = [[0u32; 16]; 16];
        for i0 in (0..i_full).step_by(16) {
            for t0 in (0..t_full).step_by(16) {
                for (t, col) in tmp.iter_mut().enumerate() {
                    let k = 2 * (t0 + t);
                    let x0 = _mm512_loadu_ps(a.offset(k as isize * csa).add(i0));
                    let x1 = _mm512_loadu_ps(a.offset((k + 1) as isize * csa).add(i0));
                    let halves: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(x1, x0));
                    let pairs = _mm512_permutexvar_epi16(idx, halves);
                    _mm512_storeu_si512(col.as_mut_ptr() as *mut __m512i, pairs);
                }
                for i in 0..16 {
                    let dst = &mut out[(i0 + i) * kps + t0..][..16];
                    for (t, d) in dst.iter_mut().enumerate() {
                        *d = tmp[t][i];
                    }
                }
            }
        }
    }
    // What the groups left: pairs t_full.. of the full rows, and all pairs
    // of the ragged rows; zero past the block's depth.
    for i in 0..mc {
        let src = unsafe { a.add(i) };
        let from = if i < i_full { t_full } else { 0 };
        for t in from..kps {
            out[i * kps + t] = if t < kp {
                unsafe { pair_at(src, csa, 2 * t, kc) }
            } else {
                0
            };
        }
    }
}

/// One block of C, 32 rows by `P` 16-column B panels, over `kps` pairs (a
/// multiple of 16), `mr` rows and `nr` columns valid. The tiles must have
/// been configured (`Amx::begin`).
///
/// With alpha 1 and C set to the bias row, kept (beta 1) or ignored (beta
/// 0), which is every product of the convolutions and of every later
/// depth block, the C tiles start from the row, C or zero and are stored
/// back as they are ([`block_in_place`]): no spill, no second pass over
/// the block. Any other alpha or beta scales a zero-started sum on the way
/// out ([`block_scaled`]). Which of the two runs depends only on the
/// product's alpha, beta and row, never on where the block lies, so an
/// element's bits do not either.
#[target_feature(enable = "avx512bf16,avx512f,avx512bw,avx512vl,avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn block<const P: usize>(
    kps: usize,
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
    unsafe {
        if alpha == 1.0 && (row.is_some() || beta == 0.0 || beta == 1.0) {
            let init = match row {
                Some(r) => Start::Row(r),
                None if beta == 1.0 => Start::C,
                None => Start::Zero,
            };
            block_in_place::<P>(kps, a, b, c, rsc, init, mr, nr);
        } else {
            block_scaled::<P>(kps, a, b, c, rsc, alpha, beta, row, mr, nr);
        }
    }
}

/// What the C tiles of [`block_in_place`] start from.
#[derive(Clone, Copy)]
enum Start {
    Zero,
    /// C's old contents.
    C,
    /// The bias row, on every row.
    Row(*const f32),
}

/// A 32-row block of `P` 16-column panels of f32, laid out as the C tiles
/// are stored: 64-byte aligned, rows `P * 64` bytes apart.
#[repr(C, align(64))]
struct Staging<const P: usize>([[[f32; NR]; P]; 32]);

/// `C = C0 + bf16(A) * bf16(B)` on one block, C0 the row, C or zero (see
/// [`block`]). A full block loads and stores its tiles straight from and to
/// C (a row by a zero stride: every tile row reads it); an edge block goes
/// through a staging copy of its valid part, so its elements see the same
/// arithmetic.
#[target_feature(enable = "avx512bf16,avx512f,avx512bw,avx512vl,avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn block_in_place<const P: usize>(
    kps: usize,
    a: *const u32,
    b: *const u32,
    c: *mut f32,
    rsc: isize,
    start: Start,
    mr: usize,
    nr: usize,
) {
    unsafe {
        if mr == 32 && nr == P * NR {
            let c_stride = rsc as usize * 4;
            match start {
                Start::Zero => zero_c::<P>(),
                Start::C => load_c::<P>(c, c.offset(16 * rsc), c_stride),
                Start::Row(r) => load_c::<P>(r, r, 0),
            }
            accumulate::<P>(kps, a, b);
            store_c::<P>(c, c.offset(16 * rsc), c_stride);
            return;
        }
        let mut stage = Staging::<P>([[[0.0; NR]; P]; 32]);
        for (i, stage_row) in stage.0.iter_mut().enumerate().take(mr) {
            let values = stage_row.as_flattened_mut();
            match start {
                Start::Zero => {}
                Start::C => {
                    let ci = c.offset(i as isize * rsc);
                    for (j, v) in values.iter_mut().enumerate().take(nr) {
                        *v = *ci.add(j);
                    }
                }
                Start::Row(r) => {
                    for (j, v) in values.iter_mut().enumerate().take(nr) {
                        *v = *r.add(j);
                    }
                }
            }
        }
        let s = stage.0.as_mut_ptr() as *mut f32;
        let stride = P * NR * 4;
        load_c::<P>(s, s.add(16 * P * NR), stride);
        accumulate::<P>(kps, a, b);
        store_c::<P>(s, s.add(16 * P * NR), stride);
        for (i, stage_row) in stage.0.iter().enumerate().take(mr) {
            let ci = c.offset(i as isize * rsc);
            for (j, &v) in stage_row.as_flattened().iter().enumerate().take(nr) {
                *ci.add(j) = v;
            }
        }
    }
}

/// `C = alpha * bf16(A) * bf16(B) + beta * C` (or `+ row`) on one block:
/// the sum started from zero, spilled to the stack, then written by
/// `store_tile_avx512` six rows at a time.
#[target_feature(enable = "avx512bf16,avx512f,avx512bw,avx512vl,avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn block_scaled<const P: usize>(
    kps: usize,
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
    let mut spill = Staging::<P>([[[0.0; NR]; P]; 32]);
    let s = spill.0.as_mut_ptr() as *mut f32;
    unsafe {
        zero_c::<P>();
        accumulate::<P>(kps, a, b);
        store_c::<P>(s, s.add(16 * P * NR), P * NR * 4);
        for g in (0..mr).step_by(MR) {
            let acc: [[__m512; P]; MR] = std::array::from_fn(|i| {
                let r = (g + i).min(31);
                std::array::from_fn(|p| _mm512_loadu_ps(spill.0[r][p].as_ptr()))
            });
            let rows = MR.min(mr - g);
            store_tile_avx512(
                &acc,
                c.offset(g as isize * rsc),
                rsc,
                alpha,
                beta,
                row,
                rows,
                nr,
            );
        }
    }
}

// The C tiles: tmm0 and tmm2 hold rows 0-15 and 16-31 of panel 0, tmm1
// and tmm3 the same of panel 1 (P = 2 only). tmm4-5 take the two A tiles,
// tmm6-7 the B tiles.

/// Zeroes the C tiles.
#[inline(always)]
unsafe fn zero_c<const P: usize>() {
    unsafe {
        asm!("tilezero tmm0", "tilezero tmm2", options(nostack, nomem));
        if P == 2 {
            asm!("tilezero tmm1", "tilezero tmm3", options(nostack, nomem));
        }
    }
}

/// Loads the C tiles: rows 0-15 from `top`, rows 16-31 from `bottom`,
/// each `stride` bytes apart (0: every row the same), panel 1 16 floats on.
///
/// # Safety
/// The 16 rows at each of the two pointers must be readable, `P * 16`
/// floats each.
#[inline(always)]
unsafe fn load_c<const P: usize>(top: *const f32, bottom: *const f32, stride: usize) {
    unsafe {
        asm!(
            "tileloadd tmm0, [{t} + {st} * 1]",
            "tileloadd tmm2, [{b} + {st} * 1]",
            t = in(reg) top,
            b = in(reg) bottom,
            st = in(reg) stride,
            options(nostack, readonly)
        );
        if P == 2 {
            asm!(
                "tileloadd tmm1, [{t} + {st} * 1]",
                "tileloadd tmm3, [{b} + {st} * 1]",
                t = in(reg) top.add(NR),
                b = in(reg) bottom.add(NR),
                st = in(reg) stride,
                options(nostack, readonly)
            );
        }
    }
}

/// Stores the C tiles as [`load_c`] loads them.
///
/// # Safety
/// The 16 rows at each pointer must be writable, `P * 16` floats each.
#[inline(always)]
unsafe fn store_c<const P: usize>(top: *mut f32, bottom: *mut f32, stride: usize) {
    unsafe {
        asm!(
            "tilestored [{t} + {st} * 1], tmm0",
            "tilestored [{b} + {st} * 1], tmm2",
            t = in(reg) top,
            b = in(reg) bottom,
            st = in(reg) stride,
            options(nostack)
        );
        if P == 2 {
            asm!(
                "tilestored [{t} + {st} * 1], tmm1",
                "tilestored [{b} + {st} * 1], tmm3",
                t = in(reg) top.add(NR),
                b = in(reg) bottom.add(NR),
                st = in(reg) stride,
                options(nostack)
            );
        }
    }
}

/// Adds `A * B` over `kps` pairs to the C tiles: per 16 pairs, two A tiles
/// (rows 0-15, 16-31) and `P` B tiles, each loaded once and used twice
/// (`P` = 2) or once.
///
/// # Safety
/// `a` must hold 32 packed rows of `kps` pairs, `b` `P` panels of `kps`.
#[inline(always)]
unsafe fn accumulate<const P: usize>(kps: usize, a: *const u32, b: *const u32) {
    let a_stride = kps * 4;
    unsafe {
        for t in (0..kps).step_by(16) {
            let a0 = a.add(t);
            let a1 = a.add(16 * kps + t);
            // Panel p's pairs t.. start at word (p * kps + t) * 16.
            let b0 = b.add(t * 16);
            asm!(
                "tileloadd tmm4, [{a0} + {sa} * 1]",
                "tileloadd tmm5, [{a1} + {sa} * 1]",
                "tileloadd tmm6, [{b0} + {sb} * 1]",
                "tdpbf16ps tmm0, tmm4, tmm6",
                "tdpbf16ps tmm2, tmm5, tmm6",
                a0 = in(reg) a0,
                a1 = in(reg) a1,
                b0 = in(reg) b0,
                sa = in(reg) a_stride,
                sb = in(reg) 64usize,
                options(nostack, readonly)
            );
            if P == 2 {
                // The A tiles are still in tmm4-5: the second panel's
                // products reuse them.
                asm!(
                    "tileloadd tmm7, [{b1} + {sb} * 1]",
                    "tdpbf16ps tmm1, tmm4, tmm7",
                    "tdpbf16ps tmm3, tmm5, tmm7",
                    b1 = in(reg) b.add((kps + t) * 16),
                    sb = in(reg) 64usize,
                    options(nostack, readonly)
                );
            }
        }
    }
}
