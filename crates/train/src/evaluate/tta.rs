//! Test-time augmentation: classify each image from several views of it
//! (mirrored, shifted) and combine their logits into one prediction.
//!
//! Why it helps: a network trained with flip and crop augmentation has
//! learnt that these views are the same image, so averaging over them
//! cancels part of each view's error at no training cost (0.3-0.5 points
//! on CIFAR-10 in airbench). Why airbench's exact scheme: it is a known,
//! measured recipe, so our numbers compare with its published ones.
//!
//! Views are made on the u8 images, before preprocessing, with the crop
//! machinery of [`crate::data::Transform`]; mirroring and reflect padding
//! commute with the per-channel affine preprocessing, so this is the same
//! as airbench's views of normalized images.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use tensor::Tensor;

use crate::data::{PadMode, Transform};

/// Which test-time augmentation [`super::evaluate_tta`] applies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Tta {
    /// The image alone (what [`super::evaluate`] does).
    #[default]
    None,
    /// The image and its left-right mirror; logits averaged with weights
    /// 1/2, 1/2. airbench's `tta_level=1`
    /// (`0.5 * net(x) + 0.5 * net(x.flip(-1))`).
    Flip,
    /// airbench's `tta_level=2` (`infer_mirror_translate` in
    /// KellerJordan/cifar10-airbench, `airbench94_muon.py` and
    /// `airbench/utils.py`), matched view for view and weight for weight:
    /// six views, the image and the image shifted one pixel towards the
    /// bottom-right and towards the top-left, each also mirrored. The shifts
    /// are the 32x32 windows at (0, 0) and (2, 2) of the image reflect-padded
    /// by 1 pixel (`F.pad(x, (1,)*4, 'reflect')`: row -1 is row 1), the
    /// mirror taken after the shift. Logits combine as
    /// `0.5 * m(x) + 0.5 * mean(m(shift_a), m(shift_b))` with
    /// `m(v) = 0.5 * net(v) + 0.5 * net(mirror v)`: weights 1/4 for the
    /// image and its mirror, 1/8 for each shifted view.
    FlipTranslate,
}

impl Tta {
    /// The views, in the order [`Tta::combine`] expects their logits.
    pub fn views(self) -> Vec<Transform> {
        let mirror = |t: Transform| Transform { flip: true, ..t };
        let shift = |at: usize| Transform {
            pad: 1,
            pad_mode: PadMode::Reflect,
            crop_x: at,
            crop_y: at,
            ..Transform::IDENTITY
        };
        let id = Transform::IDENTITY;
        match self {
            Tta::None => vec![id],
            Tta::Flip => vec![id, mirror(id)],
            Tta::FlipTranslate => vec![
                id,
                mirror(id),
                shift(0),
                mirror(shift(0)),
                shift(2),
                mirror(shift(2)),
            ],
        }
    }

    /// The combined logits from the logits of each of [`Tta::views`] (same
    /// order, same shape), computed in airbench's order of operations.
    ///
    /// # Panics
    /// If the number of tensors is not the number of views, or their
    /// shapes differ.
    pub fn combine(self, mut views: Vec<Tensor>) -> Tensor {
        assert_eq!(
            views.len(),
            self.views().len(),
            "test-time augmentation {self}: {} views' logits for {} views",
            views.len(),
            self.views().len()
        );
        match self {
            Tta::None => views.pop().expect("one view"),
            Tta::Flip => halves(&views[0], &views[1]),
            Tta::FlipTranslate => {
                let plain = halves(&views[0], &views[1]);
                let a = halves(&views[2], &views[3]);
                let b = halves(&views[4], &views[5]);
                // torch.stack([a, b]).mean(0): the sum, halved.
                let mut shifted = a;
                for (s, &b) in shifted.data_mut().iter_mut().zip(b.data()) {
                    *s = (*s + b) / 2.0;
                }
                halves(&plain, &shifted)
            }
        }
    }
}

/// `0.5 * a + 0.5 * b`, element by element, as airbench writes it.
fn halves(a: &Tensor, b: &Tensor) -> Tensor {
    assert_eq!(a.shape(), b.shape(), "views' logits differ in shape");
    let mut out = a.clone();
    for (o, &b) in out.data_mut().iter_mut().zip(b.data()) {
        *o = 0.5 * *o + 0.5 * b;
    }
    out
}

