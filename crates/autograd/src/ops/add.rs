//! Elementwise sum, the residual connection: `y = a + b`. The gradient fans
//! out unchanged to both inputs; when an input was also used elsewhere (the
//! block input feeds both the shortcut and the main path), the tape adds the
//! contributions.

use crate::graph::{Backward, BackwardCtx, Graph, OpInfo, Var};
use tensor::Tensor;

pub fn add(g: &mut Graph, a: Var, b: Var) -> Var {
    let (av, bv) = (g.value(a), g.value(b));
    assert_eq!(
        av.shape(),
        bv.shape(),
        "add: shapes {:?} and {:?} differ",
        av.shape(),
        bv.shape()
    );
    let mut y = Tensor::for_overwrite(av.shape());
    tensor::elementwise::add(av.data(), bv.data(), y.data_mut());
    g.push(y, &[a, b], OpInfo::named("add"), AddBackward)
}

struct AddBackward;

impl Backward for AddBackward {
    fn backward(&self, ctx: &BackwardCtx, dy: Tensor) -> Vec<Option<Tensor>> {
        // `dy` itself goes to one input; only a second one needs a copy.
        let (da, db) = match (ctx.needs_grad[0], ctx.needs_grad[1]) {
            (true, true) => (Some(dy.clone()), Some(dy)),
            (true, false) => (Some(dy), None),
            (false, true) => (None, Some(dy)),
            (false, false) => (None, None),
        };
        vec![da, db]
    }
}
