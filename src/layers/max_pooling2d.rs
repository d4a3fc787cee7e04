//! Keras's MaxPooling2D (stride defaults to the pool size; "valid" drops windows that do not
//! fit, "same" pads and padding never wins). The forward keeps each output's argmax in a scratch
//! buffer for the backward.

use super::pooling::PoolArgs;
use super::{Args, Backward, Forward, LayerKind, ScratchKind, ScratchSpec};
use crate::backend::{Backend, PoolShape};
use anyhow::Result;

#[derive(Clone, Debug, PartialEq)]
pub struct MaxPooling2D {
    pub pool: PoolArgs,
}

const USAGE: &str = "MaxPooling2D(SIZE, strides=SIZE, padding=\"valid\"|\"same\")";

impl MaxPooling2D {
    /// The geometry on a per-image input shape that `output_shape` accepted.
    pub fn shape(&self, input: &[usize]) -> PoolShape {
        self.pool.shape(input, Self::CLASS)
    }
}

impl LayerKind for MaxPooling2D {
    const CLASS: &'static str = "MaxPooling2D";
    const BASE: &'static str = "max_pooling2d";
    const ALIASES: &'static [&'static str] = &["maxpool", "maxpool2d"];

    fn from_args(args: &Args) -> Result<Self> {
        Ok(MaxPooling2D { pool: PoolArgs::from_args(args, USAGE)? })
    }

    fn to_args(&self) -> Vec<String> {
        self.pool.to_args()
    }

    fn output_shape(&self, input: &[usize], _is_last: bool) -> Result<Vec<usize>> {
        let s = self.pool.try_shape(input, Self::CLASS)?;
        Ok(vec![s.out_h, s.out_w, s.c])
    }

    /// The argmax of each output value.
    fn scratch(&self, input: &[usize]) -> Vec<ScratchSpec> {
        vec![ScratchSpec::per_image(ScratchKind::Indices, self.shape(input).out_len())]
    }

    fn forward<B: Backend>(&self, f: Forward<'_, B>) {
        let s = self.shape(f.input);
        max_pool_forward(f, &s);
    }

    fn backward<B: Backend>(&self, b: Backward<'_, B>) {
        let s = self.shape(b.input);
        max_pool_backward(b, &s);
    }
}

/// y and, in training, the argmax the backward reads (inference needs no argmax).
pub fn max_pool_forward<B: Backend>(f: Forward<'_, B>, s: &PoolShape) {
    let argmax = f.scratch[0].indices_mut();
    if f.training {
        f.backend.maxpool_forward(f.x, f.y, argmax, s, f.n);
    } else {
        f.backend.maxpool_forward_infer(f.x, f.y, argmax, s, f.n);
    }
}

/// dx from dy through the forward's argmax (masked when x was ReLU'd).
pub fn max_pool_backward<B: Backend>(b: Backward<'_, B>, s: &PoolShape) {
    let Some(dx) = b.dx else { return };
    let argmax = b.scratch[0].indices();
    match b.relu_y {
        None => b.backend.maxpool_backward(b.dy, argmax, dx, s, b.n),
        Some(y) => b.backend.maxpool_backward_relu(b.dy, argmax, y, dx, s, b.n),
    }
}
