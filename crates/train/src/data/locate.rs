//! Finding the CIFAR-10 data on disk.
//!
//! Why a search order: the same binary runs on developer machines (data
//! placed under `data/cifar10/`), on this project's machines (the read-only
//! shared archive `../shared/data/cifar10-jpg.tar.gz` next to the project),
//! and with an explicit path; on a fresh machine, none of those exists and
//! the official binary release is downloaded once into the user cache
//! ([`locate_or_fetch`]). When nothing works, the error lists every place
//! looked at, the download tried, and how to provide the data by hand,
//! instead of a bare "file not found".

use std::fs;
use std::path::{Path, PathBuf};

use super::binary::{find_binary_dir, is_binary_tar_gz};
use super::error::DataError;
use super::folder::SPLITS;
use crate::fetch;

/// A recognized CIFAR-10 source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// Folder holding the official `data_batch_*.bin` / `test_batch.bin`.
    Binary(PathBuf),
    /// Folder with `train/<class>/` and `test/<class>/` image folders.
    ImageDir(PathBuf),
    /// `.tar.gz` of such image folders.
    TarGz(PathBuf),
    /// `.tar.gz` of the binary release (the published `cifar-10-binary.tar.gz`).
    BinaryTarGz(PathBuf),
}

impl Source {
    pub fn path(&self) -> &Path {
        match self {
            Source::Binary(p) | Source::ImageDir(p) | Source::TarGz(p) | Source::BinaryTarGz(p) => {
                p
            }
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Source::Binary(_) => "CIFAR-10 binary release",
            Source::ImageDir(_) => "image folders",
            Source::TarGz(_) => "image-folder archive",
            Source::BinaryTarGz(_) => "CIFAR-10 binary release archive",
        }
    }
}

/// The shared archive's path relative to the current directory (the checkout root when run as the README says).
pub const SHARED_ARCHIVE: &str = "../shared/data/cifar10-jpg.tar.gz";
/// Default data folder relative to the current directory.
pub const DEFAULT_DATA_DIR: &str = "data/cifar10";

/// The workspace root: the one this crate was compiled in if it still
/// exists, else the current directory. For tests that look for the real
/// data next to the checkout; the default search ([`locate`]) never looks
/// in the tree the binary was compiled in, only in the current directory.
pub fn workspace_root() -> PathBuf {
    let compiled = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    if compiled.join("Cargo.toml").is_file() {
        compiled.canonicalize().unwrap_or(compiled)
    } else {
        std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."))
    }
}

/// Default cache of decoded datasets: `decoded/` in the user's download
/// cache ([`crate::fetch::cache_dir`]), never inside the tree the binary
/// was compiled in.
pub fn default_cache_dir() -> PathBuf {
    crate::fetch::cache_dir().join("decoded")
}

fn is_archive_name(p: &Path) -> bool {
    let name = p.file_name().unwrap_or_default().to_string_lossy();
    name.ends_with(".tar.gz") || name.ends_with(".tgz")
}

/// An archive's kind, from its first telling member.
fn archive_source(path: PathBuf) -> Source {
    if is_binary_tar_gz(&path) {
        Source::BinaryTarGz(path)
    } else {
        Source::TarGz(path)
    }
}

