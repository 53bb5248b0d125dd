//! Turning dataset images into network input: f32 NHWC batches.
//!
//! Why two modes: the project's default recipe feeds `x / 255` in [0, 1];
//! Keras' ImageNet-pretrained ResNet50 weights were trained with the 'caffe'
//! preprocessing (`keras.applications.resnet50.preprocess_input`), which
//! reorders RGB to BGR and subtracts the ImageNet channel means from 0..255
//! values, without scaling. Using the pretrained weights with the wrong
//! preprocessing silently costs accuracy, so the choice is explicit.

use std::fmt;
use std::str::FromStr;

use super::augment::{Augment, Transform};
use super::{Dataset, IMAGE_BYTES};

/// ImageNet channel means in B, G, R order, as Keras' 'caffe' mode uses them.
pub const CAFFE_MEAN_BGR: [f32; 3] = [103.939, 116.779, 123.68];

/// How u8 RGB pixels become network input.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Preprocess {
    /// `x / 255`, channels R, G, B.
    #[default]
    Unit,
    /// Keras 'caffe': channels B, G, R, each `x - mean` on the 0..255 scale.
    Caffe,
}

impl Preprocess {
    /// Converts one HWC RGB image (3072 bytes) into `out` (3072 floats).
    pub fn apply(self, rgb: &[u8], out: &mut [f32]) {
        assert_eq!(rgb.len(), IMAGE_BYTES);
        assert_eq!(out.len(), IMAGE_BYTES);
        match self {
            Preprocess::Unit => {
                for (o, &p) in out.iter_mut().zip(rgb) {
                    *o = p as f32 / 255.0;
                }
            }
            Preprocess::Caffe => {
                let [mb, mg, mr] = CAFFE_MEAN_BGR;
                for (o, p) in out.chunks_exact_mut(3).zip(rgb.chunks_exact(3)) {
                    o[0] = p[2] as f32 - mb;
                    o[1] = p[1] as f32 - mg;
                    o[2] = p[0] as f32 - mr;
                }
            }
        }
    }
}

impl FromStr for Preprocess {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "unit" => Ok(Self::Unit),
            "caffe" => Ok(Self::Caffe),
            _ => Err(format!(
                "unknown preprocessing '{s}': use 'unit' (x/255) or 'caffe'"
            )),
        }
    }
}

impl fmt::Display for Preprocess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Unit => "unit",
            Self::Caffe => "caffe",
        })
    }
}

impl Dataset {
    /// Fills `out` (exactly `indices.len() * 32*32*3` floats, NHWC) with the
    /// images at `indices`, augmented (if `augment` is given) then
    /// preprocessed.
    ///
    /// # Panics
    /// If `out` has the wrong length or an index is out of range.
    pub fn fill_batch(
        &self,
        indices: &[usize],
        preprocess: Preprocess,
        augment: Option<&Augment>,
        out: &mut [f32],
    ) {
        self.fill_transformed(indices, preprocess, out, |i| {
            augment.map(|a| a.transform(i))
        });
    }

    /// [`Dataset::fill_batch`] with the same `view` of every image (e.g. a
    /// test-time augmentation view) instead of random augmentation.
    ///
    /// # Panics
    /// If `out` has the wrong length or an index is out of range.
    pub fn fill_batch_view(
        &self,
        indices: &[usize],
        preprocess: Preprocess,
        view: &Transform,
        out: &mut [f32],
    ) {
        let view = (*view != Transform::IDENTITY).then_some(*view);
        self.fill_transformed(indices, preprocess, out, |_| view);
    }

    /// The images at `indices`, each through `transform_of(index)` (none:
    /// the stored pixels), preprocessed into `out`.
    fn fill_transformed(
        &self,
        indices: &[usize],
        preprocess: Preprocess,
        out: &mut [f32],
        transform_of: impl Fn(usize) -> Option<Transform>,
    ) {
        assert_eq!(
            out.len(),
            indices.len() * IMAGE_BYTES,
            "batch buffer holds {} floats but {} images need {}",
            out.len(),
            indices.len(),
            indices.len() * IMAGE_BYTES
        );
        let mut scratch = [0u8; IMAGE_BYTES];
        for (&i, dst) in indices.iter().zip(out.chunks_exact_mut(IMAGE_BYTES)) {
            let src = self.image(i);
            let pixels = match transform_of(i) {
                Some(t) => {
                    t.apply(src, &mut scratch);
                    &scratch[..]
                }
                None => src,
            };
            preprocess.apply(pixels, dst);
        }
    }

    /// Writes the labels of `indices` into `out` (same length).
    pub fn fill_labels(&self, indices: &[usize], out: &mut [usize]) {
        assert_eq!(out.len(), indices.len(), "label buffer length");
        for (o, &i) in out.iter_mut().zip(indices) {
            *o = self.labels[i] as usize;
        }
    }

