//! Holding training images out for validation.
//!
//! Like Keras's `validation_split`, but by count and shuffled: which images
//! are held out is a pure function of (seed, dataset length), so a resumed
//! run validates on exactly the images it validated on before, and the
//! held-out images are never trained on. (Keras takes the *last* fraction of
//! the arrays unshuffled, which on a class-sorted folder would hold out one
//! class; a seeded shuffle does not.)

use super::sampler::epoch_permutation;
use super::{DataError, Dataset};

/// The shuffle stream of the split, apart from the epochs' (0, 1, ...) and
/// from `--train-limit`'s (`u64::MAX`).
const SPLIT_EPOCH: u64 = u64::MAX - 1;

/// Splits `0..len` into `(train, validation)` index lists, each sorted, with
/// `held_out` indices in the validation list.
///
/// # Panics
/// If `held_out > len` (callers check with [`Dataset::hold_out`]).
pub fn split_indices(len: usize, held_out: usize, seed: u64) -> (Vec<usize>, Vec<usize>) {
    assert!(held_out <= len, "cannot hold out {held_out} of {len} items");
    let order = epoch_permutation(len, seed, SPLIT_EPOCH);
    let mut val = order[..held_out].to_vec();
    let mut train = order[held_out..].to_vec();
    val.sort_unstable();
    train.sort_unstable();
    (train, val)
}

impl Dataset {
    /// `(train, validation)`: `held_out` images chosen by `seed` go to the
    /// validation set, the others (in their original order) stay for
    /// training. At least one image must remain for training.
    pub fn hold_out(&self, held_out: usize, seed: u64) -> Result<(Dataset, Dataset), DataError> {
        if held_out >= self.len() {
            return Err(DataError::Split {
                held_out,
                len: self.len(),
            });
        }
        let (train, val) = split_indices(self.len(), held_out, seed);
        Ok((self.subset(&train), self.subset(&val)))
    }
}
