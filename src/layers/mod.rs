//! The layer framework: one typed struct per Keras layer class, one file each, and the one
//! enum that dispatches to them.
//!
//! A layer struct holds what the arch text said (its Keras arguments) and implements
//! [`LayerKind`]: how it reads its arguments, the shape it outputs, the tensors it owns
//! ([`ParamSpec`], in Keras `get_weights()` order), the scratch buffers it needs
//! ([`ScratchSpec`]) and its forward and backward on any [`Backend`]. The network allocates
//! everything a layer declares and hands it back in [`Forward`] / [`Backward`]. Adding a layer:
//! see "How to add a layer" in docs/ARCHITECTURE.md.

pub mod activation;
pub mod activation_layer;
pub mod args;
pub mod average_pooling2d;
pub mod batch_normalization;
pub mod conv2d;
pub mod convolution;
pub mod dense;
pub mod depthwise_conv2d;
pub mod dropout;
pub mod flatten;
pub mod geometry;
pub mod global_average_pooling2d;
pub mod global_max_pooling2d;
pub mod max_pooling2d;
pub mod pooling;
#[cfg(test)]
mod probe;
pub mod re_lu;
pub mod separable_conv2d;

pub use activation::Activation;
pub use activation_layer::{ActivationLayer, LeakyReLU};
pub use args::{Args, Value};
pub use average_pooling2d::AveragePooling2D;
pub use batch_normalization::BatchNormalization;
pub use conv2d::Conv2D;
pub use convolution::ConvArgs;
pub use dense::{Dense, UNITS_FROM_CLASSES};
pub use depthwise_conv2d::DepthwiseConv2D;
pub use dropout::Dropout;
pub use flatten::Flatten;
pub use geometry::{conv_shape, dilated_conv_shape, pool_shape, tensor_values, Padding, MAX_TENSOR_VALUES};
pub use global_average_pooling2d::GlobalAveragePooling2D;
pub use global_max_pooling2d::GlobalMaxPooling2D;
pub use max_pooling2d::MaxPooling2D;
pub use re_lu::ReLU;
pub use separable_conv2d::SeparableConv2D;

use crate::backend::{Backend, Passes, PoolShape};
use anyhow::{bail, Result};

/// How a tensor starts (Keras's initializers).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Init {
    /// U(-l, l), l = sqrt(6 / (fan_in + fan_out)), drawn from the layer's seeded stream.
    GlorotUniform {
        fan_in: usize,
        fan_out: usize,
    },
    Zeros,
    Ones,
}

/// One tensor a layer owns, saved in checkpoints as `<layer>.<suffix>`.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamSpec {
    /// Keras's weight name: "kernel", "bias", "gamma", "moving_mean", ...
    pub suffix: &'static str,
    /// Keras layout (conv HWIO, dense (in, out), per-channel vectors (c)).
    pub dims: Vec<usize>,
    pub init: Init,
    /// Trainable tensors get a gradient and optimizer state; the others (BatchNormalization's
    /// moving statistics) are only saved, loaded and updated by the layer's own forward.
    pub trainable: bool,
}

