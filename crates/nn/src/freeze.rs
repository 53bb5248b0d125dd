//! Freezing for transfer learning. A frozen weight gets no gradient and is
//! not updated; a batchnorm whose gamma is frozen runs in inference mode
//! (Keras semantics for `trainable = False`).

use crate::Model;
use autograd::{ParamKind, ParamStore};

/// What to freeze.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Freeze {
    /// Nothing: fine-tune everything.
    None,
    /// The stem (stage 1) and stages 2..=n, as [`Model::stage_of`] assigns
    /// parameters to them. `Through(5)` freezes a ResNet's whole base.
    Through(usize),
    /// Every weight but the head's (`predictions/*`): feature extraction.
    Base,
}

/// Applies `freeze` to the parameters of `model` in `store` (after
/// unfreezing everything); returns the number of weights frozen.
pub fn apply(store: &mut ParamStore, model: &dyn Model, freeze: Freeze) -> usize {
    let frozen_stage = |stage: Option<usize>| match freeze {
        Freeze::None => false,
        Freeze::Through(n) => stage.is_some_and(|s| s <= n),
        Freeze::Base => stage.is_some(),
    };
    let weights: Vec<(autograd::ParamId, bool)> = store
        .iter()
        .filter(|(_, p)| p.kind == ParamKind::Weight)
        .map(|(id, p)| (id, frozen_stage(model.stage_of(&p.name))))
        .collect();
    for &(id, frozen) in &weights {
        store.set_trainable(id, !frozen);
    }
    weights.iter().filter(|(_, frozen)| *frozen).count()
}
