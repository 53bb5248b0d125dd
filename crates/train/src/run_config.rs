//! The exact configuration of a training run, written to `config.json` in
//! the run directory so a run can be reproduced and resumed.
//!
//! Fields added after the first release carry serde defaults, so the
//! `config.json` of an older run still loads (and resumes as it ran).

use crate::data::{AugmentConfig, PadMode, Preprocess, Shuffle};
use crate::evaluate::Tta;
use crate::fit::FitConfig;
use crate::model_spec::ModelSpec;
use crate::optim::{Adam, AdamConfig, LrSchedule, Optimizer, ScheduleKind, Sgd, SgdConfig};
use anyhow::{anyhow, bail, Result};
use nn::freeze::Freeze;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

pub mod memory;
mod validate;

pub use validate::validate_model;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunConfig {
    /// The `--recipe` this configuration started from (`None`: a run from
    /// before recipes existed), and the fields the command line replaced.
    #[serde(default)]
    pub recipe: Option<String>,
    #[serde(default)]
    pub overridden: Vec<String>,
    pub epochs: usize,
    pub batch_size: usize,
    pub eval_batch_size: usize,
    pub lr: f32,
    /// "adam", "sgd" or "lars" (SGD with LARS's per-layer trust ratio).
    pub optimizer: String,
    pub momentum: f32,
    pub nesterov: bool,
    pub weight_decay: f32,
    /// LARS's trust coefficient `eta` (`--optimizer lars` only).
    #[serde(default = "lars_eta")]
    pub trust_coefficient: f32,
    /// "constant", "cosine" or "step:E1,E2,..".
    pub lr_schedule: String,
    pub warmup_epochs: f32,
    /// Random crop and horizontal flip.
    pub augment: bool,
    /// The crop's padding: "zero" (black) or "reflect".
    #[serde(default = "zero_padding")]
    pub pad_mode: String,
    /// Side of the cutout square (0 = none).
    #[serde(default)]
    pub cutout: usize,
    /// "epoch" (reshuffle every epoch), "once" (one order for all epochs)
    /// or "none" (dataset order).
    #[serde(default = "every_epoch")]
    pub shuffle: String,
    /// Keras's `label_smoothing` of the training loss, in [0, 1).
    #[serde(default)]
    pub label_smoothing: f32,
    /// The classifier's learning rate as a multiple of the schedule's
    /// ([`crate::Trainer::scale_head_lr`] says why), in (0, 1e3].
    #[serde(default = "one")]
    pub head_lr_scale: f32,
    /// Keras's `global_clipnorm`: the gradients of each step scaled down
    /// together to this global norm when theirs is larger ([`crate::clip`]);
    /// `None` for no clipping.
    #[serde(default)]
    pub global_clipnorm: Option<f32>,
    /// Test-time augmentation of the evaluations: "none", "flip" or
    /// "flip-translate".
    #[serde(default = "no_tta")]
    pub tta: String,
    /// "none", "base" or a stage number 1..=5 (freeze the stem and stages up to it).
    pub freeze: String,
    pub train_limit: Option<usize>,
    pub test_limit: Option<usize>,
    /// Training images held out (chosen by the seed) and evaluated after
    /// every epoch as `val_loss` / `val_accuracy`; 0 for none.
    #[serde(default)]
    pub val_split: usize,
    pub seed: u64,
    /// "unit" (x / 255) or "caffe".
    pub preprocess: String,
    pub weights: Option<PathBuf>,
    pub data: Option<PathBuf>,
    pub model: ModelSpec,
    #[serde(default)]
    pub callbacks: CallbackConfig,
    /// Keep an exponential moving average of the weights, evaluated after
    /// every epoch and saved as `ema.safetensors`; `None`: off.
    #[serde(default)]
    pub ema: Option<crate::ema::EmaConfig>,
    /// The number format of every GEMM operand (conv forward, input and
    /// kernel gradients, dense layers): "fp32", "bf16" (rounded to bf16,
    /// accumulated in f32; needs AVX512_BF16) or "auto" (bf16 where the CPU
    /// has it, else fp32: decided on each start, so a run resumed on
    /// another machine may change). Weights, activations, gradients,
    /// batchnorm and the optimizer stay f32 either way.
    #[serde(default = "fp32")]
    pub precision: String,
}

fn zero_padding() -> String {
    "zero".into()
}

