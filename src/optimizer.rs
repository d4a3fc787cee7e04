//! The optimizers `train --optimizer` offers, with Keras 3's names, defaults and formulas
//! (keras/src/optimizers/{adam,adamw,sgd,rmsprop}.py; the per-element update of each is in
//! the CPU backend, src/backend/cpu/optimizers.rs, and its WGSL twin in shaders/).
//!
//! The learning rate is not part of an `Optimizer`: it stays the run's own setting
//! (`Network::learning_rate`, the checkpoint's `learning_rate`), as a schedule changes it.
//! Checkpoints store an optimizer as JSON in the metadata key `optimizer`, Keras's
//! `get_config` names: `{"name":"sgd","momentum":0.9,"nesterov":false}`. A checkpoint without
//! the key is from before optimizers could be chosen: Adam with Keras's defaults.

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

/// An optimizer and its hyper-parameters (learning rate aside).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "lowercase", deny_unknown_fields)]
pub enum Optimizer {
    /// keras.optimizers.Adam: m += (g - m)(1 - beta_1), v += (g^2 - v)(1 - beta_2),
    /// p -= lr sqrt(1 - beta_2^t) / (1 - beta_1^t) * m / (sqrt(v) + epsilon).
    Adam { beta_1: f32, beta_2: f32, epsilon: f32 },
    /// keras.optimizers.AdamW: Adam after the decoupled weight decay every Keras optimizer
    /// applies first (base_optimizer.py `_apply_weight_decay`): p = p - p * weight_decay * lr,
    /// on every trainable variable (Keras excludes none by default, biases included).
    #[serde(rename = "adamw")]
    AdamW { beta_1: f32, beta_2: f32, epsilon: f32, weight_decay: f32 },
    /// keras.optimizers.SGD: p -= g * lr; with momentum m = m * momentum - g * lr, then
    /// p += m, or with Nesterov p += m * momentum - g * lr.
    Sgd { momentum: f32, nesterov: bool },
    /// keras.optimizers.RMSprop (momentum 0, centered false): v = rho v + (1 - rho) g^2,
    /// p -= lr g / sqrt(v + epsilon).
    #[serde(rename = "rmsprop")]
    RmsProp { rho: f32, epsilon: f32 },
}

impl Default for Optimizer {
    fn default() -> Self {
        Optimizer::keras_default(OptimizerName::Adam)
    }
}

/// The optimizers by name, as `--optimizer` takes them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OptimizerName {
    Adam,
    AdamW,
    Sgd,
    RmsProp,
}

impl OptimizerName {
    pub const ALL: [OptimizerName; 4] = [OptimizerName::Adam, OptimizerName::AdamW, OptimizerName::Sgd, OptimizerName::RmsProp];

    pub fn as_str(self) -> &'static str {
        match self {
            OptimizerName::Adam => "adam",
            OptimizerName::AdamW => "adamw",
            OptimizerName::Sgd => "sgd",
            OptimizerName::RmsProp => "rmsprop",
        }
    }

    /// Parses `adam`, `adamw`, `sgd` or `rmsprop` (case-insensitive, as Keras's strings).
    pub fn parse(text: &str) -> Result<Self> {
        let lower = text.to_ascii_lowercase();
        match OptimizerName::ALL.iter().find(|n| n.as_str() == lower) {
            Some(n) => Ok(*n),
            None => bail!("unknown optimizer '{text}': use adam, adamw, sgd or rmsprop"),
        }
    }

    /// Keras's default learning rate for this optimizer (SGD 0.01, the others 0.001).
    pub fn default_learning_rate(self) -> f32 {
        match self {
            OptimizerName::Sgd => 0.01,
            _ => 0.001,
        }
    }
}

/// Hyper-parameters given on the command line (None: the default, or the checkpoint's).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct OptimizerFlags {
    pub optimizer: Option<OptimizerName>,
    pub momentum: Option<f32>,
    pub nesterov: bool,
    pub weight_decay: Option<f32>,
    pub rho: Option<f32>,
    pub epsilon: Option<f32>,
}

