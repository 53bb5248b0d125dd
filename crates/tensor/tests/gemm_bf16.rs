//! The bf16 GEMM kernels (`Kernel::Avx512Bf16`, `Kernel::AmxBf16`) against an f64 reference
//! computed on the bf16-ROUNDED inputs, with a stated bound; the rounding
//! itself against hand-computed bit patterns; and the kernel's packing of
//! special values. Each test runs every bf16 kernel the CPU supports and
//! prints SKIPPED for the others (AVX512_BF16; AMX-BF16 with the OS's
//! permission). The process-wide precision setting is tested in its own
//! binary (`tests/gemm_precision.rs`): nothing here changes it.
//!
//! # The bound
//! Let `a'`, `b'` be the inputs rounded to bf16 (8-bit significands). Each
//! product `a' * b'` has at most 16 significant bits, so it is exact in f32;
//! the kernel's only errors are the f32 roundings (u = 2^-24, nearest even)
//! of the additions: one per product added by `vdpbf16ps` (at most; it may
//! fuse a pair), and, per depth block (at most ceil(k / 384)), the
//! `alpha * acc`, the `beta * C` and the add of the two. By the usual bound
//! for recursive summation (Higham, Accuracy and Stability, 4.2),
//! `|got - exact| <= gamma_n * (|alpha| sum |a'||b'| + |beta||C|)` with
//! `gamma_n = n u / (1 - n u)` and `n` the most roundings any term meets,
//! `n <= k + 3 ceil(k / 384) <= k + 3 + k / 128`. We test against
//! `(k + 8) * 2^-23` times that sum, i.e. `2 (k + 8) u`, which exceeds
//! `gamma_n` for every k here (n u < 1e-4, so gamma_n < 1.0001 n u).
//! Flush-to-zero cannot add error here: the test data are multiples of
//! 2^-23, so every partial sum is 0 or at least 2^-46, far above 2^-126.
//!
//! The bound is a worst case and grows with k, but a wrong input rounding
//! (truncation instead of nearest even, say) errs by 2^-9 of a term, far
//! above `(k + 8) 2^-23` of the sum at the small k most shapes have, and
//! the rounding tests below compare bit for bit.

use tensor::bf16;
use tensor::gemm::{sgemm_bias_with, sgemm_with};
use tensor::testing::data;
use tensor::{Kernel, Precision, Trans};

/// The bf16 kernels this CPU runs; prints SKIPPED with the test's name for
/// each one it cannot.
fn kernels(test: &str) -> Vec<Kernel> {
    let mut run = Vec::new();
    for (kernel, needs) in [
        (
            Kernel::Avx512Bf16,
            "AVX512_BF16 (avx512_bf16 in /proc/cpuinfo)",
        ),
        (
            Kernel::AmxBf16,
            "AMX-BF16 (amx_bf16, amx_tile) with the OS's tile permission",
        ),
    ] {
        if kernel.is_supported() {
            run.push(kernel);
        } else {
            println!("SKIPPED {test} for {kernel:?}: this CPU has no {needs}");
        }
    }
    run
}

fn rounded(v: &[f32]) -> Vec<f32> {
    v.iter().map(|&x| bf16::round(x)).collect()
}

/// `op(X)[r][c]` of an `rows x cols` operand stored as `t` says.
fn at(x: &[f32], t: Trans, rows: usize, cols: usize, r: usize, c: usize) -> f32 {
    match t {
        Trans::N => x[r * cols + c],
        Trans::T => x[c * rows + r],
    }
}

/// What C should be, in f64 on the rounded inputs, and the bound's sum
/// `|alpha| sum |a'||b'| + |init|` per element. `init` is `beta * C` (or
/// the bias row), already in f64.
#[allow(clippy::too_many_arguments)]
fn reference(
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: &[f32],
    ta: Trans,
    b: &[f32],
    tb: Trans,
    init: impl Fn(usize, usize) -> f64,
) -> (Vec<f64>, Vec<f64>) {
    let (a, b) = (rounded(a), rounded(b));
    let mut want = vec![0.0; m * n];
    let mut sum = vec![0.0; m * n];
    for i in 0..m {
        for j in 0..n {
            let (mut acc, mut abs) = (0.0f64, 0.0f64);
            for p in 0..k {
                let prod = at(&a, ta, m, k, i, p) as f64 * at(&b, tb, k, n, p, j) as f64;
                acc += prod;
                abs += prod.abs();
            }
            let old = init(i, j);
            want[i * n + j] = alpha as f64 * acc + old;
            sum[i * n + j] = (alpha as f64).abs() * abs + old.abs();
        }
    }
    (want, sum)
}

