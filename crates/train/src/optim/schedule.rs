//! Learning-rate schedules with linear warm-up.
//!
//! Why warm-up: fine-tuning a pretrained network with a freshly initialized
//! head produces large, noisy gradients in the first steps; ramping the
//! learning rate up linearly over a few hundred steps keeps those steps from
//! wrecking the pretrained features (and Adam's second-moment estimate is
//! still poor then).
//!
//! Why linear decay and one-cycle: the fast from-scratch CIFAR recipes warm
//! up and then decay linearly to 0 (`linear`), or run Smith's one-cycle
//! policy (`one-cycle`), which has its own ramp up and so takes no warm-up
//! ([`ScheduleKind::allows_warmup`]).
//!
//! All schedules are pure functions of the global step (0-based), so a
//! resumed run gets exactly the learning rate it would have had.

use std::fmt;
use std::str::FromStr;

/// One-cycle's first learning rate is `base_lr / ONE_CYCLE_DIV_FACTOR`
/// (PyTorch's `div_factor` default).
pub const ONE_CYCLE_DIV_FACTOR: f64 = 25.0;
/// One-cycle's last learning rate is its first divided by this (PyTorch's
/// `final_div_factor` default).
pub const ONE_CYCLE_FINAL_DIV_FACTOR: f64 = 1e4;
/// One-cycle's default fraction of the steps spent ramping up (PyTorch's
/// `pct_start` default).
pub const ONE_CYCLE_PCT_START: f64 = 0.3;

/// Every schedule's syntax, for parse errors.
const SCHEDULE_NAMES: &str = "constant, cosine, linear, one-cycle[:PCT_START] or step:E1,E2,...";

/// Shape of the schedule after warm-up.
#[derive(Clone, Debug, PartialEq)]
pub enum ScheduleKind {
    /// `base_lr` throughout.
    Constant,
    /// Half-cosine from `base_lr` (end of warm-up) to 0 at `total_steps`.
    Cosine,
    /// Straight line from `base_lr` (end of warm-up) to 0 at `total_steps`.
    Linear,
    /// Smith's one-cycle policy exactly as PyTorch's `OneCycleLR` with
    /// `anneal_strategy='linear'`, `three_phase=False`, `div_factor=25`,
    /// `final_div_factor=1e4`, `max_lr = base_lr`: with `T = total_steps`
    /// and `E = pct_start * T - 1` (a real number), step `s <= E` gets
    /// `initial + (base_lr - initial) * s / E` where
    /// `initial = base_lr / 25`, and later steps
    /// `base_lr + (min - base_lr) * (s - E) / (T - 1 - E)` where
    /// `min = initial / 1e4`, which step `T - 1` reaches. Steps from
    /// `T - 1` on hold `min` (PyTorch raises past `T`). Where `E <= 0` (a
    /// ramp under one step, where PyTorch divides by zero) the schedule
    /// starts at the peak. Takes no warm-up: see
    /// [`ScheduleKind::allows_warmup`].
    OneCycle { pct_start: f64 },
    /// Multiply by `factor` once for every milestone epoch reached: the
    /// decay applies from 0-based epoch `e` on, i.e. after `e` full epochs.
    Step { milestones: Vec<usize>, factor: f32 },
}

impl ScheduleKind {
    /// Whether a warm-up may precede this schedule: not one-cycle, whose
    /// first phase is a ramp up of its own (a warm-up would multiply into
    /// it and lower its first steps twice). The caller refuses the
    /// combination; [`LrSchedule::lr`] would apply both.
    pub fn allows_warmup(&self) -> bool {
        !matches!(self, Self::OneCycle { .. })
    }
}

impl FromStr for ScheduleKind {
    type Err = String;

