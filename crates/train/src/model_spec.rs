//! Which network to build: one of `keras.applications`' six ResNets (the
//! recipe's ResNet50 by default), or a narrower one for quick runs, and
//! recognizing one from a weights file.

use autograd::ParamStore;
use nn::layers::batch_norm::KERAS_MOMENTUM;
use nn::layers::VarianceUpdate;
use nn::{Model, ModelError, ResNet, ResNetConfig, ResNetV2};
use serde::{Deserialize, Serialize};
use tensor::Tensor;

/// Which residual block the network is made of.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResNetVersion {
    /// He et al. 2015: conv -> BN -> ReLU, ReLU after the add ([`nn::ResNet`]).
    #[default]
    V1,
    /// He et al. 2016, "Identity Mappings": BN -> ReLU -> conv, nothing
    /// after the add ([`nn::ResNetV2`]).
    V2,
}

/// `keras.applications`' ResNets by name: version and blocks per stage
/// (stem and widths are ResNet50's in all six).
pub const KERAS_RESNETS: [(&str, ResNetVersion, [usize; 4]); 6] = [
    ("resnet50", ResNetVersion::V1, [3, 4, 6, 3]),
    ("resnet101", ResNetVersion::V1, [3, 4, 23, 3]),
    ("resnet152", ResNetVersion::V1, [3, 8, 36, 3]),
    ("resnet50v2", ResNetVersion::V2, [3, 4, 6, 3]),
    ("resnet101v2", ResNetVersion::V2, [3, 4, 23, 3]),
    ("resnet152v2", ResNetVersion::V2, [3, 8, 36, 3]),
];

/// The architecture knobs a run records in its configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelSpec {
    /// V1 or V2 blocks; a `config.json` from before V2 existed has no such
    /// field and is V1.
    #[serde(default)]
    pub version: ResNetVersion,
    pub stem_filters: usize,
    pub depths: Vec<usize>,
    pub widths: Vec<usize>,
    pub num_classes: Option<usize>,
    /// Keras 2's unbiased moving variance instead of Keras 3's biased one.
    pub unbiased_moving_variance: bool,
    /// Every batchnorm's Keras `momentum`, in `[0, 1)`:
    /// `moving = momentum * moving + (1 - momentum) * batch`. A
    /// `config.json` from before the field existed has none and gets
    /// Keras's 0.99 ([`KERAS_MOMENTUM`]), which every run used until then.
    #[serde(default = "keras_momentum")]
    pub bn_momentum: f32,
}

fn keras_momentum() -> f32 {
    KERAS_MOMENTUM
}

impl ModelSpec {
    pub fn resnet50(num_classes: Option<usize>) -> Self {
        let c = ResNetConfig::resnet50(num_classes);
        ModelSpec {
            version: ResNetVersion::V1,
            stem_filters: c.stem_filters,
            depths: c.depths,
            widths: c.widths,
            num_classes,
            unbiased_moving_variance: false,
            bn_momentum: c.bn_momentum,
        }
    }

    /// One of [`KERAS_RESNETS`] by Keras's name (`resnet101v2`, ...), without a head.
    pub fn keras(name: &str) -> Result<Self, String> {
        let (_, version, depths) = KERAS_RESNETS
            .iter()
            .find(|(n, _, _)| *n == name)
            .ok_or_else(|| {
                let names: Vec<&str> = KERAS_RESNETS.iter().map(|(n, _, _)| *n).collect();
                format!("unknown model '{name}'; one of {}", names.join(", "))
            })?;
        Ok(ModelSpec {
            version: *version,
            depths: depths.to_vec(),
            ..Self::resnet50(None)
        })
    }

    /// Keras's name for the network this builds (`resnet152v2`, or e.g.
    /// `resnet[2, 2, 2, 2]` for a narrow one).
    pub fn name(&self) -> String {
        let keras = KERAS_RESNETS
            .iter()
            .find(|(_, v, d)| *v == self.version && d[..] == self.depths[..]);
        match (keras, self.version) {
            (Some((name, _, _)), _) => name.to_string(),
            (None, ResNetVersion::V1) => format!("resnet{:?}", self.depths),
            (None, ResNetVersion::V2) => format!("resnet{:?}v2", self.depths),
        }
    }

