//! Model descriptions: the layer list, its text format, shape inference and the summary table.

mod arch_text;
mod summary;

pub use arch_text::{format_arch, parse_arch};
pub use summary::summary_table;

use crate::backend::{ConvShape, DenseShape, PoolShape};
use anyhow::{bail, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    None,
    Relu,
    Softmax,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Padding {
    Valid,
    Same,
}

/// One layer as the user wrote it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LayerSpec {
    Conv2D { filters: usize, kernel: (usize, usize), stride: (usize, usize), padding: Padding, activation: Activation },
    MaxPool2D { size: (usize, usize), stride: (usize, usize) },
    Flatten,
    Dense { units: usize, activation: Activation },
}

/// A layer with its shapes resolved for a given input.
#[derive(Clone, Debug, PartialEq)]
pub enum LayerOp {
    Conv { shape: ConvShape, relu: bool },
    Pool { shape: PoolShape },
    Flatten,
    Dense { shape: DenseShape, activation: Activation },
}

#[derive(Clone, Debug)]
pub struct Layer {
    /// Keras's automatic name: conv2d, conv2d_1, max_pooling2d, flatten, dense, dense_1, ...
    pub name: String,
    pub spec: LayerSpec,
    pub op: LayerOp,
    /// Output shape without the batch dimension: (h, w, c), or (units) after Flatten/Dense.
    pub output: Vec<usize>,
}

impl Layer {
    pub fn output_len(&self) -> usize {
        self.output.iter().product()
    }
    /// (kernel length, bias length) of a layer with weights.
    pub fn param_lens(&self) -> Option<(usize, usize)> {
        match &self.op {
            LayerOp::Conv { shape, .. } => Some((shape.kernel_len(), shape.out_c)),
            LayerOp::Dense { shape, .. } => Some((shape.inputs * shape.units, shape.units)),
            _ => None,
        }
    }
    /// Kernel shape in Keras layout: HWIO for conv, (in, out) for dense.
    pub fn kernel_dims(&self) -> Option<Vec<usize>> {
        match &self.op {
            LayerOp::Conv { shape: s, .. } => Some(vec![s.k_h, s.k_w, s.in_c, s.out_c]),
            LayerOp::Dense { shape: s, .. } => Some(vec![s.inputs, s.units]),
            _ => None,
        }
    }
    pub fn param_count(&self) -> usize {
        self.param_lens().map_or(0, |(k, b)| k + b)
    }
}

/// A whole model: the layers resolved for one input shape (h, w, c).
#[derive(Clone, Debug)]
pub struct Model {
    pub input: (usize, usize, usize),
    pub layers: Vec<Layer>,
}

/// The seed model: Keras's CIFAR-10 tutorial CNN, ending in one unit per class of the data.
pub const SEED_ARCH: &str = "\
# The seed model (Keras's CIFAR-10 CNN tutorial)
conv2d 32 3 relu
maxpool 2
conv2d 64 3 relu
maxpool 2
conv2d 64 3 relu
flatten
dense 64 relu
dense classes softmax
";

/// `dense classes` in the arch text: the units are the data set's class count, filled in by
/// [`with_classes`] before a model is built.
pub const UNITS_FROM_CLASSES: usize = 0;

/// The seed model for 10 classes (CIFAR-10, Fashion-MNIST): 122,570 parameters on 32x32x3.
pub fn seed_layers() -> Vec<LayerSpec> {
    with_classes(&parse_arch(SEED_ARCH).expect("the seed architecture parses"), 10).expect("the seed model ends in dense classes")
}

/// The layers with the last layer's units set to `classes` when it says `dense classes`; an
/// explicit count that differs from `classes` is an error saying what to write instead.
pub fn with_classes(specs: &[LayerSpec], classes: usize) -> Result<Vec<LayerSpec>> {
    resolve_classes(specs, classes, true)
}

/// As `with_classes`, but an explicit count is kept as written (for `summary`).
pub fn fill_classes(specs: &[LayerSpec], classes: usize) -> Result<Vec<LayerSpec>> {
    resolve_classes(specs, classes, false)
}

fn resolve_classes(specs: &[LayerSpec], classes: usize, check: bool) -> Result<Vec<LayerSpec>> {
    let mut out = specs.to_vec();
    let last = out.len();
    for (i, spec) in out.iter_mut().enumerate() {
        if let LayerSpec::Dense { units, activation } = spec {
            if *units == UNITS_FROM_CLASSES {
                if i + 1 != last {
                    bail!("layer {}: only the last layer can be 'dense classes'", i + 1);
                }
                *units = classes;
            } else if check && i + 1 == last && *units != classes {
                let act = arch_text::activation_word(*activation);
                bail!(
                    "the model ends in {units} class scores (its last line is 'dense {units} {act}') but the data has {classes} classes: \
                     write 'dense classes {act}' as the last line to take the count from the data (or 'dense {classes} {act}')"
                );
            }
        }
    }
    Ok(out)
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
    let (h, w, c) = input;
    let (oh, pt) = conv_out(h, kernel.0, stride.0, padding)?;
    let (ow, pl) = conv_out(w, kernel.1, stride.1, padding)?;
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
    })
}

/// A Keras MaxPooling2D's geometry ("valid": windows that do not fit are dropped); None when
/// no window fits.
pub fn pool_shape(input: (usize, usize, usize), size: (usize, usize), stride: (usize, usize)) -> Option<PoolShape> {
    PoolShape::valid(input, size, stride)
}

