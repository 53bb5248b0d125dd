//! Keras `Conv2D` (always with a bias in ResNet50): HWIO kernel, 'valid' or
//! TensorFlow 'same' padding.

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
    pub bias: ParamId,
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
        let kernel = glorot_uniform(&[k, k, cin, cout], &mut ctx.rng);
        Conv2d {
            name: name.into(),
            kernel: ctx.add(&format!("{name}/kernel"), kernel, ParamKind::Weight),
            bias: ctx.add(
                &format!("{name}/bias"),
                Tensor::zeros(&[cout]),
                ParamKind::Weight,
            ),
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
            bias: Some(g.param(self.bias)),
            stride: self.stride,
            padding,
        }
    }
}
