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
//!
//! Without a tape (inference) nothing needs a value once its consumers have
//! run, so a network runs as a sequence of [`Graph::stage`]s: when a stage
//! ends, the graph frees its input and everything it made except its output
//! and the values retained on purpose ([`Graph::retain`], or [`Graph::tap`]
//! when every layer output is kept). Layers never free anything themselves.

use crate::params::{ParamId, ParamKind, ParamStore, StatUpdate};
use std::collections::HashMap;
use tensor::{ConvGeometry, Tensor};

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
}

/// What a profile says about an op: passed beside the op's value when it is
/// pushed, so an op that only exists in inference needs no [`Backward`].
#[derive(Clone, Copy, Debug)]
pub struct OpInfo {
    /// The op's name in profiles.
    pub name: &'static str,
    /// Floating-point operations of the forward pass, for GFLOP/s in profiles
    /// (0 where the op is memory-bound and a rate would mean nothing).
    pub forward_flops: f64,
    /// A convolution's geometry, by which profiles group the convolutions.
    pub conv: Option<ConvGeometry>,
}

impl OpInfo {
    /// A memory-bound op: a name and nothing else.
    pub const fn named(name: &'static str) -> Self {
        OpInfo {
            name,
            forward_flops: 0.0,
            conv: None,
        }
    }

    /// A convolution (plain or fused) of geometry `geom`: 2 FLOPs per MAC.
    pub fn conv(name: &'static str, geom: ConvGeometry) -> Self {
        OpInfo {
            name,
            forward_flops: 2.0 * geom.macs() as f64,
            conv: Some(geom),
        }
    }

    /// What distinguishes this instance in a profile:
    /// `kh x kw / stride cin->cout @h x w` for a convolution.
    pub fn detail(&self) -> String {
        match &self.conv {
            Some(g) => format!(
                "{}x{}/{} {}->{} @{}x{}",
                g.kernel_h, g.kernel_w, g.stride, g.in_c, g.out_c, g.in_h, g.in_w
            ),
            None => String::new(),
        }
    }
}

struct Node {
    /// `None` for parameter nodes (the value lives in the store), for values
    /// a finished stage freed, and for values released during the backward pass.
    value: Option<Tensor>,
    param: Option<ParamId>,
    inputs: Vec<Var>,
    backward: Option<Box<dyn Backward>>,
    requires_grad: bool,
    /// Kept when a stage ends ([`Graph::retain`]).
    retained: bool,
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
    /// Keep every layer's output, each layer run as its own op and tapped
    /// under its Keras name ([`Graph::tap`]): what the parity probes read.
    /// Off, layers may fuse (a conv and the batchnorm after it become one op
    /// without a tape) and only the stages' outputs survive inference.
    pub layer_outputs: bool,
}

impl Mode {
    /// Training: record the tape, batch statistics in batchnorm.
    pub const TRAIN: Mode = Mode {
        record: true,
        training: true,
        layer_outputs: false,
    };
    /// Inference: no tape, moving statistics.
    pub const INFER: Mode = Mode {
        record: false,
        training: false,
        layer_outputs: false,
    };
    /// Gradients of a network whose batchnorm layers run in inference mode
    /// (what a frozen network sees, and Keras `training=False` under a tape).
    pub const FROZEN_BN: Mode = Mode {
        record: true,
        training: false,
        layer_outputs: false,
    };
    /// Inference keeping every Keras layer's output (the `forward` probe).
    /// Probes of other modes set `layer_outputs` on them:
    /// `Mode { layer_outputs: true, ..Mode::TRAIN }`.
    pub const PROBE: Mode = Mode {
        layer_outputs: true,
        ..Mode::INFER
    };
}

