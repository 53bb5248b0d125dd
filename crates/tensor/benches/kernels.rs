//! Kernel throughput in GFLOP/s (2 x multiply-adds / time): a 2048^3 GEMM and
//! every distinct ResNet50 convolution at a 32x32 input and batch 64, forward,
//! input-gradient and kernel-gradient, on one thread and on all of them.
//!
//! `cargo bench -p tensor` runs everything; `cargo bench -p tensor -- FILTER`
//! runs only rows whose name contains FILTER. The GEMM rows include the bf16
//! kernel where the CPU has AVX512_BF16; `BENCH_PRECISION=bf16` runs the conv
//! rows in bf16 too. Each number is the median of
//! several timed runs after a warm-up run. Not a test: it checks nothing.

use std::time::{Duration, Instant};
use tensor::conv::{conv2d_backward_input, conv2d_backward_kernel, conv2d_forward};
use tensor::gemm::sgemm_with;
use tensor::testing;
use tensor::{ConvGeometry, Kernel, Padding, Trans};

/// Median seconds per call of `f`: one warm-up call, then at least `min_runs`
/// calls and until `budget` has passed (at most 50 calls).
fn time(min_runs: usize, budget: Duration, mut f: impl FnMut()) -> f64 {
    f();
    let start = Instant::now();
    let mut samples = Vec::new();
    // BENCH_COLD=1: evict the caches before each call, as a layer inside the
    // network finds them (its operands were written several layers ago).
    let cold = std::env::var("BENCH_COLD").is_ok_and(|v| v == "1");
    let mut evict = if cold {
        vec![0u8; 64 << 20]
    } else {
        Vec::new()
    };
    while samples.len() < min_runs || (start.elapsed() < budget && samples.len() < 50) {
        for (i, b) in evict.iter_mut().enumerate().step_by(64) {
            *b = b.wrapping_add(i as u8);
        }
        let t = Instant::now();
        f();
        samples.push(t.elapsed().as_secs_f64());
    }
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

struct Shape {
    name: &'static str,
    g: ConvGeometry,
    /// How many of ResNet50's 53 convolutions have this shape.
    count: usize,
}

#[allow(clippy::too_many_arguments)]
fn conv(
    count: usize,
    name: &'static str,
    hw: usize,
    k: usize,
    cin: usize,
    cout: usize,
    stride: usize,
    padding: Padding,
) -> Shape {
    Shape {
        name,
        count,
        g: ConvGeometry {
            batch: 64,
            in_h: hw,
            in_w: hw,
            in_c: cin,
            kernel_h: k,
            kernel_w: k,
            out_c: cout,
            stride,
            padding,
        },
    }
}

/// The distinct convolutions of Keras ResNet50 on a 32x32 input, with how
/// often each occurs (stride 2 sits on the first 1x1 of each stage's first
/// block and on its projection shortcut, as in Keras).
fn resnet50_shapes() -> Vec<Shape> {
    let same3 = |hw| Padding::same(hw, hw, 3, 3, 1);
    let z = Padding::ZERO;
    vec![
        conv(1, "conv1 7x7/2 3->64 @38", 38, 7, 3, 64, 2, z),
        conv(1, "1x1 64->64 @8", 8, 1, 64, 64, 1, z),
        conv(4, "1x1 64->256 @8", 8, 1, 64, 256, 1, z),
        conv(2, "1x1 256->64 @8", 8, 1, 256, 64, 1, z),
        conv(3, "3x3 64->64 @8", 8, 3, 64, 64, 1, same3(8)),
        conv(1, "1x1/2 256->128 @8", 8, 1, 256, 128, 2, z),
        conv(1, "1x1/2 256->512 @8", 8, 1, 256, 512, 2, z),
        conv(4, "3x3 128->128 @4", 4, 3, 128, 128, 1, same3(4)),
        conv(4, "1x1 128->512 @4", 4, 1, 128, 512, 1, z),
        conv(3, "1x1 512->128 @4", 4, 1, 512, 128, 1, z),
        conv(1, "1x1/2 512->256 @4", 4, 1, 512, 256, 2, z),
        conv(1, "1x1/2 512->1024 @4", 4, 1, 512, 1024, 2, z),
        conv(6, "3x3 256->256 @2", 2, 3, 256, 256, 1, same3(2)),
        conv(6, "1x1 256->1024 @2", 2, 1, 256, 1024, 1, z),
        conv(5, "1x1 1024->256 @2", 2, 1, 1024, 256, 1, z),
        conv(1, "1x1/2 1024->512 @2", 2, 1, 1024, 512, 2, z),
        conv(1, "1x1/2 1024->2048 @2", 2, 1, 1024, 2048, 2, z),
        conv(3, "3x3 512->512 @1", 1, 3, 512, 512, 1, same3(1)),
        conv(3, "1x1 512->2048 @1", 1, 1, 512, 2048, 1, z),
        conv(2, "1x1 2048->512 @1", 1, 1, 2048, 512, 1, z),
    ]
}

fn gflops(macs: usize, secs: f64) -> f64 {
    2.0 * macs as f64 / secs / 1e9
}

fn main() {
    // `cargo bench` passes `--bench`; anything else is a name filter.
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with("--"));
    let wanted = |name: &str| filter.as_deref().is_none_or(|f| name.contains(f));
    let all = std::thread::available_parallelism().map_or(1, |n| n.get());
    let all = std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|&n: &usize| n > 0)
        .unwrap_or(all);
    let mut thread_counts = vec![1];
    if all > 1 {
        thread_counts.push(all);
    }
    let pools: Vec<_> = thread_counts
        .iter()
        .map(|&t| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(t)
                .build()
                .expect("thread pool")
        })
        .collect();
    // BENCH_PRECISION=bf16: the conv rows (which go through `sgemm`) in bf16.
    if let Ok(p) = std::env::var("BENCH_PRECISION") {
        let p: tensor::Precision = p.parse().unwrap_or_else(|e| panic!("BENCH_PRECISION: {e}"));
        tensor::gemm::set_precision(p).unwrap_or_else(|e| panic!("BENCH_PRECISION={p}: {e}"));
    }
    println!(
        "tensor kernels, GFLOP/s = 2 x MACs / median time; threads: {:?}; gemm path: {} ({})",
        thread_counts,
        tensor::gemm::kernel_name(),
        tensor::gemm::precision()
    );
    let header = thread_counts
        .iter()
        .map(|t| format!("{t} thr"))
        .collect::<Vec<_>>();

    if wanted("gemm 2048") {
        println!();
        println!("| GEMM | {} |", header.join(" | "));
        println!("|---|{}", "---:|".repeat(header.len()));
        let n = 2048;
        let a = testing::data(n * n, 1);
        let b = testing::data(n * n, 2);
        let mut c = vec![0.0f32; n * n];
        // The f32 kernels, then the bf16 one where the CPU has it (same
        // f32 operands: its time includes rounding them while packing).
        let mut kernels = Kernel::available();
        for kernel in [Kernel::Avx512Bf16, Kernel::AmxBf16] {
            if kernel.is_supported() {
                kernels.push(kernel);
            }
        }
        let cases = kernels.into_iter().flat_map(|kernel| {
            [
                (Trans::N, Trans::N),
                (Trans::T, Trans::N),
                (Trans::N, Trans::T),
            ]
            .map(|(ta, tb)| (kernel, ta, tb))
        });
        for (kernel, ta, tb) in cases {
            let name = format!("gemm 2048^3 {ta:?}{tb:?}, {}", kernel.name());
            if !wanted(&name) {
                continue;
            }
            let cells: Vec<String> = pools
                .iter()
                .map(|pool| {
                    let s = pool.install(|| {
                        time(3, Duration::from_millis(1500), || {
                            sgemm_with(kernel, n, n, n, 1.0, &a, ta, &b, tb, 0.0, &mut c)
                        })
                    });
                    format!("{:.1}", gflops(n * n * n, s))
                })
                .collect();
            println!("| {name} | {} |", cells.join(" | "));
        }
    }

    let shapes: Vec<Shape> = resnet50_shapes()
        .into_iter()
        .filter(|s| wanted(s.name) || filter.as_deref() == Some("conv"))
        .collect();
    if shapes.is_empty() {
        return;
    }
    println!();
    let cols: Vec<String> = ["fwd", "dx", "dw"]
        .iter()
        .flat_map(|p| header.iter().map(move |h| format!("{p} {h}")))
        .collect();
    println!("| conv (batch 64) | M x K x N | {} |", cols.join(" | "));
    println!("|---|---|{}", "---:|".repeat(cols.len()));
    let budget = Duration::from_millis(300);
    let mut trimmed = Vec::new();
    // Seconds per training step's worth of conv work, per thread count.
    let mut step = vec![0.0f64; pools.len()];
    for s in &shapes {
        let g = &s.g;
        let x = testing::data(g.input_shape().iter().product(), 3);
        let w = testing::data(g.kernel_shape().iter().product(), 4);
        let bias = testing::data(g.out_c, 5);
        let dy = testing::data(g.output_shape().iter().product(), 6);
        let mut y = vec![0.0f32; dy.len()];
        let mut dx = vec![0.0f32; x.len()];
        let mut dw = vec![0.0f32; w.len()];
        let mut cells = Vec::new();
        let macs = g.macs();
        for pass in 0..3 {
            for pool in &pools {
                let secs = pool.install(|| match pass {
                    0 => time(5, budget, || conv2d_forward(g, &x, &w, Some(&bias), &mut y)),
                    1 => time(5, budget, || conv2d_backward_input(g, &dy, &w, &mut dx)),
                    _ => time(5, budget, || {
                        conv2d_backward_kernel(g, &x, &dy, &mut dw, false)
                    }),
                });
                cells.push(format!("{:.1}", gflops(macs, secs)));
                // The stem's input gradient is not needed for training.
                if !(pass == 1 && s.name.starts_with("conv1")) {
                    step[pools.iter().position(|p| std::ptr::eq(p, pool)).unwrap()] +=
                        s.count as f64 * secs;
                }
            }
        }
        let executed = tensor::conv::executed_macs(g);
        let mark = if executed < macs {
            trimmed.push(format!(
                "{}: only {} of its {} MACs are executed (taps that read only padding are skipped); GFLOP/s counts all of them",
                s.name, executed, macs
            ));
            "*"
        } else {
            ""
        };
        println!(
            "| {}{mark} | {}x{}x{} | {} |",
            s.name,
            g.gemm_m(),
            g.gemm_k(),
            g.out_c,
            cells.join(" | ")
        );
    }
    if shapes.len() == resnet50_shapes().len() {
        let ms: Vec<String> = step.iter().map(|s| format!("{:.1} ms", s * 1e3)).collect();
        println!();
        println!(
            "All 53 ResNet50 convolutions, forward + input grad + kernel grad (no input grad for conv1), batch 64: {} ({:?} threads)",
            ms.join(" / "),
            thread_counts
        );
    }
    for note in trimmed {
        println!();
        println!("\\* {note}.");
    }
}
