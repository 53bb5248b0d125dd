//! Serializable optimizer state.
//!
//! Why a separate type: a resumed run must continue with the exact same
//! moments and step count, otherwise Adam's bias correction restarts and the
//! first steps after a resume take much larger updates. The state is a plain
//! map of named `f32` buffers so it maps 1:1 onto checkpoint tensors.

use std::collections::BTreeMap;

use thiserror::Error;

use crate::checkpoint_io::{Checkpoint, CheckpointError};

/// Errors when restoring optimizer state.
#[derive(Debug, Error)]
pub enum OptimError {
    #[error("optimizer state was saved by '{found}' but this run uses '{expected}'")]
    KindMismatch { expected: String, found: String },
    #[error("optimizer state: unexpected buffer '{0}' (expected '<slot>.<parameter index>')")]
    BadSlot(String),
    #[error("optimizer state for parameter {index}: {reason}")]
    Inconsistent { index: usize, reason: String },
}

/// Step count plus per-parameter buffers, keyed `"<slot>.<index>"`
/// (e.g. `"m.12"`, `"v.12"`, `"velocity.3"`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OptimizerState {
    pub kind: String,
    pub step: u64,
    pub buffers: BTreeMap<String, Vec<f32>>,
}

impl OptimizerState {
    pub(crate) fn key(slot: &str, index: usize) -> String {
        format!("{slot}.{index}")
    }

    /// Splits a buffer key into (slot, parameter index).
    pub(crate) fn parse_key(key: &str) -> Result<(&str, usize), OptimError> {
        let (slot, idx) = key
            .rsplit_once('.')
            .ok_or_else(|| OptimError::BadSlot(key.to_string()))?;
        let idx = idx
            .parse()
            .map_err(|_| OptimError::BadSlot(key.to_string()))?;
        Ok((slot, idx))
    }

    pub(crate) fn check_kind(&self, expected: &str) -> Result<(), OptimError> {
        if self.kind != expected {
            return Err(OptimError::KindMismatch {
                expected: expected.to_string(),
                found: self.kind.clone(),
            });
        }
        Ok(())
    }

    /// Stores the state in a checkpoint: each buffer as a 1-D tensor named
    /// `{prefix}{key}`, kind and step as metadata `{prefix}kind`/`{prefix}step`.
    pub fn write_to(&self, ckpt: &mut Checkpoint, prefix: &str) {
        ckpt.set_meta(format!("{prefix}kind"), self.kind.clone());
        ckpt.set_meta(format!("{prefix}step"), self.step.to_string());
        for (k, v) in &self.buffers {
            ckpt.insert(format!("{prefix}{k}"), vec![v.len()], v.clone());
        }
    }

    /// Reads what [`write_to`](Self::write_to) stored; `Ok(None)` when the
    /// checkpoint has no optimizer state under `prefix` (e.g. weights only).
    /// `prefix` must be non-empty and not shared with model tensors
    /// (e.g. `"optimizer/"`), since every tensor under it is taken.
    pub fn read_from(ckpt: &Checkpoint, prefix: &str) -> Result<Option<Self>, CheckpointError> {
        assert!(
            !prefix.is_empty(),
            "optimizer state prefix must not be empty"
        );
        let Some(kind) = ckpt.metadata.get(&format!("{prefix}kind")) else {
            return Ok(None);
        };
        let step = ckpt.meta_parse::<u64>(&format!("{prefix}step"))?;
        let buffers = ckpt
            .tensors
            .iter()
            .filter_map(|(k, t)| {
                k.strip_prefix(prefix)
                    .map(|rest| (rest.to_string(), t.data.clone()))
            })
            .collect();
        Ok(Some(Self {
            kind: kind.clone(),
            step,
            buffers,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_round_trip_keeps_only_prefixed_tensors() {
        let mut st = OptimizerState {
            kind: "adam".into(),
            step: 17,
            ..Default::default()
        };
        st.buffers.insert("m.0".into(), vec![1.0, 2.0]);
        st.buffers.insert("v.0".into(), vec![3.0, 4.0]);
        let mut ckpt = Checkpoint::new();
        ckpt.insert("model/w", vec![2], vec![9.0, 9.0]);
        st.write_to(&mut ckpt, "optimizer/");
        assert_eq!(ckpt.tensors.len(), 3);
        let back = OptimizerState::read_from(&ckpt, "optimizer/")
            .unwrap()
            .unwrap();
        assert_eq!(back, st);
        assert!(OptimizerState::read_from(&ckpt, "other/")
            .unwrap()
            .is_none());
        ckpt.set_meta("optimizer/step", "x");
        let e = OptimizerState::read_from(&ckpt, "optimizer/").unwrap_err();
        assert!(e.to_string().contains("optimizer/step"), "{e}");
    }

    #[test]
    fn parse_key_splits_on_last_dot() {
        assert_eq!(OptimizerState::parse_key("m.12").unwrap(), ("m", 12));
        assert!(OptimizerState::parse_key("m12").is_err());
        assert!(OptimizerState::parse_key("m.x").is_err());
    }
}
