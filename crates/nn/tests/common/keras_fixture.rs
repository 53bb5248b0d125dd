//! Parity checks against a committed Keras fixture (`tests/fixtures/<dir>/`:
//! `weights.safetensors` written by Keras, `reference.safetensors` holding
//! its input `x`, labels `y`, layer outputs, logits, probabilities, loss,
//! gradients and updated moving statistics). One implementation for every
//! architecture: a test file names its fixture, builds its model and states
//! what differs (see [`Fixture`]).

use autograd::{ops, Graph, Mode, ParamStore};
use nn::checkpoint::{load, read_tensors};
use nn::layers::VarianceUpdate;
use nn::{Model, ResNetConfig};
use std::collections::HashMap;
use std::path::PathBuf;
use tensor::testing::check_tensor;
use tensor::Tensor;

/// What one fixture's model has that the checks count, so that a probe,
/// weight or statistic silently missing from either side fails the test.
pub struct Fixture {
    /// Directory under `tests/fixtures/`.
    pub dir: &'static str,
    /// Layer outputs the fixture records (under `infer/` and `train/`).
    pub probed_layers: usize,
    /// Trainable weights, each with a gradient in the fixture.
    pub trainable: usize,
    /// Batchnorms, each with two moving statistics in the fixture.
    pub batch_norms: usize,
    /// Whether this parameter's true gradient is zero in training mode:
    /// both engines then hold only rounding noise, which is checked to be
    /// noise instead of compared.
    pub zero_training_grad: fn(&str) -> bool,
}

/// The narrow configuration the fixtures are made with: the same topology
/// and names as the 50-layer models at widths 4/8/8/16, two blocks a stage.
pub fn narrow_config(update: VarianceUpdate) -> ResNetConfig {
    ResNetConfig {
        stem_filters: 8,
        depths: vec![2, 2, 2, 2],
        widths: vec![4, 8, 8, 16],
        num_classes: Some(10),
        variance_update: update,
        ..ResNetConfig::resnet50(None)
    }
}

fn max_abs(t: &Tensor) -> f32 {
    t.data().iter().fold(0.0f32, |m, v| m.max(v.abs()))
}

/// Asserts max |ours - keras| / max |keras| <= `tol` (and no NaN on one
/// side only) and returns that ratio.
pub fn check(name: &str, ours: &Tensor, keras: &Tensor, tol: f32) -> f32 {
    // Keras stores a scalar loss as [1]; everything else must match exactly.
    if ours.numel() == 1 {
        assert_eq!(
            keras.numel(),
            1,
            "{name}: {:?} vs keras {:?}",
            ours.shape(),
            keras.shape()
        );
    } else {
        assert_eq!(ours.shape(), keras.shape(), "{name}: shape");
    }
    let scale = max_abs(keras).max(1e-30);
    check_tensor(name, ours.data(), keras.data(), tol * scale, 0.0);
    let diff = ours
        .data()
        .iter()
        .zip(keras.data())
        .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
    diff / scale
}

impl Fixture {
    fn path(&self, file: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures")
            .join(self.dir)
            .join(file)
    }

    pub fn reference(&self) -> HashMap<String, Tensor> {
        read_tensors(&self.path("reference.safetensors"))
            .unwrap()
            .0
            .into_iter()
            .collect()
    }

    /// Loads the fixture's Keras weights into `store`, every one of them.
    pub fn load_weights(&self, store: &mut ParamStore) {
        let report = load(store, &self.path("weights.safetensors"), &[]).unwrap();
        assert_eq!(report.loaded, store.len());
    }

