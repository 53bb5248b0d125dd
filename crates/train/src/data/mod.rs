//! CIFAR-10 loading, caching, batching, augmentation and shuffling.
//!
//! Sources (see [`locate`]): the official binary release and an image-folder
//! tree (`train/<class>/*.jpg|png`, `test/<class>/...`), each extracted or
//! as a `.tar.gz`; when none is found, the binary release is downloaded
//! ([`locate_or_fetch`]). Whatever the source, images end up as 32x32 RGB u8 in HWC
//! order, the layout the network consumes (NHWC), so the per-batch work is a
//! straight copy + scale. Decoded data is cached under `decoded/` in the user cache (`fetch::cache_dir`).
//!
//! Typical use:
//! ```no_run
//! use train::data::{self, Preprocess, Sampler, Augment};
//! let (cifar, report) = data::load(None, Some(&data::default_cache_dir())).unwrap();
//! println!("{report}");
//! let sampler = Sampler::new(cifar.train.len(), 32, 0);
//! let aug = Augment::standard(0);
//! let mut x = vec![0.0f32; 32 * data::IMAGE_BYTES];
//! for (epoch, batch) in sampler.batches(0).iter().enumerate().take(1) {
//!     let x = &mut x[..batch.len() * data::IMAGE_BYTES];
//!     cifar.train.fill_batch(batch, Preprocess::Unit, Some(&aug.with_epoch(epoch as u64)), x);
//! }
//! ```

pub mod synthetic;

mod augment;
mod batch;
mod binary;
mod cache;
mod classes;
mod decode;
mod error;
mod folder;
mod locate;
mod sampler;
mod split;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

pub use augment::{Augment, AugmentConfig, Cutout, PadMode, Transform};
pub use batch::{Preprocess, CAFFE_MEAN_BGR};
pub use binary::RECORD_BYTES;
pub use cache::{cache_path, VERSION as CACHE_VERSION};
pub use classes::{remap_to, CIFAR10_CLASSES};
pub use error::DataError;
pub use locate::{
    default_cache_dir, detect, locate, locate_in, locate_or_fetch, locate_or_fetch_in,
    workspace_root, Located, Source, DEFAULT_DATA_DIR, SHARED_ARCHIVE,
};
pub use sampler::{epoch_permutation, Sampler, Shuffle};
pub use split::split_indices;

/// Image height and width.
pub const IMAGE_SIDE: usize = 32;
/// Bytes (or floats) per image: 32 * 32 * 3.
pub const IMAGE_BYTES: usize = IMAGE_SIDE * IMAGE_SIDE * 3;

/// One split of the data set, images as packed HWC RGB u8.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Dataset {
    /// `len() * 32 * 32 * 3` bytes, image after image, HWC, RGB.
    pub images: Vec<u8>,
    /// One class index per image.
    pub labels: Vec<u8>,
    /// Class names, indexed by label.
    pub classes: Vec<String>,
}

impl Dataset {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Pixels of image `i` (3072 bytes, HWC RGB).
    pub fn image(&self, i: usize) -> &[u8] {
        &self.images[i * IMAGE_BYTES..(i + 1) * IMAGE_BYTES]
    }

    /// A new dataset with the images at `indices` (e.g. a quick subset).
    pub fn subset(&self, indices: &[usize]) -> Dataset {
        Dataset {
            images: indices
                .iter()
                .flat_map(|&i| self.image(i))
                .copied()
                .collect(),
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
            classes: self.classes.clone(),
        }
    }

    /// Number of images per class.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut c = vec![0; self.classes.len()];
        for &l in &self.labels {
            c[l as usize] += 1;
        }
        c
    }
}

/// Train and test splits.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cifar10 {
    pub train: Dataset,
    pub test: Dataset,
}

/// A stop flag never raised: for the loads that cannot be stopped.
pub(crate) static NEVER: AtomicBool = AtomicBool::new(false);

/// Loads `source` by decoding it (no cache).
pub fn load_source(source: &Source) -> Result<Cifar10, DataError> {
    load_source_until(source, &NEVER)
}

