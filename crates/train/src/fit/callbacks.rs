//! The hooks [`super::fit`] calls, in the order it calls them.
//!
//! The same hooks as Keras's `keras.callbacks.Callback`, under the same
//! names: `on_train_begin`, `on_epoch_begin`, `on_train_batch_end`,
//! `on_epoch_end`, `on_train_end`; and Keras's `model.stop_training = True`
//! is [`Callback::should_stop`]. Two differences, both for resuming:
//!
//! - `on_train_begin` receives the history of the epochs finished before a
//!   resume. A Keras-style callback's state (best value so far, epochs
//!   waited) is a function of the epoch logs it has seen, so replaying that
//!   history rebuilds exactly the state it had when the run stopped, with
//!   no state file of its own.
//! - A hook receives the [`Trainer`] itself (Keras's `self.model`), to read
//!   or replace the weights or to scale the learning rate.

use super::{BatchLogs, EpochBegin, EpochLogs, FitSummary, TrainBegin};
use crate::trainer::Trainer;
use anyhow::Result;

/// Something that watches (and may steer) a [`super::fit`] run. Every hook
/// has an empty default; implement the ones you need.
#[allow(unused_variables)]
pub trait Callback {
    /// Before the first step (also of a resumed run: see the module doc).
    fn on_train_begin(&mut self, trainer: &mut Trainer, begin: &TrainBegin) -> Result<()> {
        Ok(())
    }

    /// Before the first step of an epoch (for a resumed epoch, before the
    /// first step still to take).
    fn on_epoch_begin(&mut self, trainer: &mut Trainer, begin: &EpochBegin) -> Result<()> {
        Ok(())
    }

    /// After every optimizer step.
    fn on_train_batch_end(&mut self, trainer: &mut Trainer, logs: &BatchLogs) -> Result<()> {
        Ok(())
    }

    /// After an epoch's training and evaluation.
    fn on_epoch_end(&mut self, trainer: &mut Trainer, logs: &EpochLogs) -> Result<()> {
        Ok(())
    }

    /// Once, however the run ended (all epochs done, stopped, interrupted),
    /// unless it ended with an error.
    fn on_train_end(&mut self, trainer: &mut Trainer, summary: &FitSummary) -> Result<()> {
        Ok(())
    }

    /// Asked after every step and every epoch: `true` ends the run there.
    /// After a step, the run ends [`super::EndReason::Interrupted`] (it can
    /// be resumed from that step); after an epoch,
    /// [`super::EndReason::StoppedEarly`].
    fn should_stop(&self) -> bool {
        false
    }
}
