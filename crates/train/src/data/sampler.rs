//! Per-epoch shuffling.
//!
//! Three orders ([`Shuffle`]): a new permutation every epoch (the usual
//! SGD sampling), one permutation kept for the whole run (what Keras 3.15's
//! TensorFlow data iterator ends up doing after
//! `keras.utils.set_random_seed`, so matching a Keras run needs it), and
//! the dataset's own order (Keras `shuffle=False`, and evaluation).
//!
//! Why a pure function of (seed, epoch): a run resumed at epoch `e` must see
//! the same order it would have seen without the interruption, so the order
//! cannot depend on how many random numbers were drawn before. The shuffle
//! is a Fisher-Yates over ChaCha8, whose output stream is fixed by its
//! specification (unlike `StdRng`, which may change between `rand` versions),
//! with the index drawn by a multiply-shift (bias < n / 2^64, negligible).

use std::fmt;
use std::str::FromStr;

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// SplitMix64 finalizer: turns structured inputs (seed, epoch, index) into
/// well-spread 64-bit seeds.
pub(crate) fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A ChaCha8 generator for `(seed, stream, index)`; used for shuffling
/// (index = epoch) and per-image augmentation.
pub(crate) fn rng_for(seed: u64, stream: u64, index: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(mix(mix(mix(seed) ^ stream) ^ index))
}

const SHUFFLE_STREAM: u64 = 0x5348_5546; // "SHUF"

/// A reproducible permutation of `0..len` for `epoch` under `seed`.
pub fn epoch_permutation(len: usize, seed: u64, epoch: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..len).collect();
    let mut rng = rng_for(seed, SHUFFLE_STREAM, epoch);
    for i in (1..len).rev() {
        let j = ((rng.next_u64() as u128 * (i as u128 + 1)) >> 64) as usize;
        order.swap(i, j);
    }
    order
}

/// The order a [`Sampler`] visits the dataset in, epoch after epoch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Shuffle {
    /// A new permutation each epoch ([`epoch_permutation`] of the epoch).
    #[default]
    Epoch,
    /// The same permutation (epoch 0's) in every epoch: the batches are
    /// the same sets in the same order each epoch.
    Once,
    /// Dataset order 0, 1, 2, ..
    None,
}

impl FromStr for Shuffle {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "epoch" => Ok(Self::Epoch),
            "once" => Ok(Self::Once),
            "none" => Ok(Self::None),
            _ => Err(format!(
                "unknown shuffle '{s}': use 'epoch' (a new order each epoch), \
                 'once' (one order for the whole run) or 'none' (dataset order)"
            )),
        }
    }
}

impl fmt::Display for Shuffle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Epoch => "epoch",
            Self::Once => "once",
            Self::None => "none",
        })
    }
}

/// Splits a dataset of `len` items into mini-batches, epoch by epoch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sampler {
    pub len: usize,
    pub batch_size: usize,
    pub seed: u64,
    /// The order of each epoch (dataset order for evaluation).
    pub shuffle: Shuffle,
    /// Drop the last incomplete batch (keeps batch-norm statistics sane).
    pub drop_last: bool,
}

impl Sampler {
    /// A sampler shuffling each epoch ([`Shuffle::Epoch`]) that keeps the
    /// last partial batch.
    pub fn new(len: usize, batch_size: usize, seed: u64) -> Self {
        assert!(batch_size > 0, "batch size must be positive");
        Self {
            len,
            batch_size,
            seed,
            shuffle: Shuffle::Epoch,
            drop_last: false,
        }
    }

    /// Sequential order (for evaluation).
    pub fn sequential(len: usize, batch_size: usize) -> Self {
        Self {
            shuffle: Shuffle::None,
            ..Self::new(len, batch_size, 0)
        }
    }

    pub fn num_batches(&self) -> usize {
        if self.drop_last {
            self.len / self.batch_size
        } else {
            self.len.div_ceil(self.batch_size)
        }
    }

    /// Dataset indices in the order of `epoch`.
    pub fn epoch_order(&self, epoch: u64) -> Vec<usize> {
        match self.shuffle {
            Shuffle::Epoch => epoch_permutation(self.len, self.seed, epoch),
            Shuffle::Once => epoch_permutation(self.len, self.seed, 0),
            Shuffle::None => (0..self.len).collect(),
        }
    }

