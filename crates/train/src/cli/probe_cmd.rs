//! The `forward` and `grad` probes: run a network loaded from Keras-named
//! weights on a stored batch and write what Keras would report, by Keras
//! layer and weight name, for `tools/keras_parity.py` to compare.

use super::{ForwardArgs, GradArgs};
use anyhow::{anyhow, bail, Result};
use autograd::{ops, Graph, Mode};
use nn::checkpoint::{self, read_tensors};
use nn::Model;
use std::collections::HashMap;
use std::path::Path;
use tensor::Tensor;
use train::model_spec::ModelSpec;

/// The one tensor named `name` in a safetensors file.
fn read_one(path: &Path, name: &str) -> Result<Tensor> {
    let (tensors, _) = read_tensors(path)?;
    tensors
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, t)| t)
        .ok_or_else(|| anyhow!("{}: no tensor named '{name}'", path.display()))
}

fn load(weights: &Path, x: &Tensor) -> Result<(Box<dyn Model>, autograd::ParamStore)> {
    let (tensors, _) = read_tensors(weights)?;
    let spec = ModelSpec::infer(&tensors).map_err(|e| anyhow!("{}: {e}", weights.display()))?;
    let size = x.shape().get(1).copied().unwrap_or(0);
    let (mut model, mut store) = spec.build(size, 0)?;
    model.load_weights(&mut store, weights, &[])?;
    model.check_input(x.shape())?;
    Ok((model, store))
}

fn write(path: &Path, out: &[(String, Tensor)]) -> Result<()> {
    let meta = HashMap::from([("producer".to_string(), "train probe".to_string())]);
    checkpoint::write(path, out.iter().map(|(n, t)| (n.as_str(), t)), &meta)?;
    Ok(())
}

pub fn forward(a: ForwardArgs) -> Result<()> {
    let x = read_one(&a.input, "x")?;
    let (model, store) = load(&a.weights, &x)?;
    // Every Keras layer its own op, and every output kept (`Mode::PROBE`),
    // with batch statistics if asked (no tape either way).
    let mode = Mode {
        training: a.training,
        ..Mode::PROBE
    };
    let mut g = Graph::new(&store, mode);
    let xv = g.input(x);
    let out = model.forward(&mut g, xv)?;
    let mut written = Vec::new();
    for name in &a.layers {
        let v = g.tapped(name).ok_or_else(|| {
            let known: Vec<&str> = g.tap_names().collect();
            anyhow!("no layer named '{name}'; layers are: {}", known.join(", "))
        })?;
        written.push((name.clone(), g.value(v).clone()));
    }
    written.push(("features".into(), g.value(out.features).clone()));
    if let Some(l) = out.logits {
        written.push(("logits".into(), g.value(l).clone()));
        written.push(("probs".into(), ops::softmax(g.value(l))));
    }
    write(&a.output, &written)?;
    println!("wrote {} tensors to {}", written.len(), a.output.display());
    Ok(())
}

pub fn grad(a: GradArgs) -> Result<()> {
    let x = read_one(&a.input, "x")?;
    let y = read_one(&a.labels, "y")?;
    let labels: Vec<usize> = y
        .data()
        .iter()
        .map(|&v| {
            if v < 0.0 || v.fract() != 0.0 {
                bail!("{}: label {v} is not a class index", a.labels.display());
            }
            Ok(v as usize)
        })
        .collect::<Result<_>>()?;
    let (model, store) = load(&a.weights, &x)?;
    let classes = model.num_classes().unwrap_or(0);
    if labels.len() != x.shape()[0] {
        bail!(
            "{}: {} labels for a batch of {}",
            a.labels.display(),
            labels.len(),
            x.shape()[0]
        );
    }
    if let Some(&bad) = labels.iter().find(|&&l| l >= classes) {
        bail!(
            "{}: label {bad} is not below the model's {classes} classes",
            a.labels.display()
        );
    }
    let mode = if a.frozen_bn {
        Mode::FROZEN_BN
    } else {
        Mode::TRAIN
    };
    let mut g = Graph::new(&store, mode);
    let xv = g.input(x);
    let out = model.forward(&mut g, xv)?;
    let logits = out
        .logits
        .ok_or_else(|| anyhow!("{}: no head (predictions/*)", a.weights.display()))?;
    let loss = ops::softmax_cross_entropy(&mut g, logits, &labels);
    let mut written = vec![("loss".to_string(), g.value(loss).clone().reshape(&[1])?)];
    let grads = g.backward(loss);
    for (id, p) in store.iter() {
        if let Some(t) = grads.param(id) {
            written.push((p.name.clone(), t.clone()));
        }
    }
    write(&a.output, &written)?;
    println!(
        "wrote the loss and {} gradients to {}",
        written.len() - 1,
        a.output.display()
    );
    Ok(())
}
