//! The numeric core of the engine: f32 tensors and the kernels that compute on
//! them. Images are NHWC, conv kernels HWIO, dense kernels `[in, out]`.
//! Nothing here knows about gradients: `autograd` pairs these kernels into
//! forward/backward ops.
//!
//! Every fast kernel has a naive twin in [`reference`](mod@reference) that it is tested against.
//!
//! The error contract, the same in every crate: a kernel (and an autograd
//! op) *asserts* its preconditions, since a buffer of the wrong length is a
//! bug in the code that called it; what comes from outside (a tensor built
//! from user data, a geometry from a layer's configuration, a weights file,
//! a batch of images) is checked where it enters, by the constructors here
//! ([`Tensor::from_vec`], [`ConvGeometry::validate`]) and by the layers and
//! I/O above, which return errors naming the file, tensor, value or shape at
//! fault.

pub mod batch_norm;
pub mod bf16;
pub mod buffer_pool;
pub mod conv;
pub mod conv_by_position;
pub mod elementwise;
pub mod epilogue;
pub mod error;
pub mod gemm;
mod gemm_blocking;
pub mod geometry;
mod microkernel;
mod microkernel_amx;
mod microkernel_bf16;
pub mod pool;
pub mod reference;
mod scratch;
pub mod tensor;
pub mod testing;
pub mod threads;

pub use epilogue::Epilogue;
pub use error::{Result, TensorError};
pub use gemm::{
    sgemm, sgemm_bias, sgemm_serial, sgemm_serial_bias, sgemm_strided, Kernel, MatRef, Precision,
    Trans,
};
pub use geometry::{ConvGeometry, Padding, PoolGeometry};
pub use tensor::Tensor;
pub use threads::{num_threads, set_num_threads};
