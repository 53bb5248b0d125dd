//! The official CIFAR-10 binary release (`cifar-10-batches-bin/`).
//!
//! Each `*.bin` file is a sequence of 3073-byte records: one label byte, then
//! the 32x32 image as three 1024-byte planes (R, G, B), row-major. The rest of
//! the pipeline works on interleaved HWC pixels, so planes are interleaved
//! here, once, at load time.
//!
//! The release is read extracted (a folder) or straight from the published
//! `cifar-10-binary.tar.gz`, streamed through gzip and tar without writing
//! the members to disk. A batch may hold any whole number of records:
//! mirrors and test archives are smaller than the official 10,000.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{BufReader, Read};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::AtomicBool;

use flate2::read::GzDecoder;

use super::classes::CIFAR10_CLASSES;
use super::error::DataError;
use super::{Cifar10, Dataset, IMAGE_BYTES};

/// Bytes per record: label + 3 planes of 32x32.
pub const RECORD_BYTES: usize = 1 + IMAGE_BYTES;
const PLANE: usize = IMAGE_BYTES / 3;

pub(crate) const TRAIN_FILES: [&str; 5] = [
    "data_batch_1.bin",
    "data_batch_2.bin",
    "data_batch_3.bin",
    "data_batch_4.bin",
    "data_batch_5.bin",
];
pub(crate) const TEST_FILE: &str = "test_batch.bin";
pub(crate) const META_FILE: &str = "batches.meta.txt";

/// The folder holding the `.bin` files: `dir/cifar-10-batches-bin/` or `dir`
/// itself; `None` if neither has `data_batch_1.bin`.
pub(crate) fn find_binary_dir(dir: &Path) -> Option<PathBuf> {
    let nested = dir.join("cifar-10-batches-bin");
    [nested, dir.to_path_buf()]
        .into_iter()
        .find(|d| d.join(TRAIN_FILES[0]).is_file())
}

/// All files the binary source consists of (for cache identity).
pub(crate) fn source_files(dir: &Path) -> Vec<PathBuf> {
    TRAIN_FILES
        .iter()
        .chain([&TEST_FILE, &META_FILE])
        .map(|f| dir.join(f))
        .collect()
}

/// Appends the records of one batch file to `images` (HWC) and `labels`.
pub(crate) fn parse_batch(
    bytes: &[u8],
    path: &Path,
    images: &mut Vec<u8>,
    labels: &mut Vec<u8>,
) -> Result<(), DataError> {
    if bytes.is_empty() {
        return Err(DataError::EmptyBatch {
            path: path.to_path_buf(),
        });
    }
    if !bytes.len().is_multiple_of(RECORD_BYTES) {
        return Err(DataError::Truncated {
            path: path.to_path_buf(),
            size: bytes.len() as u64,
        });
    }
    let n = bytes.len() / RECORD_BYTES;
    images.reserve(n * IMAGE_BYTES);
    labels.reserve(n);
    for (record, rec) in bytes.chunks_exact(RECORD_BYTES).enumerate() {
        let label = rec[0];
        if label > 9 {
            return Err(DataError::BadLabel {
                path: path.to_path_buf(),
                record,
                label,
            });
        }
        labels.push(label);
        let (r, gb) = rec[1..].split_at(PLANE);
        let (g, b) = gb.split_at(PLANE);
        for ((&r, &g), &b) in r.iter().zip(g).zip(b) {
            images.extend_from_slice(&[r, g, b]);
        }
    }
    Ok(())
}

fn read_split(
    dir: &Path,
    files: &[&str],
    classes: &[String],
    stop: &AtomicBool,
) -> Result<Dataset, DataError> {
    let mut images = Vec::new();
    let mut labels = Vec::new();
    for f in files {
        DataError::check_stop(stop)?;
        let path = dir.join(f);
        let bytes = fs::read(&path).map_err(DataError::io(&path))?;
        parse_batch(&bytes, &path, &mut images, &mut labels)?;
    }
    Ok(Dataset {
        images,
        labels,
        classes: classes.to_vec(),
    })
}

/// Class names from `batches.meta.txt` (one per line), or CIFAR-10's own if
/// the file is absent.
fn read_classes(dir: &Path) -> Result<Vec<String>, DataError> {
    let path = dir.join(META_FILE);
    if !path.exists() {
        return Ok(default_classes());
    }
    let text = fs::read_to_string(&path).map_err(DataError::io(&path))?;
    parse_classes(&text, path)
}

fn default_classes() -> Vec<String> {
    CIFAR10_CLASSES.iter().map(|s| s.to_string()).collect()
}

/// The class names of a `batches.meta.txt` read from `path`.
fn parse_classes(text: &str, path: PathBuf) -> Result<Vec<String>, DataError> {
    let names: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    if names.len() != 10 {
        return Err(DataError::BadMeta {
            path,
            reason: format!(
                "expected 10 class names, one per line, found {}",
                names.len()
            ),
        });
    }
    Ok(names)
}

