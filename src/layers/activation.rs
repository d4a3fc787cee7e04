//! The `activation=` of Conv2D, DepthwiseConv2D, SeparableConv2D and Dense, and Keras 3's
//! activation function names.
//!
//! ReLU is fused into the producing kernel (forward) and into the consumer's input-gradient
//! kernel (backward, the `relu_y` mask), so it costs no pass of its own. Softmax is only allowed
//! on the last Dense layer, where the loss applies it. The other element-wise functions (leaky
//! ReLU, ELU, GELU, sigmoid, tanh, swish) are not fused: the layer declares two scratch tensors
//! (`ActivatedOutput::scratch`), writes its linear output into the first, applies the backend's
//! element-wise forward into y, and in backward copies dy into the second and turns it into
//! d(linear output) with the element-wise backward before its own gradients. A standalone
//! `ReLU` / `Activation(name)` layer uses the same element-wise ops on its x and y.

use super::activation_layer::copy_gradient;
use super::{Scratch, ScratchKind, ScratchSpec};
use crate::backend::{ActivationFn, Backend};
use anyhow::{bail, Result};

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Activation {
    None,
    Relu,
    Softmax,
    /// An element-wise function other than ReLU, applied after the layer's linear output.
    Function(ActivationFn),
}

/// Keras 3's activation function names (keras.activations), with the functions' defaults
/// (leaky_relu's negative_slope 0.2, elu's alpha 1).
pub fn parse_function(name: &str) -> Result<ActivationFn> {
    Ok(match name.to_ascii_lowercase().as_str() {
        "relu" => ActivationFn::Relu,
        "leaky_relu" => ActivationFn::LeakyRelu { negative_slope: 0.2 },
        "elu" => ActivationFn::Elu { alpha: 1.0 },
        "gelu" => ActivationFn::Gelu,
        "sigmoid" => ActivationFn::Sigmoid,
        "tanh" => ActivationFn::Tanh,
        "swish" | "silu" => ActivationFn::Swish,
        "softmax" => bail!("softmax is only supported as the last Dense layer's activation (it is fused into the loss)"),
        _ => bail!("unknown activation '{name}' (relu, leaky_relu, elu, gelu, sigmoid, tanh, swish/silu, softmax on the last Dense, or none)"),
    })
}

/// The Keras name of a function (`parse_function` reads it back equal).
pub fn function_name(f: ActivationFn) -> &'static str {
    match f {
        ActivationFn::Relu => "relu",
        ActivationFn::LeakyRelu { .. } => "leaky_relu",
        ActivationFn::Elu { .. } => "elu",
        ActivationFn::Gelu => "gelu",
        ActivationFn::Sigmoid => "sigmoid",
        ActivationFn::Tanh => "tanh",
        ActivationFn::Swish => "swish",
    }
}

impl Activation {
    /// Keras's names (case-insensitive); `none` and `linear` are the identity.
    pub fn parse(text: &str) -> Result<Activation> {
        match text.to_ascii_lowercase().as_str() {
            "relu" => Ok(Activation::Relu),
            "softmax" => Ok(Activation::Softmax),
            "none" | "linear" => Ok(Activation::None),
            _ => Ok(Activation::Function(parse_function(text)?)),
        }
    }

    /// Whether `text` names an activation (an activation word among positional arguments).
    pub fn is_name(text: &str) -> bool {
        Activation::parse(text).is_ok()
    }

    pub fn word(self) -> &'static str {
        match self {
            Activation::None => "none",
            Activation::Relu => "relu",
            Activation::Softmax => "softmax",
            Activation::Function(f) => function_name(f),
        }
    }

    /// Applied inside the producing kernel; its gradient mask comes from y > 0.
    pub fn is_fused_relu(self) -> bool {
        self == Activation::Relu
    }

    /// The element-wise function applied after the linear output when it is not fused.
    pub fn unfused(self) -> Option<ActivationFn> {
        match self {
            Activation::Function(f) => Some(f),
            _ => None,
        }
    }
}

/// A layer's linear output followed by its activation: what the forward and backward of
/// Conv2D, DepthwiseConv2D, SeparableConv2D and Dense share. `out_len` is the output's values
/// per image.
pub struct ActivatedOutput {
    pub activation: Activation,
    pub out_len: usize,
}

impl ActivatedOutput {
    /// The pre-activation and its gradient (one output each per image) for an unfused
    /// function; nothing otherwise. A layer puts these last in its own scratch list.
    pub fn scratch(&self) -> Vec<ScratchSpec> {
        match self.activation.unfused() {
            Some(_) => vec![ScratchSpec::per_image(ScratchKind::Tensor, self.out_len); 2],
            None => Vec::new(),
        }
    }

    /// Runs `linear(out, relu)`, which writes the layer's linear output into `out` (with the
    /// fused ReLU when `relu`), then the unfused function: into `scratch[0]` and from there
    /// into y. `scratch` is the layer's scratch from where `Self::scratch`'s entries begin.
    pub fn forward<B: Backend>(&self, backend: &B, n: usize, y: &mut B::Tensor, scratch: &mut [Scratch<B>], linear: impl FnOnce(&mut B::Tensor, bool)) {
        match self.activation.unfused() {
            Some(f) => {
                let pre = scratch[0].tensor_mut();
                linear(pre, false);
                backend.activation_forward(pre, y, n * self.out_len, f);
            }
            None => linear(y, self.activation.is_fused_relu()),
        }
    }

    /// The gradient at the linear output: `dy` itself (a fused ReLU's mask is already in it),
    /// or dy * f'(pre-activation) written into `scratch[1]`.
    pub fn linear_gradient<'a, B: Backend>(&self, backend: &B, n: usize, y: &B::Tensor, dy: &'a B::Tensor, scratch: &'a mut [Scratch<B>]) -> &'a B::Tensor {
        let Some(f) = self.activation.unfused() else { return dy };
        let (pre, dpre) = scratch.split_at_mut(1);
        let dpre = dpre[0].tensor_mut();
        copy_gradient(backend, dy, dpre, &[self.out_len], n);
        backend.activation_backward(pre[0].tensor(), y, dpre, n * self.out_len, f);
        dpre
    }
}
