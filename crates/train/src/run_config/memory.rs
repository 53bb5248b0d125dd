//! Whether a network fits in memory, checked from its [`ModelSpec`] before
//! a single buffer is allocated: `--widths 8,8,8,100000` asks for hundreds
//! of gigabytes, and allocating them aborts the process (exit 134) instead
//! of reporting an error.
//!
//! The estimate is a *lower bound* (weights, gradients and two optimizer
//! moments per parameter, plus each convolution's output kept for the
//! backward pass), so a network it refuses cannot fit; one it accepts may
//! still be tight.

use crate::data::IMAGE_SIDE;
use crate::model_spec::ModelSpec;
use anyhow::{bail, Result};

/// Bytes a training run of `spec` at `batch` images per step needs at least.
pub fn lower_bound_bytes(spec: &ModelSpec, batch: usize) -> u128 {
    let (params, activations_per_image) = counts(spec);
    // f32 weights + gradients + two moments (Adam; SGD momentum has one).
    let param_bytes = params * 4 * 4;
    let activation_bytes = activations_per_image * batch as u128 * 4;
    param_bytes + activation_bytes
}

/// Parameters and activation values per image (convolution outputs).
fn counts(spec: &ModelSpec) -> (u128, u128) {
    let mut params: u128 = 0;
    let mut acts: u128 = 0;
    let stem = spec.stem_filters as u128;
    // conv1: 7x7 stride 2, then max pool stride 2.
    let mut side = (IMAGE_SIDE as u128).div_ceil(2);
    params += 7 * 7 * 3 * stem + 2 * stem;
    acts += side * side * stem;
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
            acts += area * (2 * w + out);
            if b == 0 {
                params += input * out + 2 * out;
                acts += area * out;
            }
        }
        channels = out;
    }
    let classes = spec.num_classes.unwrap_or(10) as u128;
    params += channels * classes + classes;
    (params, acts)
}

/// `MemAvailable` of /proc/meminfo in bytes; `None` where there is none
/// (not Linux), and the check is then skipped.
fn available_bytes() -> Option<u128> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u128 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Refuses a network that cannot fit in the memory available now.
pub fn check_fits(spec: &ModelSpec, batch: usize) -> Result<()> {
    let Some(available) = available_bytes() else {
        return Ok(());
    };
    let needed = lower_bound_bytes(spec, batch);
    if needed > available {
        let (params, _) = counts(spec);
        bail!(
            "the network (--depths {:?} --widths {:?} --stem-filters {}, {params} parameters) \
             needs at least {:.1} GB at batch size {batch}, but only {:.1} GB of memory is \
             available (MemAvailable in /proc/meminfo)",
            spec.depths,
            spec.widths,
            spec.stem_filters,
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
        let (params, _) = counts(&ModelSpec::resnet50(Some(10)));
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
}
