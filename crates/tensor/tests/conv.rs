//! Convolution kernels against the naive f64 references over random
//! geometries: odd batches, tiny and 1x1 outputs, channel counts that are not
//! multiples of any SIMD width, strides 1 and 2, asymmetric padding, and
//! kernels 1, 3 and 7 (non-square too). Tolerance: see `tensor::testing::SUM_RTOL`.

use proptest::prelude::*;
use tensor::conv::{
    conv2d_backward_bias, conv2d_backward_input, conv2d_backward_kernel, conv2d_forward,
};
use tensor::testing::{abs, assert_close, assert_panics, data, SUM_RTOL};
use tensor::{reference, ConvGeometry, Padding};

/// A geometry whose kernel fits the padded input, built from the given ranges.
fn geometry(
    batch: impl Strategy<Value = usize>,
    hw: std::ops::RangeInclusive<usize>,
    chans: std::ops::RangeInclusive<usize>,
) -> impl Strategy<Value = ConvGeometry> {
    let kernel = || prop_oneof![Just(1usize), Just(3), Just(7)];
    (
        batch,
        (hw.clone(), hw),
        (chans.clone(), chans),
        (kernel(), kernel()),
        1usize..=2,
        (0usize..=3, 0usize..=3, 0usize..=3, 0usize..=3),
    )
        .prop_map(
            |(batch, (h, w), (in_c, out_c), (kh, kw), stride, (t, b, l, r))| {
                let padding = Padding {
                    top: t,
                    bottom: b,
                    left: l,
                    right: r,
                };
                ConvGeometry {
                    batch,
                    // Grow the input just enough for the kernel to fit once.
                    in_h: h.max(kh.saturating_sub(t + b)),
                    in_w: w.max(kw.saturating_sub(l + r)),
                    in_c,
                    kernel_h: kh,
                    kernel_w: kw,
                    out_c,
                    stride,
                    padding,
                }
            },
        )
}