    /// Writes one-hot labels (`indices.len() x num_classes`, row-major).
    pub fn fill_one_hot(&self, indices: &[usize], out: &mut [f32]) {
        let k = self.classes.len();
        assert_eq!(out.len(), indices.len() * k, "one-hot buffer length");
        out.fill(0.0);
        for (row, &i) in out.chunks_exact_mut(k).zip(indices) {
            row[self.labels[i] as usize] = 1.0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dataset() -> Dataset {
        // Image i: every pixel (R, G, B) = (10 + i, 100, 250).
        let images = (0..3u8)
            .flat_map(|i| std::iter::repeat_n([10 + i, 100, 250], 1024).flatten())
            .collect();
        Dataset {
            images,
            labels: vec![2, 0, 1],
            classes: vec!["a".into(), "b".into(), "c".into()],
        }
    }

    #[test]
    fn unit_scales_to_0_1_in_rgb_order() {
        let d = dataset();
        let mut out = vec![f32::NAN; 2 * IMAGE_BYTES];
        d.fill_batch(&[2, 0], Preprocess::Unit, None, &mut out);
        assert_eq!(&out[..3], &[12.0 / 255.0, 100.0 / 255.0, 250.0 / 255.0]);
        assert_eq!(
            &out[IMAGE_BYTES..IMAGE_BYTES + 3],
            &[10.0 / 255.0, 100.0 / 255.0, 250.0 / 255.0]
        );
        assert!(out.iter().all(|v| (0.0..=1.0).contains(v)));
    }

    #[test]
    fn caffe_is_bgr_minus_imagenet_mean() {
        let d = dataset();
        let mut out = vec![0.0; IMAGE_BYTES];
        d.fill_batch(&[1], Preprocess::Caffe, None, &mut out);
        let want = [250.0 - 103.939f32, 100.0 - 116.779, 11.0 - 123.68];
        assert_eq!(&out[..3], &want);
        assert_eq!(&out[IMAGE_BYTES - 3..], &want);
    }

    #[test]
    fn augmented_batch_matches_transform_and_padding_is_black() {
        let d = dataset();
        // A seed whose crop for image 0 takes padding rows from the top.
        let aug = (0..)
            .map(|s| Augment::standard(s).with_epoch(2))
            .find(|a| a.transform(0).crop_y < 4)
            .unwrap();
        let mut out = vec![0.0; IMAGE_BYTES];
        d.fill_batch(&[0], Preprocess::Unit, Some(&aug), &mut out);
        let mut expect = [0u8; IMAGE_BYTES];
        aug.transform(0).apply(d.image(0), &mut expect);
        let want: Vec<f32> = expect.iter().map(|&p| p as f32 / 255.0).collect();
        assert_eq!(out, want);
        assert!(out[..96].iter().all(|&v| v == 0.0), "top row is padding");
        assert!(out.iter().any(|&v| v > 0.0));
        let mut caffe = vec![0.0; IMAGE_BYTES];
        d.fill_batch(&[0], Preprocess::Caffe, Some(&aug), &mut caffe);
        assert_eq!(&caffe[..3], &[-103.939, -116.779, -123.68]);
    }

    #[test]
    fn a_view_is_applied_to_every_image_before_preprocessing() {
        let mut d = dataset();
        // Image 1's left column black: the mirror moves it to the right.
        for y in 0..32 {
            d.images[IMAGE_BYTES + y * 96..][..3].fill(0);
        }
        let mirror = Transform {
            flip: true,
            ..Transform::IDENTITY
        };
        let mut out = vec![f32::NAN; 2 * IMAGE_BYTES];
        d.fill_batch_view(&[1, 0], Preprocess::Unit, &mirror, &mut out);
        let (a, b) = out.split_at(IMAGE_BYTES);
        assert_eq!(
            &a[93..96],
            &[0.0; 3],
            "right column of the mirrored image 1"
        );
        assert_eq!(&a[..3], &[11.0 / 255.0, 100.0 / 255.0, 250.0 / 255.0]);
        assert!(b.iter().step_by(3).all(|&v| v == 10.0 / 255.0));
        let mut plain = vec![0.0; 2 * IMAGE_BYTES];
        d.fill_batch(&[1, 0], Preprocess::Caffe, None, &mut plain);
        d.fill_batch_view(&[1, 0], Preprocess::Caffe, &Transform::IDENTITY, &mut out);
        assert_eq!(out, plain);
    }

    #[test]
    fn labels_and_one_hot() {
        let d = dataset();
        let mut l = [0usize; 3];
        d.fill_labels(&[0, 2, 1], &mut l);
        assert_eq!(l, [2, 1, 0]);
        let mut oh = vec![9.0; 6];
        d.fill_one_hot(&[1, 0], &mut oh);
        assert_eq!(oh, [1.0, 0.0, 0.0, 0.0, 0.0, 1.0]);
    }

    #[test]
    #[should_panic(expected = "batch buffer holds")]
    fn wrong_buffer_length_panics() {
        dataset().fill_batch(&[0, 1], Preprocess::Unit, None, &mut vec![0.0; IMAGE_BYTES]);
    }

    #[test]
    fn parse_preprocess() {
        assert_eq!("caffe".parse::<Preprocess>(), Ok(Preprocess::Caffe));
        assert_eq!(Preprocess::default(), Preprocess::Unit);
        assert!("imagenet".parse::<Preprocess>().is_err());
    }
}
