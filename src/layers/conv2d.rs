//! Keras's Conv2D: NHWC input, HWIO kernel, bias, optional fused ReLU.

use super::geometry::{conv_shape, image_input, tensor_values, Padding};
use super::{format_pair, split_activation, Activation, Args, Backward, Forward, Init, LayerKind, ParamSpec};
use crate::backend::{Backend, ConvShape};
use anyhow::{bail, Result};

#[derive(Clone, Debug, PartialEq)]
pub struct Conv2D {
    pub filters: usize,
    pub kernel: (usize, usize),
    pub strides: (usize, usize),
    pub padding: Padding,
    pub activation: Activation,
}

const USAGE: &str = "Conv2D(FILTERS, KERNEL, strides=1, padding=\"valid\"|\"same\", activation=\"relu\"|None)";

impl Conv2D {
    /// The geometry on a per-image input shape that `output_shape` accepted.
    pub fn shape(&self, input: &[usize]) -> ConvShape {
        let input = image_input(input, Self::CLASS).expect("Model::new checked the input shape");
        conv_shape(input, self.filters, self.kernel, self.strides, self.padding).expect("Model::new checked the kernel fits")
    }
}

impl LayerKind for Conv2D {
    const CLASS: &'static str = "Conv2D";
    const BASE: &'static str = "conv2d";
    const ALIASES: &'static [&'static str] = &["conv"];

    fn from_args(args: &Args) -> Result<Self> {
        args.check_keywords(&["filters", "kernel_size", "strides", "stride", "padding", "activation"])?;
        let (activation, rest) = split_activation(args)?;
        if rest.len() > 4 {
            bail!("Conv2D takes at most 4 positional arguments: {USAGE}");
        }
        let pick = |i: usize, names: &[&str]| -> Result<Option<&super::Value>> {
            match (rest.get(i), args.keyword(names)) {
                (Some(_), Some(_)) => bail!("Conv2D: '{}' is given both by position and as a keyword", names[0]),
                (p, k) => Ok(p.copied().or(k)),
            }
        };
        let (Some(filters), Some(kernel)) = (pick(0, &["filters"])?, pick(1, &["kernel_size"])?) else {
            bail!("Conv2D needs filters and a kernel size: {USAGE}")
        };
        Ok(Conv2D {
            filters: filters.positive("filters")?,
            kernel: kernel.pair("kernel size")?,
            strides: pick(2, &["strides", "stride"])?.map(|v| v.pair("strides")).transpose()?.unwrap_or((1, 1)),
            padding: pick(3, &["padding"])?.map(|v| Padding::parse(v.text().unwrap_or("?"))).transpose()?.unwrap_or(Padding::Valid),
            activation: activation.unwrap_or(Activation::None),
        })
    }

    fn to_args(&self) -> Vec<String> {
        let mut out = vec![self.filters.to_string(), format_pair(self.kernel)];
        if self.strides != (1, 1) {
            out.push(format!("strides={}", format_pair(self.strides)));
        }
        if self.padding != Padding::Valid {
            out.push(format!("padding=\"{}\"", self.padding.word()));
        }
        if self.activation != Activation::None {
            out.push(format!("activation=\"{}\"", self.activation.word()));
        }
        out
    }

    fn output_shape(&self, input: &[usize], _is_last: bool) -> Result<Vec<usize>> {
        let (h, w, c) = image_input(input, Self::CLASS)?;
        if self.filters == 0 || self.kernel.0 == 0 || self.kernel.1 == 0 || self.strides.0 == 0 || self.strides.1 == 0 {
            bail!("filters, kernel size and stride must be at least 1");
        }
        if self.activation == Activation::Softmax {
            bail!("Conv2D takes activation relu or none, not softmax");
        }
        let Some(s) = conv_shape((h, w, c), self.filters, self.kernel, self.strides, self.padding) else {
            bail!("a {}x{} kernel does not fit its {h}x{w} input (use padding=same or a smaller kernel)", self.kernel.0, self.kernel.1)
        };
        tensor_values(&[self.kernel.0, self.kernel.1, c, self.filters], "the kernel")?;
        tensor_values(&[s.out_h, s.out_w, self.filters], "the output")?;
        Ok(vec![s.out_h, s.out_w, self.filters])
    }

    fn params(&self, input: &[usize]) -> Vec<ParamSpec> {
        let s = self.shape(input);
        let fan_in = s.k_h * s.k_w * s.in_c;
        let fan_out = s.k_h * s.k_w * s.out_c;
        vec![
            ParamSpec::trainable("kernel", vec![s.k_h, s.k_w, s.in_c, s.out_c], Init::GlorotUniform { fan_in, fan_out }),
            ParamSpec::trainable("bias", vec![s.out_c], Init::Zeros),
        ]
    }

    fn output_relu(&self) -> bool {
        self.activation.is_fused_relu()
    }

    fn forward<B: Backend>(&self, f: Forward<'_, B>) {
        let s = self.shape(f.input);
        f.backend.conv2d_forward(f.x, &f.params[0], Some(&f.params[1]), f.y, &s, f.n, self.activation.is_fused_relu());
    }

    fn backward<B: Backend>(&self, b: Backward<'_, B>) {
        let s = self.shape(b.input);
        let [dw, db] = b.grads else { unreachable!("Conv2D has two trainable tensors") };
        b.backend.conv2d_backward_filter(b.x, b.dy, dw, Some(db), &s, b.n);
        if let Some(dx) = b.dx {
            match b.relu_y {
                None => b.backend.conv2d_backward_input(b.dy, &b.params[0], dx, &s, b.n),
                Some(y) => b.backend.conv2d_backward_input_relu(b.dy, &b.params[0], y, dx, &s, b.n),
            }
        }
    }
}
