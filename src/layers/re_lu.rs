//! Keras's ReLU layer: y = max(x, 0). Its output counts as ReLU'd (`output_relu`), so the
//! gradient reaching it is already masked by y > 0, which is dL/dx: the backward only moves it
//! to dx.

use super::activation_layer::copy_gradient;
use super::{Args, Backward, Forward, LayerKind};
use crate::backend::{ActivationFn, Backend};
use anyhow::Result;

#[derive(Clone, Debug, PartialEq)]
pub struct ReLU;

impl LayerKind for ReLU {
    const CLASS: &'static str = "ReLU";
    const BASE: &'static str = "re_lu";

    fn from_args(args: &Args) -> Result<Self> {
        args.check_keywords(&[])?;
        args.check_positional(0, "ReLU")?;
        Ok(ReLU)
    }

    fn to_args(&self) -> Vec<String> {
        Vec::new()
    }

    fn output_shape(&self, input: &[usize], _is_last: bool) -> Result<Vec<usize>> {
        Ok(input.to_vec())
    }

    fn output_relu(&self) -> bool {
        true
    }

    fn forward<B: Backend>(&self, f: Forward<'_, B>) {
        let len = f.n * f.input.iter().product::<usize>();
        f.backend.activation_forward(f.x, f.y, len, ActivationFn::Relu);
    }

    fn backward<B: Backend>(&self, b: Backward<'_, B>) {
        let Some(dx) = b.dx else { return };
        copy_gradient(b.backend, b.dy, dx, b.input, b.n);
        if let Some(y) = b.relu_y {
            b.backend.relu_backward(y, dx, b.n * b.input.iter().product::<usize>());
        }
    }
}
