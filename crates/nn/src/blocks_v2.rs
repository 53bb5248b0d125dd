//! The pre-activation bottleneck of ResNet V2 (He, Zhang, Ren, Sun,
//! *Identity Mappings in Deep Residual Networks*, 2016), exactly as Keras's
//! `resnet.residual_block_v2` (tf_keras: `block2`) builds it:
//!
//! ```text
//! x ─┬─ BN ─ ReLU ─┬─ 1x1 ─ BN ─ ReLU ─ pad 1 ─ 3x3/s ─ BN ─ ReLU ─ 1x1 ─┐
//!    │  (preact)   └─ 1x1 projection (first block of a stage) ──────────(+)─ out
//!    └─ identity, or a 1x1/s max pool when the block strides ────────────┘
//! ```
//!
//! Against the V1 block ([`crate::Bottleneck`]) the batchnorm and ReLU move
//! *before* the convolutions, and nothing follows the add: the block's
//! output is `x + F(x)` and the path from input to output is the identity.
//! Keras's details, all kept here:
//! - the shortcut of a stage's first block is a 1x1 conv (with bias, no
//!   batchnorm) on the *pre-activated* input; every other block adds its
//!   raw input `x`, subsampled by a 1x1 max pool of stride `s` when the
//!   block strides;
//! - the stride sits on the 3x3 conv of the stage's *last* block, after an
//!   explicit 1-pixel zero padding (`_2_pad`, symmetric, unlike TF 'same');
//! - `_1_conv` and `_2_conv` have no bias (a batchnorm follows), `_3_conv`
//!   and `_0_conv` have one (nothing follows them but the add).

use crate::layers::{BatchNorm, BnRelu, Conv2d, ConvBn, MaxPool, PaddingMode, ZeroPadding};
use crate::BuildCtx;
use autograd::{ops, Graph, Var};
use tensor::Padding;

/// What a pre-activation block adds its residual to.
#[derive(Clone, Debug)]
pub enum PreActShortcut {
    /// `<name>_0_conv`: 1x1 conv on the pre-activated input (first block of
    /// a stage, where the width changes).
    Projection(Conv2d),
    /// A 1x1 max pool of stride `s` on the raw input: the striding block's
    /// subsampled identity. (Keras leaves this layer unnamed, so it gets an
    /// automatic `max_pooling2d_N`; here it is `<name>_0_pool`.)
    Subsample(MaxPool),
    /// The raw input itself.
    Identity,
}

#[derive(Clone, Debug)]
pub struct PreActBottleneck {
    /// Keras block name, e.g. `conv3_block4`.
    pub name: String,
    /// `<name>_preact_bn`, then the ReLU `<name>_preact_relu`.
    pub preact: BnRelu,
    pub shortcut: PreActShortcut,
    /// `<name>_1_conv` (1x1, no bias), `<name>_1_bn`, `<name>_1_relu`.
    pub reduce: ConvBn,
    /// `<name>_2_pad`: 1 pixel of zeros on each side.
    pub pad: ZeroPadding,
    /// `<name>_2_conv` (3x3 'valid', stride `s`, no bias), `<name>_2_bn`,
    /// `<name>_2_relu`.
    pub spatial: ConvBn,
    /// `<name>_3_conv`: 1x1 to `4 * filters`, with bias; its output is added
    /// to the shortcut as `<name>_out`.
    pub expand: Conv2d,
}

impl PreActBottleneck {
    /// A block of `filters` bottleneck channels on a `cin`-channel input,
    /// outputting `4 * filters` channels. `projection` gives it the `_0_conv`
    /// shortcut (Keras's `conv_shortcut=True`); `stride` > 1 subsamples.
    pub fn new(
        ctx: &mut BuildCtx,
        name: &str,
        cin: usize,
        filters: usize,
        stride: usize,
        projection: bool,
    ) -> Self {
        let n = |suffix: &str| format!("{name}_{suffix}");
        let preact = BnRelu {
            bn: BatchNorm::new(ctx, &n("preact_bn"), cin),
            relu: n("preact_relu"),
        };
        let shortcut = if projection {
            // Keras's `_0_conv` has the block's stride; its stacks only ever
            // project in a stage's first block, which has stride 1.
            PreActShortcut::Projection(Conv2d::new(
                ctx,
                &n("0_conv"),
                cin,
                4 * filters,
                1,
                stride,
                PaddingMode::Valid,
            ))
        } else if stride > 1 {
            PreActShortcut::Subsample(MaxPool {
                name: n("0_pool"),
                kernel: 1,
                stride,
            })
        } else {
            PreActShortcut::Identity
        };
        let valid = PaddingMode::Valid;
        let reduce = ConvBn::new(
            Conv2d::with_bias(ctx, &n("1_conv"), cin, filters, 1, 1, valid, false),
            BatchNorm::new(ctx, &n("1_bn"), filters),
        )
        .then_relu(&n("1_relu"));
        let pad = ZeroPadding {
            name: n("2_pad"),
            padding: Padding::uniform(1),
        };
        let spatial = ConvBn::new(
            Conv2d::with_bias(ctx, &n("2_conv"), filters, filters, 3, stride, valid, false),
            BatchNorm::new(ctx, &n("2_bn"), filters),
        )
        .then_relu(&n("2_relu"));
        let expand = Conv2d::new(ctx, &n("3_conv"), filters, 4 * filters, 1, 1, valid);
        PreActBottleneck {
            name: name.into(),
            preact,
            shortcut,
            reduce,
            pad,
            spatial,
            expand,
        }
    }

    /// Every batchnorm of the block.
    pub fn batch_norms(&self) -> [&BatchNorm; 3] {
        [&self.preact.bn, &self.reduce.bn, &self.spatial.bn]
    }

    /// [`PreActBottleneck::batch_norms`], mutable.
    pub fn batch_norms_mut(&mut self) -> [&mut BatchNorm; 3] {
        [
            &mut self.preact.bn,
            &mut self.reduce.bn,
            &mut self.spatial.bn,
        ]
    }

    /// The block in Keras's order. Each batchnorm unit runs fused or layer
    /// by layer as the graph's mode says (see [`crate::layers::conv_bn`]);
    /// nothing here frees anything: the caller runs the block as a
    /// [`Graph::stage`].
    pub fn forward(&self, g: &mut Graph, x: Var) -> Var {
        let preact = self.preact.forward(g, x); // _preact_bn, _preact_relu
        let shortcut = match &self.shortcut {
            PreActShortcut::Projection(conv) => conv.forward(g, preact), // _0_conv
            PreActShortcut::Subsample(pool) => pool.forward(g, x),       // _0_pool
            PreActShortcut::Identity => x,
        };
        let y = self.reduce.forward(g, preact, None); // _1_conv, _1_bn, _1_relu

        // _2_pad stays a layer: its padding is symmetric, which the conv's
        // TF-'same' mode is not at stride 2 on an even size.
        let y = self.pad.forward(g, y);
        let y = self.spatial.forward(g, y, None); // _2_conv, _2_bn, _2_relu
        let y = self.expand.forward(g, y); // _3_conv
        let out = ops::add(g, shortcut, y);
        g.tap(&format!("{}_out", self.name), out)
    }
}
