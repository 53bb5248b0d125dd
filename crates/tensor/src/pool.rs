//! Pooling: max pool (forward records the winners, backward routes the
//! gradient to them) and global average pool.

use crate::error::{Result, TensorError};
use crate::geometry::PoolGeometry;
use rayon::prelude::*;

/// Max pool forward. Writes the pooled values into `y` and, for each output,
/// the flat index into `x` of the first maximum of its window into `argmax`,
/// which is all the backward pass needs.
pub fn max_pool_forward(
    g: &PoolGeometry,
    x: &[f32],
    y: &mut [f32],
    argmax: &mut [u32],
) -> Result<()> {
    g.validate()?;
    let in_len: usize = g.input_shape().iter().product();
    let out_len: usize = g.output_shape().iter().product();
    if x.len() != in_len || y.len() != out_len || argmax.len() != out_len {
        return Err(TensorError::Geometry(format!(
            "max pool {:?} -> {:?}: got input {} / output {} / argmax {} elements",
            g.input_shape(),
            g.output_shape(),
            x.len(),
            y.len(),
            argmax.len()
        )));
    }
    if in_len > u32::MAX as usize {
        return Err(TensorError::Geometry(format!(
            "max pool: input of {in_len} elements exceeds u32 indices"
        )));
    }
    let (ho, wo, c) = (g.out_h(), g.out_w(), g.channels);
    // One task per output row of one image: `wo * c` outputs.
    y.par_chunks_mut(wo * c)
        .zip(argmax.par_chunks_mut(wo * c))
        .enumerate()
        .for_each(|(row, (y, arg))| {
            let (n, oy) = (row / ho, row % ho);
            y.fill(f32::NEG_INFINITY);
            // No winner yet: the first in-bounds tap always takes the slot,
            // so a window of NaNs yields NaN (and a valid index), not -inf.
            arg.fill(u32::MAX);
            for ky in 0..g.kernel {
                let iy = (oy * g.stride + ky).wrapping_sub(g.padding.top);
                if iy >= g.in_h {
                    continue;
                }
                for ox in 0..wo {
                    let (yo, ao) = (&mut y[ox * c..][..c], &mut arg[ox * c..][..c]);
                    for kx in 0..g.kernel {
                        let ix = (ox * g.stride + kx).wrapping_sub(g.padding.left);
                        if ix >= g.in_w {
                            continue;
                        }
                        let base = ((n * g.in_h + iy) * g.in_w + ix) * c;
                        for (ch, (yv, av)) in yo.iter_mut().zip(ao.iter_mut()).enumerate() {
                            let v = x[base + ch];
                            // Strictly greater: the first maximum in window order wins.
                            if v > *yv || *av == u32::MAX {
                                *yv = v;
                                *av = (base + ch) as u32;
                            }
                        }
                    }
                }
            }
        });
    Ok(())
}

/// Max pool backward: `dx[argmax[o]] += dy[o]`, overwriting `dx` first.
pub fn max_pool_backward(dy: &[f32], argmax: &[u32], dx: &mut [f32]) {
    assert_eq!(
        dy.len(),
        argmax.len(),
        "max_pool_backward: dy and argmax differ in length"
    );
    dx.fill(0.0);
    // Windows overlap (3x3 stride 2), so several outputs may route to one
    // input: a serial scatter keeps it simple and exact.
    for (&g, &i) in dy.iter().zip(argmax) {
        dx[i as usize] += g;
    }
}

/// [`max_pool_backward`] split across the rayon threads by image (an output
/// of image `n` only ever routes to a pixel of image `n`). Same result, bit
/// for bit: each pixel still sums its gradients in output order.
pub fn max_pool_backward_batched(
    g: &PoolGeometry,
    dy: &[f32],
    argmax: &[u32],
    dx: &mut [f32],
) -> Result<()> {
    let in_len: usize = g.input_shape().iter().product();
    let out_len: usize = g.output_shape().iter().product();
    if dy.len() != out_len || argmax.len() != out_len || dx.len() != in_len {
        return Err(TensorError::Geometry(format!(
            "max pool backward {:?} -> {:?}: got dy {} / argmax {} / dx {} elements",
            g.input_shape(),
            g.output_shape(),
            dy.len(),
            argmax.len(),
            dx.len()
        )));
    }
    if in_len == 0 || out_len == 0 {
        dx.fill(0.0);
        return Ok(());
    }
    let (image_in, image_out) = (in_len / g.batch, out_len / g.batch);
    dx.par_chunks_mut(image_in)
        .zip(dy.par_chunks(image_out).zip(argmax.par_chunks(image_out)))
        .enumerate()
        .for_each(|(n, (dx, (dy, arg)))| {
            dx.fill(0.0);
            let base = n * image_in;
            for (&g, &i) in dy.iter().zip(arg) {
                dx[i as usize - base] += g;
            }
        });
    Ok(())
}

/// Global average pool: `[N, H*W, C] -> [N, C]`.
pub fn global_avg_pool_forward(x: &[f32], batch: usize, hw: usize, c: usize, y: &mut [f32]) {
    assert_eq!(x.len(), batch * hw * c, "global_avg_pool: input length");
    assert_eq!(y.len(), batch * c, "global_avg_pool: output length");
    let inv = 1.0 / hw as f32;
    y.par_chunks_mut(c)
        .zip(x.par_chunks(hw * c))
        .for_each(|(y, x)| {
            y.fill(0.0);
            for pixel in x.chunks_exact(c) {
                y.iter_mut().zip(pixel).for_each(|(s, &v)| *s += v);
            }
            y.iter_mut().for_each(|s| *s *= inv);
        });
}

/// Global average pool backward: every pixel of image `n` gets `dy[n, c] / (H*W)`.
pub fn global_avg_pool_backward(dy: &[f32], batch: usize, hw: usize, c: usize, dx: &mut [f32]) {
    assert_eq!(dy.len(), batch * c, "global_avg_pool_backward: dy length");
    assert_eq!(
        dx.len(),
        batch * hw * c,
        "global_avg_pool_backward: dx length"
    );
    let inv = 1.0 / hw as f32;
    dx.par_chunks_mut(hw * c)
        .zip(dy.par_chunks(c))
        .for_each(|(dx, dy)| {
            for pixel in dx.chunks_exact_mut(c) {
                pixel.iter_mut().zip(dy).for_each(|(d, &g)| *d = g * inv);
            }
        });
}
