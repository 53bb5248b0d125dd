//! ResNet50 exactly as `keras.applications.ResNet50` builds it, layer for
//! layer and name for name, plus an optional classification head.
//!
//! ```text
//! conv1_pad   ZeroPadding 3            32x32x3  -> 38x38x3
//! conv1_conv  7x7 stride 2 'valid'              -> 16x16x64   (+ conv1_bn, conv1_relu)
//! pool1_pad   ZeroPadding 1                     -> 18x18x64
//! pool1_pool  max 3x3 stride 2 'valid'          -> 8x8x64
//! conv2_*     3 blocks, 64 filters,  stride 1   -> 8x8x256
//! conv3_*     4 blocks, 128 filters, stride 2   -> 4x4x512
//! conv4_*     6 blocks, 256 filters, stride 2   -> 2x2x1024
//! conv5_*     3 blocks, 512 filters, stride 2   -> 1x1x2048
//! avg_pool    global average                    -> 2048
//! predictions dense                             -> num_classes (softmax in the loss)
//! ```
//!
//! The depths and widths are parameters so tests can build a narrow, shallow
//! network with the same topology and naming.

use crate::blocks::Bottleneck;
use crate::layers::batch_norm::KERAS_MOMENTUM;
use crate::layers::{
    BatchNorm, Conv2d, ConvBn, Dense, GlobalAvgPool, MaxPool, PaddingMode, VarianceUpdate,
    ZeroPadding,
};
use crate::model::{Model, ModelOutput};
use crate::BuildCtx;
use autograd::{Graph, ParamStore, Var};
use tensor::Padding;
use thiserror::Error;

#[derive(Clone, Debug, PartialEq)]
pub struct ResNetConfig {
    /// Height and width of the input images (at least 32, as in Keras).
    pub input_size: usize,
    pub stem_filters: usize,
    /// Blocks per stage (ResNet50: `[3, 4, 6, 3]`).
    pub depths: Vec<usize>,
    /// Bottleneck width per stage; each stage outputs `4 * width` channels.
    pub widths: Vec<usize>,
    /// Classes of the dense head; `None` builds the base only (`include_top=False`).
    pub num_classes: Option<usize>,
    pub variance_update: VarianceUpdate,
    /// Every batchnorm's Keras `momentum` (in `[0, 1)`; Keras's default
    /// [`KERAS_MOMENTUM`], 0.99): how much of the moving statistics each
    /// training step keeps. Lower forgets early batches faster, which a
    /// short from-scratch run needs for its inference statistics to catch
    /// up with its weights.
    pub bn_momentum: f32,
    /// Seed of the initializers.
    pub seed: u64,
}

impl ResNetConfig {
    /// Keras ResNet50 at 32x32 with an optional head.
    pub fn resnet50(num_classes: Option<usize>) -> Self {
        ResNetConfig {
            input_size: 32,
            stem_filters: 64,
            depths: vec![3, 4, 6, 3],
            widths: vec![64, 128, 256, 512],
            num_classes,
            variance_update: VarianceUpdate::Biased,
            bn_momentum: KERAS_MOMENTUM,
            seed: 0,
        }
    }

    /// Keras ResNet101 (`[3, 4, 23, 3]` blocks) at 32x32.
    pub fn resnet101(num_classes: Option<usize>) -> Self {
        Self::with_depths(&[3, 4, 23, 3], num_classes)
    }

    /// Keras ResNet152 (`[3, 8, 36, 3]` blocks) at 32x32.
    pub fn resnet152(num_classes: Option<usize>) -> Self {
        Self::with_depths(&[3, 8, 36, 3], num_classes)
    }

    /// ResNet50's widths and stem with other blocks per stage: the depths
    /// are all that tells Keras's ResNet50, 101 and 152 apart (and their V2
    /// counterparts, built from the same configurations by
    /// [`crate::ResNetV2::new`]).
    pub fn with_depths(depths: &[usize], num_classes: Option<usize>) -> Self {
        ResNetConfig {
            depths: depths.to_vec(),
            ..Self::resnet50(num_classes)
        }
    }

