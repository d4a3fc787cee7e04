//! What Keras's Conv2D, DepthwiseConv2D and SeparableConv2D share: the window (`kernel_size`,
//! `strides`, `padding`, `dilation_rate`), `use_bias` and `activation`, read and written once,
//! and the window's geometry.

use super::geometry::{dilated_conv_shape, image_input, Padding, MAX_TENSOR_VALUES};
use super::{format_pair, split_activation, Activation, Args, Init, ParamSpec, Value};
use crate::backend::ConvShape;
use anyhow::{bail, Result};

/// The keywords every conv layer takes (each layer adds its own: filters, depth_multiplier).
pub const CONV_KEYWORDS: &[&str] = &["kernel_size", "strides", "stride", "padding", "dilation_rate", "use_bias", "activation"];

fn slot_names<'a>(slots: &'a [&[&str]]) -> impl Iterator<Item = &'a str> + 'a {
    slots.iter().map(|s| s[0])
}

/// A convolution window and its output's bias and activation, as the arch text wrote them.
#[derive(Clone, Debug, PartialEq)]
pub struct ConvArgs {
    pub kernel: (usize, usize),
    pub strides: (usize, usize),
    pub padding: Padding,
    /// Keras's `dilation_rate`: taps this many pixels apart (1: a plain conv).
    pub dilation: (usize, usize),
    /// Keras's `use_bias`: without it the layer has no `bias` tensor at all.
    pub use_bias: bool,
    pub activation: Activation,
}

/// A conv layer's call read once: the shared arguments and the positional-or-keyword slots
/// the layer itself reads (filters, depth_multiplier).
pub struct ParsedConv<'a> {
    pub conv: ConvArgs,
    /// Slot i of the layer's `slots`: its positional argument or keyword, None if absent.
    pub slots: Vec<Option<&'a Value>>,
}

