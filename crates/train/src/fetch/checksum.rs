//! md5 of files, and a sidecar that remembers a file was verified.
//!
//! Why md5: it is what Keras and the CIFAR-10 page publish for these files
//! (integrity against corrupt or cut transfers, not security). Why a
//! sidecar: hashing the 162 MB archive costs about half a second on every
//! run; `<file>.md5-verified` records the hash with the file's size and
//! modification time, so a cache hit is a `stat`, and any change to the file
//! (size or time) makes it hash again.

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use md5::{Digest, Md5};

use super::error::FetchError;

/// Lower-case hex of an md5 digest.
pub fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// md5 of `bytes`, lower-case hex.
pub fn md5_hex(bytes: &[u8]) -> String {
    hex(&Md5::digest(bytes))
}

/// md5 of the file at `path`, lower-case hex (read in 1 MiB pieces).
pub fn md5_file(path: &Path) -> io::Result<String> {
    let mut file = File::open(path)?;
    let mut hasher = Md5::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

/// Checks that `value` is an md5 (32 hex digits) and lower-cases it; `what`
/// names where it came from (e.g. the environment variable) for the error.
pub fn parse_md5(what: &str, value: &str) -> Result<String, FetchError> {
    let v = value.trim().to_ascii_lowercase();
    if v.len() == 32 && v.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(v)
    } else {
        Err(FetchError::BadChecksum {
            what: what.to_string(),
            value: value.to_string(),
        })
    }
}

/// The sidecar next to `path`: `<file name>.md5-verified`.
pub fn sidecar_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".md5-verified");
    path.with_file_name(name)
}

/// "size mtime_ns" of the file, the part of the sidecar that detects change.
fn stamp(path: &Path) -> io::Result<String> {
    let meta = fs::metadata(path)?;
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    Ok(format!("{} {mtime}", meta.len()))
}

/// Records that `path` has md5 `md5` (best effort: a read-only cache only
/// costs a re-hash next time).
pub fn write_sidecar(path: &Path, md5: &str) {
    if let Ok(stamp) = stamp(path) {
        let _ = fs::write(sidecar_path(path), format!("{md5} {stamp}\n"));
    }
}

/// The md5 the sidecar vouches for, if it exists and the file is unchanged.
fn sidecar_md5(path: &Path) -> Option<String> {
    let text = fs::read_to_string(sidecar_path(path)).ok()?;
    let (md5, recorded) = text.trim().split_once(' ')?;
    (recorded == stamp(path).ok()?).then(|| md5.to_string())
}

/// The md5 of `path`: from its sidecar when `use_sidecar` and the file is
/// unchanged since it was written, else computed (and, with `use_sidecar`,
/// recorded).
pub fn file_md5(path: &Path, use_sidecar: bool) -> Result<String, FetchError> {
    if use_sidecar {
        if let Some(md5) = sidecar_md5(path) {
            return Ok(md5);
        }
    }
    let md5 = md5_file(path).map_err(FetchError::io(path))?;
    if use_sidecar {
        write_sidecar(path, &md5);
    }
    Ok(md5)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn md5_matches_published_test_vectors() {
        // RFC 1321, appendix A.5.
        assert_eq!(md5_hex(b""), "d41d8cd98f00b204e9800998ecf8427e");
        assert_eq!(md5_hex(b"abc"), "900150983cd24fb0d6963f7d28e17f72");
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("f");
        // Larger than one read buffer, so the chunked path is exercised.
        let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        fs::write(&p, &big).unwrap();
        assert_eq!(md5_file(&p).unwrap(), md5_hex(&big));
    }

    #[test]
    fn parse_md5_accepts_only_32_hex_digits() {
        assert_eq!(
            parse_md5("X", " C32A1D4AB5D03F1284B67883E8D87530\n").unwrap(),
            "c32a1d4ab5d03f1284b67883e8d87530"
        );
        for bad in ["", "abc", "c32a1d4ab5d03f1284b67883e8d8753g"] {
            let e = parse_md5("CIFAR10_MD5", bad).unwrap_err().to_string();
            assert!(
                e.contains("CIFAR10_MD5") && e.contains("32 hexadecimal"),
                "{e}"
            );
        }
    }

    #[test]
    fn sidecar_is_used_only_while_the_file_is_unchanged() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("a.bin");
        fs::write(&p, b"abc").unwrap();
        assert!(!sidecar_path(&p).exists());
        assert_eq!(file_md5(&p, true).unwrap(), md5_hex(b"abc"));
        assert!(sidecar_path(&p).exists());
        // A forged sidecar with the right stamp is believed (that is its job)...
        let forged = format!("{} {}", "0".repeat(32), stamp(&p).unwrap());
        fs::write(sidecar_path(&p), forged).unwrap();
        assert_eq!(file_md5(&p, true).unwrap(), "0".repeat(32));
        assert_eq!(file_md5(&p, false).unwrap(), md5_hex(b"abc"));
        // ...but a change of size invalidates it.
        fs::write(&p, b"abcd").unwrap();
        assert_eq!(file_md5(&p, true).unwrap(), md5_hex(b"abcd"));
    }
}
