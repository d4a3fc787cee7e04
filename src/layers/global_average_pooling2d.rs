//! Keras's GlobalAveragePooling2D: (h, w, c) -> (c), the mean of each channel (an average pool
//! whose window is the whole image).

use super::geometry::image_input;
use super::pooling::global_shape;
use super::{Args, Backward, Forward, LayerKind};
use crate::backend::{Backend, PoolShape};
use anyhow::Result;

#[derive(Clone, Debug, PartialEq)]
pub struct GlobalAveragePooling2D;

fn shape(input: &[usize]) -> PoolShape {
    global_shape(input, GlobalAveragePooling2D::CLASS)
}

impl LayerKind for GlobalAveragePooling2D {
    const CLASS: &'static str = "GlobalAveragePooling2D";
    const BASE: &'static str = "global_average_pooling2d";

    fn from_args(args: &Args) -> Result<Self> {
        args.check_keywords(&[])?;
        args.check_positional(0, "GlobalAveragePooling2D")?;
        Ok(GlobalAveragePooling2D)
    }

    fn to_args(&self) -> Vec<String> {
        Vec::new()
    }

    fn output_shape(&self, input: &[usize], _is_last: bool) -> Result<Vec<usize>> {
        let (_, _, c) = image_input(input, Self::CLASS)?;
        Ok(vec![c])
    }

    fn forward<B: Backend>(&self, f: Forward<'_, B>) {
        f.backend.avgpool_forward(f.x, f.y, &shape(f.input), f.n);
    }

    fn backward<B: Backend>(&self, b: Backward<'_, B>) {
        let Some(dx) = b.dx else { return };
        let s = shape(b.input);
        b.backend.avgpool_backward(b.dy, dx, &s, b.n);
        if let Some(y) = b.relu_y {
            b.backend.relu_backward(y, dx, b.n * s.in_len());
        }
    }
}
