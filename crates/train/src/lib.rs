//! Library side of the `train` binary: CIFAR-10 data pipeline, optimizers and
//! schedules, metrics and reports, and crash-safe checkpoint I/O.
//!
//! Each module has one job and knows nothing about the network; the binary
//! (`main.rs`) wires them to the model and the training loop.

pub mod checkpoint_io;
pub mod data;
pub mod evaluate;
pub mod fetch;
pub mod metrics;
pub mod model_spec;
pub mod optim;
pub mod report;
pub mod run_config;
pub mod run_state;
pub mod trainer;
