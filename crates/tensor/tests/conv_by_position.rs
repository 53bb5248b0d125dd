//! Convolutions computed by output position (`tensor::conv_by_position`),
//! which read the tensors in place and never multiply padding: every pass
//! against the naive references, on geometries that take that path (checked
//! first, so a change of its rule cannot silently turn these tests into
//! tests of the im2col path), at both precisions' f32 kernel. Also the
//! strided GEMM it is built on. Tolerance: see `tensor::testing::SUM_RTOL`.

use tensor::conv::{
    conv2d_backward_input, conv2d_backward_kernel, conv2d_forward, conv2d_forward_fused,
    executed_macs,
};
use tensor::conv_by_position::{applies, useful_macs};
use tensor::testing::{abs, assert_close, assert_panics, data, SUM_RTOL};
use tensor::{reference, sgemm_strided, ConvGeometry, Epilogue, MatRef, Padding};

fn len(s: [usize; 4]) -> usize {
    s.iter().product()
}

fn geometry(
    batch: usize,
    (in_h, in_w, in_c): (usize, usize, usize),
    (kernel_h, kernel_w, out_c): (usize, usize, usize),
    stride: usize,
    padding: Padding,
) -> ConvGeometry {
    ConvGeometry {
        batch,
        in_h,
        in_w,
        in_c,
        kernel_h,
        kernel_w,
        out_c,
        stride,
        padding,
    }
}

/// The geometries of this file: ResNet50's 2x2 and 4x4 3x3 convs (with few
/// channels), odd batches and channel counts, a rectangular map, stride 2,
/// asymmetric padding, a 5x5 kernel, and padding so wide that some output
/// pixels read nothing but padding.
fn cases() -> Vec<(&'static str, ConvGeometry)> {
    let same = |h, w, k| Padding::same(h, w, k, k, 1);
    vec![
        (
            "3x3 @2x2",
            geometry(8, (2, 2, 16), (3, 3, 16), 1, same(2, 2, 3)),
        ),
        (
            "3x3 @4x4",
            geometry(9, (4, 4, 8), (3, 3, 24), 1, same(4, 4, 3)),
        ),
        (
            "3x3 @3x3 odd",
            geometry(11, (3, 3, 5), (3, 3, 7), 1, same(3, 3, 3)),
        ),
        (
            "3x3 @2x4",
            geometry(8, (2, 4, 6), (3, 3, 10), 1, same(2, 4, 3)),
        ),
        (
            "3x3/2 @4x4",
            geometry(8, (4, 4, 6), (3, 3, 9), 2, Padding::uniform(1)),
        ),
        (
            "3x3 asymmetric",
            geometry(
                10,
                (3, 2, 4),
                (3, 3, 5),
                1,
                Padding {
                    top: 2,
                    bottom: 0,
                    left: 0,
                    right: 1,
                },
            ),
        ),
        (
            "5x5 @3x3",
            geometry(8, (3, 3, 3), (5, 5, 4), 1, same(3, 3, 5)),
        ),
        (
            "1x1 pad 1 (all-padding border)",
            geometry(8, (2, 2, 4), (1, 1, 3), 1, Padding::uniform(1)),
        ),
        // Big enough for the GEMMs to be split across threads: along N
        // (batch < channels), and along M (batch > channels).
        (
            "3x3 @2x2 split N",
            geometry(32, (2, 2, 64), (3, 3, 128), 1, same(2, 2, 3)),
        ),
        (
            "3x3 @2x2 split M",
            geometry(96, (2, 2, 48), (3, 3, 48), 1, same(2, 2, 3)),
        ),
    ]
}

