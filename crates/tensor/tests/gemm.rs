//! `sgemm` against the naive f64 reference, with every block kernel this CPU
//! supports (`Kernel::available()`: the portable matrixmultiply one and, where
//! detected, our AVX2+FMA kernel): all four transposes, alpha and beta
//! (including beta = 0 over a NaN-filled C), k = 0, sizes that take the serial
//! path and both threaded splits, and sizes across the kernel's blocking
//! (edge tiles, several k blocks). Tolerance: see `tensor::testing::SUM_RTOL`.
//! The AVX-512 kernel is also run by name, over its own tile edges, so a
//! machine that has it cannot pass without exercising it.

use proptest::prelude::*;
use tensor::gemm::{sgemm_bias_with, sgemm_with};
use tensor::testing::{abs, assert_close, data, SUM_RTOL};
use tensor::{reference, sgemm, sgemm_serial, Kernel, Trans};

fn trans() -> impl Strategy<Value = Trans> {
    prop_oneof![Just(Trans::N), Just(Trans::T)]
}

#[allow(clippy::too_many_arguments)]
fn check(m: usize, n: usize, k: usize, ta: Trans, tb: Trans, alpha: f32, beta: f32, seed: u64) {
    let a = data(m * k, seed);
    let b = data(k * n, seed + 1);
    // With beta = 0 the old C must be ignored, NaN included.
    let c0 = if beta == 0.0 {
        vec![f32::NAN; m * n]
    } else {
        data(m * n, seed + 2)
    };
    let mut want = c0.clone();
    reference::gemm(m, n, k, alpha, &a, ta, &b, tb, beta, &mut want);
    // Bound: |alpha| * |A||B| + |beta * C|.
    let mut bound = abs(&c0);
    reference::gemm(
        m,
        n,
        k,
        alpha.abs(),
        &abs(&a),
        ta,
        &abs(&b),
        tb,
        beta.abs(),
        &mut bound,
    );
    let what = format!("{m}x{n}x{k} {ta:?}{tb:?} alpha {alpha} beta {beta}");
    for kernel in Kernel::available() {
        let mut c = c0.clone();
        sgemm_with(kernel, m, n, k, alpha, &a, ta, &b, tb, beta, &mut c);
        assert_close(
            &format!("sgemm_with({kernel:?}) {what}"),
            &c,
            &want,
            &bound,
            SUM_RTOL,
        );
    }
    let mut c = c0.clone();
    sgemm(m, n, k, alpha, &a, ta, &b, tb, beta, &mut c);
    assert_close(&format!("sgemm {what}"), &c, &want, &bound, SUM_RTOL);
    let mut c = c0.clone();
    sgemm_serial(m, n, k, alpha, &a, ta, &b, tb, beta, &mut c);
    assert_close(&format!("sgemm_serial {what}"), &c, &want, &bound, SUM_RTOL);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Small shapes, on the calling thread: every edge of the blocking.
    #[test]
    fn small_matches_reference(
        m in 1usize..=40, n in 1usize..=40, k in 0usize..=40,
        ta in trans(), tb in trans(),
        alpha in prop_oneof![Just(1.0f32), Just(-0.5), Just(2.0)],
        beta in prop_oneof![Just(0.0f32), Just(1.0), Just(-0.75)],
        seed in any::<u32>(),
    ) {
        check(m, n, k, ta, tb, alpha, beta, seed as u64);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Shapes above the threading threshold, tall (split along M) and short
    /// and wide (split along N).
    #[test]
    fn threaded_matches_reference(
        tall in any::<bool>(),
        m_small in 1usize..=90, m_tall in 129usize..=400,
        n in 17usize..=300, k in 20usize..=200,
        ta in trans(), tb in trans(),
        alpha in prop_oneof![Just(1.0f32), Just(-0.5)],
        beta in prop_oneof![Just(0.0f32), Just(1.0), Just(0.25)],
        seed in any::<u32>(),
    ) {
        let m = if tall { m_tall } else { m_small };
        check(m, n, k, ta, tb, alpha, beta, seed as u64);
    }
}

/// The shapes the ResNet50 late layers and dense head use (M = 64 rows).
#[test]
fn late_layer_shapes_match_reference() {
    for &(m, n, k) in &[
        (64, 512, 1024),
        (64, 2048, 512),
        (64, 10, 2048),
        (256, 1024, 64),
    ] {
        for ta in [Trans::N, Trans::T] {
            for tb in [Trans::N, Trans::T] {
                check(m, n, k, ta, tb, 1.0, 0.0, 11);
            }
        }
    }
}

/// Shapes that cross the AVX2 kernel's blocking: more than one k block
/// (KC = 256), m and n blocks (MC = 144, NC = 3072) with ragged edges.
#[test]
fn blocking_edges_match_reference() {
    for &(m, n, k) in &[(7, 17, 257), (145, 33, 600), (150, 3075, 5), (1, 1, 513)] {
        for (ta, tb) in [(Trans::N, Trans::N), (Trans::T, Trans::T)] {
            check(m, n, k, ta, tb, -0.5, 0.5, 13);
        }
    }
}

/// Extra trailing elements in the operands are ignored.
#[test]
fn oversized_buffers_are_fine() {
    let a = data(3 * 4 + 5, 1);
    let b = data(4 * 2 + 7, 2);
    let mut c = vec![7.0f32; 3 * 2 + 3];
    sgemm(3, 2, 4, 1.0, &a, Trans::N, &b, Trans::N, 0.0, &mut c);
    let mut want = vec![0.0; 6];
    reference::gemm(3, 2, 4, 1.0, &a, Trans::N, &b, Trans::N, 0.0, &mut want);
    let bound = vec![4.0; 6];
    assert_close("oversized", &c[..6], &want, &bound, SUM_RTOL);
    assert_eq!(&c[6..], &[7.0; 3], "sgemm wrote past m*n");
}

/// The AVX-512 kernel by name (skipped, saying so, on a CPU without
/// AVX-512F): its 6x32 tiles split into full, ragged (17..31 columns) and
/// single-panel (<= 16 columns) ones, ragged rows, several k blocks, beta
/// 0 / 1 / other, every transpose, and the bias row of `sgemm_bias`.
#[test]
fn avx512_kernel_matches_reference() {
    let kernel = Kernel::Avx512;
    if !kernel.is_supported() {
        println!("SKIPPED avx512_kernel_matches_reference: this CPU has no AVX-512F");
        return;
    }
    let shapes = [
        (6, 32, 8),
        (12, 64, 33),
        (5, 31, 7),
        (7, 17, 3),
        (13, 48, 321),
        (1, 1, 1),
        (6, 16, 5),
        (23, 80, 700),
        (145, 3075, 5),
        (300, 250, 64),
    ];
    for (m, n, k) in shapes {
        for ta in [Trans::N, Trans::T] {
            for tb in [Trans::N, Trans::T] {
                for (alpha, beta) in [(1.0f32, 0.0f32), (-0.5, 1.0), (2.0, -0.75)] {
                    // Every available kernel, this one included.
                    check(m, n, k, ta, tb, alpha, beta, (m * 31 + n * 7 + k) as u64);
                }
                // The bias row: the reference with every row of C set to
                // it and beta = 1.
                let a = data(m * k, 5);
                let b = data(k * n, 6);
                let bias = data(n, 7);
                let c0: Vec<f32> = (0..m).flat_map(|_| bias.iter().copied()).collect();
                let mut want = c0.clone();
                reference::gemm(m, n, k, 0.5, &a, ta, &b, tb, 1.0, &mut want);
                let mut bound = abs(&c0);
                reference::gemm(m, n, k, 0.5, &abs(&a), ta, &abs(&b), tb, 1.0, &mut bound);
                let mut c = vec![f32::NAN; m * n];
                sgemm_bias_with(kernel, m, n, k, 0.5, &a, ta, &b, tb, &bias, &mut c);
                let what = format!("Avx512 bias {m}x{n}x{k} {ta:?}{tb:?}");
                assert_close(&what, &c, &want, &bound, SUM_RTOL);
            }
        }
    }
}

/// The AVX-512 and AVX2 kernels share the packing and the blocking, and
/// each element of C is the same chain of FMAs over k in both, finished by
/// the same arithmetic in full and edge tiles, so they agree bit for bit
/// for any beta and with a bias row, although the two tile widths put the
/// edges in different columns.
#[test]
fn avx512_and_avx2_kernels_agree_exactly() {
    if !Kernel::Avx512.is_supported() {
        println!("SKIPPED avx512_and_avx2_kernels_agree_exactly: this CPU has no AVX-512F");
        return;
    }
    for (m, n, k) in [(5, 31, 7), (23, 80, 700), (64, 2048, 512), (300, 250, 64)] {
        for (ta, tb) in [
            (Trans::N, Trans::N),
            (Trans::T, Trans::N),
            (Trans::N, Trans::T),
        ] {
            let a = data(m * k, 1);
            let b = data(k * n, 2);
            let c0 = data(m * n, 3);
            let bias = data(n, 4);
            let mut wide = c0.clone();
            let mut narrow = c0.clone();
            for beta in [0.0, 1.0, 0.3] {
                sgemm_with(
                    Kernel::Avx512,
                    m,
                    n,
                    k,
                    0.5,
                    &a,
                    ta,
                    &b,
                    tb,
                    beta,
                    &mut wide,
                );
                sgemm_with(
                    Kernel::Avx2Fma,
                    m,
                    n,
                    k,
                    0.5,
                    &a,
                    ta,
                    &b,
                    tb,
                    beta,
                    &mut narrow,
                );
                assert_eq!(wide, narrow, "{m}x{n}x{k} {ta:?}{tb:?} beta {beta}");
            }
            sgemm_bias_with(
                Kernel::Avx512,
                m,
                n,
                k,
                1.0,
                &a,
                ta,
                &b,
                tb,
                &bias,
                &mut wide,
            );
            sgemm_bias_with(
                Kernel::Avx2Fma,
                m,
                n,
                k,
                1.0,
                &a,
                ta,
                &b,
                tb,
                &bias,
                &mut narrow,
            );
            assert_eq!(wide, narrow, "bias {m}x{n}x{k} {ta:?}{tb:?}");
        }
    }
}

/// Where an element of C falls (a full tile or an edge one, which the
/// threads' split of C and the block sizes decide) must not change its
/// bits: every packed kernel this CPU runs, fp32 and bf16, computes the
/// product and the same product less its first row and column (so every
/// tile boundary moves by one), with a general beta and with a bias row,
/// and the shared elements must agree bit for bit.
#[test]
fn an_element_has_the_same_bits_in_a_full_or_an_edge_tile() {
    let mut kernels = Vec::new();
    for kernel in [
        Kernel::Avx2Fma,
        Kernel::Avx512,
        Kernel::Avx512Bf16,
        Kernel::AmxBf16,
    ] {
        if kernel.is_supported() {
            kernels.push(kernel);
        } else {
            println!("SKIPPED an_element_has_the_same_bits_in_a_full_or_an_edge_tile for {kernel:?}: not supported by this CPU");
        }
    }
    for kernel in kernels {
        for (m, n, k) in [(13, 37, 50), (40, 70, 600), (97, 130, 33)] {
            let a = data(m * k, 1);
            let b = data(k * n, 2);
            let c0 = data(m * n, 3);
            let bias = data(n, 4);
            // The same operands less row 0 of A and column 0 of B (and C).
            let a_sub = &a[k..];
            let b_sub: Vec<f32> = b.chunks(n).flat_map(|r| r[1..].to_vec()).collect();
            let c_sub: Vec<f32> = c0.chunks(n).skip(1).flat_map(|r| r[1..].to_vec()).collect();
            let shared = |c: &[f32]| -> Vec<u32> {
                c.chunks(n)
                    .skip(1)
                    .flat_map(|r| r[1..].iter().map(|v| v.to_bits()))
                    .collect()
            };
            let bits = |c: &[f32]| -> Vec<u32> { c.iter().map(|v| v.to_bits()).collect() };
            // C = alpha A B + beta C, or + the row when given: the full
            // product, then the one less row 0 and column 0.
            let product = |alpha: f32, beta: f32, with_row: bool| {
                let (mut full, mut sub) = (c0.clone(), c_sub.clone());
                let n_ = Trans::N;
                if with_row {
                    sgemm_bias_with(kernel, m, n, k, alpha, &a, n_, &b, n_, &bias, &mut full);
                    sgemm_bias_with(
                        kernel,
                        m - 1,
                        n - 1,
                        k,
                        alpha,
                        a_sub,
                        n_,
                        &b_sub,
                        n_,
                        &bias[1..],
                        &mut sub,
                    );
                } else {
                    sgemm_with(kernel, m, n, k, alpha, &a, n_, &b, n_, beta, &mut full);
                    sgemm_with(
                        kernel,
                        m - 1,
                        n - 1,
                        k,
                        alpha,
                        a_sub,
                        n_,
                        &b_sub,
                        n_,
                        beta,
                        &mut sub,
                    );
                }
                (full, sub)
            };
            for (alpha, beta, with_row) in [
                (0.7, 0.3, false),
                (1.0, 1.0, false),
                (1.0, 0.0, false),
                (0.7, 0.0, true),
                (1.0, 0.0, true),
            ] {
                let (full, sub) = product(alpha, beta, with_row);
                assert!(
                    shared(&full) == bits(&sub),
                    "{kernel:?} {m}x{n}x{k} alpha {alpha} beta {beta} row {with_row}: \
                     an element's bits depend on its tile"
                );
            }
        }
    }
}
