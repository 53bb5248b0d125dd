//! HTTP(S) download into a cache folder, all or nothing.
//!
//! Keras's `get_file` and torchvision's `download_url` both write straight
//! to the final name and delete it on error; a process killed mid-transfer
//! still leaves a file that looks complete. Here the body goes to a
//! temporary file in the destination folder (so the final step is a rename
//! on one file system, atomic), is hashed while it streams, and is renamed
//! only when every byte announced arrived and the md5 matches. Any failure
//! drops the temporary file, which deletes it.

use std::fs;
use std::io::{self, BufWriter, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use md5::{Digest, Md5};

use super::checksum::{file_md5, hex, write_sidecar};
use super::error::FetchError;

/// A file to fetch: where from, its published md5, the name it is kept
/// under in the cache.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Remote {
    pub url: String,
    /// Lower-case hex (see [`super::parse_md5`]).
    pub md5: String,
    pub file_name: String,
}

/// A file in the cache, and whether this call downloaded it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fetched {
    pub path: PathBuf,
    pub downloaded: bool,
}

/// Returns `dir/<file_name>` if it is there with the right md5 (no request
/// made); else downloads it there. A present file with the wrong md5 (an
/// older version, a file copied in by hand) is replaced, saying so.
pub fn fetch(remote: &Remote, dir: &Path) -> Result<Fetched, FetchError> {
    let path = dir.join(&remote.file_name);
    if path.is_file() {
        let actual = file_md5(&path, true)?;
        if actual == remote.md5 {
            return Ok(Fetched {
                path,
                downloaded: false,
            });
        }
        eprintln!(
            "{} has md5 {actual}, expected {}; downloading it again",
            path.display(),
            remote.md5
        );
    }
    download(&remote.url, &path, &remote.md5)?;
    Ok(Fetched {
        path,
        downloaded: true,
    })
}

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_secs(30))
        // Per read, not for the whole body: a slow link is fine, a stalled one is not.
        .timeout_read(Duration::from_secs(60))
        .try_proxy_from_env(true)
        .user_agent(concat!("resnet-rs/", env!("CARGO_PKG_VERSION")))
        .build()
}

fn progress_bar(len: Option<u64>) -> ProgressBar {
    // Hidden when stderr is a log file or a pipe: no carriage-return litter.
    let target = if io::stderr().is_terminal() {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    };
    match len {
        Some(n) => ProgressBar::with_draw_target(Some(n), target).with_style(
            ProgressStyle::with_template(
                "{bytes:>10} / {total_bytes} [{bar:30}] {bytes_per_sec}, {eta} left",
            )
            .expect("static template")
            .progress_chars("=> "),
        ),
        None => ProgressBar::with_draw_target(None, target).with_style(
            ProgressStyle::with_template("{bytes:>10} {bytes_per_sec}").expect("static template"),
        ),
    }
}

/// A temporary file untouched this long belongs to a dead download: a live
/// one is written at least every read timeout (60 s).
const STALE_PART: Duration = Duration::from_secs(10 * 60);

/// Removes the `.part` files of earlier downloads of `name` that were killed
/// (Ctrl-C, power loss) before they could clean up after themselves, so
/// they do not pile up 162 MB at a time. Best effort.
fn remove_stale_parts(dir: &Path, name: &str) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let prefix = format!(".{name}.");
    for entry in entries.flatten() {
        let file = entry.file_name().to_string_lossy().to_string();
        if !(file.starts_with(&prefix) && file.ends_with(".part")) {
            continue;
        }
        let age = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok());
        if age.is_some_and(|a| a > STALE_PART) {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// Downloads `url` to `dest`, verifying `md5`; returns the byte count. On
/// any error nothing is left at `dest` nor beside it (an existing `dest` is
/// left as it was).
pub fn download(url: &str, dest: &Path, md5: &str) -> Result<u64, FetchError> {
    let dir = match dest.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    fs::create_dir_all(dir).map_err(FetchError::io(dir))?;
    let name = dest.file_name().unwrap_or_default().to_string_lossy();
    remove_stale_parts(dir, &name);
    // Starts with '.' and ends in ".part": never mistaken for the file.
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".part")
        .tempfile_in(dir)
        .map_err(FetchError::io(dir))?;

    eprintln!("Downloading {url}\n  to {}", dest.display());
    let response = agent().get(url).call().map_err(|e| match e {
        ureq::Error::Status(status, r) => FetchError::Http {
            url: url.to_string(),
            status,
            reason: r.status_text().to_string(),
        },
        ureq::Error::Transport(t) => {
            // ureq's message starts with the URL, which the error names already.
            let text = t.to_string();
            let reason = text.strip_prefix(&format!("{url}: ")).unwrap_or(&text);
            FetchError::Transport {
                url: url.to_string(),
                reason: reason.to_string(),
            }
        }
    })?;
    let expected: Option<u64> = response
        .header("Content-Length")
        .and_then(|v| v.trim().parse().ok());

    let bar = progress_bar(expected);
    let mut body = response.into_reader();
    let mut out = BufWriter::with_capacity(1 << 20, tmp.as_file());
    let mut hasher = Md5::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut received = 0u64;
    let cut = |received: u64, reason: String| FetchError::Truncated {
        url: url.to_string(),
        received,
        expected,
        reason,
    };
    loop {
        let n = match body.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                bar.abandon();
                return Err(cut(received, e.to_string()));
            }
        };
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n])
            .map_err(FetchError::io(tmp.path()))?;
        received += n as u64;
        bar.set_position(received);
    }
    bar.finish_and_clear();
    if let Some(n) = expected {
        if received != n {
            return Err(cut(received, "connection closed early".into()));
        }
    }
    let actual = hex(&hasher.finalize());
    if actual != md5 {
        return Err(FetchError::Checksum {
            url: url.to_string(),
            expected: md5.to_string(),
            actual,
            bytes: received,
        });
    }
    out.flush().map_err(FetchError::io(tmp.path()))?;
    drop(out);
    // On disk before the rename makes it visible: a crash right after must
    // not leave a complete-looking name over missing data.
    tmp.as_file()
        .sync_all()
        .map_err(FetchError::io(tmp.path()))?;
    tmp.persist(dest).map_err(|e| FetchError::Io {
        path: dest.to_path_buf(),
        source: e.error,
    })?;
    write_sidecar(dest, &actual);
    eprintln!("  {received} bytes, md5 {actual} verified");
    Ok(received)
}
