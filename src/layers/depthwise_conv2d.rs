//! Keras's DepthwiseConv2D: each input channel c convolved with its own `depth_multiplier`
//! filters, giving output channel c * depth_multiplier + m; `depthwise_kernel` (kh, kw, in_c,
//! depth_multiplier), optional `bias` (in_c * depth_multiplier), `dilation_rate`, activation
//! (ReLU fused, the others after; activation.rs).

use super::activation::ActivatedOutput;
use super::convolution::{split_bias, ConvArgs};
use super::geometry::tensor_values;
use super::{Args, Backward, Forward, Init, LayerKind, ParamSpec, ScratchSpec};
use crate::backend::{Backend, DepthwiseShape};
use anyhow::Result;

#[derive(Clone, Debug, PartialEq)]
pub struct DepthwiseConv2D {
    pub conv: ConvArgs,
    pub depth_multiplier: usize,
}

const USAGE: &str = "DepthwiseConv2D(KERNEL, strides=1, padding=\"valid\"|\"same\", depth_multiplier=1, dilation_rate=1, use_bias=True, activation=None)";

/// Keras's glorot_uniform fans of a (kh, kw, in, out)-shaped kernel: the receptive field
/// kh * kw times the second-last and the last dimension (keras/src/initializers
/// `compute_fans`), so a depthwise kernel's fans are kh * kw * in_c and kh * kw * multiplier.
pub fn glorot_4d(dims: [usize; 4]) -> Init {
    let field = dims[0] * dims[1];
    Init::GlorotUniform { fan_in: field * dims[2], fan_out: field * dims[3] }
}

/// The depthwise geometry of `conv` with `multiplier` on an input `try_shape` accepts.
pub fn try_depthwise_shape(conv: &ConvArgs, multiplier: usize, input: &[usize], class: &str) -> Result<DepthwiseShape> {
    let channels = *input.last().unwrap_or(&0);
    let Some(out_c) = channels.checked_mul(multiplier) else { anyhow::bail!("{channels} channels times depth_multiplier {multiplier} is too large") };
    let s = conv.try_shape(input, out_c, class)?;
    tensor_values(&[s.k_h, s.k_w, channels, multiplier], "the depthwise kernel")?;
    tensor_values(&[s.out_h, s.out_w, out_c], "the depthwise output")?;
    Ok(DepthwiseShape::from_conv(&s, multiplier))
}

impl DepthwiseConv2D {
    /// The geometry on a per-image input shape that `output_shape` accepted.
    pub fn shape(&self, input: &[usize]) -> DepthwiseShape {
        try_depthwise_shape(&self.conv, self.depth_multiplier, input, Self::CLASS).expect("Model::new checked the kernel fits")
    }
    fn output(&self, s: &DepthwiseShape) -> ActivatedOutput {
        ActivatedOutput { activation: self.conv.activation, out_len: s.out_len() }
    }
}

impl LayerKind for DepthwiseConv2D {
    const CLASS: &'static str = "DepthwiseConv2D";
    const BASE: &'static str = "depthwise_conv2d";

    fn from_args(args: &Args) -> Result<Self> {
        // Keras's positional order: kernel_size, strides, padding, depth_multiplier.
        let parsed = ConvArgs::parse(args, &[&["kernel_size"], &["strides", "stride"], &["padding"], &["depth_multiplier"]], &["depth_multiplier"], USAGE)?;
        let depth_multiplier = parsed.slots[0].map(|v| v.positive("depth_multiplier")).transpose()?.unwrap_or(1);
        Ok(DepthwiseConv2D { conv: parsed.conv, depth_multiplier })
    }

    fn to_args(&self) -> Vec<String> {
        let mut out = self.conv.window_args();
        if self.depth_multiplier != 1 {
            out.push(format!("depth_multiplier={}", self.depth_multiplier));
        }
        out.extend(self.conv.output_args());
        out
    }

    fn output_shape(&self, input: &[usize], _is_last: bool) -> Result<Vec<usize>> {
        let s = try_depthwise_shape(&self.conv, self.depth_multiplier, input, Self::CLASS)?;
        Ok(vec![s.out_h, s.out_w, s.out_c()])
    }

    /// `depthwise_kernel` (kh, kw, in_c, depth_multiplier) and, with `use_bias`, `bias`.
    fn params(&self, input: &[usize]) -> Vec<ParamSpec> {
        let s = self.shape(input);
        let dims = [s.k_h, s.k_w, s.channels, s.multiplier];
        self.conv.with_bias(vec![ParamSpec::trainable("depthwise_kernel", dims.to_vec(), glorot_4d(dims))], s.out_c())
    }

    fn scratch(&self, input: &[usize]) -> Vec<ScratchSpec> {
        self.output(&self.shape(input)).scratch()
    }

    fn output_relu(&self) -> bool {
        self.conv.activation.is_fused_relu()
    }

    fn forward<B: Backend>(&self, f: Forward<'_, B>) {
        let s = self.shape(f.input);
        let (kernel, bias) = (&f.params[0], f.params.get(1));
        let (backend, x, n) = (f.backend, f.x, f.n);
        self.output(&s).forward(backend, n, f.y, f.scratch, |y, relu| backend.depthwise_conv2d_forward(x, kernel, bias, y, &s, n, relu));
    }

    fn backward<B: Backend>(&self, b: Backward<'_, B>) {
        let s = self.shape(b.input);
        let dy = self.output(&s).linear_gradient(b.backend, b.n, b.y, b.dy, b.scratch);
        let (dw, db) = split_bias(b.grads, 1);
        b.backend.depthwise_conv2d_backward_filter(b.x, dy, &mut dw[0], db, &s, b.n);
        if let Some(dx) = b.dx {
            b.backend.depthwise_conv2d_backward_input(dy, &b.params[0], dx, &s, b.n);
            if let Some(y) = b.relu_y {
                b.backend.relu_backward(y, dx, b.n * s.in_len());
            }
        }
    }
}