/// Panics naming the worst element if any `|got - want| > (k + 8) 2^-23 sum`.
fn assert_within(what: &str, k: usize, got: &[f32], want: &[f64], sum: &[f64]) {
    let scale = (k + 8) as f64 * 2f64.powi(-23);
    let mut worst: Option<(usize, f64)> = None;
    for (i, ((&g, &w), &s)) in got.iter().zip(want).zip(sum).enumerate() {
        let err = (g as f64 - w).abs();
        let excess = if err.is_nan() {
            f64::INFINITY
        } else {
            err - scale * s
        };
        if excess > 0.0 && worst.is_none_or(|(_, e)| excess > e) {
            worst = Some((i, excess));
        }
    }
    if let Some((i, _)) = worst {
        panic!(
            "{what}: element {i} is {} but the reference on bf16-rounded inputs is {} \
             (|err| {:e} > bound {:e} = (k + 8) 2^-23 * {:e})",
            got[i],
            want[i],
            (got[i] as f64 - want[i]).abs(),
            scale * sum[i],
            sum[i]
        );
    }
}

/// Full 6x32 tiles, ragged ones (17..31 and <= 16 columns, fewer than 6
/// rows), one and several depth blocks (KC = 384: k 700 and 1001 take two
/// and three), odd k (a zero-padded last pair), shapes that take the serial
/// path and both threaded splits; every transpose; beta 0 over a NaN-filled
/// C, 1 and -0.75; alpha 1, -0.5 and 2; and the bias row with alpha 0.5
/// and 1. (Alpha 1 with beta 0 or 1 or the row is the AMX kernel's
/// in-place path, any other its scaled one.)
#[test]
fn bf16_kernel_matches_f64_reference_on_rounded_inputs() {
    for kernel in kernels("bf16_kernel_matches_f64_reference_on_rounded_inputs") {
        bf16_kernel_matches_f64_reference_on_rounded_inputs_on(kernel);
    }
}

fn bf16_kernel_matches_f64_reference_on_rounded_inputs_on(kernel: Kernel) {
    let shapes = [
        (6, 32, 8),
        (12, 64, 33),
        (5, 31, 7),
        (7, 17, 3),
        (13, 48, 321),
        (1, 1, 1),
        (6, 16, 5),
        (2, 3, 2),
        (23, 80, 700),
        (37, 45, 1001),
        (145, 3075, 5),
        (300, 250, 64),
        (64, 300, 40),
    ];
    for (m, n, k) in shapes {
        let seed = (m * 31 + n * 7 + k) as u64;
        let a = data(m * k, seed);
        let b = data(k * n, seed + 1);
        for ta in [Trans::N, Trans::T] {
            for tb in [Trans::N, Trans::T] {
                for (alpha, beta) in [(1.0f32, 0.0f32), (1.0, 1.0), (-0.5, 1.0), (2.0, -0.75)] {
                    let c0 = if beta == 0.0 {
                        vec![f32::NAN; m * n]
                    } else {
                        data(m * n, seed + 2)
                    };
                    let init = |i: usize, j: usize| {
                        if beta == 0.0 {
                            0.0
                        } else {
                            beta as f64 * c0[i * n + j] as f64
                        }
                    };
                    let (want, sum) = reference(m, n, k, alpha, &a, ta, &b, tb, init);
                    let mut c = c0.clone();
                    sgemm_with(kernel, m, n, k, alpha, &a, ta, &b, tb, beta, &mut c);
                    let what =
                        format!("{kernel:?} {m}x{n}x{k} {ta:?}{tb:?} alpha {alpha} beta {beta}");
                    assert_within(&what, k, &c, &want, &sum);
                }
                let bias = data(n, seed + 3);
                for alpha in [0.5, 1.0] {
                    let (want, sum) =
                        reference(m, n, k, alpha, &a, ta, &b, tb, |_, j| bias[j] as f64);
                    let mut c = vec![f32::NAN; m * n];
                    sgemm_bias_with(kernel, m, n, k, alpha, &a, ta, &b, tb, &bias, &mut c);
                    let what = format!("{kernel:?} bias alpha {alpha} {m}x{n}x{k} {ta:?}{tb:?}");
                    assert_within(&what, k, &c, &want, &sum);
                }
            }
        }
    }
}

/// The bound is not loose enough to pass a kernel that ignores bf16: the
/// same products on the unrounded inputs differ from the kernel's by more
/// than the bound (so the reference really is on rounded inputs and the
/// kernel really rounds).
#[test]
fn bf16_kernel_differs_from_the_unrounded_product() {
    for kernel in kernels("bf16_kernel_differs_from_the_unrounded_product") {
        bf16_kernel_differs_from_the_unrounded_product_on(kernel);
    }
}

