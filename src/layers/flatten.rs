//! Keras's Flatten: in NHWC the flat output is the input's memory, so the network shares the
//! buffer and runs nothing (`is_view`).

use super::{Args, Backward, Forward, LayerKind};
use crate::backend::Backend;
use anyhow::Result;

#[derive(Clone, Debug, PartialEq)]
pub struct Flatten;

impl LayerKind for Flatten {
    const CLASS: &'static str = "Flatten";
    const BASE: &'static str = "flatten";

    fn from_args(args: &Args) -> Result<Self> {
        args.check_keywords(&[])?;
        args.check_positional(0, "Flatten")?;
        Ok(Flatten)
    }

    fn to_args(&self) -> Vec<String> {
        Vec::new()
    }

    fn output_shape(&self, input: &[usize], _is_last: bool) -> Result<Vec<usize>> {
        Ok(vec![input.iter().product()])
    }

    fn is_view(&self) -> bool {
        true
    }

    fn forward<B: Backend>(&self, _f: Forward<'_, B>) {}

    fn backward<B: Backend>(&self, _b: Backward<'_, B>) {}
}