fn one() -> f32 {
    1.0
}

/// TF's and SimCLR's default `eeta`.
fn lars_eta() -> f32 {
    1e-3
}

fn every_epoch() -> String {
    "epoch".into()
}

fn no_tta() -> String {
    "none".into()
}

fn fp32() -> String {
    "fp32".into()
}

/// The Keras-style callbacks of a run ([`mod@crate::fit`]); all off by default.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CallbackConfig {
    /// The metric the three callbacks watch: "val_loss", "val_accuracy",
    /// "loss" or "accuracy".
    pub monitor: String,
    /// Write the best epoch's weights to `best.safetensors`.
    pub save_best: bool,
    /// Stop after this many epochs without improvement.
    pub early_stopping_patience: Option<usize>,
    pub early_stopping_min_delta: f64,
    /// After early stopping, evaluate (and keep in memory) the best epoch's weights.
    pub restore_best_weights: bool,
    /// Multiply the learning rate by `reduce_lr_factor` after this many
    /// epochs without improvement.
    pub reduce_lr_patience: Option<usize>,
    pub reduce_lr_factor: f32,
    pub reduce_lr_min_lr: f32,
    pub reduce_lr_min_delta: f64,
    pub reduce_lr_cooldown: usize,
}

impl Default for CallbackConfig {
    /// Keras's defaults.
    fn default() -> Self {
        CallbackConfig {
            monitor: "val_loss".into(),
            save_best: false,
            early_stopping_patience: None,
            early_stopping_min_delta: 0.0,
            restore_best_weights: false,
            reduce_lr_patience: None,
            reduce_lr_factor: 0.1,
            reduce_lr_min_lr: 0.0,
            reduce_lr_min_delta: 1e-4,
            reduce_lr_cooldown: 0,
        }
    }
}

impl RunConfig {
    pub fn preprocess(&self) -> Result<Preprocess> {
        self.preprocess
            .parse()
            .map_err(|e| anyhow!("--preprocess: {e}"))
    }

    pub fn freeze(&self) -> Result<Freeze> {
        Ok(match self.freeze.as_str() {
            "none" => Freeze::None,
            "base" => Freeze::Base,
            n => match n.parse::<usize>() {
                Ok(k) if (1..=5).contains(&k) => Freeze::Through(k),
                _ => bail!(
                    "--freeze {}: expected none, base, or a stage number 1..5",
                    self.freeze
                ),
            },
        })
    }

    pub fn optimizer(&self) -> Result<Box<dyn Optimizer>> {
        Ok(match self.optimizer.as_str() {
            "adam" => Box::new(Adam::new(AdamConfig {
                weight_decay: self.weight_decay,
                ..AdamConfig::default()
            })),
            "sgd" | "lars" => Box::new(Sgd::new(SgdConfig {
                momentum: self.momentum,
                nesterov: self.nesterov,
                weight_decay: self.weight_decay,
                trust_coefficient: (self.optimizer == "lars").then_some(self.trust_coefficient),
            })),
            other => bail!("--optimizer {other}: expected adam, sgd or lars"),
        })
    }

    pub fn schedule(&self, steps_per_epoch: usize) -> Result<LrSchedule> {
        let kind: ScheduleKind = self
            .lr_schedule
            .parse()
            .map_err(|e| anyhow!("--lr-schedule: {e}"))?;
        Ok(LrSchedule {
            base_lr: self.lr,
            kind,
            warmup_steps: (self.warmup_epochs * steps_per_epoch as f32).round() as u64,
            total_steps: (self.epochs * steps_per_epoch) as u64,
            steps_per_epoch: steps_per_epoch as u64,
        })
    }

    pub fn fit_config(&self) -> Result<FitConfig> {
        Ok(FitConfig {
            epochs: self.epochs,
            batch_size: self.batch_size,
            eval_batch_size: self.eval_batch_size,
            seed: self.seed,
            augment: match self.augment {
                false => None,
                true => Some(AugmentConfig {
                    pad_mode: self.pad_mode()?,
                    cutout: self.cutout,
                    ..AugmentConfig::STANDARD
                }),
            },
            shuffle: self.shuffle()?,
            preprocess: self.preprocess()?,
        })
    }

    pub fn pad_mode(&self) -> Result<PadMode> {
        self.pad_mode
            .parse()
            .map_err(|e| anyhow!("--pad-mode: {e}"))
    }

