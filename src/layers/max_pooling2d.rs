//! Keras's MaxPooling2D ("valid" windows; stride defaults to the pool size). The forward keeps
//! each output's argmax in a scratch buffer for the backward.

use super::geometry::{image_input, pool_shape};
use super::{format_pair, Args, Backward, Forward, LayerKind, ScratchKind, ScratchSpec};
use crate::backend::{Backend, PoolShape};
use anyhow::{bail, Result};

#[derive(Clone, Debug, PartialEq)]
pub struct MaxPooling2D {
    pub pool_size: (usize, usize),
    pub strides: (usize, usize),
}

const USAGE: &str = "MaxPooling2D(SIZE, strides=SIZE)";

impl MaxPooling2D {
    /// The geometry on a per-image input shape that `output_shape` accepted.
    pub fn shape(&self, input: &[usize]) -> PoolShape {
        let input = image_input(input, Self::CLASS).expect("Model::new checked the input shape");
        pool_shape(input, self.pool_size, self.strides).expect("Model::new checked the pool fits")
    }
}

impl LayerKind for MaxPooling2D {
    const CLASS: &'static str = "MaxPooling2D";
    const BASE: &'static str = "max_pooling2d";
    const ALIASES: &'static [&'static str] = &["maxpool", "maxpool2d"];

    fn from_args(args: &Args) -> Result<Self> {
        args.check_keywords(&["pool_size", "strides", "stride"])?;
        args.check_positional(2, USAGE)?;
        let Some(size) = args.get(0, &["pool_size"])? else { bail!("MaxPooling2D needs a pool size: {USAGE}") };
        let pool_size = size.pair("pool size")?;
        let strides = args.get(1, &["strides", "stride"])?.map(|v| v.pair("strides")).transpose()?.unwrap_or(pool_size);
        Ok(MaxPooling2D { pool_size, strides })
    }

    fn to_args(&self) -> Vec<String> {
        let mut out = vec![format_pair(self.pool_size)];
        if self.strides != self.pool_size {
            out.push(format!("strides={}", format_pair(self.strides)));
        }
        out
    }

    fn output_shape(&self, input: &[usize], _is_last: bool) -> Result<Vec<usize>> {
        let (h, w, c) = image_input(input, Self::CLASS)?;
        let (size, stride) = (self.pool_size, self.strides);
        if size.0 == 0 || size.1 == 0 || stride.0 == 0 || stride.1 == 0 {
            bail!("pool size and stride must be at least 1");
        }
        let Some(s) = pool_shape((h, w, c), size, stride) else {
            bail!("a {}x{} pool does not fit its {h}x{w} input: the output would have a dimension of 0", size.0, size.1)
        };
        Ok(vec![s.out_h, s.out_w, c])
    }

    /// The argmax of each output value.
    fn scratch(&self, input: &[usize]) -> Vec<ScratchSpec> {
        vec![ScratchSpec::per_image(ScratchKind::Indices, self.shape(input).out_len())]
    }

    fn forward<B: Backend>(&self, f: Forward<'_, B>) {
        f.backend.maxpool_forward(f.x, f.y, f.scratch[0].indices_mut(), &self.shape(f.input), f.n);
    }

    fn backward<B: Backend>(&self, b: Backward<'_, B>) {
        let Some(dx) = b.dx else { return };
        let (s, argmax) = (self.shape(b.input), b.scratch[0].indices());
        match b.relu_y {
            None => b.backend.maxpool_backward(b.dy, argmax, dx, &s, b.n),
            Some(y) => b.backend.maxpool_backward_relu(b.dy, argmax, y, dx, &s, b.n),
        }
    }
}