    /// Checks what every ResNet builder needs of a configuration.
    pub fn validate(&self) -> Result<(), ModelError> {
        if self.input_size < 32 {
            return Err(ModelError::Config(format!(
                "input size {} is below Keras's minimum of 32",
                self.input_size
            )));
        }
        if self.depths.len() != self.widths.len() || self.depths.is_empty() || self.depths.len() > 4
        {
            return Err(ModelError::Config(format!(
                "depths {:?} and widths {:?} must name the same 1 to 4 stages",
                self.depths, self.widths
            )));
        }
        if self.depths.contains(&0) || self.widths.contains(&0) || self.stem_filters == 0 {
            return Err(ModelError::Config(
                "depths, widths and stem filters must be positive".into(),
            ));
        }
        if !(0.0..1.0).contains(&self.bn_momentum) {
            return Err(ModelError::Config(format!(
                "batchnorm momentum {} must be in [0, 1)",
                self.bn_momentum
            )));
        }
        Ok(())
    }

    /// Channels of the final feature map.
    pub fn feature_channels(&self) -> usize {
        4 * self.widths.last().copied().unwrap_or(self.stem_filters / 4)
    }

    /// Freezable stages: the stem, then one per entry of `depths`.
    pub fn num_stages(&self) -> usize {
        1 + self.depths.len()
    }

    /// Keras's name for a ResNet of these depths, `resnet50`, `resnet101`
    /// or `resnet152` followed by `suffix` (`v2`), else one naming the depths.
    pub(crate) fn keras_name(&self, suffix: &str) -> String {
        match self.depths.as_slice() {
            [3, 4, 6, 3] => format!("resnet50{suffix}"),
            [3, 4, 23, 3] => format!("resnet101{suffix}"),
            [3, 8, 36, 3] => format!("resnet152{suffix}"),
            d => format!("resnet{d:?}{suffix}"),
        }
    }
}

#[derive(Debug, Error, PartialEq)]
pub enum ModelError {
    #[error("invalid ResNet configuration: {0}")]
    Config(String),
    #[error("input batch has shape {got:?}; the model expects [N, {size}, {size}, 3] (NHWC)")]
    Input { got: Vec<usize>, size: usize },
}

/// The stage Keras's layer naming puts `param` in: `N` for `convN_*`
/// (`conv1_*` is the stem, 1), `None` for anything else.
pub(crate) fn keras_stage(param: &str) -> Option<usize> {
    let rest = param.strip_prefix("conv")?;
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    rest[digits.len()..].starts_with('_').then_some(())?;
    digits.parse().ok()
}

/// `conv1_pad`: the 3 pixels of zeros around the input before `conv1_conv`
/// (V1 and V2 alike).
pub(crate) fn conv1_pad() -> ZeroPadding {
    ZeroPadding {
        name: "conv1_pad".into(),
        padding: Padding::uniform(3),
    }
}

/// `conv1_conv`: Keras's 7x7 stride-2 'valid' stem conv (V1 and V2 alike).
pub(crate) fn conv1_conv(ctx: &mut BuildCtx, filters: usize) -> Conv2d {
    Conv2d::new(ctx, "conv1_conv", 3, filters, 7, 2, PaddingMode::Valid)
}

/// `pool1_pad` and `pool1_pool`, the stem's 3x3 stride-2 max pool over one
/// pixel of zeros (V1 and V2 alike).
pub(crate) fn pool1() -> (ZeroPadding, MaxPool) {
    let pad = ZeroPadding {
        name: "pool1_pad".into(),
        padding: Padding::uniform(1),
    };
    let pool = MaxPool {
        name: "pool1_pool".into(),
        kernel: 3,
        stride: 2,
    };
    (pad, pool)
}

/// The top every ResNet ends with: `avg_pool` as a stage, then the optional
/// `predictions` head.
pub(crate) fn pool_and_head(
    g: &mut Graph,
    y: Var,
    avg_pool: &GlobalAvgPool,
    head: Option<&Dense>,
) -> ModelOutput {
    let features = g.stage(y, |g, y| avg_pool.forward(g, y));
    let logits = head.map(|head| head.forward(g, features));
    ModelOutput { features, logits }
}

/// The stem: `conv1_pad` -> `conv1_conv` -> `conv1_bn` -> `conv1_relu` ->
/// `pool1_pad` -> `pool1_pool`.
#[derive(Clone, Debug)]
pub struct Stem {
    pub pad: ZeroPadding,
    /// `conv1_conv`, `conv1_bn`, `conv1_relu`.
    pub conv1: ConvBn,
    pub pool_pad: ZeroPadding,
    pub pool: MaxPool,
}