impl ParamSpec {
    pub fn trainable(suffix: &'static str, dims: Vec<usize>, init: Init) -> ParamSpec {
        ParamSpec { suffix, dims, init, trainable: true }
    }
    pub fn non_trainable(suffix: &'static str, dims: Vec<usize>, init: Init) -> ParamSpec {
        ParamSpec { suffix, dims, init, trainable: false }
    }
    /// Values; a layer's dims passed `tensor_values` in `Model::new`.
    pub fn len(&self) -> usize {
        self.dims.iter().product()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The element type of a scratch buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScratchKind {
    /// f32 values (a saved mean, a pre-activation).
    Tensor,
    /// u32 values (max-pool's argmax).
    Indices,
}

/// A buffer a layer keeps between its forward and backward: `per_image` values for each image
/// of the largest batch, plus `fixed` values (per-channel statistics).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScratchSpec {
    pub kind: ScratchKind,
    pub per_image: usize,
    pub fixed: usize,
}

impl ScratchSpec {
    pub fn per_image(kind: ScratchKind, len: usize) -> ScratchSpec {
        ScratchSpec { kind, per_image: len, fixed: 0 }
    }
    pub fn fixed(kind: ScratchKind, len: usize) -> ScratchSpec {
        ScratchSpec { kind, per_image: 0, fixed: len }
    }
    /// Values for batches of up to `max_batch`; None on overflow.
    pub fn len(&self, max_batch: usize) -> Option<usize> {
        self.per_image.checked_mul(max_batch)?.checked_add(self.fixed)
    }
}

/// An allocated scratch buffer, in the order the layer's `scratch` declared it.
pub enum Scratch<B: Backend> {
    Tensor(B::Tensor),
    Indices(B::Indices),
}

impl<B: Backend> Scratch<B> {
    pub fn alloc(backend: &B, spec: &ScratchSpec, max_batch: usize) -> Result<Scratch<B>> {
        let Some(len) = spec.len(max_batch) else { bail!("a scratch buffer for batch {max_batch} does not fit in memory") };
        Ok(match spec.kind {
            ScratchKind::Tensor => Scratch::Tensor(backend.tensor(len)?),
            ScratchKind::Indices => Scratch::Indices(backend.indices(len)?),
        })
    }
    // The layer declared its own scratch, so a wrong kind is a bug in that layer.
    pub fn tensor(&self) -> &B::Tensor {
        match self {
            Scratch::Tensor(t) => t,
            Scratch::Indices(_) => panic!("scratch buffer is u32, not f32"),
        }
    }
    pub fn tensor_mut(&mut self) -> &mut B::Tensor {
        match self {
            Scratch::Tensor(t) => t,
            Scratch::Indices(_) => panic!("scratch buffer is u32, not f32"),
        }
    }
    pub fn indices(&self) -> &B::Indices {
        match self {
            Scratch::Indices(t) => t,
            Scratch::Tensor(_) => panic!("scratch buffer is f32, not u32"),
        }
    }
    pub fn indices_mut(&mut self) -> &mut B::Indices {
        match self {
            Scratch::Indices(t) => t,
            Scratch::Tensor(_) => panic!("scratch buffer is f32, not u32"),
        }
    }
}

/// What a layer's forward gets: y = layer(x) for `n` images.
pub struct Forward<'a, B: Backend> {
    pub backend: &'a B,
    pub n: usize,
    /// true in a training step; false in evaluate and predict (BatchNormalization's moving
    /// statistics, Dropout off).
    pub training: bool,
    /// The run's seed and the optimizer steps taken before this one: with the element index,
    /// all a counter-based random draw (a dropout mask) needs to repeat on resume.
    pub seed: u64,
    pub step: u64,
    /// The layer's index in the model (what tells two Dropout layers' masks apart).
    pub layer: usize,
    /// Apply ReLU to the output: the ReLU layer right after this one runs inside it. Only
    /// ever true for a layer whose `absorbs_relu` is.
    pub relu: bool,
    /// The per-image input shape (h, w, c) or (features); the output is `Layer::output`.
    pub input: &'a [usize],
    pub x: &'a B::Tensor,
    pub y: &'a mut B::Tensor,
    /// Some when the MaxPooling2D after this layer (and after the ReLU it absorbed) runs inside
    /// it (`absorbs_maxpool`): the pool's geometry and its argmax to write (in training; an
    /// inference pass needs none); y is the pool's output.
    pub pool: Option<(PoolShape, &'a mut B::Indices)>,
    /// The layer's tensors in `params` order, mutable so a forward can update its
    /// non-trainable state (moving statistics) in training.
    pub params: &'a mut [B::Tensor],
    pub scratch: &'a mut [Scratch<B>],
}

/// What a layer's backward gets: given dy (dL/dy), it writes the gradients of its trainable
/// tensors and dx.
pub struct Backward<'a, B: Backend> {
    pub backend: &'a B,
    pub n: usize,
    pub seed: u64,
    pub step: u64,
    pub layer: usize,
    pub input: &'a [usize],
    pub x: &'a B::Tensor,
    pub y: &'a B::Tensor,
    /// Some when the forward pooled its output (`Forward::pool`): y and dy are the pool's, and
    /// this is the argmax the forward wrote.
    pub pool: Option<(PoolShape, &'a B::Indices)>,
    /// The forward applied the ReLU after it (`Forward::relu`). Only a pooled backward needs
    /// it; elsewhere the next layer masked dy already.
    pub relu: bool,
    /// dL/dy, already masked when this layer's output is ReLU'd (`output_relu`).
    pub dy: &'a B::Tensor,
    /// dL/dx to write; None when x is the network's input (no gradient needed).
    pub dx: Option<&'a mut B::Tensor>,
    /// Some(x) when the layer that produced x applied a fused ReLU: dx must come out masked by
    /// x > 0 (the backend's `*_relu` input-gradient variants do it in the same kernel; a layer
    /// without one calls `backend.relu_backward(relu_y, dx, len)` after writing dx).
    pub relu_y: Option<&'a B::Tensor>,
    pub params: &'a [B::Tensor],
    /// Gradients of the trainable tensors only: grads[k] belongs to the k-th trainable ParamSpec.
    pub grads: &'a mut [B::Tensor],
    pub scratch: &'a mut [Scratch<B>],
}

/// What each layer struct implements. Errors from `output_shape` are prefixed with the layer's
/// position and name by `Model::new`.
pub trait LayerKind: Sized + Clone + std::fmt::Debug + PartialEq {
    /// Keras's class name: the arch text's word (any case) and the summary's (Type).
    const CLASS: &'static str;
    /// The snake-case base of Keras's automatic names (conv2d, conv2d_1, ...).
    const BASE: &'static str;
    /// Other words the arch text accepts (lower case), e.g. the classic `maxpool`.
    const ALIASES: &'static [&'static str] = &[];

