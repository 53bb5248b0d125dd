//! Adam, the update Keras 3 performs: same formula, same operation order,
//! constants rounded to f32 where Keras rounds them.
//!
//! Why "Keras-exact": the model is validated against a Keras reference, so the
//! optimizer must reproduce Keras' arithmetic, which differs from the
//! textbook/PyTorch form in where epsilon goes. Keras folds both bias
//! corrections into the step size and adds epsilon to the *uncorrected*
//! `sqrt(v)`:
//!
//! ```text
//! t     = iterations + 1
//! alpha = lr * sqrt(1 - beta2^t) / (1 - beta1^t)
//! m    += (g - m) * (1 - beta1)        // == beta1*m + (1-beta1)*g
//! v    += (g*g - v) * (1 - beta2)      // == beta2*v + (1-beta2)*g^2
//! w    -= m * alpha / (sqrt(v) + epsilon)
//! ```
//!
//! The `m += (g - m) * (1 - beta1)` form is the one Keras evaluates.
//! `1 - beta` is a Python double in Keras, cast to f32 once (0.001f32, not
//! `1f32 - 0.999f32`, which is 1.3e-5 off); the bias-correction powers and
//! `alpha` are f32 computations in Keras, as here.
//!
//! Weight decay (optional, default 0) is *decoupled*, as in Keras 3's
//! `weight_decay` argument (i.e. AdamW): before the Adam update each decayed
//! weight is shrunk by `w -= w * weight_decay * lr`. It is not added to the
//! gradient, so it does not pass through the moment estimates.

use super::state::{BufferKey, OptimError, OptimizerState};
use super::PAR_CHUNK;
use super::{check_lengths, slot_mut, Optimizer, ParamOptions};
use rayon::prelude::*;

/// Default learning rate of this project's fine-tuning recipe
/// (Keras' own default is 1e-3; fine-tuning a pretrained ResNet50 wants less).
pub const DEFAULT_ADAM_LR: f32 = 1e-4;

/// Adam hyper-parameters (Keras defaults).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamConfig {
    /// Held in f64, as Keras holds them (Python floats), so that `1 - beta`
    /// rounds like Keras's.
    pub beta1: f64,
    pub beta2: f64,
    pub epsilon: f32,
    /// Decoupled weight decay coefficient (0 = plain Adam).
    pub weight_decay: f32,
}

impl Default for AdamConfig {
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.999,
            epsilon: 1e-7,
            weight_decay: 0.0,
        }
    }
}

/// The constants of one step's update.
#[derive(Clone, Copy)]
struct AdamStep {
    /// Decoupled weight decay `w -= w * shrink` first (0: none).
    shrink: f32,
    one_minus_b1: f32,
    one_minus_b2: f32,
    eps: f32,
    alpha: f32,
}

impl AdamStep {
    fn apply(self, param: &mut [f32], grad: &[f32], m: &mut [f32], v: &mut [f32]) {
        let AdamStep {
            shrink,
            one_minus_b1,
            one_minus_b2,
            eps,
            alpha,
        } = self;
        if shrink != 0.0 {
            param.iter_mut().for_each(|w| *w -= *w * shrink);
        }
        for (((w, &g), m), v) in param.iter_mut().zip(grad).zip(m).zip(v) {
            *m += (g - *m) * one_minus_b1;
            *v += (g * g - *v) * one_minus_b2;
            *w -= (*m * alpha) / (v.sqrt() + eps);
        }
    }
}

struct Moments {
    m: Vec<f32>,
    v: Vec<f32>,
}

/// Adam optimizer; see the module docs for the exact update.
pub struct Adam {
    cfg: AdamConfig,
    t: u64,
    lr: f32,
    alpha: f32,
    slots: Vec<Option<Moments>>,
    options: ParamOptions,
}

impl Adam {
    pub fn new(cfg: AdamConfig) -> Self {
        Self {
            cfg,
            t: 0,
            lr: 0.0,
            alpha: 0.0,
            slots: Vec::new(),
            options: ParamOptions::default(),
        }
    }

