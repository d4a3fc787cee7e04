//! Keras's MaxPooling2D and AveragePooling2D share their arguments (`pool_size`, `strides`
//! defaulting to the pool size, `padding="valid"|"same"`) and geometry; this reads and writes
//! them once.

use super::geometry::{image_input, Padding, MAX_TENSOR_VALUES};
use super::{format_pair, Args};
use crate::backend::PoolShape;
use anyhow::{bail, Result};

/// GlobalAveragePooling2D's / GlobalMaxPooling2D's one window over the whole image, on an
/// input `output_shape` accepted.
pub fn global_shape(input: &[usize], class: &str) -> PoolShape {
    let input = image_input(input, class).expect("Model::new checked the input shape");
    PoolShape::global(input).expect("a whole-image window fits")
}

/// A 2-D pooling window as the arch text wrote it.
#[derive(Clone, Debug, PartialEq)]
pub struct PoolArgs {
    pub pool_size: (usize, usize),
    pub strides: (usize, usize),
    pub padding: Padding,
}

impl PoolArgs {
    pub fn from_args(args: &Args, usage: &str) -> Result<PoolArgs> {
        args.check_keywords(&["pool_size", "strides", "stride", "padding"])?;
        args.check_positional(3, usage)?;
        let Some(size) = args.get(0, &["pool_size"])? else { bail!("{} needs a pool size: {usage}", args.class) };
        let pool_size = size.pair("pool size")?;
        let strides = args.get(1, &["strides", "stride"])?.map(|v| v.pair("strides")).transpose()?.unwrap_or(pool_size);
        let padding = args.get(2, &["padding"])?.map(|v| Padding::parse(v.text().unwrap_or("?"))).transpose()?.unwrap_or(Padding::Valid);
        Ok(PoolArgs { pool_size, strides, padding })
    }

    pub fn to_args(&self) -> Vec<String> {
        let mut out = vec![format_pair(self.pool_size)];
        if self.strides != self.pool_size {
            out.push(format!("strides={}", format_pair(self.strides)));
        }
        if self.padding != Padding::Valid {
            out.push(format!("padding=\"{}\"", self.padding.word()));
        }
        out
    }

    /// The geometry on an (h, w, c) input, or why the window does not fit.
    pub fn try_shape(&self, input: &[usize], class: &str) -> Result<PoolShape> {
        let (h, w, c) = image_input(input, class)?;
        let (size, stride) = (self.pool_size, self.strides);
        if size.0 == 0 || size.1 == 0 || stride.0 == 0 || stride.1 == 0 {
            bail!("pool size and stride must be at least 1");
        }
        // Keeps the window arithmetic (padded positions, window ends) far from overflow.
        if [size.0, size.1, stride.0, stride.1].iter().any(|&v| v > MAX_TENSOR_VALUES) {
            bail!("pool size and stride must be at most {MAX_TENSOR_VALUES}");
        }
        let shape = match self.padding {
            Padding::Valid => PoolShape::valid((h, w, c), size, stride),
            Padding::Same => PoolShape::same((h, w, c), size, stride),
        };
        match shape {
            Some(s) => Ok(s),
            None => bail!(
                "a {}x{} pool does not fit its {h}x{w} input: the output would have a dimension of 0 (padding=\"same\" keeps every pixel)",
                size.0,
                size.1
            ),
        }
    }

    /// The geometry on an input `output_shape` accepted.
    pub fn shape(&self, input: &[usize], class: &str) -> PoolShape {
        self.try_shape(input, class).expect("Model::new checked the pool fits")
    }
}
