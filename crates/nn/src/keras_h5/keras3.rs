//! Keras 3 `.weights.h5` (`model.save_weights('x.weights.h5')`).
//!
//! Layers are keyed by snake-cased class and ordinal, not by name:
//! `layers/conv2d_3/vars/0` is the kernel of the fourth `Conv2D`, and a
//! nested model's layers sit under its own key (`layers/functional/layers/...`).
//! Keras 3.15 writes each layer's name as a `name` attribute of its `vars`
//! group, which is used when every weighted layer has one. Files without it
//! are mapped by re-deriving Keras's layer order for a ResNet (V1)
//! (`tools/README.md`, "Keras 3 layer order"): the loader then checks every
//! name and shape against the model, so a file that only resembles that
//! pattern still fails loudly.

use super::h5::{self, bail, Result};
use super::{Layout, Tensors};
use hdf5_reader::Hdf5File;

/// One weighted layer of the file.
struct Entry {
    /// Path of the layers group that holds it (one per (sub)model).
    container: String,
    /// `conv2d` of `conv2d_3`.
    class: String,
    /// `3` of `conv2d_3` (`0` without a suffix).
    ordinal: usize,
    /// Its `name` attribute, or the name derived from the layer order.
    name: Option<String>,
    /// Paths of its variables, in order (`vars/0`, `vars/1`, ...).
    vars: Vec<String>,
}

/// Splits `conv2d_3` into (`conv2d`, 3), `dense` into (`dense`, 0).
fn class_and_ordinal(key: &str) -> (String, usize) {
    match key.rsplit_once('_') {
        Some((class, n)) if !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()) => {
            (class.to_string(), n.parse().unwrap_or(usize::MAX))
        }
        _ => (key.to_string(), 0),
    }
}

/// Walks `<path>/layers/<key>` recursively, collecting weighted layers.
fn collect(file: &Hdf5File, path: &str, found: &mut Vec<Entry>) -> Result<()> {
    let layers = h5::join(path, "layers");
    let (keys, _) = h5::members(file, &layers)?;
    for key in keys {
        let layer = h5::join(&layers, &key);
        let (children, _) = h5::members(file, &layer)?;
        if children.iter().any(|c| c == "vars") {
            let vars = h5::join(&layer, "vars");
            let (_, datasets) = h5::members(file, &vars)?;
            if !datasets.is_empty() {
                let mut idx = Vec::with_capacity(datasets.len());
                for d in &datasets {
                    match d.parse::<usize>() {
                        Ok(i) => idx.push(i),
                        Err(_) => bail!("{vars}: variable '{d}' is not numbered 0, 1, ..."),
                    }
                }
                idx.sort_unstable();
                let name = match h5::string_attr(&h5::attributes(file, &vars)?, &vars, "name")? {
                    Some(n) => Some(n),
                    None => h5::string_attr(&h5::attributes(file, &layer)?, &layer, "name")?,
                };
                let (class, ordinal) = class_and_ordinal(&key);
                found.push(Entry {
                    container: layers.clone(),
                    class,
                    ordinal,
                    name,
                    vars: idx
                        .iter()
                        .map(|i| h5::join(&vars, &i.to_string()))
                        .collect(),
                });
            }
        }
        if children.iter().any(|c| c == "layers") {
            collect(file, &layer, found)?;
        }
    }
    Ok(())
}

/// The weight names of a layer class with `n` variables, in Keras's order.
fn weight_names(class: &str, n: usize) -> Option<&'static [&'static str]> {
    match (class, n) {
        ("conv2d", 2) | ("dense", 2) => Some(&["kernel", "bias"]),
        // A convolution without bias (`use_bias=False`, as in ResNet V2).
        ("conv2d", 1) | ("dense", 1) => Some(&["kernel"]),
        ("batch_normalization", 4) => Some(&["gamma", "beta", "moving_mean", "moving_variance"]),
        _ => None,
    }
}

/// Reads every weight of a Keras 3 weights file.
pub(crate) fn read(file: &Hdf5File) -> Result<(Tensors, Layout)> {
    let mut found = Vec::new();
    collect(file, "/", &mut found)?;
    if found.is_empty() {
        bail!("a Keras 3 weights file with no weighted layers under 'layers/'");
    }
    let named = found.iter().filter(|e| e.name.is_some()).count();
    let mapped_by_order = named == 0;
    if mapped_by_order {
        name_by_layer_order(file, &mut found)?;
    } else if named < found.len() {
        let first = found
            .iter()
            .find(|e| e.name.is_none())
            .expect("one unnamed");
        bail!(
            "only some Keras 3 layers carry a 'name' attribute ({}/{}_{} has none); cannot map them safely",
            first.container, first.class, first.ordinal
        );
    }
    let mut tensors = Tensors::new();
    for e in &found {
        let layer = e.name.as_deref().expect("named above");
        let Some(weights) = weight_names(&e.class, e.vars.len()) else {
            bail!(
                "layer '{layer}' ({}: a {} with {} variables) is not a layer of a Keras ResNet",
                e.vars[0].rsplit_once("/vars").map_or("", |(p, _)| p),
                e.class,
                e.vars.len()
            );
        };
        for (w, path) in weights.iter().zip(&e.vars) {
            tensors.insert(file, format!("{layer}/{w}"), path)?;
        }
    }
    Ok((tensors, Layout::keras3(mapped_by_order)))
}