    /// Reads the layer's arguments; errors say which argument is wrong.
    fn from_args(args: &Args) -> Result<Self>;
    /// The arguments written back in Keras call syntax (none: the bare class name); parsing
    /// them gives an equal struct.
    fn to_args(&self) -> Vec<String>;
    /// The per-image output shape for this input, or why the layer does not fit it.
    fn output_shape(&self, input: &[usize], is_last: bool) -> Result<Vec<usize>>;
    /// The tensors the layer owns, in Keras `get_weights()` order.
    fn params(&self, _input: &[usize]) -> Vec<ParamSpec> {
        Vec::new()
    }
    /// Buffers kept from forward to backward, in the order `Forward::scratch` holds them.
    fn scratch(&self, _input: &[usize]) -> Vec<ScratchSpec> {
        Vec::new()
    }
    /// The output is the input's memory (Flatten of NHWC): no forward or backward runs.
    fn is_view(&self) -> bool {
        false
    }
    /// The output has ReLU applied: the gradient reaching it is masked by y > 0, by the next
    /// layer's backward (`relu_y`) or, for the loss's input, by the network.
    fn output_relu(&self) -> bool {
        false
    }
    /// The forward can apply ReLU to its own output (`Forward::relu`), so the network runs a
    /// ReLU layer right after it as part of it: one pass over the activation instead of two,
    /// and no gradient copy back through the ReLU.
    fn absorbs_relu(&self) -> bool {
        false
    }
    /// The forward max-pools its own (ReLU'd) output (`Forward::pool`) on `backend`, in a
    /// network that runs `passes`: the network then runs a MaxPooling2D with disjoint windows
    /// right after it (and after its absorbed ReLU) as part of it. `input` is the layer's
    /// per-image input shape.
    fn absorbs_maxpool<B: Backend>(&self, _backend: &B, _input: &[usize], _passes: Passes) -> bool {
        false
    }
    fn forward<B: Backend>(&self, f: Forward<'_, B>);
    fn backward<B: Backend>(&self, b: Backward<'_, B>);
}

/// One layer as the arch text wrote it: one variant per layer struct.
#[derive(Clone, Debug, PartialEq)]
pub enum LayerSpec {
    Conv2D(Conv2D),
    MaxPooling2D(MaxPooling2D),
    Flatten(Flatten),
    Dense(Dense),
    BatchNormalization(BatchNormalization),
    Dropout(Dropout),
    ReLU(ReLU),
    GlobalAveragePooling2D(GlobalAveragePooling2D),
    GlobalMaxPooling2D(GlobalMaxPooling2D),
    AveragePooling2D(AveragePooling2D),
    Activation(ActivationLayer),
    LeakyReLU(LeakyReLU),
    DepthwiseConv2D(DepthwiseConv2D),
    SeparableConv2D(SeparableConv2D),
    /// A test-only layer with a non-trainable tensor (src/layers/probe.rs).
    #[cfg(test)]
    Probe(probe::Probe),
}

/// The one match over layer kinds: `with_layer!(spec, l => expr)` evaluates `expr` with `l`
/// bound to the variant's struct.
macro_rules! with_layer {
    ($spec:expr, $l:ident => $body:expr) => {
        match $spec {
            LayerSpec::Conv2D($l) => $body,
            LayerSpec::MaxPooling2D($l) => $body,
            LayerSpec::Flatten($l) => $body,
            LayerSpec::Dense($l) => $body,
            LayerSpec::BatchNormalization($l) => $body,
            LayerSpec::Dropout($l) => $body,
            LayerSpec::ReLU($l) => $body,
            LayerSpec::GlobalAveragePooling2D($l) => $body,
            LayerSpec::GlobalMaxPooling2D($l) => $body,
            LayerSpec::AveragePooling2D($l) => $body,
            LayerSpec::Activation($l) => $body,
            LayerSpec::LeakyReLU($l) => $body,
            LayerSpec::DepthwiseConv2D($l) => $body,
            LayerSpec::SeparableConv2D($l) => $body,
            #[cfg(test)]
            LayerSpec::Probe($l) => $body,
        }
    };
}

/// The arch text's class words, for the parser and its error message.
type ParseFn = fn(&Args) -> Result<LayerSpec>;
const CLASSES: &[(&str, &str, &[&str], ParseFn)] = &[
    (Conv2D::CLASS, Conv2D::BASE, Conv2D::ALIASES, |a| Ok(LayerSpec::Conv2D(Conv2D::from_args(a)?))),
    (MaxPooling2D::CLASS, MaxPooling2D::BASE, MaxPooling2D::ALIASES, |a| Ok(LayerSpec::MaxPooling2D(MaxPooling2D::from_args(a)?))),
    (Flatten::CLASS, Flatten::BASE, Flatten::ALIASES, |a| Ok(LayerSpec::Flatten(Flatten::from_args(a)?))),
    (Dense::CLASS, Dense::BASE, Dense::ALIASES, |a| Ok(LayerSpec::Dense(Dense::from_args(a)?))),
    (BatchNormalization::CLASS, BatchNormalization::BASE, BatchNormalization::ALIASES, |a| {
        Ok(LayerSpec::BatchNormalization(BatchNormalization::from_args(a)?))
    }),
    (Dropout::CLASS, Dropout::BASE, Dropout::ALIASES, |a| Ok(LayerSpec::Dropout(Dropout::from_args(a)?))),
    (ReLU::CLASS, ReLU::BASE, ReLU::ALIASES, |a| Ok(LayerSpec::ReLU(ReLU::from_args(a)?))),
    (GlobalAveragePooling2D::CLASS, GlobalAveragePooling2D::BASE, GlobalAveragePooling2D::ALIASES, |a| {
        Ok(LayerSpec::GlobalAveragePooling2D(GlobalAveragePooling2D::from_args(a)?))
    }),
    (GlobalMaxPooling2D::CLASS, GlobalMaxPooling2D::BASE, GlobalMaxPooling2D::ALIASES, |a| {
        Ok(LayerSpec::GlobalMaxPooling2D(GlobalMaxPooling2D::from_args(a)?))
    }),
    (AveragePooling2D::CLASS, AveragePooling2D::BASE, AveragePooling2D::ALIASES, |a| Ok(LayerSpec::AveragePooling2D(AveragePooling2D::from_args(a)?))),
    (ActivationLayer::CLASS, ActivationLayer::BASE, ActivationLayer::ALIASES, |a| Ok(LayerSpec::Activation(ActivationLayer::from_args(a)?))),
    (LeakyReLU::CLASS, LeakyReLU::BASE, LeakyReLU::ALIASES, |a| Ok(LayerSpec::LeakyReLU(LeakyReLU::from_args(a)?))),
    (DepthwiseConv2D::CLASS, DepthwiseConv2D::BASE, DepthwiseConv2D::ALIASES, |a| Ok(LayerSpec::DepthwiseConv2D(DepthwiseConv2D::from_args(a)?))),
    (SeparableConv2D::CLASS, SeparableConv2D::BASE, SeparableConv2D::ALIASES, |a| Ok(LayerSpec::SeparableConv2D(SeparableConv2D::from_args(a)?))),
    #[cfg(test)]
    (probe::Probe::CLASS, probe::Probe::BASE, probe::Probe::ALIASES, |a| Ok(LayerSpec::Probe(probe::Probe::from_args(a)?))),
];

impl LayerSpec {
    /// The layer a parsed call names (class names case-insensitive, Keras's snake-case base
    /// and the classic words too).
    pub fn from_args(args: &Args) -> Result<LayerSpec> {
        let word = args.class.to_ascii_lowercase();
        for (class, base, aliases, parse) in CLASSES {
            if class.eq_ignore_ascii_case(&word) || *base == word || aliases.contains(&word.as_str()) {
                return parse(args);
            }
        }
        let known: Vec<&str> = CLASSES.iter().map(|c| c.0).collect();
        bail!("unknown layer '{}' (known: {})", args.class, known.join(", "))
    }
    /// Keras's class name.
    pub fn class(&self) -> &'static str {
        fn of<L: LayerKind>(_: &L) -> &'static str {
            L::CLASS
        }
        with_layer!(self, l => of(l))
    }
    /// The base of Keras's automatic names.
    pub fn base_name(&self) -> &'static str {
        fn of<L: LayerKind>(_: &L) -> &'static str {
            L::BASE
        }
        with_layer!(self, l => of(l))
    }
    /// `Class(args)` in Keras call syntax, or the bare class name when it takes none.
    pub fn to_call(&self) -> String {
        let args = with_layer!(self, l => l.to_args());
        if args.is_empty() {
            self.class().to_string()
        } else {
            format!("{}({})", self.class(), args.join(", "))
        }
    }
    pub fn output_shape(&self, input: &[usize], is_last: bool) -> Result<Vec<usize>> {
        with_layer!(self, l => l.output_shape(input, is_last))
    }
    pub fn params(&self, input: &[usize]) -> Vec<ParamSpec> {
        with_layer!(self, l => l.params(input))
    }
    pub fn scratch(&self, input: &[usize]) -> Vec<ScratchSpec> {
        with_layer!(self, l => l.scratch(input))
    }
    pub fn is_view(&self) -> bool {
        with_layer!(self, l => l.is_view())
    }
    pub fn output_relu(&self) -> bool {
        with_layer!(self, l => l.output_relu())
    }
    pub fn absorbs_relu(&self) -> bool {
        with_layer!(self, l => l.absorbs_relu())
    }
    pub fn absorbs_maxpool<B: Backend>(&self, backend: &B, input: &[usize], passes: Passes) -> bool {
        with_layer!(self, l => l.absorbs_maxpool(backend, input, passes))
    }
    /// A layer that is exactly y = max(x, 0): `ReLU` or `Activation("relu")`.
    pub fn is_plain_relu(&self) -> bool {
        match self {
            LayerSpec::ReLU(_) => true,
            LayerSpec::Activation(a) => a.function == crate::backend::ActivationFn::Relu,
            _ => false,
        }
    }
    pub fn forward<B: Backend>(&self, f: Forward<'_, B>) {
        with_layer!(self, l => l.forward(f))
    }
    pub fn backward<B: Backend>(&self, b: Backward<'_, B>) {
        with_layer!(self, l => l.backward(b))
    }
}

