//! The lock a training process holds in its run directory, and how a lock
//! left behind is told from a live one.
//!
//! A pid alone cannot say whether its process still runs: after a `kill -9`
//! or a reboot the pid is soon given to another process, and the old lock
//! would then look live for ever. So [`LOCK_FILE`] records the *process
//! instance*, one `key=value` per line:
//!
//! ```text
//! pid=12345
//! start=9876543      (clock ticks after boot: field 22 of /proc/<pid>/stat)
//! boot=b8eaf3d5-...  (/proc/sys/kernel/random/boot_id)
//! host=vm            (/proc/sys/kernel/hostname, else /etc/hostname)
//! ```
//!
//! A lock is judged, in this order:
//! - written on another host (a run directory on a shared file system):
//!   live, since that process cannot be checked from here;
//! - written in another boot of this machine: stale;
//! - its pid runs no process: stale;
//! - its pid runs a process that started at another time (the pid was
//!   reused): stale;
//! - otherwise live, and also whenever the process cannot be checked at all
//!   (refusing is safer than two runs writing into one directory).
//!
//! Where there is no `/proc` (not Linux), whether the pid runs is asked with
//! `kill -0`; start time and boot id are then unknown, so a reused pid still
//! looks live there. A lock holding only a pid (the format before this one)
//! is still read, and judged by its pid alone. Anything else in the file is
//! refused with a message naming it: it is not a lock this program wrote.
//!
//! A stale lock is replaced with a note naming it and why. The lock file is
//! created with its content in one step (written aside, then hard-linked
//! into place, which fails if a lock exists), so a reader never sees an
//! empty or half-written lock.

use anyhow::{bail, Context, Result};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

/// The lock file a training process holds in its run directory.
pub const LOCK_FILE: &str = "train.lock";

/// Held while a process trains into a run directory; removed on drop.
#[derive(Debug)]
pub struct RunLock {
    path: PathBuf,
}

impl RunLock {
    /// Takes the lock of `dir`, refusing if a live process holds it; a stale
    /// lock is taken over with a note on stderr.
    pub fn acquire(dir: &Path) -> Result<RunLock> {
        let (lock, note) = acquire_noting(dir)?;
        if let Some(note) = note {
            eprintln!("note: {note}");
        }
        Ok(lock)
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// [`RunLock::acquire`], returning the note about a stale lock taken over
/// instead of printing it.
fn acquire_noting(dir: &Path) -> Result<(RunLock, Option<String>)> {
    let path = dir.join(LOCK_FILE);
    let content = Holder::this_process().render();
    let mut note = None;
    // Two attempts: the second after removing a stale lock.
    for _ in 0..2 {
        match create_with(&path, &content) {
            Ok(()) => return Ok((RunLock { path }, note)),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e).with_context(|| format!("creating {}", path.display())),
        }
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            // Released between our attempt and the read: try again.
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let Some(holder) = Holder::parse(&text) else {
            let shown: String = text.chars().take(80).collect();
            bail!(
                "{}: not a lock file this program writes (it holds {shown:?}); if no process \
                 is training into {}, remove it",
                path.display(),
                dir.display()
            );
        };
        match judge(&holder, &Machine::here(), probe(holder.pid)) {
            Verdict::Live(who) => bail!(
                "{} is in use: {who} (lock file {}); wait for it to finish or stop it first",
                dir.display(),
                path.display()
            ),
            Verdict::Stale(why) => {
                // Only the lock just judged: another process taking it over
                // at the same time may have replaced it already.
                if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
                    continue;
                }
                std::fs::remove_file(&path)
                    .with_context(|| format!("removing {}", path.display()))?;
                note = Some(format!(
                    "taking over the stale lock {} ({why})",
                    path.display()
                ));
            }
        }
    }
    bail!("{}: another process keeps taking the lock", path.display())
}

/// Creates `path` holding `content`, failing with `AlreadyExists` if it
/// exists: written to a private file first and hard-linked into place, so
/// the lock never exists without its content. Where hard links are not
/// supported, falls back to an exclusive create and a write.
fn create_with(path: &Path, content: &str) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut aside = tempfile::Builder::new()
        .prefix(".train.lock.")
        .suffix(".tmp")
        .tempfile_in(dir)?;
    aside.write_all(content.as_bytes())?;
    aside.as_file().sync_all()?;
    match std::fs::hard_link(aside.path(), path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Err(e),
        Err(_) => {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(path)?;
            f.write_all(content.as_bytes())
        }
    }
}

