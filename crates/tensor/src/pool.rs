//! Pooling: max pool (the backward finds each window's winner again and
//! routes the gradient to it) and global average pool.

use crate::elementwise::multiversion;
use crate::geometry::PoolGeometry;
use rayon::prelude::*;

/// Asserts the kernel's preconditions: a valid geometry, buffers of its shapes.
fn check_max_pool(g: &PoolGeometry, lens: &[(&str, usize, [usize; 4])]) {
    crate::conv::require(g.validate());
    for &(what, got, shape) in lens {
        let expected: usize = shape.iter().product();
        assert_eq!(
            got,
            expected,
            "max pool {:?} -> {:?}: {what} has {got} elements, expected {expected}",
            g.input_shape(),
            g.output_shape(),
        );
    }
}

/// The in-bounds input pixels `(iy, ix)` of output `(oy, ox)`'s window, in
/// window order (row by row); padded positions are skipped, so they never win.
fn window_taps(
    g: &PoolGeometry,
    oy: usize,
    ox: usize,
) -> impl Iterator<Item = (usize, usize)> + '_ {
    (0..g.kernel).flat_map(move |ky| {
        let iy = (oy * g.stride + ky).wrapping_sub(g.padding.top);
        (0..g.kernel).filter_map(move |kx| {
            let ix = (ox * g.stride + kx).wrapping_sub(g.padding.left);
            (iy < g.in_h && ix < g.in_w).then_some((iy, ix))
        })
    })
}

multiversion! {
    /// `y = max(y, x)` per lane, as `if x > y { x } else { y }`: a NaN in `x`
    /// never replaces `y` (so a window's first tap decides whether it is NaN).
    fn max_kernel(y: &mut [f32], x: &[f32]) {
        y.iter_mut()
            .zip(x)
            .for_each(|(y, &x)| *y = if x > *y { x } else { *y })
    }
}

/// Channels the max pool backward routes at once (a stack array of flags).
const CHANNELS: usize = 64;

multiversion! {
    /// One tap of one window over a run of channels: where the tap holds the
    /// output's bits and no earlier tap did, it takes the gradient. A tap
    /// that does not win adds +0.0, which changes no sum (a gradient sum
    /// that starts at +0.0 never becomes -0.0), so this equals routing each
    /// channel's gradient to its winner alone.
    fn route_kernel(dx: &mut [f32], x: &[f32], y: &[f32], dy: &[f32], found: &mut [bool]) {
        for ((((d, &x), &y), &g), f) in dx.iter_mut().zip(x).zip(y).zip(dy).zip(found) {
            let win = !*f & (x.to_bits() == y.to_bits());
            *d += if win { g } else { 0.0 };
            *f |= win;
        }
    }
}

/// Max pool forward: each output is the maximum of its window's in-bounds
/// taps, seeded from the first (a window whose first tap is NaN is NaN).
/// Nothing else is stored: the backward pass finds the winners again.
pub fn max_pool_forward(g: &PoolGeometry, x: &[f32], y: &mut [f32]) {
    check_max_pool(
        g,
        &[
            ("input", x.len(), g.input_shape()),
            ("output", y.len(), g.output_shape()),
        ],
    );
    let (ho, wo, c) = (g.out_h(), g.out_w(), g.channels);
    if y.is_empty() {
        return;
    }
    // One task per output row of one image: `wo * c` outputs, a channel
    // vector at a time.
    y.par_chunks_mut(wo * c).enumerate().for_each(|(row, y)| {
        let (n, oy) = (row / ho, row % ho);
        for (ox, yo) in y.chunks_exact_mut(c).enumerate() {
            let mut taps = window_taps(g, oy, ox);
            let pixel = |(iy, ix): (usize, usize)| &x[((n * g.in_h + iy) * g.in_w + ix) * c..][..c];
            match taps.next() {
                Some(first) => yo.copy_from_slice(pixel(first)),
                None => yo.fill(f32::NEG_INFINITY),
            }
            for tap in taps {
                max_kernel(yo, pixel(tap));
            }
        }
    });
}

/// Max pool backward: each `dy` goes to the input that won its window (the
/// first tap, in window order, holding exactly the output's bits: earlier
/// taps are smaller or NaN, since a tap equal to the maximum would have
/// won), added up where windows overlap; `dx` is overwritten. Split across
/// the rayon threads by image (a window never leaves its image); within an
/// image the gradients are summed in output order, so the result does not
/// depend on the thread count.
pub fn max_pool_backward(g: &PoolGeometry, x: &[f32], y: &[f32], dy: &[f32], dx: &mut [f32]) {
    check_max_pool(
        g,
        &[
            ("input", x.len(), g.input_shape()),
            ("output", y.len(), g.output_shape()),
            ("output gradient", dy.len(), g.output_shape()),
            ("input gradient", dx.len(), g.input_shape()),
        ],
    );
    if dx.is_empty() {
        return;
    }
    if y.is_empty() {
        dx.fill(0.0);
        return;
    }
    let (ho, wo, c) = (g.out_h(), g.out_w(), g.channels);
    let (image_in, image_out) = (g.in_h * g.in_w * c, ho * wo * c);
    dx.par_chunks_mut(image_in)
        .zip(x.par_chunks(image_in))
        .zip(y.par_chunks(image_out).zip(dy.par_chunks(image_out)))
        .for_each(|((dx, x), (y, dy))| {
            dx.fill(0.0);
            for oy in 0..ho {
                for ox in 0..wo {
                    let o = (oy * wo + ox) * c;
                    // Up to CHANNELS channels at a time; taps in window
                    // order: each channel's first tap holding its output's
                    // bits wins.
                    for c0 in (0..c).step_by(CHANNELS) {
                        let n = CHANNELS.min(c - c0);
                        let (y, dy) = (&y[o + c0..][..n], &dy[o + c0..][..n]);
                        // Per channel: has its winner been found?
                        let mut found = [false; CHANNELS];
                        for (iy, ix) in window_taps(g, oy, ox) {
                            let p = (iy * g.in_w + ix) * c + c0;
                            let (dx, x) = (&mut dx[p..p + n], &x[p..p + n]);
                            route_kernel(dx, x, y, dy, &mut found[..n]);
                        }
                    }
                }
            }
        });
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
