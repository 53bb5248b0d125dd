//! Layers, residual blocks and Keras-exact ResNets (50, 101 and 152, V1 and
//! V2) over `autograd`.
//!
//! Every parameter is stored under its Keras name (`conv1_conv/kernel`,
//! `conv2_block1_0_bn/moving_mean`, `predictions/bias`), so weights converted
//! from Keras load by name, and checkpoints written here load back into Keras.

pub mod atomic_write;
pub mod blocks;
pub mod blocks_v2;
pub mod conv_bn;
pub mod freeze;
pub mod init;
pub mod layers;
pub mod model;
pub mod resnet;
pub mod resnet_v2;
pub mod weights_io;

pub use blocks::Bottleneck;
pub use blocks_v2::PreActBottleneck;
pub use model::{Model, ModelOutput};
pub use resnet::{ModelError, ResNet, ResNetConfig};
pub use resnet_v2::ResNetV2;

use autograd::{Graph, ParamId, ParamKind, ParamStore, Var};
use layers::VarianceUpdate;
use rand::rngs::StdRng;
use rand::SeedableRng;
use tensor::Tensor;

/// What layer constructors need while a model is built: the store their
/// parameters go into and the seeded generator of the initializers.
pub struct BuildCtx {
    pub store: ParamStore,
    pub rng: StdRng,
    pub variance_update: VarianceUpdate,
}

impl BuildCtx {
    pub fn new(seed: u64, variance_update: VarianceUpdate) -> Self {
        BuildCtx {
            store: ParamStore::new(),
            rng: StdRng::seed_from_u64(seed),
            variance_update,
        }
    }

    /// Adds a parameter; a duplicate name is a bug in the builder.
    pub fn add(&mut self, name: &str, value: Tensor, kind: ParamKind) -> ParamId {
        self.store
            .add(name, value, kind)
            .unwrap_or_else(|e| panic!("model builder: {e}"))
    }
}

/// The outputs of a forward pass by Keras layer name, in the order they ran.
///
/// In inference, intermediate values are freed as soon as the next layer has
/// used them (so a batch of 256 needs a few activations' worth of memory,
/// not the whole network's), and a recorded name may refer to a released
/// value; set `keep_all` to keep every layer output readable (the probes).
#[derive(Default)]
pub struct Taps {
    entries: Vec<(String, Var)>,
    pub keep_all: bool,
}

impl Taps {
    /// Taps that keep every layer's output.
    pub fn keeping_all() -> Self {
        Taps {
            entries: Vec::new(),
            keep_all: true,
        }
    }

    /// Batchnorm `bn` on `x` then a ReLU recorded as `relu_name`, as the two
    /// Keras layers, both recorded (the layer-by-layer pass of
    /// `forward_keeping_all`; the usual pass fuses them, see `conv_bn`).
    pub fn bn_relu(
        &mut self,
        g: &mut Graph,
        bn: &layers::BatchNorm,
        x: Var,
        relu_name: &str,
    ) -> Var {
        let b = self.record(&bn.name, bn.forward(g, x));
        let y = autograd::ops::relu(g, b);
        self.record(relu_name, y)
    }

    /// Declares `v` no longer needed by the forward pass (see [`Graph::release`]).
    pub fn release(&self, g: &mut Graph, v: Var) {
        if !self.keep_all {
            g.release(v);
        }
    }

    /// Records `v` as the output of layer `name` and passes it on.
    pub fn record(&mut self, name: &str, v: Var) -> Var {
        self.entries.push((name.to_string(), v));
        v
    }

    pub fn get(&self, name: &str) -> Option<Var> {
        self.entries
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| *v)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(n, _)| n.as_str())
    }
}
