//! Image-folder datasets: `train/<class>/*.jpg|png` and `test/<class>/...`,
//! either as a directory or inside a `.tar.gz`.
//!
//! Loading is two-phase: first list the images (cheap, sequential: a gzip
//! stream can only be read in order), then decode them in parallel with
//! rayon into one preallocated buffer. Images are sorted by
//! (split, class, file name) so the dataset order does not depend on
//! directory-listing or archive order.
//!
//! Hidden entries (`.DS_Store`, `._x.jpg`, `__MACOSX/`) and files without a
//! `.jpg`/`.jpeg`/`.png` extension (READMEs, listings) are ignored. An archive
//! may have a top-level folder above `train/` and `test/`.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use flate2::read::GzDecoder;
use rayon::prelude::*;

use super::classes::{resolve_classes, CIFAR10_CLASSES};
use super::decode::decode_rgb32;
use super::error::DataError;
use super::{Cifar10, Dataset, IMAGE_BYTES};

pub(crate) const SPLITS: [&str; 2] = ["train", "test"];

enum Payload {
    /// Already read (archive member).
    Bytes(Vec<u8>),
    /// To be read during the parallel decode (directory).
    File,
}

/// One image found in the source.
struct Member {
    split: usize,
    class: String,
    file: String,
    /// Where it lives, for errors: a real path, or `archive/member/path`.
    location: PathBuf,
    payload: Payload,
}

pub(crate) fn is_hidden(name: &str) -> bool {
    name.starts_with('.') || name == "__MACOSX"
}

pub(crate) fn is_image_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    [".jpg", ".jpeg", ".png"].iter().any(|e| lower.ends_with(e))
}

fn split_index(name: &str) -> Option<usize> {
    SPLITS.iter().position(|s| *s == name)
}

/// Lists the images of a directory with `train/` and `test/` below it.
fn scan_dir(root: &Path) -> Result<Vec<Member>, DataError> {
    let mut members = Vec::new();
    for (split, name) in SPLITS.iter().enumerate() {
        let split_dir = root.join(name);
        if !split_dir.is_dir() {
            return Err(DataError::MissingSplit {
                path: root.to_path_buf(),
                split: name,
            });
        }
        let before = members.len();
        for entry in read_dir_sorted(&split_dir)? {
            let fname = entry
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .to_string();
            if is_hidden(&fname) {
                continue;
            }
            if entry.is_dir() {
                for file in read_dir_sorted(&entry)? {
                    let f = file
                        .file_name()
                        .unwrap_or_default()
                        .to_string_lossy()
                        .to_string();
                    if is_hidden(&f) || !is_image_name(&f) || !file.is_file() {
                        continue;
                    }
                    members.push(Member {
                        split,
                        class: fname.clone(),
                        file: f,
                        location: file,
                        payload: Payload::File,
                    });
                }
            } else if is_image_name(&fname) {
                return Err(DataError::NotInClassFolder {
                    path: entry,
                    split: name,
                });
            }
        }
        if members.len() == before {
            return Err(DataError::NoImages {
                path: split_dir,
                split: name,
            });
        }
    }
    Ok(members)
}

fn read_dir_sorted(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let mut v = fs::read_dir(dir)
        .map_err(DataError::io(dir))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(DataError::io(dir))?;
    v.sort();
    Ok(v)
}

