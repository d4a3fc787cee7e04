//! Keras's AveragePooling2D: the mean of each window's real cells (with padding="same" the
//! padding is not counted, as Keras/TF do).

use super::pooling::PoolArgs;
use super::{Args, Backward, Forward, LayerKind};
use crate::backend::{Backend, PoolShape};
use anyhow::Result;

#[derive(Clone, Debug, PartialEq)]
pub struct AveragePooling2D {
    pub pool: PoolArgs,
}

const USAGE: &str = "AveragePooling2D(SIZE, strides=SIZE, padding=\"valid\"|\"same\")";

impl AveragePooling2D {
    pub fn shape(&self, input: &[usize]) -> PoolShape {
        self.pool.shape(input, Self::CLASS)
    }
}

impl LayerKind for AveragePooling2D {
    const CLASS: &'static str = "AveragePooling2D";
    const BASE: &'static str = "average_pooling2d";
    const ALIASES: &'static [&'static str] = &["avgpool", "avgpool2d"];

    fn from_args(args: &Args) -> Result<Self> {
        Ok(AveragePooling2D { pool: PoolArgs::from_args(args, USAGE)? })
    }

    fn to_args(&self) -> Vec<String> {
        self.pool.to_args()
    }

    fn output_shape(&self, input: &[usize], _is_last: bool) -> Result<Vec<usize>> {
        let s = self.pool.try_shape(input, Self::CLASS)?;
        Ok(vec![s.out_h, s.out_w, s.c])
    }

    fn forward<B: Backend>(&self, f: Forward<'_, B>) {
        f.backend.avgpool_forward(f.x, f.y, &self.shape(f.input), f.n);
    }

    fn backward<B: Backend>(&self, b: Backward<'_, B>) {
        let Some(dx) = b.dx else { return };
        let s = self.shape(b.input);
        b.backend.avgpool_backward(b.dy, dx, &s, b.n);
        if let Some(y) = b.relu_y {
            b.backend.relu_backward(y, dx, b.n * s.in_len());
        }
    }
}
