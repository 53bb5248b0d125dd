//! Serializable optimizer state, and how it is laid out in a checkpoint.
//!
//! Why a separate type: a resumed run must continue with the exact same
//! moments and step count, otherwise Adam's bias correction restarts and the
//! first steps after a resume take much larger updates.
//!
//! In memory the optimizers find a parameter's buffers by its position in
//! the [`ParamStore`] (the `index` the trainer passes to `update`), which is
//! cheap. In a file positions would be fragile (a model that registers its
//! parameters in another order would silently get the wrong moments), so
//! [`OptimizerState::encode`] names every buffer after its parameter:
//!
//! ```text
//! optimizer/<slot>/<parameter name>     with the parameter's shape
//!   optimizer/m/conv1_conv/kernel         Adam's first moment   [7, 7, 3, 64]
//!   optimizer/v/conv1_conv/kernel         Adam's second moment
//!   optimizer/velocity/fc1000/bias        SGD's momentum buffer
//! metadata optimizer/kind = adam | sgd, optimizer/step = <begin_step calls>,
//!          optimizer/layout = by-name
//! ```
//!
//! [`OptimizerState::decode`] maps the names back onto the store's
//! positions, and a file naming a parameter the model lacks, or lacking a
//! buffer for a parameter being trained, is an error naming it.
//!
//! Files written before the names (no `optimizer/layout`) hold
//! `optimizer/<slot>.<position>` as 1-D tensors; they are still read, by
//! position in the same store order, each checked for size (an older file
//! whose positions do not fit this model is an error saying so).

use std::collections::{BTreeMap, BTreeSet};

use autograd::{ParamId, ParamStore};
use nn::checkpoint::{CheckpointError, Metadata, NamedTensors, TensorFile};
use tensor::Tensor;
use thiserror::Error;

/// Errors when an optimizer adopts a state (see [`super::Optimizer::load_state`]).
#[derive(Debug, Error)]
pub enum OptimError {
    #[error("optimizer state was saved by '{found}' but this run uses '{expected}'")]
    KindMismatch { expected: String, found: String },
    #[error("optimizer state: '{0}' is not a buffer of this optimizer")]
    BadSlot(String),
    #[error("optimizer state for parameter {index}: {reason}")]
    Inconsistent { index: usize, reason: String },
}

/// One per-parameter buffer: which of the optimizer's buffers (`slot`:
/// "m", "v", "velocity") of which parameter (its position in the store).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct BufferKey {
    pub slot: String,
    pub param: usize,
}

impl BufferKey {
    pub fn new(slot: &str, param: usize) -> Self {
        BufferKey {
            slot: slot.to_string(),
            param,
        }
    }
}

/// Step count plus per-parameter buffers.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OptimizerState {
    pub kind: String,
    pub step: u64,
    pub buffers: BTreeMap<BufferKey, Vec<f32>>,
}

/// Every optimizer tensor and metadata key starts with this.
pub const PREFIX: &str = "optimizer/";
const KIND: &str = "optimizer/kind";
const STEP: &str = "optimizer/step";
const LAYOUT: &str = "optimizer/layout";
/// The value of [`LAYOUT`] this version writes.
const BY_NAME: &str = "by-name";

impl OptimizerState {
    pub(crate) fn check_kind(&self, expected: &str) -> Result<(), OptimError> {
        if self.kind != expected {
            return Err(OptimError::KindMismatch {
                expected: expected.to_string(),
                found: self.kind.clone(),
            });
        }
        Ok(())
    }

    /// Consumes the state into the tensors (named after the parameters of `store`, see the module
    /// docs) and metadata entries that store this state in a file.
    ///
    /// # Panics
    /// If a buffer does not fit its parameter in `store`: the state would
    /// come from another model, a programming error (every `update` checks
    /// the lengths).
    pub fn encode(self, store: &ParamStore) -> (NamedTensors, Metadata) {
        let metadata = Metadata::from([
            (KIND.to_string(), self.kind),
            (STEP.to_string(), self.step.to_string()),
            (LAYOUT.to_string(), BY_NAME.to_string()),
        ]);
        let tensors = self
            .buffers
            .into_iter()
            .map(|(key, values)| {
                assert!(
                    key.param < store.len(),
                    "optimizer state for parameter {} but the store has {}",
                    key.param,
                    store.len()
                );
                let p = store.get(ParamId(key.param));
                let t = Tensor::from_vec(p.value.shape(), values).unwrap_or_else(|e| {
                    panic!("optimizer state '{}' of '{}': {e}", key.slot, p.name)
                });
                (format!("{PREFIX}{}/{}", key.slot, p.name), t)
            })
            .collect();
        (tensors, metadata)
    }

