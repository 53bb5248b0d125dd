//! Freezing for transfer learning. A frozen weight gets no gradient and is
//! not updated; a batchnorm whose gamma is frozen runs in inference mode
//! (Keras semantics for `trainable = False`).

use autograd::ParamStore;

/// What to freeze.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Freeze {
    /// Nothing: fine-tune everything.
    None,
    /// The stem (stage 1, `conv1_*`) and stages 2..=n (`conv2_*` ..). `Through(5)` freezes
    /// the whole base.
    Through(usize),
    /// Every weight but the head's (`predictions/*`): feature extraction.
    Base,
}

/// Applies `freeze` to `store` (after unfreezing everything); returns the
/// number of weights frozen.
pub fn apply(store: &mut ParamStore, freeze: Freeze) -> usize {
    store.set_trainable_prefix("", true);
    match freeze {
        Freeze::None => 0,
        Freeze::Through(n) => (1..=n.min(5))
            .map(|s| store.set_trainable_prefix(&format!("conv{s}_"), false))
            .sum(),
        Freeze::Base => {
            let frozen = store.set_trainable_prefix("", false);
            frozen - store.set_trainable_prefix("predictions/", true)
        }
    }
}
