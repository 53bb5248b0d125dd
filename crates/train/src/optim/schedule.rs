//! Learning-rate schedules with linear warm-up.
//!
//! Why warm-up: fine-tuning a pretrained network with a freshly initialized
//! head produces large, noisy gradients in the first steps; ramping the
//! learning rate up linearly over a few hundred steps keeps those steps from
//! wrecking the pretrained features (and Adam's second-moment estimate is
//! still poor then).
//!
//! All schedules are pure functions of the global step (0-based), so a
//! resumed run gets exactly the learning rate it would have had.

use std::fmt;
use std::str::FromStr;

/// Shape of the schedule after warm-up.
#[derive(Clone, Debug, PartialEq)]
pub enum ScheduleKind {
    /// `base_lr` throughout.
    Constant,
    /// Half-cosine from `base_lr` (end of warm-up) to 0 at `total_steps`.
    Cosine,
    /// Multiply by `factor` once for every milestone epoch reached: the
    /// decay applies from 0-based epoch `e` on, i.e. after `e` full epochs.
    Step { milestones: Vec<usize>, factor: f32 },
}

impl FromStr for ScheduleKind {
    type Err = String;

    /// Parses `constant`, `cosine`, or `step:E1,E2,...` (factor 0.1), e.g.
    /// `step:30,60`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "constant" => Ok(Self::Constant),
            "cosine" => Ok(Self::Cosine),
            _ => {
                let list = s.strip_prefix("step:").ok_or_else(|| {
                    format!("unknown schedule '{s}': use constant, cosine or step:E1,E2,...")
                })?;
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
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Constant => write!(f, "constant"),
            Self::Cosine => write!(f, "cosine"),
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
            ScheduleKind::Step { milestones, factor } => {
                let epoch = (step / self.steps_per_epoch.max(1)) as usize;
                let hits = milestones.iter().filter(|&&m| epoch >= m).count();
                base * (*factor as f64).powi(hits as i32)
            }
        };
        (decayed * warm) as f32
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
        assert!("linear"
            .parse::<ScheduleKind>()
            .unwrap_err()
            .contains("constant, cosine or step"));
        assert!("step:3,x"
            .parse::<ScheduleKind>()
            .unwrap_err()
            .contains("'x'"));
    }
}