    pub fn shuffle(&self) -> Result<Shuffle> {
        self.shuffle.parse().map_err(|e| anyhow!("--shuffle: {e}"))
    }

    pub fn tta(&self) -> Result<Tta> {
        self.tta.parse().map_err(|e| anyhow!("--tta: {e}"))
    }

    /// The GEMM precision on this CPU, refused (naming the missing CPU
    /// feature) when this CPU cannot run it.
    pub fn precision(&self) -> Result<tensor::Precision> {
        precision_on_this_cpu(&self.precision)
    }
}

/// [`resolve_precision`] on the CPU this runs on: what `train` and `bench`
/// both take their `--precision` through.
pub fn precision_on_this_cpu(name: &str) -> Result<tensor::Precision> {
    resolve_precision(name, tensor::Precision::Bf16.kernel().map(|_| ()))
}

/// `name` ("fp32" | "bf16" | "auto") on a CPU whose bf16 support is
/// `bf16`: `Ok`, or why not (the missing CPU feature). "auto" is bf16 when
/// it is supported, fp32 otherwise: never an error, never silently slower.
pub fn resolve_precision(name: &str, bf16: Result<(), String>) -> Result<tensor::Precision> {
    if name == "auto" {
        return Ok(match bf16 {
            Ok(()) => tensor::Precision::Bf16,
            Err(_) => tensor::Precision::Fp32,
        });
    }
    let p: tensor::Precision = name
        .parse()
        .map_err(|e| anyhow!("--precision {name}: {e} (or auto)"))?;
    if p == tensor::Precision::Bf16 {
        bf16.map_err(|e| anyhow!("--precision {name}: {e} (--precision auto falls back to fp32)"))?;
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_precision_is_bf16_where_the_cpu_has_it() {
        use tensor::Precision::{Bf16, Fp32};
        let has = || Ok(());
        let lacks = || Err("this CPU lacks AVX512_BF16".to_string());
        assert_eq!(resolve_precision("auto", has()).unwrap(), Bf16);
        assert_eq!(resolve_precision("auto", lacks()).unwrap(), Fp32);
        assert_eq!(resolve_precision("fp32", lacks()).unwrap(), Fp32);
        assert_eq!(resolve_precision("bf16", has()).unwrap(), Bf16);
        let e = resolve_precision("bf16", lacks()).unwrap_err().to_string();
        assert!(e.contains("lacks AVX512_BF16") && e.contains("auto"), "{e}");
        let e = resolve_precision("fp16", has()).unwrap_err().to_string();
        assert!(e.contains("--precision fp16") && e.contains("auto"), "{e}");
    }

    /// A config.json written before `val_split` and `callbacks` existed.
    const OLD: &str = r#"{
      "epochs": 10, "batch_size": 64, "eval_batch_size": 256, "lr": 0.0001,
      "optimizer": "adam", "momentum": 0.9, "nesterov": false, "weight_decay": 0.0,
      "lr_schedule": "constant", "warmup_epochs": 0.0, "augment": false, "freeze": "none",
      "train_limit": null, "test_limit": null, "seed": 0, "preprocess": "unit",
      "weights": null, "data": null,
      "model": {"stem_filters": 64, "depths": [3, 4, 6, 3], "widths": [64, 128, 256, 512],
                "num_classes": 10, "unbiased_moving_variance": false}
    }"#;

    #[test]
    fn an_old_config_loads_with_everything_new_off() {
        let c: RunConfig = serde_json::from_str(OLD).unwrap();
        assert_eq!(c.val_split, 0);
        assert_eq!(c.callbacks, CallbackConfig::default());
        assert_eq!(c.callbacks.early_stopping_patience, None);
        assert_eq!(c.model.bn_momentum, 0.99);
        assert_eq!(c.precision, "fp32");
        // And round-trips with the new fields.
        let back: RunConfig = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(back, c);
        // A partial callbacks section takes Keras's defaults for the rest.
        let partial = OLD.replacen(
            "\"seed\": 0",
            "\"seed\": 0, \"callbacks\": {\"save_best\": true}",
            1,
        );
        let c: RunConfig = serde_json::from_str(&partial).unwrap();
        assert!(c.callbacks.save_best);
        assert_eq!(c.callbacks.reduce_lr_factor, 0.1);
        assert_eq!(c.callbacks.monitor, "val_loss");
    }
}
