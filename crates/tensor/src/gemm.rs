//! General matrix multiply, the one place every convolution and dense layer
//! ends up.
//!
//! `C = alpha * op(A) * op(B) + beta * C`, row-major and contiguous. The
//! single-threaded block kernel is `matrixmultiply::sgemm` (its own threading
//! feature stays off: we never nest a thread pool inside rayon). We split C
//! across rayon's threads here, along M when there are enough rows and along
//! N otherwise, so the small late-stage layers (M = 64 rows) still keep every
//! core busy.

use rayon::prelude::*;

/// Whether an operand is used as stored or transposed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trans {
    N,
    T,
}

/// The block kernel `sgemm` dispatches to on this machine.
pub fn kernel_name() -> &'static str {
    "matrixmultiply"
}

/// Below this many multiply-adds a GEMM runs on the calling thread: the cost of
/// waking the pool outweighs the work.
const PARALLEL_MIN_MACS: usize = 1 << 18;

/// `C = alpha * op(A) * op(B) + beta * C`.
///
/// `op(A)` is `m x k`: stored `m x k` for [`Trans::N`], `k x m` for [`Trans::T`].
/// `op(B)` is `k x n`: stored `k x n` for [`Trans::N`], `n x k` for [`Trans::T`].
/// `C` is `m x n`. When `beta == 0` the old contents of C are ignored (even NaN).
#[allow(clippy::too_many_arguments)]
pub fn sgemm(
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
    assert!(a.len() >= m * k, "sgemm: A holds {} < {m}x{k}", a.len());
    assert!(b.len() >= k * n, "sgemm: B holds {} < {k}x{n}", b.len());
    assert!(c.len() >= m * n, "sgemm: C holds {} < {m}x{n}", c.len());
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        scale_c(beta, &mut c[..m * n]);
        return;
    }
    // Row and column strides of A and B as stored.
    let (rsa, csa) = match ta {
        Trans::N => (k as isize, 1),
        Trans::T => (1, m as isize),
    };
    let (rsb, csb) = match tb {
        Trans::N => (n as isize, 1),
        Trans::T => (1, k as isize),
    };
    let threads = rayon::current_num_threads();
    let c = &mut c[..m * n];
    if threads == 1 || m * n * k < PARALLEL_MIN_MACS {
        block(
            m,
            n,
            k,
            alpha,
            a,
            rsa,
            csa,
            b,
            rsb,
            csb,
            beta,
            c.as_mut_ptr(),
            n as isize,
        );
        return;
    }
    // Enough rows for every thread to get a multiple of the kernel's 8..16-row
    // tile: split along M, each task owning whole rows of C.
    if m >= 64 * threads {
        let rows = (m.div_ceil(threads * 4)).next_multiple_of(16);
        c.par_chunks_mut(rows * n)
            .enumerate()
            .for_each(|(i, c_rows)| {
                let r0 = i * rows;
                let mr = c_rows.len() / n;
                // SAFETY: the offset row r0 of op(A) lies inside `a` (checked above).
                let a_off = unsafe { a.as_ptr().offset(r0 as isize * rsa) };
                unsafe {
                    matrixmultiply::sgemm(
                        mr,
                        k,
                        n,
                        alpha,
                        a_off,
                        rsa,
                        csa,
                        b.as_ptr(),
                        rsb,
                        csb,
                        beta,
                        c_rows.as_mut_ptr(),
                        n as isize,
                        1,
                    );
                }
            });
        return;
    }
    // Few rows (late stages, dense layers): split along N instead. Column
    // blocks of C are interleaved in memory, so each task writes through a raw
    // pointer to its own disjoint set of columns.
    let cols = n.div_ceil(threads * 2).next_multiple_of(16).min(n);
    let c_ptr = SendPtr(c.as_mut_ptr());
    (0..n.div_ceil(cols)).into_par_iter().for_each(|j| {
        let c0 = j * cols;
        let nc = cols.min(n - c0);
        let c_ptr = &c_ptr;
        // SAFETY: tasks write disjoint column ranges [c0, c0+nc) of C, and the
        // column offset of op(B) stays inside `b`.
        unsafe {
            let b_off = b.as_ptr().offset(c0 as isize * csb);
            matrixmultiply::sgemm(
                m,
                k,
                nc,
                alpha,
                a.as_ptr(),
                rsa,
                csa,
                b_off,
                rsb,
                csb,
                beta,
                c_ptr.0.add(c0),
                n as isize,
                1,
            );
        }
    });
}

/// A raw pointer that may cross threads; used only for disjoint writes.
struct SendPtr(*mut f32);
unsafe impl Sync for SendPtr {}
unsafe impl Send for SendPtr {}

#[allow(clippy::too_many_arguments)]
fn block(
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: &[f32],
    rsa: isize,
    csa: isize,
    b: &[f32],
    rsb: isize,
    csb: isize,
    beta: f32,
    c: *mut f32,
    rsc: isize,
) {
    // SAFETY: the caller checked that A, B and C hold the full operands.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            alpha,
            a.as_ptr(),
            rsa,
            csa,
            b.as_ptr(),
            rsb,
            csb,
            beta,
            c,
            rsc,
            1,
        );
    }
}

fn scale_c(beta: f32, c: &mut [f32]) {
    if beta == 0.0 {
        c.fill(0.0);
    } else {
        c.iter_mut().for_each(|v| *v *= beta);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference;

    fn seq(len: usize, seed: u32) -> Vec<f32> {
        (0..len)
            .map(|i| {
                (((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 8) % 1000) as f32
                    / 500.0
                    - 1.0
            })
            .collect()
    }

    #[test]
    fn matches_reference_for_all_transposes_and_splits() {
        // Shapes that take each path: serial, split along M, split along N.
        for &(m, n, k) in &[(3, 5, 7), (1024, 33, 17), (64, 300, 40), (64, 2048, 512)] {
            for ta in [Trans::N, Trans::T] {
                for tb in [Trans::N, Trans::T] {
                    let a = seq(m * k, 1);
                    let b = seq(k * n, 2);
                    let mut c = seq(m * n, 3);
                    let mut want = c.clone();
                    sgemm(m, n, k, 0.5, &a, ta, &b, tb, 2.0, &mut c);
                    reference::gemm(m, n, k, 0.5, &a, ta, &b, tb, 2.0, &mut want);
                    let err = c
                        .iter()
                        .zip(&want)
                        .map(|(x, y)| (x - y).abs())
                        .fold(0.0, f32::max);
                    // Sums of k products of numbers in [-1, 1]: f32 rounding
                    // grows like sqrt(k) * 2^-24 * k; 1e-4 * k is generous.
                    assert!(
                        err <= 1e-4 * k as f32,
                        "{m}x{n}x{k} {ta:?}{tb:?}: max err {err}"
                    );
                }
            }
        }
    }

    #[test]
    fn beta_zero_ignores_nan_in_c() {
        let mut c = vec![f32::NAN; 4];
        sgemm(
            2,
            2,
            1,
            1.0,
            &[1.0, 2.0],
            Trans::N,
            &[3.0, 4.0],
            Trans::N,
            0.0,
            &mut c,
        );
        assert_eq!(c, vec![3.0, 4.0, 6.0, 8.0]);
    }
}
