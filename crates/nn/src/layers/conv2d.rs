//! Keras `Conv2D`: HWIO kernel, 'valid' or TensorFlow 'same' padding, with
//! or without a bias (`use_bias`). ResNet V1 gives every conv a bias;
//! ResNet V2 drops it from the convs a batchnorm follows (a bias there is
//! cancelled by the batchnorm's mean), keeping it on the shortcut and the
//! block's last conv, whose outputs are added without a batchnorm.

use crate::init::glorot_uniform;
use crate::BuildCtx;
use autograd::{ops, Graph, ParamId, ParamKind, Var};
use tensor::{Padding, Tensor};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PaddingMode {
    Valid,
    /// TensorFlow 'same': output `ceil(in / stride)`, odd pixel after.
    Same,
}

#[derive(Clone, Debug)]
pub struct Conv2d {
    pub name: String,
    pub kernel: ParamId,
    /// `<name>/bias`, absent for `use_bias=False`.
    pub bias: Option<ParamId>,
    pub kernel_size: usize,
    pub stride: usize,
    pub padding: PaddingMode,
}

impl Conv2d {
    /// Adds `<name>/kernel` `[k, k, cin, cout]` and `<name>/bias` `[cout]`.
    pub fn new(
        ctx: &mut BuildCtx,
        name: &str,
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
        padding: PaddingMode,
    ) -> Self {
        Self::with_bias(ctx, name, cin, cout, k, stride, padding, true)
    }

    /// Like [`Conv2d::new`]; `use_bias = false` adds only the kernel
    /// (Keras's `use_bias=False`).
    #[allow(clippy::too_many_arguments)]
    pub fn with_bias(
        ctx: &mut BuildCtx,
        name: &str,
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
        padding: PaddingMode,
        use_bias: bool,
    ) -> Self {
        let kernel = glorot_uniform(&[k, k, cin, cout], &mut ctx.rng);
        Conv2d {
            name: name.into(),
            kernel: ctx.add(&format!("{name}/kernel"), kernel, ParamKind::Weight),
            bias: use_bias.then(|| {
                ctx.add(
                    &format!("{name}/bias"),
                    Tensor::zeros(&[cout]),
                    ParamKind::Weight,
                )
            }),
            kernel_size: k,
            stride,
            padding,
        }
    }

    /// The Keras layer on its own, its output tapped under its name.
    pub fn forward(&self, g: &mut Graph, x: Var) -> Var {
        let a = self.args(g, x);
        let y = ops::conv2d(g, x, a.kernel, a.bias, a.stride, a.padding);
        g.tap(&self.name, y)
    }

    /// The parameters and geometry of applying this layer to `x`.
    pub fn args(&self, g: &mut Graph, x: Var) -> ops::ConvArgs {
        let padding = match self.padding {
            PaddingMode::Valid => Padding::ZERO,
            PaddingMode::Same => {
                let s = g.value(x).shape();
                Padding::same(s[1], s[2], self.kernel_size, self.kernel_size, self.stride)
            }
        };
        ops::ConvArgs {
            kernel: g.param(self.kernel),
            bias: self.bias.map(|b| g.param(b)),
            stride: self.stride,
            padding,
        }
    }
}
