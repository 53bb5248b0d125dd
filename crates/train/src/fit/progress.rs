//! What a run shows while it trains: a live bar on a terminal, a line every
//! tenth of an epoch into a log file, and one summary line per epoch.
//!
//! Why two forms: a bar redrawn in place is the best view on a terminal
//! and garbage in a log file (every redraw is kept), where a line now and
//! then tells the same story. Keras's `verbose=1` / `verbose=2`.

use super::{BatchLogs, Callback, EpochBegin, EpochLogs};
use crate::trainer::Trainer;
use anyhow::Result;
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;

/// Prints a run's progress to stdout (lines) and stderr (the bar).
pub struct ProgressDisplay {
    /// Show progress within an epoch (bar or tenth-of-an-epoch lines).
    within_epoch: bool,
    /// A terminal: the bar; otherwise lines.
    live: bool,
    bar: ProgressBar,
}

impl ProgressDisplay {
    /// The bar when stderr is a terminal, lines every tenth of an epoch
    /// otherwise; a line per epoch either way.
    pub fn auto() -> Self {
        Self::new(true, std::io::stderr().is_terminal())
    }

    /// Only the line per epoch (`--quiet`).
    pub fn epochs_only() -> Self {
        Self::new(false, false)
    }

    fn new(within_epoch: bool, live: bool) -> Self {
        ProgressDisplay {
            within_epoch,
            live,
            bar: ProgressBar::hidden(),
        }
    }
}

fn bar_style() -> ProgressStyle {
    ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg} ETA {eta}")
        .expect("valid template")
        .progress_chars("=> ")
}

impl Callback for ProgressDisplay {
    fn on_epoch_begin(&mut self, _: &mut Trainer, begin: &EpochBegin) -> Result<()> {
        if self.within_epoch && self.live {
            self.bar = ProgressBar::new(begin.steps as u64);
            self.bar.set_style(bar_style());
            self.bar
                .set_prefix(format!("epoch {}/{}", begin.epoch + 1, begin.epochs));
            self.bar.set_position(begin.first_step as u64);
        }
        Ok(())
    }

    fn on_train_batch_end(&mut self, _: &mut Trainer, logs: &BatchLogs) -> Result<()> {
        if !self.within_epoch {
            return Ok(());
        }
        let status = format!(
            "loss {:.4} acc {:.4} {:.0} img/s",
            logs.loss, logs.accuracy, logs.images_per_s
        );
        if self.live {
            self.bar.set_message(status);
            self.bar.inc(1);
        } else if (logs.step + 1).is_multiple_of((logs.steps / 10).max(1)) {
            println!(
                "epoch {}/{} step {}/{}: {status}",
                logs.epoch + 1,
                logs.epochs,
                logs.step + 1,
                logs.steps
            );
        }
        Ok(())
    }

    fn on_epoch_end(&mut self, _: &mut Trainer, logs: &EpochLogs) -> Result<()> {
        self.bar.finish_and_clear();
        self.bar = ProgressBar::hidden();
        println!("{}", epoch_line(logs));
        Ok(())
    }

    fn on_train_end(&mut self, _: &mut Trainer, _: &super::FitSummary) -> Result<()> {
        // Interrupted in the middle of an epoch: keep the bar where it was.
        self.bar.abandon();
        Ok(())
    }
}

/// `epoch 3/10: train loss .. acc .. | val loss .. acc .. | test loss .. acc
/// .. | ema val acc .. | ema test acc .. | 41.2s (.. train img/s, .. eval
/// img/s)`, the `ema` parts when the trainer keeps a moving average (only
/// its accuracies: the line is long enough; the losses are in
/// `metrics.csv`).
pub fn epoch_line(logs: &EpochLogs) -> String {
    let r = &logs.record;
    let mut line = format!(
        "epoch {}/{}: train loss {:.4} acc {:.4}",
        r.epoch, logs.epochs, r.train_loss, r.train_acc
    );
    let (mut images, mut seconds) = (0, 0.0);
    for (name, eval) in [("val", &logs.val), ("test", &logs.test)] {
        if let Some(e) = eval {
            line += &format!(" | {name} loss {:.4} acc {:.4}", e.loss, e.accuracy);
            images += e.images;
            seconds += e.seconds;
        }
    }
    for (name, eval) in [("val", &logs.ema_val), ("test", &logs.ema_test)] {
        if let Some(e) = eval {
            line += &format!(" | ema {name} acc {:.4}", e.accuracy);
            images += e.images;
            seconds += e.seconds;
        }
    }
    line += &format!(
        " | {:.1}s ({:.0} train img/s",
        r.seconds, logs.train_images_per_s
    );
    if images > 0 {
        line += &format!(", {:.0} eval img/s", images as f64 / seconds.max(1e-9));
    }
    line + ")"
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evaluate::EvalResult;
    use crate::metrics::ConfusionMatrix;
    use crate::report::EpochRecord;
    use crate::run_state::Progress;

    fn eval(loss: f64, accuracy: f64) -> EvalResult {
        EvalResult {
            loss,
            accuracy,
            confusion: ConfusionMatrix::new(&["a".to_string()]),
            images: 100,
            seconds: 0.5,
        }
    }

    #[test]
    fn the_epoch_line_keeps_its_format_and_adds_validation() {
        let mut logs = EpochLogs {
            record: EpochRecord {
                epoch: 3,
                lr: 1e-4,
                train_loss: 1.23456,
                train_acc: 0.5,
                val_loss: None,
                val_acc: None,
                test_loss: Some(0.9),
                test_acc: Some(0.7),
                seconds: 41.25,
                ema_val_loss: None,
                ema_val_acc: None,
                ema_test_loss: None,
                ema_test_acc: None,
            },
            epochs: 10,
            val: None,
            test: Some(eval(0.9, 0.7)),
            ema_val: None,
            ema_test: None,
            train_images_per_s: 230.4,
            next: Progress::default(),
        };
        assert_eq!(
            epoch_line(&logs),
            "epoch 3/10: train loss 1.2346 acc 0.5000 | test loss 0.9000 acc 0.7000 | 41.2s (230 train img/s, 200 eval img/s)"
        );
        logs.val = Some(eval(1.0, 0.6));
        assert_eq!(
            epoch_line(&logs),
            "epoch 3/10: train loss 1.2346 acc 0.5000 | val loss 1.0000 acc 0.6000 | test loss 0.9000 acc 0.7000 | 41.2s (230 train img/s, 200 eval img/s)"
        );
        logs.ema_test = Some(eval(0.8, 0.75));
        assert_eq!(
            epoch_line(&logs),
            "epoch 3/10: train loss 1.2346 acc 0.5000 | val loss 1.0000 acc 0.6000 | test loss 0.9000 acc 0.7000 | ema test acc 0.7500 | 41.2s (230 train img/s, 200 eval img/s)"
        );
        logs.ema_val = Some(eval(0.7, 0.625));
        assert!(
            epoch_line(&logs).contains("| ema val acc 0.6250 | ema test acc 0.7500 |"),
            "{}",
            epoch_line(&logs)
        );
        logs.val = None;
        logs.test = None;
        logs.ema_val = None;
        logs.ema_test = None;
        assert_eq!(
            epoch_line(&logs),
            "epoch 3/10: train loss 1.2346 acc 0.5000 | 41.2s (230 train img/s)"
        );
    }
}