/// [`load_source`], checking `stop` between images (image folders and
/// their archives) or batch files and archive members (the binary
/// release): [`DataError::Stopped`] soon after it is raised. Decoding the
/// 60,000 JPEGs of an archive takes seconds to minutes; a SIGTERM then
/// must not wait for the first training step.
pub fn load_source_until(source: &Source, stop: &AtomicBool) -> Result<Cifar10, DataError> {
    match source {
        Source::Binary(dir) => binary::load(dir, stop),
        Source::ImageDir(dir) => folder::load_dir(dir, stop),
        Source::TarGz(path) => folder::load_tar_gz(path, stop),
        Source::BinaryTarGz(path) => binary::load_tar_gz(path, stop),
    }
}

/// What [`load`] did, for the log.
#[derive(Clone, Debug)]
pub struct LoadReport {
    pub source: Source,
    /// Cache file used or written (`None` when caching is disabled).
    pub cache_file: Option<PathBuf>,
    /// Whether the data came from the cache.
    pub from_cache: bool,
    /// Non-fatal problems: stale/corrupt cache rebuilt, cache not writable.
    pub notes: Vec<String>,
    pub elapsed: Duration,
}

impl fmt::Display for LoadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "CIFAR-10 from {} ({}), {} in {:.2}s",
            self.source.path().display(),
            self.source.kind(),
            match (&self.cache_file, self.from_cache) {
                (Some(p), true) => format!("cache hit {}", p.display()),
                (Some(p), false) => format!("decoded, cached to {}", p.display()),
                (None, _) => "decoded (cache disabled)".to_string(),
            },
            self.elapsed.as_secs_f64()
        )?;
        for n in &self.notes {
            write!(f, "\n  note: {n}")?;
        }
        Ok(())
    }
}

/// Loads `source`, through the cache in `cache_dir` if given. Cache problems
/// are never fatal: a stale or corrupt cache is rebuilt, an unwritable cache
/// directory only adds a note.
pub fn load_cached(
    source: &Source,
    cache_dir: Option<&Path>,
) -> Result<(Cifar10, LoadReport), DataError> {
    load_cached_until(source, cache_dir, &NEVER)
}

/// [`load_cached`], stopping with [`DataError::Stopped`] soon after `stop`
/// is raised (see [`load_source_until`]). A stopped load writes no cache:
/// the cache is written only from a complete decode, and atomically (a
/// temporary file renamed into place), so no half-written cache is ever
/// left under the cache's name.
pub fn load_cached_until(
    source: &Source,
    cache_dir: Option<&Path>,
    stop: &AtomicBool,
) -> Result<(Cifar10, LoadReport), DataError> {
    let start = Instant::now();
    let mut report = LoadReport {
        source: source.clone(),
        cache_file: None,
        from_cache: false,
        notes: Vec::new(),
        elapsed: Duration::ZERO,
    };
    let Some(dir) = cache_dir else {
        let data = load_source_until(source, stop)?;
        report.elapsed = start.elapsed();
        return Ok((data, report));
    };
    let path = cache_path(dir, source);
    report.cache_file = Some(path.clone());
    let identity = cache::source_identity(source)?;
    match cache::read(&path, &identity) {
        Ok(Some(data)) => {
            report.from_cache = true;
            report.elapsed = start.elapsed();
            return Ok((data, report));
        }
        Ok(None) => {}
        Err(reason) => report
            .notes
            .push(format!("rebuilding cache {}: {reason}", path.display())),
    }
    let data = load_source_until(source, stop)?;
    // Raised after the last image: exit now rather than spend a second
    // writing 184 MB.
    DataError::check_stop(stop)?;
    if let Err(e) = cache::write(&path, &identity, &data) {
        report
            .notes
            .push(format!("could not write cache {}: {e}", path.display()));
    }
    report.elapsed = start.elapsed();
    Ok((data, report))
}

/// [`locate_or_fetch`] then [`load_cached`]: the one call the CLI needs.
/// With no explicit path and no local copy, this downloads the release (see
/// [`crate::fetch`]); the report's notes say so.
pub fn load(
    explicit: Option<&Path>,
    cache_dir: Option<&Path>,
) -> Result<(Cifar10, LoadReport), DataError> {
    load_until(explicit, cache_dir, &NEVER)
}

