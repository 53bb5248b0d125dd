//! Fully connected layer, Keras convention: `y = x W + b` with `W` stored
//! `[in, out]`.
//!
//! ```text
//! y  = x x W          [N, in] x [in, out] -> [N, out]
//! dx = dy x W^T       [N, out] x [out, in] -> [N, in]
//! dW = x^T x dy       [in, N] x [N, out] -> [in, out]
//! db = sum over N of dy
//! ```

use crate::graph::{Backward, BackwardCtx, Graph, OpInfo, Var};
use tensor::{sgemm, sgemm_bias, Tensor, Trans};

pub fn dense(g: &mut Graph, x: Var, w: Var, b: Var) -> Var {
    let (xv, wv, bv) = (g.value(x), g.value(w), g.value(b));
    let &[n, fan_in] = xv.shape() else {
        panic!("dense: input must be [N, in], got {:?}", xv.shape())
    };
    let &[w_in, fan_out] = wv.shape() else {
        panic!("dense: kernel must be [in, out], got {:?}", wv.shape())
    };
    assert_eq!(
        fan_in,
        w_in,
        "dense: input has {fan_in} features, kernel {:?}",
        wv.shape()
    );
    assert_eq!(bv.shape(), [fan_out], "dense: bias shape");
    let mut y = Tensor::for_overwrite(&[n, fan_out]);
    sgemm_bias(
        n,
        fan_out,
        fan_in,
        1.0,
        xv.data(),
        Trans::N,
        wv.data(),
        Trans::N,
        bv.data(),
        y.data_mut(),
    );
    let info = OpInfo {
        forward_flops: 2.0 * (n * fan_in * fan_out) as f64,
        ..OpInfo::named("dense")
    };
    g.push(y, &[x, w, b], info, DenseBackward { n, fan_in, fan_out })
}

struct DenseBackward {
    n: usize,
    fan_in: usize,
    fan_out: usize,
}

impl Backward for DenseBackward {
    fn backward(&self, ctx: &BackwardCtx, dy: Tensor) -> Vec<Option<Tensor>> {
        let (n, fi, fo) = (self.n, self.fan_in, self.fan_out);
        let (x, w) = (ctx.inputs[0], ctx.inputs[1]);
        let dx = ctx.needs_grad[0].then(|| {
            let mut dx = Tensor::for_overwrite(&[n, fi]);
            sgemm(
                n,
                fi,
                fo,
                1.0,
                dy.data(),
                Trans::N,
                w.data(),
                Trans::T,
                0.0,
                dx.data_mut(),
            );
            dx
        });
        let dw = ctx.needs_grad[1].then(|| {
            let mut dw = Tensor::for_overwrite(&[fi, fo]);
            sgemm(
                fi,
                fo,
                n,
                1.0,
                x.data(),
                Trans::T,
                dy.data(),
                Trans::N,
                0.0,
                dw.data_mut(),
            );
            dw
        });
        let db = ctx.needs_grad[2].then(|| {
            Tensor::from_vec(&[fo], tensor::elementwise::channel_sum(dy.data(), fo))
                .expect("bias shape")
        });
        vec![dx, dw, db]
    }
}