    /// The mini-batches of `epoch` (index lists).
    pub fn batches(&self, epoch: u64) -> Vec<Vec<usize>> {
        let order = self.epoch_order(epoch);
        order
            .chunks(self.batch_size)
            .take(self.num_batches())
            .map(<[usize]>::to_vec)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permutation_is_reproducible_and_varies_by_epoch_and_seed() {
        let a = epoch_permutation(1000, 42, 3);
        assert_eq!(a, epoch_permutation(1000, 42, 3));
        let mut sorted = a.clone();
        sorted.sort();
        assert_eq!(sorted, (0..1000).collect::<Vec<_>>());
        assert_ne!(a, (0..1000).collect::<Vec<_>>());
        assert_ne!(a, epoch_permutation(1000, 42, 4));
        assert_ne!(a, epoch_permutation(1000, 43, 3));
        assert!(epoch_permutation(0, 1, 1).is_empty());
        assert_eq!(epoch_permutation(1, 1, 1), [0]);
    }

    #[test]
    fn permutation_is_roughly_uniform() {
        // Position of item 0 over many epochs should spread over all slots.
        let mut counts = [0usize; 4];
        for e in 0..4000 {
            let p = epoch_permutation(4, 7, e);
            counts[p.iter().position(|&x| x == 0).unwrap()] += 1;
        }
        assert!(
            counts.iter().all(|&c| (850..1150).contains(&c)),
            "{counts:?}"
        );
    }

    #[test]
    fn batches_cover_dataset() {
        let s = Sampler::new(10, 4, 9);
        let b = s.batches(0);
        assert_eq!(b.iter().map(Vec::len).collect::<Vec<_>>(), [4, 4, 2]);
        let mut all: Vec<usize> = b.concat();
        all.sort();
        assert_eq!(all, (0..10).collect::<Vec<_>>());
        let d = Sampler {
            drop_last: true,
            ..s.clone()
        };
        assert_eq!(d.num_batches(), 2);
        assert_eq!(d.batches(0).len(), 2);
        assert_eq!(
            Sampler::sequential(5, 2).batches(3),
            [vec![0, 1], vec![2, 3], vec![4]]
        );
    }

    #[test]
    fn shuffle_modes_order_epochs() {
        let epoch = Sampler::new(50, 8, 4);
        let once = Sampler {
            shuffle: Shuffle::Once,
            ..epoch.clone()
        };
        let none = Sampler {
            shuffle: Shuffle::None,
            ..epoch.clone()
        };
        let identity: Vec<usize> = (0..50).collect();
        // Epoch: today's per-epoch permutations, different each epoch.
        for e in 0..3 {
            assert_eq!(epoch.epoch_order(e), epoch_permutation(50, 4, e));
        }
        assert_ne!(epoch.epoch_order(0), epoch.epoch_order(1));
        // Once: epoch 0's permutation, in every epoch.
        let first = epoch_permutation(50, 4, 0);
        assert_ne!(first, identity);
        for e in [0, 1, 2, 17] {
            assert_eq!(once.epoch_order(e), first, "epoch {e}");
            assert_eq!(once.batches(e), epoch.batches(0));
            assert_eq!(none.epoch_order(e), identity);
        }
        // The seed still chooses the permutation.
        let other = Sampler { seed: 5, ..once };
        assert_ne!(other.epoch_order(3), first);
        assert_eq!(Sampler::sequential(50, 8).shuffle, Shuffle::None);
    }

    #[test]
    fn parse_shuffle() {
        for s in [Shuffle::Epoch, Shuffle::Once, Shuffle::None] {
            assert_eq!(s.to_string().parse::<Shuffle>(), Ok(s));
            let json = serde_json::to_string(&s).unwrap();
            assert_eq!(json, format!("\"{s}\""));
            assert_eq!(serde_json::from_str::<Shuffle>(&json).unwrap(), s);
        }
        assert_eq!(Shuffle::default(), Shuffle::Epoch);
        let e = "always".parse::<Shuffle>().unwrap_err();
        assert!(e.contains("'always'") && e.contains("once"), "{e}");
    }
}
