//! Finding the CIFAR-10 data on disk.
//!
//! Why a search order: the same binary runs on developer machines (data
//! placed under `data/cifar10/`), on this project's machines (the read-only
//! shared archive `../shared/data/cifar10-jpg.tar.gz` next to the project),
//! and with an explicit path. When nothing is found, the error lists every
//! place looked at and how to provide the data, instead of a bare
//! "file not found".

use std::fs;
use std::path::{Path, PathBuf};

use super::binary::find_binary_dir;
use super::error::DataError;
use super::folder::SPLITS;

/// A recognized CIFAR-10 source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// Folder holding the official `data_batch_*.bin` / `test_batch.bin`.
    Binary(PathBuf),
    /// Folder with `train/<class>/` and `test/<class>/` image folders.
    ImageDir(PathBuf),
    /// `.tar.gz` of such image folders.
    TarGz(PathBuf),
}

impl Source {
    pub fn path(&self) -> &Path {
        match self {
            Source::Binary(p) | Source::ImageDir(p) | Source::TarGz(p) => p,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Source::Binary(_) => "CIFAR-10 binary release",
            Source::ImageDir(_) => "image folders",
            Source::TarGz(_) => "image-folder archive",
        }
    }
}

/// The shared archive's path relative to the project root.
pub const SHARED_ARCHIVE: &str = "../shared/data/cifar10-jpg.tar.gz";
/// Default data folder relative to the project root.
pub const DEFAULT_DATA_DIR: &str = "data/cifar10";

/// The workspace root: the one this crate was compiled in if it still
/// exists, else the current directory.
pub fn workspace_root() -> PathBuf {
    let compiled = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    if compiled.join("Cargo.toml").is_file() {
        compiled.canonicalize().unwrap_or(compiled)
    } else {
        std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."))
    }
}

/// Default cache folder: `<workspace root>/data/cache` (git-ignored).
pub fn default_cache_dir() -> PathBuf {
    workspace_root().join("data/cache")
}

fn is_archive_name(p: &Path) -> bool {
    let name = p.file_name().unwrap_or_default().to_string_lossy();
    name.ends_with(".tar.gz") || name.ends_with(".tgz")
}

/// Recognizes what `path` is. Folders may hold the binary release (directly
/// or in `cifar-10-batches-bin/`), `train/` + `test/` image folders, or a
/// single `.tar.gz` archive.
pub fn detect(path: &Path) -> Result<Source, DataError> {
    let meta = fs::metadata(path).map_err(DataError::io(path))?;
    // Canonical paths read better in logs and give one cache per source.
    let canonical = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    let path = canonical.as_path();
    if meta.is_file() {
        return if is_archive_name(path) {
            Ok(Source::TarGz(path.to_path_buf()))
        } else {
            Err(DataError::Unrecognized {
                path: path.to_path_buf(),
                reason:
                    "files must be .tar.gz (or .tgz) archives of train/ and test/ image folders"
                        .into(),
            })
        };
    }
    if let Some(bin) = find_binary_dir(path) {
        return Ok(Source::Binary(bin));
    }
    if SPLITS.iter().any(|s| path.join(s).is_dir()) {
        return Ok(Source::ImageDir(path.to_path_buf()));
    }
    let mut archives: Vec<PathBuf> = fs::read_dir(path)
        .map_err(DataError::io(path))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| is_archive_name(p) && p.is_file())
        .collect();
    archives.sort();
    match archives.len() {
        1 => Ok(Source::TarGz(archives.pop().expect("one element"))),
        0 => Err(DataError::Unrecognized {
            path: path.to_path_buf(),
            reason: "folder has no cifar-10-batches-bin/ or data_batch_1.bin, no train/ or test/ \
                     folder, and no .tar.gz archive"
                .into(),
        }),
        _ => Err(DataError::Unrecognized {
            path: path.to_path_buf(),
            reason: format!(
                "folder has several archives ({}); pass one explicitly",
                archives
                    .iter()
                    .map(|p| p.file_name().unwrap_or_default().to_string_lossy())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }),
    }
}

