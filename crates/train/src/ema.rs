//! An exponential moving average (EMA) of the model's parameters, kept
//! beside the trained ones and evaluated and saved with them.
//!
//! Why: evaluations with averaged weights are often better than with the
//! last trained ones (TF's `tf.train.ExponentialMovingAverage` docs say as
//! much; timm's `ModelEmaV2` is the PyTorch equivalent), at the price of one
//! f32 copy of the parameters and a blend after the optimizer update.
//!
//! The update is TF's, with `num_updates` = the number of EMA updates made
//! so far (`n`):
//!
//! ```text
//! d = min(decay, (1 + n) / (10 + n))
//! ema -= (1 - d) * (ema - w)      // = d * ema + (1 - d) * w
//! ```
//!
//! computed in f32 in that form (TF's `assign_sub` form, mathematically the
//! classic `d * ema + (1 - d) * w`). The `(1 + n) / (10 + n)` ramp makes the
//! first updates nearly copies (d = 0.1, 2/11, 3/12, ...) so the average is
//! not dominated by the random initialization; the average starts equal to
//! the parameters (TF's shadow variables start at the variables' values).
//! With [`EmaConfig::every`] = k the update runs after every k-th optimizer
//! step, counted on the trainer's global step (after steps k, 2k, ...), so
//! a resumed run updates at exactly the steps a straight one does; the
//! count `n` is saved with the averages.
//!
//! **Batchnorm moving statistics are averaged like the weights** (timm's
//! `ModelEmaV2` averages every buffer; TF's reference EfficientNet applies
//! its EMA to the moving statistics too). The statistics of an average of
//! weights are not the average of the statistics (a batchnorm's input
//! distribution is a nonlinear function of the weights before it), so
//! neither averaging nor copying the live statistics is exact. Averaging is
//! the better approximation: the live statistics describe the live weights
//! of the last ~100 steps (Keras's momentum 0.99), while the averaged
//! weights describe a horizon of ~1/(1 - decay) steps, which the averaged
//! statistics match; and the mismatch is second order in how far the
//! weights move within that horizon. It vanishes where evaluation matters:
//! at the end of a decayed schedule the learning rate goes to 0, the live
//! weights stop moving, the average converges to them, and so do the
//! averaged statistics to the live ones. The exact alternative, recomputing
//! the statistics for the averaged weights (SWA's `bn_update`), costs
//! training-mode forward passes over (a good part of) the training set at
//! every evaluation: for ResNet50 on this machine a sizeable fraction of
//! an epoch each time.
//!
//! Frozen parameters are averaged too, which keeps them exactly: they never
//! change, the average starts equal to them, and `ema - w` is then 0.

use crate::optim::PAR_CHUNK;
use anyhow::{bail, Context, Result};
use autograd::ParamStore;
use nn::checkpoint::{self, Metadata, TensorFile};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// How the average is kept; part of a run's `config.json`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EmaConfig {
    /// The decay once the `(1 + n) / (10 + n)` ramp exceeds it: the
    /// average's horizon is about `every / (1 - decay)` optimizer steps.
    pub decay: f32,
    /// Update after every `every`-th optimizer step (1: after each).
    pub every: usize,
}

impl Default for EmaConfig {
    /// Decay 0.999 after each step (a horizon of ~1000 steps, a bit over an
    /// epoch of CIFAR-10 at batch 64).
    fn default() -> Self {
        EmaConfig {
            decay: 0.999,
            every: 1,
        }
    }
}

impl EmaConfig {
    /// `decay` in [0, 1], `every` at least 1; errors name the value.
    pub fn validate(&self) -> Result<()> {
        if !(0.0..=1.0).contains(&self.decay) {
            bail!("ema decay {}: expected a number in [0, 1]", self.decay);
        }
        if self.every == 0 {
            bail!("ema every 0: expected at least 1 (update after every k-th step)");
        }
        Ok(())
    }
}

/// Metadata keys of a saved average (besides those the caller adds).
pub const UPDATES_KEY: &str = "ema_updates";
pub const DECAY_KEY: &str = "ema_decay";
pub const EVERY_KEY: &str = "ema_every";

/// The decay of the update made after `n` updates: TF's
/// `min(decay, (1 + n) / (10 + n))`, in f32 as TF computes it.
pub fn decay_at(decay: f32, n: u64) -> f32 {
    let n = n as f32;
    decay.min((1.0 + n) / (10.0 + n))
}

