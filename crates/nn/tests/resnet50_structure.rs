//! Our ResNet50 against the weight list Keras itself produced
//! (`tests/fixtures/keras_resnet50_params.txt`, made by
//! `tools/list_keras_params.py`): every name, every shape, the count.

use autograd::ParamKind;
use nn::{ResNet, ResNetConfig};
use std::collections::BTreeMap;

fn keras_params() -> (BTreeMap<String, Vec<usize>>, usize) {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/keras_resnet50_params.txt"
    );
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut count = 0;
    let mut params = BTreeMap::new();
    for line in text.lines() {
        if let Some(c) = line.strip_prefix("# count_params ") {
            count = c.parse().unwrap();
        } else if !line.starts_with('#') {
            let (name, shape) = line.split_once(' ').unwrap();
            params.insert(
                name.to_string(),
                shape.split(',').map(|d| d.parse().unwrap()).collect(),
            );
        }
    }
    (params, count)
}

#[test]
fn names_shapes_and_count_match_keras() {
    let (keras, keras_count) = keras_params();
    let (_, store) = ResNet::new(ResNetConfig::resnet50(None)).unwrap();
    let ours: BTreeMap<String, Vec<usize>> = store
        .iter()
        .map(|(_, p)| (p.name.clone(), p.value.shape().to_vec()))
        .collect();
    for (name, shape) in &keras {
        assert_eq!(ours.get(name), Some(shape), "Keras weight {name} {shape:?}");
    }
    for name in ours.keys() {
        assert!(keras.contains_key(name), "{name} is not a Keras weight");
    }
    assert_eq!(keras_count, 23_587_712);
    assert_eq!(store.num_scalars(), keras_count);
    let statistics: usize = store
        .iter()
        .filter(|(_, p)| p.kind == ParamKind::Statistic)
        .map(|(_, p)| p.value.numel())
        .sum();
    assert_eq!(statistics, 53_120);
}

#[test]
fn head_adds_predictions() {
    let (_, store) = ResNet::new(ResNetConfig::resnet50(Some(10))).unwrap();
    let w = store.id("predictions/kernel").unwrap();
    assert_eq!(store.value(w).shape(), [2048, 10]);
    assert_eq!(store.num_scalars(), 23_587_712 + 2048 * 10 + 10);
}

#[test]
fn rejects_bad_configs() {
    let mut c = ResNetConfig::resnet50(None);
    c.input_size = 31;
    assert!(ResNet::new(c)
        .unwrap_err()
        .to_string()
        .contains("minimum of 32"));
    let mut c = ResNetConfig::resnet50(None);
    c.depths.pop();
    assert!(ResNet::new(c).is_err());
}