/// `(a, b)` as Keras writes a size: `3` when square, `(3, 5)` otherwise.
pub fn format_pair(p: (usize, usize)) -> String {
    if p.0 == p.1 {
        p.0.to_string()
    } else {
        format!("({}, {})", p.0, p.1)
    }
}

/// An activation word among positional arguments (the classic `conv2d 32 3 relu`, Keras's
/// `Dense(10, "softmax")`), and the positional arguments without it.
pub fn split_activation(args: &Args) -> Result<(Option<Activation>, Vec<&Value>)> {
    let mut activation = None;
    let mut rest = Vec::new();
    for v in &args.positional {
        match v.text() {
            Some(t)
                if !t.starts_with(|c: char| c.is_ascii_digit() || c == '-' || c == '+')
                    && !["classes", "same", "valid"].contains(&t.to_ascii_lowercase().as_str()) =>
            {
                if activation.is_some() {
                    bail!("{}: more than one activation given", args.class);
                }
                activation = Some(Activation::parse(t)?);
            }
            _ => rest.push(v),
        }
    }
    if let Some(v) = args.keyword(&["activation"]) {
        if activation.is_some() {
            bail!("{}: the activation is given twice", args.class);
        }
        activation = Some(Activation::parse(v.text().unwrap_or("?"))?);
    }
    Ok((activation, rest))
}
