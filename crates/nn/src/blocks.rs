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

use crate::layers::{BatchNorm, Conv2d, ConvBn, PaddingMode};
use crate::BuildCtx;
use autograd::{Graph, Var};

#[derive(Clone, Debug)]
pub struct Bottleneck {
    /// Keras block name, e.g. `conv3_block1`.
    pub name: String,
    /// `<name>_0_conv` and `<name>_0_bn`, in a `conv_block` only.
    pub shortcut: Option<ConvBn>,
    /// `<name>_i_conv`, `<name>_i_bn` for i = 1, 2, 3; the first two end in
    /// `<name>_i_relu`, the third in `<name>_add` and `<name>_out` (the ReLU).
    pub main: [ConvBn; 3],
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
        let shortcut = ConvBn::new(
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
    ) -> [ConvBn; 3] {
        let mut unit = |i: usize, cin: usize, cout: usize, k: usize, s: usize, p: PaddingMode| {
            ConvBn::new(
                Conv2d::new(ctx, &format!("{name}_{i}_conv"), cin, cout, k, s, p),
                BatchNorm::new(ctx, &format!("{name}_{i}_bn"), cout),
            )
        };
        [
            unit(1, cin, filters, 1, stride, PaddingMode::Valid)
                .then_relu(&format!("{name}_1_relu")),
            unit(2, filters, filters, 3, 1, PaddingMode::Same).then_relu(&format!("{name}_2_relu")),
            unit(3, filters, 4 * filters, 1, 1, PaddingMode::Valid)
                .then_add(&format!("{name}_add"))
                .then_relu(&format!("{name}_out")),
        ]
    }

    /// The block in Keras's order. Each unit runs fused or layer by layer as
    /// the graph's mode says (see [`crate::layers::conv_bn`]); nothing here
    /// frees anything: the caller runs the block as a [`Graph::stage`].
    pub fn forward(&self, g: &mut Graph, x: Var) -> Var {
        let shortcut = match &self.shortcut {
            Some(projection) => projection.forward(g, x, None), // _0_conv, _0_bn
            None => x,
        };
        let [unit1, unit2, unit3] = &self.main;
        let y = unit1.forward(g, x, None); // _1_conv, _1_bn, _1_relu
        let y = unit2.forward(g, y, None); // _2_conv, _2_bn, _2_relu
        unit3.forward(g, y, Some(shortcut)) // _3_conv, _3_bn, _add, _out
    }

    /// The block's batchnorms, shortcut first.
    pub fn batch_norms(&self) -> impl Iterator<Item = &BatchNorm> {
        self.shortcut
            .iter()
            .chain(self.main.iter())
            .map(|unit| &unit.bn)
    }

    /// [`Bottleneck::batch_norms`], mutable.
    pub fn batch_norms_mut(&mut self) -> impl Iterator<Item = &mut BatchNorm> {
        let shortcut = self.shortcut.iter_mut();
        shortcut
            .chain(self.main.iter_mut())
            .map(|unit| &mut unit.bn)
    }
}
