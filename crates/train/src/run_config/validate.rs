//! Every option of a [`RunConfig`] checked before anything is created or
//! loaded: a value that makes no sense (`--lr -1`, `--momentum 2`,
//! `--warmup-epochs 5 --epochs 1`) is refused with its name and valid range
//! instead of training uphill, or failing an hour later after the data has
//! loaded, or leaving an empty run directory behind.
//!
//! The checks that need the data (`--val-split` against the training set's
//! size) stay where the data is (`Dataset::hold_out`).

use super::RunConfig;
use crate::data::IMAGE_SIDE;
use crate::fit::Metric;
use crate::model_spec::ModelSpec;
use crate::optim::ScheduleKind;
use anyhow::{anyhow, bail, Result};

/// Widest stage or stem a run accepts; far beyond ResNet50's 512 and small
/// enough that no sum or product below overflows.
const MAX_WIDTH: usize = 1 << 20;
/// Most blocks in one stage (ResNet152 has 36).
const MAX_DEPTH: usize = 1024;

impl RunConfig {
    /// Refuses the first invalid option, naming it, its value and its range.
    pub fn validate(&self) -> Result<()> {
        positive_finite("--lr", self.lr)?;
        if !(0.0..1.0).contains(&self.momentum) {
            bail!("--momentum {}: must be in [0, 1)", self.momentum);
        }
        non_negative_finite("--weight-decay", self.weight_decay)?;
        positive_finite("--trust-coefficient", self.trust_coefficient)?;
        at_least_one("--epochs", self.epochs)?;
        at_least_one("--batch-size", self.batch_size)?;
        at_least_one("--eval-batch-size", self.eval_batch_size)?;
        if let Some(n) = self.train_limit {
            at_least_one("--train-limit", n)?;
        }
        if let Some(n) = self.test_limit {
            at_least_one("--test-limit", n)?;
        }
        non_negative_finite("--warmup-epochs", self.warmup_epochs)?;
        if self.warmup_epochs >= self.epochs as f32 {
            bail!(
                "--warmup-epochs {}: must be less than --epochs ({})",
                self.warmup_epochs,
                self.epochs
            );
        }
        if let Some(n) = self.train_limit {
            if self.val_split >= n {
                bail!(
                    "--val-split {}: must be less than --train-limit ({n}), leaving images to train on",
                    self.val_split
                );
            }
        }
        if !(0.0..1.0).contains(&self.label_smoothing) {
            bail!(
                "--label-smoothing {}: must be in [0, 1)",
                self.label_smoothing
            );
        }
        if let Some(c) = self.global_clipnorm {
            if !(c > 0.0 && c.is_finite()) {
                bail!("--global-clipnorm {c}: must be a positive finite norm (0 for no clipping)");
            }
        }
        if !(self.head_lr_scale > 0.0 && self.head_lr_scale <= 1e3) {
            bail!(
                "--head-lr-scale {}: must be in (0, 1000]",
                self.head_lr_scale
            );
        }
        if self.cutout > IMAGE_SIDE {
            bail!(
                "--cutout {}: must be at most the image side ({IMAGE_SIDE})",
                self.cutout
            );
        }
        let schedule = self
            .lr_schedule
            .parse::<ScheduleKind>()
            .map_err(|e| anyhow!("--lr-schedule: {e}"))?;
        if self.warmup_epochs > 0.0 && !schedule.allows_warmup() {
            bail!(
                "--warmup-epochs {} with --lr-schedule {}: that schedule ramps up by itself; \
                 use --warmup-epochs 0",
                self.warmup_epochs,
                self.lr_schedule
            );
        }
        self.preprocess()?;
        self.pad_mode()?;
        self.shuffle()?;
        self.tta()?;
        self.precision()?;
        if let Some(ema) = &self.ema {
            ema.validate()?;
        }
        self.freeze()?;
        self.optimizer()?;
        self.callbacks.validate()?;
        validate_model(&self.model)?;
        super::memory::check_fits(&self.model, self.batch_size, self.eval_batch_size)
    }
}

impl super::CallbackConfig {
    fn validate(&self) -> Result<()> {
        self.monitor
            .parse::<Metric>()
            .map_err(|e| anyhow!("--monitor: {e}"))?;
        if !(self.reduce_lr_factor > 0.0 && self.reduce_lr_factor < 1.0) {
            bail!(
                "--reduce-lr-factor {}: must be in (0, 1)",
                self.reduce_lr_factor
            );
        }
        non_negative_finite("--reduce-lr-min-lr", self.reduce_lr_min_lr)?;
        if !(self.early_stopping_min_delta.is_finite() && self.early_stopping_min_delta >= 0.0) {
            bail!(
                "--early-stopping-min-delta {}: must be a finite number >= 0",
                self.early_stopping_min_delta
            );
        }
        Ok(())
    }
}

/// The architecture's shape: 1 to 4 stages, every count positive and sane.
pub fn validate_model(m: &ModelSpec) -> Result<()> {
    if m.depths.is_empty() || m.depths.len() > 4 || m.depths.len() != m.widths.len() {
        bail!(
            "--depths {:?} and --widths {:?}: must name the same 1 to 4 stages",
            m.depths,
            m.widths
        );
    }
    if let Some(d) = m.depths.iter().find(|&&d| d == 0 || d > MAX_DEPTH) {
        bail!(
            "--depths {:?}: {d} blocks; each must be in 1..={MAX_DEPTH}",
            m.depths
        );
    }
    if let Some(w) = m.widths.iter().find(|&&w| w == 0 || w > MAX_WIDTH) {
        bail!(
            "--widths {:?}: {w}; each must be in 1..={MAX_WIDTH}",
            m.widths
        );
    }
    if m.stem_filters == 0 || m.stem_filters > MAX_WIDTH {
        bail!(
            "--stem-filters {}: must be in 1..={MAX_WIDTH}",
            m.stem_filters
        );
    }
    if !(0.0..1.0).contains(&m.bn_momentum) {
        bail!("--bn-momentum {}: must be in [0, 1)", m.bn_momentum);
    }
    Ok(())
}

fn positive_finite(name: &str, v: f32) -> Result<()> {
    if !(v.is_finite() && v > 0.0) {
        bail!("{name} {v}: must be a finite number > 0");
    }
    Ok(())
}

fn non_negative_finite(name: &str, v: f32) -> Result<()> {
    if !(v.is_finite() && v >= 0.0) {
        bail!("{name} {v}: must be a finite number >= 0");
    }
    Ok(())
}

fn at_least_one(name: &str, v: usize) -> Result<()> {
    if v == 0 {
        bail!("{name} 0: must be at least 1");
    }
    Ok(())
}
