//! The tape: a Wengert list of the values one forward pass computed and, for
//! each, how to send a gradient back to its inputs.
//!
//! Ops append nodes in the order they run, so every node's inputs come before
//! it. [`Graph::backward`] walks the list once in reverse: when it reaches a
//! node, every consumer of that node has already been processed, so the
//! node's gradient is complete (consumers *add* into it, which is how a
//! residual input used twice gets both contributions), and its value is
//! needed by nobody after its own backward runs, so it is released at once.
//!
//! A graph is built for one step and dropped. Parameters are not copied into
//! it: a parameter node refers to its [`ParamStore`] entry.

use crate::params::{ParamId, ParamKind, ParamStore, StatUpdate};
use std::collections::HashMap;
use tensor::Tensor;

/// A value in a graph: an index into its tape.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Var(pub(crate) usize);

/// What an op's backward sees: its inputs' values, its own output, and which
/// inputs want a gradient (so it can skip, say, the input gradient of the
/// first convolution).
pub struct BackwardCtx<'a> {
    pub inputs: Vec<&'a Tensor>,
    pub output: &'a Tensor,
    pub needs_grad: Vec<bool>,
}

/// The backward half of an op: given `dy = dL/d(output)`, the gradient with
/// respect to each input, in input order (`None` where not needed).
pub trait Backward {
    fn backward(&self, ctx: &BackwardCtx, dy: Tensor) -> Vec<Option<Tensor>>;

    /// The op's name in profiles.
    fn name(&self) -> &'static str;

    /// Floating-point operations of the forward pass, for GFLOP/s in profiles
    /// (0 where the op is memory-bound and a rate would mean nothing).
    fn forward_flops(&self) -> f64 {
        0.0
    }

    /// What distinguishes this instance in a profile (a conv's geometry).
    fn detail(&self) -> String {
        String::new()
    }
}

struct Node {
    /// `None` for parameter nodes (the value lives in the store) and for
    /// values released during the backward pass.
    value: Option<Tensor>,
    param: Option<ParamId>,
    inputs: Vec<Var>,
    backward: Option<Box<dyn Backward>>,
    requires_grad: bool,
}

/// How a graph runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mode {
    /// Record the tape so `backward` can run. Off for inference: nothing is
    /// kept but the values themselves.
    pub record: bool,
    /// Batchnorm normalizes with batch statistics and reports new moving
    /// statistics (Keras `training=True`); otherwise it uses the moving ones.
    pub training: bool,
}

impl Mode {
    /// Training: record the tape, batch statistics in batchnorm.
    pub const TRAIN: Mode = Mode {
        record: true,
        training: true,
    };
    /// Inference: no tape, moving statistics.
    pub const INFER: Mode = Mode {
        record: false,
        training: false,
    };
    /// Gradients of a network whose batchnorm layers run in inference mode
    /// (what a frozen network sees, and Keras `training=False` under a tape).
    pub const FROZEN_BN: Mode = Mode {
        record: true,
        training: false,
    };
}

pub struct Graph<'p> {
    params: &'p ParamStore,
    nodes: Vec<Node>,
    mode: Mode,
    stat_updates: Vec<StatUpdate>,
    profile: Option<Profile>,
}

/// Wall time per op of one forward and backward pass (see [`Graph::enable_profile`]).
#[derive(Clone, Debug, Default)]
pub struct Profile {
    /// One entry per recorded op, in forward order.
    pub ops: Vec<OpTiming>,
    last_push: Option<std::time::Instant>,
}

#[derive(Clone, Debug)]
pub struct OpTiming {
    pub name: &'static str,
    pub node: usize,
    /// From the previous op's push to this one's: the op's forward compute
    /// (plus any layer code between the two).
    pub forward: std::time::Duration,
    pub backward: std::time::Duration,
    pub forward_flops: f64,
    pub detail: String,
}

/// Gradients from one backward pass, for parameters and for leaf inputs.
#[derive(Debug, Default)]
pub struct Gradients {
    params: HashMap<ParamId, Tensor>,
    leaves: HashMap<Var, Tensor>,
}

