//! Decoded-dataset cache: decode 60,000 images once, then load in a blink.
//!
//! Why: decoding the JPEG archive takes seconds of CPU on every run; the
//! decoded pixels are only 184 MB and read back at disk/page-cache speed.
//!
//! Format (little-endian), version [`VERSION`]:
//! ```text
//! magic "CIFARCCH" | u32 version | u32 len + source identity (UTF-8)
//! u32 n_classes, then per class u32 len + name
//! u64 n_train | u64 n_test
//! train images (n_train*3072) | train labels (n_train)
//! test images (n_test*3072)   | test labels (n_test)
//! ```
//! The source identity (kind, path, sizes, modification times) is compared
//! on load, so a changed source silently rebuilds the cache. The file is
//! written atomically; a truncated or foreign file fails validation (exact
//! length, labels in range) and is rebuilt too.

use std::fs::{self, File, Metadata};
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use super::binary;
use super::error::DataError;
use super::folder::dir_fingerprint;
use super::locate::Source;
use super::sampler::mix;
use super::{Cifar10, Dataset, IMAGE_BYTES};
use nn::checkpoint::write_atomic_with;

const MAGIC: &[u8; 8] = b"CIFARCCH";
/// Bump when the layout or the decoding changes (invalidates old caches).
pub const VERSION: u32 = 1;

pub(crate) fn mtime_ns(meta: &Metadata) -> u128 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos())
}

fn file_id(path: &Path) -> Result<String, DataError> {
    let meta = fs::metadata(path).map_err(DataError::io(path))?;
    Ok(format!(
        "{}:{}:{}",
        path.display(),
        meta.len(),
        mtime_ns(&meta)
    ))
}

/// A string that changes whenever the source's content plausibly changed.
pub(crate) fn source_identity(source: &Source) -> Result<String, DataError> {
    Ok(match source {
        Source::TarGz(p) => format!("targz|{}", file_id(p)?),
        Source::BinaryTarGz(p) => format!("binarytargz|{}", file_id(p)?),
        Source::Binary(dir) => {
            let ids = binary::source_files(dir)
                .iter()
                .filter(|p| p.exists())
                .map(|p| file_id(p))
                .collect::<Result<Vec<_>, _>>()?;
            format!("binary|{}", ids.join("|"))
        }
        Source::ImageDir(dir) => {
            let (count, bytes, newest) = dir_fingerprint(dir)?;
            format!("dir|{}|{count}|{bytes}|{newest}", dir.display())
        }
    })
}

/// Cache file for `source` in `cache_dir` (one file per source path).
pub fn cache_path(cache_dir: &Path, source: &Source) -> PathBuf {
    let key = source
        .path()
        .to_string_lossy()
        .bytes()
        .fold(0u64, |h, b| mix(h ^ b as u64));
    cache_dir.join(format!("cifar10-{key:016x}.bin"))
}

fn write_str(w: &mut dyn Write, s: &str) -> io::Result<()> {
    w.write_all(&(s.len() as u32).to_le_bytes())?;
    w.write_all(s.as_bytes())
}

/// A temporary file of an interrupted cache write younger than this may
/// still be another process's write in progress (decoding and writing the
/// 184 MB takes seconds to minutes); older ones are leftovers.
const LEFTOVER_AGE: std::time::Duration = std::time::Duration::from_secs(3600);

/// Removes what killed writes of the cache file `path` left behind
/// (`write_atomic`'s hidden `.<name>.XXXXXX.tmp` beside it) once they are
/// older than [`LEFTOVER_AGE`]; returns how many. A `kill -9` during a
/// write leaves one of up to 184 MB that nothing else would ever remove.
fn remove_leftovers(path: &Path) -> usize {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return 0;
    };
    let prefix = format!(".{}.", name.to_string_lossy());
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for e in entries.flatten() {
        let file = e.file_name().to_string_lossy().into_owned();
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age >= LEFTOVER_AGE);
        if file.starts_with(&prefix)
            && file.ends_with(".tmp")
            && old
            && fs::remove_file(e.path()).is_ok()
        {
            removed += 1;
        }
    }
    removed
}

/// Writes the cache atomically, after removing old leftovers of killed
/// writes of the same file.
pub(crate) fn write(path: &Path, identity: &str, data: &Cifar10) -> io::Result<()> {
    remove_leftovers(path);
    write_atomic_with(path, |w| {
        w.write_all(MAGIC)?;
        w.write_all(&VERSION.to_le_bytes())?;
        write_str(w, identity)?;
        let classes = &data.train.classes;
        w.write_all(&(classes.len() as u32).to_le_bytes())?;
        for c in classes {
            write_str(w, c)?;
        }
        w.write_all(&(data.train.len() as u64).to_le_bytes())?;
        w.write_all(&(data.test.len() as u64).to_le_bytes())?;
        for d in [&data.train, &data.test] {
            w.write_all(&d.images)?;
            w.write_all(&d.labels)?;
        }
        Ok(())
    })
}

struct Reader<R> {
    r: R,
}

