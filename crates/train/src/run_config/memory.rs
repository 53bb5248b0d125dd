//! Whether a network fits in memory, checked from its [`ModelSpec`] before
//! a single buffer is allocated: `--widths 8,8,8,100000` asks for hundreds
//! of gigabytes, and allocating them aborts the process (exit 134) instead
//! of reporting an error. `train` checks its run ([`check_fits`]); `eval`
//! and `predict` check the network of their checkpoint at their batch
//! size ([`check_fits_inference`]).
//!
//! The estimate is a *lower bound*, so a network it refuses cannot fit; one
//! it accepts may still be tight. What it counts (f32 values):
//! - training: the parameters four times (weights, gradients, two Adam
//!   moments; SGD with momentum keeps one, so this is one copy generous for
//!   SGD but still below what the run allocates besides), plus every
//!   convolution's output for each image of the batch (kept for the
//!   backward pass), or, if larger, what an evaluation at the evaluation
//!   batch size adds;
//! - inference (and the evaluations during training): the parameters twice
//!   (the checkpoint's tensors read from the file, and the network built
//!   from them, both alive while loading), plus the input batch and the
//!   largest single convolution output of the batch.
//!
//! What it does not count: the outputs of batchnorm, ReLU and the residual
//! additions (the tape keeps those too), the convolutions' work buffers,
//! the buffer pool's idle buffers, the moving average of the weights
//! (`--ema-decay`), the dataset itself (CIFAR-10 decoded is 184 MB, and
//! loading holds the archive's bytes too), thread stacks and allocator
//! overhead. Nor swap, which would be too slow to train in anyway.
//!
//! "Available" is Linux's `MemAvailable` (/proc/meminfo), or the bytes in
//! the environment variable [`LIMIT_VAR`] when it is set (e.g. a
//! container's memory limit, which `MemAvailable` does not show). Where
//! neither is there (not Linux), the check is skipped.

use crate::data::{IMAGE_BYTES, IMAGE_SIDE};
use crate::model_spec::ModelSpec;
use anyhow::{bail, Result};

/// Bytes the check takes as available instead of `MemAvailable`.
pub const LIMIT_VAR: &str = "RESNET_RS_MEMORY_LIMIT";

/// Bytes a training run of `spec` at `batch` images per step needs at least
/// (its evaluations aside: see [`check_fits`]).
pub fn lower_bound_bytes(spec: &ModelSpec, batch: usize) -> u128 {
    let c = counts(spec);
    // f32 weights + gradients + two moments (Adam; SGD momentum has one).
    let param_bytes = c.params * 4 * 4;
    let activation_bytes = c.activations * batch as u128 * 4;
    param_bytes + activation_bytes
}

/// Bytes an evaluation or prediction with `spec` at `batch` images per
/// forward pass needs at least, the network loaded from a file included.
pub fn inference_lower_bound_bytes(spec: &ModelSpec, batch: usize) -> u128 {
    let c = counts(spec);
    c.params * 4 * 2 + inference_activation_bytes(&c, batch)
}

/// The input batch and the largest convolution output of it.
fn inference_activation_bytes(c: &Counts, batch: usize) -> u128 {
    (IMAGE_BYTES as u128 + c.largest) * batch as u128 * 4
}

/// What [`counts`] counts of a network.
struct Counts {
    params: u128,
    /// Convolution output values per image, all layers.
    activations: u128,
    /// Those of the largest single convolution output, per image.
    largest: u128,
}

/// Parameters and activation values per image (convolution outputs).
fn counts(spec: &ModelSpec) -> Counts {
    let mut params: u128 = 0;
    let mut acts: u128 = 0;
    let mut largest: u128 = 0;
    let mut out_of = |values: u128, acts: &mut u128| {
        *acts += values;
        largest = largest.max(values);
    };
    let stem = spec.stem_filters as u128;
    // conv1: 7x7 stride 2, then max pool stride 2.
    let mut side = (IMAGE_SIDE as u128).div_ceil(2);
    params += 7 * 7 * 3 * stem + 2 * stem;
    out_of(side * side * stem, &mut acts);
    side = side.div_ceil(2);
    let mut channels = stem;
    for (s, (&depth, &width)) in spec.depths.iter().zip(&spec.widths).enumerate() {
        let (w, out) = (width as u128, 4 * width as u128);
        if s > 0 {
            side = side.div_ceil(2);
        }
        let area = (side * side).max(1);
        for b in 0..depth {
            let input = if b == 0 { channels } else { out };
            // 1x1 reduce, 3x3, 1x1 expand (each with BN), shortcut on block 1.
            params += input * w + 9 * w * w + w * out + 2 * (2 * w + out);
            for values in [area * w, area * w, area * out] {
                out_of(values, &mut acts);
            }
            if b == 0 {
                params += input * out + 2 * out;
                out_of(area * out, &mut acts);
            }
        }
        channels = out;
    }
    let classes = spec.num_classes.unwrap_or(10) as u128;
    params += channels * classes + classes;
    Counts {
        params,
        activations: acts,
        largest,
    }
}

