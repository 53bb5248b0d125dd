//! SGD with (Nesterov) momentum, following Keras' formulation.
//!
//! Why Keras' form: Keras keeps a velocity that already includes the learning
//! rate, `v = momentum*v - lr*g`, and applies `w += v` (or, with Nesterov,
//! `w += momentum*v - lr*g` using the *new* v). PyTorch instead stores
//! `buf = momentum*buf + g` and scales by lr afterwards; the two differ as
//! soon as the learning rate changes during training (schedules), so we
//! follow the reference framework.
//!
//! Weight decay here is classic *L2 regularization*: `weight_decay * w` is
//! added to the gradient before the momentum update (so it is scaled by the
//! learning rate and accumulates in the velocity). Note this differs from
//! Keras 3's `weight_decay` argument, which is decoupled; for plain SGD
//! without momentum the two coincide.

use super::state::{BufferKey, OptimError, OptimizerState};
use super::{check_lengths, slot_mut, Optimizer, ParamOptions, PAR_CHUNK};
use rayon::prelude::*;

/// SGD hyper-parameters.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub struct SgdConfig {
    /// 0 disables momentum (no state is kept).
    pub momentum: f32,
    pub nesterov: bool,
    /// L2 coefficient added to the gradient (0 = none).
    pub weight_decay: f32,
}

/// The constants of one parameter's update in one step.
#[derive(Clone, Copy)]
struct SgdStep {
    lr: f32,
    wd: f32,
    mom: f32,
    nesterov: bool,
}

impl SgdStep {
    /// Without momentum: `w -= lr * (g + wd * w)`.
    fn plain(self, param: &mut [f32], grad: &[f32]) {
        let SgdStep { lr, wd, .. } = self;
        for (w, &g) in param.iter_mut().zip(grad) {
            let g = g + wd * *w;
            *w -= lr * g;
        }
    }

    /// Keras's momentum update, `v = mom * v - lr * g`, then `w += v` or,
    /// with Nesterov, `w += mom * v - lr * g`.
    fn with_momentum(self, param: &mut [f32], grad: &[f32], vel: &mut [f32]) {
        let SgdStep { lr, wd, mom, .. } = self;
        if self.nesterov {
            for ((w, &g), v) in param.iter_mut().zip(grad).zip(vel) {
                let g = g + wd * *w;
                *v = mom * *v - lr * g;
                *w += mom * *v - lr * g;
            }
        } else {
            for ((w, &g), v) in param.iter_mut().zip(grad).zip(vel) {
                let g = g + wd * *w;
                *v = mom * *v - lr * g;
                *w += *v;
            }
        }
    }
}

/// SGD optimizer; see the module docs for the exact update.
pub struct Sgd {
    cfg: SgdConfig,
    t: u64,
    lr: f32,
    velocity: Vec<Option<Vec<f32>>>,
    options: ParamOptions,
}

impl Sgd {
    pub fn new(cfg: SgdConfig) -> Self {
        Self {
            cfg,
            t: 0,
            lr: 0.0,
            velocity: Vec::new(),
            options: ParamOptions::default(),
        }
    }

    pub fn config(&self) -> &SgdConfig {
        &self.cfg
    }
}