/// The average of every parameter of a model (weights and batchnorm
/// statistics), keyed by parameter name.
#[derive(Clone, Debug)]
pub struct Ema {
    config: EmaConfig,
    /// The averages in a store shaped like the live one (same names, ids,
    /// kinds and trainable flags), so evaluating or saving the average is
    /// evaluating or saving this store: no copy is made for either.
    store: ParamStore,
    /// Updates made so far (TF's `num_updates`).
    updates: u64,
}

impl Ema {
    /// An average starting at `live`'s current values (one copy of them).
    pub fn new(config: EmaConfig, live: &ParamStore) -> Result<Self> {
        config.validate()?;
        Ok(Ema {
            config,
            store: live.clone(),
            updates: 0,
        })
    }

    pub fn config(&self) -> EmaConfig {
        self.config
    }

    /// Updates made so far.
    pub fn updates(&self) -> u64 {
        self.updates
    }

    /// The averaged parameters, as a store the model evaluates with
    /// ([`crate::evaluate::evaluate`]) or that is saved by name.
    pub fn store(&self) -> &ParamStore {
        &self.store
    }

    /// What the trainer calls after each optimizer step: updates the
    /// average from `live` if `global_step` (the steps taken, this one
    /// included) is a multiple of [`EmaConfig::every`]. Returns whether it
    /// did.
    pub fn after_step(&mut self, live: &ParamStore, global_step: u64) -> bool {
        let due = global_step.is_multiple_of(self.config.every as u64);
        if due {
            self.update(live);
        }
        due
    }

    /// One update from `live`, whatever the step.
    ///
    /// # Panics
    /// If `live` is not the store the average was made from (another
    /// network): a programming error, not an input.
    pub fn update(&mut self, live: &ParamStore) {
        assert_eq!(live.len(), self.store.len(), "EMA of another network");
        let k = 1.0 - decay_at(self.config.decay, self.updates);
        for (id, p) in live.iter() {
            assert_eq!(self.store.get(id).name, p.name, "EMA of another network");
            blend(self.store.value_mut(id).data_mut(), p.value.data(), k);
        }
        self.updates += 1;
    }

    /// The safetensors bytes of the average: every parameter under its
    /// name (the layout of `model.safetensors`, so the file loads wherever
    /// a model file does), with `meta` plus the update count, decay and
    /// period.
    pub fn to_bytes(&self, mut meta: Metadata) -> Vec<u8> {
        meta.extend([
            (UPDATES_KEY.to_string(), self.updates.to_string()),
            (DECAY_KEY.to_string(), self.config.decay.to_string()),
            (EVERY_KEY.to_string(), self.config.every.to_string()),
        ]);
        checkpoint::to_bytes(
            self.store.iter().map(|(_, p)| (p.name.as_str(), &p.value)),
            &meta,
        )
    }

    /// The average saved in `file` (by [`Ema::to_bytes`]), for the network
    /// of `live`, kept from now on per `config`. Every parameter of `live`
    /// must be in the file with its shape, and nothing else; errors name
    /// the file and the tensor. `live`'s values are not read.
    pub fn restore(config: EmaConfig, live: &ParamStore, file: TensorFile) -> Result<Self> {
        config.validate()?;
        let path = file.path.clone();
        let updates: u64 = file.meta_parse(UPDATES_KEY)?;
        let mut tensors = file.tensors;
        let mut store = ParamStore::new();
        for (id, p) in live.iter() {
            let Some(t) = tensors.remove(&p.name) else {
                bail!(
                    "{}: no tensor {} (the average of every parameter is needed)",
                    path.display(),
                    p.name
                );
            };
            if t.shape() != p.value.shape() {
                bail!(
                    "{}: tensor {} has shape {:?}, the model's is {:?}",
                    path.display(),
                    p.name,
                    t.shape(),
                    p.value.shape()
                );
            }
            let added = store
                .add(&p.name, t, p.kind)
                .with_context(|| format!("{}", path.display()))?;
            debug_assert_eq!(added, id);
            store.set_trainable(added, p.trainable);
        }
        if let Some(extra) = tensors.keys().next() {
            bail!(
                "{}: tensor {extra} is not a parameter of this model ({} such tensors)",
                path.display(),
                tensors.len()
            );
        }
        Ok(Ema {
            config,
            store,
            updates,
        })
    }
}

