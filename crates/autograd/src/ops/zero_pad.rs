//! Zero padding of the spatial dimensions (Keras `ZeroPadding2D`). Forward
//! copies each image row into the middle of a zero frame; backward crops the
//! gradient rows back out of it.

use crate::graph::{Backward, BackwardCtx, Graph, OpInfo, Var};
use rayon::prelude::*;
use tensor::{Padding, Tensor};

/// Writes every row of the padded batch `y` in one parallel pass: a row of
/// the top or bottom frame is all zeros, any other row is the left zeros,
/// the input row `W * C` and the right zeros.
fn pad_rows([n, h, w, c]: [usize; 4], p: Padding, x: &[f32], y: &mut [f32]) {
    let (hp, wp) = (h + p.top + p.bottom, w + p.left + p.right);
    debug_assert_eq!(y.len(), n * hp * wp * c);
    y.par_chunks_mut(wp * c).enumerate().for_each(|(r, out)| {
        let (img, yp) = (r / hp, r % hp);
        match yp.checked_sub(p.top).filter(|&iy| iy < h) {
            None => out.fill(0.0),
            Some(iy) => {
                let (left, rest) = out.split_at_mut(p.left * c);
                let (mid, right) = rest.split_at_mut(w * c);
                left.fill(0.0);
                mid.copy_from_slice(&x[(img * h + iy) * w * c..][..w * c]);
                right.fill(0.0);
            }
        }
    });
}

/// The adjoint of [`pad_rows`]: each input row of `dx` is cut out of the
/// padded gradient `dy`, in parallel.
fn crop_rows([_, h, w, c]: [usize; 4], p: Padding, dy: &[f32], dx: &mut [f32]) {
    let (hp, wp) = (h + p.top + p.bottom, w + p.left + p.right);
    dx.par_chunks_mut(w * c).enumerate().for_each(|(r, out)| {
        let (img, iy) = (r / h, r % h);
        out.copy_from_slice(&dy[((img * hp + iy + p.top) * wp + p.left) * c..][..w * c]);
    });
}

pub fn zero_pad(g: &mut Graph, x: Var, p: Padding) -> Var {
    let xv = g.value(x);
    let dims = xv.dims4("zero_pad input").unwrap_or_else(|e| panic!("{e}"));
    let [n, h, w, c] = dims;
    let mut y = Tensor::for_overwrite(&[n, h + p.top + p.bottom, w + p.left + p.right, c]);
    if w * c > 0 {
        pad_rows(dims, p, xv.data(), y.data_mut());
    } else {
        y.data_mut().fill(0.0);
    }
    g.push(
        y,
        &[x],
        OpInfo::named("zero_pad"),
        ZeroPadBackward { dims, p },
    )
}

struct ZeroPadBackward {
    dims: [usize; 4],
    p: Padding,
}

impl Backward for ZeroPadBackward {
    fn backward(&self, _ctx: &BackwardCtx, dy: Tensor) -> Vec<Option<Tensor>> {
        let mut dx = Tensor::for_overwrite(&self.dims);
        if !dx.data().is_empty() {
            crop_rows(self.dims, self.p, dy.data(), dx.data_mut());
        }
        vec![Some(dx)]
    }
}