impl Stem {
    pub fn forward(&self, g: &mut Graph, x: Var) -> Var {
        // conv1_pad stays a layer in every mode: a padded copy of the
        // 3-channel input is cheap, and conv1's im2col runs faster on it
        // than on per-tap padding.
        let padded = self.pad.forward(g, x);
        let y = self.conv1.forward(g, padded, None);
        if g.mode().layer_outputs {
            let padded = self.pool_pad.forward(g, y);
            self.pool.forward(g, padded)
        } else {
            // pool1_pad folded into the pool: the same function on a ReLU's
            // output (see `MaxPool::forward_after_zero_padding`), without
            // the padded copy.
            self.pool
                .forward_after_zero_padding(g, y, self.pool_pad.padding)
        }
    }
}

#[derive(Clone, Debug)]
pub struct ResNet {
    pub config: ResNetConfig,
    pub stem: Stem,
    pub blocks: Vec<Bottleneck>,
    pub avg_pool: GlobalAvgPool,
    pub head: Option<Dense>,
}

impl ResNet {
    /// Builds the network and a store holding its freshly initialized parameters.
    pub fn new(config: ResNetConfig) -> Result<(ResNet, ParamStore), ModelError> {
        config.validate()?;
        let mut ctx = BuildCtx::new(config.seed, config.variance_update, config.bn_momentum);
        let (pool_pad, pool) = pool1();
        let stem = Stem {
            pad: conv1_pad(),
            conv1: ConvBn::new(
                conv1_conv(&mut ctx, config.stem_filters),
                BatchNorm::new(&mut ctx, "conv1_bn", config.stem_filters),
            )
            .then_relu("conv1_relu"),
            pool_pad,
            pool,
        };
        let mut blocks = Vec::new();
        let mut cin = config.stem_filters;
        for (s, (&depth, &width)) in config.depths.iter().zip(&config.widths).enumerate() {
            let stage = format!("conv{}", s + 2);
            let stride = if s == 0 { 1 } else { 2 };
            blocks.push(Bottleneck::conv_block(
                &mut ctx,
                &format!("{stage}_block1"),
                cin,
                width,
                stride,
            ));
            for b in 2..=depth {
                blocks.push(Bottleneck::identity_block(
                    &mut ctx,
                    &format!("{stage}_block{b}"),
                    width,
                ));
            }
            cin = 4 * width;
        }
        let head = config
            .num_classes
            .map(|k| Dense::new(&mut ctx, "predictions", cin, k));
        let model = ResNet {
            config,
            stem,
            blocks,
            avg_pool: GlobalAvgPool {
                name: "avg_pool".into(),
            },
            head,
        };
        Ok((model, ctx.store))
    }

    /// Every batchnorm of the network, stem first.
    fn batch_norms_mut(&mut self) -> impl Iterator<Item = &mut BatchNorm> {
        let blocks = self.blocks.iter_mut().flat_map(Bottleneck::batch_norms_mut);
        std::iter::once(&mut self.stem.conv1.bn).chain(blocks)
    }
}

impl Model for ResNet {
    fn name(&self) -> String {
        self.config.keras_name("")
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

    /// The stem, the blocks, the pool and the head, in Keras's order. The
    /// stem and each block are stages: without a tape each frees its input
    /// and its intermediates when it ends (see [`Graph::stage`]).
    fn forward(&self, g: &mut Graph, x: Var) -> Result<ModelOutput, ModelError> {
        self.check_input(g.value(x).shape())?;
        let mut y = g.stage(x, |g, x| self.stem.forward(g, x));
        for block in &self.blocks {
            y = g.stage(y, |g, y| block.forward(g, y));
        }
        Ok(pool_and_head(g, y, &self.avg_pool, self.head.as_ref()))
    }

    fn num_stages(&self) -> usize {
        self.config.num_stages()
    }

    /// `conv1_*` is the stem (1), `convN_*` stage N; the rest is the head.
    fn stage_of(&self, param: &str) -> Option<usize> {
        keras_stage(param)
    }

    fn bn_epsilon(&self) -> f32 {
        self.stem.conv1.bn.epsilon
    }

    fn set_bn_epsilon(&mut self, epsilon: f32) {
        self.batch_norms_mut().for_each(|bn| bn.epsilon = epsilon);
    }

    fn batch_norms(&self) -> Vec<&BatchNorm> {
        let blocks = self.blocks.iter().flat_map(Bottleneck::batch_norms);
        std::iter::once(&self.stem.conv1.bn).chain(blocks).collect()
    }
}
