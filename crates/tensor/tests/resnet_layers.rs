//! The exact layer kinds of Keras ResNet50 on a 32x32 input, at a small batch,
//! against the naive references. Tolerance: see `tensor::testing::SUM_RTOL`.

use tensor::conv::{
    conv2d_backward_bias, conv2d_backward_input, conv2d_backward_kernel, conv2d_forward,
};
use tensor::pool::max_pool_forward;
use tensor::testing::{abs, assert_close, data, SUM_RTOL};
use tensor::{reference, ConvGeometry, Padding, PoolGeometry};

fn len(s: [usize; 4]) -> usize {
    s.iter().product()
}

/// Forward (with bias), input, kernel and bias gradients of `g` against the
/// references.
fn check_conv(name: &str, g: &ConvGeometry, seed: u64) {
    let x = data(len(g.input_shape()), seed);
    let w = data(len(g.kernel_shape()), seed + 1);
    let bias = data(g.out_c, seed + 2);
    let dy = data(len(g.output_shape()), seed + 3);

    let mut y = vec![f32::NAN; dy.len()];
    conv2d_forward(g, &x, &w, Some(&bias), &mut y);
    let want = reference::conv2d_forward(g, &x, &w, Some(&bias));
    let bound = reference::conv2d_forward(g, &abs(&x), &abs(&w), Some(&abs(&bias)));
    assert_close(&format!("{name} forward"), &y, &want, &bound, SUM_RTOL);

    let mut dx = vec![f32::NAN; x.len()];
    conv2d_backward_input(g, &dy, &w, &mut dx);
    let want = reference::conv2d_backward_input(g, &dy, &w);
    let bound = reference::conv2d_backward_input(g, &abs(&dy), &abs(&w));
    assert_close(&format!("{name} input grad"), &dx, &want, &bound, SUM_RTOL);

    let mut dw = vec![f32::NAN; w.len()];
    conv2d_backward_kernel(g, &x, &dy, &mut dw, false);
    let want = reference::conv2d_backward_kernel(g, &x, &dy);
    let bound = reference::conv2d_backward_kernel(g, &abs(&x), &abs(&dy));
    assert_close(&format!("{name} kernel grad"), &dw, &want, &bound, SUM_RTOL);

    let mut db = vec![f32::NAN; g.out_c];
    conv2d_backward_bias(g, &dy, &mut db, false);
    let want = reference::conv2d_backward_bias(g, &dy);
    let bound = reference::channel_sum(&abs(&dy), g.out_c);
    assert_close(&format!("{name} bias grad"), &db, &want, &bound, SUM_RTOL);
}

/// conv1: 7x7 stride 2, 3 -> 64, on the 38x38 input that ZeroPadding2D(3)
/// makes of a 32x32 image ('valid' from there): 16x16 out.
#[test]
fn stem_7x7_stride_2() {
    let g = ConvGeometry {
        batch: 2,
        in_h: 38,
        in_w: 38,
        in_c: 3,
        kernel_h: 7,
        kernel_w: 7,
        out_c: 64,
        stride: 2,
        padding: Padding::ZERO,
    };
    assert_eq!(g.output_shape(), [2, 16, 16, 64]);
    check_conv("conv1", &g, 1);
}

/// The 3x3 'same' convolutions of every stage, down to the 1x1 maps of
/// stage 5 where only the centre tap sees data.
#[test]
fn same_3x3_at_every_stage() {
    for (hw, c, batch) in [(8, 24, 3), (4, 40, 3), (2, 72, 1), (1, 136, 3)] {
        let padding = Padding::same(hw, hw, 3, 3, 1);
        assert_eq!(padding, Padding::uniform(1));
        let g = ConvGeometry {
            batch,
            in_h: hw,
            in_w: hw,
            in_c: c,
            kernel_h: 3,
            kernel_w: 3,
            out_c: c + 8,
            stride: 1,
            padding,
        };
        assert_eq!(g.output_shape(), [batch, hw, hw, c + 8]);
        check_conv(&format!("3x3 same @{hw}x{hw}"), &g, hw as u64);
    }
}

