//! Checkpoint units on disk: `<run>/checkpoints/<seq>-step<global_step>/`,
//! each a directory holding one complete save (see the protocol in the
//! parent module's docs). This file knows the layout: writing and
//! committing a unit, listing and checking units, refreshing the top-level
//! `model.safetensors`, removing old units and leftovers.

use super::fault;
use super::{MODEL_FILE, STATE_FILE};
use crate::fetch::{md5_file, md5_hex};
use anyhow::{Context, Result};
use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The directory of the units, in the run directory.
pub const CHECKPOINTS_DIR: &str = "checkpoints";
/// Written last into a unit: its presence (with matching files) is what
/// makes a unit complete.
pub const MANIFEST_FILE: &str = "manifest.json";
/// The records of the epochs finished before the unit's progress.
pub const HISTORY_FILE: &str = "history.json";
/// The `format` of the manifests this version writes.
pub const FORMAT: &str = "run-checkpoint/1";
/// Complete units kept after a save (the newest and the one before it).
pub const KEEP: usize = 2;
/// Prefix of units being written or being removed: leftovers if a process
/// died meanwhile, removed by the next save or resume.
const TMP_PREFIX: &str = ".tmp-";

/// What a unit holds, written last (`manifest.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub global_step: u64,
    pub epoch: usize,
    pub step: usize,
    /// Every other file of the unit.
    pub files: Vec<FileEntry>,
}

/// One file of a unit, as it was written.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FileEntry {
    pub name: String,
    pub bytes: u64,
    pub md5: String,
}

/// A unit directory found in `checkpoints/`.
#[derive(Clone, Debug, PartialEq)]
pub struct Unit {
    /// Save counter: the unit with the largest is the newest.
    pub seq: u64,
    pub path: PathBuf,
}

/// `3-step120` -> 3.
fn parse_seq(name: &str) -> Option<u64> {
    let (seq, step) = name.split_once("-step")?;
    step.parse::<u64>().ok()?;
    seq.parse().ok()
}

/// The units of `run_dir`, newest first (temporaries and foreign names are
/// not units). No `checkpoints/` directory: none.
pub fn list(run_dir: &Path) -> io::Result<Vec<Unit>> {
    let root = run_dir.join(CHECKPOINTS_DIR);
    let entries = match fs::read_dir(&root) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut units = Vec::new();
    for entry in entries {
        let entry = entry?;
        if let Some(seq) = entry.file_name().to_str().and_then(parse_seq) {
            units.push(Unit {
                seq,
                path: entry.path(),
            });
        }
    }
    units.sort_by_key(|u| std::cmp::Reverse(u.seq));
    Ok(units)
}

/// The manifest of a complete unit, or why the unit is not complete.
/// Sizes are always compared; `deep` also compares every file's md5 (what
/// resume does; pruning only needs the sizes).
pub fn check(unit: &Path, deep: bool) -> Result<Manifest, String> {
    let path = unit.join(MANIFEST_FILE);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(format!(
                "no {MANIFEST_FILE}: the save writing it did not finish"
            ))
        }
        Err(e) => return Err(format!("{MANIFEST_FILE}: cannot read: {e}")),
    };
    let manifest: Manifest =
        serde_json::from_str(&text).map_err(|e| format!("{MANIFEST_FILE}: not a manifest: {e}"))?;
    if manifest.format != FORMAT {
        return Err(format!(
            "{MANIFEST_FILE}: format '{}', this version reads '{FORMAT}'",
            manifest.format
        ));
    }
    for f in &manifest.files {
        let file = unit.join(&f.name);
        let len = fs::metadata(&file)
            .map_err(|e| format!("{}: {e}", f.name))?
            .len();
        if len != f.bytes {
            return Err(format!(
                "{}: {len} bytes, the manifest says {}",
                f.name, f.bytes
            ));
        }
        if deep {
            let md5 = md5_file(&file).map_err(|e| format!("{}: cannot read: {e}", f.name))?;
            if md5 != f.md5 {
                return Err(format!(
                    "{}: md5 {md5}, the manifest says {} (the file changed after it was saved)",
                    f.name, f.md5
                ));
            }
        }
    }
    Ok(manifest)
}