impl ConvArgs {
    /// Reads a conv layer's call. `slots` names the positional arguments in Keras's order
    /// (after an activation word is taken out); it must contain "kernel_size", "strides" and
    /// "padding" (their values land in `ConvArgs`, not in `ParsedConv::slots`). `keywords`
    /// are the layer's own keywords besides `CONV_KEYWORDS`.
    pub fn parse<'a>(args: &'a Args, slots: &[&[&str]], keywords: &[&str], usage: &str) -> Result<ParsedConv<'a>> {
        let allowed: Vec<&str> = CONV_KEYWORDS.iter().chain(keywords).copied().collect();
        args.check_keywords(&allowed)?;
        let (activation, rest) = split_activation(args)?;
        if rest.len() > slots.len() {
            bail!("{} takes at most {} positional arguments: {usage}", args.class, slots.len());
        }
        let mut values = Vec::new();
        for (i, names) in slots.iter().enumerate() {
            match (rest.get(i), args.keyword(names)) {
                (Some(_), Some(_)) => bail!("{}: '{}' is given both by position and as a keyword", args.class, names[0]),
                (p, k) => values.push(p.copied().or(k)),
            }
        }
        let slot = |name: &str| slots.iter().position(|s| s[0] == name).and_then(|i| values[i]);
        let needs = if slot_names(slots).any(|s| s == "filters") { "filters and a kernel size" } else { "a kernel size" };
        let Some(kernel) = slot("kernel_size") else { bail!("{} needs {needs}: {usage}", args.class) };
        if slot_names(slots).any(|s| s == "filters") && slot("filters").is_none() {
            bail!("{} needs {needs}: {usage}", args.class);
        }
        let conv = ConvArgs {
            kernel: kernel.pair("kernel size")?,
            strides: slot("strides").map(|v| v.pair("strides")).transpose()?.unwrap_or((1, 1)),
            padding: slot("padding").map(|v| Padding::parse(v.text().unwrap_or("?"))).transpose()?.unwrap_or(Padding::Valid),
            dilation: args.keyword(&["dilation_rate"]).map(|v| v.pair("dilation_rate")).transpose()?.unwrap_or((1, 1)),
            use_bias: args.keyword(&["use_bias"]).map(|v| v.boolean("use_bias")).transpose()?.unwrap_or(true),
            activation: activation.unwrap_or(Activation::None),
        };
        // Keras refuses the combination (keras/src/layers/convolutional/base_conv.py).
        if (conv.strides.0 > 1 || conv.strides.1 > 1) && (conv.dilation.0 > 1 || conv.dilation.1 > 1) {
            bail!("{}: strides > 1 is not supported together with dilation_rate > 1 (as in Keras)", args.class);
        }
        let kept = slots.iter().zip(values).filter(|(s, _)| !["kernel_size", "strides", "padding"].contains(&s[0])).map(|(_, v)| v).collect();
        Ok(ParsedConv { conv, slots: kept })
    }

    /// The window's arguments back in Keras syntax: the kernel size, then the non-defaults.
    pub fn window_args(&self) -> Vec<String> {
        let mut out = vec![format_pair(self.kernel)];
        if self.strides != (1, 1) {
            out.push(format!("strides={}", format_pair(self.strides)));
        }
        if self.padding != Padding::Valid {
            out.push(format!("padding=\"{}\"", self.padding.word()));
        }
        if self.dilation != (1, 1) {
            out.push(format!("dilation_rate={}", format_pair(self.dilation)));
        }
        out
    }

    /// The layer's kernels, then with `use_bias` a zero-initialised `bias` of `out_c` values
    /// (Keras's order); without it there is no bias tensor at all.
    pub fn with_bias(&self, mut kernels: Vec<ParamSpec>, out_c: usize) -> Vec<ParamSpec> {
        if self.use_bias {
            kernels.push(ParamSpec::trainable("bias", vec![out_c], Init::Zeros));
        }
        kernels
    }

    /// `use_bias` and `activation` back in Keras syntax, where not the defaults.
    pub fn output_args(&self) -> Vec<String> {
        let mut out = Vec::new();
        if !self.use_bias {
            out.push("use_bias=False".to_string());
        }
        if self.activation != Activation::None {
            out.push(format!("activation=\"{}\"", self.activation.word()));
        }
        out
    }

    /// The geometry of `filters` outputs on an (h, w, c) input, or why the window does not fit.
    pub fn try_shape(&self, input: &[usize], filters: usize, class: &str) -> Result<ConvShape> {
        let (h, w, c) = image_input(input, class)?;
        let (k, s, d) = (self.kernel, self.strides, self.dilation);
        if filters == 0 || [k.0, k.1, s.0, s.1, d.0, d.1].contains(&0) {
            bail!("filters, kernel size, stride and dilation rate must be at least 1");
        }
        if self.activation == Activation::Softmax {
            bail!("{class} takes an element-wise activation or none, not softmax (softmax only on the last Dense)");
        }
        // The dilated extent stays far from overflow in the kernels' index arithmetic.
        let extent = |k: usize, d: usize| (k - 1).checked_mul(d).and_then(|v| v.checked_add(1)).filter(|&e| e <= MAX_TENSOR_VALUES);
        let (Some(eh), Some(ew)) = (extent(k.0, d.0), extent(k.1, d.1)) else {
            bail!("a {}x{} kernel with dilation rate {} spans more than {MAX_TENSOR_VALUES} pixels", k.0, k.1, format_pair(d))
        };
        match dilated_conv_shape((h, w, c), filters, k, s, d, self.padding) {
            Some(shape) => Ok(shape),
            None if d == (1, 1) => bail!("a {}x{} kernel does not fit its {h}x{w} input (use padding=same or a smaller kernel)", k.0, k.1),
            None => bail!("a {}x{} kernel with dilation rate {} spans {eh}x{ew} pixels and does not fit its {h}x{w} input", k.0, k.1, format_pair(d)),
        }
    }
}

/// A conv layer's gradients (`Backward::grads`) split into its `kernels` kernels' and its
/// bias's, None without a bias.
pub fn split_bias<T>(grads: &mut [T], kernels: usize) -> (&mut [T], Option<&mut T>) {
    let (kernel, bias) = grads.split_at_mut(kernels);
    (kernel, bias.first_mut())
}
