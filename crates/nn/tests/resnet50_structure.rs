//! Our ResNet50 against the weight list Keras itself produced
//! (`tests/fixtures/keras_resnet50_params.txt`, made by
//! `tools/list_keras_params.py`): every name, every shape, the count.

use autograd::ParamKind;
use nn::{Model, ResNet, ResNetConfig, ResNetV2};
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

/// A configured batchnorm momentum reaches every batchnorm of ResNet50 and
/// ResNet50V2: as many as the store has moving means (53 and 49, Keras's
/// counts), each with momentum 0.9; the default is Keras's 0.99.
#[test]
fn bn_momentum_reaches_every_batchnorm() {
    let config = ResNetConfig {
        bn_momentum: 0.9,
        ..ResNetConfig::resnet50(None)
    };
    let moving_means = |store: &autograd::ParamStore| {
        store
            .iter()
            .filter(|(_, p)| p.name.ends_with("/moving_mean"))
            .count()
    };
    let (v1, store) = ResNet::new(config.clone()).unwrap();
    let (v2, store_v2) = ResNetV2::new(config).unwrap();
    for (model, store, count) in [
        (&v1 as &dyn Model, store, 53),
        (&v2 as &dyn Model, store_v2, 49),
    ] {
        let bns = model.batch_norms();
        assert_eq!(bns.len(), count, "{}", model.name());
        assert_eq!(moving_means(&store), count, "{}", model.name());
        for bn in bns {
            assert_eq!(bn.momentum, 0.9, "{}", bn.name);
        }
    }
    let (default, _) = ResNet::new(ResNetConfig::resnet50(None)).unwrap();
    assert!(default.batch_norms().iter().all(|bn| bn.momentum == 0.99));
    let bad = ResNetConfig {
        bn_momentum: 1.0,
        ..ResNetConfig::resnet50(None)
    };
    let err = ResNet::new(bad).unwrap_err().to_string();
    assert!(err.contains("momentum 1 must be in [0, 1)"), "{err}");
}