/// The bytes available and where that figure comes from: [`LIMIT_VAR`] if
/// set, else `MemAvailable` of /proc/meminfo; `None` where there is
/// neither (not Linux), and the check is then skipped.
fn available_bytes() -> Result<Option<(u128, String)>> {
    if let Some(v) = std::env::var_os(LIMIT_VAR) {
        let text = v.to_string_lossy();
        let Ok(bytes) = text.trim().parse::<u128>() else {
            bail!("{LIMIT_VAR}={text}: must be a number of bytes");
        };
        return Ok(Some((bytes, format!("{LIMIT_VAR}={bytes}"))));
    }
    let mem_available = || -> Option<u128> {
        let text = std::fs::read_to_string("/proc/meminfo").ok()?;
        let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
        let kib: u128 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    };
    Ok(mem_available().map(|b| (b, "MemAvailable in /proc/meminfo".to_string())))
}

/// Refuses a training run of `spec` (at `batch` images per step,
/// evaluating at `eval_batch`) that cannot fit in the memory available now.
pub fn check_fits(spec: &ModelSpec, batch: usize, eval_batch: usize) -> Result<()> {
    let Some((available, source)) = available_bytes()? else {
        return Ok(());
    };
    let c = counts(spec);
    let training = lower_bound_bytes(spec, batch);
    // An evaluation runs while the weights, gradients and moments exist.
    let evaluating = c.params * 4 * 4 + inference_activation_bytes(&c, eval_batch);
    let (needed, at) = if evaluating > training {
        (evaluating, format!("evaluation batch size {eval_batch}"))
    } else {
        (training, format!("batch size {batch}"))
    };
    if needed > available {
        bail!(
            "the network (--depths {:?} --widths {:?} --stem-filters {}, {} parameters) \
             needs at least {:.1} GB to train at {at}, but only {:.1} GB of memory is \
             available ({source})",
            spec.depths,
            spec.widths,
            spec.stem_filters,
            c.params,
            needed as f64 / 1e9,
            available as f64 / 1e9
        );
    }
    Ok(())
}

/// Refuses an evaluation or prediction with `spec` at `batch` images per
/// forward pass that cannot fit in the memory available now. `what` names
/// the network and the batch size for the message (e.g. the checkpoint
/// file and `--batch-size 256`).
pub fn check_fits_inference(spec: &ModelSpec, batch: usize, what: &str) -> Result<()> {
    let Some((available, source)) = available_bytes()? else {
        return Ok(());
    };
    let needed = inference_lower_bound_bytes(spec, batch);
    if needed > available {
        bail!(
            "{what}: the network (depths {:?}, widths {:?}, stem {}, {} parameters) needs at \
             least {:.1} GB at {batch} images per batch, but only {:.1} GB of memory is \
             available ({source})",
            spec.depths,
            spec.widths,
            spec.stem_filters,
            counts(spec).params,
            needed as f64 / 1e9,
            available as f64 / 1e9
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resnet50_parameter_count_is_close_to_keras() {
        // Keras's ResNet50 with a 10-class head: 23,608,202 parameters
        // (BN moving statistics included); the estimate counts BN's gamma
        // and beta only, so it must be a little below and close.
        let params = counts(&ModelSpec::resnet50(Some(10))).params;
        assert!(params <= 23_608_202, "{params}");
        assert!(params > 23_400_000, "{params}");
    }

    #[test]
    fn an_absurd_width_needs_hundreds_of_gigabytes() {
        let mut spec = ModelSpec::resnet50(Some(10));
        spec.depths = vec![1, 1, 1, 1];
        spec.widths = vec![8, 8, 8, 100_000];
        assert!(lower_bound_bytes(&spec, 64) > 300_000_000_000);
    }

    #[test]
    fn inference_needs_the_weights_twice_and_one_layer_of_the_batch() {
        let spec = ModelSpec::resnet50(Some(10));
        let c = counts(&spec);
        // The largest convolution output of ResNet50 at 32x32: conv1's
        // 16x16x64, equal to stage 1's 8x8x256 expansions.
        assert_eq!(c.largest, 16 * 16 * 64);
        assert_eq!(
            inference_lower_bound_bytes(&spec, 1),
            c.params * 8 + (3072 + 16 * 16 * 64) * 4
        );
        // Far below training's at the same batch size.
        assert!(inference_lower_bound_bytes(&spec, 64) * 2 < lower_bound_bytes(&spec, 64));
    }
}