/// Lists (and reads) the images inside a `.tar.gz`, checking `stop`
/// before each member.
fn scan_tar_gz(archive: &Path, stop: &AtomicBool) -> Result<Vec<Member>, DataError> {
    let file = File::open(archive).map_err(DataError::io(archive))?;
    let gz = GzDecoder::new(BufReader::with_capacity(1 << 20, file));
    let mut tar = tar::Archive::new(gz);
    let mut members = Vec::new();
    let mut seen_split = [false; 2];
    let entries = tar.entries().map_err(DataError::io(archive))?;
    for entry in entries {
        DataError::check_stop(stop)?;
        let mut entry = entry.map_err(DataError::io(archive))?;
        let path = entry.path().map_err(DataError::io(archive))?.into_owned();
        // Only real names: `tar czf x.tgz -C dir .` prefixes every member
        // with "./", which is not a hidden folder.
        let comps: Vec<String> = path
            .components()
            .filter(|c| matches!(c, std::path::Component::Normal(_)))
            .map(|c| c.as_os_str().to_string_lossy().to_string())
            .collect();
        if comps.is_empty() {
            continue;
        }
        if comps.iter().any(|c| is_hidden(c)) {
            continue;
        }
        for c in &comps {
            if let Some(s) = split_index(c) {
                seen_split[s] = true;
            }
        }
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let n = comps.len();
        let name = &comps[n - 1];
        if !is_image_name(name) {
            continue;
        }
        let location = archive.join(&path);
        if n >= 3 {
            if let Some(split) = split_index(&comps[n - 3]) {
                let mut bytes = Vec::with_capacity(entry.size() as usize);
                entry
                    .read_to_end(&mut bytes)
                    .map_err(DataError::io(&location))?;
                members.push(Member {
                    split,
                    class: comps[n - 2].clone(),
                    file: name.clone(),
                    location,
                    payload: Payload::Bytes(bytes),
                });
                continue;
            }
        }
        if n >= 2 {
            if let Some(split) = split_index(&comps[n - 2]) {
                return Err(DataError::NotInClassFolder {
                    path: location,
                    split: SPLITS[split],
                });
            }
        }
    }
    for (s, name) in SPLITS.iter().enumerate() {
        if !members.iter().any(|m| m.split == s) {
            return Err(if seen_split[s] {
                DataError::NoImages {
                    path: archive.to_path_buf(),
                    split: name,
                }
            } else {
                DataError::MissingSplit {
                    path: archive.to_path_buf(),
                    split: name,
                }
            });
        }
    }
    Ok(members)
}

/// Assigns labels, checks class folders and decodes everything in
/// parallel, checking `stop` before each image.
fn build(mut members: Vec<Member>, stop: &AtomicBool) -> Result<Cifar10, DataError> {
    let train_folders: BTreeSet<&str> = members
        .iter()
        .filter(|m| m.split == 0)
        .map(|m| m.class.as_str())
        .collect();
    let (classes, is_cifar) = resolve_classes(train_folders);
    if classes.len() > 256 {
        return Err(DataError::Unrecognized {
            path: members[0].location.clone(),
            reason: format!("{} class folders; at most 256 are supported", classes.len()),
        });
    }
    members.sort_by(|a, b| (a.split, &a.class, &a.file).cmp(&(b.split, &b.class, &b.file)));
    let label_of = |m: &Member| classes.iter().position(|c| *c == m.class);
    if let Some(bad) = members.iter().find(|m| label_of(m).is_none()) {
        let expected = if is_cifar {
            CIFAR10_CLASSES.join(", ")
        } else {
            format!("the class folders of train/: {}", classes.join(", "))
        };
        return Err(DataError::UnknownClass {
            path: bad.location.clone(),
            class: bad.class.clone(),
            expected,
        });
    }

    let test_folders: BTreeSet<&str> = members
        .iter()
        .filter(|m| m.split == 1)
        .map(|m| m.class.as_str())
        .collect();
    let untested: Vec<&str> = classes
        .iter()
        .map(String::as_str)
        .filter(|c| !test_folders.contains(c))
        .collect();
    if !test_folders.is_empty() && !untested.is_empty() {
        // Not an error (a small custom set may lack one), but never silent.
        eprintln!(
            "warning: test/ has no images of class {}: its accuracy is not measured",
            untested.join(", ")
        );
    }
    crate::test_hook::pause(crate::test_hook::LOADING, stop);
    let mut images = vec![0u8; members.len() * IMAGE_BYTES];
    let failure = images
        .par_chunks_mut(IMAGE_BYTES)
        .zip(members.par_iter())
        .enumerate()
        .filter_map(|(i, (out, m))| {
            if let Err(e) = DataError::check_stop(stop) {
                return Some((i, e));
            }
            let result = match &m.payload {
                Payload::Bytes(b) => decode_rgb32(b, &m.location, out),
                Payload::File => fs::read(&m.location)
                    .map_err(DataError::io(&m.location))
                    .and_then(|b| decode_rgb32(&b, &m.location, out)),
            };
            result.err().map(|e| (i, e))
        })
        .min_by_key(|(i, _)| *i);
    // A stop wins over a bad image found meanwhile: the images after it
    // were not even looked at.
    DataError::check_stop(stop)?;
    if let Some((_, e)) = failure {
        return Err(e);
    }

    let n_train = members.iter().filter(|m| m.split == 0).count();
    let labels: Vec<u8> = members
        .iter()
        .map(|m| label_of(m).expect("checked above") as u8)
        .collect();
    let test_images = images.split_off(n_train * IMAGE_BYTES);
    let mut train_labels = labels;
    let test_labels = train_labels.split_off(n_train);
    Ok(Cifar10 {
        train: Dataset {
            images,
            labels: train_labels,
            classes: classes.clone(),
        },
        test: Dataset {
            images: test_images,
            labels: test_labels,
            classes,
        },
    })
}

