//! Pauses the CLI tests use to deliver a signal at a chosen point of a run,
//! deterministically: no sleep racing the work.
//!
//! With the environment variable [`VAR`] naming a point ([`LOADING`]: the
//! data is listed and about to be decoded; [`EVALUATION`]: an epoch's
//! evaluation is about to start), the process prints
//! `test hook: paused at <point>` on stdout when it first gets there, then
//! waits until its stop flag is raised (a test sends SIGTERM on reading the
//! line), at most [`MAX_WAIT`], and goes on: whatever follows must then
//! honour the raised flag. Unset (always, outside the tests), a pause point
//! is one check of a cached `Option`. Hidden from the docs: only tests set
//! it.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The environment variable naming the point to pause at.
pub const VAR: &str = "RESNET_RS_TEST_PAUSE";
/// The data is listed and is about to be decoded.
pub const LOADING: &str = "loading";
/// An epoch's evaluation is about to start.
pub const EVALUATION: &str = "evaluation";
/// Longest wait for the stop flag: a test that never signals still ends.
pub const MAX_WAIT: Duration = Duration::from_secs(60);

/// The point [`VAR`] names, read once.
fn armed() -> Option<&'static str> {
    static POINT: OnceLock<Option<String>> = OnceLock::new();
    POINT
        .get_or_init(|| std::env::var(VAR).ok().filter(|v| !v.is_empty()))
        .as_deref()
}

/// Pauses at `point` if [`VAR`] names it (once per process): prints the
/// marker, then waits for `stop`.
pub fn pause(point: &str, stop: &AtomicBool) {
    static FIRED: AtomicBool = AtomicBool::new(false);
    if armed() != Some(point) || FIRED.swap(true, Ordering::SeqCst) {
        return;
    }
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "test hook: paused at {point}");
    let _ = out.flush();
    drop(out);
    let began = Instant::now();
    while !stop.load(Ordering::SeqCst) && began.elapsed() < MAX_WAIT {
        std::thread::sleep(Duration::from_millis(5));
    }
}
