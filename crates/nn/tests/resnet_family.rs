//! The six ResNets of `keras.applications` (50, 101, 152 and their V2
//! counterparts) against the lists Keras itself produced
//! (`tests/fixtures/keras_<model>_params.txt` and `keras_<model>_layers.txt`,
//! made by `tools/list_keras_params.py` with tf_keras 2.21, no top, 32x32):
//! every weight's name and shape and the parameter count, then every layer's
//! name and output shape, i.e. the topology.

use autograd::{Graph, Mode, ParamStore};
use nn::{Model, ModelError, ResNet, ResNetConfig, ResNetV2};
use std::collections::BTreeMap;
use tensor::Tensor;

/// Keras's name, whether it is V2, its configuration without a head, and
/// Keras's `count_params()`.
const FAMILY: [(&str, bool, [usize; 4], usize); 6] = [
    ("resnet50", false, [3, 4, 6, 3], 23_587_712),
    ("resnet101", false, [3, 4, 23, 3], 42_658_176),
    ("resnet152", false, [3, 8, 36, 3], 58_370_944),
    ("resnet50v2", true, [3, 4, 6, 3], 23_564_800),
    ("resnet101v2", true, [3, 4, 23, 3], 42_626_560),
    ("resnet152v2", true, [3, 8, 36, 3], 58_331_648),
];

