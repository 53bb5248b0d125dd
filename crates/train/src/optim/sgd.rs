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
//!
//! With a trust coefficient `eta` the optimizer is LARS (You, Gitman and
//! Ginsburg 2017, "Large Batch Training of Convolutional Networks"), as
//! google-research/simclr's `LARSOptimizer` computes it: each decayed
//! parameter's rate is multiplied by its trust ratio
//! `eta * |w| / |g + wd * w|` (1 when either norm is 0), norms over the whole
//! tensor, and the momentum update above runs at that rate. Parameters
//! exempt from weight decay (biases, batchnorm) are exempt from the ratio
//! too. Why it is here: every kernel of a ResNet is followed by a batchnorm,
//! so only its direction matters, and plain SGD turns it by about
//! `lr |g| / |w|`, a rate that grows as weight decay shrinks `|w|` until
//! training destabilizes (docs/recipes.md); LARS turns every kernel by about
//! `lr * eta` per step whatever its norm.

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
    /// LARS's `eta` (see the module docs); `None` for plain SGD.
    pub trust_coefficient: Option<f32>,
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

/// LARS's trust ratio `eta * |w| / |g + wd * w|`, 1 when either norm is 0.
/// The squared norms are summed in f64 per chunk and the chunks in order, so
/// the ratio does not depend on how many threads there are.
fn trust_ratio(eta: f32, wd: f32, param: &[f32], grad: &[f32]) -> f32 {
    let partial: Vec<(f64, f64)> = param
        .par_chunks(PAR_CHUNK)
        .zip(grad.par_chunks(PAR_CHUNK))
        .map(|(w, g)| squared_norms(wd, w, g))
        .collect();
    let (ww, uu) = partial
        .iter()
        .fold((0.0, 0.0), |(a, b), &(ww, uu)| (a + ww, b + uu));
    if ww > 0.0 && uu > 0.0 {
        (eta as f64 * (ww / uu).sqrt()) as f32
    } else {
        1.0
    }
}

/// Independent accumulators of [`squared_norms`]: one running sum would
/// chain every add on the one before (a few cycles each, 23.5 M of them
/// per step); eight lanes let the compiler keep the sums in vector
/// registers and the pass run at memory speed.
const NORM_LANES: usize = 8;

