//! The `bench` command: full training steps (forward, backward, update) and
//! inference on random data, after warm-up, reporting the median step as
//! images/s and GFLOP/s, and the peak resident memory.

use super::setup::in_pool;
use super::BenchArgs;
use anyhow::{anyhow, Result};
use autograd::{ops, Graph, Mode, OpTiming};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::time::Instant;
use tensor::Tensor;
use train::ema::EmaConfig;
use train::model_spec::ModelSpec;
use train::optim::{Adam, AdamConfig, LrSchedule, Optimizer, Sgd, SgdConfig};
use train::trainer::Trainer;

fn random_batch(n: usize, rng: &mut StdRng) -> Tensor {
    let data = (0..n * 32 * 32 * 3)
        .map(|_| rng.gen_range(0.0..1.0))
        .collect();
    Tensor::from_vec(&[n, 32, 32, 3], data).expect("shape")
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Peak resident set size of this process, from /proc (Linux).
pub fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// The FLOPs of an op's forward pass that read real input: a convolution's
/// multiply-adds on its own padding do not count (conv1's input is padded
/// by an explicit ZeroPadding2D layer, as in Keras, so those count).
fn useful_flops(op: &OpTiming) -> f64 {
    match &op.conv {
        Some(geom) => 2.0 * tensor::conv_by_position::useful_macs(geom) as f64,
        None => op.forward_flops,
    }
}

/// Forward FLOPs per image of the conv and dense layers (2 x MACs), counted
/// (every tap, the usual convention) and useful ([`useful_flops`]), read off
/// one profiled inference pass.
fn forward_flops_per_image(trainer: &Trainer) -> (f64, f64) {
    let mut g = Graph::new(&trainer.store, Mode::INFER);
    g.enable_profile();
    let x = g.input(Tensor::zeros(&[1, 32, 32, 3]));
    trainer.model.forward(&mut g, x).expect("input shape");
    let ops = &g.profile().expect("enabled").ops;
    (
        ops.iter().map(|o| o.forward_flops).sum(),
        ops.iter().map(useful_flops).sum(),
    )
}

pub fn run(a: BenchArgs) -> Result<()> {
    in_pool(a.threads, || run_in_pool(a))
}

fn run_in_pool(a: BenchArgs) -> Result<()> {
    // Checked and set before anything is built: every GEMM below reads it.
    let precision = train::run_config::precision_on_this_cpu(&a.precision)?;
    tensor::gemm::set_precision(precision)
        .map_err(|e| anyhow!("--precision {}: {e}", a.precision))?;
    let threads = rayon::current_num_threads();
    let spec = ModelSpec {
        num_classes: Some(10),
        ..a.model.clone()
    };
    let (model, store) = spec.build(32, 0)?;
    let (optimizer, lr): (Box<dyn Optimizer>, f32) = match a.optimizer.as_str() {
        name @ ("sgd" | "lars") => (
            Box::new(Sgd::new(SgdConfig {
                momentum: 0.9,
                nesterov: true,
                weight_decay: 5e-4,
                trust_coefficient: (name == "lars").then_some(0.04),
            })),
            0.05,
        ),
        _ => (Box::new(Adam::new(AdamConfig::default())), 1e-4),
    };
    let mut trainer = Trainer::new(model, store, optimizer, LrSchedule::constant(lr));
    if let Some(every) = a.ema_every {
        trainer.enable_ema(EmaConfig {
            decay: 0.999f32.powi(every.into()),
            every: every.into(),
        })?;
    }
    let (flops, useful) = forward_flops_per_image(&trainer);
    println!(
        "{} (Keras topology) 32x32, {threads} thread(s); {:.1} MFLOP/image forward, {:.1} MFLOP/image training step; gemm kernel {}, precision {}",
        keras_display_name(&spec.name()),
        flops / 1e6,
        3.0 * flops / 1e6,
        tensor::gemm::kernel_name(),
        tensor::gemm::precision()
    );
    println!(
        "GFLOP/s count every tap; \"useful\" ones leave out multiply-adds on a convolution's padding: {:.1} of the {:.1} MFLOP/image forward",
        useful / 1e6,
        flops / 1e6
    );
    let mut rng = StdRng::seed_from_u64(0);
    let only = a.only.as_deref();
    let (batch_size, steps, warmup) = (a.batch_size as usize, a.steps as usize, a.warmup);
    if only != Some("inference") {
        let labels: Vec<usize> = (0..batch_size).map(|i| i % 10).collect();
        let x = random_batch(batch_size, &mut rng);
        let (mut times, mut update_times) = (Vec::new(), Vec::new());
        for i in 0..warmup + steps {
            let t = Instant::now();
            let stats = trainer.train_step(x.clone(), &labels);
            if i >= warmup {
                times.push(t.elapsed().as_secs_f64());
                update_times.push(stats.update_time.as_secs_f64());
            }
        }
        let t = median(times);
        let rate = batch_size as f64 / t;
        println!(
            "training step   batch {:4}: median {:7.1} ms  {:7.1} images/s  {:6.1} GFLOP/s  ({:.1} useful)",
            batch_size,
            t * 1e3,
            rate,
            rate * 3.0 * flops / 1e9,
            rate * 3.0 * useful / 1e9
        );
        let ema = match a.ema_every {
            Some(k) => format!(", EMA every {k} step(s)"),
            None => String::new(),
        };
        println!(
            "  of which optimizer update ({}{ema}) and batchnorm statistics: median {:.1} ms, mean {:.1} ms",
            a.optimizer,
            median(update_times.clone()) * 1e3,
            update_times.iter().sum::<f64>() / update_times.len() as f64 * 1e3
        );
        if let Some(rss) = peak_rss_mb() {
            println!("peak RSS after training steps: {rss:.0} MB");
        }
    }
    if only != Some("training") {
        for n in a.inference_batches.iter().map(|&n| n as usize) {
            let x = random_batch(n, &mut rng);
            let mut times = Vec::new();
            for i in 0..warmup + steps {
                let t = Instant::now();
                trainer.logits(x.clone());
                if i >= warmup {
                    times.push(t.elapsed().as_secs_f64());
                }
            }
            let t = median(times);
            println!(
                "inference       batch {:4}: median {:7.1} ms  {:7.1} images/s  {:6.1} GFLOP/s  ({:.1} useful)",
                n,
                t * 1e3,
                n as f64 / t,
                n as f64 * flops / t / 1e9,
                n as f64 * useful / t / 1e9
            );
        }
        if let Some(rss) = peak_rss_mb() {
            println!("peak RSS: {rss:.0} MB");
        }
    }
    if a.profile {
        if only != Some("inference") {
            profile(&trainer, Mode::TRAIN, batch_size, &mut rng);
        }
        if only != Some("training") {
            let n = a
                .inference_batches
                .iter()
                .copied()
                .max()
                .unwrap_or(a.batch_size);
            profile(&trainer, Mode::INFER, n as usize, &mut rng);
        }
    }
    Ok(())
}

/// Per-op time of one training step (`Mode::TRAIN`: forward and backward) or
/// one inference pass, grouped by op kind and by layer shape.
fn profile(trainer: &Trainer, mode: Mode, batch: usize, rng: &mut StdRng) {
    let training = mode == Mode::TRAIN;
    let labels: Vec<usize> = (0..batch).map(|i| i % 10).collect();
    let mut g = Graph::new(&trainer.store, mode);
    let x = g.input(random_batch(batch, rng));
    // After the input exists: an op's forward time runs from the previous
    // push, so the first op would otherwise include making the batch.
    g.enable_profile();
    let out = trainer.model.forward(&mut g, x).expect("shape");
    if training {
        let loss = ops::softmax_cross_entropy(&mut g, out.logits.expect("head"), &labels);
        let _ = g.backward(loss);
    }
    let mut by_op: BTreeMap<&str, (f64, f64, f64, usize)> = BTreeMap::new();
    let mut total = 0.0;
    for op in &g.profile().expect("enabled").ops {
        let e = by_op.entry(op.name).or_default();
        e.0 += op.forward.as_secs_f64();
        e.1 += op.backward.as_secs_f64();
        e.2 += op.forward_flops;
        e.3 += 1;
        total += op.forward.as_secs_f64() + op.backward.as_secs_f64();
    }
    let what = if training {
        "one training step"
    } else {
        "one inference pass"
    };
    println!("\nper-op profile of {what} (batch {batch}):");
    println!(
        "{:24} {:>5} {:>10} {:>10} {:>8} {:>12}",
        "op", "count", "fwd ms", "bwd ms", "share", "fwd GFLOP/s"
    );
    for (name, (f, b, fl, n)) in by_op {
        let rate = if fl > 0.0 {
            format!("{:.1}", fl / f / 1e9)
        } else {
            "-".into()
        };
        println!(
            "{name:24} {n:5} {:10.1} {:10.1} {:7.1}% {rate:>12}",
            f * 1e3,
            b * 1e3,
            100.0 * (f + b) / total
        );
    }
    println!("total {:.1} ms", total * 1e3);

    // Convolutions by shape: every layer of the same geometry together.
    let mut by_shape: BTreeMap<&str, (f64, f64, f64, f64, usize)> = BTreeMap::new();
    for op in g
        .profile()
        .expect("enabled")
        .ops
        .iter()
        .filter(|o| matches!(o.name, "conv2d" | "conv_bn_infer"))
    {
        let e = by_shape.entry(op.detail.as_str()).or_default();
        e.0 += op.forward.as_secs_f64();
        e.1 += op.backward.as_secs_f64();
        e.2 += op.forward_flops;
        e.3 += useful_flops(op);
        e.4 += 1;
    }
    println!("\nconvolutions by shape (backward = input + kernel gradient; 2x the forward FLOPs, 1x for the first conv; GF/s counted, then useful):");
    println!(
        "{:28} {:>5} {:>9} {:>9} {:>10} {:>10} {:>10} {:>10}",
        "conv", "count", "fwd ms", "bwd ms", "fwd GF/s", "bwd GF/s", "fwd useful", "bwd useful"
    );
    for (shape, (f, b, fl, useful, n)) in by_shape {
        // conv1 reads the network input, which needs no gradient: its
        // backward is the kernel gradient alone.
        let passes = if shape.starts_with("7x7") { 1.0 } else { 2.0 };
        let bwd_rate = |flops: f64| {
            if b > 0.0 {
                format!("{:.1}", passes * flops / b / 1e9)
            } else {
                "-".into()
            }
        };
        println!(
            "{shape:28} {n:5} {:9.1} {:9.1} {:10.1} {:>10} {:10.1} {:>10}",
            f * 1e3,
            b * 1e3,
            fl / f / 1e9,
            bwd_rate(fl),
            useful / f / 1e9,
            bwd_rate(useful),
        );
    }
}

/// `resnet101v2` -> `ResNet101V2`, Keras's spelling of its constructors.
fn keras_display_name(name: &str) -> String {
    name.replace("resnet", "ResNet").replace("v2", "V2")
}