impl Model {
    /// Resolves every layer's shapes for an input of (h, w, c); a clear error when the
    /// architecture does not fit it.
    pub fn new(specs: &[LayerSpec], input: (usize, usize, usize)) -> Result<Model> {
        if input.0 == 0 || input.1 == 0 || input.2 == 0 {
            bail!("input shape {}x{}x{} has a zero dimension", input.0, input.1, input.2);
        }
        tensor_values(&[input.0, input.1, input.2], "the input")?;
        if specs.is_empty() {
            bail!("the architecture has no layers");
        }
        let mut counts = std::collections::HashMap::new();
        let mut shape = vec![input.0, input.1, input.2];
        let mut layers = Vec::new();
        for (i, spec) in specs.iter().enumerate() {
            let base = match spec {
                LayerSpec::Conv2D { .. } => "conv2d",
                LayerSpec::MaxPool2D { .. } => "max_pooling2d",
                LayerSpec::Flatten => "flatten",
                LayerSpec::Dense { .. } => "dense",
            };
            let count = counts.entry(base).or_insert(0usize);
            let name = if *count == 0 { base.to_string() } else { format!("{base}_{count}") };
            *count += 1;
            let at = format!("layer {} ({name})", i + 1);
            let (op, output) = match *spec {
                LayerSpec::Conv2D { filters, kernel, stride, padding, activation } => {
                    let [h, w, c] = shape[..] else { bail!("{at}: Conv2D needs an (h, w, c) input, got {shape:?}; put it before Flatten") };
                    if filters == 0 || kernel.0 == 0 || kernel.1 == 0 || stride.0 == 0 || stride.1 == 0 {
                        bail!("{at}: filters, kernel size and stride must be at least 1");
                    }
                    if activation == Activation::Softmax {
                        bail!("{at}: Conv2D takes activation relu or none, not softmax");
                    }
                    let Some(s) = conv_shape((h, w, c), filters, kernel, stride, padding) else {
                        bail!("{at}: a {}x{} kernel does not fit its {h}x{w} input (use padding=same or a smaller kernel)", kernel.0, kernel.1)
                    };
                    tensor_values(&[kernel.0, kernel.1, c, filters], &format!("{at}: the kernel"))?;
                    tensor_values(&[s.out_h, s.out_w, filters], &format!("{at}: the output"))?;
                    (LayerOp::Conv { shape: s, relu: activation == Activation::Relu }, vec![s.out_h, s.out_w, filters])
                }
                LayerSpec::MaxPool2D { size, stride } => {
                    let [h, w, c] = shape[..] else { bail!("{at}: MaxPool2D needs an (h, w, c) input, got {shape:?}; put it before Flatten") };
                    if size.0 == 0 || size.1 == 0 || stride.0 == 0 || stride.1 == 0 {
                        bail!("{at}: pool size and stride must be at least 1");
                    }
                    let Some(s) = pool_shape((h, w, c), size, stride) else {
                        bail!("{at}: a {}x{} pool does not fit its {h}x{w} input: the output would have a dimension of 0", size.0, size.1)
                    };
                    (LayerOp::Pool { shape: s }, vec![s.out_h, s.out_w, c])
                }
                LayerSpec::Flatten => (LayerOp::Flatten, vec![shape.iter().product()]),
                LayerSpec::Dense { units, activation } => {
                    let [inputs] = shape[..] else { bail!("{at}: Dense needs a flat input, got {shape:?}; put a Flatten before it") };
                    if units == UNITS_FROM_CLASSES {
                        bail!("{at}: 'dense classes' needs the class count of the data (summary: --classes N)");
                    }
                    tensor_values(&[inputs, units], &format!("{at}: the kernel"))?;
                    if activation == Activation::Softmax && i + 1 != specs.len() {
                        bail!("{at}: softmax is only supported on the last layer (it is fused into the loss)");
                    }
                    (LayerOp::Dense { shape: DenseShape { inputs, units }, activation }, vec![units])
                }
            };
            shape = output.clone();
            layers.push(Layer { name, spec: spec.clone(), op, output });
        }
        match layers.last().map(|l| &l.op) {
            Some(LayerOp::Dense { activation: Activation::Softmax | Activation::None, .. }) => {}
            _ => bail!("the last layer must be Dense with activation softmax (or none): its units are the class scores"),
        }
        Ok(Model { input, layers })
    }

    pub fn classes(&self) -> usize {
        self.layers.last().map_or(0, |l| l.output_len())
    }
    pub fn input_len(&self) -> usize {
        self.input.0 * self.input.1 * self.input.2
    }
    /// Every layer's kernel and output passed `tensor_values` in `new`, so with at most
    /// 2^31 values each, this sum cannot overflow for fewer than 2^31 layers.
    pub fn param_count(&self) -> usize {
        self.layers.iter().map(|l| l.param_count()).sum()
    }

    /// Host or device bytes a network of this model needs for batches of `batch` images:
    /// weights, gradients and Adam moments, plus activations and their gradients. None when
    /// that does not fit in a usize (a batch size or input far too large).
    pub fn memory_bytes(&self, batch: usize) -> Option<usize> {
        let per_image = self.layers.iter().try_fold(self.input_len(), |acc, l| acc.checked_add(l.output_len()))?;
        let activations = per_image.checked_mul(batch)?.checked_mul(2)?;
        let params = self.param_count().checked_mul(4)?;
        activations.checked_add(params)?.checked_mul(std::mem::size_of::<f32>())
    }
}

/// Parses "32x32x3" (h x w x c).
pub fn parse_input_shape(text: &str) -> Result<(usize, usize, usize)> {
    let parts: Vec<_> = text.split(['x', 'X', ',']).map(|p| p.trim().parse::<usize>()).collect();
    match parts[..] {
        [Ok(h), Ok(w), Ok(c)] if h > 0 && w > 0 && c > 0 => Ok((h, w, c)),
        _ => bail!("input shape '{text}' is not HxWxC with positive numbers, e.g. 32x32x3"),
    }
}
