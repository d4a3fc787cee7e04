//! Keras's GlobalMaxPooling2D: (h, w, c) -> (c), the max of each channel (a max pool whose window
//! is the whole image; the gradient goes to the first maximum).

use super::geometry::image_input;
use super::max_pooling2d::{max_pool_backward, max_pool_forward};
use super::pooling::global_shape;
use super::{Args, Backward, Forward, LayerKind, ScratchKind, ScratchSpec};
use crate::backend::{Backend, PoolShape};
use anyhow::Result;

#[derive(Clone, Debug, PartialEq)]
pub struct GlobalMaxPooling2D;

fn shape(input: &[usize]) -> PoolShape {
    global_shape(input, GlobalMaxPooling2D::CLASS)
}

impl LayerKind for GlobalMaxPooling2D {
    const CLASS: &'static str = "GlobalMaxPooling2D";
    const BASE: &'static str = "global_max_pooling2d";

    fn from_args(args: &Args) -> Result<Self> {
        args.check_keywords(&[])?;
        args.check_positional(0, "GlobalMaxPooling2D")?;
        Ok(GlobalMaxPooling2D)
    }

    fn to_args(&self) -> Vec<String> {
        Vec::new()
    }

    fn output_shape(&self, input: &[usize], _is_last: bool) -> Result<Vec<usize>> {
        let (_, _, c) = image_input(input, Self::CLASS)?;
        Ok(vec![c])
    }

    fn scratch(&self, input: &[usize]) -> Vec<ScratchSpec> {
        vec![ScratchSpec::per_image(ScratchKind::Indices, shape(input).out_len())]
    }

    fn forward<B: Backend>(&self, f: Forward<'_, B>) {
        let s = shape(f.input);
        max_pool_forward(f, &s);
    }

    fn backward<B: Backend>(&self, b: Backward<'_, B>) {
        let s = shape(b.input);
        max_pool_backward(b, &s);
    }
}
