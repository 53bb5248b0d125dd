//! Pooling kernels against the naive references: max pool forward (values
//! exactly: no arithmetic is involved), max pool backward (routed to the
//! reference's argmax: ties must go to the first maximum in window order, so
//! inputs are often coarse integers that tie, and signed zeros), global
//! average pool forward and backward.

use proptest::prelude::*;
use tensor::pool::{
    global_avg_pool_backward, global_avg_pool_forward, max_pool_backward, max_pool_forward,
};
use tensor::testing::{abs, assert_close, assert_panics, coarse, data};
use tensor::{reference, Padding, PoolGeometry};

fn geometry() -> impl Strategy<Value = PoolGeometry> {
    (
        prop_oneof![Just(1usize), Just(2), Just(3)],
        (1usize..=11, 1usize..=11),
        1usize..=19,
        1usize..=3,
        1usize..=2,
        (0usize..3, 0usize..3, 0usize..3, 0usize..3),
    )
        .prop_map(|(batch, (h, w), channels, kernel, stride, (t, b, l, r))| {
            // Padding must stay below the window.
            let p = |v: usize| v.min(kernel - 1);
            let padding = Padding {
                top: p(t),
                bottom: p(b),
                left: p(l),
                right: p(r),
            };
            PoolGeometry {
                batch,
                in_h: h.max(kernel),
                in_w: w.max(kernel),
                channels,
                kernel,
                stride,
                padding,
            }
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn max_pool_matches_reference(g in geometry(), ties in any::<bool>(), seed in any::<u32>()) {
        let seed = seed as u64;
        let in_len: usize = g.input_shape().iter().product();
        let out_len: usize = g.output_shape().iter().product();
        let mut x = if ties { coarse(in_len, seed) } else { data(in_len, seed) };
        if ties {
            // Zeros of both signs: equal values, different bits.
            x.iter_mut().step_by(3).filter(|v| **v == 0.0).for_each(|v| *v = -0.0);
        }
        let mut y = vec![f32::NAN; out_len];
        max_pool_forward(&g, &x, &mut y);
        let (want_y, want_arg) = reference::max_pool_forward(&g, &x);
        let bits = |v: &[f32]| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        prop_assert_eq!(bits(&y), bits(&want_y));

        // Backward: overlapping windows add up; f32 vs f64 sums of a few terms.
        let dy = data(out_len, seed + 1);
        let mut dx = vec![f32::NAN; in_len];
        max_pool_backward(&g, &x, &y, &dy, &mut dx);
        let want = reference::max_pool_backward(&dy, &want_arg, in_len);
        let bound = reference::max_pool_backward(&abs(&dy), &want_arg, in_len);
        assert_close("max pool backward", &dx, &want, &bound, 1e-6);
        // Sums in output order per image: the thread count changes nothing.
        let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
        let mut dx_one = vec![f32::NAN; in_len];
        one.install(|| max_pool_backward(&g, &x, &y, &dy, &mut dx_one));
        prop_assert_eq!(&dx_one, &dx);
        assert_panics("output gradient has", || max_pool_backward(&g, &x, &y, &dy[1..], &mut dx));
    }

    #[test]
    fn global_avg_pool_matches_reference(
        batch in 1usize..=5, hw in 1usize..=70, c in 1usize..=40, seed in any::<u32>(),
    ) {
        let seed = seed as u64;
        let x = data(batch * hw * c, seed);
        let mut y = vec![f32::NAN; batch * c];
        global_avg_pool_forward(&x, batch, hw, c, &mut y);
        let want = reference::global_avg_pool_forward(&x, batch, hw, c);
        let bound = reference::global_avg_pool_forward(&abs(&x), batch, hw, c);
        // A mean of hw values: f32 sum error ~ hw * 2^-24 relative to the bound.
        assert_close("global avg pool", &y, &want, &bound, 1e-5);

        let dy = data(batch * c, seed + 1);
        let mut dx = vec![f32::NAN; batch * hw * c];
        global_avg_pool_backward(&dy, batch, hw, c, &mut dx);
        let want = reference::global_avg_pool_backward(&dy, batch, hw, c);
        // One multiplication by 1/hw (itself rounded): 2 ulps.
        assert_close("global avg pool backward", &dx, &want, &abs(&want), 2.5e-7);
    }
}

/// More channels than the backward routes at once (it works in runs of 64):
/// every run must find its own winners.
#[test]
fn max_pool_backward_with_many_channels() {
    let g = PoolGeometry {
        batch: 2,
        in_h: 5,
        in_w: 6,
        channels: 150,
        kernel: 3,
        stride: 2,
        padding: Padding::uniform(1),
    };
    let (in_len, out_len) = (
        g.input_shape().iter().product::<usize>(),
        g.output_shape().iter().product::<usize>(),
    );
    let x = coarse(in_len, 11);
    let mut y = vec![f32::NAN; out_len];
    max_pool_forward(&g, &x, &mut y);
    let (want_y, want_arg) = reference::max_pool_forward(&g, &x);
    assert_eq!(y, want_y);
    let dy = data(out_len, 12);
    let mut dx = vec![f32::NAN; in_len];
    max_pool_backward(&g, &x, &y, &dy, &mut dx);
    let want = reference::max_pool_backward(&dy, &want_arg, in_len);
    let bound = reference::max_pool_backward(&abs(&dy), &want_arg, in_len);
    assert_close("max pool backward, 150 channels", &dx, &want, &bound, 1e-6);
}

/// A window that sees only negative values and padding must pick a real
/// pixel: padding counts as -inf, not 0.
#[test]
fn padding_never_wins() {
    let g = PoolGeometry {
        batch: 1,
        in_h: 2,
        in_w: 2,
        channels: 1,
        kernel: 3,
        stride: 2,
        padding: Padding::uniform(1),
    };
    let x = [-4.0, -3.0, -2.0, -5.0];
    let mut y = [0.0];
    max_pool_forward(&g, &x, &mut y);
    assert_eq!(y[0], -2.0);
    let mut dx = [9.0; 4];
    max_pool_backward(&g, &x, &y, &[1.0], &mut dx);
    assert_eq!(dx, [0.0, 0.0, 1.0, 0.0]);
}

#[test]
fn bad_geometry_is_a_violated_precondition() {
    let g = PoolGeometry {
        batch: 1,
        in_h: 4,
        in_w: 4,
        channels: 2,
        kernel: 3,
        stride: 2,
        padding: Padding::uniform(3),
    };
    let mut y = vec![0.0; 2 * 2 * 2 * 2];
    assert_panics("must be smaller than the window", || {
        max_pool_forward(&g, &[0.0; 32], &mut y)
    });
    let g = PoolGeometry {
        padding: Padding::ZERO,
        ..g
    };
    // Output should be 1x1x2: wrong lengths.
    assert_panics("output has 3 elements, expected 2", || {
        max_pool_forward(&g, &[0.0; 32], &mut [0.0; 3])
    });
}
