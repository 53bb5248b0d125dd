//! The seam between a network and everything that trains, evaluates,
//! probes, freezes or loads it.
//!
//! The trainer, evaluation, the probes, freezing and weight import see a
//! network only through [`Model`], so a new architecture is a new
//! implementation of this trait, not a copy of the code above it.

use crate::checkpoint::{self, CheckpointError, LoadReport, TensorFile};
use crate::layers::BatchNorm;
use crate::ModelError;
use autograd::{Graph, ParamStore, Var};
use std::path::Path;

/// What one forward pass produced. Other layers' outputs are read by their
/// Keras names from the graph ([`Graph::tapped`]): all of them when the
/// graph keeps layer outputs ([`autograd::Mode::PROBE`]) or records.
pub struct ModelOutput {
    /// Pooled features `[N, C]` (Keras's `avg_pool`).
    pub features: Var,
    /// Head output before softmax `[N, classes]`, when there is a head.
    pub logits: Option<Var>,
}

/// A network whose parameters live in a [`ParamStore`] under Keras names.
pub trait Model: Send + Sync {
    /// Keras's name for the architecture: `resnet50`, `resnet101v2`, ...
    fn name(&self) -> String;

    /// Height and width of the square NHWC input images.
    fn input_size(&self) -> usize;

    /// Classes of the head, `None` without one (`include_top=False`).
    fn num_classes(&self) -> Option<usize>;

    /// Channels of the pooled features.
    fn feature_channels(&self) -> usize;

    /// Runs the network on the NHWC batch `x`, each Keras layer's output
    /// tapped in `g` under the layer's name. How it runs follows `g`'s mode:
    /// with `layer_outputs` every layer is its own op and every output stays
    /// readable (the probes); otherwise layers fuse where they can, and
    /// without a tape `x` and every value other than `features` and
    /// `logits` are freed as soon as they have been used.
    fn forward(&self, g: &mut Graph, x: Var) -> Result<ModelOutput, ModelError>;

    /// Number of freezable stages: the stem is stage 1, then `conv2` ...
    fn num_stages(&self) -> usize;

    /// The stage (1-based, the stem is 1) a parameter belongs to, or `None`
    /// for the head: what `--freeze N` and `--freeze base` go by.
    fn stage_of(&self, param: &str) -> Option<usize>;

    /// The batchnorm epsilon all of this network's batchnorms share.
    fn bn_epsilon(&self) -> f32;

    /// Every batchnorm of the network, in the order it runs them: what a
    /// caller checks their settings (momentum, epsilon) on.
    fn batch_norms(&self) -> Vec<&BatchNorm>;

    /// Sets every batchnorm's epsilon: weights trained with another one
    /// (the caffe-named Keras release used 1e-3) need theirs to compute the
    /// same function.
    fn set_bn_epsilon(&mut self, epsilon: f32);

    /// Checks that `shape` is a batch this model accepts.
    fn check_input(&self, shape: &[usize]) -> Result<(), ModelError> {
        let size = self.input_size();
        match shape {
            [n, h, w, 3] if *n > 0 && *h == size && *w == size => Ok(()),
            _ => Err(ModelError::Input {
                got: shape.to_vec(),
                size,
            }),
        }
    }

    /// Loads Keras-named weights by name from safetensors or a Keras `.h5`
    /// file (see [`checkpoint::load`]) and adopts the batchnorm epsilon the
    /// file declares or implies, if any.
    fn load_weights(
        &mut self,
        store: &mut ParamStore,
        path: &Path,
        optional_prefixes: &[&str],
    ) -> Result<LoadReport, CheckpointError> {
        self.load_weights_from(store, TensorFile::read(path)?, optional_prefixes)
    }

    /// [`Model::load_weights`] from a file already read.
    fn load_weights_from(
        &mut self,
        store: &mut ParamStore,
        file: TensorFile,
        optional_prefixes: &[&str],
    ) -> Result<LoadReport, CheckpointError> {
        let path = file.path.clone();
        let report = checkpoint::load_from(store, file, optional_prefixes)?;
        if let Some(eps) = report.bn_epsilon(&path)? {
            self.set_bn_epsilon(eps);
        }
        Ok(report)
    }
}