/// Loads train (5 batches) and test from a folder with the `.bin` files,
/// checking `stop` before each file.
pub(crate) fn load(dir: &Path, stop: &AtomicBool) -> Result<Cifar10, DataError> {
    let classes = read_classes(dir)?;
    Ok(Cifar10 {
        train: read_split(dir, &TRAIN_FILES, &classes, stop)?,
        test: read_split(dir, &[TEST_FILE], &classes, stop)?,
    })
}

/// The release file a tar member is, if any: its base name, when it is one
/// of the release's and no folder on its way is hidden (`__MACOSX/`, `._x`).
fn release_member(path: &Path) -> Option<&'static str> {
    let names: Vec<String> = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_string_lossy().to_string()),
            _ => None,
        })
        .collect();
    if names.iter().any(|n| super::folder::is_hidden(n)) {
        return None;
    }
    let last = names.last()?;
    TRAIN_FILES
        .iter()
        .chain([&TEST_FILE, &META_FILE])
        .find(|f| **f == last.as_str())
        .copied()
}

fn open_tar_gz(archive: &Path) -> Result<tar::Archive<GzDecoder<BufReader<File>>>, DataError> {
    let file = File::open(archive).map_err(DataError::io(archive))?;
    Ok(tar::Archive::new(GzDecoder::new(BufReader::with_capacity(
        1 << 20,
        file,
    ))))
}

/// Whether the `.tar.gz` at `archive` holds the binary release rather than
/// image folders: decided by its first member that is either a release
/// file or an image, so only the start of the archive is decompressed.
/// An unreadable archive answers `false`, leaving the error to the
/// image-folder reader, which names the archive.
pub(crate) fn is_binary_tar_gz(archive: &Path) -> bool {
    let Ok(mut tar) = open_tar_gz(archive) else {
        return false;
    };
    let Ok(entries) = tar.entries() else {
        return false;
    };
    for entry in entries {
        let Ok(entry) = entry else { return false };
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let Ok(path) = entry.path() else { return false };
        if release_member(&path).is_some_and(|f| f != META_FILE) {
            return true;
        }
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if super::folder::is_image_name(&name) {
            return false;
        }
    }
    false
}