impl<R: Read> Reader<R> {
    fn bytes(&mut self, n: usize) -> io::Result<Vec<u8>> {
        let mut v = vec![0; n];
        self.r.read_exact(&mut v)?;
        Ok(v)
    }
    fn u32(&mut self) -> io::Result<u32> {
        let mut b = [0; 4];
        self.r.read_exact(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }
    fn u64(&mut self) -> io::Result<u64> {
        let mut b = [0; 8];
        self.r.read_exact(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }
    fn string(&mut self, max: usize) -> Result<String, String> {
        let n = self.u32().map_err(|e| e.to_string())? as usize;
        if n > max {
            return Err(format!("string length {n} out of range"));
        }
        String::from_utf8(self.bytes(n).map_err(|e| e.to_string())?).map_err(|e| e.to_string())
    }
}

/// Reads the cache. `Ok(None)`: no cache file. `Err(reason)`: present but
/// stale or invalid (the caller rebuilds it and reports the reason).
pub(crate) fn read(path: &Path, identity: &str) -> Result<Option<Cifar10>, String> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    let file_len = file.metadata().map_err(|e| e.to_string())?.len();
    let mut r = Reader {
        r: BufReader::with_capacity(1 << 16, file),
    };
    let io = |e: io::Error| format!("truncated or unreadable ({e})");
    if r.bytes(8).map_err(io)? != MAGIC {
        return Err("not a dataset cache file (bad magic)".into());
    }
    let version = r.u32().map_err(io)?;
    if version != VERSION {
        return Err(format!(
            "cache format version {version}, expected {VERSION}"
        ));
    }
    let id = r.string(1 << 20)?;
    if id != identity {
        return Err("the data source changed since the cache was written".into());
    }
    let n_classes = r.u32().map_err(io)? as usize;
    if n_classes == 0 || n_classes > 256 {
        return Err(format!("bad class count {n_classes}"));
    }
    let classes = (0..n_classes)
        .map(|_| r.string(4096))
        .collect::<Result<Vec<_>, _>>()?;
    let n_train = r.u64().map_err(io)?;
    let n_test = r.u64().map_err(io)?;
    let header_len =
        8 + 4 + 4 + id.len() + 4 + classes.iter().map(|c| 4 + c.len()).sum::<usize>() + 16;
    let body = (n_train as u128 + n_test as u128) * (IMAGE_BYTES as u128 + 1);
    if header_len as u128 + body != file_len as u128 {
        return Err(format!(
            "file is {file_len} bytes but its header announces {}",
            header_len as u128 + body
        ));
    }
    let mut split = |n: u64| -> Result<Dataset, String> {
        let n = n as usize;
        let images = r.bytes(n * IMAGE_BYTES).map_err(io)?;
        let labels = r.bytes(n).map_err(io)?;
        if let Some(&bad) = labels.iter().find(|&&l| l as usize >= n_classes) {
            return Err(format!("label {bad} out of range"));
        }
        Ok(Dataset {
            images,
            labels,
            classes: classes.clone(),
        })
    };
    let train = split(n_train)?;
    let test = split(n_test)?;
    Ok(Some(Cifar10 { train, test }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Cifar10 {
        let classes: Vec<String> = ["x", "yy"].iter().map(|s| s.to_string()).collect();
        Cifar10 {
            train: Dataset {
                images: (0..3 * IMAGE_BYTES).map(|i| (i % 251) as u8).collect(),
                labels: vec![0, 1, 1],
                classes: classes.clone(),
            },
            test: Dataset {
                images: vec![7; IMAGE_BYTES],
                labels: vec![1],
                classes,
            },
        }
    }

    #[test]
    fn round_trip_and_invalidation() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("cache/c.bin");
        assert!(read(&path, "id").unwrap().is_none());
        let data = sample();
        write(&path, "id", &data).unwrap();
        let back = read(&path, "id").unwrap().unwrap();
        assert_eq!(back.train.images, data.train.images);
        assert_eq!(back.train.labels, data.train.labels);
        assert_eq!(back.test.images, data.test.images);
        assert_eq!(back.test.classes, data.test.classes);

        let e = read(&path, "other").unwrap_err();
        assert!(e.contains("source changed"), "{e}");

        let bytes = fs::read(&path).unwrap();
        fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();
        let e = read(&path, "id").unwrap_err();
        assert!(e.contains("bytes"), "{e}");
        fs::write(&path, &bytes[..20]).unwrap();
        assert!(read(&path, "id").is_err());
        fs::write(&path, b"garbage!garbage!").unwrap();
        assert!(read(&path, "id").unwrap_err().contains("magic"));
        let mut bad_label = bytes.clone();
        *bad_label.last_mut().unwrap() = 5;
        fs::write(&path, &bad_label).unwrap();
        assert!(read(&path, "id").unwrap_err().contains("label 5"));
    }

    #[test]
    fn a_write_removes_old_leftovers_of_killed_writes_only() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("c.bin");
        let old = tmp.path().join(".c.bin.AbC123.tmp");
        let young = tmp.path().join(".c.bin.XyZ789.tmp");
        let other = tmp.path().join(".d.bin.AbC123.tmp");
        for p in [&old, &young, &other] {
            fs::write(p, b"half a cache").unwrap();
        }
        let two_hours_ago = std::time::SystemTime::now() - 2 * LEFTOVER_AGE;
        for p in [&old, &other] {
            File::options()
                .write(true)
                .open(p)
                .unwrap()
                .set_modified(two_hours_ago)
                .unwrap();
        }
        write(&path, "id", &sample()).unwrap();
        assert!(!old.exists(), "an old leftover of this file is removed");
        assert!(young.exists(), "a young one may be a write in progress");
        assert!(other.exists(), "another file's temporaries are not ours");
        assert!(read(&path, "id").unwrap().is_some());
    }

    #[test]
    fn identity_changes_when_source_file_changes() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("x.tar.gz");
        fs::write(&p, b"abc").unwrap();
        let src = Source::TarGz(p.clone());
        let a = source_identity(&src).unwrap();
        fs::write(&p, b"abcd").unwrap();
        let b = source_identity(&src).unwrap();
        assert_ne!(a, b);
        assert_ne!(
            cache_path(tmp.path(), &src),
            cache_path(tmp.path(), &Source::TarGz(tmp.path().join("y.tar.gz")))
        );
    }
}