impl FromStr for Tta {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" => Ok(Self::None),
            "flip" => Ok(Self::Flip),
            "flip-translate" => Ok(Self::FlipTranslate),
            _ => Err(format!(
                "unknown test-time augmentation '{s}': use 'none', 'flip' (image + mirror) \
                 or 'flip-translate' (airbench's 6 views)"
            )),
        }
    }
}

impl fmt::Display for Tta {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::None => "none",
            Self::Flip => "flip",
            Self::FlipTranslate => "flip-translate",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::IMAGE_BYTES;

    /// Pixel (y, x) = (y, x, 7).
    fn coords() -> Vec<u8> {
        (0..32)
            .flat_map(|y| (0..32).flat_map(move |x| [y as u8, x as u8, 7]))
            .collect()
    }

    /// The (y, x) of the source pixel at output (y, x) of `view`.
    fn at(view: &Transform, y: usize, x: usize) -> [u8; 2] {
        let mut dst = vec![0; IMAGE_BYTES];
        view.apply(&coords(), &mut dst);
        let o = (y * 32 + x) * 3;
        [dst[o], dst[o + 1]]
    }

    #[test]
    fn views_are_airbenchs() {
        assert_eq!(Tta::None.views(), [Transform::IDENTITY]);
        let flip = Tta::Flip.views();
        assert_eq!(flip[0], Transform::IDENTITY);
        assert_eq!(at(&flip[1], 3, 0), [3, 31]);
        assert_eq!(at(&flip[1], 3, 31), [3, 0]);

        let v = Tta::FlipTranslate.views();
        assert_eq!(v.len(), 6);
        assert_eq!(v[..2], flip[..]);
        // padded[0:32, 0:32]: output (y, x) is image (y - 1, x - 1), row and
        // column -1 reflected to 1.
        assert_eq!(at(&v[2], 0, 0), [1, 1]);
        assert_eq!(at(&v[2], 1, 1), [0, 0]);
        assert_eq!(at(&v[2], 31, 31), [30, 30]);
        assert_eq!(at(&v[2], 5, 9), [4, 8]);
        // Its mirror: padded[0:32, 0:32].flip(-1).
        assert_eq!(at(&v[3], 5, 0), [4, 30]);
        assert_eq!(at(&v[3], 5, 31), [4, 1]);
        // padded[2:34, 2:34]: image (y + 1, x + 1), row 32 reflected to 30.
        assert_eq!(at(&v[4], 0, 0), [1, 1]);
        assert_eq!(at(&v[4], 31, 31), [30, 30]);
        assert_eq!(at(&v[4], 30, 5), [31, 6]);
        assert_eq!(at(&v[5], 30, 0), [31, 30]);
        assert_eq!(at(&v[5], 30, 31), [31, 1]);
    }

    #[test]
    fn combine_weights_the_views_like_airbench() {
        let t = |v: f32| Tensor::from_vec(&[1, 2], vec![v, -v]).unwrap();
        assert_eq!(Tta::None.combine(vec![t(3.0)]).data(), [3.0, -3.0]);
        assert_eq!(Tta::Flip.combine(vec![t(1.0), t(4.0)]).data(), [2.5, -2.5]);
        // 1/4 (8 + 16) + 1/8 (32 + 64 + 128 + 256) = 6 + 60.
        let views = [8.0, 16.0, 32.0, 64.0, 128.0, 256.0].map(t).to_vec();
        assert_eq!(Tta::FlipTranslate.combine(views).data(), [66.0, -66.0]);
    }

    #[test]
    #[should_panic(expected = "2 views' logits for 6 views")]
    fn combine_refuses_a_wrong_view_count() {
        let t = Tensor::zeros(&[1, 2]);
        Tta::FlipTranslate.combine(vec![t.clone(), t]);
    }

    #[test]
    fn parse_tta() {
        for t in [Tta::None, Tta::Flip, Tta::FlipTranslate] {
            assert_eq!(t.to_string().parse::<Tta>(), Ok(t));
            let json = serde_json::to_string(&t).unwrap();
            assert_eq!(json, format!("\"{t}\""));
            assert_eq!(serde_json::from_str::<Tta>(&json).unwrap(), t);
        }
        assert_eq!("flip-translate".parse::<Tta>(), Ok(Tta::FlipTranslate));
        assert_eq!(Tta::default(), Tta::None);
        let e = "mirror".parse::<Tta>().unwrap_err();
        assert!(
            e.contains("'mirror'") && e.contains("flip-translate"),
            "{e}"
        );
    }
}