impl Gradients {
    /// The gradient of a trainable parameter (`None` if it took no part).
    pub fn param(&self, id: ParamId) -> Option<&Tensor> {
        self.params.get(&id)
    }

    /// The gradient of a leaf created with [`Graph::leaf`] and `requires_grad`.
    pub fn leaf(&self, v: Var) -> Option<&Tensor> {
        self.leaves.get(&v)
    }

    pub fn params(&self) -> impl Iterator<Item = (ParamId, &Tensor)> {
        self.params.iter().map(|(k, v)| (*k, v))
    }

    fn accumulate<K: std::hash::Hash + Eq>(map: &mut HashMap<K, Tensor>, key: K, g: Tensor) {
        match map.get_mut(&key) {
            Some(acc) => tensor::elementwise::add_assign(acc.data_mut(), g.data()),
            None => {
                map.insert(key, g);
            }
        }
    }
}

impl<'p> Graph<'p> {
    pub fn new(params: &'p ParamStore, mode: Mode) -> Self {
        Graph {
            params,
            nodes: Vec::new(),
            mode,
            stat_updates: Vec::new(),
            profile: None,
        }
    }

    /// Times every op from now on, forward and backward.
    pub fn enable_profile(&mut self) {
        self.profile = Some(Profile {
            ops: Vec::new(),
            last_push: Some(std::time::Instant::now()),
        });
    }

    /// The timings so far (complete after `backward`).
    pub fn profile(&self) -> Option<&Profile> {
        self.profile.as_ref()
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    pub fn params(&self) -> &'p ParamStore {
        self.params
    }

    /// A constant input (a batch of images): no gradient.
    pub fn input(&mut self, value: Tensor) -> Var {
        self.leaf(value, false)
    }

    /// A leaf value, with a gradient if `requires_grad` (gradient checks).
    pub fn leaf(&mut self, value: Tensor, requires_grad: bool) -> Var {
        self.nodes.push(Node {
            value: Some(value),
            param: None,
            inputs: Vec::new(),
            backward: None,
            requires_grad: requires_grad && self.mode.record,
        });
        Var(self.nodes.len() - 1)
    }

    /// A parameter from the store. It gets a gradient if the graph records,
    /// it is a trainable weight, and it is not frozen.
    pub fn param(&mut self, id: ParamId) -> Var {
        let p = self.params.get(id);
        let requires_grad = self.mode.record && p.kind == ParamKind::Weight && p.trainable;
        self.nodes.push(Node {
            value: None,
            param: Some(id),
            inputs: Vec::new(),
            backward: None,
            requires_grad,
        });
        Var(self.nodes.len() - 1)
    }

    /// The value of `v`. Panics if the backward pass already released it:
    /// read what you need (the loss, the logits) before calling `backward`.
    pub fn value(&self, v: Var) -> &Tensor {
        let node = &self.nodes[v.0];
        match node.param {
            Some(id) => self.params.value(id),
            None => node
                .value
                .as_ref()
                .expect("value read after the backward pass released it"),
        }
    }

    /// Moves a value out of the graph (the last use of an output).
    pub fn take(&mut self, v: Var) -> Tensor {
        match self.nodes[v.0].param {
            Some(id) => self.params.value(id).clone(),
            None => self.nodes[v.0].value.take().expect("value already taken"),
        }
    }

    /// Frees `v`'s value early when nothing can need it again: in a graph
    /// that does not record (inference), once its last consumer has run.
    /// With a tape it does nothing (backward needs the values).
    pub fn release(&mut self, v: Var) {
        if !self.mode.record {
            self.nodes[v.0].value = None;
        }
    }

    /// How many values the graph currently holds (parameters not counted).
    pub fn live_values(&self) -> usize {
        self.nodes.iter().filter(|n| n.value.is_some()).count()
    }

    pub fn requires_grad(&self, v: Var) -> bool {
        self.nodes[v.0].requires_grad
    }

