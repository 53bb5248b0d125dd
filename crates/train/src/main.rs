//! `cargo run -p train --release`: fine-tune Keras's ResNet50 on CIFAR-10.
//!
//! With no arguments it runs the classic Keras recipe (Adam 1e-4, batch 64,
//! 10 epochs, inputs in [0, 1]) and ends with `Test accuracy: 0.xxxx`.
//! Subcommands: `train` (the default), `eval`, `predict`, `bench`, and the
//! `forward` / `grad` probes used for parity checks against Keras.
//!
//! Exit codes: 0 success; 1 an error (the message names the value, file or
//! tensor); 130 a training run stopped by SIGINT, SIGTERM or SIGHUP after
//! saving its checkpoint (continue it with `--resume`), or while loading
//! its data, before anything was trained (nothing saved; a new run's
//! directory is removed again, a resumed run is left as it was).

mod cli;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => match e.downcast_ref::<cli::Interrupted>() {
            Some(stopped) => {
                eprintln!("{stopped}");
                ExitCode::from(cli::Interrupted::EXIT_CODE)
            }
            None => {
                eprintln!("error: {}", message(&e));
                ExitCode::FAILURE
            }
        },
    }
}

/// The error and its causes, each printed once: the error types of the
/// workspace put their I/O cause in their own message *and* report it as
/// their `source()` (so a library caller can match on it), and anyhow's
/// `{:#}` would print it twice ("x: No such file: No such file").
fn message(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let part = cause.to_string();
        if text.contains(&part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    text
}
