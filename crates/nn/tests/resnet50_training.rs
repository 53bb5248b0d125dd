//! The whole network runs forward and backward, trains, freezes, and keeps
//! Keras's batchnorm statistics rules.

use autograd::{ops, Graph, Mode, ParamKind, ParamStore};
use nn::freeze::{self, Freeze};
use nn::layers::VarianceUpdate;
use nn::{Model, ResNet, ResNetConfig};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tensor::Tensor;

fn batch(n: usize, size: usize, seed: u64) -> Tensor {
    let mut rng = StdRng::seed_from_u64(seed);
    let data = (0..n * size * size * 3)
        .map(|_| rng.gen_range(0.0..1.0))
        .collect();
    Tensor::from_vec(&[n, size, size, 3], data).unwrap()
}

fn narrow(num_classes: usize) -> ResNetConfig {
    ResNetConfig {
        stem_filters: 8,
        depths: vec![2, 1, 1, 1],
        widths: vec![4, 8, 8, 16],
        num_classes: Some(num_classes),
        ..ResNetConfig::resnet50(None)
    }
}

/// One training step: the loss and the gradients, with the new statistics applied.
fn step(model: &ResNet, store: &mut ParamStore, x: &Tensor, labels: &[usize], lr: f32) -> f32 {
    let (loss, grads, stats) = {
        let mut g = Graph::new(store, Mode::TRAIN);
        let xv = g.input(x.clone());
        let out = model.forward(&mut g, xv).unwrap();
        let loss = ops::softmax_cross_entropy(&mut g, out.logits.unwrap(), labels);
        let value = g.value(loss).item();
        let grads = g.backward(loss);
        let grads: Vec<_> = grads.params().map(|(id, t)| (id, t.clone())).collect();
        (value, grads, g.take_stat_updates())
    };
    store.apply_stat_updates(stats);
    for (id, grad) in grads {
        let w = store.value_mut(id);
        w.data_mut()
            .iter_mut()
            .zip(grad.data())
            .for_each(|(w, g)| *w -= lr * g);
    }
    loss
}

/// Ops write into unzeroed buffers: poisoned, anything left unwritten is NaN.
fn poison() {
    tensor::buffer_pool::poison_recycled(true);
}

#[test]
fn full_resnet50_forward_and_backward_at_batch_64() {
    poison();
    let (model, store) = ResNet::new(ResNetConfig::resnet50(Some(10))).unwrap();
    let x = batch(64, 32, 1);
    let labels: Vec<usize> = (0..64).map(|i| i % 10).collect();
    let mut g = Graph::new(&store, Mode::TRAIN);
    let xv = g.input(x);
    let out = model.forward(&mut g, xv).unwrap();
    // The shapes through the network at 32x32 (see docs/residual-nets.md).
    for (name, shape) in [
        ("conv1_relu", [64, 16, 16, 64]),
        ("pool1_pool", [64, 8, 8, 64]),
        ("conv2_block3_out", [64, 8, 8, 256]),
        ("conv3_block4_out", [64, 4, 4, 512]),
        ("conv4_block6_out", [64, 2, 2, 1024]),
        ("conv5_block3_out", [64, 1, 1, 2048]),
    ] {
        assert_eq!(g.value(g.tapped(name).unwrap()).shape(), shape, "{name}");
    }
    assert_eq!(g.value(out.features).shape(), [64, 2048]);
    let loss = ops::softmax_cross_entropy(&mut g, out.logits.unwrap(), &labels);
    let l = g.value(loss).item();
    assert!(l.is_finite() && l > 0.0);
    let grads = g.backward(loss);
    for (id, p) in store.iter() {
        let grad = grads.param(id);
        if p.kind == ParamKind::Weight {
            let grad = grad.unwrap_or_else(|| panic!("no gradient for {}", p.name));
            assert_eq!(grad.shape(), p.value.shape(), "{}", p.name);
            assert!(grad.data().iter().all(|v| v.is_finite()), "{}", p.name);
        } else {
            assert!(grad.is_none(), "statistic {} got a gradient", p.name);
        }
    }
}

#[test]
fn narrow_network_loss_falls_on_a_fixed_batch() {
    poison();
    let (model, mut store) = ResNet::new(narrow(4)).unwrap();
    let x = batch(8, 32, 2);
    let labels = [0, 1, 2, 3, 0, 1, 2, 3];
    let first = step(&model, &mut store, &x, &labels, 0.05);
    let mut last = first;
    for _ in 0..15 {
        last = step(&model, &mut store, &x, &labels, 0.05);
    }
    assert!(last < 0.5 * first, "loss went from {first} to {last}");
}

#[test]
fn frozen_weights_get_no_gradient_and_frozen_bn_keeps_its_statistics() {
    poison();
    let (model, mut store) = ResNet::new(narrow(3)).unwrap();
    let frozen = freeze::apply(&mut store, &model, Freeze::Through(2));
    assert!(frozen > 0);
    let x = batch(4, 32, 3);
    let mut g = Graph::new(&store, Mode::TRAIN);
    let xv = g.input(x);
    let out = model.forward(&mut g, xv).unwrap();
    let loss = ops::softmax_cross_entropy(&mut g, out.logits.unwrap(), &[0, 1, 2, 0]);
    let grads = g.backward(loss);
    let updated: Vec<String> = g
        .take_stat_updates()
        .iter()
        .map(|u| store.get(u.id).name.clone())
        .collect();
    for (id, p) in store.iter() {
        let in_frozen_stage = p.name.starts_with("conv1_") || p.name.starts_with("conv2_");
        if p.kind == ParamKind::Weight {
            assert_eq!(grads.param(id).is_some(), !in_frozen_stage, "{}", p.name);
        } else {
            assert_eq!(updated.contains(&p.name), !in_frozen_stage, "{}", p.name);
        }
    }
    // Feature extraction: only the head learns.
    freeze::apply(&mut store, &model, Freeze::Base);
    let trainable: Vec<_> = store
        .iter()
        .filter(|(_, p)| p.trainable && p.kind == ParamKind::Weight)
        .collect();
    assert_eq!(trainable.len(), 2);
}