    pub fn config(&self) -> &AdamConfig {
        &self.cfg
    }

    fn recompute_alpha(&mut self) {
        let t = self.t as f32;
        let (b1, b2) = (self.cfg.beta1 as f32, self.cfg.beta2 as f32);
        self.alpha = self.lr * (1.0 - b2.powf(t)).sqrt() / (1.0 - b1.powf(t));
    }
}

impl Optimizer for Adam {
    fn name(&self) -> &'static str {
        "adam"
    }

    fn begin_step(&mut self, lr: f32) {
        self.t += 1;
        self.lr = lr;
        self.recompute_alpha();
    }

    fn update(&mut self, index: usize, param: &mut [f32], grad: &[f32]) {
        assert!(self.t > 0, "adam: update() called before begin_step()");
        let n = param.len();
        let slot = slot_mut(&mut self.slots, index).get_or_insert_with(|| Moments {
            m: vec![0.0; n],
            v: vec![0.0; n],
        });
        check_lengths("adam", index, param, grad, slot.m.len());

        let wd = self.cfg.weight_decay;
        let decays = wd != 0.0 && !self.options.is_exempt(index);
        let scale = self.options.lr_scale(index);
        // As Keras: `1 - beta` in double precision, then rounded to f32.
        let step = AdamStep {
            shrink: if decays { wd * self.lr * scale } else { 0.0 },
            one_minus_b1: (1.0 - self.cfg.beta1) as f32,
            one_minus_b2: (1.0 - self.cfg.beta2) as f32,
            eps: self.cfg.epsilon,
            alpha: self.alpha * scale,
        };
        // Every element is independent: large parameters are split across
        // the rayon threads (same result for any split).
        param
            .par_chunks_mut(PAR_CHUNK)
            .zip(grad.par_chunks(PAR_CHUNK))
            .zip(slot.m.par_chunks_mut(PAR_CHUNK))
            .zip(slot.v.par_chunks_mut(PAR_CHUNK))
            .for_each(|(((w, g), m), v)| step.apply(w, g, m, v));
    }

    fn exclude_from_weight_decay(&mut self, index: usize) {
        self.options.exempt(index);
    }

    fn scale_lr(&mut self, index: usize, scale: f32) {
        self.options.set_lr_scale(index, scale);
    }

    fn step(&self) -> u64 {
        self.t
    }

    fn state(&self) -> OptimizerState {
        let mut s = OptimizerState {
            kind: self.name().to_string(),
            step: self.t,
            ..Default::default()
        };
        for (i, slot) in self.slots.iter().enumerate() {
            if let Some(mo) = slot {
                s.buffers.insert(BufferKey::new("m", i), mo.m.clone());
                s.buffers.insert(BufferKey::new("v", i), mo.v.clone());
            }
        }
        s
    }

    fn load_state(&mut self, state: &OptimizerState) -> Result<(), OptimError> {
        state.check_kind(self.name())?;
        let mut m: Vec<Option<Vec<f32>>> = Vec::new();
        let mut v: Vec<Option<Vec<f32>>> = Vec::new();
        for (key, buf) in &state.buffers {
            let target = match key.slot.as_str() {
                "m" => &mut m,
                "v" => &mut v,
                _ => return Err(OptimError::BadSlot(key.slot.clone())),
            };
            *slot_mut(target, key.param) = Some(buf.clone());
        }
        let len = m.len().max(v.len());
        m.resize_with(len, || None);
        v.resize_with(len, || None);
        let mut slots = Vec::with_capacity(len);
        for (i, (m, v)) in m.into_iter().zip(v).enumerate() {
            slots.push(match (m, v) {
                (Some(m), Some(v)) if m.len() == v.len() => Some(Moments { m, v }),
                (None, None) => None,
                (m, v) => {
                    return Err(OptimError::Inconsistent {
                        index: i,
                        reason: format!(
                            "'m' has {:?} values and 'v' has {:?}",
                            m.map(|x| x.len()),
                            v.map(|x| x.len())
                        ),
                    })
                }
            });
        }
        self.slots = slots;
        self.t = state.step;
        self.recompute_alpha();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reference Keras Adam in f64, written independently of the f32 code.
    fn reference(lr: f64, wd: f64, w0: &[f64], grads: &[Vec<f64>]) -> Vec<f64> {
        let (b1, b2, eps) = (0.9f64, 0.999f64, 1e-7f64);
        let mut w = w0.to_vec();
        let mut m = vec![0.0; w.len()];
        let mut v = vec![0.0; w.len()];
        for (t, g) in grads.iter().enumerate() {
            let t = (t + 1) as f64;
            for i in 0..w.len() {
                w[i] -= w[i] * wd * lr;
                m[i] = b1 * m[i] + (1.0 - b1) * g[i];
                v[i] = b2 * v[i] + (1.0 - b2) * g[i] * g[i];
                let alpha = lr * (1.0 - b2.powf(t)).sqrt() / (1.0 - b1.powf(t));
                w[i] -= alpha * m[i] / (v[i].sqrt() + eps);
            }
        }
        w
    }

    fn grads() -> Vec<Vec<f64>> {
        vec![
            vec![0.5, -1.0, 1e-3, 0.0, 2.0],
            vec![0.4, -0.8, -2e-3, 0.0, -3.0],
            vec![-0.1, 0.3, 5e-4, 1e-9, 1.0],
            vec![0.2, 0.2, 0.2, 0.2, 0.2],
            vec![1.0, -1.0, 1.0, -1.0, 0.0],
        ]
    }

    fn run(opt: &mut Adam, lr: f32, w0: &[f64], grads: &[Vec<f64>]) -> Vec<f32> {
        let mut w: Vec<f32> = w0.iter().map(|&x| x as f32).collect();
        for g in grads {
            let g: Vec<f32> = g.iter().map(|&x| x as f32).collect();
            opt.begin_step(lr);
            opt.update(0, &mut w, &g);
        }
        w
    }

    #[test]
    fn matches_keras_formula_over_several_steps() {
        let w0 = [1.0, -0.5, 0.25, 0.0, 3.0];
        let want = reference(1e-3, 0.0, &w0, &grads());
        let got = run(&mut Adam::new(AdamConfig::default()), 1e-3, &w0, &grads());
        for (g, w) in got.iter().zip(&want) {
            assert!((*g as f64 - w).abs() < 1e-6, "got {got:?}\nwant {want:?}");
        }
        // The first step of Adam moves each weight by ~lr*sign(g): a sanity
        // check that the reference itself is right.
        let one = reference(1e-3, 0.0, &[0.0], &[vec![5.0]]);
        assert!((one[0] + 1e-3).abs() < 1e-9, "{one:?}");
    }

    #[test]
    fn epsilon_is_added_to_uncorrected_sqrt_v() {
        // With tiny gradients epsilon dominates, and the Keras placement gives
        // a very different step than the textbook `m_hat / (sqrt(v_hat) + eps)`
        // (which would move the weight by ~0.5 here).
        let g = vec![vec![1e-7]; 3];
        let want = reference(1.0, 0.0, &[0.0], &g);
        let got = run(&mut Adam::new(AdamConfig::default()), 1.0, &[0.0], &g);
        assert!(
            (got[0] as f64 - want[0]).abs() < 1e-5 * want[0].abs(),
            "{got:?} {want:?}"
        );
        // First step by hand: alpha = sqrt(1e-3)/0.1, m = 1e-8,
        // sqrt(v) = sqrt(1e-3)*1e-7.
        let a1 = 1e-3f64.sqrt() / 0.1;
        let step1 = a1 * 1e-8 / (1e-3f64.sqrt() * 1e-7 + 1e-7);
        let one = run(&mut Adam::new(AdamConfig::default()), 1.0, &[0.0], &g[..1]);
        assert!(
            (one[0] as f64 + step1).abs() < 1e-4 * step1,
            "{one:?} vs {step1}"
        );
        assert!(step1 < 0.05);
    }

    #[test]
    fn decoupled_weight_decay_matches_formula_and_respects_exclusion() {
        let w0 = [1.0, -0.5, 0.25, 0.0, 3.0];
        let cfg = AdamConfig {
            weight_decay: 0.1,
            ..AdamConfig::default()
        };
        let want = reference(1e-2, 0.1, &w0, &grads());
        let got = run(&mut Adam::new(cfg), 1e-2, &w0, &grads());
        for (g, w) in got.iter().zip(&want) {
            assert!((*g as f64 - w).abs() < 1e-5, "got {got:?}\nwant {want:?}");
        }
        let mut excluded = Adam::new(cfg);
        excluded.exclude_from_weight_decay(0);
        let got = run(&mut excluded, 1e-2, &w0, &grads());
        let want = reference(1e-2, 0.0, &w0, &grads());
        for (g, w) in got.iter().zip(&want) {
            assert!((*g as f64 - w).abs() < 1e-5, "got {got:?}\nwant {want:?}");
        }
    }

    #[test]
    fn a_scaled_parameter_takes_the_scaled_step() {
        // Scale 0.25 at lr 4e-2 is the formula at lr 1e-2, decoupled decay
        // (which is scaled by the rate) included.
        let w0 = [1.0, -0.5, 0.25, 0.0, 3.0];
        let cfg = AdamConfig {
            weight_decay: 0.1,
            ..AdamConfig::default()
        };
        let mut scaled = Adam::new(cfg);
        scaled.scale_lr(0, 0.25);
        let got = run(&mut scaled, 4e-2, &w0, &grads());
        let want = reference(1e-2, 0.1, &w0, &grads());
        for (g, w) in got.iter().zip(&want) {
            assert!((*g as f64 - w).abs() < 1e-5, "got {got:?}\nwant {want:?}");
        }
    }

    #[test]
    fn state_round_trip_resumes_identically() {
        let w0 = [1.0, -0.5, 0.25, 0.0, 3.0];
        let g = grads();
        let full = run(&mut Adam::new(AdamConfig::default()), 1e-3, &w0, &g);

        let mut first = Adam::new(AdamConfig::default());
        let mid = run(&mut first, 1e-3, &w0, &g[..2]);
        let state = first.state();
        assert_eq!(state.step, 2);
        assert_eq!(state.buffers.len(), 2);

        let mut resumed = Adam::new(AdamConfig::default());
        resumed.load_state(&state).unwrap();
        assert_eq!(resumed.step(), 2);
        let mid64: Vec<f64> = mid.iter().map(|&x| x as f64).collect();
        let end = run(&mut resumed, 1e-3, &mid64, &g[2..]);
        assert_eq!(end, full);
    }

    #[test]
    fn load_state_rejects_wrong_kind_and_inconsistent_buffers() {
        let mut s = OptimizerState {
            kind: "sgd".into(),
            ..Default::default()
        };
        let mut a = Adam::new(AdamConfig::default());
        assert!(matches!(
            a.load_state(&s),
            Err(OptimError::KindMismatch { .. })
        ));
        s.kind = "adam".into();
        s.buffers.insert(BufferKey::new("m", 0), vec![0.0; 3]);
        assert!(matches!(
            a.load_state(&s),
            Err(OptimError::Inconsistent { index: 0, .. })
        ));
        s.buffers.insert(BufferKey::new("v", 0), vec![0.0; 3]);
        s.buffers.insert(BufferKey::new("bogus", 0), vec![0.0; 3]);
        assert!(matches!(a.load_state(&s), Err(OptimError::BadSlot(_))));
    }

    #[test]
    #[should_panic(expected = "different model")]
    fn length_change_between_steps_panics_with_explanation() {
        let mut a = Adam::new(AdamConfig::default());
        a.begin_step(1e-3);
        a.update(3, &mut [0.0; 4], &[1.0; 4]);
        a.begin_step(1e-3);
        a.update(3, &mut [0.0; 5], &[1.0; 5]);
    }
}