fn fixture(file: &str) -> String {
    let path = format!("{}/../../tests/fixtures/{file}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// `name shape [extra]` lines, `#` comments skipped; `# count_params N` read.
fn keras_list(file: &str) -> (BTreeMap<String, Vec<usize>>, Option<usize>) {
    let mut count = None;
    let mut entries = BTreeMap::new();
    for line in fixture(file).lines() {
        if let Some(c) = line.strip_prefix("# count_params ") {
            count = Some(c.parse().unwrap());
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split(' ').collect();
        // Weights: `name shape`; layers: `name class shape [keras_name=...]`.
        let shape = if file.ends_with("_params.txt") {
            fields[1]
        } else {
            fields[2]
        };
        let shape = shape.split(',').map(|d| d.parse().unwrap()).collect();
        assert!(
            entries.insert(fields[0].to_string(), shape).is_none(),
            "{file}: {} twice",
            fields[0]
        );
    }
    (entries, count)
}

fn build(v2: bool, config: ResNetConfig) -> Result<(Box<dyn Model>, ParamStore), ModelError> {
    Ok(if v2 {
        let (m, s) = ResNetV2::new(config)?;
        (Box::new(m), s)
    } else {
        let (m, s) = ResNet::new(config)?;
        (Box::new(m), s)
    })
}

fn config(depths: [usize; 4]) -> ResNetConfig {
    ResNetConfig::with_depths(&depths, None)
}

/// The named constructors are the table's configurations.
#[test]
fn named_configurations() {
    assert_eq!(ResNetConfig::resnet50(None), config([3, 4, 6, 3]));
    assert_eq!(ResNetConfig::resnet101(None), config([3, 4, 23, 3]));
    assert_eq!(ResNetConfig::resnet152(Some(7)).depths, [3, 8, 36, 3]);
    assert_eq!(ResNetConfig::resnet152(Some(7)).num_classes, Some(7));
}

#[test]
fn weight_names_shapes_and_counts_match_keras() {
    for (name, v2, depths, count) in FAMILY {
        let (keras, keras_count) = keras_list(&format!("keras_{name}_params.txt"));
        assert_eq!(keras_count, Some(count), "{name}: the fixture's count");
        let (model, store) = build(v2, config(depths)).unwrap();
        assert_eq!(model.name(), name);
        let ours: BTreeMap<String, Vec<usize>> = store
            .iter()
            .map(|(_, p)| (p.name.clone(), p.value.shape().to_vec()))
            .collect();
        for (w, shape) in &keras {
            assert_eq!(
                ours.get(w),
                Some(shape),
                "{name}: Keras weight {w} {shape:?}"
            );
        }
        for w in ours.keys() {
            assert!(keras.contains_key(w), "{name}: {w} is not a Keras weight");
        }
        assert_eq!(store.num_scalars(), count, "{name}: parameters");
    }
}

/// Every Keras layer, by name, with its output shape at 32x32, is a layer of
/// ours (an output tapped in a `Mode::PROBE` graph) with the same shape, and
/// ours has no layer Keras lacks but the pooling and head Keras leaves off
/// with `include_top=False`.
#[test]
fn layer_names_and_output_shapes_match_keras() {
    for (name, v2, depths, _) in FAMILY {
        let (keras, _) = keras_list(&format!("keras_{name}_layers.txt"));
        let (model, store) = build(v2, config(depths)).unwrap();
        let mut g = Graph::new(&store, Mode::PROBE);
        let x = g.input(Tensor::full(&[1, 32, 32, 3], 0.5));
        model.forward(&mut g, x).unwrap();
        let mut ours = BTreeMap::new();
        for layer in g.tap_names() {
            let shape = g.value(g.tapped(layer).unwrap()).shape()[1..].to_vec();
            assert!(
                ours.insert(layer.to_string(), shape).is_none(),
                "{name}: {layer} recorded twice"
            );
        }
        for (layer, shape) in &keras {
            assert_eq!(ours.get(layer), Some(shape), "{name}: Keras layer {layer}");
        }
        for layer in ours.keys() {
            assert!(
                keras.contains_key(layer) || layer == "avg_pool",
                "{name}: {layer} is not a Keras layer"
            );
        }
    }
}

#[test]
fn v2_stages_put_post_bn_in_the_last_stage() {
    let (model, store) = ResNetV2::new(ResNetConfig::resnet50(Some(10))).unwrap();
    assert_eq!(model.num_stages(), 5);
    for (_, p) in store.iter() {
        let expected = match p.name.as_str() {
            n if n.starts_with("conv1_") => Some(1),
            n if n.starts_with("post_bn/") => Some(5),
            n if n.starts_with("predictions/") => None,
            n => Some(n[4..5].parse().unwrap()),
        };
        assert_eq!(model.stage_of(&p.name), expected, "{}", p.name);
    }
}

#[test]
fn v2_rejects_one_block_stages() {
    let err = ResNetV2::new(ResNetConfig::with_depths(&[2, 1, 2, 2], None)).unwrap_err();
    assert!(err.to_string().contains("at least 2 blocks"), "{err}");
    let mut c = ResNetConfig::resnet50(None);
    c.input_size = 31;
    assert!(ResNetV2::new(c)
        .unwrap_err()
        .to_string()
        .contains("minimum of 32"));
}

#[test]
fn v2_epsilon_is_keras_and_settable() {
    let (mut model, _) = ResNetV2::new(ResNetConfig::resnet50(None)).unwrap();
    assert_eq!(model.bn_epsilon(), 1.001e-5);
    model.set_bn_epsilon(1e-3);
    assert!(model
        .blocks
        .iter_mut()
        .all(|b| b.batch_norms_mut().iter().all(|bn| bn.epsilon == 1e-3)));
    assert_eq!(model.bn_epsilon(), 1e-3);
}

/// V2 runs as stages too: in inference only the features and the logits
/// survive the pass, and the result is the layer-by-layer probe's.
#[test]
fn v2_inference_frees_intermediates_without_changing_the_result() {
    tensor::buffer_pool::poison_recycled(true);
    let config = ResNetConfig {
        stem_filters: 8,
        depths: vec![2, 2, 2, 2],
        widths: vec![4, 8, 8, 16],
        num_classes: Some(10),
        ..ResNetConfig::resnet50(None)
    };
    let (model, store) = ResNetV2::new(config).unwrap();
    let x = Tensor::from_vec(
        &[2, 32, 32, 3],
        (0..2 * 32 * 32 * 3)
            .map(|i| (i % 17) as f32 / 17.0)
            .collect(),
    )
    .unwrap();
    let run = |mode: Mode| {
        let mut g = Graph::new(&store, mode);
        let xv = g.input(x.clone());
        let out = model.forward(&mut g, xv).unwrap();
        let tapped: Vec<String> = g.tap_names().map(String::from).collect();
        let logits = g.value(out.logits.unwrap()).clone();
        (logits, g.live_values(), tapped)
    };
    let (kept, live_kept, tapped_kept) = run(Mode::PROBE);
    let (freed, live_freed, tapped_freed) = run(Mode::INFER);
    assert_eq!(kept, freed);
    assert_eq!(live_freed, 2, "values alive after an inference pass");
    assert_eq!(tapped_freed, ["avg_pool", "predictions"]);
    // The stem's 4 layers; each block's 11, plus its `_0_conv` or `_0_pool`
    // (all but conv5_block2); post_bn, post_relu; the pool and the head.
    let layers = 4 + 11 * 8 + 7 + 2 + 2;
    assert_eq!(tapped_kept.len(), layers, "{tapped_kept:?}");
    assert_eq!(live_kept, layers, "every layer output, and nothing else");
}
