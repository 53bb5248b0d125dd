//! What `--weights` asks for, and the file it comes to.
//!
//! The tutorial starts from Keras's ImageNet weights, which Keras finds in
//! its cache or downloads. So does the main job here: with no `--weights`
//! (`auto`), a Keras architecture starts from its ImageNet weights when
//! they can be found or fetched ([`crate::fetch::keras_weights`]), and
//! from Keras's initialization, said in one line, when they cannot.
//! `imagenet` insists (no weights is an error), `none` never looks, and
//! anything else is a weights file (safetensors or Keras `.h5`).

use crate::fetch;
use crate::model_spec::ModelSpec;
use anyhow::{bail, Result};
use std::path::PathBuf;
use std::str::FromStr;

/// The value of `--weights`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WeightsChoice {
    /// ImageNet weights when they can be had, else Keras initialization.
    Auto,
    /// ImageNet weights, or an error.
    ImageNet,
    /// Keras initialization.
    None,
    /// This file.
    File(PathBuf),
}

impl FromStr for WeightsChoice {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "auto" => WeightsChoice::Auto,
            "imagenet" => WeightsChoice::ImageNet,
            "none" => WeightsChoice::None,
            path => WeightsChoice::File(path.into()),
        })
    }
}

/// The ImageNet weights Keras publishes for `spec`'s architecture, by
/// Keras's model name: only the unmodified Keras architectures have them.
fn keras_architecture(spec: &ModelSpec) -> Option<String> {
    let stock = ModelSpec::resnet50(None);
    let unmodified = spec.widths == stock.widths && spec.stem_filters == stock.stem_filters;
    let name = spec.name();
    (unmodified && fetch::keras_weights_known(&name)).then_some(name)
}

/// Resolves `choice` for a model `spec` to the weights file to start from
/// (`None`: Keras initialization), printing where it came from.
pub fn resolve(choice: &WeightsChoice, spec: &ModelSpec) -> Result<Option<PathBuf>> {
    let file = match choice {
        WeightsChoice::None => None,
        // Absolute, so config.json names the file from any directory.
        WeightsChoice::File(path) => Some(std::path::absolute(path).unwrap_or(path.clone())),
        WeightsChoice::ImageNet => {
            let Some(name) = keras_architecture(spec) else {
                bail!(
                    "--weights imagenet: Keras publishes ImageNet weights for its own ResNets \
                     only, not for this modified one ({})",
                    spec.name()
                );
            };
            let found = fetch::keras_weights(&name, false)?;
            println!("ImageNet weights: {found}");
            Some(found.path)
        }
        WeightsChoice::Auto => match keras_architecture(spec) {
            None => None,
            Some(name) => match fetch::keras_weights(&name, false) {
                Ok(found) => {
                    println!("ImageNet weights: {found}");
                    Some(found.path)
                }
                Err(e) => {
                    println!(
                        "ImageNet weights not available ({}); training from Keras's \
                         initialization with the same recipe (--weights none says so \
                         explicitly; --augment --lr-schedule cosine help from scratch)",
                        first_line(&e.to_string())
                    );
                    None
                }
            },
        },
    };
    if choice == &WeightsChoice::None || (file.is_none() && choice == &WeightsChoice::Auto) {
        println!("weights: Keras initialization ({})", spec.name());
    }
    Ok(file)
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}
