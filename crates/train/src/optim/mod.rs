//! Optimizers over flat `f32` slices, plus learning-rate schedules.
//!
//! Why flat slices and indices: the network owns its parameters; the
//! optimizer only needs to see each parameter's values and gradient as a
//! contiguous slice. Each parameter is identified by a stable `index` (its
//! position in the model's `ParamStore`), which is how per-parameter state
//! (Adam moments, SGD velocity) is found again on the next step; a
//! checkpoint names the state after the parameters instead (see `state`).
//!
//! Usage per training step:
//! ```text
//! opt.begin_step(schedule.lr(step));
//! for (i, p) in params.iter_mut().enumerate() { opt.update(i, p.values, p.grad); }
//! ```
//!
//! The inner loops are plain zips over equally long slices (no per-element
//! indexing), which LLVM vectorizes.

mod adam;
mod schedule;
mod sgd;
mod state;

pub use adam::{Adam, AdamConfig, DEFAULT_ADAM_LR};
pub use schedule::{LrSchedule, ScheduleKind};
pub use sgd::{Sgd, SgdConfig};
pub use state::{BufferKey, OptimError, OptimizerState};

/// Elements per parallel task of the elementwise updates (optimizers, the
/// weight average): large enough that a task outweighs its scheduling, small
/// enough that the 2.4M-element kernels of stage 5 split across the cores.
/// Every element is updated on its own, so results do not depend on the split.
pub(crate) const PAR_CHUNK: usize = 1 << 15;

/// What an optimizer treats differently per parameter (by index): which
/// parameters are exempt from weight decay (biases, batchnorm) and which
/// learn at a multiple of the step's rate (per-layer rates: the head, see
/// [`Optimizer::scale_lr`]). Configuration, not state: the trainer sets it
/// from the model on every start, so checkpoints do not carry it.
#[derive(Clone, Debug, Default)]
pub(crate) struct ParamOptions {
    no_decay: Vec<bool>,
    lr_scale: Vec<f32>,
}

impl ParamOptions {
    pub(crate) fn exempt(&mut self, index: usize) {
        if self.no_decay.len() <= index {
            self.no_decay.resize(index + 1, false);
        }
        self.no_decay[index] = true;
    }

    pub(crate) fn is_exempt(&self, index: usize) -> bool {
        self.no_decay.get(index).copied().unwrap_or(false)
    }

    pub(crate) fn set_lr_scale(&mut self, index: usize, scale: f32) {
        if self.lr_scale.len() <= index {
            self.lr_scale.resize(index + 1, 1.0);
        }
        self.lr_scale[index] = scale;
    }

    /// The multiple of the step's learning rate parameter `index` uses (1
    /// unless set).
    pub(crate) fn lr_scale(&self, index: usize) -> f32 {
        self.lr_scale.get(index).copied().unwrap_or(1.0)
    }
}

/// A first-order optimizer with per-parameter state.
pub trait Optimizer {
    /// Short name stored with the state ("adam", "sgd").
    fn name(&self) -> &'static str;

    /// Starts a new step with learning rate `lr`; increments the step count
    /// (Keras `iterations`). Must be called once before the `update`s of a step.
    fn begin_step(&mut self, lr: f32);

    /// Applies one update to parameter `index` in place. `param` and `grad`
    /// must have equal length, and the same length on every step.
    ///
    /// # Panics
    /// On length mismatch or when called before the first `begin_step`:
    /// both are programming errors, not data errors.
    fn update(&mut self, index: usize, param: &mut [f32], grad: &[f32]);

    /// Excludes the parameter `index` from weight decay (typical for biases
    /// and batch-norm parameters). No effect when weight decay is 0.
    fn exclude_from_weight_decay(&mut self, index: usize);

    /// Parameter `index` learns at `scale` times the step's learning rate
    /// from now on (weight decay included, since it is part of the step).
    /// How [`crate::Trainer::scale_head_lr`] gives the classifier its own rate.
    fn scale_lr(&mut self, index: usize, scale: f32);

    /// Number of `begin_step` calls so far (restored by `load_state`).
    fn step(&self) -> u64;

    /// Snapshot of the step count and all per-parameter buffers.
    fn state(&self) -> OptimizerState;

    /// Restores a snapshot taken by `state` of the same kind of optimizer.
    fn load_state(&mut self, state: &OptimizerState) -> Result<(), OptimError>;
}

/// Grows `v` so that `v[index]` exists.
fn slot_mut<T>(v: &mut Vec<Option<T>>, index: usize) -> &mut Option<T> {
    if v.len() <= index {
        v.resize_with(index + 1, || None);
    }
    &mut v[index]
}

fn check_lengths(name: &str, index: usize, param: &[f32], grad: &[f32], state_len: usize) {
    assert_eq!(
        param.len(),
        grad.len(),
        "{name}: parameter {index} has {} values but its gradient has {}",
        param.len(),
        grad.len()
    );
    assert_eq!(
        param.len(),
        state_len,
        "{name}: parameter {index} has {} values but its optimizer state has {} \
         (state restored from a checkpoint of a different model?)",
        param.len(),
        state_len
    );
}
