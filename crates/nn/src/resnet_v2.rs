//! ResNet50V2, 101V2 and 152V2 exactly as `keras.applications` builds them
//! (`resnet_v2.py` over `resnet.ResNet(preact=True)`), layer for layer and
//! name for name, plus an optional classification head.
//!
//! ```text
//! conv1_pad   ZeroPadding 3            32x32x3  -> 38x38x3
//! conv1_conv  7x7 stride 2 'valid'              -> 16x16x64   (no BN, no ReLU)
//! pool1_pad   ZeroPadding 1                     -> 18x18x64
//! pool1_pool  max 3x3 stride 2 'valid'          -> 8x8x64
//! conv2_*     3 blocks, 64 filters,  last stride 2 -> 4x4x256
//! conv3_*     4 blocks, 128 filters, last stride 2 -> 2x2x512   (101: 4, 152: 8)
//! conv4_*     6 blocks, 256 filters, last stride 2 -> 1x1x1024  (101: 23, 152: 36)
//! conv5_*     3 blocks, 512 filters, stride 1      -> 1x1x2048
//! post_bn     batchnorm, then post_relu            -> 1x1x2048
//! avg_pool    global average                       -> 2048
//! predictions dense                                -> num_classes (softmax in the loss)
//! ```
//!
//! Against V1 ([`crate::ResNet`]): the stem has no batchnorm or ReLU (each
//! block normalizes its own input first), so `pool1_pool` max-pools signed
//! values and its zero padding is real; every stage but the last strides in
//! its *last* block instead of its first; and since a pre-activation block
//! ends with a bare add, one `post_bn` + `post_relu` closes the network.
//! The configuration is V1's [`ResNetConfig`]: the V2 models have the same
//! stem, widths and depths.

use crate::blocks_v2::PreActBottleneck;
use crate::layers::{BatchNorm, BnRelu, Conv2d, Dense, GlobalAvgPool, MaxPool, ZeroPadding};
use crate::model::{Model, ModelOutput};
use crate::resnet::{conv1_conv, conv1_pad, keras_stage, pool1, pool_and_head};
use crate::{BuildCtx, ModelError, ResNetConfig};
use autograd::{Graph, ParamStore, Var};

/// The V2 stem: `conv1_pad` -> `conv1_conv` -> `pool1_pad` -> `pool1_pool`.
#[derive(Clone, Debug)]
pub struct StemV2 {
    pub pad: ZeroPadding,
    pub conv: Conv2d,
    pub pool_pad: ZeroPadding,
    pub pool: MaxPool,
}

impl StemV2 {
    /// Every layer in every mode: no ReLU precedes `pool1_pool` here, its
    /// input can be negative, so its zero padding is real (a pad can win a
    /// window) and cannot be folded into the pool as V1's stem does.
    pub fn forward(&self, g: &mut Graph, x: Var) -> Var {
        let y = self.pad.forward(g, x);
        let y = self.conv.forward(g, y);
        let y = self.pool_pad.forward(g, y);
        self.pool.forward(g, y)
    }
}

#[derive(Clone, Debug)]
pub struct ResNetV2 {
    pub config: ResNetConfig,
    pub stem: StemV2,
    pub blocks: Vec<PreActBottleneck>,
    /// `post_bn`, then the ReLU `post_relu`.
    pub post: BnRelu,
    pub avg_pool: GlobalAvgPool,
    pub head: Option<Dense>,
}

impl ResNetV2 {
    /// Builds the network and a store holding its freshly initialized parameters.
    pub fn new(config: ResNetConfig) -> Result<(ResNetV2, ParamStore), ModelError> {
        config.validate()?;
        if config.depths.contains(&1) {
            // Keras's stack_residual_blocks_v2 builds a stage's first and
            // last block separately: a one-block stage would be two blocks
            // named `_block1`, which Keras rejects.
            return Err(ModelError::Config(format!(
                "depths {:?}: a ResNet V2 stage needs at least 2 blocks",
                config.depths
            )));
        }
        let mut ctx = BuildCtx::new(config.seed, config.variance_update, config.bn_momentum);
        let (pool_pad, pool) = pool1();
        let stem = StemV2 {
            pad: conv1_pad(),
            conv: conv1_conv(&mut ctx, config.stem_filters),
            pool_pad,
            pool,
        };
        let mut blocks = Vec::new();
        let mut cin = config.stem_filters;
        let stages = config.depths.len();
        for (s, (&depth, &width)) in config.depths.iter().zip(&config.widths).enumerate() {
            let stage = format!("conv{}", s + 2);
            // Keras: stride1=2 for conv2..conv4, 1 for conv5 (the last stage).
            let last_stride = if s + 1 == stages { 1 } else { 2 };
            for b in 1..=depth {
                let stride = if b == depth { last_stride } else { 1 };
                let name = format!("{stage}_block{b}");
                blocks.push(PreActBottleneck::new(
                    &mut ctx,
                    &name,
                    cin,
                    width,
                    stride,
                    b == 1,
                ));
                cin = 4 * width;
            }
        }
        let post = BnRelu {
            bn: BatchNorm::new(&mut ctx, "post_bn", cin),
            relu: "post_relu".into(),
        };
        let head = config
            .num_classes
            .map(|k| Dense::new(&mut ctx, "predictions", cin, k));
        let model = ResNetV2 {
            config,
            stem,
            blocks,
            post,
            avg_pool: GlobalAvgPool {
                name: "avg_pool".into(),
            },
            head,
        };
        Ok((model, ctx.store))
    }
}

impl Model for ResNetV2 {
    fn name(&self) -> String {
        self.config.keras_name("v2")
    }

    fn input_size(&self) -> usize {
        self.config.input_size
    }

    fn num_classes(&self) -> Option<usize> {
        self.config.num_classes
    }

    fn feature_channels(&self) -> usize {
        self.config.feature_channels()
    }

    /// The stem, the blocks, `post_bn` + `post_relu`, the pool and the
    /// head, in Keras's order, each a stage (see [`Graph::stage`]).
    fn forward(&self, g: &mut Graph, x: Var) -> Result<ModelOutput, ModelError> {
        self.check_input(g.value(x).shape())?;
        let mut y = g.stage(x, |g, x| self.stem.forward(g, x));
        for block in &self.blocks {
            y = g.stage(y, |g, y| block.forward(g, y));
        }
        let y = g.stage(y, |g, y| self.post.forward(g, y));
        Ok(pool_and_head(g, y, &self.avg_pool, self.head.as_ref()))
    }

    fn num_stages(&self) -> usize {
        self.config.num_stages()
    }

    /// `conv1_*` is the stem (1), `convN_*` stage N, and `post_bn`, which
    /// normalizes the last stage's output, belongs to the last stage; the
    /// rest is the head.
    fn stage_of(&self, param: &str) -> Option<usize> {
        if param.starts_with("post_bn/") {
            return Some(self.num_stages());
        }
        keras_stage(param)
    }

    fn bn_epsilon(&self) -> f32 {
        self.post.bn.epsilon
    }

    fn batch_norms(&self) -> Vec<&BatchNorm> {
        let blocks = self.blocks.iter().flat_map(PreActBottleneck::batch_norms);
        blocks.chain(std::iter::once(&self.post.bn)).collect()
    }

    fn set_bn_epsilon(&mut self, epsilon: f32) {
        self.post.bn.epsilon = epsilon;
        for block in &mut self.blocks {
            for bn in block.batch_norms_mut() {
                bn.epsilon = epsilon;
            }
        }
    }
}
