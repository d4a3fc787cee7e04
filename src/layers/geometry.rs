//! Keras's padding geometry and the per-tensor size limit, shared by the layers, the model and
//! the tests (one source for what was computed twice).

use crate::backend::{ConvShape, PoolShape};
use anyhow::{bail, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Padding {
    Valid,
    Same,
}

impl Padding {
    pub fn parse(text: &str) -> Result<Padding> {
        match text.to_ascii_lowercase().as_str() {
            "valid" => Ok(Padding::Valid),
            "same" => Ok(Padding::Same),
            _ => bail!("padding '{text}' is not valid or same"),
        }
    }
    pub fn word(self) -> &'static str {
        match self {
            Padding::Valid => "valid",
            Padding::Same => "same",
        }
    }
}

fn conv_out(input: usize, k: usize, stride: usize, padding: Padding) -> Option<(usize, usize)> {
    match padding {
        Padding::Valid => (input >= k).then(|| ((input - k) / stride + 1, 0)),
        Padding::Same => {
            let out = input.div_ceil(stride);
            let total = ((out - 1).checked_mul(stride)?.checked_add(k)?).saturating_sub(input);
            Some((out, total / 2))
        }
    }
}

/// The most values one tensor (an activation of one image, or a kernel) may hold: 2^31, i.e.
/// 8 GiB of f32, far past what a small CNN needs, and below the u32 indices the shaders use.
pub const MAX_TENSOR_VALUES: usize = 1 << 31;

/// The number of values of a tensor with these dims, checked against MAX_TENSOR_VALUES.
pub fn tensor_values(dims: &[usize], what: &str) -> Result<usize> {
    let n = dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
    let shape = dims.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("x");
    match n {
        Some(n) if n <= MAX_TENSOR_VALUES => Ok(n),
        _ => bail!("{what} of {shape} is too large: more than {MAX_TENSOR_VALUES} values (the limit per tensor)"),
    }
}

/// A Keras Conv2D's geometry on an (h, w, c) input: "valid" keeps the windows that fit; "same"
/// gives ceil(in / stride) outputs, the odd padding pixel at the bottom/right. None when a
/// "valid" kernel does not fit. (Sizes must be at least 1; Model::new checks that first.)
pub fn conv_shape(input: (usize, usize, usize), filters: usize, kernel: (usize, usize), stride: (usize, usize), padding: Padding) -> Option<ConvShape> {
    dilated_conv_shape(input, filters, kernel, stride, (1, 1), padding)
}

/// `conv_shape` with Keras's `dilation_rate`: the kernel's taps are `dilation` pixels apart, so
/// it spans (k - 1) * dilation + 1 pixels, and "valid"/"same" are worked out from that extent.
/// None when a "valid" kernel does not fit or the extent overflows.
pub fn dilated_conv_shape(
    input: (usize, usize, usize),
    filters: usize,
    kernel: (usize, usize),
    stride: (usize, usize),
    dilation: (usize, usize),
    padding: Padding,
) -> Option<ConvShape> {
    let (h, w, c) = input;
    let extent = |k: usize, d: usize| (k.checked_sub(1)?).checked_mul(d)?.checked_add(1);
    let (oh, pt) = conv_out(h, extent(kernel.0, dilation.0)?, stride.0, padding)?;
    let (ow, pl) = conv_out(w, extent(kernel.1, dilation.1)?, stride.1, padding)?;
    Some(ConvShape {
        in_h: h,
        in_w: w,
        in_c: c,
        out_h: oh,
        out_w: ow,
        out_c: filters,
        k_h: kernel.0,
        k_w: kernel.1,
        stride_h: stride.0,
        stride_w: stride.1,
        pad_top: pt,
        pad_left: pl,
        dilation_h: dilation.0,
        dilation_w: dilation.1,
    })
}

/// A Keras MaxPooling2D's geometry ("valid": windows that do not fit are dropped); None when
/// no window fits.
pub fn pool_shape(input: (usize, usize, usize), size: (usize, usize), stride: (usize, usize)) -> Option<PoolShape> {
    PoolShape::valid(input, size, stride)
}

/// An (h, w, c) input shape, or an error naming the layer class that needs one.
pub fn image_input(input: &[usize], class: &str) -> Result<(usize, usize, usize)> {
    match input {
        [h, w, c] => Ok((*h, *w, *c)),
        _ => bail!("{class} needs an (h, w, c) input, got {input:?}; put it before Flatten"),
    }
}
