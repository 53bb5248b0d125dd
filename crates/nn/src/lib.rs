//! Layers, residual blocks and Keras-exact ResNets (50, 101 and 152, V1 and
//! V2) over `autograd`.
//!
//! Every parameter is stored under its Keras name (`conv1_conv/kernel`,
//! `conv2_block1_0_bn/moving_mean`, `predictions/bias`), so weights converted
//! from Keras load by name, and checkpoints written here load back into Keras.

pub mod blocks;
pub mod blocks_v2;
pub mod checkpoint;
pub mod freeze;
pub mod init;
pub mod keras_h5;
pub mod layers;
pub mod model;
pub mod resnet;
pub mod resnet_v2;

pub use blocks::Bottleneck;
pub use blocks_v2::PreActBottleneck;
pub use model::{Model, ModelOutput};
pub use resnet::{ModelError, ResNet, ResNetConfig};
pub use resnet_v2::ResNetV2;

use autograd::{ParamId, ParamKind, ParamStore};
use layers::VarianceUpdate;
use rand::rngs::StdRng;
use rand::SeedableRng;
use tensor::Tensor;

/// What layer constructors need while a model is built: the store their
/// parameters go into, the seeded generator of the initializers, and the
/// batchnorms' moving-average settings.
pub struct BuildCtx {
    pub store: ParamStore,
    pub rng: StdRng,
    pub variance_update: VarianceUpdate,
    /// Every batchnorm's Keras `momentum`:
    /// `moving = momentum * moving + (1 - momentum) * batch`.
    pub bn_momentum: f32,
}

impl BuildCtx {
    pub fn new(seed: u64, variance_update: VarianceUpdate, bn_momentum: f32) -> Self {
        BuildCtx {
            store: ParamStore::new(),
            rng: StdRng::seed_from_u64(seed),
            variance_update,
            bn_momentum,
        }
    }

    /// Adds a parameter; a duplicate name is a bug in the builder.
    pub fn add(&mut self, name: &str, value: Tensor, kind: ParamKind) -> ParamId {
        self.store
            .add(name, value, kind)
            .unwrap_or_else(|e| panic!("model builder: {e}"))
    }
}
