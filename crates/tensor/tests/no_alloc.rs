//! The hot kernels allocate nothing once warm: im2col tiles, packed GEMM
//! blocks, trimmed kernels and partial gradients come from per-thread scratch.
//! Counted with a global allocator that tallies the current thread's
//! allocations, on a one-thread pool so every task runs on that thread.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use tensor::conv::{conv2d_backward_input, conv2d_backward_kernel, conv2d_forward};
use tensor::pool::max_pool_forward;
use tensor::{sgemm, ConvGeometry, Padding, PoolGeometry, Trans};

struct Counting;

thread_local! {
    static ALLOCS: Cell<usize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // try_with: the thread-local may already be gone at thread exit.
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations made by this thread while running `f`.
fn allocations(f: impl FnOnce()) -> usize {
    let before = ALLOCS.with(Cell::get);
    f();
    ALLOCS.with(Cell::get) - before
}

#[test]
fn warm_kernels_do_not_allocate() {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    // The counter sees this thread's allocations.
    assert_eq!(allocations(|| drop(std::hint::black_box(vec![1u8; 10]))), 1);
    pool.install(|| {
        let geometries = [
            // im2col path, trimmed path (3x3 on 1x1), pointwise, stride 2.
            (8, 3, 16, 24, 1, Padding::uniform(1)),
            (1, 3, 16, 24, 1, Padding::uniform(1)),
            (4, 1, 16, 24, 1, Padding::ZERO),
            (6, 1, 16, 24, 2, Padding::ZERO),
        ];
        for (hw, k, cin, cout, stride, padding) in geometries {
            let g = ConvGeometry {
                batch: 5,
                in_h: hw,
                in_w: hw,
                in_c: cin,
                kernel_h: k,
                kernel_w: k,
                out_c: cout,
                stride,
                padding,
            };
            let x = vec![0.5f32; g.input_shape().iter().product()];
            let w = vec![0.25f32; g.kernel_shape().iter().product()];
            let b = vec![0.1f32; cout];
            let mut y = vec![0.0f32; g.output_shape().iter().product()];
            let mut dx = vec![0.0f32; x.len()];
            let mut dw = vec![0.0f32; w.len()];
            let mut run = || {
                conv2d_forward(&g, &x, &w, Some(&b), &mut y);
                conv2d_backward_input(&g, &y, &w, &mut dx);
                conv2d_backward_kernel(&g, &x, &y, &mut dw, true);
            };
            run();
            assert_eq!(allocations(run), 0, "conv {g:?}");
        }

        let (m, n, k) = (70, 90, 300);
        let a = vec![1.0f32; m * k];
        let bm = vec![1.0f32; k * n];
        let mut c = vec![0.0f32; m * n];
        for (ta, tb) in [(Trans::N, Trans::N), (Trans::T, Trans::T)] {
            let mut run = || sgemm(m, n, k, 1.0, &a, ta, &bm, tb, 0.0, &mut c);
            run();
            assert_eq!(allocations(run), 0, "sgemm {ta:?}{tb:?}");
        }

        let g = PoolGeometry {
            batch: 2,
            in_h: 18,
            in_w: 18,
            channels: 8,
            kernel: 3,
            stride: 2,
            padding: Padding::ZERO,
        };
        let x = vec![1.0f32; 2 * 18 * 18 * 8];
        let mut y = vec![0.0f32; 2 * 8 * 8 * 8];
        let mut run = || max_pool_forward(&g, &x, &mut y);
        run();
        assert_eq!(allocations(run), 0, "max pool");
    });
}
