//! Keras `Dense`: `y = x W + b`, kernel `[in, out]`.

use crate::init::glorot_uniform;
use crate::BuildCtx;
use autograd::{ops, Graph, ParamId, ParamKind, Var};
use tensor::Tensor;

#[derive(Clone, Debug)]
pub struct Dense {
    pub name: String,
    pub kernel: ParamId,
    pub bias: ParamId,
}

impl Dense {
    pub fn new(ctx: &mut BuildCtx, name: &str, fan_in: usize, fan_out: usize) -> Self {
        let kernel = glorot_uniform(&[fan_in, fan_out], &mut ctx.rng);
        Dense {
            name: name.into(),
            kernel: ctx.add(&format!("{name}/kernel"), kernel, ParamKind::Weight),
            bias: ctx.add(
                &format!("{name}/bias"),
                Tensor::zeros(&[fan_out]),
                ParamKind::Weight,
            ),
        }
    }

    /// The logits `x W + b` (softmax belongs to the loss, or to `probs`).
    pub fn forward(&self, g: &mut Graph, x: Var) -> Var {
        let (w, b) = (g.param(self.kernel), g.param(self.bias));
        let y = ops::dense(g, x, w, b);
        g.tap(&self.name, y)
    }
}
