//! Convolution, inference batchnorm, optional residual add and optional ReLU
//! as one op: the unit every ResNet layer is made of, when its batchnorm
//! uses the moving statistics (inference, or a frozen batchnorm).
//!
//! ```text
//! y = relu?( residual? + batch_norm_infer(conv(x, w) + b) )
//! ```
//!
//! When the graph does not record (inference) the batchnorm's affine map,
//! the add and the ReLU run as the convolution's epilogue
//! ([`tensor::Epilogue`]) on each output tile while it is in cache, instead of
//! three more passes over memory; the result is bit-identical to the ops one
//! by one. When the graph records, this *is* the ops one by one
//! ([`conv2d`], [`batch_norm_infer`], [`add`], [`relu`]), so the tape, the
//! gradients and the gradient checks are those of the parts.

use super::batch_norm::moving_affine;
use super::{add, batch_norm_infer, batch_norm_relu_infer, conv2d, relu};
use crate::graph::{Backward, BackwardCtx, Graph, Var};
use tensor::conv::conv2d_forward_fused;
use tensor::{ConvGeometry, Epilogue, Padding, Tensor};

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
pub fn conv_bn_infer(
    g: &mut Graph,
    x: Var,
    conv: ConvArgs,
    bn: BatchNormArgs,
    residual: Option<Var>,
    relu_last: bool,
) -> Var {
    if g.mode().record {
        return composed(g, x, conv, bn, residual, relu_last);
    }
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
    let mut inputs = vec![x, conv.kernel];
    inputs.extend(conv.bias);
    inputs.extend(residual);
    g.push(y, &inputs, FusedInference { geom })
}

/// The same computation as separate ops, for a graph that records.
fn composed(
    g: &mut Graph,
    x: Var,
    conv: ConvArgs,
    bn: BatchNormArgs,
    residual: Option<Var>,
    relu_last: bool,
) -> Var {
    let c = conv2d(g, x, conv.kernel, conv.bias, conv.stride, conv.padding);
    let params = (bn.gamma, bn.beta, bn.moving_mean, bn.moving_var);
    let (gamma, beta, mean, var) = params;
    match residual {
        None if relu_last => batch_norm_relu_infer(g, c, gamma, beta, mean, var, bn.eps),
        None => batch_norm_infer(g, c, gamma, beta, mean, var, bn.eps),
        Some(r) => {
            let b = batch_norm_infer(g, c, gamma, beta, mean, var, bn.eps);
            let sum = add(g, r, b);
            if relu_last {
                relu(g, sum)
            } else {
                sum
            }
        }
    }
}

/// Names the fused op in the profile. A graph that does not record drops an
/// op's backward unused, and a recording graph never gets this op (it gets
/// the composed ops), so `backward` is unreachable.
struct FusedInference {
    geom: ConvGeometry,
}

impl Backward for FusedInference {
    fn name(&self) -> &'static str {
        "conv_bn_infer"
    }

    fn forward_flops(&self) -> f64 {
        2.0 * self.geom.macs() as f64
    }

    fn detail(&self) -> String {
        super::conv2d::describe(&self.geom)
    }

    fn backward(&self, _ctx: &BackwardCtx, _dy: Tensor) -> Vec<Option<Tensor>> {
        unreachable!("conv_bn_infer is fused only in graphs that do not record")
    }
}