    /// Reads the state `file` holds for the parameters of `store`; `Ok(None)`
    /// when it holds none (a weights-only file). Every trainable weight of
    /// `store` must have each buffer the file has for any parameter, so
    /// apply freezing before reading.
    pub fn decode(file: &TensorFile, store: &ParamStore) -> Result<Option<Self>, CheckpointError> {
        let Some(kind) = file.metadata.get(KIND) else {
            return Ok(None);
        };
        let step = file.meta_parse::<u64>(STEP)?;
        let by_name = match file.metadata.get(LAYOUT).map(String::as_str) {
            Some(BY_NAME) => true,
            None => false,
            Some(other) => {
                return Err(CheckpointError::Metadata {
                    path: file.path.clone(),
                    key: LAYOUT.into(),
                    reason: format!(
                        "'{other}' is not a layout this version reads ('{BY_NAME}'): \
                         the file is from a newer version"
                    ),
                })
            }
        };
        let mut buffers = BTreeMap::new();
        for (tensor, t) in &file.tensors {
            let Some(rest) = tensor.strip_prefix(PREFIX) else {
                continue;
            };
            let key = if by_name {
                named_key(file, store, tensor, rest, t)?
            } else {
                positional_key(file, store, tensor, rest, t)?
            };
            buffers.insert(key, t.data().to_vec());
        }
        check_complete(file, store, &buffers)?;
        Ok(Some(Self {
            kind: kind.clone(),
            step,
            buffers,
        }))
    }
}

/// `optimizer/<slot>/<parameter name>`, with the parameter's shape.
fn named_key(
    file: &TensorFile,
    store: &ParamStore,
    tensor: &str,
    rest: &str,
    t: &Tensor,
) -> Result<BufferKey, CheckpointError> {
    let (slot, param) = rest
        .split_once('/')
        .ok_or_else(|| CheckpointError::Format {
            path: file.path.clone(),
            reason: format!("tensor '{tensor}' is not named {PREFIX}<slot>/<parameter>"),
        })?;
    let id = store
        .id(param)
        .map_err(|_| CheckpointError::UnknownParameter {
            path: file.path.clone(),
            tensor: tensor.to_string(),
            param: param.to_string(),
        })?;
    let expected = store.value(id).shape();
    if t.shape() != expected {
        return Err(CheckpointError::Shape {
            path: file.path.clone(),
            tensor: tensor.to_string(),
            expected: expected.to_vec(),
            got: t.shape().to_vec(),
        });
    }
    Ok(BufferKey::new(slot, id.0))
}

/// The layout before parameter names: `optimizer/<slot>.<position>`, 1-D.
fn positional_key(
    file: &TensorFile,
    store: &ParamStore,
    tensor: &str,
    rest: &str,
    t: &Tensor,
) -> Result<BufferKey, CheckpointError> {
    let old = |reason: String| CheckpointError::OldFormat {
        path: file.path.clone(),
        reason,
    };
    let (slot, position) = rest
        .rsplit_once('.')
        .and_then(|(slot, i)| Some((slot, i.parse::<usize>().ok()?)))
        .ok_or_else(|| {
            old(format!(
                "tensor '{tensor}' is not named {PREFIX}<slot>.<position>"
            ))
        })?;
    if position >= store.len() {
        return Err(old(format!(
            "tensor '{tensor}' is for parameter position {position}, but this model has {} parameters",
            store.len()
        )));
    }
    let p = store.get(ParamId(position));
    if t.numel() != p.value.numel() {
        return Err(old(format!(
            "tensor '{tensor}' has {} values but parameter {position} of this model ('{}', {:?}) has {}: \
             the parameter order differs",
            t.numel(),
            p.name,
            p.value.shape(),
            p.value.numel()
        )));
    }
    Ok(BufferKey::new(slot, position))
}

/// Every trainable weight has every buffer that the file has for any parameter.
fn check_complete(
    file: &TensorFile,
    store: &ParamStore,
    buffers: &BTreeMap<BufferKey, Vec<f32>>,
) -> Result<(), CheckpointError> {
    let slots: BTreeSet<&str> = buffers.keys().map(|k| k.slot.as_str()).collect();
    let mut missing = Vec::new();
    for slot in slots {
        for (id, p) in store.iter().filter(|(_, p)| p.trainable) {
            if !buffers.contains_key(&BufferKey::new(slot, id.0)) {
                missing.push(format!("{PREFIX}{slot}/{}", p.name));
            }
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(CheckpointError::Missing {
            path: file.path.clone(),
            what: "optimizer state tensor",
            names: missing,
        })
    }
}