impl Optimizer {
    /// The optimizer with Keras's defaults (AdamW's weight_decay 0.004).
    pub fn keras_default(name: OptimizerName) -> Self {
        match name {
            OptimizerName::Adam => Optimizer::Adam { beta_1: 0.9, beta_2: 0.999, epsilon: 1e-7 },
            OptimizerName::AdamW => Optimizer::AdamW { beta_1: 0.9, beta_2: 0.999, epsilon: 1e-7, weight_decay: 0.004 },
            OptimizerName::Sgd => Optimizer::Sgd { momentum: 0.0, nesterov: false },
            OptimizerName::RmsProp => Optimizer::RmsProp { rho: 0.9, epsilon: 1e-7 },
        }
    }

    pub fn name(&self) -> OptimizerName {
        match self {
            Optimizer::Adam { .. } => OptimizerName::Adam,
            Optimizer::AdamW { .. } => OptimizerName::AdamW,
            Optimizer::Sgd { .. } => OptimizerName::Sgd,
            Optimizer::RmsProp { .. } => OptimizerName::RmsProp,
        }
    }

    /// The names of the per-parameter state tensors, as checkpoint suffixes
    /// (`<param>.<slot>`): Keras's variable names, except that Adam and AdamW keep this
    /// project's older `adam_m` / `adam_v` so earlier checkpoints load.
    pub fn slot_names(&self) -> &'static [&'static str] {
        match self {
            Optimizer::Adam { .. } | Optimizer::AdamW { .. } => &["adam_m", "adam_v"],
            // Keras builds no momentum variables when momentum is 0.
            Optimizer::Sgd { momentum, .. } if *momentum == 0.0 => &[],
            Optimizer::Sgd { .. } => &["momentum"],
            Optimizer::RmsProp { .. } => &["velocity"],
        }
    }

    /// Every state-tensor suffix any optimizer uses (what a checkpoint may hold besides weights).
    pub const ALL_SLOT_NAMES: [&'static str; 4] = ["adam_m", "adam_v", "momentum", "velocity"];

    /// The optimizer a run uses: the checkpoint's when resuming (`stored`), else `flags`'s
    /// choice with Keras's defaults; hyper-parameter flags override either. A flag that does
    /// not belong to the optimizer, or a different --optimizer on resume, is an error.
    pub fn from_flags(flags: &OptimizerFlags, stored: Option<Optimizer>) -> Result<Self> {
        let mut opt = match (stored, flags.optimizer) {
            (Some(s), Some(name)) if s.name() != name => bail!(
                "the checkpoint was trained with --optimizer {} and holds its state; --optimizer {} cannot continue it (leave --optimizer out, or start a fresh run)",
                s.name().as_str(),
                name.as_str()
            ),
            (Some(s), _) => s,
            (None, name) => Optimizer::keras_default(name.unwrap_or(OptimizerName::Adam)),
        };
        let which = opt.name().as_str();
        let misplaced = |flag: &str, belongs: &str| -> Result<()> { bail!("{flag} applies to --optimizer {belongs}, not {which}") };
        match &mut opt {
            Optimizer::Sgd { momentum, nesterov } => {
                if let Some(m) = flags.momentum {
                    *momentum = m;
                }
                *nesterov |= flags.nesterov;
            }
            _ if flags.momentum.is_some() => misplaced("--momentum", "sgd")?,
            _ if flags.nesterov => misplaced("--nesterov", "sgd")?,
            _ => {}
        }
        if let Some(wd) = flags.weight_decay {
            match &mut opt {
                Optimizer::AdamW { weight_decay, .. } => *weight_decay = wd,
                _ => misplaced("--weight-decay", "adamw")?,
            }
        }
        if let Some(r) = flags.rho {
            match &mut opt {
                Optimizer::RmsProp { rho, .. } => *rho = r,
                _ => misplaced("--rho", "rmsprop")?,
            }
        }
        if let Some(e) = flags.epsilon {
            match &mut opt {
                Optimizer::Adam { epsilon, .. } | Optimizer::AdamW { epsilon, .. } | Optimizer::RmsProp { epsilon, .. } => *epsilon = e,
                Optimizer::Sgd { .. } => misplaced("--epsilon", "adam, adamw or rmsprop")?,
            }
        }
        if stored.is_some_and(|s| s.slot_names() != opt.slot_names()) {
            bail!("the checkpoint's optimizer state does not fit {}: --momentum cannot turn momentum on or off when resuming", opt.describe());
        }
        opt.check().map_err(|e| anyhow::anyhow!("--{e}"))?;
        Ok(opt)
    }

    /// Checks every hyper-parameter is in Keras's range (finite, betas/rho in [0, 1),
    /// momentum in [0, 1], epsilon > 0, weight decay >= 0). The error starts with the flag's
    /// name without dashes (`momentum must be ...`), so callers prefix `--` or a file name.
    pub fn check(&self) -> Result<()> {
        let unit_open = |name: &str, v: f32| -> Result<()> {
            if !(0.0..1.0).contains(&v) {
                bail!("{name} must be at least 0 and below 1 (got {v})");
            }
            Ok(())
        };
        let non_negative = |name: &str, v: f32| -> Result<()> {
            if !(v >= 0.0 && v.is_finite()) {
                bail!("{name} must be a finite number at least 0 (got {v})");
            }
            Ok(())
        };
        // Keras allows 0, but then a weight whose gradients have all been 0 (a dead unit's
        // bias) gets 0 / 0 = NaN on its first step: a run that can only diverge.
        let positive = |name: &str, v: f32| -> Result<()> {
            if !(v > 0.0 && v.is_finite()) {
                bail!("{name} must be a finite number above 0 (got {v}); 0 divides 0 by 0 for weights without gradient");
            }
            Ok(())
        };
        match *self {
            Optimizer::Adam { beta_1, beta_2, epsilon } => {
                unit_open("beta_1", beta_1)?;
                unit_open("beta_2", beta_2)?;
                positive("epsilon", epsilon)
            }
            Optimizer::AdamW { beta_1, beta_2, epsilon, weight_decay } => {
                unit_open("beta_1", beta_1)?;
                unit_open("beta_2", beta_2)?;
                positive("epsilon", epsilon)?;
                non_negative("weight-decay", weight_decay)
            }
            Optimizer::Sgd { momentum, .. } => {
                // Keras: "`momentum` must be a float between [0, 1]".
                if !(0.0..=1.0).contains(&momentum) {
                    bail!("momentum must be between 0 and 1 (got {momentum})");
                }
                Ok(())
            }
            Optimizer::RmsProp { rho, epsilon } => {
                unit_open("rho", rho)?;
                positive("epsilon", epsilon)
            }
        }
    }

    /// One line for logs and reports: `sgd (momentum 0.9, nesterov)`.
    pub fn describe(&self) -> String {
        match *self {
            Optimizer::Adam { beta_1, beta_2, epsilon } => format!("adam (beta_1 {beta_1}, beta_2 {beta_2}, epsilon {epsilon})"),
            Optimizer::AdamW { beta_1, beta_2, epsilon, weight_decay } => {
                format!("adamw (weight_decay {weight_decay}, beta_1 {beta_1}, beta_2 {beta_2}, epsilon {epsilon})")
            }
            Optimizer::Sgd { momentum, nesterov } => format!("sgd (momentum {momentum}{})", if nesterov { ", nesterov" } else { "" }),
            Optimizer::RmsProp { rho, epsilon } => format!("rmsprop (rho {rho}, epsilon {epsilon})"),
        }
    }

    /// The metadata value (JSON with Keras's field names).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("an optimizer serialises")
    }

    /// Reads the metadata value, checking every hyper-parameter.
    pub fn from_json(text: &str) -> Result<Self> {
        let opt: Optimizer = serde_json::from_str(text)?;
        opt.check()?;
        Ok(opt)
    }
}

/// Checks `--label-smoothing` (Keras's CategoricalCrossentropy accepts [0, 1]).
pub fn check_label_smoothing(f: f32) -> Result<()> {
    if !(0.0..=1.0).contains(&f) {
        bail!("label smoothing must be between 0 and 1 (got {f})");
    }
    Ok(())
}
