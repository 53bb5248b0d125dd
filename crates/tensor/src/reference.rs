//! Naive reference kernels, written for clarity and nothing else.
//!
//! Every fast kernel in this crate is tested against the function of the same
//! name here. They are public so that the higher crates' tests (autograd, nn)
//! can check against them too. Accumulation is in f64 so the reference is the
//! more accurate side of every comparison.

use crate::gemm::Trans;
use crate::geometry::{ConvGeometry, PoolGeometry};

/// `C = alpha * op(A) * op(B) + beta * C`, row-major; `op(A)` is `m x k`.
#[allow(clippy::too_many_arguments)]
pub fn gemm(
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: &[f32],
    ta: Trans,
    b: &[f32],
    tb: Trans,
    beta: f32,
    c: &mut [f32],
) {
    for i in 0..m {
        for j in 0..n {
            let mut acc = 0.0f64;
            for p in 0..k {
                let av = match ta {
                    Trans::N => a[i * k + p],
                    Trans::T => a[p * m + i],
                };
                let bv = match tb {
                    Trans::N => b[p * n + j],
                    Trans::T => b[j * k + p],
                };
                acc += av as f64 * bv as f64;
            }
            let old = if beta == 0.0 {
                0.0
            } else {
                beta * c[i * n + j]
            };
            c[i * n + j] = alpha * acc as f32 + old;
        }
    }
}

/// The input pixel `(iy, ix)` that kernel tap `(ky, kx)` of output `(oy, ox)`
/// reads, or `None` when it falls in the zero padding.
fn tap(g: &ConvGeometry, oy: usize, ox: usize, ky: usize, kx: usize) -> Option<(usize, usize)> {
    let iy = (oy * g.stride + ky).checked_sub(g.padding.top)?;
    let ix = (ox * g.stride + kx).checked_sub(g.padding.left)?;
    (iy < g.in_h && ix < g.in_w).then_some((iy, ix))
}

/// `y[n,oy,ox,co] = bias[co] + sum_{ky,kx,ci} x[n,iy,ix,ci] * w[ky,kx,ci,co]`.
pub fn conv2d_forward(g: &ConvGeometry, x: &[f32], w: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
    let (ho, wo) = (g.out_h(), g.out_w());
    let mut y = vec![0.0; g.batch * ho * wo * g.out_c];
    for n in 0..g.batch {
        for oy in 0..ho {
            for ox in 0..wo {
                for co in 0..g.out_c {
                    let mut acc = bias.map_or(0.0, |b| b[co] as f64);
                    for ky in 0..g.kernel_h {
                        for kx in 0..g.kernel_w {
                            let Some((iy, ix)) = tap(g, oy, ox, ky, kx) else {
                                continue;
                            };
                            for ci in 0..g.in_c {
                                let xv = x[((n * g.in_h + iy) * g.in_w + ix) * g.in_c + ci];
                                let wv = w[((ky * g.kernel_w + kx) * g.in_c + ci) * g.out_c + co];
                                acc += xv as f64 * wv as f64;
                            }
                        }
                    }
                    y[((n * ho + oy) * wo + ox) * g.out_c + co] = acc as f32;
                }
            }
        }
    }
    y
}

/// `dx[n,iy,ix,ci] = sum over every (output, tap) that read it of dy * w`.
pub fn conv2d_backward_input(g: &ConvGeometry, dy: &[f32], w: &[f32]) -> Vec<f32> {
    let (ho, wo) = (g.out_h(), g.out_w());
    let mut dx = vec![0.0f64; g.batch * g.in_h * g.in_w * g.in_c];
    for n in 0..g.batch {
        for oy in 0..ho {
            for ox in 0..wo {
                for ky in 0..g.kernel_h {
                    for kx in 0..g.kernel_w {
                        let Some((iy, ix)) = tap(g, oy, ox, ky, kx) else {
                            continue;
                        };
                        for ci in 0..g.in_c {
                            let mut acc = 0.0f64;
                            for co in 0..g.out_c {
                                let d = dy[((n * ho + oy) * wo + ox) * g.out_c + co];
                                let wv = w[((ky * g.kernel_w + kx) * g.in_c + ci) * g.out_c + co];
                                acc += d as f64 * wv as f64;
                            }
                            dx[((n * g.in_h + iy) * g.in_w + ix) * g.in_c + ci] += acc;
                        }
                    }
                }
            }
        }
    }
    dx.into_iter().map(|v| v as f32).collect()
}

