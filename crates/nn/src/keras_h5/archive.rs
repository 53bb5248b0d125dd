//! The `model.weights.h5` inside a Keras 3 `.keras` archive.
//!
//! A `.keras` file is a zip of `config.json`, `metadata.json` and
//! `model.weights.h5`; Keras writes it with Python's `zipfile` defaults
//! (entries stored, not compressed), and other tools may deflate them. Only
//! what finding one entry needs is read: the end-of-central-directory
//! record, the central directory, that entry's local header. Zip64 archives
//! (entries of 4 GiB and more) are refused.

use flate2::read::DeflateDecoder;
use std::io::Read;

/// The entry of a `.keras` archive that holds the weights.
pub(crate) const WEIGHTS_ENTRY: &str = "model.weights.h5";

/// Whether `bytes` start like a zip archive (a local file header).
pub(crate) fn is_zip(bytes: &[u8]) -> bool {
    bytes.starts_with(b"PK\x03\x04")
}

fn u16_at(b: &[u8], at: usize) -> Option<usize> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?) as usize)
}

fn u32_at(b: &[u8], at: usize) -> Option<usize> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?) as usize)
}

/// The bytes of entry `name`, or why they cannot be had.
pub(crate) fn entry(zip: &[u8], name: &str) -> Result<Vec<u8>, String> {
    let corrupt = |what: &str| format!("a corrupt or truncated zip archive ({what})");
    // The end-of-central-directory record: 22 bytes plus a comment of at
    // most 64 KiB, at the very end.
    let search_from = zip.len().saturating_sub(22 + u16::MAX as usize);
    let eocd = (search_from..zip.len().saturating_sub(21))
        .rev()
        .find(|&i| zip[i..].starts_with(b"PK\x05\x06"))
        .ok_or_else(|| corrupt("no end-of-central-directory record"))?;
    let entries = u16_at(zip, eocd + 10).ok_or_else(|| corrupt("short end record"))?;
    let mut at = u32_at(zip, eocd + 16).ok_or_else(|| corrupt("short end record"))?;
    let mut names = Vec::new();
    for _ in 0..entries {
        let header = zip
            .get(at..at + 46)
            .ok_or_else(|| corrupt("short central directory"))?;
        if !header.starts_with(b"PK\x01\x02") {
            return Err(corrupt("bad central directory entry"));
        }
        let field = |off: usize, w: usize| {
            if w == 2 {
                u16_at(header, off)
            } else {
                u32_at(header, off)
            }
            .expect("inside the 46 bytes read")
        };
        let (method, packed, size) = (field(10, 2), field(20, 4), field(24, 4));
        let (name_len, extra_len, comment_len) = (field(28, 2), field(30, 2), field(32, 2));
        let local = field(42, 4);
        let entry_name = zip
            .get(at + 46..at + 46 + name_len)
            .ok_or_else(|| corrupt("short entry name"))?;
        let entry_name = String::from_utf8_lossy(entry_name);
        if entry_name == name {
            if packed == u32::MAX as usize || size == u32::MAX as usize {
                return Err(format!(
                    "entry {name} is a zip64 entry, which is not supported"
                ));
            }
            let data_at = (|| {
                let lh = zip.get(local..local + 30)?;
                lh.starts_with(b"PK\x03\x04")
                    .then(|| local + 30 + u16_at(lh, 26).unwrap() + u16_at(lh, 28).unwrap())
            })()
            .ok_or_else(|| corrupt("bad local header"))?;
            let data = zip
                .get(data_at..data_at + packed)
                .ok_or_else(|| corrupt("entry data cut short"))?;
            return match method {
                0 => Ok(data.to_vec()),
                8 => {
                    // At most the declared size (and one byte to notice
                    // more): a corrupt stream cannot exhaust memory.
                    let mut out = Vec::new();
                    DeflateDecoder::new(data)
                        .take(size as u64 + 1)
                        .read_to_end(&mut out)
                        .map_err(|e| corrupt(&format!("entry {name}: {e}")))?;
                    if out.len() != size {
                        return Err(corrupt(&format!("entry {name} is not {size} bytes unpacked")));
                    }
                    Ok(out)
                }
                m => Err(format!("entry {name} uses zip compression method {m}; only stored (0) and deflate (8) are read")),
            };
        }
        names.push(entry_name.into_owned());
        at += 46 + name_len + extra_len + comment_len;
    }
    Err(format!(
        "a zip archive without {name} (it holds {names:?}); not a Keras 3 .keras model"
    ))
}
