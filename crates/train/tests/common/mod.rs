//! Synthetic image data for the tests: no download, no `../shared`.
//!
//! Class `c` of `k` brightens the horizontal band of rows
//! `[32c/k, 32(c+1)/k)` over seeded noise, so a small network can learn the
//! classes in a few epochs while no two images are alike.

#![allow(dead_code)] // each test file uses its own part

use std::path::Path;
use train::data::{Dataset, IMAGE_BYTES, IMAGE_SIDE};
use train::model_spec::{ModelSpec, ResNetVersion};
use train::optim::{Adam, AdamConfig, LrSchedule, Optimizer};
use train::trainer::Trainer;

/// The tests' network: ResNet50's topology (v1 blocks, Keras names) with
/// one block per stage and widths 8-16, so a step takes milliseconds;
/// `classes: None` leaves the head off.
pub fn narrow_spec(classes: Option<usize>) -> ModelSpec {
    ModelSpec {
        version: ResNetVersion::V1,
        stem_filters: 8,
        depths: vec![1, 1, 1, 1],
        widths: vec![8, 8, 16, 16],
        num_classes: classes,
        unbiased_moving_variance: false,
        bn_momentum: nn::layers::batch_norm::KERAS_MOMENTUM,
    }
}

/// A trainer of [`narrow_spec`] for 32x32 inputs, initialized from `seed`.
pub fn narrow_trainer(
    classes: usize,
    seed: u64,
    optimizer: Box<dyn Optimizer>,
    schedule: LrSchedule,
) -> Trainer {
    let (model, store) = nn::ResNet::new(narrow_spec(Some(classes)).config(32, seed)).unwrap();
    Trainer::new(Box::new(model), store, optimizer, schedule)
}

/// [`narrow_trainer`] with Keras's default Adam at the constant rate `lr`.
pub fn narrow_adam(classes: usize, seed: u64, lr: f32) -> Trainer {
    let adam = Box::new(Adam::new(AdamConfig::default()));
    narrow_trainer(classes, seed, adam, LrSchedule::constant(lr))
}

/// A small seeded generator (SplitMix64): the same images on every machine.
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> u8 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) % 96) as u8
    }
}

/// Image `i` of class `class` out of `classes` (HWC RGB bytes).
pub fn image(class: usize, classes: usize, i: usize, seed: u64) -> Vec<u8> {
    let mut noise = Noise(seed ^ ((i as u64) << 20) ^ class as u64);
    let band = IMAGE_SIDE * class / classes..IMAGE_SIDE * (class + 1) / classes;
    let mut px = Vec::with_capacity(IMAGE_BYTES);
    for row in 0..IMAGE_SIDE {
        for _ in 0..IMAGE_SIDE * 3 {
            let lit = if band.contains(&row) { 150 } else { 0 };
            px.push(noise.next() + lit);
        }
    }
    px
}

pub fn class_names(classes: usize) -> Vec<String> {
    (0..classes).map(|c| format!("class{c}")).collect()
}

/// `n` images, labels cycling through `classes`.
pub fn dataset(n: usize, classes: usize, seed: u64) -> Dataset {
    Dataset {
        images: (0..n)
            .flat_map(|i| image(i % classes, classes, i, seed))
            .collect(),
        labels: (0..n).map(|i| (i % classes) as u8).collect(),
        classes: class_names(classes),
    }
}

fn write_png(path: &Path, rgb: &[u8]) {
    let file = std::fs::File::create(path).unwrap();
    let mut enc = png::Encoder::new(file, IMAGE_SIDE as u32, IMAGE_SIDE as u32);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    enc.write_header().unwrap().write_image_data(rgb).unwrap();
}

/// An image folder `root/{train,test}/class<c>/<i>.png`, the layout
/// `--data` and `data::load` read.
pub fn write_image_folder(
    root: &Path,
    classes: usize,
    train_per_class: usize,
    test_per_class: usize,
) {
    for (split, per_class, seed) in [("train", train_per_class, 1), ("test", test_per_class, 2)] {
        for (c, name) in class_names(classes).iter().enumerate() {
            let dir = root.join(split).join(name);
            std::fs::create_dir_all(&dir).unwrap();
            for i in 0..per_class {
                write_png(
                    &dir.join(format!("{i:04}.png")),
                    &image(c, classes, i, seed),
                );
            }
        }
    }
}

/// The `train` binary with its download and decoded-data caches inside
/// cargo's tmp dir for tests: a test run never writes to the user's cache
/// (each generated data folder would otherwise leave a decoded copy there).
pub fn train_binary() -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_train"));
    c.env(
        train::fetch::CACHE_ENV,
        Path::new(env!("CARGO_TARGET_TMPDIR")).join("test-cache"),
    );
    c
}
