//! `tensor::gemm::set_precision` switches what `sgemm`, `sgemm_bias`,
//! `sgemm_serial`, `sgemm_serial_bias` (and so the convolutions) compute.
//!
//! The setting is process-wide and the test harness runs a binary's tests
//! on parallel threads, so this binary holds exactly ONE test: nothing else
//! can observe the setting while it is bf16 (every other test binary is a
//! process of its own, at the default fp32).

use tensor::conv::{conv2d_backward_input, conv2d_backward_kernel, conv2d_forward};
use tensor::gemm::{kernel_name, precision, set_precision, sgemm_bias_with, sgemm_with};
use tensor::testing::data;
use tensor::{sgemm, sgemm_bias, sgemm_serial, sgemm_serial_bias};
use tensor::{ConvGeometry, Kernel, Padding, Precision, Trans};

/// Every public GEMM entry point on one product (sizes above the threading
/// threshold, so `sgemm` splits), in the order `sgemm`, `sgemm_bias`,
/// `sgemm_serial`, `sgemm_serial_bias`.
fn entry_points(a: &[f32], b: &[f32], bias: &[f32], dims: (usize, usize, usize)) -> Vec<Vec<f32>> {
    let (m, n, k) = dims;
    let mut out = vec![vec![f32::NAN; m * n]; 4];
    sgemm(m, n, k, 0.5, a, Trans::N, b, Trans::T, 0.0, &mut out[0]);
    sgemm_bias(m, n, k, 0.5, a, Trans::N, b, Trans::T, bias, &mut out[1]);
    sgemm_serial(m, n, k, 0.5, a, Trans::N, b, Trans::T, 0.0, &mut out[2]);
    sgemm_serial_bias(m, n, k, 0.5, a, Trans::N, b, Trans::T, bias, &mut out[3]);
    out
}

/// What `kernel` gives for the same four products, by name.
fn by_kernel(
    kernel: Kernel,
    a: &[f32],
    b: &[f32],
    bias: &[f32],
    dims: (usize, usize, usize),
) -> Vec<Vec<f32>> {
    let (m, n, k) = dims;
    let mut plain = vec![f32::NAN; m * n];
    sgemm_with(
        kernel,
        m,
        n,
        k,
        0.5,
        a,
        Trans::N,
        b,
        Trans::T,
        0.0,
        &mut plain,
    );
    let mut biased = vec![f32::NAN; m * n];
    sgemm_bias_with(
        kernel,
        m,
        n,
        k,
        0.5,
        a,
        Trans::N,
        b,
        Trans::T,
        bias,
        &mut biased,
    );
    vec![plain.clone(), biased.clone(), plain, biased]
}

/// The three conv passes of a 3x3 layer.
fn conv_passes(g: &ConvGeometry, x: &[f32], w: &[f32], dy: &[f32]) -> [Vec<f32>; 3] {
    let mut y = vec![0.0; dy.len()];
    conv2d_forward(g, x, w, None, &mut y);
    let mut dx = vec![0.0; x.len()];
    conv2d_backward_input(g, dy, w, &mut dx);
    let mut dw = vec![0.0; w.len()];
    conv2d_backward_kernel(g, x, dy, &mut dw, false);
    [y, dx, dw]
}

#[test]
fn set_precision_switches_every_gemm_entry_point() {
    assert_eq!(precision(), Precision::Fp32, "fp32 is the default");
    assert_eq!(kernel_name(), Kernel::best().name());
    let dims = (96, 80, 72);
    let a = data(dims.0 * dims.2, 1);
    let b = data(dims.1 * dims.2, 2);
    let bias = data(dims.1, 3);
    let fp32 = entry_points(&a, &b, &bias, dims);
    assert_eq!(fp32, by_kernel(Kernel::best(), &a, &b, &bias, dims));

    if !Kernel::Avx512Bf16.is_supported() {
        let err = set_precision(Precision::Bf16).unwrap_err();
        assert!(err.contains("avx512_bf16"), "{err}");
        assert_eq!(
            precision(),
            Precision::Fp32,
            "a refused setting changes nothing"
        );
        println!("SKIPPED set_precision_switches_every_gemm_entry_point (bf16 part): this CPU has no AVX512_BF16");
        return;
    }

    let g = ConvGeometry {
        batch: 2,
        in_h: 6,
        in_w: 6,
        in_c: 16,
        kernel_h: 3,
        kernel_w: 3,
        out_c: 24,
        stride: 1,
        padding: Padding::same(6, 6, 3, 3, 1),
    };
    let x = data(g.input_shape().iter().product(), 4);
    let w = data(g.kernel_shape().iter().product(), 5);
    let dy = data(g.output_shape().iter().product(), 6);
    let conv_fp32 = conv_passes(&g, &x, &w, &dy);

    set_precision(Precision::Bf16).unwrap();
    assert_eq!(precision(), Precision::Bf16);
    let kernel = Precision::Bf16.kernel().unwrap();
    assert!(matches!(kernel, Kernel::Avx512Bf16 | Kernel::AmxBf16));
    assert_eq!(kernel_name(), kernel.name());
    let bf16 = entry_points(&a, &b, &bias, dims);
    assert_eq!(
        bf16,
        by_kernel(kernel, &a, &b, &bias, dims),
        "every entry point runs the bf16 kernel"
    );
    for (i, (x, y)) in bf16.iter().zip(&fp32).enumerate() {
        assert_ne!(x, y, "entry point {i} still computes in fp32");
    }
    // Every conv pass goes through them: each changes, by about bf16's
    // rounding of its inputs (relative 2^-8 per operand, far below 10%).
    let conv_bf16 = conv_passes(&g, &x, &w, &dy);
    for (pass, (got, f32_got)) in ["forward", "input grad", "kernel grad"]
        .iter()
        .zip(conv_bf16.iter().zip(&conv_fp32))
    {
        assert_ne!(got, f32_got, "conv {pass} still computes in fp32");
        let scale = f32_got.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let diff = got
            .iter()
            .zip(f32_got)
            .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(
            diff < 0.1 * scale,
            "conv {pass}: bf16 differs by {diff} (scale {scale})"
        );
    }

    // With fp32 set again, fp32 results again, bit for bit.
    set_precision(Precision::Fp32).unwrap();
    assert_eq!(precision(), Precision::Fp32);
    assert_eq!(entry_points(&a, &b, &bias, dims), fp32);
    assert_eq!(conv_passes(&g, &x, &w, &dy), conv_fp32);
}
