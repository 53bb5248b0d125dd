//! Writing files so that a crash never leaves a half-written file under the
//! real name: checkpoints, weights, reports and the dataset cache all go
//! through here.
//!
//! Why: a training run can be killed at any moment (time limit, Ctrl-C, out
//! of memory). A file written in place and cut mid-write poisons the next
//! resume. Instead the content goes to a temporary file in the *same*
//! directory (so the final rename never crosses a file system), which is
//! fsynced and then renamed over the target (`tempfile`'s `persist`); the
//! directory is fsynced too, so the rename itself survives a power loss.
//! Readers see either the old file or the complete new one.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

/// Writes `bytes` to `path` atomically (see the module docs). Missing parent
/// directories are created.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_atomic_with(path, |w| w.write_all(bytes))
}

/// Like [`write_atomic`] but streams the content through `fill`, so large
/// files (the dataset cache) need not be assembled in memory first. If `fill`
/// fails, the temporary file is removed and the target is left untouched.
pub fn write_atomic_with(
    path: &Path,
    fill: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&dir)?;
    let file_name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{}: not a file path", path.display()),
        )
    })?;
    // `.model.safetensors.XXXXXX.tmp`: hidden, and plainly a leftover if a
    // crash ever keeps one (dropping it on any error below deletes it).
    let prefix = format!(".{}.", file_name.to_string_lossy());
    let mut builder = tempfile::Builder::new();
    builder.prefix(&prefix).suffix(".tmp");
    // The same permissions a plain `File::create` gives (0o666 less the
    // umask), not tempfile's private 0o600.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(fs::Permissions::from_mode(0o666));
    }
    let mut tmp = builder.tempfile_in(&dir)?;
    {
        let mut w = BufWriter::with_capacity(1 << 20, tmp.as_file_mut());
        fill(&mut w)?;
        w.flush()?;
    }
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    // Persist the directory entry; not every platform can open a directory.
    if let Ok(d) = File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}