/// `(|w|^2, |g + wd * w|^2)` of one chunk in f64: element `i` goes to lane
/// `i % NORM_LANES`, the lanes are added in order at the end (a fixed order:
/// the same bits on every run).
fn squared_norms(wd: f32, w: &[f32], g: &[f32]) -> (f64, f64) {
    let (mut ww, mut uu) = ([0.0f64; NORM_LANES], [0.0f64; NORM_LANES]);
    let mut add = |lane: usize, w: f32, g: f32| {
        let u = (g + wd * w) as f64;
        ww[lane] += w as f64 * w as f64;
        uu[lane] += u * u;
    };
    let (w_lanes, g_lanes) = (w.chunks_exact(NORM_LANES), g.chunks_exact(NORM_LANES));
    let (w_rest, g_rest) = (w_lanes.remainder(), g_lanes.remainder());
    for (w8, g8) in w_lanes.zip(g_lanes) {
        for lane in 0..NORM_LANES {
            add(lane, w8[lane], g8[lane]);
        }
    }
    for (lane, (&w, &g)) in w_rest.iter().zip(g_rest).enumerate() {
        add(lane, w, g);
    }
    (ww.iter().sum(), uu.iter().sum())
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
        if self.cfg.trust_coefficient.is_some() {
            "lars"
        } else {
            "sgd"
        }
    }

    fn begin_step(&mut self, lr: f32) {
        self.t += 1;
        self.lr = lr;
    }

    fn update(&mut self, index: usize, param: &mut [f32], grad: &[f32]) {
        assert!(self.t > 0, "sgd: update() called before begin_step()");
        let exempt = self.options.is_exempt(index);
        let wd = if exempt { 0.0 } else { self.cfg.weight_decay };
        let mut lr = self.lr * self.options.lr_scale(index);
        if let (Some(eta), false) = (self.cfg.trust_coefficient, exempt) {
            check_lengths(self.name(), index, param, grad, param.len());
            lr *= trust_ratio(eta, wd, param, grad);
        }
        let step = SgdStep {
            lr,
            wd,
            mom: self.cfg.momentum,
            nesterov: self.cfg.nesterov,
        };
        if step.mom == 0.0 {
            check_lengths(self.name(), index, param, grad, param.len());
            param
                .par_chunks_mut(PAR_CHUNK)
                .zip(grad.par_chunks(PAR_CHUNK))
                .for_each(|(w, g)| step.plain(w, g));
            return;
        }
        let (n, name) = (param.len(), self.name());
        let vel = slot_mut(&mut self.velocity, index).get_or_insert_with(|| vec![0.0; n]);
        check_lengths(name, index, param, grad, vel.len());
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
                trust_coefficient: None,
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
                trust_coefficient: None,
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
            trust_coefficient: None,
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
            trust_coefficient: None,
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

    /// Independent f64 reference of LARS as google-research/simclr computes
    /// it (its velocity has the opposite sign of Keras's; the weights agree).
    fn lars_reference(
        lr: &[f64],
        (mom, nesterov, wd, eta): (f64, bool, f64, f64),
        w0: &[f64],
        grads: &[Vec<f64>],
    ) -> Vec<f64> {
        let mut w = w0.to_vec();
        let mut v = vec![0.0; w.len()];
        for (step, g) in grads.iter().enumerate() {
            let u: Vec<f64> = g.iter().zip(&w).map(|(g, w)| g + wd * w).collect();
            let norm = |x: &[f64]| x.iter().map(|x| x * x).sum::<f64>().sqrt();
            let (wn, un) = (norm(&w), norm(&u));
            let trust = if wn > 0.0 && un > 0.0 {
                eta * wn / un
            } else {
                1.0
            };
            let scaled = lr[step] * trust;
            for i in 0..w.len() {
                v[i] = mom * v[i] + scaled * u[i];
                w[i] -= if nesterov {
                    mom * v[i] + scaled * u[i]
                } else {
                    v[i]
                };
            }
        }
        w
    }

    fn lars(momentum: f32, nesterov: bool, weight_decay: f32, eta: f32) -> SgdConfig {
        SgdConfig {
            momentum,
            nesterov,
            weight_decay,
            trust_coefficient: Some(eta),
        }
    }

    #[test]
    fn lars_matches_the_reference_and_a_hand_computed_step() {
        let w0 = [1.0, -0.5, 0.25, 2.0];
        let lrs = [2.0, 1.0, 4.0, 0.5];
        for (mom, nesterov, wd, eta) in [
            (0.0, false, 0.0, 0.01),
            (0.9, false, 0.0, 0.001),
            (0.9, true, 5e-4, 0.001),
            (0.5, false, 0.1, 0.02),
        ] {
            let cfg = lars(mom as f32, nesterov, wd as f32, eta as f32);
            let got = run(cfg, &lrs, &w0);
            let want = lars_reference(&lrs, (mom, nesterov, wd, eta), &w0, &grads());
            for (g, w) in got.iter().zip(&want) {
                assert!((*g as f64 - w).abs() < 1e-6, "{cfg:?}: {got:?} vs {want:?}");
            }
        }
        // |w| = 5, |g| = 1, eta 0.01, lr 1: ratio 0.05, w - 0.05 g.
        let mut opt = Sgd::new(lars(0.0, false, 0.0, 0.01));
        let mut w = [3.0f32, 4.0];
        opt.begin_step(1.0);
        opt.update(0, &mut w, &[0.6, 0.8]);
        assert!(
            (w[0] - 2.97).abs() < 1e-6 && (w[1] - 3.96).abs() < 1e-6,
            "{w:?}"
        );
        // A zero weight (or gradient) has ratio 1: the plain SGD step.
        let mut w = [0.0f32, 0.0];
        opt.begin_step(0.1);
        opt.update(1, &mut w, &[1.0, 2.0]);
        assert_eq!(w, [-0.1, -0.2]);
        assert_eq!(opt.name(), "lars");
    }

    #[test]
    fn squared_norms_match_an_f64_sum_over_full_lanes_and_the_rest() {
        // 5 full lanes and 3 left over; every lane gets different values.
        for n in [0, 3, NORM_LANES, NORM_LANES * 5 + 3] {
            let w: Vec<f32> = (0..n).map(|i| (i as f32 - 20.0) / 7.0).collect();
            let g: Vec<f32> = (0..n).map(|i| ((i * 5) % 11) as f32 / 3.0 - 1.5).collect();
            let wd = 0.25;
            let want_ww: f64 = w.iter().map(|&w| w as f64 * w as f64).sum();
            let want_uu: f64 = w
                .iter()
                .zip(&g)
                .map(|(&w, &g)| ((g + wd * w) as f64).powi(2))
                .sum();
            let (ww, uu) = squared_norms(wd, &w, &g);
            assert!(
                (ww - want_ww).abs() <= 1e-12 * want_ww,
                "n {n}: {ww} vs {want_ww}"
            );
            assert!(
                (uu - want_uu).abs() <= 1e-12 * want_uu,
                "n {n}: {uu} vs {want_uu}"
            );
        }
    }

    #[test]
    fn lars_turns_a_scaled_kernel_by_the_same_angle() {
        // A kernel a batchnorm follows: scaling it by c scales its gradient
        // by 1 / c. Plain SGD's step then shrinks by 1 / c (relative: 1 /
        // c^2); LARS's grows by c, the same relative step. c = 4 keeps every
        // product exact.
        let (w0, g0) = ([1.0f32, -0.5, 0.25, 2.0], [0.3f32, 0.1, -0.2, 0.05]);
        let step = |c: f32| {
            let mut opt = Sgd::new(lars(0.0, false, 0.0, 0.01));
            let mut w = w0.map(|x| x * c);
            opt.begin_step(1.0);
            opt.update(0, &mut w, &g0.map(|g| g / c));
            w.iter()
                .zip(w0)
                .map(|(w, w0)| w - w0 * c)
                .collect::<Vec<_>>()
        };
        let (small, large) = (step(1.0), step(4.0));
        for (s, l) in small.iter().zip(&large) {
            assert!(
                (l - 4.0 * s).abs() <= 1e-6 * l.abs().max(1e-3),
                "{small:?} {large:?}"
            );
        }
    }

    #[test]
    fn lars_leaves_exempt_parameters_to_plain_sgd() {
        let sgd = SgdConfig {
            momentum: 0.9,
            nesterov: true,
            weight_decay: 5e-4,
            trust_coefficient: None,
        };
        let mut a = Sgd::new(lars(0.9, true, 5e-4, 0.001));
        a.exclude_from_weight_decay(3);
        let mut b = Sgd::new(sgd);
        b.exclude_from_weight_decay(3);
        let (mut wa, mut wb) = (vec![1.0f32, -2.0, 0.5], vec![1.0f32, -2.0, 0.5]);
        for g in [[0.5f32, -1.0, 0.1], [2.0, 0.25, -0.3]] {
            a.begin_step(0.1);
            a.update(3, &mut wa, &g);
            b.begin_step(0.1);
            b.update(3, &mut wb, &g);
        }
        assert_eq!(wa, wb);
    }

    #[test]
    fn lars_gives_the_same_bits_on_any_number_of_threads() {
        let n = PAR_CHUNK * 5 / 2 + 3;
        let w0: Vec<f32> = (0..n).map(|i| ((i % 97) as f32 - 48.0) / 16.0).collect();
        let g: Vec<f32> = (0..n).map(|i| ((i * 7) % 61) as f32 / 30.0 - 1.0).collect();
        let on = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                let mut opt = Sgd::new(lars(0.9, true, 5e-4, 0.001));
                let mut w = w0.clone();
                for _ in 0..2 {
                    opt.begin_step(1.0);
                    opt.update(0, &mut w, &g);
                }
                w
            })
        };
        let one = on(1);
        assert_eq!(one, on(3));
        assert_ne!(one, w0);
    }
}