/// `avg -= k * (avg - w)` elementwise, in parallel over large tensors
/// (elementwise, so the result does not depend on the split).
fn blend(avg: &mut [f32], w: &[f32], k: f32) {
    let one = |a: &mut [f32], w: &[f32]| {
        for (a, &w) in a.iter_mut().zip(w) {
            *a -= (*a - w) * k;
        }
    };
    if avg.len() <= PAR_CHUNK {
        one(avg, w);
    } else {
        avg.par_chunks_mut(PAR_CHUNK)
            .zip(w.par_chunks(PAR_CHUNK))
            .for_each(|(a, w)| one(a, w));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use autograd::ParamKind;
    use tensor::Tensor;

    /// A weight `w` (2 values), a frozen weight `f`, a statistic `s`.
    fn store(w: [f32; 2], s: f32) -> ParamStore {
        let mut st = ParamStore::new();
        st.add(
            "w",
            Tensor::from_vec(&[2], w.to_vec()).unwrap(),
            ParamKind::Weight,
        )
        .unwrap();
        let f = st
            .add(
                "f",
                Tensor::from_vec(&[1], vec![0.3]).unwrap(),
                ParamKind::Weight,
            )
            .unwrap();
        st.set_trainable(f, false);
        st.add(
            "s",
            Tensor::from_vec(&[1], vec![s]).unwrap(),
            ParamKind::Statistic,
        )
        .unwrap();
        st
    }

    fn values(st: &ParamStore, name: &str) -> Vec<f32> {
        st.value(st.id(name).unwrap()).data().to_vec()
    }

    fn close(a: &[f32], b: &[f64]) {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert!((*x as f64 - y).abs() < 1e-6, "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn the_ramp_is_tfs() {
        assert_eq!(decay_at(0.999, 0), 0.1);
        assert_eq!(decay_at(0.999, 1), 2.0 / 11.0);
        assert_eq!(decay_at(0.999, 8), 9.0 / 18.0);
        assert_eq!(decay_at(0.5, 7), 8.0 / 17.0, "8/17 < 0.5");
        assert_eq!(decay_at(0.5, 8), 0.5);
        assert_eq!(decay_at(0.5, 9), 0.5, "the ramp stops at decay");
        assert_eq!(decay_at(0.999, 100_000), 0.999);
        assert_eq!(decay_at(0.0, 3), 0.0);
    }

    #[test]
    fn the_first_updates_follow_the_ramp_by_hand() {
        let mut live = store([1.0, -2.0], 4.0);
        let mut ema = Ema::new(
            EmaConfig {
                decay: 0.9,
                every: 1,
            },
            &live,
        )
        .unwrap();
        // Step 1: w = [2, 0], s = 6; d = 1/10.
        live.set(
            live.id("w").unwrap(),
            Tensor::from_vec(&[2], vec![2.0, 0.0]).unwrap(),
        )
        .unwrap();
        live.set(
            live.id("s").unwrap(),
            Tensor::from_vec(&[1], vec![6.0]).unwrap(),
        )
        .unwrap();
        assert!(ema.after_step(&live, 1));
        // 0.1 * [1, -2] + 0.9 * [2, 0] = [1.9, -0.2]; 0.1 * 4 + 0.9 * 6 = 5.8
        close(&values(ema.store(), "w"), &[1.9, -0.2]);
        close(&values(ema.store(), "s"), &[5.8]);
        assert_eq!(values(ema.store(), "f"), [0.3], "frozen: exactly kept");
        // Step 2: w = [0, 1]; d = 2/11.
        live.set(
            live.id("w").unwrap(),
            Tensor::from_vec(&[2], vec![0.0, 1.0]).unwrap(),
        )
        .unwrap();
        ema.after_step(&live, 2);
        let d = 2.0 / 11.0;
        close(
            &values(ema.store(), "w"),
            &[d * 1.9, d * -0.2 + (1.0 - d) * 1.0],
        );
        // Step 3: d = 3/12 = 0.25; w unchanged.
        ema.after_step(&live, 3);
        let w3 = [0.25 * d * 1.9, 0.25 * (d * -0.2 + (1.0 - d)) + 0.75];
        close(&values(ema.store(), "w"), &w3);
        assert_eq!(ema.updates(), 3);
        // Many more: the ramp reaches 0.9 at n = 81 (82/91 > 0.9); the
        // average converges to the constant weights.
        for step in 4..400 {
            ema.after_step(&live, step);
        }
        close(&values(ema.store(), "w"), &[0.0, 1.0]);
        close(&values(ema.store(), "s"), &[6.0]);
        assert_eq!(values(ema.store(), "f"), [0.3]);
    }

    #[test]
    fn every_k_updates_on_the_multiples_of_k_only() {
        let mut live = store([0.0, 0.0], 0.0);
        let mut ema = Ema::new(
            EmaConfig {
                decay: 0.5,
                every: 3,
            },
            &live,
        )
        .unwrap();
        let w = live.id("w").unwrap();
        let mut did = Vec::new();
        for step in 1..=7u64 {
            // The weight is the step number.
            live.set(w, Tensor::from_vec(&[2], vec![step as f32; 2]).unwrap())
                .unwrap();
            if ema.after_step(&live, step) {
                did.push(step);
            }
        }
        assert_eq!(did, [3, 6]);
        assert_eq!(ema.updates(), 2);
        // Update 0 at step 3: d = 0.1: 0.1 * 0 + 0.9 * 3 = 2.7.
        // Update 1 at step 6: d = 2/11: 2/11 * 2.7 + 9/11 * 6.
        let want = 2.0 / 11.0 * 2.7 + 9.0 / 11.0 * 6.0;
        close(&values(ema.store(), "w"), &[want, want]);
    }

    #[test]
    fn the_update_is_tfs_f32_form_bit_for_bit_and_parallel_chunks_agree() {
        // Large enough for the parallel path.
        let n = 100_003;
        let a: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
        let w: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos()).collect();
        let k = 1.0 - decay_at(0.999, 5);
        let mut got = a.clone();
        blend(&mut got, &w, k);
        for i in 0..n {
            assert_eq!(
                got[i].to_bits(),
                (a[i] - (a[i] - w[i]) * k).to_bits(),
                "{i}"
            );
        }
    }

    #[test]
    fn a_saved_average_restores_exactly_and_a_wrong_file_is_named() {
        let mut live = store([1.0, 2.0], 3.0);
        let config = EmaConfig {
            decay: 0.99,
            every: 2,
        };
        let mut ema = Ema::new(config, &live).unwrap();
        live.set(
            live.id("w").unwrap(),
            Tensor::from_vec(&[2], vec![5.0, 7.0]).unwrap(),
        )
        .unwrap();
        ema.update(&live);
        ema.update(&live);
        let meta = Metadata::from([("global_step".to_string(), "4".to_string())]);
        let bytes = ema.to_bytes(meta);
        let path = std::path::Path::new("/run/ema.safetensors");
        let file = TensorFile::from_bytes(&bytes, path).unwrap();
        assert_eq!(file.metadata["global_step"], "4");
        assert_eq!(file.metadata[UPDATES_KEY], "2");
        let back = Ema::restore(config, &live, file.clone()).unwrap();
        assert_eq!(back.updates(), 2);
        for (id, p) in ema.store().iter() {
            let q = back.store().get(id);
            assert_eq!(
                (&q.name, q.kind, q.trainable),
                (&p.name, p.kind, p.trainable)
            );
            let bits = |t: &Tensor| t.data().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&q.value), bits(&p.value));
        }

        // Missing, misshapen and foreign tensors.
        let mut missing = file.clone();
        missing.tensors.remove("s");
        let e = Ema::restore(config, &live, missing)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("/run/ema.safetensors") && e.contains("no tensor s"),
            "{e}"
        );
        let mut shape = file.clone();
        shape.tensors.insert("w".into(), Tensor::zeros(&[3]));
        let e = Ema::restore(config, &live, shape).unwrap_err().to_string();
        assert!(e.contains("tensor w has shape [3]"), "{e}");
        let mut extra = file.clone();
        extra.tensors.insert("z".into(), Tensor::zeros(&[1]));
        let e = Ema::restore(config, &live, extra).unwrap_err().to_string();
        assert!(e.contains("tensor z is not a parameter"), "{e}");
        let mut no_count = file;
        no_count.metadata.remove(UPDATES_KEY);
        let e = format!("{:#}", Ema::restore(config, &live, no_count).unwrap_err());
        assert!(e.contains(UPDATES_KEY), "{e}");
    }

    #[test]
    fn bad_configurations_are_refused_naming_the_value() {
        let live = store([0.0, 0.0], 0.0);
        for (c, want) in [
            (
                EmaConfig {
                    decay: 1.5,
                    every: 1,
                },
                "ema decay 1.5",
            ),
            (
                EmaConfig {
                    decay: f32::NAN,
                    every: 1,
                },
                "ema decay NaN",
            ),
            (
                EmaConfig {
                    decay: 0.9,
                    every: 0,
                },
                "ema every 0",
            ),
        ] {
            let e = Ema::new(c, &live).unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
        }
        let c: EmaConfig = serde_json::from_str(r#"{"decay": 0.9}"#).unwrap();
        assert_eq!(
            c,
            EmaConfig {
                decay: 0.9,
                every: 1
            }
        );
    }
}
