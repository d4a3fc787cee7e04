//! Keras's `Activation(name)` and `LeakyReLU(negative_slope=0.3)` layers: an element-wise
//! function (src/backend/activation.rs). The backward moves dy to dx (a 1x1 average pool with
//! stride 1, an exact copy, keeps this to the ops every backend has) and multiplies it in place
//! by f'(x).

use super::activation::{function_name, parse_function};
use super::{Args, Backward, Forward, LayerKind};
use crate::backend::{ActivationFn, Backend, PoolShape};
use anyhow::{bail, Result};

/// dx = dy for `n` images of shape `input`: a 1x1 average pool with stride 1 (dividing by 1 is
/// exact), so element-wise layers need no copy op of their own.
pub(super) fn copy_gradient<B: Backend>(backend: &B, dy: &B::Tensor, dx: &mut B::Tensor, input: &[usize], n: usize) {
    let pixels = PoolShape::valid((1, 1, input.iter().product()), (1, 1), (1, 1)).expect("a 1x1 window fits");
    backend.avgpool_backward(dy, dx, &pixels, n);
}

fn forward<B: Backend>(f: Forward<'_, B>, function: ActivationFn) {
    let len = f.n * f.input.iter().product::<usize>();
    f.backend.activation_forward(f.x, f.y, len, function);
}

fn backward<B: Backend>(b: Backward<'_, B>, function: ActivationFn) {
    let Some(dx) = b.dx else { return };
    let len = b.n * b.input.iter().product::<usize>();
    copy_gradient(b.backend, b.dy, dx, b.input, b.n);
    b.backend.activation_backward(b.x, b.y, dx, len, function);
    if let Some(y) = b.relu_y {
        b.backend.relu_backward(y, dx, len);
    }
}

/// `Activation("gelu")`.
#[derive(Clone, Debug, PartialEq)]
pub struct ActivationLayer {
    pub function: ActivationFn,
}

impl LayerKind for ActivationLayer {
    const CLASS: &'static str = "Activation";
    const BASE: &'static str = "activation";

    fn from_args(args: &Args) -> Result<Self> {
        args.check_keywords(&["activation"])?;
        args.check_positional(1, "Activation(\"NAME\")")?;
        let Some(name) = args.get(0, &["activation"])? else { bail!("Activation needs a function name, e.g. Activation(\"gelu\")") };
        Ok(ActivationLayer { function: parse_function(name.text().unwrap_or("?"))? })
    }

    fn to_args(&self) -> Vec<String> {
        vec![format!("\"{}\"", function_name(self.function))]
    }

    fn output_shape(&self, input: &[usize], _is_last: bool) -> Result<Vec<usize>> {
        Ok(input.to_vec())
    }

    fn forward<B: Backend>(&self, f: Forward<'_, B>) {
        forward(f, self.function)
    }

    fn backward<B: Backend>(&self, b: Backward<'_, B>) {
        backward(b, self.function)
    }
}

/// Keras's LeakyReLU layer (its default slope, 0.3, differs from the function's 0.2).
#[derive(Clone, Debug, PartialEq)]
pub struct LeakyReLU {
    pub negative_slope: f32,
}

const LEAKY_DEFAULT: f32 = 0.3;

impl LayerKind for LeakyReLU {
    const CLASS: &'static str = "LeakyReLU";
    const BASE: &'static str = "leaky_re_lu";

    fn from_args(args: &Args) -> Result<Self> {
        args.check_keywords(&["negative_slope", "alpha"])?;
        args.check_positional(1, "LeakyReLU(negative_slope=0.3)")?;
        let slope = args.get(0, &["negative_slope", "alpha"])?.map(|v| v.number("negative_slope")).transpose()?.map_or(LEAKY_DEFAULT, |v| v as f32);
        if slope < 0.0 {
            bail!("LeakyReLU: negative_slope {slope} is negative");
        }
        Ok(LeakyReLU { negative_slope: slope })
    }

    fn to_args(&self) -> Vec<String> {
        if self.negative_slope == LEAKY_DEFAULT {
            Vec::new()
        } else {
            vec![format!("negative_slope={}", self.negative_slope)]
        }
    }

    fn output_shape(&self, input: &[usize], _is_last: bool) -> Result<Vec<usize>> {
        Ok(input.to_vec())
    }

    fn forward<B: Backend>(&self, f: Forward<'_, B>) {
        forward(f, ActivationFn::LeakyRelu { negative_slope: self.negative_slope })
    }

    fn backward<B: Backend>(&self, b: Backward<'_, B>) {
        backward(b, ActivationFn::LeakyRelu { negative_slope: self.negative_slope })
    }
}