    /// Parses `constant`, `cosine`, `linear`, `one-cycle` (pct_start 0.3),
    /// `one-cycle:P` with `0 < P < 1` (e.g. `one-cycle:0.25`), or
    /// `step:E1,E2,...` (factor 0.1), e.g. `step:30,60`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "constant" => Ok(Self::Constant),
            "cosine" => Ok(Self::Cosine),
            "linear" => Ok(Self::Linear),
            "one-cycle" => Ok(Self::OneCycle {
                pct_start: ONE_CYCLE_PCT_START,
            }),
            _ => {
                if let Some(p) = s.strip_prefix("one-cycle:") {
                    let pct_start = p
                        .trim()
                        .parse::<f64>()
                        .ok()
                        .filter(|p| *p > 0.0 && *p < 1.0)
                        .ok_or_else(|| {
                            format!(
                                "schedule '{s}': pct_start '{p}' must be a number \
                                 between 0 and 1 (exclusive), e.g. one-cycle:0.3"
                            )
                        })?;
                    return Ok(Self::OneCycle { pct_start });
                }
                let list = s
                    .strip_prefix("step:")
                    .ok_or_else(|| format!("unknown schedule '{s}': use {SCHEDULE_NAMES}"))?;
                let milestones = list
                    .split(',')
                    .map(|e| {
                        e.trim()
                            .parse::<usize>()
                            .map_err(|_| format!("schedule '{s}': '{e}' is not an epoch number"))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Self::Step {
                    milestones,
                    factor: 0.1,
                })
            }
        }
    }
}

impl fmt::Display for ScheduleKind {
    /// The parse syntax (`one-cycle:0.3` with its pct_start written out),
    /// except that `step` adds its factor, which the syntax does not have.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Constant => write!(f, "constant"),
            Self::Cosine => write!(f, "cosine"),
            Self::Linear => write!(f, "linear"),
            Self::OneCycle { pct_start } => write!(f, "one-cycle:{pct_start}"),
            Self::Step { milestones, factor } => {
                let m: Vec<String> = milestones.iter().map(|e| e.to_string()).collect();
                write!(f, "step:{} (x{factor})", m.join(","))
            }
        }
    }
}

/// A learning-rate schedule over global steps.
#[derive(Clone, Debug, PartialEq)]
pub struct LrSchedule {
    pub base_lr: f32,
    pub kind: ScheduleKind,
    /// Steps of linear warm-up: step `s < warmup_steps` gets
    /// `lr(s) * (s + 1) / warmup_steps`. 0 disables warm-up.
    pub warmup_steps: u64,
    /// Total optimizer steps of the run (cosine reaches 0 there).
    pub total_steps: u64,
    /// Steps per epoch (for step decay at epoch milestones).
    pub steps_per_epoch: u64,
}

impl LrSchedule {
    pub fn constant(base_lr: f32) -> Self {
        Self {
            base_lr,
            kind: ScheduleKind::Constant,
            warmup_steps: 0,
            total_steps: 0,
            steps_per_epoch: 1,
        }
    }

    /// Learning rate for 0-based global `step`.
    pub fn lr(&self, step: u64) -> f32 {
        let warm = if step < self.warmup_steps {
            (step + 1) as f64 / self.warmup_steps as f64
        } else {
            1.0
        };
        let base = self.base_lr as f64;
        let decayed = match &self.kind {
            ScheduleKind::Constant => base,
            ScheduleKind::Cosine => {
                if step >= self.total_steps {
                    0.0
                } else if step < self.warmup_steps {
                    base
                } else {
                    let span = (self.total_steps - self.warmup_steps) as f64;
                    let progress = (step - self.warmup_steps) as f64 / span;
                    base * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
                }
            }
            ScheduleKind::Linear => {
                if step >= self.total_steps {
                    0.0
                } else if step < self.warmup_steps {
                    base
                } else {
                    let span = (self.total_steps - self.warmup_steps) as f64;
                    base * (self.total_steps - step) as f64 / span
                }
            }
            ScheduleKind::OneCycle { pct_start } => {
                one_cycle(base, *pct_start, step, self.total_steps)
            }
            ScheduleKind::Step { milestones, factor } => {
                let epoch = (step / self.steps_per_epoch.max(1)) as usize;
                let hits = milestones.iter().filter(|&&m| epoch >= m).count();
                base * (*factor as f64).powi(hits as i32)
            }
        };
        (decayed * warm) as f32
    }
}

