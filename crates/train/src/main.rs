//! `cargo run -p train --release`: fine-tune Keras's ResNet50 on CIFAR-10.
//!
//! With no arguments it runs the classic Keras recipe (Adam 1e-4, batch 64,
//! 10 epochs, inputs in [0, 1]) and ends with `Test accuracy: 0.xxxx`.
//! Subcommands: `train` (the default), `eval`, `predict`, `bench`, and the
//! `forward` / `grad` probes used for parity checks against Keras.

mod cli;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