/// `dw[ky,kx,ci,co] = sum_{n,oy,ox} x[n,iy,ix,ci] * dy[n,oy,ox,co]`.
pub fn conv2d_backward_kernel(g: &ConvGeometry, x: &[f32], dy: &[f32]) -> Vec<f32> {
    let (ho, wo) = (g.out_h(), g.out_w());
    let mut dw = vec![0.0f64; g.kernel_h * g.kernel_w * g.in_c * g.out_c];
    for n in 0..g.batch {
        for oy in 0..ho {
            for ox in 0..wo {
                for ky in 0..g.kernel_h {
                    for kx in 0..g.kernel_w {
                        let Some((iy, ix)) = tap(g, oy, ox, ky, kx) else {
                            continue;
                        };
                        for ci in 0..g.in_c {
                            let xv = x[((n * g.in_h + iy) * g.in_w + ix) * g.in_c + ci] as f64;
                            for co in 0..g.out_c {
                                let d = dy[((n * ho + oy) * wo + ox) * g.out_c + co] as f64;
                                dw[((ky * g.kernel_w + kx) * g.in_c + ci) * g.out_c + co] += xv * d;
                            }
                        }
                    }
                }
            }
        }
    }
    dw.into_iter().map(|v| v as f32).collect()
}

/// Sum of `v` over every row of a `[rows, channels]` matrix: the bias
/// gradient, and batchnorm's statistics.
pub fn channel_sum(v: &[f32], channels: usize) -> Vec<f32> {
    let mut s = vec![0.0f64; channels];
    for row in v.chunks_exact(channels) {
        for (acc, &x) in s.iter_mut().zip(row) {
            *acc += x as f64;
        }
    }
    s.into_iter().map(|v| v as f32).collect()
}

/// Max pool forward: the output and, for each output, the flat input index of
/// the winner (the first maximum in row-major window order).
pub fn max_pool_forward(g: &PoolGeometry, x: &[f32]) -> (Vec<f32>, Vec<u32>) {
    let (ho, wo, c) = (g.out_h(), g.out_w(), g.channels);
    let mut y = vec![0.0; g.batch * ho * wo * c];
    let mut arg = vec![0u32; y.len()];
    for n in 0..g.batch {
        for oy in 0..ho {
            for ox in 0..wo {
                for ch in 0..c {
                    let mut best = f32::NEG_INFINITY;
                    // The first in-bounds tap always wins a window so far empty.
                    let mut best_i = usize::MAX;
                    for ky in 0..g.kernel {
                        for kx in 0..g.kernel {
                            let Some(iy) = (oy * g.stride + ky).checked_sub(g.padding.top) else {
                                continue;
                            };
                            let Some(ix) = (ox * g.stride + kx).checked_sub(g.padding.left) else {
                                continue;
                            };
                            if iy >= g.in_h || ix >= g.in_w {
                                continue;
                            }
                            let i = ((n * g.in_h + iy) * g.in_w + ix) * c + ch;
                            if x[i] > best || best_i == usize::MAX {
                                best = x[i];
                                best_i = i;
                            }
                        }
                    }
                    let o = ((n * ho + oy) * wo + ox) * c + ch;
                    y[o] = best;
                    arg[o] = best_i as u32;
                }
            }
        }
    }
    (y, arg)
}

/// Global average pool: `[N, H, W, C] -> [N, C]`.
pub fn global_avg_pool_forward(x: &[f32], batch: usize, hw: usize, c: usize) -> Vec<f32> {
    let mut y = vec![0.0; batch * c];
    for n in 0..batch {
        for ch in 0..c {
            let s: f64 = (0..hw).map(|p| x[(n * hw + p) * c + ch] as f64).sum();
            y[n * c + ch] = (s / hw as f64) as f32;
        }
    }
    y
}

/// Max pool backward: `dx[argmax[o]] += dy[o]`, summed in f64 over every
/// output whose window's winner is that input.
pub fn max_pool_backward(dy: &[f32], argmax: &[u32], input_len: usize) -> Vec<f32> {
    let mut dx = vec![0.0f64; input_len];
    for (&g, &i) in dy.iter().zip(argmax) {
        dx[i as usize] += g as f64;
    }
    dx.into_iter().map(|v| v as f32).collect()
}

/// Global average pool backward: `dx[n, p, c] = dy[n, c] / hw` for every pixel `p`.
pub fn global_avg_pool_backward(dy: &[f32], batch: usize, hw: usize, c: usize) -> Vec<f32> {
    let mut dx = vec![0.0; batch * hw * c];
    for n in 0..batch {
        for p in 0..hw {
            for ch in 0..c {
                dx[(n * hw + p) * c + ch] = (dy[n * c + ch] as f64 / hw as f64) as f32;
            }
        }
    }
    dx
}

/// `a + b`.
pub fn add(a: &[f32], b: &[f32]) -> Vec<f32> {
    a.iter().zip(b).map(|(&x, &y)| x + y).collect()
}

/// `x * s`.
pub fn scale(x: &[f32], s: f32) -> Vec<f32> {
    x.iter().map(|&v| v * s).collect()
}

/// `max(x, 0)`.
pub fn relu(x: &[f32]) -> Vec<f32> {
    x.iter().map(|&v| if v <= 0.0 { 0.0 } else { v }).collect()
}

/// `dy` where the ReLU output `y` is positive, zero elsewhere.
pub fn relu_backward(y: &[f32], dy: &[f32]) -> Vec<f32> {
    y.iter()
        .zip(dy)
        .map(|(&y, &g)| if y > 0.0 { g } else { 0.0 })
        .collect()
}