/// The process a lock names, as its file records it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Holder {
    pid: u32,
    /// Clock ticks after boot at which it started; `None` in an old
    /// (pid-only) lock or where it is unknown.
    start: Option<u64>,
    /// The boot it ran in.
    boot: Option<String>,
    host: Option<String>,
}

impl Holder {
    fn this_process() -> Holder {
        let pid = std::process::id();
        let start = match probe_proc(pid) {
            Some(ProcessState::Running { start }) => start,
            _ => None,
        };
        let here = Machine::here();
        Holder {
            pid,
            start,
            boot: here.boot,
            host: here.host,
        }
    }

    fn render(&self) -> String {
        let mut s = format!("pid={}\n", self.pid);
        if let Some(t) = self.start {
            s += &format!("start={t}\n");
        }
        if let Some(b) = &self.boot {
            s += &format!("boot={b}\n");
        }
        if let Some(h) = &self.host {
            s += &format!("host={h}\n");
        }
        s
    }

    /// A lock's content: `key=value` lines with at least a `pid`, or the
    /// old format, a lone pid. `None` for anything else (an empty file
    /// included). Unknown keys are ignored, for later versions.
    fn parse(text: &str) -> Option<Holder> {
        if let Ok(pid) = text.trim().parse::<u32>() {
            return Some(Holder {
                pid,
                start: None,
                boot: None,
                host: None,
            });
        }
        let (mut pid, mut start, mut boot, mut host) = (None, None, None, None);
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let (key, value) = line.split_once('=')?;
            let value = value.trim();
            match key.trim() {
                "pid" => pid = Some(value.parse().ok()?),
                "start" => start = Some(value.parse().ok()?),
                "boot" => boot = Some(value.to_string()),
                "host" => host = Some(value.to_string()),
                _ => {}
            }
        }
        Some(Holder {
            pid: pid?,
            start,
            boot,
            host,
        })
    }
}

/// What is known of the machine this process runs on.
#[derive(Clone, Debug, Default)]
struct Machine {
    boot: Option<String>,
    host: Option<String>,
}

impl Machine {
    fn here() -> Machine {
        let read = |p: &str| {
            std::fs::read_to_string(p)
                .ok()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
        };
        Machine {
            boot: read("/proc/sys/kernel/random/boot_id"),
            host: read("/proc/sys/kernel/hostname").or_else(|| read("/etc/hostname")),
        }
    }
}

/// Whether a pid runs a process, as far as can be told.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ProcessState {
    Gone,
    /// Running, started at that many clock ticks after boot (if known).
    Running {
        start: Option<u64>,
    },
    /// Cannot be told.
    Unknown,
}

/// What a lock is.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// Held by a process that (as far as can be told) still runs: who.
    Live(String),
    /// Left by a process that no longer runs: why that is known.
    Stale(String),
}

/// The verdict on a lock held by `holder`, read on `here`, whose pid is in
/// `state` now (see the module doc for the order of the checks).
fn judge(holder: &Holder, here: &Machine, state: ProcessState) -> Verdict {
    let pid = holder.pid;
    if let (Some(theirs), Some(ours)) = (&holder.host, &here.host) {
        if theirs != ours {
            return Verdict::Live(format!(
                "process {pid} on host {theirs} is training into it, or was (a lock written \
                 on another machine cannot be checked from {ours})"
            ));
        }
    }
    if let (Some(theirs), Some(ours)) = (&holder.boot, &here.boot) {
        if theirs != ours {
            return Verdict::Stale(format!(
                "process {pid} ran before the machine restarted (boot id {theirs}, now {ours})"
            ));
        }
    }
    match (state, holder.start) {
        (ProcessState::Gone, _) => Verdict::Stale(format!("process {pid} no longer runs")),
        (ProcessState::Running { start: Some(now) }, Some(then)) if now != then => {
            Verdict::Stale(format!(
                "process {pid} no longer runs: pid {pid} is now another process (started at \
                 tick {now}, the lock's at tick {then})"
            ))
        }
        (ProcessState::Running { .. }, _) => {
            Verdict::Live(format!("process {pid} is training into it"))
        }
        (ProcessState::Unknown, _) => Verdict::Live(format!(
            "process {pid} is training into it, or was (whether it still runs cannot be told here)"
        )),
    }
}