    /// Runs forward (+ loss and backward) in `mode` and checks outputs under
    /// `out_prefix` and gradients under `grad_prefix`.
    pub fn check_outputs_and_gradients(
        &self,
        model: &dyn Model,
        store: &ParamStore,
        mode: Mode,
        (out_prefix, out_tol): (&str, f32),
        (grad_prefix, grad_tol): (&str, f32),
    ) {
        // Unwritten output elements would be NaN, not stale values.
        tensor::buffer_pool::poison_recycled(true);
        let r = self.reference();
        let mut g = Graph::new(store, mode);
        let x = g.input(r["x"].clone());
        let out = model.forward(&mut g, x).unwrap();
        let mut checked = 0;
        let mut worst_out = 0.0f32;
        let names: Vec<String> = g.tap_names().map(String::from).collect();
        for name in &names {
            if let Some(k) = r.get(&format!("{out_prefix}/{name}")) {
                let ours = g.value(g.tapped(name).unwrap());
                worst_out = worst_out.max(check(name, ours, k, out_tol));
                checked += 1;
            }
        }
        assert_eq!(
            checked, self.probed_layers,
            "probed layers found in the fixture"
        );
        let keras = |what: &str| &r[&format!("{out_prefix}/{what}")];
        let logits = out.logits.unwrap();
        check("logits", g.value(logits), keras("logits"), out_tol);
        let probs = ops::softmax(g.value(logits));
        check("probs", &probs, keras("probs"), out_tol);
        let labels: Vec<usize> = r["y"].data().iter().map(|&v| v as usize).collect();
        let loss = ops::softmax_cross_entropy(&mut g, logits, &labels);
        check("loss", g.value(loss), keras("loss"), out_tol);
        let grads = g.backward(loss);
        let mut n = 0;
        let mut worst_grad = 0.0f32;
        for (id, p) in store.iter() {
            let Some(k) = r.get(&format!("{grad_prefix}/{}", p.name)) else {
                continue;
            };
            let ours = grads.param(id).unwrap();
            n += 1;
            if mode.training && (self.zero_training_grad)(&p.name) {
                // Rounding noise on both sides: small next to the gradient of
                // the same layer's kernel.
                let kernel = grads
                    .param(store.id(&p.name.replace("/bias", "/kernel")).unwrap())
                    .unwrap();
                assert!(
                    max_abs(ours) <= 1e-3 * max_abs(kernel) && max_abs(k) <= 1e-3 * max_abs(kernel),
                    "{}",
                    p.name
                );
                continue;
            }
            worst_grad = worst_grad.max(check(&p.name, ours, k, grad_tol));
        }
        eprintln!(
            "{out_prefix}: worst layer output {worst_out:.2e}, worst gradient {worst_grad:.2e}"
        );
        assert_eq!(
            n, self.trainable,
            "every trainable weight's gradient compared"
        );
    }

    /// Pure inference (no tape) runs `fused_units` fused conv + batchnorm
    /// ops; its logits match Keras and, bit for bit, the layer-by-layer
    /// pass (`Mode::PROBE`), which fuses nothing.
    pub fn check_fused_inference(&self, model: &dyn Model, store: &ParamStore, fused_units: usize) {
        tensor::buffer_pool::poison_recycled(true);
        let r = self.reference();
        let logits = |mode: Mode| {
            let mut g = Graph::new(store, mode);
            g.enable_profile();
            let x = g.input(r["x"].clone());
            let out = model.forward(&mut g, x).unwrap();
            let fused = g
                .profile()
                .unwrap()
                .ops
                .iter()
                .filter(|o| o.name == "conv_bn_infer")
                .count();
            (g.take(out.logits.unwrap()), fused)
        };
        let (fused, n_fused) = logits(Mode::INFER);
        let (layered, n_layered) = logits(Mode::PROBE);
        assert_eq!((n_fused, n_layered), (fused_units, 0), "fused conv units");
        check("fused logits", &fused, &r["infer/logits"], 1e-5);
        assert_eq!(fused, layered);
    }

    /// One training-mode forward pass updates every batchnorm's moving
    /// statistics as Keras 2 (unbiased variance) and Keras 3 (biased) do;
    /// `model` builds the network with the fixture's weights.
    pub fn check_moving_statistics<M: Model>(
        &self,
        model: impl Fn(VarianceUpdate) -> (M, ParamStore),
    ) {
        let r = self.reference();
        for (update, prefix) in [
            (VarianceUpdate::Unbiased, "train_stats"),
            (VarianceUpdate::Biased, "train_stats_k3"),
        ] {
            let (model, mut store) = model(update);
            let stats = {
                let mut g = Graph::new(&store, Mode::TRAIN);
                let x = g.input(r["x"].clone());
                model.forward(&mut g, x).unwrap();
                g.take_stat_updates()
            };
            store.apply_stat_updates(stats);
            let mut n = 0;
            for (_, p) in store.iter() {
                if let Some(k) = r.get(&format!("{prefix}/{}", p.name)) {
                    check(&format!("{prefix}/{}", p.name), &p.value, k, 1e-5);
                    n += 1;
                }
            }
            assert_eq!(
                n,
                2 * self.batch_norms,
                "{prefix}: every batchnorm's two statistics compared"
            );
        }
    }
}
