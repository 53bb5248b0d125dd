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

use crate::conv_bn::conv_bn;
use crate::layers::{BatchNorm, Conv2d, MaxPool, PaddingMode, ZeroPadding};
use crate::{BuildCtx, Taps};
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
    /// `<name>_preact_bn`, followed by the ReLU `<name>_preact_relu`.
    pub preact_bn: BatchNorm,
    pub shortcut: PreActShortcut,
    /// `<name>_1_conv` (1x1, no bias) and `<name>_1_bn`, then `<name>_1_relu`.
    pub reduce: (Conv2d, BatchNorm),
    /// `<name>_2_pad`: 1 pixel of zeros on each side.
    pub pad: ZeroPadding,
    /// `<name>_2_conv` (3x3 'valid', stride `s`, no bias) and `<name>_2_bn`,
    /// then `<name>_2_relu`.
    pub spatial: (Conv2d, BatchNorm),
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
        let preact_bn = BatchNorm::new(ctx, &n("preact_bn"), cin);
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
        let reduce = (
            Conv2d::with_bias(ctx, &n("1_conv"), cin, filters, 1, 1, valid, false),
            BatchNorm::new(ctx, &n("1_bn"), filters),
        );
        let pad = ZeroPadding {
            name: n("2_pad"),
            padding: Padding::uniform(1),
        };
        let spatial = (
            Conv2d::with_bias(ctx, &n("2_conv"), filters, filters, 3, stride, valid, false),
            BatchNorm::new(ctx, &n("2_bn"), filters),
        );
        let expand = Conv2d::new(ctx, &n("3_conv"), filters, 4 * filters, 1, 1, valid);
        PreActBottleneck {
            name: name.into(),
            preact_bn,
            shortcut,
            reduce,
            pad,
            spatial,
            expand,
        }
    }

    /// Every batchnorm of the block.
    pub fn batch_norms_mut(&mut self) -> [&mut BatchNorm; 3] {
        [&mut self.preact_bn, &mut self.reduce.1, &mut self.spatial.1]
    }

    /// Runs the block and records its output (`<name>_out`) in `taps`, each
    /// conv + batchnorm + ReLU as one [`conv_bn`] (fused in inference). With
    /// `taps.keep_all`, runs it layer by layer so that every Keras layer
    /// output is recorded.
    pub fn forward(&self, g: &mut Graph, x: Var, taps: &mut Taps) -> Var {
        if taps.keep_all {
            return self.forward_layer_by_layer(g, x, taps);
        }
        let preact = self.preact_bn.forward_relu(g, x);
        let shortcut = match &self.shortcut {
            PreActShortcut::Projection(conv) => conv.forward(g, preact),
            PreActShortcut::Subsample(pool) => pool.forward(g, x),
            PreActShortcut::Identity => x,
        };
        let (c1, b1) = &self.reduce;
        let y1 = conv_bn(g, (c1, b1), preact, None, true);
        g.release(preact);
        // The padded copy is materialized, as Keras's `_2_pad` layer: the
        // padding is symmetric, which the conv's TF-'same' mode is not for
        // stride 2 on an even size.
        let p = self.pad.forward(g, y1);
        g.release(y1);
        let (c2, b2) = &self.spatial;
        let y2 = conv_bn(g, (c2, b2), p, None, true);
        g.release(p);
        let y3 = self.expand.forward(g, y2);
        g.release(y2);
        let out = ops::add(g, shortcut, y3);
        for v in [y3, shortcut, x] {
            g.release(v);
        }
        taps.record(&format!("{}_out", self.name), out)
    }

    /// [`PreActBottleneck::forward`] one Keras layer at a time, recording
    /// (and keeping) every layer output in `taps`.
    fn forward_layer_by_layer(&self, g: &mut Graph, x: Var, taps: &mut Taps) -> Var {
        let preact = taps.bn_relu(g, &self.preact_bn, x, &format!("{}_preact_relu", self.name));
        let shortcut = match &self.shortcut {
            PreActShortcut::Projection(conv) => taps.record(&conv.name, conv.forward(g, preact)),
            PreActShortcut::Subsample(pool) => taps.record(&pool.name, pool.forward(g, x)),
            PreActShortcut::Identity => x,
        };
        let (c1, b1) = &self.reduce;
        let y = taps.record(&c1.name, c1.forward(g, preact));
        let y = taps.bn_relu(g, b1, y, &format!("{}_1_relu", self.name));
        let y = taps.record(&self.pad.name, self.pad.forward(g, y));
        let (c2, b2) = &self.spatial;
        let y = taps.record(&c2.name, c2.forward(g, y));
        let y = taps.bn_relu(g, b2, y, &format!("{}_2_relu", self.name));
        let y = taps.record(&self.expand.name, self.expand.forward(g, y));
        taps.record(&format!("{}_out", self.name), ops::add(g, shortcut, y))
    }
}
