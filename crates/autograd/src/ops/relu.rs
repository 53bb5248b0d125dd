//! ReLU: `y = max(x, 0)`, `dx = dy * [y > 0]`. The backward reads the output,
//! which is positive exactly where the input was, so it never needs the
//! input (a NaN input stays NaN, see `tensor::elementwise::relu`).

use crate::graph::{Backward, BackwardCtx, Graph, OpInfo, Var};
use tensor::elementwise::{relu as relu_kernel, relu_backward};
use tensor::Tensor;

pub fn relu(g: &mut Graph, x: Var) -> Var {
    let xv = g.value(x);
    let mut y = Tensor::for_overwrite(xv.shape());
    relu_kernel(xv.data(), y.data_mut());
    g.push(y, &[x], OpInfo::named("relu"), ReluBackward)
}

struct ReluBackward;

impl Backward for ReluBackward {
    fn backward(&self, ctx: &BackwardCtx, dy: Tensor) -> Vec<Option<Tensor>> {
        // dx overwrites dy in place: no new buffer.
        let mut dx = dy;
        relu_backward(ctx.output.data(), dx.data_mut());
        vec![Some(dx)]
    }
}