/// Finds the data: `explicit` if given (and it must be valid), else
/// `<root>/data/cifar10`, else `<root>/../shared/data/cifar10-jpg.tar.gz`,
/// where `<root>` is the workspace root and then the current directory.
pub fn locate(explicit: Option<&Path>) -> Result<Source, DataError> {
    if let Some(p) = explicit {
        return detect(p);
    }
    let mut roots = vec![workspace_root()];
    if let Ok(cwd) = std::env::current_dir() {
        let cwd = cwd.canonicalize().unwrap_or(cwd);
        if !roots.contains(&cwd) {
            roots.push(cwd);
        }
    }
    let mut candidates = Vec::new();
    for rel in [DEFAULT_DATA_DIR, SHARED_ARCHIVE] {
        for r in &roots {
            candidates.push(r.join(rel));
        }
    }
    locate_in(&candidates)
}

/// The search behind [`locate`], over explicit candidates (testable).
pub fn locate_in(candidates: &[PathBuf]) -> Result<Source, DataError> {
    let mut looked = Vec::new();
    for c in candidates {
        if !c.exists() {
            looked.push(format!("  - {} (does not exist)", c.display()));
            continue;
        }
        match detect(c) {
            Ok(s) => return Ok(s),
            Err(e) => looked.push(format!("  - {} ({e})", c.display())),
        }
    }
    Err(DataError::NotFound(format!(
        "CIFAR-10 data not found. Looked in:\n{}\n\
         Provide it in one of these ways:\n  \
         - pass its path explicitly: a .tar.gz of train/<class>/*.jpg|png and \
         test/<class>/..., a folder with that layout, or the official binary release \
         folder (cifar-10-batches-bin/ with data_batch_1..5.bin and test_batch.bin);\n  \
         - or place one of those at {DEFAULT_DATA_DIR}/ in the project root \
         (extracted, or the .tar.gz itself inside that folder).",
        looked.join("\n")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_each_layout() {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path();
        fs::create_dir_all(t.join("bin/cifar-10-batches-bin")).unwrap();
        fs::write(t.join("bin/cifar-10-batches-bin/data_batch_1.bin"), b"").unwrap();
        assert_eq!(
            detect(&t.join("bin")).unwrap(),
            Source::Binary(t.join("bin/cifar-10-batches-bin"))
        );
        fs::create_dir_all(t.join("imgs/train")).unwrap();
        assert_eq!(
            detect(&t.join("imgs")).unwrap(),
            Source::ImageDir(t.join("imgs"))
        );
        fs::create_dir_all(t.join("arch")).unwrap();
        fs::write(t.join("arch/c.tar.gz"), b"").unwrap();
        assert_eq!(
            detect(&t.join("arch")).unwrap(),
            Source::TarGz(t.join("arch/c.tar.gz"))
        );
        assert_eq!(
            detect(&t.join("arch/c.tar.gz")).unwrap(),
            Source::TarGz(t.join("arch/c.tar.gz"))
        );
        fs::write(t.join("arch/d.tgz"), b"").unwrap();
        let e = detect(&t.join("arch")).unwrap_err().to_string();
        assert!(e.contains("several archives") && e.contains("d.tgz"), "{e}");
        fs::write(t.join("notes.txt"), b"").unwrap();
        let e = detect(&t.join("notes.txt")).unwrap_err().to_string();
        assert!(e.contains("notes.txt") && e.contains(".tar.gz"), "{e}");
        let e = detect(&t.join("missing")).unwrap_err().to_string();
        assert!(e.contains("missing"), "{e}");
    }

    #[test]
    fn not_found_lists_every_place_looked() {
        let tmp = tempfile::tempdir().unwrap();
        let empty = tmp.path().join("empty");
        fs::create_dir_all(&empty).unwrap();
        let cands = vec![
            tmp.path().join("a/data/cifar10"),
            empty.clone(),
            tmp.path().join("x.tar.gz"),
        ];
        let e = locate_in(&cands).unwrap_err().to_string();
        for c in &cands {
            assert!(e.contains(&c.display().to_string()), "{e}");
        }
        assert!(
            e.contains("does not exist") && e.contains("no .tar.gz archive"),
            "{e}"
        );
        assert!(e.contains("pass its path explicitly"), "{e}");
        // First valid candidate wins.
        fs::write(tmp.path().join("x.tar.gz"), b"").unwrap();
        assert_eq!(
            locate_in(&cands).unwrap(),
            Source::TarGz(tmp.path().join("x.tar.gz"))
        );
    }

    #[test]
    fn explicit_path_must_be_valid() {
        let e = locate(Some(Path::new("/definitely/not/here"))).unwrap_err();
        assert!(e.to_string().contains("/definitely/not/here"));
    }
}
