//! Library side of the `train` binary: CIFAR-10 data pipeline, optimizers and
//! schedules, the training loop with its callbacks ([`fit()`]), metrics and
//! reports, saving and resuming runs (over `nn::checkpoint`), and fetching
//! CIFAR-10 and Keras weights into a verified cache ([`fetch`]).
//!
//! A program trains with [`fit()`] on its own [`trainer::Trainer`] and data
//! (see `examples/finetune_folder.rs`); the `train` command runs a whole
//! configured run directory through [`run::train`].

pub mod clip;
pub mod data;
pub mod ema;
pub mod evaluate;
pub mod fetch;
pub mod fit;
pub mod metrics;
pub mod model_spec;
pub mod optim;
pub mod recipe;
pub mod report;
pub mod run;
pub mod run_config;
pub mod run_dir;
pub mod run_state;
#[doc(hidden)]
pub mod test_hook;
pub mod trainer;
pub mod weights_choice;

pub use fit::fit;