/// The weighted layer names of a ResNet V1 with these blocks per stage, in
/// Keras's layer order, convolutions only (batchnorm `i` follows conv `i`).
///
/// Keras orders a functional model's layers by graph depth: in a projection
/// block the shortcut's `_0_conv` sits at the depth of `_3_conv` and is
/// listed before it.
fn resnet_conv_order(depths: &[usize]) -> Vec<String> {
    let mut names = vec!["conv1_conv".to_string()];
    for (s, &depth) in depths.iter().enumerate() {
        for b in 1..=depth {
            let p = format!("conv{}_block{b}", s + 2);
            let branches: &[u8] = if b == 1 { &[1, 2, 0, 3] } else { &[1, 2, 3] };
            names.extend(branches.iter().map(|i| format!("{p}_{i}_conv")));
        }
    }
    names
}

/// Names anonymous layers from their class ordinals (see the module docs):
/// the blocks per stage come from the conv kernel sizes, 7 for the stem,
/// then 1, 3, 1 per block with one more 1x1 (the projection) in a stage's
/// first block.
fn name_by_layer_order(file: &Hdf5File, found: &mut [Entry]) -> Result<()> {
    let why = "cannot map the Keras 3 file by layer order (it has no 'name' attributes)";
    if let Some(e) = found
        .iter()
        .find(|e| !matches!(e.class.as_str(), "conv2d" | "batch_normalization" | "dense"))
    {
        bail!(
            "{why}: it has a layer of class '{}', which a Keras ResNet does not",
            e.class
        );
    }
    if found.iter().any(|e| e.container != found[0].container) {
        bail!("{why}: its layers are spread over several sub-models");
    }
    let of_class = |class: &str| -> Result<Vec<usize>> {
        let mut idx: Vec<usize> = (0..found.len())
            .filter(|&i| found[i].class == class)
            .collect();
        idx.sort_by_key(|&i| found[i].ordinal);
        if idx.iter().enumerate().any(|(k, &i)| found[i].ordinal != k) {
            bail!("{why}: its {class} ordinals are not 0, 1, 2, ...");
        }
        Ok(idx)
    };
    let convs = of_class("conv2d")?;
    let bns = of_class("batch_normalization")?;
    let dense = of_class("dense")?;
    if dense.len() > 1 {
        bail!(
            "{why}: it has {} dense layers, a ResNet at most one",
            dense.len()
        );
    }
    let mut ks = Vec::with_capacity(convs.len());
    for &i in &convs {
        match h5::shape(file, &found[i].vars[0])?[..] {
            [k, _, _, _] => ks.push(k),
            ref s => bail!(
                "{why}: {} has shape {s:?}, not a 4-D conv kernel",
                found[i].vars[0]
            ),
        }
    }
    if ks.first() != Some(&7) {
        bail!("{why}: its first convolution is not the 7x7 stem");
    }
    let mut depths: Vec<usize> = Vec::new();
    let mut i = 1;
    while i < ks.len() {
        if ks.get(i..i + 3) != Some(&[1, 3, 1]) {
            bail!("{why}: conv kernel sizes {ks:?} do not follow the ResNet bottleneck pattern");
        }
        let projection = ks.get(i + 3) == Some(&1) && ks.get(i + 4) != Some(&3);
        if projection {
            depths.push(1);
            i += 4;
        } else {
            match depths.last_mut() {
                Some(d) => *d += 1,
                None => bail!("{why}: its first block has no projection shortcut"),
            }
            i += 3;
        }
    }
    let conv_names = resnet_conv_order(&depths);
    if conv_names.len() != convs.len() || bns.len() != convs.len() {
        bail!(
            "{why}: {} conv2d and {} batch_normalization layers do not fit a ResNet with blocks {depths:?}",
            convs.len(),
            bns.len()
        );
    }
    for ((&c, &b), name) in convs.iter().zip(&bns).zip(&conv_names) {
        found[c].name = Some(name.clone());
        found[b].name = Some(format!("{}_bn", name.trim_end_matches("_conv")));
    }
    for &d in &dense {
        found[d].name = Some("predictions".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        assert_eq!(class_and_ordinal("conv2d_3"), ("conv2d".into(), 3));
        assert_eq!(
            class_and_ordinal("batch_normalization"),
            ("batch_normalization".into(), 0)
        );
    }

    #[test]
    fn resnet50_layer_order() {
        // tools/README.md: conv2d = conv1_conv, conv2d_1 = conv2_block1_1_conv,
        // conv2d_2 = _2_conv, conv2d_3 = conv2_block1_0_conv, conv2d_4 = _3_conv.
        let order = resnet_conv_order(&[3, 4, 6, 3]);
        assert_eq!(order.len(), 53);
        assert_eq!(
            &order[..6],
            &[
                "conv1_conv",
                "conv2_block1_1_conv",
                "conv2_block1_2_conv",
                "conv2_block1_0_conv",
                "conv2_block1_3_conv",
                "conv2_block2_1_conv"
            ]
        );
        assert_eq!(order[52], "conv5_block3_3_conv");
    }
}
