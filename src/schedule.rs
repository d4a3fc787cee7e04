//! The learning rate of every training step (`--lr-schedule`, `--warmup-epochs`): a pure
//! function of the schedule, the base rate, the global step and the steps per epoch, so a
//! resumed run continues exactly. Computed in f64 and rounded once to f32, so both backends
//! (and every run) get the same rate bits.

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

/// `--lr-schedule`: how the rate moves after the warmup.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ScheduleKind {
    /// The base rate throughout.
    #[default]
    Constant,
    /// Keras's CosineDecay (alpha 0) from the base rate to 0 over the steps after the warmup.
    Cosine,
    /// The base rate times 0.1 every `step_epochs` epochs (PyTorch's StepLR, gamma 0.1).
    Step,
    /// PyTorch's OneCycleLR (cos annealing, pct_start 0.3, div_factor 25, final_div_factor 1e4)
    /// with the base rate as max_lr, over the steps after the warmup.
    Onecycle,
}

/// A learning-rate schedule as the run planned it (stored in checkpoints as `lr_schedule`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LrSchedule {
    pub kind: ScheduleKind,
    /// Epochs of linear warmup from 0 to the base rate before the schedule starts.
    pub warmup_epochs: usize,
    /// `step`: epochs between each x0.1.
    pub step_epochs: usize,
    /// The epochs the schedule spans (the run's `--epochs` when it was planned).
    pub epochs: usize,
}

impl Default for LrSchedule {
    fn default() -> Self {
        LrSchedule { kind: ScheduleKind::Constant, warmup_epochs: 0, step_epochs: 1, epochs: 1 }
    }
}

/// The most epochs a schedule may span (a checkpoint claiming more is damaged).
pub const MAX_EPOCHS: usize = 1 << 24;

/// `step` with no `--lr-step-epochs`: a third of the epochs, rounded up (three levels: 1, 0.1,
/// 0.01 of the base rate).
pub fn default_step_epochs(epochs: usize) -> usize {
    epochs.div_ceil(3).max(1)
}

impl LrSchedule {
    /// Plans `kind` over `epochs` epochs; each size is checked here, once.
    pub fn new(kind: ScheduleKind, warmup_epochs: usize, step_epochs: Option<usize>, epochs: usize) -> Result<LrSchedule> {
        if epochs == 0 || epochs > MAX_EPOCHS {
            bail!("a schedule over {epochs} epochs: give 1 to {MAX_EPOCHS}");
        }
        if warmup_epochs >= epochs && warmup_epochs > 0 {
            bail!("--warmup-epochs {warmup_epochs} must be less than --epochs {epochs} (the schedule starts after the warmup)");
        }
        if step_epochs.is_some() && kind != ScheduleKind::Step {
            bail!("--lr-step-epochs is for --lr-schedule step");
        }
        if step_epochs.is_some_and(|s| s == 0 || s > MAX_EPOCHS) {
            bail!("--lr-step-epochs must be 1 to {MAX_EPOCHS}");
        }
        if kind == ScheduleKind::Constant && warmup_epochs == 0 {
            return Ok(LrSchedule::default());
        }
        let step_epochs = match kind {
            ScheduleKind::Step => step_epochs.unwrap_or_else(|| default_step_epochs(epochs)),
            _ => 1,
        };
        Ok(LrSchedule { kind, warmup_epochs, step_epochs, epochs })
    }

    /// Checks a schedule read from a file (it may be hostile).
    pub fn validate(&self) -> Result<()> {
        if self.epochs == 0 || self.epochs > MAX_EPOCHS || self.warmup_epochs > self.epochs || self.step_epochs == 0 || self.step_epochs > MAX_EPOCHS {
            bail!(
                "a {:?} schedule over {} epochs with {} warmup epochs and a step every {} epochs is not one gpu-cnn writes",
                self.kind,
                self.epochs,
                self.warmup_epochs,
                self.step_epochs
            );
        }
        Ok(())
    }