/// PyTorch's `OneCycleLR` (two phases, linear) at 0-based `step`, its
/// `last_epoch` (see [`ScheduleKind::OneCycle`]).
fn one_cycle(max_lr: f64, pct_start: f64, step: u64, total_steps: u64) -> f64 {
    let initial = max_lr / ONE_CYCLE_DIV_FACTOR;
    let min = initial / ONE_CYCLE_FINAL_DIV_FACTOR;
    if step + 1 >= total_steps {
        return min;
    }
    let (s, last) = (step as f64, (total_steps - 1) as f64);
    let peak = pct_start * total_steps as f64 - 1.0;
    if s <= peak && peak > 0.0 {
        (max_lr - initial) * (s / peak) + initial
    } else {
        (min - max_lr) * ((s - peak) / (last - peak)) + max_lr
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f32, b: f64) -> bool {
        (a as f64 - b).abs() <= 1e-9 + 1e-6 * b.abs()
    }

    #[test]
    fn constant_with_warmup() {
        let s = LrSchedule {
            warmup_steps: 4,
            ..LrSchedule::constant(0.1)
        };
        let got: Vec<f32> = (0..6).map(|i| s.lr(i)).collect();
        for (g, w) in got.iter().zip([0.025, 0.05, 0.075, 0.1, 0.1, 0.1]) {
            assert!(close(*g, w), "{got:?}");
        }
        assert!(close(LrSchedule::constant(0.3).lr(1_000_000), 0.3));
    }

    #[test]
    fn cosine_key_points() {
        let s = LrSchedule {
            base_lr: 1.0,
            kind: ScheduleKind::Cosine,
            warmup_steps: 10,
            total_steps: 110,
            steps_per_epoch: 10,
        };
        assert!(close(s.lr(0), 0.1));
        assert!(close(s.lr(9), 1.0));
        assert!(close(s.lr(10), 1.0)); // start of the cosine
        assert!(close(s.lr(60), 0.5)); // halfway
        assert!(close(
            s.lr(35),
            0.5 * (1.0 + (std::f64::consts::PI * 0.25).cos())
        ));
        assert!(s.lr(109) > 0.0 && s.lr(109) < 1e-3);
        assert_eq!(s.lr(110), 0.0);
        assert_eq!(s.lr(500), 0.0);
        // Monotone non-increasing after warm-up.
        let v: Vec<f32> = (10..=110).map(|i| s.lr(i)).collect();
        assert!(v.windows(2).all(|w| w[1] <= w[0]));
    }

    #[test]
    fn linear_key_points() {
        let s = LrSchedule {
            base_lr: 1.0,
            kind: ScheduleKind::Linear,
            warmup_steps: 10,
            total_steps: 110,
            steps_per_epoch: 10,
        };
        assert!(close(s.lr(0), 0.1)); // warm-up: 1 * 1/10
        assert!(close(s.lr(9), 1.0)); // last warm-up step
        assert!(close(s.lr(10), 1.0)); // start of the line
        assert!(close(s.lr(35), 0.75)); // (110 - 35) / 100
        assert!(close(s.lr(60), 0.5)); // halfway
        assert!(close(s.lr(109), 0.01)); // last step: 1 / 100
        assert_eq!(s.lr(110), 0.0);
        assert_eq!(s.lr(500), 0.0);
        let v: Vec<f32> = (10..=110).map(|i| s.lr(i)).collect();
        assert!(v.windows(2).all(|w| w[1] < w[0]), "{v:?}");
        // Without warm-up the line starts at step 0.
        let cold = LrSchedule {
            base_lr: 0.4,
            warmup_steps: 0,
            total_steps: 8,
            ..s
        };
        assert!(close(cold.lr(0), 0.4) && close(cold.lr(2), 0.3) && close(cold.lr(7), 0.05));
    }

    /// PyTorch's `OneCycleLR(max_lr=1, total_steps=100, pct_start=0.25,
    /// anneal_strategy='linear')`: initial 1/25 = 0.04, min 0.04/1e4 =
    /// 4e-6, the peak at step 0.25 * 100 - 1 = 24, the end at step 99.
    #[test]
    fn one_cycle_key_points() {
        let s = LrSchedule {
            base_lr: 1.0,
            kind: "one-cycle:0.25".parse().unwrap(),
            warmup_steps: 0,
            total_steps: 100,
            steps_per_epoch: 10,
        };
        assert!(close(s.lr(0), 0.04));
        assert!(close(s.lr(12), 0.52)); // halfway up: 0.04 + 0.96 / 2
        assert!(close(s.lr(24), 1.0)); // the peak
        assert!(close(s.lr(39), 0.800_000_8)); // 1 + (4e-6 - 1) * 15/75
        assert!(close(s.lr(98), 1.0 - (1.0 - 4e-6) * 74.0 / 75.0));
        assert!(close(s.lr(99), 4e-6)); // last step: min
        assert!(close(s.lr(100), 4e-6)); // past the end: held at min
        assert!(close(s.lr(10_000), 4e-6));
        let up: Vec<f32> = (0..=24).map(|i| s.lr(i)).collect();
        assert!(up.windows(2).all(|w| w[1] > w[0]), "{up:?}");
        let down: Vec<f32> = (24..=150).map(|i| s.lr(i)).collect();
        assert!(down.windows(2).all(|w| w[1] <= w[0]), "{down:?}");
        assert!(down[..76].windows(2).all(|w| w[1] < w[0]));

        // The default pct_start 0.3 over 1000 steps peaks at step
        // 0.3 * 1000 - 1 = 299.
        let d = LrSchedule {
            base_lr: 0.5,
            kind: "one-cycle".parse().unwrap(),
            total_steps: 1000,
            ..s.clone()
        };
        assert!(close(d.lr(0), 0.02) && close(d.lr(299), 0.5) && close(d.lr(999), 2e-6));
        let short = LrSchedule {
            total_steps: 10,
            ..d.clone()
        };
        // peak 2: steps 0, 1, 2 up, then (2e-6 - 0.5) * (s - 2) / 7 + 0.5.
        assert!(close(short.lr(1), 0.02 + 0.48 / 2.0) && close(short.lr(2), 0.5));
        assert!(close(short.lr(5), (2e-6 - 0.5) * 3.0 / 7.0 + 0.5));
        // A ramp under one step (0.05 * 10 - 1 < 0) starts at the peak.
        let no_ramp = LrSchedule {
            kind: "one-cycle:0.05".parse().unwrap(),
            ..short
        };
        assert!(close(no_ramp.lr(0), (2e-6 - 0.5) * 0.5 / 9.5 + 0.5));
    }

    #[test]
    fn names_round_trip_and_one_cycle_refuses_warmup() {
        for name in [
            "constant",
            "cosine",
            "linear",
            "one-cycle:0.3",
            "one-cycle:0.25",
        ] {
            let kind: ScheduleKind = name.parse().unwrap();
            assert_eq!(kind.to_string(), name);
            assert_eq!(kind.to_string().parse::<ScheduleKind>(), Ok(kind));
        }
        let default: ScheduleKind = "one-cycle".parse().unwrap();
        assert_eq!(default, ScheduleKind::OneCycle { pct_start: 0.3 });
        assert_eq!(
            default.to_string().parse::<ScheduleKind>(),
            Ok(default.clone())
        );
        assert!(!default.allows_warmup());
        for name in ["constant", "cosine", "linear", "step:3"] {
            assert!(
                name.parse::<ScheduleKind>().unwrap().allows_warmup(),
                "{name}"
            );
        }
    }

    #[test]
    fn step_decay_at_milestones() {
        let s = LrSchedule {
            base_lr: 0.1,
            kind: "step:2,4".parse().unwrap(),
            warmup_steps: 0,
            total_steps: 600,
            steps_per_epoch: 100,
        };
        assert!(close(s.lr(0), 0.1));
        assert!(close(s.lr(199), 0.1)); // last step of epoch 1
        assert!(close(s.lr(200), 0.01)); // first step of epoch 2
        assert!(close(s.lr(399), 0.01));
        assert!(close(s.lr(400), 0.001));
        assert!(close(s.lr(599), 0.001));
        let warm = LrSchedule {
            warmup_steps: 50,
            ..s.clone()
        };
        assert!(close(warm.lr(24), 0.1 * 25.0 / 50.0));
    }

    #[test]
    fn parse_errors_are_helpful() {
        assert_eq!("cosine".parse::<ScheduleKind>(), Ok(ScheduleKind::Cosine));
        let err = "sometimes".parse::<ScheduleKind>().unwrap_err();
        for name in ["constant", "cosine", "linear", "one-cycle", "step:"] {
            assert!(err.contains(name), "{err}");
        }
        for bad in [
            "one-cycle:0",
            "one-cycle:1",
            "one-cycle:x",
            "one-cycle:-0.2",
        ] {
            let err = bad.parse::<ScheduleKind>().unwrap_err();
            assert!(
                err.contains(bad) && err.contains("between 0 and 1"),
                "{err}"
            );
        }
        assert!("step:3,x"
            .parse::<ScheduleKind>()
            .unwrap_err()
            .contains("'x'"));
    }
}
