//! The thread-count API. One test per binary: rayon's global pool is built once.

use tensor::{num_threads, set_num_threads};

#[test]
fn set_num_threads_sizes_the_global_pool_once() {
    set_num_threads(3).unwrap();
    assert_eq!(num_threads(), 3);
    // Asking again for the same size is fine; another size is an error.
    set_num_threads(3).unwrap();
    assert!(set_num_threads(2).is_err());
    // The kernels run on it and still agree with the references.
    let a: Vec<f32> = (0..300 * 200).map(|i| (i % 7) as f32 - 3.0).collect();
    let b: Vec<f32> = (0..200 * 100).map(|i| (i % 5) as f32 - 2.0).collect();
    let mut c = vec![0.0; 300 * 100];
    let mut want = c.clone();
    tensor::sgemm(
        300,
        100,
        200,
        1.0,
        &a,
        tensor::Trans::N,
        &b,
        tensor::Trans::N,
        0.0,
        &mut c,
    );
    tensor::reference::gemm(
        300,
        100,
        200,
        1.0,
        &a,
        tensor::Trans::N,
        &b,
        tensor::Trans::N,
        0.0,
        &mut want,
    );
    // Small integers: every partial sum is exact in f32.
    assert_eq!(c, want);
}
