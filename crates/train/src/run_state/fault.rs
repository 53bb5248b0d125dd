//! Fault injection for the checkpoint protocol's tests: make the N-th write
//! boundary of a save fail, as a kill or a full disk would.
//!
//! Every step of a save that touches the disk (each file written into the
//! unit, the manifest, the commit rename, the refresh of the top-level
//! `model.safetensors`, the removal of old units) first passes
//! [`point`]. Normally that is one thread-local read, nothing more; a test
//! arms a fault with [`arm`] and the save fails exactly there:
//!
//! - [`Fault::Kill`]: the save stops as if the process had died: it returns
//!   an error and runs none of its clean-up, so whatever it had written so
//!   far stays on disk for the next resume or save to deal with;
//! - [`Fault::Io`]: the write fails with that error (`StorageFull` is a full
//!   disk); a file being written is cut to half its length first, as a
//!   disk that fills up mid-file leaves it. The save cleans up as it would
//!   after a real error.
//!
//! The plan is per thread (tests run in parallel, each saves on its own
//! thread) and disarms itself once it fired. Hidden from the docs: nothing
//! but tests should call it.

use std::cell::Cell;
use std::io;

/// How an armed boundary fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The process dies here: no clean-up runs.
    Kill,
    /// The operation fails with this error kind.
    Io(io::ErrorKind),
}

thread_local! {
    /// Boundaries passed on this thread since [`reset`].
    static PASSED: Cell<usize> = const { Cell::new(0) };
    /// The boundary (counted like `PASSED`) that fails, and how.
    static ARMED: Cell<Option<(usize, Fault)>> = const { Cell::new(None) };
    /// Whether a [`Fault::Kill`] fired since [`reset`].
    static KILLED: Cell<bool> = const { Cell::new(false) };
}

/// Forgets any armed fault and restarts the boundary count at 0.
pub fn reset() {
    PASSED.with(|p| p.set(0));
    ARMED.with(|a| a.set(None));
    KILLED.with(|k| k.set(false));
}

/// Restarts the count and makes boundary `n` (0-based, counted from now on
/// this thread) fail with `fault`.
pub fn arm(n: usize, fault: Fault) {
    reset();
    ARMED.with(|a| a.set(Some((n, fault))));
}

/// Boundaries passed on this thread since the last [`reset`] or [`arm`]:
/// run one save unarmed to learn how many a save has.
pub fn passed() -> usize {
    PASSED.with(Cell::get)
}

/// Whether an armed fault is still waiting to fire.
pub fn pending() -> bool {
    ARMED.with(Cell::get).is_some()
}

/// Whether a [`Fault::Kill`] fired: the save must not clean up.
pub(crate) fn killed() -> bool {
    KILLED.with(Cell::get)
}

/// A write boundary: `Err` if the armed fault is due here. `what` names
/// the operation in the error.
pub(crate) fn point(what: &str) -> io::Result<()> {
    let n = PASSED.with(|p| {
        let n = p.get();
        p.set(n + 1);
        n
    });
    match ARMED.with(Cell::get) {
        Some((at, fault)) if at == n => {
            ARMED.with(|a| a.set(None));
            Err(match fault {
                Fault::Kill => {
                    KILLED.with(|k| k.set(true));
                    io::Error::other(format!("{what}: killed (injected fault)"))
                }
                Fault::Io(kind) => io::Error::new(kind, format!("{what}: injected fault")),
            })
        }
        _ => Ok(()),
    }
}
