//! Files of named tensors: model weights, training checkpoints, probe
//! outputs. One safetensors codec over [`tensor::Tensor`], one error type,
//! one way to write a file atomically.
//!
//! - [`safetensors`]: the encoder and decoder (reads F32/F16/BF16/F64,
//!   writes F32) and [`TensorFile`], a decoded file whose lookups name it;
//! - [`weights`]: a model's parameters into and out of a [`ParamStore`]
//!   by Keras name, all-or-nothing;
//! - [`atomic`]: writes that a crash cannot leave half done;
//! - [`error`]: [`CheckpointError`], naming the file and the tensor.
//!
//! What a training run keeps beyond the weights (optimizer moments,
//! progress) is `train::run_state`'s, written with this codec.
//!
//! [`ParamStore`]: autograd::ParamStore

pub mod atomic;
pub mod error;
pub mod safetensors;
pub mod weights;

pub use self::atomic::{write_atomic, write_atomic_with};
pub use self::error::CheckpointError;
pub(crate) use self::safetensors::decode_f32;
pub use self::safetensors::{read_tensors, to_bytes, write, Metadata, NamedTensors, TensorFile};
pub use self::weights::{load, load_from, save, LoadReport, EPSILON_KEY};
