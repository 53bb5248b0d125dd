//! Zero padding of the spatial dimensions (Keras `ZeroPadding2D`). Forward
//! copies each image row into the middle of a zero frame; backward crops the
//! gradient rows back out of it.

use crate::graph::{Backward, BackwardCtx, Graph, Var};
use tensor::{Padding, Tensor};

/// For every image row of an `[N, H, W, C]` batch, the offset of its first
/// value in the unpadded buffer and in the padded one. Each row is `W * C` long.
fn row_offsets([n, h, w, c]: [usize; 4], p: Padding) -> impl Iterator<Item = (usize, usize)> {
    let (hp, wp) = (h + p.top + p.bottom, w + p.left + p.right);
    (0..n * h).map(move |r| {
        let (img, y) = (r / h, r % h);
        (r * w * c, ((img * hp + y + p.top) * wp + p.left) * c)
    })
}

pub fn zero_pad(g: &mut Graph, x: Var, p: Padding) -> Var {
    let xv = g.value(x);
    let dims = xv.dims4("zero_pad input").unwrap_or_else(|e| panic!("{e}"));
    let [n, h, w, c] = dims;
    let mut y = Tensor::zeros(&[n, h + p.top + p.bottom, w + p.left + p.right, c]);
    let row = w * c;
    for (s, b) in row_offsets(dims, p) {
        y.data_mut()[b..b + row].copy_from_slice(&xv.data()[s..s + row]);
    }
    g.push(y, &[x], ZeroPadBackward { dims, p })
}

struct ZeroPadBackward {
    dims: [usize; 4],
    p: Padding,
}

impl Backward for ZeroPadBackward {
    fn name(&self) -> &'static str {
        "zero_pad"
    }

    fn backward(&self, _ctx: &BackwardCtx, dy: Tensor) -> Vec<Option<Tensor>> {
        let mut dx = Tensor::for_overwrite(&self.dims);
        let row = self.dims[2] * self.dims[3];
        for (s, b) in row_offsets(self.dims, self.p) {
            dx.data_mut()[s..s + row].copy_from_slice(&dy.data()[b..b + row]);
        }
        vec![Some(dx)]
    }
}
