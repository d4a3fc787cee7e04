//! Keras's SeparableConv2D: a depthwise conv (no bias) into a scratch tensor t, then a 1x1 conv
//! of t with `bias`, then the activation. Tensors in Keras's order: `depthwise_kernel` (kh, kw,
//! in_c, depth_multiplier), `pointwise_kernel` (1, 1, in_c * depth_multiplier, filters), `bias`
//! (filters, with `use_bias`). Backward: dt = the 1x1 conv's input gradient (in a second scratch
//! tensor), then the depthwise gradients from dt.

use super::activation::ActivatedOutput;
use super::convolution::{split_bias, ConvArgs};
use super::depthwise_conv2d::{glorot_4d, try_depthwise_shape};
use super::geometry::{conv_shape, tensor_values, Padding};
use super::{Args, Backward, Forward, LayerKind, ParamSpec, ScratchKind, ScratchSpec};
use crate::backend::{Backend, ConvShape, DepthwiseShape};
use anyhow::{bail, Result};

#[derive(Clone, Debug, PartialEq)]
pub struct SeparableConv2D {
    pub filters: usize,
    pub conv: ConvArgs,
    pub depth_multiplier: usize,
}

const USAGE: &str =
    "SeparableConv2D(FILTERS, KERNEL, strides=1, padding=\"valid\"|\"same\", depth_multiplier=1, dilation_rate=1, use_bias=True, activation=None)";

impl SeparableConv2D {
    /// The depthwise and the pointwise (1x1) geometry, or why they do not fit the input.
    fn try_shapes(&self, input: &[usize]) -> Result<(DepthwiseShape, ConvShape)> {
        let d = try_depthwise_shape(&self.conv, self.depth_multiplier, input, Self::CLASS)?;
        if self.filters == 0 {
            bail!("filters must be at least 1");
        }
        let p = conv_shape((d.out_h, d.out_w, d.out_c()), self.filters, (1, 1), (1, 1), Padding::Valid).expect("a 1x1 kernel fits");
        tensor_values(&[1, 1, p.in_c, p.out_c], "the pointwise kernel")?;
        tensor_values(&[p.out_h, p.out_w, p.out_c], "the output")?;
        Ok((d, p))
    }
    /// The geometry on a per-image input shape that `output_shape` accepted.
    pub fn shapes(&self, input: &[usize]) -> (DepthwiseShape, ConvShape) {
        self.try_shapes(input).expect("Model::new checked the kernel fits")
    }
    fn output(&self, p: &ConvShape) -> ActivatedOutput {
        ActivatedOutput { activation: self.conv.activation, out_len: p.out_len() }
    }
}

impl LayerKind for SeparableConv2D {
    const CLASS: &'static str = "SeparableConv2D";
    const BASE: &'static str = "separable_conv2d";

    fn from_args(args: &Args) -> Result<Self> {
        // Keras's positional order: filters, kernel_size, strides, padding.
        let slots: &[&[&str]] = &[&["filters"], &["kernel_size"], &["strides", "stride"], &["padding"]];
        let parsed = ConvArgs::parse(args, slots, &["filters", "depth_multiplier"], USAGE)?;
        let Some(filters) = parsed.slots[0] else { bail!("SeparableConv2D needs filters and a kernel size: {USAGE}") };
        let depth_multiplier = args.keyword(&["depth_multiplier"]).map(|v| v.positive("depth_multiplier")).transpose()?.unwrap_or(1);
        Ok(SeparableConv2D { filters: filters.positive("filters")?, conv: parsed.conv, depth_multiplier })
    }

    fn to_args(&self) -> Vec<String> {
        let mut out = vec![self.filters.to_string()];
        out.extend(self.conv.window_args());
        if self.depth_multiplier != 1 {
            out.push(format!("depth_multiplier={}", self.depth_multiplier));
        }
        out.extend(self.conv.output_args());
        out
    }

    fn output_shape(&self, input: &[usize], _is_last: bool) -> Result<Vec<usize>> {
        let (_, p) = self.try_shapes(input)?;
        Ok(vec![p.out_h, p.out_w, p.out_c])
    }

    fn params(&self, input: &[usize]) -> Vec<ParamSpec> {
        let (d, p) = self.shapes(input);
        let depthwise = [d.k_h, d.k_w, d.channels, d.multiplier];
        let pointwise = [1, 1, p.in_c, p.out_c];
        let kernels = vec![
            ParamSpec::trainable("depthwise_kernel", depthwise.to_vec(), glorot_4d(depthwise)),
            ParamSpec::trainable("pointwise_kernel", pointwise.to_vec(), glorot_4d(pointwise)),
        ];
        self.conv.with_bias(kernels, p.out_c)
    }

    /// t (the depthwise output) and dt, then the activation's.
    fn scratch(&self, input: &[usize]) -> Vec<ScratchSpec> {
        let (d, p) = self.shapes(input);
        let mut scratch = vec![ScratchSpec::per_image(ScratchKind::Tensor, d.out_len()); 2];
        scratch.extend(self.output(&p).scratch());
        scratch
    }

    fn output_relu(&self) -> bool {
        self.conv.activation.is_fused_relu()
    }

    fn forward<B: Backend>(&self, f: Forward<'_, B>) {
        let (d, p) = self.shapes(f.input);
        let (backend, n) = (f.backend, f.n);
        let (depthwise, pointwise, bias) = (&f.params[0], &f.params[1], f.params.get(2));
        let (t, activation) = f.scratch.split_at_mut(2);
        let t = t[0].tensor_mut();
        backend.depthwise_conv2d_forward(f.x, depthwise, None, t, &d, n, false);
        let t = &*t;
        self.output(&p).forward(backend, n, f.y, activation, |y, relu| backend.conv2d_forward(t, pointwise, bias, y, &p, n, relu));
    }

    fn backward<B: Backend>(&self, b: Backward<'_, B>) {
        let (d, p) = self.shapes(b.input);
        let (t, activation) = b.scratch.split_at_mut(2);
        let (t, dt) = t.split_at_mut(1);
        let (t, dt) = (t[0].tensor(), dt[0].tensor_mut());
        let dy = self.output(&p).linear_gradient(b.backend, b.n, b.y, b.dy, activation);
        let (kernels, d_bias) = split_bias(b.grads, 2);
        let [d_depthwise, d_pointwise] = kernels else { unreachable!("SeparableConv2D has two kernels") };
        b.backend.conv2d_backward_filter(t, dy, d_pointwise, d_bias, &p, b.n);
        b.backend.conv2d_backward_input(dy, &b.params[1], dt, &p, b.n);
        b.backend.depthwise_conv2d_backward_filter(b.x, dt, d_depthwise, None, &d, b.n);
        if let Some(dx) = b.dx {
            b.backend.depthwise_conv2d_backward_input(dt, &b.params[0], dx, &d, b.n);
            if let Some(y) = b.relu_y {
                b.backend.relu_backward(y, dx, b.n * d.in_len());
            }
        }
    }
}