fn bf16_kernel_differs_from_the_unrounded_product_on(kernel: Kernel) {
    let (m, n, k) = (12, 40, 9);
    let a = data(m * k, 1);
    let b = data(k * n, 2);
    let mut c = vec![0.0; m * n];
    sgemm_with(
        kernel,
        m,
        n,
        k,
        1.0,
        &a,
        Trans::N,
        &b,
        Trans::N,
        0.0,
        &mut c,
    );
    let mut f32_c = vec![0.0; m * n];
    sgemm_with(
        Kernel::best(),
        m,
        n,
        k,
        1.0,
        &a,
        Trans::N,
        &b,
        Trans::N,
        0.0,
        &mut f32_c,
    );
    let (_, sum) = reference(m, n, k, 1.0, &a, Trans::N, &b, Trans::N, |_, _| 0.0);
    let scale = (k + 8) as f64 * 2f64.powi(-23);
    let beyond = (0..m * n)
        .filter(|&i| (c[i] as f64 - f32_c[i] as f64).abs() > scale * sum[i])
        .count();
    assert!(
        beyond > m * n / 2,
        "{kernel:?}: only {beyond} of {} elements differ from fp32 beyond the bound",
        m * n
    );
}

/// Hand-picked f32 bit patterns and the bf16 each must round to (round to
/// nearest, ties to even; subnormals to a signed zero; overflow to
/// infinity; infinities kept; NaN kept NaN with the quiet bit set).
const CASES: [(u32, u16, &str); 24] = [
    (0x3F80_0000, 0x3F80, "1 is exact"),
    (0x3F80_7FFF, 0x3F80, "just below half an ulp above 1: down"),
    (0x3F80_8000, 0x3F80, "tie above 1, 0x3F80 even: down"),
    (0x3F80_8001, 0x3F81, "just above the tie: up"),
    (0x3F81_8000, 0x3F82, "tie above 0x3F81 (odd): up to even"),
    (0x3F81_7FFF, 0x3F81, "just below that tie: down"),
    (
        0xBF80_8000,
        0xBF80,
        "negative tie, even below: toward even (magnitude down)",
    ),
    (
        0xBF81_8000,
        0xBF82,
        "negative tie, odd below: toward even (magnitude up)",
    ),
    (0x3FFF_8000, 0x4000, "tie that carries into the exponent"),
    (0x4049_0FDB, 0x4049, "pi: 0x0FDB is below half"),
    (0x3DCC_CCCD, 0x3DCD, "0.1: 0xCCCD is above half"),
    (0x7F7F_7FFF, 0x7F7F, "below the top tie: the largest bf16"),
    (
        0x7F7F_8000,
        0x7F80,
        "tie at the top, odd below: up to infinity",
    ),
    (0x7F7F_FFFF, 0x7F80, "f32::MAX: infinity"),
    (0x0080_0000, 0x0080, "smallest normal is exact"),
    (
        0x0080_8000,
        0x0080,
        "tie above the smallest normal: down to even",
    ),
    (0x0040_0000, 0x0000, "subnormal: zero"),
    (0x0000_0001, 0x0000, "smallest subnormal: zero"),
    (0x807F_FFFF, 0x8000, "negative subnormal: negative zero"),
    (0x8000_0000, 0x8000, "negative zero"),
    (0x7F80_0000, 0x7F80, "infinity"),
    (0xFF80_0000, 0xFF80, "negative infinity"),
    (
        0x7F80_0001,
        0x7FC0,
        "signalling NaN, payload in the low bits: a quiet NaN",
    ),
    (0xFFC1_2345, 0xFFC1, "quiet negative NaN: its top half"),
];

#[test]
fn bf16_rounding_is_round_to_nearest_even() {
    for (bits, want, what) in CASES {
        let got = bf16::to_bits(f32::from_bits(bits));
        assert_eq!(
            got, want,
            "{bits:#010x} ({what}): got {got:#06x}, want {want:#06x}"
        );
        let r = bf16::round(f32::from_bits(bits));
        assert_eq!(r.to_bits(), u32::from(want) << 16, "round({bits:#010x})");
        assert_eq!(r.is_nan(), f32::from_bits(bits).is_nan(), "{what}");
    }
    // Rounding is idempotent and monotone on a sweep of normal values.
    let mut prev = f32::NEG_INFINITY;
    for i in 0..20_000u32 {
        let x = f32::from_bits(0x3F00_0000 + i * 411);
        let r = bf16::round(x);
        assert_eq!(bf16::round(r), r, "{x}");
        assert!(r >= prev, "{x}: {r} < {prev}");
        assert!((r - x).abs() <= x.abs() * 2f32.powi(-8), "{x} -> {r}");
        prev = r;
    }
}