/// Loads an extracted image-folder tree rooted at `root`; `stop` ends it
/// early with [`DataError::Stopped`].
pub(crate) fn load_dir(root: &Path, stop: &AtomicBool) -> Result<Cifar10, DataError> {
    build(scan_dir(root)?, stop)
}

/// Loads an image-folder tree from a `.tar.gz` archive; `stop` ends it
/// early with [`DataError::Stopped`].
pub(crate) fn load_tar_gz(archive: &Path, stop: &AtomicBool) -> Result<Cifar10, DataError> {
    build(scan_tar_gz(archive, stop)?, stop)
}

/// (file count, total bytes, newest mtime in ns) of everything under
/// `root/train` and `root/test`: a cheap fingerprint for cache invalidation.
pub(crate) fn dir_fingerprint(root: &Path) -> Result<(u64, u64, u128), DataError> {
    let mut acc = (0u64, 0u64, 0u128);
    let mut stack: Vec<PathBuf> = SPLITS.iter().map(|s| root.join(s)).collect();
    while let Some(dir) = stack.pop() {
        let Ok(rd) = fs::read_dir(&dir) else { continue };
        for entry in rd {
            let entry = entry.map_err(DataError::io(&dir))?;
            let meta = entry.metadata().map_err(DataError::io(entry.path()))?;
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                acc.0 += 1;
                acc.1 += meta.len();
                acc.2 = acc.2.max(super::cache::mtime_ns(&meta));
            }
        }
    }
    Ok(acc)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Write;

    /// A deterministic 32x32 RGB test image with a smooth pattern (so JPEG
    /// keeps it recognizable): R depends on `seed`, G on x, B on y.
    pub(crate) fn pattern(seed: u8, w: usize, h: usize) -> Vec<u8> {
        let mut px = Vec::with_capacity(w * h * 3);
        for y in 0..h {
            for x in 0..w {
                px.extend_from_slice(&[seed.wrapping_mul(20), (x * 8) as u8, (y * 8) as u8]);
            }
        }
        px
    }

    pub(crate) fn png_bytes(rgb: &[u8], w: u32, h: u32) -> Vec<u8> {
        let mut out = Vec::new();
        let mut enc = png::Encoder::new(&mut out, w, h);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        enc.write_header().unwrap().write_image_data(rgb).unwrap();
        out
    }

    pub(crate) fn jpeg_bytes(rgb: &[u8], w: u16, h: u16) -> Vec<u8> {
        let mut out = Vec::new();
        jpeg_encoder::Encoder::new(&mut out, 95)
            .encode(rgb, w, h, jpeg_encoder::ColorType::Rgb)
            .unwrap();
        out
    }

    /// Writes `files` (relative path, bytes) under `root`.
    pub(crate) fn write_tree(root: &Path, files: &[(String, Vec<u8>)]) {
        for (rel, bytes) in files {
            let p = root.join(rel);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, bytes).unwrap();
        }
    }

    /// Packs `files` into a `.tar.gz` at `path`, under `prefix`.
    pub(crate) fn write_tar_gz(path: &Path, prefix: &str, files: &[(String, Vec<u8>)]) {
        let gz = flate2::write::GzEncoder::new(File::create(path).unwrap(), Default::default());
        let mut b = tar::Builder::new(gz);
        for (rel, bytes) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(bytes.len() as u64);
            h.set_mode(0o644);
            // The name goes into the header as raw bytes: `append_data`
            // would normalize a "./" prefix away.
            let name = format!("{prefix}{rel}");
            h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
            h.set_cksum();
            b.append(&h, bytes.as_slice()).unwrap();
        }
        b.into_inner().unwrap().finish().unwrap().flush().unwrap();
    }

    /// A small CIFAR-like tree: `per_class` PNG (train) / JPEG (test) images
    /// for each of `classes`, image k of class c drawn with seed c.
    pub(crate) fn tree(classes: &[&str], per_class: usize) -> Vec<(String, Vec<u8>)> {
        let mut files = Vec::new();
        for (c, class) in classes.iter().enumerate() {
            for k in 0..per_class {
                let img = pattern(c as u8, 32, 32);
                files.push((format!("train/{class}/{k:04}.png"), png_bytes(&img, 32, 32)));
                files.push((format!("test/{class}/{k:04}.jpg"), jpeg_bytes(&img, 32, 32)));
            }
        }
        files.push(("README.txt".into(), b"not an image".to_vec()));
        files.push(("train/.DS_Store".into(), b"junk".to_vec()));
        files
    }

    fn cifar_names() -> Vec<&'static str> {
        CIFAR10_CLASSES.to_vec()
    }

    fn check_cifar_tree(data: &Cifar10, per_class: usize) {
        assert_eq!(data.train.len(), 10 * per_class);
        assert_eq!(data.test.len(), 10 * per_class);
        assert_eq!(data.train.classes, CIFAR10_CLASSES);
        for (i, &l) in data.train.labels.iter().enumerate() {
            assert_eq!(l as usize, i / per_class);
            // PNG is lossless: pixel (y=3, x=5) is exact.
            let img = data.train.image(i);
            let o = (3 * 32 + 5) * 3;
            assert_eq!(&img[o..o + 3], &[l.wrapping_mul(20), 40, 24]);
        }
        for (i, &l) in data.test.labels.iter().enumerate() {
            assert_eq!(l as usize, i / per_class);
            // JPEG is lossy: pixels within a few levels.
            let want = pattern(l, 32, 32);
            let img = data.test.image(i);
            let max_err = img
                .iter()
                .zip(&want)
                .map(|(a, b)| a.abs_diff(*b))
                .max()
                .unwrap();
            assert!(max_err <= 12, "test image {i}: max error {max_err}");
        }
    }

    #[test]
    fn loads_png_and_jpeg_folders_in_cifar_order() {
        let tmp = tempfile::tempdir().unwrap();
        write_tree(tmp.path(), &tree(&cifar_names(), 2));
        let data = load_dir(tmp.path(), &super::super::NEVER).unwrap();
        check_cifar_tree(&data, 2);
    }

    #[test]
    fn loads_tar_gz_with_and_without_top_folder() {
        let tmp = tempfile::tempdir().unwrap();
        // "./" is what `tar czf d.tar.gz -C dir .` writes before every name.
        for prefix in ["", "cifar10/", "./", "./cifar10/"] {
            let archive = tmp.path().join("d.tar.gz");
            write_tar_gz(&archive, prefix, &tree(&cifar_names(), 2));
            let data = load_tar_gz(&archive, &super::super::NEVER).unwrap();
            check_cifar_tree(&data, 2);
        }
    }

    #[test]
    fn non_cifar_classes_are_sorted_folder_names() {
        let tmp = tempfile::tempdir().unwrap();
        write_tree(tmp.path(), &tree(&["zebra", "ant"], 1));
        let data = load_dir(tmp.path(), &super::super::NEVER).unwrap();
        assert_eq!(data.train.classes, ["ant", "zebra"]);
        assert_eq!(data.train.labels, [0, 1]);
        // Image of "ant" was drawn with seed 1 (its position in the input list).
        assert_eq!(data.train.image(0)[0], 20);
    }

    #[test]
    fn grayscale_and_palette_png_become_rgb() {
        let tmp = tempfile::tempdir().unwrap();
        let mut files = tree(&["a", "b"], 1);
        let gray: Vec<u8> = (0..1024).map(|i| (i % 256) as u8).collect();
        let mut out = Vec::new();
        let mut enc = png::Encoder::new(&mut out, 32, 32);
        enc.set_color(png::ColorType::Grayscale);
        enc.write_header().unwrap().write_image_data(&gray).unwrap();
        files.push(("train/c/gray.png".into(), out));
        write_tree(tmp.path(), &files);
        let data = load_dir(tmp.path(), &super::super::NEVER).unwrap();
        let img = data.train.image(2);
        assert_eq!(&img[..6], &[0, 0, 0, 1, 1, 1]);
    }

    fn expect_err(files: Vec<(String, Vec<u8>)>, needle_path: &str, needle_msg: &str) {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("tree");
        write_tree(&root, &files);
        let e = load_dir(&root, &super::super::NEVER)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(needle_path) && e.contains(needle_msg),
            "dir: {e}"
        );
        let archive = tmp.path().join("a.tar.gz");
        write_tar_gz(&archive, "", &files);
        let e = load_tar_gz(&archive, &super::super::NEVER)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(needle_path) && e.contains(needle_msg),
            "tar: {e}"
        );
        assert!(e.contains("a.tar.gz"), "tar: {e}");
    }

    #[test]
    fn corrupt_image_is_reported_with_its_path() {
        let mut files = tree(&cifar_names(), 1);
        files.push(("train/cat/broken.jpg".into(), b"\xFF\xD8garbage".to_vec()));
        expect_err(files, "train/cat/broken.jpg", "cannot decode");
        let mut files = tree(&cifar_names(), 1);
        let mut jpg = jpeg_bytes(&pattern(0, 32, 32), 32, 32);
        jpg.truncate(jpg.len() / 3);
        files.push(("test/dog/cut.jpg".into(), jpg));
        expect_err(files, "test/dog/cut.jpg", "cannot decode");
        let mut files = tree(&cifar_names(), 1);
        files.push(("test/dog/text.png".into(), b"hello".to_vec()));
        expect_err(files, "test/dog/text.png", "not a JPEG or PNG");
    }

    #[test]
    fn wrong_size_is_reported_with_its_path() {
        let mut files = tree(&cifar_names(), 1);
        files.push((
            "train/ship/big.png".into(),
            png_bytes(&pattern(0, 64, 48), 64, 48),
        ));
        expect_err(files, "train/ship/big.png", "64x48, expected 32x32");
        let mut files = tree(&cifar_names(), 1);
        files.push((
            "test/ship/small.jpg".into(),
            jpeg_bytes(&pattern(0, 16, 32), 16, 32),
        ));
        expect_err(files, "test/ship/small.jpg", "16x32");
    }

    #[test]
    fn unknown_class_folder_is_reported_with_its_file() {
        let mut files = tree(&cifar_names(), 1);
        files.push((
            "train/dragon/0001.png".into(),
            png_bytes(&pattern(0, 32, 32), 32, 32),
        ));
        expect_err(
            files,
            "train/dragon/0001.png",
            "'dragon' is not a CIFAR-10 class",
        );
        let mut files = tree(&cifar_names(), 1);
        files.push((
            "test/airplanes/0001.png".into(),
            png_bytes(&pattern(0, 32, 32), 32, 32),
        ));
        expect_err(files, "test/airplanes/0001.png", "'airplanes'");
        // Non-CIFAR: a test class missing from train.
        let mut files = tree(&["a", "b"], 1);
        files.push((
            "test/c/0.png".into(),
            png_bytes(&pattern(0, 32, 32), 32, 32),
        ));
        expect_err(files, "test/c/0.png", "class folders of train/: a, b");
    }

    #[test]
    fn truncated_or_non_gzip_archive_names_the_archive() {
        let tmp = tempfile::tempdir().unwrap();
        let archive = tmp.path().join("cut.tar.gz");
        write_tar_gz(&archive, "", &tree(&cifar_names(), 2));
        let bytes = fs::read(&archive).unwrap();
        fs::write(&archive, &bytes[..bytes.len() / 2]).unwrap();
        let e = load_tar_gz(&archive, &super::super::NEVER)
            .unwrap_err()
            .to_string();
        assert!(e.contains("cut.tar.gz"), "{e}");
        fs::write(&archive, b"plain text, not gzip").unwrap();
        let e = load_tar_gz(&archive, &super::super::NEVER)
            .unwrap_err()
            .to_string();
        assert!(e.contains("cut.tar.gz"), "{e}");
    }

    #[test]
    fn missing_split_and_stray_images_are_reported() {
        let files: Vec<_> = tree(&cifar_names(), 1)
            .into_iter()
            .filter(|(p, _)| !p.starts_with("test/"))
            .collect();
        expect_err(files, "", "has no test/ folder");
        let mut files = tree(&cifar_names(), 1);
        files.push((
            "train/loose.png".into(),
            png_bytes(&pattern(0, 32, 32), 32, 32),
        ));
        expect_err(files, "train/loose.png", "not inside a class folder");
    }
}