fn sync_dir(dir: &Path) {
    // Persists directory entries (creations, renames); not every platform
    // can open a directory, and nothing depends on it but power-loss safety.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Writes one file of a unit being built (its directory is private until
/// committed, so no temporary name is needed), hashing it on the way: each
/// piece is hashed just before it is written, one pass over the bytes
/// while they are in cache, instead of a second pass over the whole file
/// (94 MB of model and 188 MB of Adam state for ResNet50). A fault cuts it
/// to half. Errors name the file.
fn write_file(path: &Path, bytes: &[u8]) -> io::Result<FileEntry> {
    let write = || -> io::Result<String> {
        let mut file = File::create(path)?;
        if let Err(e) = fault::point("write") {
            let _ = file.write_all(&bytes[..bytes.len() / 2]);
            return Err(e);
        }
        let mut md5 = Md5::new();
        for piece in bytes.chunks(WRITE_PIECE) {
            md5.update(piece);
            file.write_all(piece)?;
        }
        file.sync_all()?;
        Ok(format!("{:x}", md5.finalize()))
    };
    let md5 = write()
        .map_err(|e| io::Error::new(e.kind(), format!("writing {}: {e}", path.display())))?;
    Ok(FileEntry {
        name: path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        bytes: bytes.len() as u64,
        md5,
    })
}

/// Bytes hashed then written at a time by [`write_file`]: small enough to
/// stay in the CPU's cache between the two, large enough for few syscalls.
const WRITE_PIECE: usize = 256 << 10;

/// Writes `files` and then the manifest into a new unit of `run_dir` and
/// commits it (renames its temporary directory into place). Returns the
/// unit's path. On an error nothing is committed and the temporary
/// directory is removed; the units already there are untouched.
///
/// Each file's bytes are made by its closure just before it is written and
/// dropped after, so a save holds one file's bytes at a time.
pub fn write(
    run_dir: &Path,
    head: Manifest,
    files: &[(&str, &dyn Fn() -> Vec<u8>)],
) -> Result<PathBuf> {
    let root = run_dir.join(CHECKPOINTS_DIR);
    fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
    let seq = list(run_dir)
        .with_context(|| format!("listing {}", root.display()))?
        .first()
        .map_or(1, |u| u.seq + 1);
    let name = format!("{seq}-step{}", head.global_step);
    let tmp = root.join(format!("{TMP_PREFIX}{name}"));
    let unit = root.join(&name);
    let result = (|| -> io::Result<()> {
        fault::point(&format!("creating {}", tmp.display()))?;
        if tmp.exists() {
            fs::remove_dir_all(&tmp)?;
        }
        fs::create_dir(&tmp)?;
        let mut manifest = head;
        manifest.format = FORMAT.to_string();
        manifest.files = files
            .iter()
            .map(|(n, make)| write_file(&tmp.join(n), &make()))
            .collect::<io::Result<_>>()?;
        let json = serde_json::to_string_pretty(&manifest).map_err(io::Error::other)?;
        write_file(&tmp.join(MANIFEST_FILE), json.as_bytes())?;
        sync_dir(&tmp);
        fault::point(&format!("renaming {} to {name}", tmp.display()))?;
        fs::rename(&tmp, &unit)?;
        sync_dir(&root);
        Ok(())
    })();
    if let Err(e) = result {
        if !fault::killed() {
            let _ = fs::remove_dir_all(&tmp);
        }
        return Err(e).with_context(|| format!("saving checkpoint {}", unit.display()));
    }
    Ok(unit)
}

/// Points `<run>/model.safetensors` (what `eval`, `predict`, `--weights`
/// and the Keras export read) at `unit`'s model: a hard link (a copy where
/// links are not possible) under a temporary name, renamed over the old.
pub fn refresh_model(run_dir: &Path, unit: &Path) -> io::Result<()> {
    let src = unit.join(MODEL_FILE);
    let dst = run_dir.join(MODEL_FILE);
    let tmp = run_dir.join(format!(".{MODEL_FILE}.{}.tmp", std::process::id()));
    let result = (|| {
        let _ = fs::remove_file(&tmp);
        if fs::hard_link(&src, &tmp).is_err() {
            fs::copy(&src, &tmp)?;
            File::open(&tmp)?.sync_all()?;
        }
        fault::point(&format!("refreshing {}", dst.display()))?;
        fs::rename(&tmp, &dst)?;
        // When `dst` already was a link to the same file, POSIX rename
        // does nothing and the temporary name stays.
        let _ = fs::remove_file(&tmp);
        sync_dir(run_dir);
        Ok(())
    })();
    if result.is_err() && !fault::killed() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Removes a directory by first renaming it to a temporary name, so that
/// a removal cut short leaves a leftover, never a unit with files missing.
fn remove_unit(unit: &Path) -> io::Result<()> {
    let name = unit.file_name().unwrap_or_default().to_string_lossy();
    let doomed = unit.with_file_name(format!("{TMP_PREFIX}removing-{name}"));
    fs::rename(unit, &doomed)?;
    fs::remove_dir_all(&doomed)
}

/// Once `newest` is complete (just committed, or just resumed from):
/// removes the units older than it except the next newest complete one,
/// and the files of the old layout (a top-level `train_state.safetensors`
/// and the `*.prev` pair), which the units replace. Units newer than
/// `newest` (a resume skipped them) are left for the next save.
pub fn prune(run_dir: &Path, newest: &Path) -> io::Result<()> {
    fault::point(&format!(
        "removing old checkpoints of {}",
        run_dir.display()
    ))?;
    let mut kept = 1;
    let mut older = false;
    for u in list(run_dir)? {
        if u.path == newest {
            older = true;
            continue;
        }
        if !older {
            continue;
        }
        if kept < KEEP && check(&u.path, false).is_ok() {
            kept += 1;
            continue;
        }
        remove_unit(&u.path)?;
    }
    for old in [
        STATE_FILE.to_string(),
        format!("{MODEL_FILE}.prev"),
        format!("{STATE_FILE}.prev"),
    ] {
        match fs::remove_file(run_dir.join(old)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

/// The files a run writes at the top of its directory, whose atomic-write
/// temporaries (`.<file>.<random>.tmp`) are the run's own leftovers; no
/// other hidden file is touched (`--out` may name a directory that holds
/// more than the run).
const RUN_FILES: [&str; 11] = [
    MODEL_FILE,
    super::EMA_FILE,
    STATE_FILE,
    super::CONFIG_FILE,
    super::CLASSES_FILE,
    crate::report::CSV_FILE,
    crate::report::JSON_FILE,
    crate::report::SVG_FILE,
    crate::report::MARKDOWN_FILE,
    "best.safetensors",
    "confusion.txt",
];

/// Removes what interrupted saves left behind: temporary unit directories
/// in `checkpoints/`, and the temporary files of atomic writes of the
/// run's files ([`RUN_FILES`]) at the top of the run directory. Returns
/// what it removed. Only one process may write a run directory at a time, so
/// any temporary present now is a dead process's.
pub fn remove_leftovers(run_dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    let root = run_dir.join(CHECKPOINTS_DIR);
    if let Ok(entries) = fs::read_dir(&root) {
        for entry in entries {
            let entry = entry?;
            if entry.file_name().to_string_lossy().starts_with(TMP_PREFIX) {
                let p = entry.path();
                if entry.file_type()?.is_dir() {
                    fs::remove_dir_all(&p)?;
                } else {
                    fs::remove_file(&p)?;
                }
                removed.push(p);
            }
        }
    }
    for entry in fs::read_dir(run_dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let ours = RUN_FILES
            .iter()
            .any(|f| name.starts_with(&format!(".{f}.")));
        if ours && name.ends_with(".tmp") && entry.file_type()?.is_file() {
            fs::remove_file(entry.path())?;
            removed.push(entry.path());
        }
    }
    Ok(removed)
}

/// Rewrites `unit`'s manifest for the files it holds now: after a
/// deliberate edit of a unit's file (a test that plants a defect, a hand
/// repair), which would otherwise make the unit fail its checks.
pub fn reseal(unit: &Path) -> io::Result<()> {
    let text = fs::read_to_string(unit.join(MANIFEST_FILE))?;
    let mut manifest: Manifest = serde_json::from_str(&text).map_err(io::Error::other)?;
    for f in &mut manifest.files {
        let bytes = fs::read(unit.join(&f.name))?;
        f.bytes = bytes.len() as u64;
        f.md5 = md5_hex(&bytes);
    }
    let json = serde_json::to_string_pretty(&manifest).map_err(io::Error::other)?;
    nn::checkpoint::write_atomic(&unit.join(MANIFEST_FILE), json.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_manifest_md5s_are_those_of_the_files_read_back() {
        let run = tempfile::tempdir().unwrap();
        // Empty, shorter than a piece, a piece exactly, pieces and a tail.
        let sizes = [0, 1, WRITE_PIECE, 3 * WRITE_PIECE + 7];
        let contents: Vec<Vec<u8>> = sizes
            .iter()
            .map(|&n| (0..n).map(|i| (i * 31 % 251) as u8).collect())
            .collect();
        let names: Vec<String> = (0..sizes.len()).map(|i| format!("f{i}.bin")).collect();
        let makers: Vec<Box<dyn Fn() -> Vec<u8>>> = contents
            .iter()
            .map(|c| {
                let c = c.clone();
                Box::new(move || c.clone()) as Box<dyn Fn() -> Vec<u8>>
            })
            .collect();
        let files: Vec<(&str, &dyn Fn() -> Vec<u8>)> = names
            .iter()
            .zip(&makers)
            .map(|(n, m)| (n.as_str(), m.as_ref()))
            .collect();
        let head = Manifest {
            format: String::new(),
            global_step: 5,
            epoch: 1,
            step: 2,
            files: Vec::new(),
        };
        let unit = write(run.path(), head, &files).unwrap();
        let manifest = check(&unit, true).unwrap();
        assert_eq!(manifest.files.len(), sizes.len());
        for (entry, content) in manifest.files.iter().zip(&contents) {
            let path = unit.join(&entry.name);
            assert_eq!(fs::read(&path).unwrap(), *content, "{}", entry.name);
            assert_eq!(entry.bytes, content.len() as u64, "{}", entry.name);
            assert_eq!(entry.md5, md5_file(&path).unwrap(), "{}", entry.name);
            assert_eq!(entry.md5, md5_hex(content), "{}", entry.name);
        }
        // The empty file's md5 is the well-known one.
        assert_eq!(manifest.files[0].md5, "d41d8cd98f00b204e9800998ecf8427e");
    }
}