/// The kernel multiplies what its packing rounded, through every packing
/// path: `C = A * I` and `C = I * B` (37 x 37, odd k, ragged panels, every
/// transpose) give the rounded finite hand-picked values exactly (each
/// element of C is one rounded value times 1 plus exact zeros); a depth-1
/// product by 1.0 passes infinities and NaN through.
#[test]
fn bf16_kernel_rounds_its_inputs_to_nearest_even() {
    for kernel in kernels("bf16_kernel_rounds_its_inputs_to_nearest_even") {
        bf16_kernel_rounds_its_inputs_to_nearest_even_on(kernel);
    }
}

fn bf16_kernel_rounds_its_inputs_to_nearest_even_on(kernel: Kernel) {
    // The cases whose bf16 is finite (infinity or NaN times the zeros of
    // the identity would make NaN).
    let finite: Vec<f32> = CASES
        .iter()
        .map(|&(bits, _, _)| f32::from_bits(bits))
        .filter(|x| bf16::round(*x).is_finite())
        .collect();
    let s = 37;
    let values: Vec<f32> = (0..s * s).map(|i| finite[(i * 7) % finite.len()]).collect();
    let eye: Vec<f32> = (0..s * s)
        .map(|i| if i / s == i % s { 1.0 } else { 0.0 })
        .collect();
    // op(X) = values as stored for N, so the stored matrix for T is its transpose.
    let stored = |t: Trans| match t {
        Trans::N => values.clone(),
        Trans::T => (0..s * s).map(|i| values[(i % s) * s + i / s]).collect(),
    };
    let want = rounded(&values);
    for t in [Trans::N, Trans::T] {
        for other in [Trans::N, Trans::T] {
            let x = stored(t);
            let mut c = vec![f32::NAN; s * s];
            sgemm_with(kernel, s, s, s, 1.0, &x, t, &eye, other, 0.0, &mut c);
            assert_eq!(c, want, "{kernel:?} A * I, A {t:?}");
            let mut c = vec![f32::NAN; s * s];
            sgemm_with(kernel, s, s, s, 1.0, &eye, other, &x, t, 0.0, &mut c);
            assert_eq!(c, want, "{kernel:?} I * B, B {t:?}");
        }
    }
    // Depth 1: a column of values times 1.0, and 1.0 times a row of them.
    let all: Vec<f32> = CASES.iter().map(|&(b, _, _)| f32::from_bits(b)).collect();
    let n = all.len();
    let mut col = vec![0.0; n];
    sgemm_with(
        kernel,
        n,
        1,
        1,
        1.0,
        &all,
        Trans::N,
        &[1.0],
        Trans::N,
        0.0,
        &mut col,
    );
    let mut row = vec![0.0; n];
    sgemm_with(
        kernel,
        1,
        n,
        1,
        1.0,
        &[1.0],
        Trans::N,
        &all,
        Trans::N,
        0.0,
        &mut row,
    );
    for (i, (&x, &(_, want, what))) in all.iter().zip(&CASES).enumerate() {
        let want = bf16::from_bits(want);
        for (side, got) in [("A", col[i]), ("B", row[i])] {
            let same = (got.is_nan() && want.is_nan()) || got == want;
            assert!(
                same,
                "{kernel:?} {side} {x:e} ({what}): got {got:e}, want {want:e}"
            );
        }
    }
}

#[test]
fn precision_names_parse_and_refuse_clearly() {
    assert_eq!("fp32".parse::<Precision>(), Ok(Precision::Fp32));
    assert_eq!("bf16".parse::<Precision>(), Ok(Precision::Bf16));
    let err = "fp16".parse::<Precision>().unwrap_err();
    assert!(
        err.contains("\"fp16\"") && err.contains("fp32 or bf16"),
        "{err}"
    );
    assert_eq!(Precision::Bf16.to_string(), "bf16");
    match Precision::Bf16.kernel() {
        Ok(k) => assert!(matches!(k, Kernel::Avx512Bf16 | Kernel::AmxBf16)),
        Err(e) => {
            assert!(!Kernel::Avx512Bf16.is_supported());
            assert!(e.contains("avx512_bf16"), "{e}");
        }
    }
    assert_eq!(Precision::Fp32.kernel(), Ok(Kernel::best()));
    for kernel in [Kernel::Avx512Bf16, Kernel::AmxBf16] {
        assert!(
            !Kernel::available().contains(&kernel),
            "{kernel:?} is not f32"
        );
    }
}
