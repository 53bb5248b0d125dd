//! Reusable per-thread scratch buffers, so the hot kernels allocate nothing
//! after their first call on a thread.
//!
//! A buffer is *taken* out of its thread-local slot for the duration of a
//! call and put back afterwards, never borrowed across the call: a rayon
//! worker that steals another kernel call while waiting (nested parallelism)
//! finds the slot empty and allocates a fresh buffer instead of panicking on
//! a double borrow. The larger of the two buffers is kept.

use std::cell::Cell;

/// Independent scratch slots, so a kernel can hold two buffers at once.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Slot {
    /// The im2col matrix (or its gradient).
    Cols,
    /// Small side buffers: trimmed kernels.
    Side,
    /// Per-thread partial kernel gradients.
    Partial,
    /// The GEMM's packed operand blocks.
    Pack,
}

thread_local! {
    static COLS: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
    static SIDE: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
    static PARTIAL: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
    static PACK: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
}

/// Runs `f` on a scratch slice of `len` floats from this thread's `slot`. The
/// contents on entry are unspecified (stale data from an earlier call).
pub(crate) fn with_scratch<R>(slot: Slot, len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    let key = match slot {
        Slot::Cols => &COLS,
        Slot::Side => &SIDE,
        Slot::Partial => &PARTIAL,
        Slot::Pack => &PACK,
    };
    let mut buf = key.with(Cell::take);
    if buf.len() < len {
        buf = Vec::new();
        buf.resize(len, 0.0);
    }
    let r = f(&mut buf[..len]);
    key.with(|cell| {
        let other = cell.take();
        cell.set(if other.len() > buf.len() { other } else { buf });
    });
    r
}
