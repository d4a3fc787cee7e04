//! The `activation=` of Conv2D and Dense.
//!
//! ReLU is fused into the producing kernel (forward) and into the consumer's input-gradient
//! kernel (backward, the `relu_y` mask), so it costs no pass of its own. Softmax is only allowed
//! on the last layer, where the loss applies it. An elementwise activation added later (leaky
//! ReLU, ELU, GELU, sigmoid, tanh, swish) is not fused: the layer declares a scratch tensor for
//! its pre-activation (`pre_activation_scratch`), writes the linear output there, applies the
//! backend's elementwise forward into y, and in backward turns dy into d(pre-activation) with the
//! elementwise backward before its own gradients. A standalone `ReLU` / `Activation(name)` layer
//! uses the same elementwise ops on its x and y.

use anyhow::{bail, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    None,
    Relu,
    Softmax,
}

impl Activation {
    /// Keras's names (case-insensitive); `none` and `linear` are the identity.
    pub fn parse(text: &str) -> Result<Activation> {
        match text.to_ascii_lowercase().as_str() {
            "relu" => Ok(Activation::Relu),
            "softmax" => Ok(Activation::Softmax),
            "none" | "linear" => Ok(Activation::None),
            _ => bail!("unknown activation '{text}' (relu, softmax or none)"),
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
        }
    }

    /// Applied inside the producing kernel; its gradient mask comes from y > 0.
    pub fn is_fused_relu(self) -> bool {
        self == Activation::Relu
    }

    /// Whether the layer must keep its pre-activation in a scratch tensor (an unfused
    /// elementwise activation; none exists yet: ReLU is fused and softmax is the loss's).
    pub fn pre_activation_scratch(self) -> bool {
        false
    }
}
