//! Pooling ops. Max pool routes the gradient to the input that won each
//! window (found again from the input and output, so nothing extra is kept);
//! global average pool spreads it evenly over the pixels.

use crate::graph::{Backward, BackwardCtx, Graph, OpInfo, Var};
use tensor::pool::{
    global_avg_pool_backward, global_avg_pool_forward, max_pool_backward, max_pool_forward,
};
use tensor::{Padding, PoolGeometry, Tensor};

/// Max pool over `kernel x kernel` windows (padded positions never win).
pub fn max_pool(g: &mut Graph, x: Var, kernel: usize, stride: usize, padding: Padding) -> Var {
    let xv = g.value(x);
    let [batch, in_h, in_w, channels] =
        xv.dims4("max_pool input").unwrap_or_else(|e| panic!("{e}"));
    let geom = PoolGeometry {
        batch,
        in_h,
        in_w,
        channels,
        kernel,
        stride,
        padding,
    };
    let mut y = Tensor::for_overwrite(&geom.output_shape());
    max_pool_forward(&geom, xv.data(), y.data_mut());
    g.push(y, &[x], OpInfo::named("max_pool"), MaxPoolBackward { geom })
}

struct MaxPoolBackward {
    geom: PoolGeometry,
}

impl Backward for MaxPoolBackward {
    fn backward(&self, ctx: &BackwardCtx, dy: Tensor) -> Vec<Option<Tensor>> {
        let mut dx = Tensor::for_overwrite(&self.geom.input_shape());
        let (x, y) = (ctx.inputs[0].data(), ctx.output.data());
        max_pool_backward(&self.geom, x, y, dy.data(), dx.data_mut());
        vec![Some(dx)]
    }
}

/// Global average pool: `[N, H, W, C] -> [N, C]`.
pub fn global_avg_pool(g: &mut Graph, x: Var) -> Var {
    let xv = g.value(x);
    let [n, h, w, c] = xv
        .dims4("global_avg_pool input")
        .unwrap_or_else(|e| panic!("{e}"));
    let mut y = Tensor::zeros(&[n, c]);
    global_avg_pool_forward(xv.data(), n, h * w, c, y.data_mut());
    g.push(
        y,
        &[x],
        OpInfo::named("global_avg_pool"),
        GlobalAvgPoolBackward {
            input_shape: [n, h, w, c],
        },
    )
}

struct GlobalAvgPoolBackward {
    input_shape: [usize; 4],
}

impl Backward for GlobalAvgPoolBackward {
    fn backward(&self, _ctx: &BackwardCtx, dy: Tensor) -> Vec<Option<Tensor>> {
        let [n, h, w, c] = self.input_shape;
        let mut dx = Tensor::for_overwrite(&self.input_shape);
        global_avg_pool_backward(dy.data(), n, h * w, c, dx.data_mut());
        vec![Some(dx)]
    }
}
