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

/// An empty buffer with capacity exactly `len`, reused when one is idle.
pub fn take(len: usize) -> Vec<f32> {
    if len >= MIN_POOLED {
        let mut guard = POOL.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(pool) = guard.as_mut() {
            if let Some(v) = pool.free.get_mut(&len).and_then(Vec::pop) {
                pool.bytes -= len * 4;
                return v;
            }
        }
    }
    Vec::with_capacity(len)
}

/// Returns a buffer for reuse (or frees it when small or the pool is full).
pub fn give(mut v: Vec<f32>) {
    let cap = v.capacity();
    if cap < MIN_POOLED {
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
}