    /// True when every step gets the base rate.
    pub fn is_constant(&self) -> bool {
        self.kind == ScheduleKind::Constant && self.warmup_epochs == 0
    }

    /// The rate of the step with 0-based index `step` (Keras's `optimizer.iterations` before
    /// the update), `base` being `--learning-rate`.
    pub fn rate(&self, base: f32, step: u64, steps_per_epoch: usize) -> f64 {
        let lr = base as f64;
        let per_epoch = steps_per_epoch.max(1) as u64;
        let warmup = (self.warmup_epochs as u64).saturating_mul(per_epoch);
        if step < warmup {
            // Keras's CosineDecay warmup from initial_learning_rate 0 to warmup_target:
            // `(warmup_target - 0) * (step / warmup_steps) + 0`.
            return lr * (step as f64 / warmup as f64);
        }
        let t = step - warmup;
        let span = (self.epochs as u64).saturating_mul(per_epoch).saturating_sub(warmup).max(1);
        match self.kind {
            ScheduleKind::Constant => lr,
            ScheduleKind::Cosine => {
                // Keras CosineDecay._decay_function with alpha 0: the step is capped at
                // decay_steps, then `lr * 0.5 * (1 + cos(pi * step / decay_steps))`.
                let fraction = t.min(span) as f64 / span as f64;
                lr * 0.5 * (1.0 + (std::f64::consts::PI * fraction).cos())
            }
            ScheduleKind::Step => {
                // StepLR: `lr * gamma ** (epoch // step_size)`, counted in steps here. Past 400
                // drops the rate is 0 in f64 anyway.
                let drops = (t / (self.step_epochs as u64).saturating_mul(per_epoch)).min(400);
                lr * 0.1f64.powi(drops as i32)
            }
            ScheduleKind::Onecycle => one_cycle(lr, t, span),
        }
    }

    /// "cosine, 2 warmup epochs" and the like, for the report and the log.
    pub fn describe(&self) -> String {
        let kind = match self.kind {
            ScheduleKind::Constant => "constant".to_string(),
            ScheduleKind::Cosine => format!("cosine to 0 over {} epochs", self.epochs - self.warmup_epochs.min(self.epochs)),
            ScheduleKind::Step => format!("step (x0.1 every {} epochs)", self.step_epochs),
            ScheduleKind::Onecycle => format!("onecycle over {} epochs", self.epochs - self.warmup_epochs.min(self.epochs)),
        };
        match self.warmup_epochs {
            0 => kind,
            n => format!("{kind} after {n} warmup epoch{}", if n == 1 { "" } else { "s" }),
        }
    }
}

/// PyTorch's OneCycleLR.get_lr (anneal_strategy "cos", three_phase False) at step `t` of
/// `total_steps`: phase 1 ends at `pct_start * total_steps - 1` going from max_lr / div_factor
/// up to max_lr, phase 2 ends at `total_steps - 1` going down to initial_lr / final_div_factor,
/// each by `_annealing_cos(start, end, pct) = end + (start - end) / 2 * (cos(pi * pct) + 1)`.
/// Steps past the end stay at the final rate (PyTorch refuses them).
fn one_cycle(max_lr: f64, t: u64, total_steps: u64) -> f64 {
    const PCT_START: f64 = 0.3;
    const DIV_FACTOR: f64 = 25.0;
    const FINAL_DIV_FACTOR: f64 = 1e4;
    let initial_lr = max_lr / DIV_FACTOR;
    let min_lr = initial_lr / FINAL_DIV_FACTOR;
    let anneal = |start: f64, end: f64, pct: f64| end + (start - end) / 2.0 * ((std::f64::consts::PI * pct).cos() + 1.0);
    let phase1_end = PCT_START * total_steps as f64 - 1.0;
    let phase2_end = total_steps as f64 - 1.0;
    let s = t as f64;
    if s <= phase1_end {
        anneal(initial_lr, max_lr, s / phase1_end)
    } else {
        let pct = ((s - phase1_end) / (phase2_end - phase1_end)).min(1.0);
        anneal(max_lr, min_lr, pct)
    }
}