    /// Builds the network and a store with its freshly initialized
    /// parameters (seeded by `seed`), for square `input_size` images.
    pub fn build(
        &self,
        input_size: usize,
        seed: u64,
    ) -> Result<(Box<dyn Model>, ParamStore), ModelError> {
        let config = self.config(input_size, seed);
        Ok(match self.version {
            ResNetVersion::V1 => {
                let (model, store) = ResNet::new(config)?;
                (Box::new(model), store)
            }
            ResNetVersion::V2 => {
                let (model, store) = ResNetV2::new(config)?;
                (Box::new(model), store)
            }
        })
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
            bn_momentum: self.bn_momentum,
            seed,
        }
    }

    /// Reads the architecture off Keras-named weights: V2 from `post_bn`
    /// (which only the pre-activation networks have), blocks per stage from
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
        let version = if shape("post_bn/gamma", 1)?.is_some() {
            ResNetVersion::V2
        } else {
            ResNetVersion::V1
        };
        // The stem's width as its consumer, conv2_block1_1_conv, reads it:
        // a conv1 kernel of the wrong shape is then reported as itself,
        // with both shapes, by the loader (not as a mismatch further on).
        let stem_filters = shape("conv2_block1_1_conv/kernel", 4)?.map_or(0, |k| k[2]);
        Ok(ModelSpec {
            version,
            stem_filters,
            depths,
            widths,
            num_classes: shape("predictions/kernel", 2)?.map(|s| s[1]),
            unbiased_moving_variance: false,
            bn_momentum: KERAS_MOMENTUM,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keras_names_select_version_and_depths() {
        for (name, version, depths) in KERAS_RESNETS {
            let spec = ModelSpec::keras(name).unwrap();
            assert_eq!((spec.version, &spec.depths[..]), (version, &depths[..]));
            assert_eq!(spec.name(), name);
            assert_eq!(spec.widths, [64, 128, 256, 512]);
        }
        let err = ModelSpec::keras("resnet18").unwrap_err();
        assert!(
            err.contains("resnet18") && err.contains("resnet152v2"),
            "{err}"
        );
    }

    /// A `config.json` model section written before the field existed.
    #[test]
    fn old_specs_without_a_version_are_v1() {
        let old = r#"{"stem_filters":64,"depths":[3,4,6,3],"widths":[64,128,256,512],
                      "num_classes":10,"unbiased_moving_variance":false}"#;
        let spec: ModelSpec = serde_json::from_str(old).unwrap();
        assert_eq!(spec, ModelSpec::resnet50(Some(10)));
        assert_eq!(spec.bn_momentum, 0.99);
        let v2 = ModelSpec {
            num_classes: Some(10),
            ..ModelSpec::keras("resnet101v2").unwrap()
        };
        let json = serde_json::to_string(&v2).unwrap();
        assert!(json.contains(r#""version":"v2""#), "{json}");
        assert_eq!(serde_json::from_str::<ModelSpec>(&json).unwrap(), v2);
    }

    /// `build` gives every batchnorm of V1 and V2 the spec's momentum.
    #[test]
    fn build_passes_the_bn_momentum_to_every_batchnorm() {
        for name in ["resnet50", "resnet50v2"] {
            let spec = ModelSpec {
                bn_momentum: 0.9,
                ..ModelSpec::keras(name).unwrap()
            };
            let (model, store) = spec.build(32, 0).unwrap();
            let bns = model.batch_norms();
            let moving_means = store
                .iter()
                .filter(|(_, p)| p.name.ends_with("/moving_mean"))
                .count();
            assert_eq!(bns.len(), moving_means, "{name}");
            assert_eq!(bns.len(), if name == "resnet50" { 53 } else { 49 });
            assert!(bns.iter().all(|bn| bn.momentum == 0.9), "{name}");
            let json = serde_json::to_string(&spec).unwrap();
            assert!(json.contains(r#""bn_momentum":0.9"#), "{json}");
            assert_eq!(serde_json::from_str::<ModelSpec>(&json).unwrap(), spec);
        }
    }

    /// `infer` tells the versions apart by `post_bn` and reads the rest off
    /// the shapes, for a narrow network's freshly built weights of each.
    #[test]
    fn infer_recognizes_v1_and_v2_weights() {
        for version in [ResNetVersion::V1, ResNetVersion::V2] {
            let spec = ModelSpec {
                version,
                stem_filters: 8,
                depths: vec![2, 3, 2, 2],
                widths: vec![4, 8, 8, 16],
                num_classes: Some(7),
                unbiased_moving_variance: false,
                bn_momentum: KERAS_MOMENTUM,
            };
            let (_, store) = spec.build(32, 0).unwrap();
            let tensors: Vec<(String, Tensor)> = store
                .iter()
                .map(|(_, p)| (p.name.clone(), p.value.clone()))
                .collect();
            assert_eq!(ModelSpec::infer(&tensors).unwrap(), spec);
        }
    }

    /// A conv1 kernel of the wrong width is reported as itself, with both
    /// shapes (the stem's width is read where it is consumed).
    #[test]
    fn a_wrong_conv1_kernel_is_blamed_on_itself() {
        let spec = ModelSpec {
            stem_filters: 8,
            depths: vec![1, 1, 1, 1],
            widths: vec![4, 4, 8, 8],
            ..ModelSpec::resnet50(Some(3))
        };
        let (_, store) = spec.build(32, 0).unwrap();
        let mut tensors: Vec<(String, Tensor)> = store
            .iter()
            .map(|(_, p)| (p.name.clone(), p.value.clone()))
            .collect();
        for (name, t) in tensors.iter_mut() {
            if name == "conv1_conv/kernel" {
                *t = Tensor::zeros(&[7, 7, 3, 9]);
            }
        }
        let inferred = ModelSpec::infer(&tensors).unwrap();
        assert_eq!(inferred, spec);
        let (_, mut target) = inferred.build(32, 0).unwrap();
        let file = nn::checkpoint::TensorFile {
            path: "w.safetensors".into(),
            tensors: tensors.into_iter().collect(),
            metadata: Default::default(),
        };
        let err = nn::checkpoint::load_from(&mut target, file, &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("conv1_conv/kernel"), "{err}");
        assert!(
            err.contains("[7, 7, 3, 9]") && err.contains("[7, 7, 3, 8]"),
            "{err}"
        );
    }
}
