//! Convolution, inference batchnorm, optional residual add and optional ReLU
//! as one op: the unit every ResNet layer is made of, in inference (no tape,
//! batchnorm on its moving statistics).
//!
//! ```text
//! y = relu?( residual? + batch_norm_infer(conv(x, w) + b) )
//! ```
//!
//! The batchnorm's affine map, the add and the ReLU run as the convolution's
//! epilogue ([`tensor::Epilogue`]) on each output tile while it is in cache,
//! instead of three more passes over memory; the result is bit-identical to
//! the ops one by one ([`super::conv2d`], [`super::batch_norm_infer`],
//! [`super::add`], [`super::relu`]). It exists only without a tape and so has
//! no backward: a graph that records runs those ops instead, and their tape
//! and gradient checks are the unit's. Which one runs is decided by the
//! layer (`nn::layers::ConvBn`), not here.

use super::batch_norm::moving_affine;
use crate::graph::{Graph, OpInfo, Var};
use tensor::conv::conv2d_forward_fused;
use tensor::{Epilogue, Padding, Tensor};

/// A convolution's parameters and geometry.
#[derive(Clone, Copy, Debug)]
pub struct ConvArgs {
    pub kernel: Var,
    pub bias: Option<Var>,
    pub stride: usize,
    pub padding: Padding,
}

/// An inference batchnorm's parameters.
#[derive(Clone, Copy, Debug)]
pub struct BatchNormArgs {
    pub gamma: Var,
    pub beta: Var,
    pub moving_mean: Var,
    pub moving_var: Var,
    pub eps: f32,
}

/// `relu?(residual? + batch_norm_infer(conv(x) + b))`; see the module docs.
/// Panics in a graph that records (it has no backward).
pub fn conv_bn_infer(
    g: &mut Graph,
    x: Var,
    conv: ConvArgs,
    bn: BatchNormArgs,
    residual: Option<Var>,
    relu_last: bool,
) -> Var {
    assert!(
        !g.mode().record,
        "conv_bn_infer runs only without a tape; a recording graph runs the ops one by one"
    );
    let geom = super::conv2d::geometry(g.value(x), g.value(conv.kernel), conv.stride, conv.padding);
    let (_, scale, shift) = moving_affine(
        g.value(bn.gamma),
        g.value(bn.beta),
        g.value(bn.moving_mean),
        g.value(bn.moving_var),
        bn.eps,
        geom.out_c,
    );
    let mut y = Tensor::for_overwrite(&geom.output_shape());
    if let Some(r) = residual {
        let shape = g.value(r).shape();
        assert_eq!(
            shape,
            geom.output_shape(),
            "conv_bn_infer: residual {shape:?} differs from the conv output"
        );
    }
    let epilogue = Epilogue {
        affine: Some((&scale, &shift)),
        residual: residual.map(|r| g.value(r).data()),
        relu: relu_last,
    };
    conv2d_forward_fused(
        &geom,
        g.value(x).data(),
        g.value(conv.kernel).data(),
        conv.bias.map(|b| g.value(b).data()),
        epilogue,
        y.data_mut(),
    );
    g.push_inference(y, OpInfo::conv("conv_bn_infer", geom))
}
