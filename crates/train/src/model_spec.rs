//! Which network to build: the ResNet50 of the recipe, or a narrower one for
//! quick runs, and recognizing one from a weights file.

use nn::layers::VarianceUpdate;
use nn::ResNetConfig;
use serde::{Deserialize, Serialize};
use tensor::Tensor;

/// The architecture knobs a run records in its configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelSpec {
    pub stem_filters: usize,
    pub depths: Vec<usize>,
    pub widths: Vec<usize>,
    pub num_classes: Option<usize>,
    /// Keras 2's unbiased moving variance instead of Keras 3's biased one.
    pub unbiased_moving_variance: bool,
}

impl ModelSpec {
    pub fn resnet50(num_classes: Option<usize>) -> Self {
        let c = ResNetConfig::resnet50(num_classes);
        ModelSpec {
            stem_filters: c.stem_filters,
            depths: c.depths,
            widths: c.widths,
            num_classes,
            unbiased_moving_variance: false,
        }
    }

    pub fn config(&self, input_size: usize, seed: u64) -> ResNetConfig {
        ResNetConfig {
            input_size,
            stem_filters: self.stem_filters,
            depths: self.depths.clone(),
            widths: self.widths.clone(),
            num_classes: self.num_classes,
            variance_update: if self.unbiased_moving_variance {
                VarianceUpdate::Unbiased
            } else {
                VarianceUpdate::Biased
            },
            seed,
        }
    }

    /// Reads the architecture off Keras-named weights: blocks per stage from
    /// the `convN_blockM_` names, widths from the `_1_conv` kernels, the stem
    /// from `conv1_conv/kernel`, the head from `predictions/kernel`.
    pub fn infer(tensors: &[(String, Tensor)]) -> Result<Self, String> {
        // The shape of `name`, which must have `rank` dimensions.
        let shape = |name: &str, rank: usize| -> Result<Option<Vec<usize>>, String> {
            match tensors.iter().find(|(n, _)| n == name) {
                None => Ok(None),
                Some((_, t)) if t.rank() == rank => Ok(Some(t.shape().to_vec())),
                Some((_, t)) => Err(format!(
                    "{name} has shape {:?}; expected {rank} dimensions",
                    t.shape()
                )),
            }
        };
        let stem =
            shape("conv1_conv/kernel", 4)?.ok_or("no conv1_conv/kernel: not a Keras ResNet")?;
        let mut depths = Vec::new();
        let mut widths = Vec::new();
        for stage in 2..=5 {
            let mut blocks = 0;
            while shape(&format!("conv{stage}_block{}_1_conv/kernel", blocks + 1), 4)?.is_some() {
                blocks += 1;
            }
            if blocks == 0 {
                break;
            }
            let k = shape(&format!("conv{stage}_block1_1_conv/kernel"), 4)?.expect("counted above");
            depths.push(blocks);
            widths.push(k[3]);
        }
        if depths.is_empty() {
            return Err("no convN_blockM_1_conv kernels: not a Keras ResNet".into());
        }
        Ok(ModelSpec {
            stem_filters: stem[3],
            depths,
            widths,
            num_classes: shape("predictions/kernel", 2)?.map(|s| s[1]),
            unbiased_moving_variance: false,
        })
    }
}
