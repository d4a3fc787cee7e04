//! Keras's Dense: x (n, inputs) * kernel (inputs, units) + bias, then its activation (ReLU
//! fused, the other element-wise functions after the product; activation.rs); softmax only on
//! the last layer, where the loss applies it.

use super::activation::ActivatedOutput;
use super::geometry::tensor_values;
use super::{split_activation, Activation, Args, Backward, Forward, Init, LayerKind, ParamSpec, ScratchSpec};
use crate::backend::{Backend, DenseShape};
use anyhow::{bail, Result};

/// `Dense(classes, ...)` in the arch text: the units are the data set's class count, filled in
/// by `model::with_classes` before a model is built.
pub const UNITS_FROM_CLASSES: usize = 0;

#[derive(Clone, Debug, PartialEq)]
pub struct Dense {
    /// UNITS_FROM_CLASSES until the class count is known.
    pub units: usize,
    pub activation: Activation,
}

const USAGE: &str = "Dense(UNITS|classes, activation=None|\"relu\"|\"gelu\"|...|\"softmax\")";

impl Dense {
    /// The geometry on a flat input that `output_shape` accepted.
    pub fn shape(&self, input: &[usize]) -> DenseShape {
        DenseShape { inputs: input.iter().product(), units: self.units }
    }
    fn output(&self) -> ActivatedOutput {
        ActivatedOutput { activation: self.activation, out_len: self.units }
    }
}

impl LayerKind for Dense {
    const CLASS: &'static str = "Dense";
    const BASE: &'static str = "dense";

    fn from_args(args: &Args) -> Result<Self> {
        args.check_keywords(&["units", "activation"])?;
        let (activation, rest) = split_activation(args)?;
        let units = match (&rest[..], args.keyword(&["units"])) {
            ([v], None) => *v,
            ([], Some(v)) => v,
            ([], None) => bail!("Dense needs a number of units: {USAGE}"),
            ([_], Some(_)) => bail!("Dense: 'units' is given both by position and as a keyword"),
            _ => bail!("Dense takes one number (its units) and an activation: {USAGE}"),
        };
        let units = if units.text().is_some_and(|t| t.eq_ignore_ascii_case("classes")) { UNITS_FROM_CLASSES } else { units.positive("units")? };
        Ok(Dense { units, activation: activation.unwrap_or(Activation::None) })
    }

    fn to_args(&self) -> Vec<String> {
        let units = if self.units == UNITS_FROM_CLASSES { "classes".to_string() } else { self.units.to_string() };
        match self.activation {
            Activation::None => vec![units],
            a => vec![units, format!("activation=\"{}\"", a.word())],
        }
    }

    fn output_shape(&self, input: &[usize], is_last: bool) -> Result<Vec<usize>> {
        let [inputs] = input[..] else { bail!("Dense needs a flat input, got {input:?}; put a Flatten before it") };
        if self.units == UNITS_FROM_CLASSES {
            bail!("'Dense(classes)' needs the class count of the data (summary: --classes N)");
        }
        tensor_values(&[inputs, self.units], "the kernel")?;
        if self.activation == Activation::Softmax && !is_last {
            bail!("softmax is only supported on the last layer (it is fused into the loss)");
        }
        Ok(vec![self.units])
    }

    fn params(&self, input: &[usize]) -> Vec<ParamSpec> {
        let s = self.shape(input);
        vec![
            ParamSpec::trainable("kernel", vec![s.inputs, s.units], Init::GlorotUniform { fan_in: s.inputs, fan_out: s.units }),
            ParamSpec::trainable("bias", vec![s.units], Init::Zeros),
        ]
    }

    /// The pre-activation and its gradient with an unfused activation.
    fn scratch(&self, _input: &[usize]) -> Vec<ScratchSpec> {
        self.output().scratch()
    }

    fn output_relu(&self) -> bool {
        self.activation.is_fused_relu()
    }

    fn forward<B: Backend>(&self, f: Forward<'_, B>) {
        let s = self.shape(f.input);
        let (kernel, bias) = (&f.params[0], &f.params[1]);
        let (backend, x, n) = (f.backend, f.x, f.n);
        self.output().forward(backend, n, f.y, f.scratch, |y, relu| backend.dense_forward(x, kernel, bias, y, &s, n, relu));
    }

    fn backward<B: Backend>(&self, b: Backward<'_, B>) {
        let s = self.shape(b.input);
        let dy = self.output().linear_gradient(b.backend, b.n, b.y, b.dy, b.scratch);
        let [dw, db] = b.grads else { unreachable!("Dense has two trainable tensors") };
        b.backend.dense_backward_filter(b.x, dy, dw, db, &s, b.n);
        if let Some(dx) = b.dx {
            match b.relu_y {
                None => b.backend.dense_backward_input(dy, &b.params[0], dx, &s, b.n),
                Some(y) => b.backend.dense_backward_input_relu(dy, &b.params[0], y, dx, &s, b.n),
            }
        }
    }
}
