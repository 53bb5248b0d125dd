//! The unit every ResNet layer is made of: convolution, batchnorm, then
//! optionally the residual add and a ReLU.
//!
//! With the batchnorm on its moving statistics (inference, or frozen) the
//! unit is one op, [`ops::conv_bn_infer`], which in inference applies the
//! batchnorm, the add and the ReLU to the convolution's output tiles while
//! they are in cache. With batch statistics (training) it is the convolution
//! and one batchnorm op that also applies the ReLU, or the residual add and
//! the ReLU ([`ops::batch_norm_add_relu_train`]).

use crate::layers::{BatchNorm, Conv2d};
use autograd::{ops, Graph, Var};

/// `relu?(residual? + bn(conv(x)))`; `x` stays alive (the caller releases it).
pub fn conv_bn(
    g: &mut Graph,
    (conv, bn): (&Conv2d, &BatchNorm),
    x: Var,
    residual: Option<Var>,
    relu: bool,
) -> Var {
    if bn.uses_moving_statistics(g) {
        let (c, b) = (conv.args(g, x), bn.moving_args(g));
        return ops::conv_bn_infer(g, x, c, b, residual, relu);
    }
    let c = conv.forward(g, x);
    let y = match residual {
        None if relu => bn.forward_relu(g, c),
        None => bn.forward(g, c),
        Some(r) if relu => bn.forward_add_relu(g, c, r),
        Some(r) => {
            let b = bn.forward(g, c);
            let sum = ops::add(g, r, b);
            g.release(b);
            sum
        }
    };
    g.release(c);
    y
}
