//! Claiming a run directory: one process at a time, never an existing run
//! overwritten by accident, default names that cannot collide.
//!
//! - A fresh run into a directory that already holds a run is refused
//!   unless `--overwrite` is given; an existing empty directory is used.
//! - While a process trains into a directory it holds [`LOCK_FILE`] there,
//!   naming its process instance (pid, start time, boot, host): a second
//!   process refuses and names the holder. A lock left by a process that no
//!   longer runs (a `kill -9`, a power cut, its pid since reused) is taken
//!   over with a note (see [`lock`]).
//! - The default directory is `runs/run-<UTC time>-<pid>` under the current
//!   directory, created with `create_dir` (which fails if it exists) and
//!   retried with a suffix, so two runs started in the same second get two
//!   directories.

pub mod lock;

pub use lock::{RunLock, LOCK_FILE};

use crate::run_state::CONFIG_FILE;
use anyhow::{bail, Context, Result};
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

/// A directory claimed for a fresh run, locked.
#[derive(Debug)]
pub struct FreshRun {
    pub dir: PathBuf,
    pub lock: RunLock,
    /// Whether this process created the directory (and so may remove it
    /// again if the run fails before it saved anything).
    pub created: bool,
}

/// Claims `out` (or a new default directory) for a fresh run.
pub fn claim_fresh(out: Option<&Path>, overwrite: bool) -> Result<FreshRun> {
    let Some(dir) = out else {
        let dir = create_default_dir(Path::new("runs"))?;
        let lock = RunLock::acquire(&dir)?;
        return Ok(FreshRun {
            dir,
            lock,
            created: true,
        });
    };
    if dir.as_os_str().is_empty() {
        bail!("--out is empty: give a directory");
    }
    let created = match std::fs::create_dir(dir) {
        Ok(()) => true,
        Err(e) if e.kind() == ErrorKind::AlreadyExists && dir.is_dir() => false,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating run directory {}", dir.display()))?;
            true
        }
        Err(e) => {
            return Err(e).with_context(|| format!("creating run directory {}", dir.display()))
        }
    };
    let lock = RunLock::acquire(dir)?;
    if !created {
        let others = entries_except_lock(dir)?;
        if !others.is_empty() {
            if !dir.join(CONFIG_FILE).is_file() {
                bail!(
                    "--out {}: the directory is not empty and holds no run ({} absent); \
                     choose an empty or new directory",
                    dir.display(),
                    CONFIG_FILE
                );
            }
            if !overwrite {
                bail!(
                    "--out {} already holds a run; continue it with --resume {}, choose another \
                     --out, or pass --overwrite to replace it",
                    dir.display(),
                    dir.display()
                );
            }
            for p in others {
                let removed = if p.is_dir() {
                    std::fs::remove_dir_all(&p)
                } else {
                    std::fs::remove_file(&p)
                };
                removed.with_context(|| format!("--overwrite: removing {}", p.display()))?;
            }
            eprintln!("note: --overwrite: replaced the run in {}", dir.display());
        }
    }
    Ok(FreshRun {
        dir: dir.to_path_buf(),
        lock,
        created,
    })
}

impl FreshRun {
    /// After a run that failed: removes the directory again if this process
    /// created it and nothing but its own bookkeeping files is in it (no
    /// checkpoint, no metrics), so a refused run leaves nothing behind.
    pub fn discard_if_unused(self, bookkeeping: &[&str]) {
        let FreshRun { dir, lock, created } = self;
        drop(lock);
        if !created {
            return;
        }
        let Ok(entries) = entries_except_lock(&dir) else {
            return;
        };
        let unused = entries.iter().all(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| bookkeeping.contains(&n))
        });
        if unused {
            for p in &entries {
                let _ = std::fs::remove_file(p);
            }
            let _ = std::fs::remove_dir(&dir);
        }
    }
}

fn entries_except_lock(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let e = e.with_context(|| format!("reading {}", dir.display()))?;
        if e.file_name() != LOCK_FILE {
            out.push(e.path());
        }
    }
    Ok(out)
}

/// Creates `parent/run-<UTC time>-<pid>`, with `-2`, `-3`... on a collision.
pub fn create_default_dir(parent: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let base = format!("run-{}-{}", utc_stamp(secs), std::process::id());
    for n in 1..1000 {
        let name = if n == 1 {
            base.clone()
        } else {
            format!("{base}-{n}")
        };
        let dir = parent.join(name);
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
            Err(e) => {
                return Err(e).with_context(|| format!("creating run directory {}", dir.display()))
            }
        }
    }
    bail!(
        "{}: could not find a free run directory name",
        parent.display()
    )
}

/// `YYYYMMDD-HHMMSS` of a Unix time, in UTC.
fn utc_stamp(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}-{:02}{:02}{:02}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_stamps() {
        assert_eq!(utc_stamp(0), "19700101-000000");
        // 2024-02-29 12:34:56 UTC.
        assert_eq!(utc_stamp(1_709_210_096), "20240229-123456");
    }

    #[test]
    fn default_names_never_collide() {
        let parent = tempfile::tempdir().unwrap();
        let a = create_default_dir(parent.path()).unwrap();
        let b = create_default_dir(parent.path()).unwrap();
        assert_ne!(a, b);
        assert!(a.is_dir() && b.is_dir());
    }
}
