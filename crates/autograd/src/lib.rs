//! Reverse-mode automatic differentiation over the `tensor` kernels.
//!
//! A [`Graph`] records, op by op, the values of one forward pass and a
//! backward closure for each ([`graph`]); the ops themselves live in
//! [`ops`], one file each, forward above backward. Parameters live outside
//! any graph, by name, in a [`ParamStore`]. [`gradcheck`] compares every
//! backward with central finite differences.

pub mod gradcheck;
pub mod graph;
pub mod ops;
pub mod params;

pub use graph::{Backward, BackwardCtx, Gradients, Graph, Mode, OpInfo, OpTiming, Profile, Var};
pub use params::{Param, ParamError, ParamId, ParamKind, ParamStore, StatUpdate};