/// [`load`], stopping with [`DataError::Stopped`] soon after `stop` is
/// raised while decoding (see [`load_cached_until`]; a download is not
/// interrupted).
pub fn load_until(
    explicit: Option<&Path>,
    cache_dir: Option<&Path>,
    stop: &AtomicBool,
) -> Result<(Cifar10, LoadReport), DataError> {
    let located = locate_or_fetch(explicit)?;
    let (data, mut report) = load_cached_until(&located.source, cache_dir, stop)?;
    if let Some(how) = located.fetched {
        report.notes.insert(0, how);
    }
    Ok((data, report))
}

/// Reads and decodes one 32x32 JPEG or PNG file into HWC RGB bytes (what
/// `predict` feeds the model).
pub fn read_image(path: &Path) -> Result<Vec<u8>, DataError> {
    let bytes = std::fs::read(path).map_err(|e| DataError::Io {
        path: path.to_path_buf(),
        source: e,
    })?;
    let mut out = vec![0u8; IMAGE_BYTES];
    decode::decode_rgb32(&bytes, path, &mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn cached_load_hits_and_rebuilds_on_change() {
        let tmp = tempfile::tempdir().unwrap();
        let archive = tmp.path().join("d.tar.gz");
        folder::tests::write_tar_gz(&archive, "", &folder::tests::tree(&CIFAR10_CLASSES, 1));
        let cache_dir = tmp.path().join("cache");
        let (a, r1) = load(Some(&archive), Some(&cache_dir)).unwrap();
        assert!(!r1.from_cache && r1.notes.is_empty(), "{r1}");
        assert!(r1.cache_file.as_ref().unwrap().exists());
        let (b, r2) = load(Some(&archive), Some(&cache_dir)).unwrap();
        assert!(r2.from_cache, "{r2}");
        assert_eq!(a, b);
        assert_eq!(a.train.len(), 10);

        // A different archive at the same path invalidates the cache.
        folder::tests::write_tar_gz(&archive, "", &folder::tests::tree(&CIFAR10_CLASSES, 2));
        let (c, r3) = load(Some(&archive), Some(&cache_dir)).unwrap();
        assert!(!r3.from_cache, "{r3}");
        assert!(r3.notes[0].contains("source changed"), "{r3}");
        assert_eq!(c.train.len(), 20);

        // A corrupt cache is rebuilt, not fatal.
        let cache_file = r3.cache_file.unwrap();
        fs::write(&cache_file, b"junk").unwrap();
        let (d, r4) = load(Some(&archive), Some(&cache_dir)).unwrap();
        assert!(!r4.from_cache && r4.notes.len() == 1, "{r4}");
        assert_eq!(d, c);
        let (_, r5) = load(Some(&archive), Some(&cache_dir)).unwrap();
        assert!(r5.from_cache);
        assert_eq!(
            fs::read_dir(&cache_dir).unwrap().count(),
            1,
            "no temp files left"
        );
    }

    #[test]
    fn binary_and_dir_sources_through_the_cache() {
        let tmp = tempfile::tempdir().unwrap();
        binary::tests::write_release(&tmp.path().join("bin/cifar-10-batches-bin"), 2);
        folder::tests::write_tree(
            &tmp.path().join("imgs"),
            &folder::tests::tree(&["a", "b"], 1),
        );
        let cache = tmp.path().join("cache");
        for (p, n_train) in [("bin", 10), ("imgs", 2)] {
            let (d, r) = load(Some(&tmp.path().join(p)), Some(&cache)).unwrap();
            assert_eq!(d.train.len(), n_train);
            let (d2, r2) = load(Some(&tmp.path().join(p)), Some(&cache)).unwrap();
            assert!(!r.from_cache && r2.from_cache);
            assert_eq!(d, d2);
        }
        // Touching an image in the folder invalidates its cache.
        let img = tmp.path().join("imgs/train/a/0000.png");
        let bytes = fs::read(&img).unwrap();
        fs::write(tmp.path().join("imgs/train/a/0001.png"), bytes).unwrap();
        let (d, r) = load(Some(&tmp.path().join("imgs")), Some(&cache)).unwrap();
        assert!(!r.from_cache);
        assert_eq!(d.train.len(), 3);
        // Uncached load works too.
        let (_, r) = load(Some(&tmp.path().join("imgs")), None).unwrap();
        assert!(r.cache_file.is_none());
    }

    #[test]
    fn unwritable_cache_is_only_a_note() {
        let tmp = tempfile::tempdir().unwrap();
        folder::tests::write_tree(&tmp.path().join("imgs"), &folder::tests::tree(&["a"], 1));
        // A file where the cache directory should be.
        let blocker = tmp.path().join("cache");
        fs::write(&blocker, b"").unwrap();
        let (d, r) = load(Some(&tmp.path().join("imgs")), Some(&blocker)).unwrap();
        assert_eq!(d.train.len(), 1);
        assert!(
            r.notes.iter().any(|n| n.contains("could not write cache")),
            "{r}"
        );
    }

    #[test]
    fn a_raised_stop_ends_every_kind_of_load_and_writes_no_cache() {
        let tmp = tempfile::tempdir().unwrap();
        let archive = tmp.path().join("d.tar.gz");
        folder::tests::write_tar_gz(&archive, "", &folder::tests::tree(&CIFAR10_CLASSES, 1));
        let imgs = tmp.path().join("imgs");
        folder::tests::write_tree(&imgs, &folder::tests::tree(&["a", "b"], 1));
        let bin = tmp.path().join("bin/cifar-10-batches-bin");
        binary::tests::write_release(&bin, 2);
        let bin_archive = tmp.path().join("bin.tar.gz");
        let members: Vec<(String, Vec<u8>)> = fs::read_dir(&bin)
            .unwrap()
            .map(|e| {
                let p = e.unwrap().path();
                let name = p.file_name().unwrap().to_string_lossy().into_owned();
                (name, fs::read(&p).unwrap())
            })
            .collect();
        folder::tests::write_tar_gz(&bin_archive, "cifar-10-batches-bin/", &members);
        let stop = AtomicBool::new(true);
        let cache = tmp.path().join("cache");
        for source in [
            Source::TarGz(archive),
            Source::ImageDir(imgs),
            Source::Binary(bin),
            Source::BinaryTarGz(bin_archive),
        ] {
            // Each loader checks the flag itself...
            let e = load_source_until(&source, &stop).unwrap_err();
            assert!(matches!(e, DataError::Stopped), "{source:?}: {e}");
            assert_eq!(e.to_string(), "stopped while loading data; nothing to save");
            // ...and no cache (nor a temporary of one) is written.
            let e = load_cached_until(&source, Some(&cache), &stop).unwrap_err();
            assert!(matches!(e, DataError::Stopped), "{source:?}: {e}");
            let left = fs::read_dir(&cache).map_or(0, |d| d.count());
            assert_eq!(left, 0, "{source:?} left a cache file");
            // Not raised: the same load succeeds.
            load_source_until(&source, &AtomicBool::new(false)).unwrap();
        }
    }

    #[test]
    fn dataset_helpers() {
        let d = Dataset {
            images: (0..3).flat_map(|i| vec![i as u8; IMAGE_BYTES]).collect(),
            labels: vec![1, 0, 1],
            classes: vec!["a".into(), "b".into()],
        };
        assert_eq!(d.len(), 3);
        assert_eq!(d.class_counts(), [1, 2]);
        let s = d.subset(&[2, 0]);
        assert_eq!(s.labels, [1, 1]);
        assert_eq!(s.image(0)[0], 2);
        assert_eq!(s.image(1)[100], 0);
    }

    /// The real archive shipped on this machine (skipped when absent).
    #[test]
    fn real_shared_archive() {
        let path = workspace_root().join(SHARED_ARCHIVE);
        if !path.exists() {
            eprintln!("skipping: {} not found", path.display());
            return;
        }
        let start = Instant::now();
        let data = load_source(&Source::TarGz(path)).unwrap();
        eprintln!(
            "decoded real archive in {:.2}s",
            start.elapsed().as_secs_f64()
        );
        assert_eq!(data.train.len(), 50_000);
        assert_eq!(data.test.len(), 10_000);
        assert_eq!(data.train.classes, CIFAR10_CLASSES);
        assert_eq!(data.train.class_counts(), vec![5000; 10]);
        assert_eq!(data.test.class_counts(), vec![1000; 10]);
        // Images are not blank and differ from each other.
        let mean = data.train.images.iter().map(|&p| p as u64).sum::<u64>() as f64
            / data.train.images.len() as f64;
        assert!((90.0..160.0).contains(&mean), "mean pixel {mean}");
        assert_ne!(data.train.image(0), data.train.image(1));
    }
}
