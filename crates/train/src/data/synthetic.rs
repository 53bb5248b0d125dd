//! A small generated CIFAR-10 look-alike, written in every format the
//! loaders read: so the data path, training and CLI tests run on a fresh
//! machine with no copy of CIFAR-10 and no network.
//!
//! The classes are learnable but not trivially separable pixel by pixel:
//! each class has its own base colour and its own stripe pattern
//! (orientation and period), and every image gets a random brightness shift,
//! a random stripe phase and per-pixel noise. A small network separates them
//! within an epoch or two; a constant predictor stays at 10%.
//!
//! ```no_run
//! use train::data::synthetic;
//! let data = synthetic::cifar10(20, 5, 0);
//! synthetic::write_binary_tar_gz(std::path::Path::new("/tmp/small.tar.gz"), &data).unwrap();
//! ```

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

use flate2::write::GzEncoder;
use flate2::Compression;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::binary::{META_FILE, TEST_FILE, TRAIN_FILES};
use super::classes::CIFAR10_CLASSES;
use super::{Cifar10, Dataset, IMAGE_BYTES, IMAGE_SIDE};

/// Base colour of each class (RGB), far apart from each other.
const PALETTE: [[u8; 3]; 10] = [
    [200, 40, 40],
    [40, 200, 40],
    [40, 40, 200],
    [200, 200, 40],
    [200, 40, 200],
    [40, 200, 200],
    [230, 140, 30],
    [120, 120, 120],
    [30, 90, 160],
    [160, 90, 30],
];

/// The folder of the binary release inside its archive.
pub const BINARY_DIR: &str = "cifar-10-batches-bin";

/// One image of class `class` (0..10), HWC RGB.
pub fn image(class: u8, rng: &mut impl Rng) -> Vec<u8> {
    let base = PALETTE[class as usize % 10];
    let vertical = class % 2 == 1;
    let period = 4 + 2 * (class as usize / 2);
    let phase = rng.gen_range(0..period);
    let brightness: i32 = rng.gen_range(-20..=20);
    let mut px = Vec::with_capacity(IMAGE_BYTES);
    for y in 0..IMAGE_SIDE {
        for x in 0..IMAGE_SIDE {
            let t = if vertical { x } else { y };
            let stripe: i32 = if (t + phase) % period < period / 2 {
                40
            } else {
                -40
            };
            for &c in &base {
                let noise: i32 = rng.gen_range(-25..=25);
                px.push((c as i32 + stripe + brightness + noise).clamp(0, 255) as u8);
            }
        }
    }
    px
}

fn split(n: usize, rng: &mut ChaCha8Rng) -> Dataset {
    let mut data = Dataset {
        images: Vec::with_capacity(n * IMAGE_BYTES),
        labels: Vec::with_capacity(n),
        classes: CIFAR10_CLASSES.iter().map(|s| s.to_string()).collect(),
    };
    // Classes interleaved: any prefix is (nearly) balanced.
    for i in 0..n {
        let label = (i % 10) as u8;
        data.images.extend(image(label, rng));
        data.labels.push(label);
    }
    data
}

/// `train_per_class` and `test_per_class` images of each of the 10 CIFAR-10
/// classes; the same `seed` gives the same bytes.
pub fn cifar10(train_per_class: usize, test_per_class: usize, seed: u64) -> Cifar10 {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    Cifar10 {
        train: split(10 * train_per_class, &mut rng),
        test: split(10 * test_per_class, &mut rng),
    }
}

/// Images `range` of `data` as binary-release records (label byte, then the
/// R, G and B planes).
pub fn records(data: &Dataset, range: std::ops::Range<usize>) -> Vec<u8> {
    let mut out = Vec::with_capacity(range.len() * (1 + IMAGE_BYTES));
    for i in range {
        out.push(data.labels[i]);
        let img = data.image(i);
        for c in 0..3 {
            out.extend(img.iter().skip(c).step_by(3));
        }
    }
    out
}

/// The release's files and their bytes: the train split cut into five
/// batches as evenly as possible, then the test batch and the class names.
/// Fails if a batch would be empty (fewer than 5 train or no test images).
pub fn release_files(data: &Cifar10) -> io::Result<Vec<(String, Vec<u8>)>> {
    let n = data.train.len();
    if n < TRAIN_FILES.len() || data.test.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "a binary release needs at least 5 train and 1 test image, got {n} and {}",
                data.test.len()
            ),
        ));
    }
    let mut files = Vec::new();
    for (b, name) in TRAIN_FILES.iter().enumerate() {
        let range = b * n / TRAIN_FILES.len()..(b + 1) * n / TRAIN_FILES.len();
        files.push((name.to_string(), records(&data.train, range)));
    }
    files.push((
        TEST_FILE.to_string(),
        records(&data.test, 0..data.test.len()),
    ));
    files.push((
        META_FILE.to_string(),
        (data.train.classes.join("\n") + "\n").into_bytes(),
    ));
    Ok(files)
}

/// Writes the binary release extracted: `dir/cifar-10-batches-bin/*.bin`.
pub fn write_binary_release(dir: &Path, data: &Cifar10) -> io::Result<()> {
    let bin = dir.join(BINARY_DIR);
    fs::create_dir_all(&bin)?;
    for (name, bytes) in release_files(data)? {
        fs::write(bin.join(name), bytes)?;
    }
    Ok(())
}

/// Writes `(member name, bytes)` pairs as a `.tar.gz` (tests build broken
/// archives with it).
pub fn write_files_tar_gz(path: &Path, files: &[(String, Vec<u8>)]) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    let gz = GzEncoder::new(File::create(path)?, Compression::fast());
    let mut tar = tar::Builder::new(gz);
    for (name, bytes) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut header, name, bytes.as_slice())?;
    }
    tar.into_inner()?.finish()?.flush()
}

/// Writes the binary release as the published archive is laid out: a
/// `.tar.gz` with `cifar-10-batches-bin/<file>` members.
pub fn write_binary_tar_gz(path: &Path, data: &Cifar10) -> io::Result<()> {
    let files: Vec<(String, Vec<u8>)> = release_files(data)?
        .into_iter()
        .map(|(n, b)| (format!("{BINARY_DIR}/{n}"), b))
        .collect();
    write_files_tar_gz(path, &files)
}

fn png(rgb: &[u8]) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, IMAGE_SIDE as u32, IMAGE_SIDE as u32);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    enc.write_header()
        .and_then(|mut w| w.write_image_data(rgb))
        .map_err(io::Error::other)?;
    Ok(out)
}

/// `train/<class>/<i>.png` and `test/<class>/<i>.png` (lossless, so the
/// pixels read back are the generated ones).
pub fn image_files(data: &Cifar10) -> io::Result<Vec<(String, Vec<u8>)>> {
    let mut files = Vec::new();
    for (split, d) in [("train", &data.train), ("test", &data.test)] {
        for i in 0..d.len() {
            let class = &d.classes[d.labels[i] as usize];
            files.push((format!("{split}/{class}/{i:05}.png"), png(d.image(i))?));
        }
    }
    Ok(files)
}

/// Writes image folders under `dir`.
pub fn write_image_folders(dir: &Path, data: &Cifar10) -> io::Result<()> {
    for (name, bytes) in image_files(data)? {
        let path = dir.join(name);
        fs::create_dir_all(path.parent().expect("has a class folder"))?;
        fs::write(path, bytes)?;
    }
    Ok(())
}

/// Writes image folders as a `.tar.gz`.
pub fn write_image_tar_gz(path: &Path, data: &Cifar10) -> io::Result<()> {
    write_files_tar_gz(path, &image_files(data)?)
}
