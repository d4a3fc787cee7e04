//! Keras's two epoch-end callbacks on val_loss, as plain state machines whose state is stored in
//! checkpoints so a resumed run continues them exactly: `--early-stopping PATIENCE`
//! (EarlyStopping(monitor="val_loss", min_delta=0, restore_best_weights=True)) and
//! `--reduce-lr-on-plateau PATIENCE` (ReduceLROnPlateau(monitor="val_loss", factor=0.1,
//! min_delta=1e-4, cooldown=0, min_lr=0)). The `on_epoch_end` bodies follow Keras 3's
//! keras/src/callbacks/early_stopping.py and reduce_lr_on_plateau.py line by line.

use crate::network::HostTensor;
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

/// EarlyStopping's state. Epochs are 1-based (0: none).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EarlyStopping {
    pub patience: usize,
    /// The lowest val_loss so far (as text: JSON numbers do not round-trip every f64 here).
    #[serde(with = "exact_f64")]
    pub best: f64,
    pub wait: usize,
    /// The epoch whose weights are restored at the end.
    pub best_epoch: usize,
    /// The epoch that stopped the run (0: it has not stopped).
    pub stopped_epoch: usize,
    /// The weights at the end of `best_epoch` (host copies, named as the model's weights);
    /// checkpoints store them as `<weight>.best_weights` when that is not their own epoch.
    #[serde(skip)]
    pub best_weights: Option<Vec<HostTensor>>,
}

/// What EarlyStopping decided at an epoch's end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EarlyStop {
    /// A new best: keep this epoch's weights.
    Improved,
    Continue,
    /// Patience ran out: stop after this epoch.
    Stop,
}

impl EarlyStopping {
    pub fn new(patience: usize) -> EarlyStopping {
        EarlyStopping { patience, best: f64::INFINITY, wait: 0, best_epoch: 0, stopped_epoch: 0, best_weights: None }
    }

    /// Keras's on_epoch_end for `epoch` (1-based) with its `val_loss`. The caller keeps the
    /// weights on `Improved` (and on the first epoch seen, Keras's "best weights never set").
    pub fn on_epoch_end(&mut self, epoch: usize, val_loss: f64) -> EarlyStop {
        if self.best_epoch == 0 {
            self.best_epoch = epoch;
        }
        self.wait += 1;
        // _is_improvement with min_delta 0 in "min" mode: `current < best`.
        if val_loss < self.best {
            self.best = val_loss;
            self.best_epoch = epoch;
            self.wait = 0;
            return EarlyStop::Improved;
        }
        // Keras's `epoch > 0` is 0-based: never on the first epoch.
        if self.wait >= self.patience && epoch > 1 {
            self.stopped_epoch = epoch;
            return EarlyStop::Stop;
        }
        EarlyStop::Continue
    }

    fn validate(&self) -> Result<()> {
        if self.best.is_nan() || self.stopped_epoch > crate::schedule::MAX_EPOCHS || self.best_epoch > crate::schedule::MAX_EPOCHS {
            bail!("early_stopping state {self:?} is not one gpu-cnn writes");
        }
        Ok(())
    }
}

/// ReduceLROnPlateau's state; its rate is the schedule's times 0.1^reductions.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReduceLrOnPlateau {
    pub patience: usize,
    #[serde(with = "exact_f64")]
    pub best: f64,
    pub wait: usize,
    pub cooldown_counter: usize,
    /// How many times the rate was multiplied by FACTOR.
    pub reductions: u32,
}

impl ReduceLrOnPlateau {
    pub const FACTOR: f64 = 0.1;
    pub const MIN_DELTA: f64 = 1e-4;
    pub const COOLDOWN: usize = 0;
    /// Keras's min_lr 0: a rate above it is always reduced.
    pub const MIN_LR: f64 = 0.0;
    /// More reductions than this leave no f32 rate (0.1^50 of any f32 rounds to 0).
    const MAX_REDUCTIONS: u32 = 64;

    pub fn new(patience: usize) -> ReduceLrOnPlateau {
        ReduceLrOnPlateau { patience, best: f64::INFINITY, wait: 0, cooldown_counter: 0, reductions: 0 }
    }

    /// The factor on the schedule's rate.
    pub fn factor(&self) -> f64 {
        Self::FACTOR.powi(self.reductions as i32)
    }

    /// Keras's on_epoch_end with `val_loss` and the rate the epoch ended with; true when it
    /// lowered the rate.
    pub fn on_epoch_end(&mut self, val_loss: f64, current_rate: f64) -> bool {
        if self.cooldown_counter > 0 {
            self.cooldown_counter -= 1;
            self.wait = 0;
        }
        if val_loss < self.best - Self::MIN_DELTA {
            self.best = val_loss;
            self.wait = 0;
        } else if self.cooldown_counter == 0 {
            self.wait += 1;
            if self.wait >= self.patience && current_rate > Self::MIN_LR && self.reductions < Self::MAX_REDUCTIONS {
                self.reductions += 1;
                self.cooldown_counter = Self::COOLDOWN;
                self.wait = 0;
                return true;
            }
        }
        false
    }

    fn validate(&self) -> Result<()> {
        if self.best.is_nan() || self.reductions > Self::MAX_REDUCTIONS {
            bail!("reduce_lr_on_plateau state {self:?} is not one gpu-cnn writes");
        }
        Ok(())
    }
}

/// Everything about a run's learning rate beyond its base value: the schedule and the two
/// callbacks' states (None: not used). Old checkpoints: constant, no callbacks.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Recipe {
    pub schedule: crate::schedule::LrSchedule,
    pub early_stopping: Option<EarlyStopping>,
    pub reduce_lr: Option<ReduceLrOnPlateau>,
}

impl Recipe {
    /// The rate of the 0-based global `step`.
    pub fn rate(&self, base: f32, step: u64, steps_per_epoch: usize) -> f32 {
        let factor = self.reduce_lr.as_ref().map_or(1.0, ReduceLrOnPlateau::factor);
        (self.schedule.rate(base, step, steps_per_epoch) * factor) as f32
    }

    /// Checks a recipe read from a checkpoint.
    pub fn validate(&self) -> Result<()> {
        self.schedule.validate()?;
        if let Some(e) = &self.early_stopping {
            e.validate()?;
        }
        if let Some(r) = &self.reduce_lr {
            r.validate()?;
        }
        Ok(())
    }
}

/// An f64 as its shortest exact decimal text ("inf" included), which Rust parses back to the
/// same bits.
mod exact_f64 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(|_| serde::de::Error::custom(format!("'{text}' is not a number")))
    }
}