/// `y[row, c] = x[row, c] * scale[c] + shift[c]`, computed in f64.
pub fn channel_affine(x: &[f32], scale: &[f32], shift: &[f32]) -> Vec<f32> {
    let c = scale.len();
    x.iter()
        .enumerate()
        .map(|(i, &v)| (v as f64 * scale[i % c] as f64 + shift[i % c] as f64) as f32)
        .collect()
}

/// Sum of `v^2` over every row of a `[rows, channels]` matrix.
pub fn channel_sum_sq(v: &[f32], channels: usize) -> Vec<f32> {
    channel_dot(v, v, channels)
}

/// Sum of `a * b` over every row of two `[rows, channels]` matrices.
pub fn channel_dot(a: &[f32], b: &[f32], channels: usize) -> Vec<f32> {
    let mut s = vec![0.0f64; channels];
    for (ra, rb) in a.chunks_exact(channels).zip(b.chunks_exact(channels)) {
        for ((acc, &x), &y) in s.iter_mut().zip(ra).zip(rb) {
            *acc += x as f64 * y as f64;
        }
    }
    s.into_iter().map(|v| v as f32).collect()
}

/// The bias gradient of a convolution: `dy` summed over every output pixel.
pub fn conv2d_backward_bias(g: &ConvGeometry, dy: &[f32]) -> Vec<f32> {
    channel_sum(dy, g.out_c)
}

/// Per-channel batch mean and biased variance of `[rows, c]` data, in f64.
pub fn batch_norm_statistics(x: &[f32], c: usize) -> (Vec<f32>, Vec<f32>) {
    let rows = x.len() / c;
    let mut mean = vec![0.0f64; c];
    for row in x.chunks_exact(c) {
        for i in 0..c {
            mean[i] += row[i] as f64;
        }
    }
    mean.iter_mut().for_each(|m| *m /= rows as f64);
    let mut var = vec![0.0f64; c];
    for row in x.chunks_exact(c) {
        for i in 0..c {
            var[i] += (row[i] as f64 - mean[i]).powi(2);
        }
    }
    let to_f32 = |v: Vec<f64>| v.into_iter().map(|v| v as f32).collect();
    (
        to_f32(mean),
        to_f32(var.iter().map(|v| v / rows as f64).collect()),
    )
}

/// Batchnorm with given statistics: `gamma * (x - mean) / sqrt(var + eps) + beta`.
pub fn batch_norm_infer(
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    mean: &[f32],
    var: &[f32],
    eps: f32,
) -> Vec<f32> {
    let c = gamma.len();
    x.chunks_exact(c)
        .flat_map(|row| {
            (0..c).map(move |i| {
                let xhat = (row[i] as f64 - mean[i] as f64) / (var[i] as f64 + eps as f64).sqrt();
                (gamma[i] as f64 * xhat + beta[i] as f64) as f32
            })
        })
        .collect()
}

/// Training-mode batchnorm: normalized with the batch's own statistics.
pub fn batch_norm_train(x: &[f32], gamma: &[f32], beta: &[f32], eps: f32) -> Vec<f32> {
    let (mean, var) = batch_norm_statistics(x, gamma.len());
    batch_norm_infer(x, gamma, beta, &mean, &var, eps)
}

/// The gradients of [`batch_norm_train`] for the output gradient `dy`:
/// `(dx, dgamma, dbeta)`, straight from the textbook formulas (Ioffe and
/// Szegedy 2015, section 3), with `xhat = (x - mean) / sigma`:
///
/// ```text
/// dbeta  = sum(dy)                  dgamma = sum(dy * xhat)
/// dx     = gamma / sigma * (dy - dbeta / M - xhat * dgamma / M)
/// ```
pub fn batch_norm_train_backward(
    x: &[f32],
    dy: &[f32],
    gamma: &[f32],
    eps: f32,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let c = gamma.len();
    let m = (x.len() / c) as f64;
    let (mean, var) = batch_norm_statistics(x, c);
    let sigma: Vec<f64> = var
        .iter()
        .map(|&v| (v as f64 + eps as f64).sqrt())
        .collect();
    let xhat = |row: &[f32], i: usize| (row[i] as f64 - mean[i] as f64) / sigma[i];
    let (mut dbeta, mut dgamma) = (vec![0.0f64; c], vec![0.0f64; c]);
    for (row, g) in x.chunks_exact(c).zip(dy.chunks_exact(c)) {
        for i in 0..c {
            dbeta[i] += g[i] as f64;
            dgamma[i] += g[i] as f64 * xhat(row, i);
        }
    }
    let dx = x
        .chunks_exact(c)
        .zip(dy.chunks_exact(c))
        .flat_map(|(row, g)| {
            let (dbeta, dgamma, sigma) = (&dbeta, &dgamma, &sigma);
            (0..c).map(move |i| {
                let d = g[i] as f64 - dbeta[i] / m - xhat(row, i) * dgamma[i] / m;
                (gamma[i] as f64 / sigma[i] * d) as f32
            })
        })
        .collect();
    let to_f32 = |v: Vec<f64>| v.into_iter().map(|v| v as f32).collect();
    (dx, to_f32(dgamma), to_f32(dbeta))
}