/// The projection shortcuts and first 1x1 of stages 3-5: 1x1 stride 2. It
/// must read exactly the even pixels (0, 2, 4, ...), and its input gradient
/// must be zero on the odd ones.
#[test]
fn pointwise_stride_2_samples_even_pixels() {
    for (hw, cin, cout) in [(8, 40, 24), (4, 24, 40), (2, 17, 9)] {
        let g = ConvGeometry {
            batch: 3,
            in_h: hw,
            in_w: hw,
            in_c: cin,
            kernel_h: 1,
            kernel_w: 1,
            out_c: cout,
            stride: 2,
            padding: Padding::ZERO,
        };
        assert_eq!(g.output_shape(), [3, hw / 2, hw / 2, cout]);
        check_conv(&format!("1x1/2 @{hw}"), &g, 40 + hw as u64);

        // Each output pixel is the even input pixel (2oy, 2ox) times W.
        let x = data(len(g.input_shape()), 5);
        let w = data(len(g.kernel_shape()), 6);
        let mut y = vec![0.0; len(g.output_shape())];
        conv2d_forward(&g, &x, &w, None, &mut y);
        let ho = hw / 2;
        for n in 0..3 {
            for oy in 0..ho {
                for ox in 0..ho {
                    let px = &x[((n * hw + 2 * oy) * hw + 2 * ox) * cin..][..cin];
                    for co in 0..cout {
                        let want: f32 = (0..cin).map(|ci| px[ci] * w[ci * cout + co]).sum();
                        let got = y[((n * ho + oy) * ho + ox) * cout + co];
                        assert!(
                            (got - want).abs() <= 1e-5 * cin as f32,
                            "1x1/2 @{hw}: pixel ({n},{oy},{ox}) channel {co}: {got} vs {want}"
                        );
                    }
                }
            }
        }
        let dy = data(y.len(), 7);
        let mut dx = vec![f32::NAN; x.len()];
        conv2d_backward_input(&g, &dy, &w, &mut dx);
        for n in 0..3 {
            for iy in 0..hw {
                for ix in 0..hw {
                    let px = &dx[((n * hw + iy) * hw + ix) * cin..][..cin];
                    let even = iy % 2 == 0 && ix % 2 == 0;
                    assert_eq!(
                        px.iter().all(|&v| v == 0.0),
                        !even,
                        "1x1/2 @{hw}: gradient at ({iy},{ix})"
                    );
                }
            }
        }
    }
}

/// The other 1x1 convolutions (stride 1: a plain GEMM over the pixels).
#[test]
fn pointwise_stride_1() {
    for (hw, cin, cout) in [(8, 64, 72), (4, 33, 130), (1, 136, 40)] {
        let g = ConvGeometry {
            batch: 3,
            in_h: hw,
            in_w: hw,
            in_c: cin,
            kernel_h: 1,
            kernel_w: 1,
            out_c: cout,
            stride: 1,
            padding: Padding::ZERO,
        };
        check_conv(&format!("1x1 @{hw}"), &g, 60 + hw as u64);
    }
}

/// The stem pool: ZeroPadding2D(1) of the 16x16 conv1 output to 18x18, then a
/// 3x3 stride-2 'valid' max pool: 8x8 out. Explicit zero padding *can* win
/// (unlike pool padding, which is -inf), so this is checked on raw
/// (signed) activations; on post-ReLU inputs it equals pooling with padding 1.
#[test]
fn stem_max_pool_on_zero_padded_input() {
    let (batch, c) = (2, 64);
    let raw = data(batch * 16 * 16 * c, 9);
    // Zero-pad 16x16 -> 18x18.
    let mut padded = vec![0.0; batch * 18 * 18 * c];
    for n in 0..batch {
        for y in 0..16 {
            for x in 0..16 {
                let src = &raw[((n * 16 + y) * 16 + x) * c..][..c];
                padded[((n * 18 + y + 1) * 18 + x + 1) * c..][..c].copy_from_slice(src);
            }
        }
    }
    let g = PoolGeometry {
        batch,
        in_h: 18,
        in_w: 18,
        channels: c,
        kernel: 3,
        stride: 2,
        padding: Padding::ZERO,
    };
    assert_eq!(g.output_shape(), [batch, 8, 8, c]);
    let mut y = vec![f32::NAN; batch * 8 * 8 * c];
    max_pool_forward(&g, &padded, &mut y);
    let (want_y, _) = reference::max_pool_forward(&g, &padded);
    assert_eq!(y, want_y);
    // The top row and left column of windows include the zero padding, so
    // nothing there is negative (the bottom/right padding is never read:
    // the last window covers rows 14..=16 of 0..=17).
    for (i, &v) in y.iter().enumerate() {
        let (oy, ox) = ((i / c / 8) % 8, (i / c) % 8);
        if oy == 0 || ox == 0 {
            assert!(
                v >= 0.0,
                "window ({oy},{ox}) saw the zero padding but gave {v}"
            );
        }
    }
    assert!(
        y.iter().any(|&v| v < 0.0),
        "some interior window is all negative"
    );

    // On post-ReLU input, -inf pool padding of 1 gives the same values.
    let relu = reference::relu(&raw);
    let padded_relu: Vec<f32> = reference::relu(&padded);
    let mut y_explicit = vec![0.0; y.len()];
    max_pool_forward(&g, &padded_relu, &mut y_explicit);
    let g_implicit = PoolGeometry {
        in_h: 16,
        in_w: 16,
        padding: Padding::uniform(1),
        ..g
    };
    assert_eq!(g_implicit.output_shape(), [batch, 8, 8, c]);
    let mut y_implicit = vec![0.0; y.len()];
    max_pool_forward(&g_implicit, &relu, &mut y_implicit);
    assert_eq!(y_explicit, y_implicit);
}