#[test]
fn moving_statistics_follow_keras() {
    poison();
    for update in [VarianceUpdate::Biased, VarianceUpdate::Unbiased] {
        let config = ResNetConfig {
            variance_update: update,
            ..narrow(2)
        };
        let (model, mut store) = ResNet::new(config).unwrap();
        let x = batch(2, 32, 4);
        let mode = Mode {
            layer_outputs: true,
            ..Mode::TRAIN
        };
        let mut g = Graph::new(&store, mode);
        let xv = g.input(x);
        model.forward(&mut g, xv).unwrap();
        // The batch statistics of conv1_conv's output, by hand.
        let conv = g.value(g.tapped("conv1_conv").unwrap()).clone();
        let stats = g.take_stat_updates();
        drop(g);
        let c = 8;
        let m = conv.numel() / c;
        let ch0: Vec<f64> = conv.data().iter().step_by(c).map(|&v| v as f64).collect();
        let mean = ch0.iter().sum::<f64>() / m as f64;
        let var = ch0.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / m as f64;
        let var = match update {
            VarianceUpdate::Biased => var,
            VarianceUpdate::Unbiased => var * m as f64 / (m - 1) as f64,
        };
        store.apply_stat_updates(stats);
        let got_mean = store
            .value(store.id("conv1_bn/moving_mean").unwrap())
            .data()[0] as f64;
        let got_var = store
            .value(store.id("conv1_bn/moving_variance").unwrap())
            .data()[0] as f64;
        // moving = 0.99 * moving + 0.01 * batch, from mean 0 and variance 1.
        assert!(
            (got_mean - 0.01 * mean).abs() < 1e-6,
            "{update:?} mean {got_mean} vs {}",
            0.01 * mean
        );
        assert!(
            (got_var - (0.99 + 0.01 * var)).abs() < 1e-6,
            "{update:?} var {got_var}"
        );
    }
}

#[test]
fn inference_mode_records_nothing_and_uses_moving_statistics() {
    poison();
    let (model, store) = ResNet::new(narrow(2)).unwrap();
    let mut g = Graph::new(&store, Mode::PROBE);
    let xv = g.input(batch(1, 32, 5));
    let out = model.forward(&mut g, xv).unwrap();
    assert!(g.take_stat_updates().is_empty());
    assert!(!g.requires_grad(out.logits.unwrap()));
    // Fresh statistics (mean 0, variance 1) make conv1_bn nearly the identity.
    let conv = g.value(g.tapped("conv1_conv").unwrap()).data().to_vec();
    let bn = g.value(g.tapped("conv1_bn").unwrap()).data().to_vec();
    for (a, b) in conv.iter().zip(&bn) {
        assert!((a / (1.0f32 + 1.001e-5).sqrt() - b).abs() < 1e-6);
    }
}

#[test]
fn wrong_input_shape_is_an_error_naming_both_shapes() {
    poison();
    let (model, store) = ResNet::new(narrow(2)).unwrap();
    let mut g = Graph::new(&store, Mode::INFER);
    let xv = g.input(Tensor::zeros(&[2, 32, 32, 1]));
    let err = model.forward(&mut g, xv).err().unwrap().to_string();
    assert!(
        err.contains("[2, 32, 32, 1]") && err.contains("[N, 32, 32, 3]"),
        "{err}"
    );
}

#[test]
fn inference_frees_intermediates_without_changing_the_result() {
    poison();
    let (model, store) = ResNet::new(narrow(3)).unwrap();
    let x = batch(2, 32, 6);
    let run = |mode: Mode| {
        let mut g = Graph::new(&store, mode);
        let xv = g.input(x.clone());
        let out = model.forward(&mut g, xv).unwrap();
        let tapped: Vec<String> = g.tap_names().map(String::from).collect();
        (
            g.value(out.logits.unwrap()).clone(),
            g.live_values(),
            tapped,
        )
    };
    let (kept, live_kept, tapped_kept) = run(Mode::PROBE);
    let (freed, live_freed, tapped_freed) = run(Mode::INFER);
    assert_eq!(kept, freed);
    // The features and the logits are all that stay alive (the stem's
    // stage frees the input too).
    assert_eq!(live_freed, 2, "values alive after an inference pass");
    assert_eq!(tapped_freed, ["avg_pool", "predictions"]);
    // Probing keeps every Keras layer: the stem's 6, each block's 10 (12
    // with a projection shortcut), the pool and the head.
    let blocks = 2 + 1 + 1 + 1;
    let layers = 6 + 10 * blocks + 2 * 4 + 2;
    assert_eq!(tapped_kept.len(), layers, "{tapped_kept:?}");
    assert_eq!(live_kept, layers, "every layer output, and nothing else");
}
