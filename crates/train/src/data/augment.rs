//! Training-time augmentation: random crop with zero padding + horizontal flip.
//!
//! Why on u8 HWC and before normalization: padding then means black pixels,
//! as in the standard CIFAR recipe (pad 4, random 32x32 crop, flip), and the
//! work is done on 1-byte pixels. Why per-image generators: the transform of
//! image `i` in epoch `e` depends only on (seed, e, i), so results do not
//! depend on batch composition, batch order or parallelism, and a resumed run
//! sees exactly the same augmented images.

use rand::{Rng, RngCore};

use super::sampler::{mix, rng_for};
use super::{IMAGE_BYTES, IMAGE_SIDE};

const AUGMENT_STREAM: u64 = 0x4155_474D; // "AUGM"

/// Augmentation settings. Off unless the caller passes one to `fill_batch`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Augment {
    /// Zero padding on each side before the random 32x32 crop (0 = no crop).
    pub pad: usize,
    /// Flip horizontally with probability 1/2.
    pub flip: bool,
    pub seed: u64,
    /// Current epoch; set with [`Augment::with_epoch`] each epoch.
    pub epoch: u64,
}

impl Augment {
    /// The standard CIFAR recipe: 4-pixel padding crop + horizontal flip.
    pub fn standard(seed: u64) -> Self {
        Self {
            pad: 4,
            flip: true,
            seed,
            epoch: 0,
        }
    }

    pub fn with_epoch(self, epoch: u64) -> Self {
        Self { epoch, ..self }
    }

    /// The random transform of dataset image `index` in the current epoch.
    pub fn transform(&self, index: usize) -> Transform {
        let mut rng = rng_for(mix(self.seed) ^ AUGMENT_STREAM, self.epoch, index as u64);
        let (crop_x, crop_y) = if self.pad > 0 {
            (
                rng.gen_range(0..=2 * self.pad),
                rng.gen_range(0..=2 * self.pad),
            )
        } else {
            (0, 0)
        };
        let flip = self.flip && rng.next_u32() & 1 == 1;
        Transform {
            pad: self.pad,
            crop_x,
            crop_y,
            flip,
        }
    }
}

/// One concrete crop/flip: the output is the 32x32 window at
/// (`crop_x`, `crop_y`) of the image padded by `pad` zeros on each side,
/// then mirrored left-right if `flip`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transform {
    pub pad: usize,
    pub crop_x: usize,
    pub crop_y: usize,
    pub flip: bool,
}

impl Transform {
    /// Applies the transform to one HWC RGB image.
    pub fn apply(&self, src: &[u8], dst: &mut [u8]) {
        assert_eq!(src.len(), IMAGE_BYTES);
        assert_eq!(dst.len(), IMAGE_BYTES);
        let side = IMAGE_SIDE as isize;
        let dx = self.crop_x as isize - self.pad as isize;
        let dy = self.crop_y as isize - self.pad as isize;
        for (y, row) in dst.chunks_exact_mut(IMAGE_SIDE * 3).enumerate() {
            let sy = y as isize + dy;
            if !(0..side).contains(&sy) {
                row.fill(0);
                continue;
            }
            let src_row = &src[sy as usize * IMAGE_SIDE * 3..][..IMAGE_SIDE * 3];
            for (x, px) in row.chunks_exact_mut(3).enumerate() {
                let x = if self.flip { IMAGE_SIDE - 1 - x } else { x };
                let sx = x as isize + dx;
                if (0..side).contains(&sx) {
                    px.copy_from_slice(&src_row[sx as usize * 3..][..3]);
                } else {
                    px.fill(0);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pixel (y, x) = (y, x, 7).
    fn coords() -> Vec<u8> {
        (0..32)
            .flat_map(|y| (0..32).flat_map(move |x| [y as u8, x as u8, 7]))
            .collect()
    }

    fn px(img: &[u8], y: usize, x: usize) -> [u8; 3] {
        let o = (y * 32 + x) * 3;
        [img[o], img[o + 1], img[o + 2]]
    }

    #[test]
    fn identity_crop_and_flip() {
        let src = coords();
        let mut dst = vec![1; IMAGE_BYTES];
        let id = Transform {
            pad: 4,
            crop_x: 4,
            crop_y: 4,
            flip: false,
        };
        id.apply(&src, &mut dst);
        assert_eq!(dst, src);

        let flip = Transform { flip: true, ..id };
        flip.apply(&src, &mut dst);
        assert_eq!(px(&dst, 2, 0), [2, 31, 7]);
        assert_eq!(px(&dst, 2, 31), [2, 0, 7]);

        // Window at the top-left corner of the padded image: 4 rows and
        // 4 columns of zeros, then the image shifted by 4.
        let corner = Transform {
            crop_x: 0,
            crop_y: 0,
            ..id
        };
        corner.apply(&src, &mut dst);
        assert_eq!(px(&dst, 3, 10), [0, 0, 0]);
        assert_eq!(px(&dst, 10, 3), [0, 0, 0]);
        assert_eq!(px(&dst, 4, 4), [0, 0, 7]);
        assert_eq!(px(&dst, 31, 31), [27, 27, 7]);

        // Bottom-right window, flipped: right-most output columns come from
        // the left of the shifted image.
        let br = Transform {
            crop_x: 8,
            crop_y: 8,
            flip: true,
            ..id
        };
        br.apply(&src, &mut dst);
        assert_eq!(px(&dst, 0, 31), [4, 4, 7]);
        assert_eq!(px(&dst, 0, 4), [4, 31, 7]);
        assert_eq!(px(&dst, 0, 3), [0, 0, 0]);
        assert_eq!(px(&dst, 28, 10), [0, 0, 0]);
    }

    #[test]
    fn transforms_are_seeded_per_image_and_epoch() {
        let a = Augment::standard(1);
        assert_eq!(a.transform(5), a.transform(5));
        let t: Vec<Transform> = (0..200).map(|i| a.transform(i)).collect();
        assert!(t
            .iter()
            .all(|t| t.crop_x <= 8 && t.crop_y <= 8 && t.pad == 4));
        assert!(t.iter().any(|t| t.flip) && t.iter().any(|t| !t.flip));
        assert!(t.iter().any(|t| t.crop_x == 0) && t.iter().any(|t| t.crop_x == 8));
        let next: Vec<Transform> = (0..200).map(|i| a.with_epoch(1).transform(i)).collect();
        assert_ne!(t, next);
        let other: Vec<Transform> = (0..200)
            .map(|i| Augment::standard(2).transform(i))
            .collect();
        assert_ne!(t, other);
        let none = Augment {
            pad: 0,
            flip: false,
            seed: 1,
            epoch: 0,
        };
        assert_eq!(
            none.transform(3),
            Transform {
                pad: 0,
                crop_x: 0,
                crop_y: 0,
                flip: false
            }
        );
    }
}