/// Loads the release from a `.tar.gz` (the published
/// `cifar-10-binary.tar.gz`, or any archive with the same member names at
/// any depth), in one streaming pass, checking `stop` before each member.
pub(crate) fn load_tar_gz(archive: &Path, stop: &AtomicBool) -> Result<Cifar10, DataError> {
    let mut tar = open_tar_gz(archive)?;
    // Batches parsed as they stream by, put in release order at the end
    // (archive order is not guaranteed).
    let mut batches: BTreeMap<&'static str, (Vec<u8>, Vec<u8>)> = BTreeMap::new();
    let mut classes = None;
    for entry in tar.entries().map_err(DataError::io(archive))? {
        DataError::check_stop(stop)?;
        let mut entry = entry.map_err(DataError::io(archive))?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let member = entry.path().map_err(DataError::io(archive))?.into_owned();
        let Some(name) = release_member(&member) else {
            continue;
        };
        let location = archive.join(&member);
        let mut bytes = Vec::with_capacity(entry.size() as usize);
        entry
            .read_to_end(&mut bytes)
            .map_err(DataError::io(&location))?;
        let duplicate = if name == META_FILE {
            let text = String::from_utf8_lossy(&bytes);
            classes
                .replace(parse_classes(&text, location.clone())?)
                .is_some()
        } else {
            let (mut images, mut labels) = (Vec::new(), Vec::new());
            parse_batch(&bytes, &location, &mut images, &mut labels)?;
            batches.insert(name, (images, labels)).is_some()
        };
        if duplicate {
            return Err(DataError::Unrecognized {
                path: location,
                reason: format!("the archive holds more than one {name}"),
            });
        }
    }
    let classes = classes.unwrap_or_else(default_classes);
    let mut split = |files: &[&'static str]| -> Result<Dataset, DataError> {
        let mut data = Dataset {
            classes: classes.clone(),
            ..Dataset::default()
        };
        for f in files {
            let Some((images, labels)) = batches.remove(f) else {
                return Err(DataError::Unrecognized {
                    path: archive.to_path_buf(),
                    reason: format!(
                        "has no {f}; a CIFAR-10 binary release has {} and {TEST_FILE}",
                        TRAIN_FILES.join(", ")
                    ),
                });
            };
            data.images.extend_from_slice(&images);
            data.labels.extend_from_slice(&labels);
        }
        Ok(data)
    };
    Ok(Cifar10 {
        train: split(&TRAIN_FILES)?,
        test: split(&[TEST_FILE])?,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Encodes one record: pixel (y, x) has R = label*10 + y, G = x, B = 255 - x.
    pub(crate) fn record(label: u8) -> Vec<u8> {
        let mut rec = vec![label];
        for c in 0..3 {
            for y in 0..32u8 {
                for x in 0..32u8 {
                    rec.push(match c {
                        0 => label.wrapping_mul(10).wrapping_add(y),
                        1 => x,
                        _ => 255 - x,
                    });
                }
            }
        }
        rec
    }

    /// Writes a complete binary release with `per_file` records per batch.
    pub(crate) fn write_release(dir: &Path, per_file: usize) {
        fs::create_dir_all(dir).unwrap();
        for (i, f) in TRAIN_FILES.iter().chain([&TEST_FILE]).enumerate() {
            let bytes: Vec<u8> = (0..per_file)
                .flat_map(|r| record(((i + r) % 10) as u8))
                .collect();
            fs::write(dir.join(f), bytes).unwrap();
        }
        fs::write(dir.join(META_FILE), CIFAR10_CLASSES.join("\n") + "\n\n").unwrap();
    }

    #[test]
    fn records_are_converted_to_hwc() {
        let mut images = Vec::new();
        let mut labels = Vec::new();
        let bytes: Vec<u8> = [3u8, 7].iter().flat_map(|&l| record(l)).collect();
        parse_batch(&bytes, Path::new("b.bin"), &mut images, &mut labels).unwrap();
        assert_eq!(labels, [3, 7]);
        assert_eq!(images.len(), 2 * IMAGE_BYTES);
        let px = |i: usize, y: usize, x: usize| {
            let o = i * IMAGE_BYTES + (y * 32 + x) * 3;
            [images[o], images[o + 1], images[o + 2]]
        };
        assert_eq!(px(0, 0, 0), [30, 0, 255]);
        assert_eq!(px(0, 5, 9), [35, 9, 246]);
        assert_eq!(px(1, 31, 31), [70 + 31, 31, 224]);
    }

    #[test]
    fn truncated_file_and_bad_label_name_the_file() {
        let mut bytes = record(1);
        bytes.pop();
        let e = parse_batch(
            &bytes,
            Path::new("/x/data_batch_2.bin"),
            &mut vec![],
            &mut vec![],
        )
        .unwrap_err();
        assert!(matches!(e, DataError::Truncated { size: 3072, .. }), "{e}");
        assert!(e.to_string().contains("/x/data_batch_2.bin"));

        let mut bytes = record(1);
        bytes.extend(record(10));
        let e = parse_batch(
            &bytes,
            Path::new("/x/test_batch.bin"),
            &mut vec![],
            &mut vec![],
        )
        .unwrap_err();
        assert!(
            matches!(
                e,
                DataError::BadLabel {
                    record: 1,
                    label: 10,
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("/x/test_batch.bin"));
        let e = parse_batch(&[], Path::new("empty.bin"), &mut vec![], &mut vec![]).unwrap_err();
        assert!(matches!(e, DataError::EmptyBatch { .. }), "{e}");
        assert!(e.to_string().contains("empty.bin"), "{e}");
    }

    #[test]
    fn loads_a_release_folder_nested_or_flat() {
        let tmp = tempfile::tempdir().unwrap();
        let bin = tmp.path().join("cifar-10-batches-bin");
        write_release(&bin, 3);
        assert_eq!(find_binary_dir(tmp.path()).unwrap(), bin);
        assert_eq!(find_binary_dir(&bin).unwrap(), bin);
        assert!(find_binary_dir(&tmp.path().join("nope")).is_none());
        let data = load(&bin, &super::super::NEVER).unwrap();
        assert_eq!(data.train.len(), 15);
        assert_eq!(data.test.len(), 3);
        assert_eq!(data.train.classes, CIFAR10_CLASSES);
        assert_eq!(&data.train.labels[..4], &[0, 1, 2, 1]);
        assert_eq!(data.test.labels, [5, 6, 7]);

        // Truncating one batch is reported with that batch's path.
        let victim = bin.join("data_batch_4.bin");
        let len = fs::metadata(&victim).unwrap().len();
        let f = fs::OpenOptions::new().write(true).open(&victim).unwrap();
        f.set_len(len - 100).unwrap();
        let e = load(&bin, &super::super::NEVER).unwrap_err().to_string();
        assert!(
            e.contains("data_batch_4.bin") && e.contains("not a multiple"),
            "{e}"
        );

        // A missing batch is reported with its path.
        fs::remove_file(&victim).unwrap();
        let e = load(&bin, &super::super::NEVER).unwrap_err().to_string();
        assert!(e.contains("data_batch_4.bin"), "{e}");
    }

    #[test]
    fn bad_meta_file_is_reported() {
        let tmp = tempfile::tempdir().unwrap();
        write_release(tmp.path(), 1);
        fs::write(tmp.path().join(META_FILE), "cat\ndog\n").unwrap();
        let e = load(tmp.path(), &super::super::NEVER)
            .unwrap_err()
            .to_string();
        assert!(e.contains(META_FILE) && e.contains("found 2"), "{e}");
    }
}
