//! A process-wide pool of large f32 buffers, so tensors allocated every
//! training step reuse the memory of the previous step's instead of asking
//! the OS for fresh pages.
//!
//! Why: glibc serves large allocations with `mmap` and returns them with
//! `munmap`, so every activation of every step was paid for again in page
//! faults: ~60,000 per ResNet50 step at batch 64, a quarter of the step in the
//! kernel. A tensor's buffer now goes back here when the tensor is dropped,
//! and [`take`] hands it out again for the next tensor of the same length.
//!
//! Only buffers of at least [`MIN_POOLED`] floats are pooled (small ones are
//! cheap for malloc), and the pool holds at most [`MAX_POOLED_BYTES`]; beyond
//! that, returned buffers are freed as before.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// Smallest pooled buffer, in floats (256 KiB).
pub const MIN_POOLED: usize = 1 << 16;
/// Most memory the pool keeps idle.
pub const MAX_POOLED_BYTES: usize = 1 << 30;

struct Pool {
    /// Idle buffers by capacity, each with length 0.
    free: HashMap<usize, Vec<Vec<f32>>>,
    bytes: usize,
}

static POOL: Mutex<Option<Pool>> = Mutex::new(None);

/// Whether [`take_for_overwrite`] fills its buffers with NaN (tests).
static POISON: AtomicBool = AtomicBool::new(false);

/// An empty buffer with capacity exactly `len`, reused when one is idle.
pub fn take(len: usize) -> Vec<f32> {
    take_pooled(len).unwrap_or_else(|| Vec::with_capacity(len))
}

/// An idle pooled buffer of capacity `len` (length 0), if there is one.
fn take_pooled(len: usize) -> Option<Vec<f32>> {
    if len < MIN_POOLED {
        return None;
    }
    let mut guard = POOL.lock().unwrap_or_else(|e| e.into_inner());
    let pool = guard.as_mut()?;
    let v = pool.free.get_mut(&len).and_then(Vec::pop)?;
    pool.bytes -= len * 4;
    Some(v)
}

/// A buffer of exactly `len` values whose contents are unspecified: the
/// values of an earlier tensor when a recycled buffer is idle, else zeros.
///
/// For outputs that a kernel overwrites completely (a convolution, a
/// batchnorm, an elementwise op): it saves the pass that would zero them
/// first, a write of every activation on every step. All values are valid
/// `f32`s; a kernel that forgot to write some would produce stale numbers,
/// which is what [`poison_recycled`] makes tests see.
pub fn take_for_overwrite(len: usize) -> Vec<f32> {
    let poison = POISON.load(Ordering::Relaxed);
    match take_pooled(len) {
        Some(mut v) if !poison => {
            // SAFETY: `give` pools only full buffers (length = capacity =
            // `len`, every element written) and `Vec::clear` on f32s leaves
            // the memory as it was, so all `len` elements are initialized;
            // every bit pattern is a valid f32.
            unsafe { v.set_len(len) };
            v
        }
        Some(mut v) => {
            v.resize(len, f32::NAN);
            v
        }
        // Fresh memory: zeros come straight from the allocator (calloc).
        None if !poison => vec![0.0; len],
        None => vec![f32::NAN; len],
    }
}

/// Makes [`take_for_overwrite`] hand out NaN-filled buffers, so any element
/// a kernel leaves unwritten shows up as NaN (for tests; off by default).
pub fn poison_recycled(on: bool) {
    POISON.store(on, Ordering::Relaxed);
}

/// Returns a buffer for reuse (or frees it when small or the pool is full).
/// Only full buffers (length = capacity, every element written) are kept,
/// which is what lets [`take_for_overwrite`] hand their memory out as is.
pub fn give(mut v: Vec<f32>) {
    let cap = v.capacity();
    if cap < MIN_POOLED || v.len() != cap {
        return;
    }
    let mut guard = POOL.lock().unwrap_or_else(|e| e.into_inner());
    let pool = guard.get_or_insert_with(|| Pool {
        free: HashMap::new(),
        bytes: 0,
    });
    if pool.bytes + cap * 4 > MAX_POOLED_BYTES {
        return;
    }
    v.clear();
    pool.bytes += cap * 4;
    pool.free.entry(cap).or_default().push(v);
}

/// Frees every idle buffer (e.g. between phases with different shapes).
pub fn clear() {
    *POOL.lock().unwrap_or_else(|e| e.into_inner()) = None;
}

/// Bytes held idle in the pool.
pub fn idle_bytes() -> usize {
    POOL.lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
        .map_or(0, |p| p.bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_returned_buffer_is_handed_out_again() {
        let len = MIN_POOLED + 12345;
        let mut v = take(len);
        v.resize(len, 1.0);
        let ptr = v.as_ptr();
        give(v);
        let again = take(len);
        assert_eq!(again.as_ptr(), ptr);
        assert!(again.is_empty() && again.capacity() == len);
        // Small buffers are not pooled.
        give(vec![0.0; 10]);
        assert_eq!(take(10).capacity(), 10);
    }

    #[test]
    fn buffers_for_overwrite_recycle_full_buffers_only() {
        let len = MIN_POOLED + 777;
        let v = vec![3.0f32; len];
        let ptr = v.as_ptr();
        give(v);
        let again = take_for_overwrite(len);
        assert_eq!((again.as_ptr(), again.len()), (ptr, len));
        assert!(again.iter().all(|&x| x == 3.0), "recycled values kept");
        // A partly filled buffer is not pooled: its tail was never written.
        let mut partial = Vec::with_capacity(len + 1);
        partial.resize(len, 1.0);
        give(partial);
        assert!(take_pooled(len + 1).is_none());
    }
}
