//! Convolution with bias, NHWC input and HWIO kernel.
//!
//! Forward: `y = conv(x, w) + b`. Backward, three GEMMs over the same im2col
//! view (shapes with `M = N*Ho*Wo`, `K = kh*kw*Cin`):
//!
//! ```text
//! dx = col2im(dy x W^T)   [M, Cout] x [Cout, K]   (skipped for the network input)
//! dW = cols^T x dy        [K, M] x [M, Cout]
//! db = sum over M of dy
//! ```

use crate::graph::{Backward, BackwardCtx, Graph, OpInfo, Var};
use tensor::conv::{
    conv2d_backward_bias, conv2d_backward_input, conv2d_backward_kernel, conv2d_forward,
};
use tensor::{ConvGeometry, Padding, Tensor};

/// The geometry of convolving `x` (`[N, H, W, Cin]`) with `w` (`[kh, kw, Cin, Cout]`).
pub fn geometry(x: &Tensor, w: &Tensor, stride: usize, padding: Padding) -> ConvGeometry {
    let [batch, in_h, in_w, in_c] = x.dims4("conv2d input").unwrap_or_else(|e| panic!("{e}"));
    let [kernel_h, kernel_w, k_in, out_c] =
        w.dims4("conv2d kernel").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        in_c,
        k_in,
        "conv2d: input has {in_c} channels, kernel {:?} expects {k_in}",
        w.shape()
    );
    ConvGeometry {
        batch,
        in_h,
        in_w,
        in_c,
        kernel_h,
        kernel_w,
        out_c,
        stride,
        padding,
    }
}

/// `y = conv(x, w) + b` with the given stride and explicit padding.
pub fn conv2d(
    g: &mut Graph,
    x: Var,
    w: Var,
    b: Option<Var>,
    stride: usize,
    padding: Padding,
) -> Var {
    let geom = geometry(g.value(x), g.value(w), stride, padding);
    let mut y = Tensor::for_overwrite(&geom.output_shape());
    conv2d_forward(
        &geom,
        g.value(x).data(),
        g.value(w).data(),
        b.map(|b| g.value(b).data()),
        y.data_mut(),
    );
    let info = OpInfo::conv("conv2d", geom);
    match b {
        Some(b) => g.push(y, &[x, w, b], info, Conv2dBackward { geom }),
        None => g.push(y, &[x, w], info, Conv2dBackward { geom }),
    }
}

struct Conv2dBackward {
    geom: ConvGeometry,
}

impl Backward for Conv2dBackward {
    fn backward(&self, ctx: &BackwardCtx, dy: Tensor) -> Vec<Option<Tensor>> {
        let g = &self.geom;
        let (x, w) = (ctx.inputs[0], ctx.inputs[1]);
        let dx = ctx.needs_grad[0].then(|| {
            let mut dx = Tensor::for_overwrite(&g.input_shape());
            conv2d_backward_input(g, dy.data(), w.data(), dx.data_mut());
            dx
        });
        let dw = ctx.needs_grad[1].then(|| {
            let mut dw = Tensor::for_overwrite(&g.kernel_shape());
            conv2d_backward_kernel(g, x.data(), dy.data(), dw.data_mut(), false);
            dw
        });
        let mut grads = vec![dx, dw];
        if ctx.inputs.len() == 3 {
            grads.push(ctx.needs_grad[2].then(|| {
                let mut db = Tensor::for_overwrite(&[g.out_c]);
                conv2d_backward_bias(g, dy.data(), db.data_mut(), false);
                db
            }));
        }
        grads
    }
}
