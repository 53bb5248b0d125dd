//! The two residual blocks of ResNet50, exactly as Keras's `resnet.block1`
//! builds them. Both are bottlenecks: a 1x1 conv narrows the channels to
//! `filters`, a 3x3 conv works at that width, a 1x1 conv widens to
//! `4 * filters`, and the block input is added back before the last ReLU:
//!
//! ```text
//! x ─┬─ 1x1/s ─ BN ─ ReLU ─ 3x3 ─ BN ─ ReLU ─ 1x1 ─ BN ─┐
//!    └─ shortcut ───────────────────────────────────────(+)─ ReLU
//! ```
//!
//! `conv_block` (the first block of a stage) has a projection shortcut, a
//! strided 1x1 conv + BN, because the width (and, from stage 3 on, the
//! resolution) changes; Keras puts the stride on the *first* 1x1 conv of the
//! main path too (torchvision's 'v1.5' puts it on the 3x3 instead).
//! `identity_block` adds its input unchanged.

use crate::conv_bn::conv_bn;
use crate::layers::{BatchNorm, Conv2d, PaddingMode};
use crate::{BuildCtx, Taps};
use autograd::{ops, Graph, Var};

/// A `(conv, batchnorm)` pair as [`conv_bn`] takes it.
fn unit((conv, bn): &(Conv2d, BatchNorm)) -> (&Conv2d, &BatchNorm) {
    (conv, bn)
}

#[derive(Clone, Debug)]
pub struct Bottleneck {
    /// Keras block name, e.g. `conv3_block1`.
    pub name: String,
    /// `<name>_0_conv` and `<name>_0_bn`, in a `conv_block` only.
    pub shortcut: Option<(Conv2d, BatchNorm)>,
    /// `(<name>_i_conv, <name>_i_bn)` for i = 1, 2, 3.
    pub main: [(Conv2d, BatchNorm); 3],
}

impl Bottleneck {
    /// The first block of a stage: projection shortcut, stride on the first 1x1.
    pub fn conv_block(
        ctx: &mut BuildCtx,
        name: &str,
        cin: usize,
        filters: usize,
        stride: usize,
    ) -> Self {
        let shortcut = (
            Conv2d::new(
                ctx,
                &format!("{name}_0_conv"),
                cin,
                4 * filters,
                1,
                stride,
                PaddingMode::Valid,
            ),
            BatchNorm::new(ctx, &format!("{name}_0_bn"), 4 * filters),
        );
        let main = Self::main_path(ctx, name, cin, filters, stride);
        Bottleneck {
            name: name.into(),
            shortcut: Some(shortcut),
            main,
        }
    }

    /// A later block of a stage: identity shortcut, input already `4 * filters` wide.
    pub fn identity_block(ctx: &mut BuildCtx, name: &str, filters: usize) -> Self {
        let main = Self::main_path(ctx, name, 4 * filters, filters, 1);
        Bottleneck {
            name: name.into(),
            shortcut: None,
            main,
        }
    }

    fn main_path(
        ctx: &mut BuildCtx,
        name: &str,
        cin: usize,
        filters: usize,
        stride: usize,
    ) -> [(Conv2d, BatchNorm); 3] {
        let mut unit = |i: usize, cin: usize, cout: usize, k: usize, s: usize, p: PaddingMode| {
            (
                Conv2d::new(ctx, &format!("{name}_{i}_conv"), cin, cout, k, s, p),
                BatchNorm::new(ctx, &format!("{name}_{i}_bn"), cout),
            )
        };
        [
            unit(1, cin, filters, 1, stride, PaddingMode::Valid),
            unit(2, filters, filters, 3, 1, PaddingMode::Same),
            unit(3, filters, 4 * filters, 1, 1, PaddingMode::Valid),
        ]
    }

    /// Runs the block and records its output (`<name>_out`) in `taps`, each
    /// conv + batchnorm (+ add) (+ ReLU) unit as one [`conv_bn`] (fused in
    /// inference). With `taps.keep_all`, runs it layer by layer instead so
    /// that every Keras layer output is recorded.
    pub fn forward(&self, g: &mut Graph, x: Var, taps: &mut Taps) -> Var {
        if taps.keep_all {
            return self.forward_layer_by_layer(g, x, taps);
        }
        let shortcut = match &self.shortcut {
            Some(u) => conv_bn(g, unit(u), x, None, false),
            None => x,
        };
        let [u1, u2, u3] = &self.main;
        let y1 = conv_bn(g, unit(u1), x, None, true);
        let y2 = conv_bn(g, unit(u2), y1, None, true);
        g.release(y1);
        let out = conv_bn(g, unit(u3), y2, Some(shortcut), true);
        for v in [y2, shortcut, x] {
            g.release(v);
        }
        taps.record(&format!("{}_out", self.name), out)
    }

    /// [`Bottleneck::forward`] one Keras layer at a time, recording (and
    /// keeping) every layer output in `taps`.
    fn forward_layer_by_layer(&self, g: &mut Graph, x: Var, taps: &mut Taps) -> Var {
        let shortcut = match &self.shortcut {
            Some((conv, bn)) => {
                let s = taps.record(&conv.name, conv.forward(g, x));
                taps.record(&bn.name, bn.forward(g, s))
            }
            None => x,
        };
        let mut y = x;
        for (i, (conv, bn)) in self.main.iter().enumerate() {
            let c = taps.record(&conv.name, conv.forward(g, y));
            y = if i < 2 {
                taps.bn_relu(g, bn, c, &format!("{}_{}_relu", self.name, i + 1))
            } else {
                taps.record(&bn.name, bn.forward(g, c))
            };
        }
        let sum = taps.record(&format!("{}_add", self.name), ops::add(g, shortcut, y));
        taps.record(&format!("{}_out", self.name), ops::relu(g, sum))
    }
}