pub struct Graph<'p> {
    params: &'p ParamStore,
    nodes: Vec<Node>,
    mode: Mode,
    stat_updates: Vec<StatUpdate>,
    /// Values named by the layer that made them, in the order they ran.
    taps: Vec<(String, Var)>,
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
    /// See [`OpInfo::detail`].
    pub detail: String,
    /// The convolution's geometry (see [`OpInfo::conv`]), for counts such as
    /// the multiply-adds that read real input rather than padding.
    pub conv: Option<ConvGeometry>,
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

    /// The parameters' gradients, to rescale in place (gradient clipping).
    pub fn params_mut(&mut self) -> impl Iterator<Item = (ParamId, &mut Tensor)> {
        self.params.iter_mut().map(|(k, v)| (*k, v))
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
            taps: Vec::new(),
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
            retained: false,
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
            retained: false,
        });
        Var(self.nodes.len() - 1)
    }

    /// The value of `v`. Panics if it was freed: by the end of a stage it
    /// did not survive (see [`Graph::stage`]) or by the backward pass (read
    /// what you need, the loss, the logits, before calling `backward`).
    pub fn value(&self, v: Var) -> &Tensor {
        let node = &self.nodes[v.0];
        match node.param {
            Some(id) => self.params.value(id),
            None => node
                .value
                .as_ref()
                .expect("value read after its stage or the backward pass freed it"),
        }
    }

    /// Moves a value out of the graph (the last use of an output).
    pub fn take(&mut self, v: Var) -> Tensor {
        match self.nodes[v.0].param {
            Some(id) => self.params.value(id).clone(),
            None => self.nodes[v.0].value.take().expect("value already taken"),
        }
    }

    /// Whether `v` can still be read (not freed by a stage or the backward pass).
    pub fn is_live(&self, v: Var) -> bool {
        let node = &self.nodes[v.0];
        node.param.is_some() || node.value.is_some()
    }

    /// Runs `f` on `input` as one stage of a network (a block, the stem)
    /// and returns its output. Without a tape, when `f` returns, `input` and
    /// every value `f` made are freed, except the output and the values
    /// retained ([`Graph::retain`], [`Graph::tap`] in `layer_outputs` mode):
    /// nothing later reads them, and freeing them as the pass goes is what
    /// lets inference on a large batch hold a few activations, not the whole
    /// network's. Values made before the stage other than `input` are left
    /// alone. With a tape nothing is freed: the backward pass needs them.
    pub fn stage(&mut self, input: Var, f: impl FnOnce(&mut Self, Var) -> Var) -> Var {
        let first_new = self.nodes.len();
        let output = f(self, input);
        if !self.mode.record {
            for i in std::iter::once(input.0).chain(first_new..self.nodes.len()) {
                let node = &mut self.nodes[i];
                if i != output.0 && !node.retained {
                    node.value = None;
                }
            }
        }
        output
    }

    /// Keeps `v` alive past the end of its stage (see [`Graph::stage`]).
    pub fn retain(&mut self, v: Var) -> Var {
        self.nodes[v.0].retained = true;
        v
    }

    /// Names `v` as the output of layer `name` (a Keras layer name) and
    /// passes it on. In `layer_outputs` mode the value is also retained, so
    /// every tapped layer output can be read after the pass.
    pub fn tap(&mut self, name: &str, v: Var) -> Var {
        self.taps.push((name.to_string(), v));
        if self.mode.layer_outputs {
            self.retain(v);
        }
        v
    }

    /// The value tapped as `name`, if it can still be read: any tapped layer
    /// with a tape or in `layer_outputs` mode; in plain inference only those
    /// a stage kept (the model's outputs).
    pub fn tapped(&self, name: &str) -> Option<Var> {
        self.taps
            .iter()
            .find(|(n, v)| n == name && self.is_live(*v))
            .map(|(_, v)| *v)
    }

    /// The names of the tapped values that can still be read, in the order
    /// the layers ran.
    pub fn tap_names(&self) -> impl Iterator<Item = &str> {
        self.taps
            .iter()
            .filter(|(_, v)| self.is_live(*v))
            .map(|(n, _)| n.as_str())
    }

    /// How many values the graph currently holds (parameters not counted).
    pub fn live_values(&self) -> usize {
        self.nodes.iter().filter(|n| n.value.is_some()).count()
    }

    pub fn requires_grad(&self, v: Var) -> bool {
        self.nodes[v.0].requires_grad
    }

    /// Appends a differentiable op's output. Called by the ops in
    /// [`crate::ops`]; `info` names it in profiles, and the backward is kept
    /// only if the graph records and some input needs a gradient.
    pub fn push(
        &mut self,
        value: Tensor,
        inputs: &[Var],
        info: OpInfo,
        backward: impl Backward + 'static,
    ) -> Var {
        let requires_grad =
            self.mode.record && inputs.iter().any(|v| self.nodes[v.0].requires_grad);
        self.push_node(
            value,
            info,
            requires_grad.then(|| (inputs.to_vec(), Box::new(backward) as Box<dyn Backward>)),
        )
    }

    /// Appends the output of an op that exists only in inference and has
    /// no backward (a fused kernel whose parts are the differentiable ops).
    /// Panics in a graph that records: the gradient would silently stop there.
    pub fn push_inference(&mut self, value: Tensor, info: OpInfo) -> Var {
        assert!(
            !self.mode.record,
            "{}: an inference-only op in a graph that records",
            info.name
        );
        self.push_node(value, info, None)
    }

    fn push_node(
        &mut self,
        value: Tensor,
        info: OpInfo,
        tape: Option<(Vec<Var>, Box<dyn Backward>)>,
    ) -> Var {
        if let Some(p) = &mut self.profile {
            let now = std::time::Instant::now();
            p.ops.push(OpTiming {
                name: info.name,
                node: self.nodes.len(),
                forward: now - p.last_push.unwrap_or(now),
                backward: std::time::Duration::ZERO,
                forward_flops: info.forward_flops,
                detail: info.detail(),
                conv: info.conv,
            });
            p.last_push = Some(now);
        }
        let requires_grad = tape.is_some();
        let (inputs, backward) = match tape {
            Some((inputs, backward)) => (inputs, Some(backward)),
            None => (Vec::new(), None),
        };
        self.nodes.push(Node {
            value: Some(value),
            param: None,
            inputs,
            backward,
            requires_grad,
            retained: false,
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