impl Optimizer for Sgd {
    fn name(&self) -> &'static str {
        "sgd"
    }

    fn begin_step(&mut self, lr: f32) {
        self.t += 1;
        self.lr = lr;
    }

    fn update(&mut self, index: usize, param: &mut [f32], grad: &[f32]) {
        assert!(self.t > 0, "sgd: update() called before begin_step()");
        let lr = self.lr * self.options.lr_scale(index);
        let wd = if self.options.is_exempt(index) {
            0.0
        } else {
            self.cfg.weight_decay
        };
        let step = SgdStep {
            lr,
            wd,
            mom: self.cfg.momentum,
            nesterov: self.cfg.nesterov,
        };
        if step.mom == 0.0 {
            check_lengths("sgd", index, param, grad, param.len());
            param
                .par_chunks_mut(PAR_CHUNK)
                .zip(grad.par_chunks(PAR_CHUNK))
                .for_each(|(w, g)| step.plain(w, g));
            return;
        }
        let n = param.len();
        let vel = slot_mut(&mut self.velocity, index).get_or_insert_with(|| vec![0.0; n]);
        check_lengths("sgd", index, param, grad, vel.len());
        // Every element is independent: large parameters are split across
        // the rayon threads (same result for any split).
        param
            .par_chunks_mut(PAR_CHUNK)
            .zip(grad.par_chunks(PAR_CHUNK))
            .zip(vel.par_chunks_mut(PAR_CHUNK))
            .for_each(|((w, g), v)| step.with_momentum(w, g, v));
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
        for (i, v) in self.velocity.iter().enumerate() {
            if let Some(v) = v {
                s.buffers.insert(BufferKey::new("velocity", i), v.clone());
            }
        }
        s
    }

    fn load_state(&mut self, state: &OptimizerState) -> Result<(), OptimError> {
        state.check_kind(self.name())?;
        let mut velocity = Vec::new();
        for (key, buf) in &state.buffers {
            match key.slot.as_str() {
                "velocity" => *slot_mut(&mut velocity, key.param) = Some(buf.clone()),
                _ => return Err(OptimError::BadSlot(key.slot.clone())),
            }
        }
        self.velocity = velocity;
        self.t = state.step;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Independent f64 reference of the Keras SGD update with L2 decay.
    fn reference(
        lr: &[f64],
        mom: f64,
        nesterov: bool,
        wd: f64,
        w0: &[f64],
        grads: &[Vec<f64>],
    ) -> Vec<f64> {
        let mut w = w0.to_vec();
        let mut v = vec![0.0; w.len()];
        for (step, g) in grads.iter().enumerate() {
            let lr = lr[step];
            for i in 0..w.len() {
                let gi = g[i] + wd * w[i];
                v[i] = mom * v[i] - lr * gi;
                if nesterov {
                    w[i] += mom * v[i] - lr * gi;
                } else {
                    w[i] += v[i];
                }
            }
        }
        w
    }

    fn grads() -> Vec<Vec<f64>> {
        vec![
            vec![0.5, -1.0, 1e-3, 0.0],
            vec![0.4, -0.8, -2e-3, 0.0],
            vec![-0.1, 0.3, 5e-4, 1.0],
            vec![0.2, 0.2, 0.2, 0.2],
        ]
    }

    fn run(cfg: SgdConfig, lrs: &[f64], w0: &[f64]) -> Vec<f32> {
        let mut opt = Sgd::new(cfg);
        let mut w: Vec<f32> = w0.iter().map(|&x| x as f32).collect();
        for (g, &lr) in grads().iter().zip(lrs) {
            let g: Vec<f32> = g.iter().map(|&x| x as f32).collect();
            opt.begin_step(lr as f32);
            opt.update(1, &mut w, &g);
        }
        w
    }

    #[test]
    fn matches_formula_for_all_variants() {
        let w0 = [1.0, -0.5, 0.25, 2.0];
        // A changing learning rate distinguishes Keras' velocity convention.
        let lrs = [0.1, 0.05, 0.2, 0.01];
        for (mom, nesterov, wd) in [
            (0.0, false, 0.0),
            (0.0, false, 0.01),
            (0.9, false, 0.0),
            (0.9, true, 0.0),
            (0.9, true, 5e-4),
            (0.5, false, 0.1),
        ] {
            let cfg = SgdConfig {
                momentum: mom as f32,
                nesterov,
                weight_decay: wd as f32,
            };
            let got = run(cfg, &lrs, &w0);
            let want = reference(&lrs, mom, nesterov, wd, &w0, &grads());
            for (g, w) in got.iter().zip(&want) {
                assert!(
                    (*g as f64 - w).abs() < 1e-6,
                    "{cfg:?}: got {got:?} want {want:?}"
                );
            }
        }
        // Hand-computed: momentum 0.9, lr 0.1, g = 1 twice:
        // v1 = -0.1, w1 = -0.1; v2 = -0.09 - 0.1 = -0.19, w2 = -0.29.
        let mut opt = Sgd::new(SgdConfig {
            momentum: 0.9,
            ..Default::default()
        });
        let mut w = [0.0f32];
        for _ in 0..2 {
            opt.begin_step(0.1);
            opt.update(0, &mut w, &[1.0]);
        }
        assert!((w[0] + 0.29).abs() < 1e-6, "{w:?}");
    }

    #[test]
    fn a_parameter_of_several_parallel_chunks_follows_the_formula() {
        // 2.5 chunks, each element with its own weight and gradients, so a
        // chunk paired with another chunk's gradients or velocity shows.
        let n = PAR_CHUNK * 5 / 2;
        let w0: Vec<f64> = (0..n).map(|i| ((i % 97) as f64 - 48.0) / 16.0).collect();
        let grads: Vec<Vec<f64>> = (0..3)
            .map(|s| {
                (0..n)
                    .map(|i| ((i * 7 + s * 13) % 61) as f64 / 30.0 - 1.0)
                    .collect()
            })
            .collect();
        let lrs = [0.1, 0.05, 0.2];
        for momentum in [0.0, 0.9] {
            let cfg = SgdConfig {
                momentum,
                nesterov: momentum > 0.0,
                weight_decay: 5e-4,
            };
            let mut opt = Sgd::new(cfg);
            let mut w: Vec<f32> = w0.iter().map(|&x| x as f32).collect();
            for (g, &lr) in grads.iter().zip(&lrs) {
                let g: Vec<f32> = g.iter().map(|&x| x as f32).collect();
                opt.begin_step(lr as f32);
                opt.update(0, &mut w, &g);
            }
            let want = reference(&lrs, momentum as f64, cfg.nesterov, 5e-4, &w0, &grads);
            for (i, (g, w)) in w.iter().zip(&want).enumerate() {
                assert!(
                    (*g as f64 - w).abs() < 1e-5,
                    "{cfg:?}: element {i}: {g} vs {w}"
                );
            }
        }
    }

    #[test]
    fn a_scaled_parameter_takes_the_scaled_step() {
        // Parameter 0 at scale 0.25 with lr 0.4 follows exactly an
        // unscaled optimizer at lr 0.1 (weight decay and Nesterov included);
        // parameter 1 keeps lr 0.4.
        let cfg = SgdConfig {
            momentum: 0.9,
            nesterov: true,
            weight_decay: 0.01,
        };
        let mut scaled = Sgd::new(cfg);
        scaled.scale_lr(0, 0.25);
        let (mut slow, mut fast) = (Sgd::new(cfg), Sgd::new(cfg));
        let (mut w0, mut w1) = (vec![1.0f32, -2.0], vec![0.5f32, 3.0]);
        let (mut want0, mut want1) = (w0.clone(), w1.clone());
        for g in [[0.5f32, -1.0], [2.0, 0.25], [-1.0, 1.0]] {
            scaled.begin_step(0.4);
            scaled.update(0, &mut w0, &g);
            scaled.update(1, &mut w1, &g);
            slow.begin_step(0.1);
            slow.update(0, &mut want0, &g);
            fast.begin_step(0.4);
            fast.update(1, &mut want1, &g);
        }
        assert_eq!((w0, w1), (want0, want1));
    }

    #[test]
    fn state_round_trip() {
        let cfg = SgdConfig {
            momentum: 0.9,
            nesterov: true,
            weight_decay: 0.0,
        };
        let mut a = Sgd::new(cfg);
        let mut w = vec![1.0f32, 2.0];
        a.begin_step(0.1);
        a.update(2, &mut w, &[0.5, -0.5]);
        let s = a.state();
        assert_eq!(
            s.buffers.keys().collect::<Vec<_>>(),
            [&BufferKey::new("velocity", 2)]
        );
        let mut b = Sgd::new(cfg);
        b.load_state(&s).unwrap();
        let mut wa = w.clone();
        let mut wb = w.clone();
        a.begin_step(0.1);
        a.update(2, &mut wa, &[0.3, 0.1]);
        b.begin_step(0.1);
        b.update(2, &mut wb, &[0.3, 0.1]);
        assert_eq!(wa, wb);
        assert_eq!(b.step(), 2);
        let mut adam_state = s.clone();
        adam_state.kind = "adam".into();
        assert!(b.load_state(&adam_state).is_err());
    }
}
