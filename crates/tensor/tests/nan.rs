//! A NaN must survive ReLU and max pool, so that a diverging network shows
//! up in its loss instead of being quietly zeroed.

use tensor::pool::{max_pool_backward, max_pool_forward};
use tensor::{elementwise, Padding, PoolGeometry};

#[test]
fn relu_passes_nan_through() {
    let x = [f32::NAN, -1.0, 2.0, 0.0];
    let mut y = [0.0; 4];
    elementwise::relu(&x, &mut y);
    assert!(y[0].is_nan());
    assert_eq!(&y[1..], &[0.0, 2.0, 0.0]);
    assert!(tensor::reference::relu(&x)[0].is_nan());
}

#[test]
fn max_pool_of_a_nan_window_is_nan_and_routes_to_a_valid_input() {
    let g = PoolGeometry {
        batch: 2,
        in_h: 2,
        in_w: 2,
        channels: 1,
        kernel: 2,
        stride: 2,
        padding: Padding::ZERO,
    };
    // Image 0 is ordinary; image 1 is all NaN.
    let x = [1.0, 3.0, 2.0, 0.0, f32::NAN, f32::NAN, f32::NAN, f32::NAN];
    let mut y = [0.0; 2];
    max_pool_forward(&g, &x, &mut y);
    assert_eq!(y[0], 3.0);
    assert!(y[1].is_nan());
    let mut dx = [0.0; 8];
    max_pool_backward(&g, &x, &y, &[1.0, 1.0], &mut dx);
    assert_eq!(dx, [0.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0]);
}