/// Recognizes what `path` is. Folders may hold the binary release (directly
/// or in `cifar-10-batches-bin/`), `train/` + `test/` image folders, or a
/// single `.tar.gz` archive (of either).
pub fn detect(path: &Path) -> Result<Source, DataError> {
    let meta = fs::metadata(path).map_err(DataError::io(path))?;
    // Canonical paths read better in logs and give one cache per source.
    let canonical = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    let path = canonical.as_path();
    if meta.is_file() {
        return if is_archive_name(path) {
            Ok(archive_source(path.to_path_buf()))
        } else {
            Err(DataError::Unrecognized {
                path: path.to_path_buf(),
                reason: "files must be .tar.gz (or .tgz) archives of the binary release or of \
                         train/ and test/ image folders"
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
        1 => Ok(archive_source(archives.pop().expect("one element"))),
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
/// `data/cifar10`, else `../shared/data/cifar10-jpg.tar.gz`, both relative
/// to the current directory (a binary copied elsewhere, or run from
/// another directory, does not reach back into the tree it was built in).
pub fn locate(explicit: Option<&Path>) -> Result<Source, DataError> {
    if let Some(p) = explicit {
        return detect(p);
    }
    locate_in(&default_candidates())
}

/// The first of `candidates` that holds the data, or the list of what was
/// wrong with each.
fn search(candidates: &[PathBuf]) -> Result<Source, Vec<String>> {
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
    Err(looked)
}

const BY_HAND: &str = "  - pass its path explicitly: the official binary release (its \
     cifar-10-binary.tar.gz, or the extracted cifar-10-batches-bin/ with data_batch_1..5.bin \
     and test_batch.bin), a .tar.gz of train/<class>/*.jpg|png and test/<class>/..., or a \
     folder with that layout;\n  \
     - or place one of those at data/cifar10/ in the current directory \
     (extracted, or the .tar.gz itself inside that folder).";

/// The search behind [`locate`], over explicit candidates (testable).
pub fn locate_in(candidates: &[PathBuf]) -> Result<Source, DataError> {
    search(candidates).map_err(|looked| {
        DataError::NotFound(format!(
            "CIFAR-10 data not found. Looked in:\n{}\n\
             Provide it in one of these ways:\n{BY_HAND}",
            looked.join("\n")
        ))
    })
}

/// The default search places of [`locate`], in order: relative to the
/// current directory.
fn default_candidates() -> Vec<PathBuf> {
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    [DEFAULT_DATA_DIR, SHARED_ARCHIVE]
        .iter()
        .map(|rel| cwd.join(rel))
        .collect()
}

/// Where the data was found and, if it had to be fetched, how.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Located {
    pub source: Source,
    /// `Some` when it came from the download cache: what happened there
    /// (downloaded now, or found from an earlier download), for the log.
    pub fetched: Option<String>,
}

/// [`locate`], then the download: with no explicit path and nothing found,
/// the release in the download cache (`<fetch::cache_dir()>/datasets/`),
/// fetched from `CIFAR10_URL` (default: the official binary release) if it
/// is not there yet. No network: one error listing every place looked in,
/// the URL with its error, and how to supply the data by hand.
pub fn locate_or_fetch(explicit: Option<&Path>) -> Result<Located, DataError> {
    if let Some(p) = explicit {
        return Ok(Located {
            source: detect(p)?,
            fetched: None,
        });
    }
    let remote = fetch::cifar10_remote()?;
    locate_or_fetch_in(
        &default_candidates(),
        &remote,
        &fetch::cache_dir().join("datasets"),
    )
}

/// [`locate_or_fetch`] over explicit candidates, release and download
/// folder (testable).
pub fn locate_or_fetch_in(
    candidates: &[PathBuf],
    remote: &fetch::Remote,
    download_dir: &Path,
) -> Result<Located, DataError> {
    let looked = match search(candidates) {
        Ok(source) => {
            return Ok(Located {
                source,
                fetched: None,
            })
        }
        Err(looked) => looked,
    };
    let failure = match fetch::fetch(remote, download_dir) {
        Ok(got) => match detect(&got.path) {
            Ok(source) => {
                let how = if got.downloaded {
                    format!("downloaded from {}, md5 verified", remote.url)
                } else {
                    format!("found in the download cache (md5 {})", remote.md5)
                };
                return Ok(Located {
                    source,
                    fetched: Some(how),
                });
            }
            Err(e) => e.to_string(),
        },
        Err(e) => e.to_string(),
    };
    let target = download_dir.join(&remote.file_name);
    Err(DataError::NotFound(format!(
        "CIFAR-10 data not found. Looked in:\n{}\n\
         and could not download it to {}:\n  - {failure}\n\
         Provide it in one of these ways:\n  \
         - download {} (md5 {}) by hand and put it at {} or in data/cifar10/ in the \
         current directory ({} moves the download cache);\n  \
         - set {} to a mirror of that file ({} too, if the file differs);\n{BY_HAND}",
        looked.join("\n"),
        target.display(),
        remote.url,
        remote.md5,
        target.display(),
        fetch::CACHE_ENV,
        fetch::CIFAR10_URL_ENV,
        fetch::CIFAR10_MD5_ENV,
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
