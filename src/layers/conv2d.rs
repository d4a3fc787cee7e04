//! Keras's Conv2D: NHWC input, HWIO kernel, optional bias (`use_bias`), `dilation_rate`, and an
//! activation (ReLU fused, the other element-wise functions after the conv; activation.rs).

use super::activation::ActivatedOutput;
use super::convolution::{split_bias, ConvArgs};
use super::geometry::tensor_values;
use super::{Args, Backward, Forward, Init, LayerKind, ParamSpec, ScratchSpec};
use crate::backend::{Backend, ConvShape, Passes};
use anyhow::{bail, Result};

#[derive(Clone, Debug, PartialEq)]
pub struct Conv2D {
    pub filters: usize,
    pub conv: ConvArgs,
}

const USAGE: &str = "Conv2D(FILTERS, KERNEL, strides=1, padding=\"valid\"|\"same\", dilation_rate=1, use_bias=True, activation=None|\"relu\"|\"gelu\"|...)";

impl Conv2D {
    /// The geometry on a per-image input shape that `output_shape` accepted.
    pub fn shape(&self, input: &[usize]) -> ConvShape {
        self.conv.try_shape(input, self.filters, Self::CLASS).expect("Model::new checked the kernel fits")
    }
    fn output(&self, s: &ConvShape) -> ActivatedOutput {
        ActivatedOutput { activation: self.conv.activation, out_len: s.out_len() }
    }
}

impl LayerKind for Conv2D {
    const CLASS: &'static str = "Conv2D";
    const BASE: &'static str = "conv2d";
    const ALIASES: &'static [&'static str] = &["conv"];

    fn from_args(args: &Args) -> Result<Self> {
        // Keras's positional order: filters, kernel_size, strides, padding.
        let parsed = ConvArgs::parse(args, &[&["filters"], &["kernel_size"], &["strides", "stride"], &["padding"]], &["filters"], USAGE)?;
        let Some(filters) = parsed.slots[0] else { bail!("Conv2D needs filters and a kernel size: {USAGE}") };
        Ok(Conv2D { filters: filters.positive("filters")?, conv: parsed.conv })
    }

    fn to_args(&self) -> Vec<String> {
        let mut out = vec![self.filters.to_string()];
        out.extend(self.conv.window_args());
        out.extend(self.conv.output_args());
        out
    }

    fn output_shape(&self, input: &[usize], _is_last: bool) -> Result<Vec<usize>> {
        let s = self.conv.try_shape(input, self.filters, Self::CLASS)?;
        tensor_values(&[s.k_h, s.k_w, s.in_c, s.out_c], "the kernel")?;
        tensor_values(&[s.out_h, s.out_w, s.out_c], "the output")?;
        Ok(vec![s.out_h, s.out_w, s.out_c])
    }

    /// `kernel` (kh, kw, in, out) and, with `use_bias`, `bias` (out).
    fn params(&self, input: &[usize]) -> Vec<ParamSpec> {
        let s = self.shape(input);
        let fan_in = s.k_h * s.k_w * s.in_c;
        let fan_out = s.k_h * s.k_w * s.out_c;
        self.conv.with_bias(vec![ParamSpec::trainable("kernel", vec![s.k_h, s.k_w, s.in_c, s.out_c], Init::GlorotUniform { fan_in, fan_out })], s.out_c)
    }

    fn scratch(&self, input: &[usize]) -> Vec<ScratchSpec> {
        self.output(&self.shape(input)).scratch()
    }

    fn output_relu(&self) -> bool {
        self.conv.activation.is_fused_relu()
    }

    /// Where the backend fuses the pair for these passes (`Backend::fuses_conv_maxpool`) and
    /// the activation is none or a fused ReLU: the pool then takes the values the conv's
    /// output would hold, and the pooled values are the ReLU's mask in the backward.
    fn absorbs_maxpool<B: Backend>(&self, backend: &B, input: &[usize], passes: Passes) -> bool {
        self.conv.activation.unfused().is_none() && backend.fuses_conv_maxpool(&self.shape(input), passes)
    }

    fn forward<B: Backend>(&self, f: Forward<'_, B>) {
        let s = self.shape(f.input);
        let (kernel, bias) = (&f.params[0], f.params.get(1));
        let (backend, x, n) = (f.backend, f.x, f.n);
        if let Some((pool, argmax)) = f.pool {
            let relu = self.conv.activation.is_fused_relu();
            return match f.training {
                true => backend.conv2d_maxpool_forward_train(x, kernel, bias, f.y, argmax, &s, &pool, n, relu),
                false => backend.conv2d_maxpool_forward_infer(x, kernel, bias, f.y, &s, &pool, n, relu),
            };
        }
        self.output(&s).forward(backend, n, f.y, f.scratch, |y, relu| backend.conv2d_forward(x, kernel, bias, y, &s, n, relu));
    }

    fn backward<B: Backend>(&self, b: Backward<'_, B>) {
        let s = self.shape(b.input);
        if let Some((pool, argmax)) = b.pool {
            // y is the pool's output; the fused pass takes the filter gradient through the pool.
            assert!(b.dx.is_none(), "a Conv2D absorbs a MaxPooling2D in training only where its input needs no gradient");
            let (dw, db) = split_bias(b.grads, 1);
            let relu = self.conv.activation.is_fused_relu();
            return b.backend.conv2d_maxpool_backward_filter(b.x, b.dy, b.y, argmax, &mut dw[0], db, &s, &pool, b.n, relu);
        }
        let dy = self.output(&s).linear_gradient(b.backend, b.n, b.y, b.dy, b.scratch);
        let (dw, db) = split_bias(b.grads, 1);
        b.backend.conv2d_backward_filter(b.x, dy, &mut dw[0], db, &s, b.n);
        if let Some(dx) = b.dx {
            match b.relu_y {
                None => b.backend.conv2d_backward_input(dy, &b.params[0], dx, &s, b.n),
                Some(y) => b.backend.conv2d_backward_input_relu(dy, &b.params[0], y, dx, &s, b.n),
            }
        }
    }
}
