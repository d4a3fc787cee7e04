//! Keras's Dropout(rate): inverted dropout in training, the identity in evaluate and predict.
//! The mask is a counter-based hash of (seed, step, layer, element) (src/backend/dropout.rs), so
//! both backends and a resumed run draw the same masks and none is stored.

use super::{Args, Backward, Forward, LayerKind, ScratchKind, ScratchSpec};
use crate::backend::dropout::{step_key, DropoutMask};
use crate::backend::Backend;
use anyhow::{bail, Result};

#[derive(Clone, Debug, PartialEq)]
pub struct Dropout {
    pub rate: f32,
}

const USAGE: &str = "Dropout(RATE) with RATE in [0, 1)";

impl Dropout {
    fn mask(&self, layer: usize) -> DropoutMask {
        DropoutMask::new(self.rate, layer as u32).expect("from_args checked the rate")
    }
}

impl LayerKind for Dropout {
    const CLASS: &'static str = "Dropout";
    const BASE: &'static str = "dropout";

    fn from_args(args: &Args) -> Result<Self> {
        args.check_keywords(&["rate"])?;
        args.check_positional(1, USAGE)?;
        let Some(rate) = args.get(0, &["rate"])? else { bail!("Dropout needs a rate: {USAGE}") };
        let rate = rate.number("Dropout rate")? as f32;
        if !(0.0..1.0).contains(&rate) {
            bail!("Dropout rate {rate} is not in [0, 1)");
        }
        Ok(Dropout { rate })
    }

    fn to_args(&self) -> Vec<String> {
        vec![self.rate.to_string()]
    }

    fn output_shape(&self, input: &[usize], _is_last: bool) -> Result<Vec<usize>> {
        Ok(input.to_vec())
    }

    /// The step's key (2 u32), uploaded by the training forward for its backward.
    fn scratch(&self, _input: &[usize]) -> Vec<ScratchSpec> {
        vec![ScratchSpec::fixed(ScratchKind::Indices, 2)]
    }

    fn forward<B: Backend>(&self, f: Forward<'_, B>) {
        let len = f.n * f.input.iter().product::<usize>();
        let key = f.scratch[0].indices_mut();
        // In inference, and at rate 0, the mask keeps everything and scales by 1: the identity.
        let mask = if f.training { self.mask(f.layer) } else { DropoutMask::new(0.0, 0).expect("rate 0 is valid") };
        if f.training {
            f.backend.upload_indices(key, &step_key(f.seed, f.step));
        }
        f.backend.dropout(f.x, f.y, len, key, &mask);
    }

    fn backward<B: Backend>(&self, b: Backward<'_, B>) {
        let Some(dx) = b.dx else { return };
        let len = b.n * b.input.iter().product::<usize>();
        b.backend.dropout(b.dy, dx, len, b.scratch[0].indices(), &self.mask(b.layer));
        if let Some(y) = b.relu_y {
            b.backend.relu_backward(y, dx, len);
        }
    }
}