/// Runs all four passes of `g` on data from `seed` and checks each against
/// the reference.
fn check_all_passes(g: &ConvGeometry, seed: u64) {
    let len = |s: [usize; 4]| s.iter().product::<usize>();
    let x = data(len(g.input_shape()), seed);
    let w = data(len(g.kernel_shape()), seed + 1);
    let bias = data(g.out_c, seed + 2);
    let dy = data(len(g.output_shape()), seed + 3);

    // Forward, with and without bias. NaN in y must be overwritten.
    let mut y = vec![f32::NAN; dy.len()];
    conv2d_forward(g, &x, &w, Some(&bias), &mut y);
    let want = reference::conv2d_forward(g, &x, &w, Some(&bias));
    let bound = reference::conv2d_forward(g, &abs(&x), &abs(&w), Some(&abs(&bias)));
    assert_close("forward", &y, &want, &bound, SUM_RTOL);
    let mut y = vec![f32::NAN; dy.len()];
    conv2d_forward(g, &x, &w, None, &mut y);
    let want = reference::conv2d_forward(g, &x, &w, None);
    let bound = reference::conv2d_forward(g, &abs(&x), &abs(&w), None);
    assert_close("forward, no bias", &y, &want, &bound, SUM_RTOL);

    // Input gradient overwrites dx.
    let mut dx = vec![f32::NAN; x.len()];
    conv2d_backward_input(g, &dy, &w, &mut dx);
    let want = reference::conv2d_backward_input(g, &dy, &w);
    let bound = reference::conv2d_backward_input(g, &abs(&dy), &abs(&w));
    assert_close("input grad", &dx, &want, &bound, SUM_RTOL);

    // Kernel gradient, overwriting and accumulating.
    let want = reference::conv2d_backward_kernel(g, &x, &dy);
    let bound = reference::conv2d_backward_kernel(g, &abs(&x), &abs(&dy));
    let mut dw = vec![f32::NAN; w.len()];
    conv2d_backward_kernel(g, &x, &dy, &mut dw, false);
    assert_close("kernel grad", &dw, &want, &bound, SUM_RTOL);
    let dw0 = data(w.len(), seed + 4);
    let mut dw = dw0.clone();
    conv2d_backward_kernel(g, &x, &dy, &mut dw, true);
    let want_acc: Vec<f32> = want.iter().zip(&dw0).map(|(a, b)| a + b).collect();
    let bound_acc: Vec<f32> = bound.iter().zip(&dw0).map(|(a, b)| a + b.abs()).collect();
    assert_close(
        "kernel grad, accumulate",
        &dw,
        &want_acc,
        &bound_acc,
        SUM_RTOL,
    );

    // Bias gradient, overwriting and accumulating.
    let want = reference::conv2d_backward_bias(g, &dy);
    let bound = reference::channel_sum(&abs(&dy), g.out_c);
    let mut db = vec![f32::NAN; g.out_c];
    conv2d_backward_bias(g, &dy, &mut db, false);
    assert_close("bias grad", &db, &want, &bound, SUM_RTOL);
    let mut db = vec![1.0; g.out_c];
    conv2d_backward_bias(g, &dy, &mut db, true);
    let want_acc: Vec<f32> = want.iter().map(|v| v + 1.0).collect();
    let bound_acc: Vec<f32> = bound.iter().map(|v| v + 1.0).collect();
    assert_close(
        "bias grad, accumulate",
        &db,
        &want_acc,
        &bound_acc,
        SUM_RTOL,
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Small geometries: every edge case of the index arithmetic.
    #[test]
    fn small_geometries_match_reference(
        g in geometry(prop_oneof![Just(1usize), Just(2), Just(3), Just(5)], 1..=9, 1..=19),
        seed in any::<u32>(),
    ) {
        check_all_passes(&g, seed as u64);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// Geometries big enough to take the threaded GEMM and im2col paths.
    #[test]
    fn medium_geometries_match_reference(
        g in geometry(prop_oneof![Just(1usize), Just(3), Just(4)], 6..=14, 9..=40),
        seed in any::<u32>(),
    ) {
        check_all_passes(&g, seed as u64);
    }
}

/// A K large enough that the im2col scratch holds fewer rows than M, so the
/// passes run over several tiles, including a partial last one.
#[test]
fn many_tiles_match_reference() {
    // K = 2700: 388 rows per 1M-float scratch tile.
    for (batch, stride, padding) in [
        (9, 1, Padding::uniform(1)),
        (20, 2, Padding::same(9, 9, 3, 3, 2)),
    ] {
        let g = ConvGeometry {
            batch,
            in_h: 9,
            in_w: 9,
            in_c: 300,
            kernel_h: 3,
            kernel_w: 3,
            out_c: 3,
            stride,
            padding,
        };
        check_all_passes(&g, 7);
    }
}

/// Mismatched buffer lengths are errors, not panics or silent garbage.
#[test]
fn wrong_lengths_violate_a_precondition() {
    let g = ConvGeometry {
        batch: 2,
        in_h: 4,
        in_w: 4,
        in_c: 3,
        kernel_h: 3,
        kernel_w: 3,
        out_c: 5,
        stride: 1,
        padding: Padding::ZERO,
    };
    let x = vec![0.0; 2 * 4 * 4 * 3];
    let w = vec![0.0; 3 * 3 * 3 * 5];
    let mut y = vec![0.0; 2 * 2 * 2 * 5];
    assert_panics("conv2d input: 95 values", || {
        conv2d_forward(&g, &x[1..], &w, None, &mut y)
    });
    assert_panics("conv2d kernel", || {
        conv2d_forward(&g, &x, &w[1..], None, &mut y)
    });
    assert_panics("conv2d output", || {
        conv2d_forward(&g, &x, &w, None, &mut y[1..])
    });
    assert_panics("conv2d bias", || {
        conv2d_forward(&g, &x, &w, Some(&[0.0; 4]), &mut y)
    });
    let mut dx = vec![0.0; x.len() + 1];
    assert_panics("conv2d input gradient", || {
        conv2d_backward_input(&g, &y, &w, &mut dx)
    });
    let too_big = ConvGeometry { kernel_h: 5, ..g };
    assert_panics("does not fit", || {
        conv2d_forward(&too_big, &x, &vec![0.0; 5 * 3 * 3 * 5], None, &mut y)
    });
}