/// The state of `pid`: from `/proc` where there is one, else `kill -0`.
fn probe(pid: u32) -> ProcessState {
    probe_proc(pid).unwrap_or_else(|| probe_kill(pid))
}

/// From `/proc/<pid>/stat`; `None` where there is no `/proc`.
fn probe_proc(pid: u32) -> Option<ProcessState> {
    let proc = Path::new("/proc");
    if !proc.join("self/stat").exists() {
        return None;
    }
    Some(
        match std::fs::read_to_string(proc.join(pid.to_string()).join("stat")) {
            Ok(stat) => ProcessState::Running {
                start: start_ticks(&stat),
            },
            Err(e) if e.kind() == ErrorKind::NotFound => ProcessState::Gone,
            Err(_) => ProcessState::Unknown,
        },
    )
}

/// Field 22 (starttime) of a `/proc/<pid>/stat` line. The second field is
/// the command name in parentheses, which may itself hold spaces and
/// parentheses: fields are counted from after its last `)`.
fn start_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // `rest` starts at field 3.
    rest.split_whitespace().nth(22 - 3)?.parse().ok()
}

/// `kill -0 <pid>`: success means it runs; "No such process" that it does
/// not; anything else (another user's process, no `kill`) cannot tell.
fn probe_kill(pid: u32) -> ProcessState {
    let Ok(out) = std::process::Command::new("kill")
        .args(["-0", &pid.to_string()])
        .stdin(std::process::Stdio::null())
        .output()
    else {
        return ProcessState::Unknown;
    };
    if out.status.success() {
        return ProcessState::Running { start: None };
    }
    let err = String::from_utf8_lossy(&out.stderr).to_ascii_lowercase();
    if err.contains("no such process") {
        ProcessState::Gone
    } else {
        ProcessState::Unknown
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pid beyond any pid_max (2^22 on Linux): no process has it.
    const NO_PID: u32 = 4_194_305;

    fn me() -> Holder {
        Holder::this_process()
    }

    fn with_lock(content: &str) -> (tempfile::TempDir, Result<(RunLock, Option<String>)>) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(LOCK_FILE), content).unwrap();
        let got = acquire_noting(dir.path());
        (dir, got)
    }

    fn taken_over(content: &str) -> String {
        let (dir, got) = with_lock(content);
        let (lock, note) = got.unwrap_or_else(|e| panic!("{content:?} refused: {e}"));
        let now = std::fs::read_to_string(dir.path().join(LOCK_FILE)).unwrap();
        assert_eq!(Holder::parse(&now), Some(me()), "{now}");
        drop(lock);
        assert!(!dir.path().join(LOCK_FILE).exists());
        let note = note.unwrap_or_else(|| panic!("{content:?}: no note"));
        assert!(note.contains(LOCK_FILE), "{note}");
        note
    }

    fn refused(content: &str) -> String {
        let (dir, got) = with_lock(content);
        let err = got.map(|_| ()).unwrap_err().to_string();
        // The lock is left as it was.
        let now = std::fs::read_to_string(dir.path().join(LOCK_FILE)).unwrap();
        assert_eq!(now, content);
        err
    }

    #[test]
    fn the_lock_records_this_process_instance() {
        let dir = tempfile::tempdir().unwrap();
        let lock = RunLock::acquire(dir.path()).unwrap();
        let text = std::fs::read_to_string(dir.path().join(LOCK_FILE)).unwrap();
        let holder = Holder::parse(&text).unwrap();
        assert_eq!(holder.pid, std::process::id());
        if cfg!(target_os = "linux") {
            assert!(holder.start.is_some(), "{text}");
            assert!(holder.boot.is_some(), "{text}");
            assert!(holder.host.is_some(), "{text}");
        }
        assert_eq!(holder, me());
        // No file but the lock is left in the directory.
        drop(lock);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_live_lock_is_refused_naming_its_process() {
        let dir = tempfile::tempdir().unwrap();
        let _lock = RunLock::acquire(dir.path()).unwrap();
        let err = RunLock::acquire(dir.path()).unwrap_err().to_string();
        let pid = std::process::id();
        assert!(
            err.contains(&format!("process {pid} is training into it")),
            "{err}"
        );
        assert!(err.contains(LOCK_FILE), "{err}");
    }

    #[test]
    fn a_dead_pids_lock_is_taken_over() {
        let dead = Holder {
            pid: NO_PID,
            ..me()
        };
        let note = taken_over(&dead.render());
        assert!(
            note.contains(&format!("process {NO_PID} no longer runs")),
            "{note}"
        );
    }

    #[test]
    fn a_reused_pid_is_a_stale_lock() {
        // This process's pid, but a process that started at another time.
        let mut reused = me();
        let Some(start) = reused.start else {
            eprintln!("skipping: no process start times here");
            return;
        };
        reused.start = Some(start + 1);
        let note = taken_over(&reused.render());
        assert!(note.contains("is now another process"), "{note}");
        // The same instance is live.
        let err = refused(&me().render());
        assert!(err.contains("is training into it"), "{err}");
    }

    #[test]
    fn a_lock_from_another_boot_is_stale() {
        let mut before = me();
        if before.boot.is_none() {
            eprintln!("skipping: no boot id here");
            return;
        }
        before.boot = Some("00000000-0000-0000-0000-000000000000".into());
        let note = taken_over(&before.render());
        assert!(note.contains("before the machine restarted"), "{note}");
    }

    #[test]
    fn a_lock_from_another_host_is_refused_naming_the_host() {
        let mut elsewhere = me();
        elsewhere.host = Some("other-machine".into());
        let err = refused(&elsewhere.render());
        assert!(err.contains("on host other-machine"), "{err}");
    }

    #[test]
    fn old_pid_only_locks_are_still_read() {
        let pid = std::process::id();
        let err = refused(&format!("{pid}\n"));
        assert!(
            err.contains(&format!("process {pid} is training into it")),
            "{err}"
        );
        let note = taken_over(&format!("{NO_PID}\n"));
        assert!(
            note.contains(&format!("process {NO_PID} no longer runs")),
            "{note}"
        );
    }

    #[test]
    fn garbage_is_refused_naming_the_file() {
        for junk in ["", "hello\n", "pid=abc\n", "start=5\nboot=x\n", "12 13\n"] {
            let err = refused(junk);
            assert!(
                err.contains(LOCK_FILE) && err.contains("not a lock file"),
                "{junk:?}: {err}"
            );
        }
    }

    #[test]
    fn judged_in_order() {
        let here = Machine {
            boot: Some("b".into()),
            host: Some("h".into()),
        };
        let holder = Holder {
            pid: 7,
            start: Some(100),
            boot: Some("b".into()),
            host: Some("h".into()),
        };
        let running = |start| ProcessState::Running { start };
        let live = |v: Verdict| matches!(v, Verdict::Live(_));
        assert!(live(judge(&holder, &here, running(Some(100)))));
        assert!(!live(judge(&holder, &here, running(Some(101)))));
        assert!(!live(judge(&holder, &here, ProcessState::Gone)));
        // Cannot be checked: live.
        assert!(live(judge(&holder, &here, ProcessState::Unknown)));
        assert!(live(judge(&holder, &here, running(None))));
        // Another host wins over everything; another boot over the pid.
        let far = Holder {
            host: Some("x".into()),
            ..holder.clone()
        };
        assert!(live(judge(&far, &here, ProcessState::Gone)));
        let rebooted = Holder {
            boot: Some("a".into()),
            ..holder.clone()
        };
        assert!(!live(judge(&rebooted, &here, running(Some(100)))));
        // Nothing known of this machine: the pid decides.
        assert!(live(judge(&holder, &Machine::default(), running(None))));
        assert!(!live(judge(
            &holder,
            &Machine::default(),
            ProcessState::Gone
        )));
    }

    #[test]
    fn start_ticks_survive_odd_command_names() {
        let fields: Vec<String> = (3..=30).map(|i| i.to_string()).collect();
        let stat = format!("42 (a) b (c) {}", fields.join(" "));
        assert_eq!(start_ticks(&stat), Some(22));
        assert_eq!(start_ticks("42 (x) R 1"), None);
        assert_eq!(start_ticks("garbage"), None);
    }

    #[test]
    fn kill_probe_tells_running_from_gone() {
        if std::process::Command::new("kill")
            .arg("-l")
            .output()
            .is_err()
        {
            eprintln!("skipping: no kill command");
            return;
        }
        assert_eq!(
            probe_kill(std::process::id()),
            ProcessState::Running { start: None }
        );
        assert_eq!(probe_kill(NO_PID), ProcessState::Gone);
    }
}