    /// Appends an op's output. Called by the ops in [`crate::ops`]; the
    /// backward is kept only if the graph records and some input needs a gradient.
    pub fn push(
        &mut self,
        value: Tensor,
        inputs: &[Var],
        backward: impl Backward + 'static,
    ) -> Var {
        let requires_grad =
            self.mode.record && inputs.iter().any(|v| self.nodes[v.0].requires_grad);
        if let Some(p) = &mut self.profile {
            let now = std::time::Instant::now();
            p.ops.push(OpTiming {
                name: backward.name(),
                node: self.nodes.len(),
                forward: now - p.last_push.unwrap_or(now),
                backward: std::time::Duration::ZERO,
                forward_flops: backward.forward_flops(),
                detail: backward.detail(),
            });
            p.last_push = Some(now);
        }
        self.nodes.push(Node {
            value: Some(value),
            param: None,
            inputs: if requires_grad {
                inputs.to_vec()
            } else {
                Vec::new()
            },
            backward: if requires_grad {
                Some(Box::new(backward))
            } else {
                None
            },
            requires_grad,
        });
        Var(self.nodes.len() - 1)
    }

    /// Records a new value for a statistic (batchnorm in training mode).
    pub fn push_stat_update(&mut self, id: ParamId, value: Tensor) {
        self.stat_updates.push(StatUpdate { id, value });
    }

    /// The statistic updates of this forward pass, for
    /// [`ParamStore::apply_stat_updates`] once the graph is dropped.
    pub fn take_stat_updates(&mut self) -> Vec<StatUpdate> {
        std::mem::take(&mut self.stat_updates)
    }

    /// Back-propagates from a scalar `loss` (seed gradient 1).
    pub fn backward(&mut self, loss: Var) -> Gradients {
        let seed = Tensor::full(self.value(loss).shape(), 1.0);
        self.backward_with(loss, seed)
    }

    /// Back-propagates `seed = dL/d(out)` from any output. Every value the
    /// tape holds is released as soon as nothing further back needs it.
    pub fn backward_with(&mut self, out: Var, seed: Tensor) -> Gradients {
        assert_eq!(
            seed.shape(),
            self.value(out).shape(),
            "backward: seed shape differs from the output's"
        );
        let mut grads: Vec<Option<Tensor>> = (0..=out.0).map(|_| None).collect();
        let mut result = Gradients::default();
        if self.nodes[out.0].requires_grad {
            grads[out.0] = Some(seed);
        }
        for i in (0..=out.0).rev() {
            if let Some(dy) = grads[i].take() {
                let node = &self.nodes[i];
                match (&node.backward, node.param) {
                    (None, Some(id)) => Gradients::accumulate(&mut result.params, id, dy),
                    (None, None) => Gradients::accumulate(&mut result.leaves, Var(i), dy),
                    (Some(op), _) => {
                        let ctx = BackwardCtx {
                            inputs: node.inputs.iter().map(|&v| self.value(v)).collect(),
                            output: self.value(Var(i)),
                            needs_grad: node
                                .inputs
                                .iter()
                                .map(|v| self.nodes[v.0].requires_grad)
                                .collect(),
                        };
                        let started = std::time::Instant::now();
                        let dinputs = op.backward(&ctx, dy);
                        if let Some(p) = &mut self.profile {
                            if let Some(t) = p.ops.iter_mut().rev().find(|t| t.node == i) {
                                t.backward = started.elapsed();
                            }
                        }
                        debug_assert_eq!(dinputs.len(), node.inputs.len());
                        for (&input, d) in node.inputs.iter().zip(dinputs) {
                            let Some(d) = d else { continue };
                            if !self.nodes[input.0].requires_grad {
                                continue;
                            }
                            match &mut grads[input.0] {
                                Some(acc) => {
                                    tensor::elementwise::add_assign(acc.data_mut(), d.data())
                                }
                                slot => *slot = Some(d),
                            }
                        }
                    }
                }
            }
            // Every consumer of node i has run its backward: nobody needs it now.
            let node = &mut self.nodes[i];
            node.value = None;
            node.backward = None;
        }
        result
    }
}
