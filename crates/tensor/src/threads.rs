//! How many threads the kernels use.
//!
//! Every parallel kernel runs on rayon's *current* pool: the global pool by
//! default (one thread per core, or `RAYON_NUM_THREADS` when that is set), or
//! whichever pool the caller entered with `ThreadPool::install`.

use crate::error::{Result, TensorError};

/// Threads the kernels called from here will use.
pub fn num_threads() -> usize {
    rayon::current_num_threads()
}

/// Sizes the global pool to `n` threads (0 = one per core, or
/// `RAYON_NUM_THREADS`). Rayon builds its global pool once, on first use, so
/// call this before any kernel runs; afterwards it succeeds only if the pool
/// already has the requested size, and errors otherwise.
pub fn set_num_threads(n: usize) -> Result<()> {
    match rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build_global()
    {
        Ok(()) => Ok(()),
        Err(e) => {
            let want = if n == 0 { default_threads() } else { n };
            if rayon::current_num_threads() == want {
                Ok(())
            } else {
                Err(TensorError::Geometry(format!(
                    "set_num_threads({n}): the global thread pool already runs {} threads ({e})",
                    rayon::current_num_threads()
                )))
            }
        }
    }
}

/// What rayon would pick for a pool of "0" threads.
fn default_threads() -> usize {
    std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|&n: &usize| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}
