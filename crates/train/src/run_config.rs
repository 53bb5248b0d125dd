//! The exact configuration of a training run, written to `config.json` in
//! the run directory so a run can be reproduced and resumed.

use crate::model_spec::ModelSpec;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunConfig {
    pub epochs: usize,
    pub batch_size: usize,
    pub eval_batch_size: usize,
    pub lr: f32,
    /// "adam" or "sgd".
    pub optimizer: String,
    pub momentum: f32,
    pub nesterov: bool,
    pub weight_decay: f32,
    /// "constant", "cosine" or "step:E1,E2,..".
    pub lr_schedule: String,
    pub warmup_epochs: f32,
    pub augment: bool,
    /// "none", "base" or a stage number 1..=5 (freeze the stem and stages up to it).
    pub freeze: String,
    pub train_limit: Option<usize>,
    pub test_limit: Option<usize>,
    pub seed: u64,
    /// "unit" (x / 255) or "caffe".
    pub preprocess: String,
    pub weights: Option<PathBuf>,
    pub data: Option<PathBuf>,
    pub model: ModelSpec,
}
