//! Named parameters: the model's state, kept apart from any one step's graph.
//!
//! A [`ParamStore`] holds every tensor a model owns under its Keras name
//! (`conv1_conv/kernel`, `conv2_block1_1_bn/moving_mean`, ...). Two kinds live
//! here: weights, which get gradients unless frozen, and statistics (batchnorm
//! moving mean and variance), which never get gradients and change only through
//! [`StatUpdate`]s that a training-mode forward pass hands back.

use std::collections::HashMap;
use tensor::Tensor;
use thiserror::Error;

/// Index of a parameter in its store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ParamId(pub usize);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamKind {
    /// Learned by gradient descent (kernels, biases, gamma, beta).
    Weight,
    /// Tracked by running averages (batchnorm moving mean/variance).
    Statistic,
}

#[derive(Clone, Debug)]
pub struct Param {
    pub name: String,
    pub value: Tensor,
    pub kind: ParamKind,
    /// Frozen weights get no gradient; a batchnorm whose gamma is frozen runs
    /// in inference mode (Keras semantics of `trainable = False`).
    pub trainable: bool,
}

#[derive(Debug, Error, PartialEq)]
pub enum ParamError {
    #[error("parameter '{0}' is defined twice")]
    Duplicate(String),
    #[error("no parameter named '{0}'")]
    Unknown(String),
    #[error("parameter '{name}': expected shape {expected:?}, got {got:?}")]
    Shape {
        name: String,
        expected: Vec<usize>,
        got: Vec<usize>,
    },
}

/// A new value for a statistic, computed by a training-mode forward pass.
#[derive(Clone, Debug)]
pub struct StatUpdate {
    pub id: ParamId,
    pub value: Tensor,
}

#[derive(Clone, Debug, Default)]
pub struct ParamStore {
    params: Vec<Param>,
    by_name: HashMap<String, ParamId>,
}

impl ParamStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a parameter under a unique name.
    pub fn add(
        &mut self,
        name: &str,
        value: Tensor,
        kind: ParamKind,
    ) -> Result<ParamId, ParamError> {
        if self.by_name.contains_key(name) {
            return Err(ParamError::Duplicate(name.into()));
        }
        let id = ParamId(self.params.len());
        self.params.push(Param {
            name: name.into(),
            value,
            kind,
            trainable: kind == ParamKind::Weight,
        });
        self.by_name.insert(name.into(), id);
        Ok(id)
    }

    pub fn len(&self) -> usize {
        self.params.len()
    }

    pub fn is_empty(&self) -> bool {
        self.params.is_empty()
    }

    pub fn id(&self, name: &str) -> Result<ParamId, ParamError> {
        self.by_name
            .get(name)
            .copied()
            .ok_or_else(|| ParamError::Unknown(name.into()))
    }

    pub fn get(&self, id: ParamId) -> &Param {
        &self.params[id.0]
    }

    pub fn value(&self, id: ParamId) -> &Tensor {
        &self.params[id.0].value
    }

    pub fn value_mut(&mut self, id: ParamId) -> &mut Tensor {
        &mut self.params[id.0].value
    }

    pub fn is_trainable(&self, id: ParamId) -> bool {
        self.params[id.0].trainable
    }

    /// Replaces a parameter's value; the shape must stay the same.
    pub fn set(&mut self, id: ParamId, value: Tensor) -> Result<(), ParamError> {
        let p = &mut self.params[id.0];
        if p.value.shape() != value.shape() {
            return Err(ParamError::Shape {
                name: p.name.clone(),
                expected: p.value.shape().to_vec(),
                got: value.shape().to_vec(),
            });
        }
        p.value = value;
        Ok(())
    }

    pub fn iter(&self) -> impl Iterator<Item = (ParamId, &Param)> {
        self.params.iter().enumerate().map(|(i, p)| (ParamId(i), p))
    }

    /// Total number of scalars, statistics included (Keras's `count_params`).
    pub fn num_scalars(&self) -> usize {
        self.params.iter().map(|p| p.value.numel()).sum()
    }

    /// Sets `trainable` on every weight whose name starts with `prefix`;
    /// returns how many matched, so a typo in a prefix is noticed.
    pub fn set_trainable_prefix(&mut self, prefix: &str, trainable: bool) -> usize {
        let mut n = 0;
        for p in self
            .params
            .iter_mut()
            .filter(|p| p.kind == ParamKind::Weight && p.name.starts_with(prefix))
        {
            p.trainable = trainable;
            n += 1;
        }
        n
    }

    /// Freezes (`false`) or unfreezes one parameter.
    pub fn set_trainable(&mut self, id: ParamId, trainable: bool) {
        self.params[id.0].trainable = trainable;
    }

    /// Writes the statistics a training-mode forward pass computed.
    pub fn apply_stat_updates(&mut self, updates: Vec<StatUpdate>) {
        for u in updates {
            debug_assert_eq!(self.params[u.id.0].kind, ParamKind::Statistic);
            self.params[u.id.0].value = u.value;
        }
    }
}