#[test]
fn every_case_takes_the_by_position_path_and_counts_only_live_taps() {
    for (name, g) in cases() {
        assert!(applies(&g), "{name}: not computed by position");
        assert_eq!(executed_macs(&g), useful_macs(&g), "{name}");
        assert!(useful_macs(&g) < g.macs(), "{name}");
    }
    // By hand: per axis, a 3-tap 'same' kernel reads real input with 2 and
    // 2 of its taps at the two columns of a 2-wide map (4 of 6), and with
    // 2, 3, 3, 2 on a 4-wide one (10 of 12); both axes: 16 of 36, 100 of 144.
    let (g2, g4) = (cases()[0].1, cases()[1].1);
    assert_eq!(useful_macs(&g2) * 9, g2.macs() * 4);
    assert_eq!(useful_macs(&g4) * 144, g4.macs() * 100);
    // Too small a batch, or too big a map, stays on im2col.
    let small_batch = geometry(4, (2, 2, 16), (3, 3, 16), 1, Padding::uniform(1));
    let big_map = geometry(8, (8, 8, 16), (3, 3, 16), 1, Padding::uniform(1));
    assert!(!applies(&small_batch) && !applies(&big_map));
}

/// Runs `f` in a pool of 3 threads, so that the GEMMs big enough to be
/// split are split whatever the machine's core count.
fn threaded(f: impl FnOnce() + Send) {
    rayon::ThreadPoolBuilder::new()
        .num_threads(3)
        .build()
        .expect("a pool")
        .install(f)
}

#[test]
fn forward_and_both_gradients_match_the_references() {
    threaded(forward_and_both_gradients);
}

fn forward_and_both_gradients() {
    for (seed, (name, g)) in cases().into_iter().enumerate() {
        let seed = 10 * seed as u64;
        let x = data(len(g.input_shape()), seed);
        let w = data(len(g.kernel_shape()), seed + 1);
        let bias = data(g.out_c, seed + 2);
        let dy = data(len(g.output_shape()), seed + 3);

        // NaN-filled outputs: an element the path forgets to write fails.
        let mut y = vec![f32::NAN; dy.len()];
        conv2d_forward(&g, &x, &w, Some(&bias), &mut y);
        let want = reference::conv2d_forward(&g, &x, &w, Some(&bias));
        let bound = reference::conv2d_forward(&g, &abs(&x), &abs(&w), Some(&abs(&bias)));
        assert_close(&format!("{name} forward"), &y, &want, &bound, SUM_RTOL);

        let mut y = vec![f32::NAN; dy.len()];
        conv2d_forward(&g, &x, &w, None, &mut y);
        let want = reference::conv2d_forward(&g, &x, &w, None);
        let bound = reference::conv2d_forward(&g, &abs(&x), &abs(&w), None);
        assert_close(
            &format!("{name} forward, no bias"),
            &y,
            &want,
            &bound,
            SUM_RTOL,
        );

        let mut dx = vec![f32::NAN; x.len()];
        conv2d_backward_input(&g, &dy, &w, &mut dx);
        let want = reference::conv2d_backward_input(&g, &dy, &w);
        let bound = reference::conv2d_backward_input(&g, &abs(&dy), &abs(&w));
        assert_close(&format!("{name} input grad"), &dx, &want, &bound, SUM_RTOL);

        let mut dw = vec![f32::NAN; w.len()];
        conv2d_backward_kernel(&g, &x, &dy, &mut dw, false);
        let want = reference::conv2d_backward_kernel(&g, &x, &dy);
        let bound = reference::conv2d_backward_kernel(&g, &abs(&x), &abs(&dy));
        assert_close(&format!("{name} kernel grad"), &dw, &want, &bound, SUM_RTOL);

        // Accumulating adds the same gradient onto what is there.
        let old = data(w.len(), seed + 4);
        let mut acc = old.clone();
        conv2d_backward_kernel(&g, &x, &dy, &mut acc, true);
        let want: Vec<f32> = want.iter().zip(&old).map(|(a, b)| a + b).collect();
        let bound: Vec<f32> = bound.iter().zip(&old).map(|(a, b)| a + b.abs()).collect();
        assert_close(
            &format!("{name} kernel grad, accumulated"),
            &acc,
            &want,
            &bound,
            SUM_RTOL,
        );
    }
}

