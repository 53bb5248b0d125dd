//! Batchnorm's memory-bound passes at the shapes of ResNet50's 53 batchnorms
//! (32x32 input, batch 128), on all threads: the statistics, the two backward
//! passes with the ReLU's mask recomputed from `x` (no residual) and read
//! from the output (after a residual add). Milliseconds per call (median) and
//! the one-step total weighted by how many layers have each shape.
//!
//! `cargo bench -p tensor --bench batch_norm`. Not a test: it checks nothing.

use std::time::{Duration, Instant};
use tensor::batch_norm::{self as bn, InputGradient, Relu};
use tensor::testing;

/// Median seconds per call after one warm-up call (at least 5 calls, up
/// to 200 ms).
fn time(mut f: impl FnMut()) -> f64 {
    f();
    let start = Instant::now();
    let mut samples = Vec::new();
    while samples.len() < 5 || (start.elapsed() < Duration::from_millis(200) && samples.len() < 50)
    {
        let t = Instant::now();
        f();
        samples.push(t.elapsed().as_secs_f64());
    }
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

/// `(rows, channels, layers with a ReLU and no residual, layers ending a
/// block with residual + ReLU, layers with neither)` of ResNet50 at batch 128.
const SHAPES: [(usize, usize, usize, usize, usize); 9] = [
    (128 * 256, 64, 1, 0, 0),
    (128 * 64, 64, 6, 0, 0),
    (128 * 64, 256, 0, 3, 1),
    (128 * 16, 128, 8, 0, 0),
    (128 * 16, 512, 0, 4, 1),
    (128 * 4, 256, 12, 0, 0),
    (128 * 4, 1024, 0, 6, 1),
    (128, 512, 6, 0, 0),
    (128, 2048, 0, 3, 1),
];

fn main() {
    println!("| rows x channels | statistics | sums (mask of x) | dx (mask of x) | sums (mask of output) | dx + masked dy |");
    println!("|---|---:|---:|---:|---:|---:|");
    let (mut fwd, mut bwd) = (0.0, 0.0);
    for (rows, c, relu, add, plain) in SHAPES {
        let x = testing::data(rows * c, 1);
        let out: Vec<f32> = testing::data(rows * c, 2)
            .iter()
            .map(|v| v.max(0.0))
            .collect();
        let mut dy = testing::data(rows * c, 3);
        let mut dx = vec![0.0f32; rows * c];
        let (mean, var) = bn::mean_and_variance(&x, c);
        let inv: Vec<f32> = var.iter().map(|v| 1.0 / (v + 1e-5).sqrt()).collect();
        let (scale, shift) = (testing::data(c, 4), testing::data(c, 5));
        let grad = InputGradient::training(&scale, &inv, &mean, &var, rows);
        let of_x = Relu::OfAffine {
            scale: &scale,
            shift: &shift,
        };
        let stats = time(|| drop(bn::mean_and_variance(&x, c)));
        let sums_x = time(|| drop(bn::backward_sums(&x, &dy, &mean, &inv, of_x)));
        let input_x = time(|| bn::backward_input(&x, &mut dy, &mean, &grad, of_x, false, &mut dx));
        let sums_out = time(|| {
            drop(bn::backward_sums(
                &x,
                &dy,
                &mean,
                &inv,
                Relu::OfOutput(&out),
            ))
        });
        let input_out = time(|| {
            bn::backward_input(
                &x,
                &mut dy,
                &mean,
                &grad,
                Relu::OfOutput(&out),
                true,
                &mut dx,
            )
        });
        let layers = (relu + add + plain) as f64;
        fwd += layers * stats;
        bwd += relu as f64 * (sums_x + input_x) + (add + plain) as f64 * (sums_out + input_out);
        let ms = |s: f64| format!("{:.3}", s * 1e3);
        println!(
            "| {rows} x {c} | {} | {} | {} | {} | {} |",
            ms(stats),
            ms(sums_x),
            ms(input_x),
            ms(sums_out),
            ms(input_out)
        );
    }
    println!();
    println!(
        "one step's worth (53 layers): statistics {:.2} ms, backward passes {:.2} ms",
        fwd * 1e3,
        bwd * 1e3
    );
}