#[test]
fn the_epilogue_is_applied_after_the_last_kernel_row() {
    let (_, g) = cases()[1];
    let x = data(len(g.input_shape()), 1);
    let w = data(len(g.kernel_shape()), 2);
    let residual = data(len(g.output_shape()), 3);
    let scale = data(g.out_c, 4);
    let shift = data(g.out_c, 5);
    let epi = Epilogue {
        affine: Some((&scale, &shift)),
        residual: Some(&residual),
        relu: true,
    };
    let mut y = vec![f32::NAN; residual.len()];
    conv2d_forward_fused(&g, &x, &w, None, epi, &mut y);
    let conv = reference::conv2d_forward(&g, &x, &w, None);
    let want = reference::relu(&reference::add(
        &reference::channel_affine(&conv, &scale, &shift),
        &residual,
    ));
    let bound = reference::conv2d_forward(&g, &abs(&x), &abs(&w), None);
    let bound: Vec<f32> = bound
        .iter()
        .enumerate()
        .map(|(i, b)| b * scale[i % g.out_c].abs() + shift[i % g.out_c].abs() + residual[i].abs())
        .collect();
    assert_close("3x3 @4x4 fused", &y, &want, &bound, SUM_RTOL);
}

#[test]
fn the_strided_gemm_multiplies_blocks_in_place() {
    // Small (one thread), and big enough to be split along M and along N.
    threaded(|| {
        for (m, n, k) in [(13, 11, 6), (300, 11, 90), (13, 300, 90)] {
            strided_gemm(m, n, k);
        }
    });
}

fn strided_gemm(m: usize, n: usize, k: usize) {
    // A is rows 1.. of a (k + 1)-wide buffer, from column 1; B the
    // transpose of a k-wide buffer of n rows, from element 3; C has row
    // stride n + 3, and its other columns must be kept.
    let (lda, ldc) = (k + 1, n + 3);
    let a_buf = data(lda * (m + 1), 1);
    let b_buf = data(3 + k * n, 2);
    let a = MatRef::new(&a_buf, lda + 1, lda, 1);
    let b = MatRef::new(&b_buf, 3, k, 1).t();
    let at = |i: usize, p: usize| a_buf[lda + 1 + i * lda + p];
    let bt = |p: usize, j: usize| b_buf[3 + p + j * k];
    let c0 = data(ldc * m, 3);
    let bias = data(n, 4);
    for (beta, row) in [
        (0.0, None),
        (1.0, None),
        (-0.5, None),
        (0.0, Some(&bias[..])),
    ] {
        let mut c = c0.clone();
        if beta == 0.0 {
            // Ignored: a NaN in C must not come through.
            c.iter_mut().step_by(ldc).for_each(|v| *v = f32::NAN);
        }
        sgemm_strided(m, n, k, 1.5, a, b, beta, row, &mut c, ldc);
        for i in 0..m {
            for j in 0..ldc {
                let got = c[i * ldc + j];
                if j >= n {
                    let old = c0[i * ldc + j];
                    assert_eq!(
                        got.to_bits(),
                        old.to_bits(),
                        "{m}x{n}x{k}: C[{i}][{j}] outside"
                    );
                    continue;
                }
                let dot: f64 = (0..k).map(|p| at(i, p) as f64 * bt(p, j) as f64).sum();
                let sum: f64 = (0..k).map(|p| (at(i, p) * bt(p, j)).abs() as f64).sum();
                let old = match row {
                    Some(r) => r[j] as f64,
                    None if beta == 0.0 => 0.0,
                    None => beta as f64 * c0[i * ldc + j] as f64,
                };
                let want = 1.5 * dot + old;
                let bound = SUM_RTOL as f64 * (1.5 * sum + old.abs());
                assert!(
                    (got as f64 - want).abs() <= bound,
                    "{m}x{n}x{k} beta {beta}: C[{i}][{j}] = {got}, want {want}"
                );
            }
        }
    }
    // Operands that reach past their slices are refused by name.
    assert_panics(&format!("B ({k}x{n}, strides 1 {k})"), || {
        let mut c = c0.clone();
        let short = MatRef::new(&b_buf[..k * n], 3, k, 1).t();
        sgemm_strided(m, n, k, 1.0, a, short, 0.0, None, &mut c, ldc);
    });
    assert_panics(&format!("C ({m}x{n}, row stride {ldc})"), || {
        let mut c = vec![0.0; ldc * (m - 1) + n - 1];
        sgemm_strided(m, n, k, 1.0, a, b, 0.0, None, &mut c, ldc);
    });
}
