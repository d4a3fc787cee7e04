//! The Backend trait: where tensors live and how each op runs on them.
//!
//! The network (src/network.rs) owns buffers of the backend's types and calls one method per op.
//! The CPU backend (cpu.rs) runs each op at once; the GPU backend records it into the current
//! step's command encoder and submits on `flush` (or on any read-back). Every op takes the
//! batch size `n` of this call: buffers are allocated for the largest batch and a final partial
//! batch uses a prefix of them.
//!
//! Layouts follow Keras: activations NHWC, conv kernels HWIO (kh, kw, in, out), dense kernels
//! (in, out), all f32.

pub mod activation;
pub mod cpu;
pub mod dropout;
pub mod gpu;

use anyhow::Result;

/// A 2-D convolution's geometry. Padding is given as the top/left pad; the bottom/right pad is
/// whatever the output size implies (Keras "same" puts the odd pixel at the bottom/right).
/// Tap (ky, kx) of output (oy, ox) reads input (oy*stride_h + ky*dilation_h - pad_top, ...):
/// a dilated kernel spans (k - 1) * dilation + 1 pixels (Keras's `dilation_rate`; 1 is a plain conv).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConvShape {
    pub in_h: usize,
    pub in_w: usize,
    pub in_c: usize,
    pub out_h: usize,
    pub out_w: usize,
    pub out_c: usize,
    pub k_h: usize,
    pub k_w: usize,
    pub stride_h: usize,
    pub stride_w: usize,
    pub pad_top: usize,
    pub pad_left: usize,
    pub dilation_h: usize,
    pub dilation_w: usize,
}

impl ConvShape {
    /// Whether every tap is next to the last (dilation 1): the fast CPU algorithms need it.
    pub fn undilated(&self) -> bool {
        self.dilation_h == 1 && self.dilation_w == 1
    }
    pub fn in_len(&self) -> usize {
        self.in_h * self.in_w * self.in_c
    }
    pub fn out_len(&self) -> usize {
        self.out_h * self.out_w * self.out_c
    }
    /// Rows of the im2col matrix for one image, and its width.
    pub fn patch_len(&self) -> usize {
        self.k_h * self.k_w * self.in_c
    }
    pub fn kernel_len(&self) -> usize {
        self.patch_len() * self.out_c
    }
}

/// A depthwise convolution's geometry (Keras DepthwiseConv2D): each input channel c is convolved
/// with its own `multiplier` filters, giving output channels c * multiplier + m. The kernel is
/// Keras's `depthwise_kernel` (k_h, k_w, channels, multiplier), i.e. (taps, out_c) row-major.
/// Padding, stride and dilation as in ConvShape.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DepthwiseShape {
    pub in_h: usize,
    pub in_w: usize,
    pub channels: usize,
    pub multiplier: usize,
    pub out_h: usize,
    pub out_w: usize,
    pub k_h: usize,
    pub k_w: usize,
    pub stride_h: usize,
    pub stride_w: usize,
    pub pad_top: usize,
    pub pad_left: usize,
    pub dilation_h: usize,
    pub dilation_w: usize,
}

impl DepthwiseShape {
    /// The depthwise conv with the geometry of `conv` (whose out_c must be in_c * multiplier),
    /// so one Keras padding rule (model::conv_shape) serves both layers.
    pub fn from_conv(conv: &ConvShape, multiplier: usize) -> DepthwiseShape {
        assert_eq!(conv.out_c, conv.in_c * multiplier, "a depthwise conv has in_c * multiplier outputs");
        DepthwiseShape {
            in_h: conv.in_h,
            in_w: conv.in_w,
            channels: conv.in_c,
            multiplier,
            out_h: conv.out_h,
            out_w: conv.out_w,
            k_h: conv.k_h,
            k_w: conv.k_w,
            stride_h: conv.stride_h,
            stride_w: conv.stride_w,
            pad_top: conv.pad_top,
            pad_left: conv.pad_left,
            dilation_h: conv.dilation_h,
            dilation_w: conv.dilation_w,
        }
    }
    pub fn out_c(&self) -> usize {
        self.channels * self.multiplier
    }
    pub fn in_len(&self) -> usize {
        self.in_h * self.in_w * self.channels
    }
    pub fn out_len(&self) -> usize {
        self.out_h * self.out_w * self.out_c()
    }
    pub fn taps(&self) -> usize {
        self.k_h * self.k_w
    }
    pub fn kernel_len(&self) -> usize {
        self.taps() * self.out_c()
    }
}

/// The passes a network runs, which decide what its layers may fuse (`Backend::fuses_conv_maxpool`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Passes {
    /// The forward only (`Network::for_inference`).
    Inference,
    /// Forward and backward; `input_gradient` is false for a layer whose input is the network's
    /// input, whose gradient nothing needs.
    Training { input_gradient: bool },
}

/// A pooling window's geometry (max or average), NHWC. Window (oy, ox) covers input rows
/// `oy * stride_h - pad_top ..` (size_h of them) and likewise columns; cells outside the input
/// are padding, which never wins a max and is not counted in an average (Keras). Build it with
/// `valid`, `same` or `global`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PoolShape {
    pub in_h: usize,
    pub in_w: usize,
    pub c: usize,
    pub out_h: usize,
    pub out_w: usize,
    pub size_h: usize,
    pub size_w: usize,
    pub stride_h: usize,
    pub stride_w: usize,
    pub pad_top: usize,
    pub pad_left: usize,
}

impl PoolShape {
    pub fn in_len(&self) -> usize {
        self.in_h * self.in_w * self.c
    }
    pub fn out_len(&self) -> usize {
        self.out_h * self.out_w * self.c
    }

    /// Keras padding="valid" on an (h, w, c) input: windows that do not fit are dropped; None
    /// when none fits or a size/stride is 0.
    pub fn valid(input: (usize, usize, usize), size: (usize, usize), stride: (usize, usize)) -> Option<PoolShape> {
        let (h, w, c) = input;
        if size.0 == 0 || size.1 == 0 || stride.0 == 0 || stride.1 == 0 || h < size.0 || w < size.1 {
            return None;
        }
        let (out_h, out_w) = ((h - size.0) / stride.0 + 1, (w - size.1) / stride.1 + 1);
        Some(PoolShape { in_h: h, in_w: w, c, out_h, out_w, size_h: size.0, size_w: size.1, stride_h: stride.0, stride_w: stride.1, pad_top: 0, pad_left: 0 })
    }

    /// Keras padding="same": ceil(in / stride) windows per side, padded by
    /// max((out - 1) * stride + size - in, 0) with the odd pixel at the bottom/right (TF's
    /// rule). Every window keeps at least one real cell (the padding is under `size`). None
    /// when a size/stride or an input side is 0.
    pub fn same(input: (usize, usize, usize), size: (usize, usize), stride: (usize, usize)) -> Option<PoolShape> {
        let (h, w, c) = input;
        if size.0 == 0 || size.1 == 0 || stride.0 == 0 || stride.1 == 0 || h == 0 || w == 0 {
            return None;
        }
        let side = |len: usize, size: usize, stride: usize| {
            let out = len.div_ceil(stride);
            let pad_total = ((out - 1).checked_mul(stride)?.checked_add(size)?).saturating_sub(len);
            Some((out, pad_total / 2))
        };
        let ((out_h, pad_top), (out_w, pad_left)) = (side(h, size.0, stride.0)?, side(w, size.1, stride.1)?);
        Some(PoolShape { in_h: h, in_w: w, c, out_h, out_w, size_h: size.0, size_w: size.1, stride_h: stride.0, stride_w: stride.1, pad_top, pad_left })
    }

    /// GlobalMaxPooling2D / GlobalAveragePooling2D: one window over the whole (h, w) image,
    /// (n, h, w, c) -> (n, 1, 1, c), the same memory as (n, c).
    pub fn global(input: (usize, usize, usize)) -> Option<PoolShape> {
        PoolShape::valid(input, (input.0, input.1), (1, 1))
    }

    /// The input rows window row `oy` covers, clipped to the input: `lo..hi`, never empty for a
    /// shape built by `valid`, `same` or `global`.
    pub fn rows(&self, oy: usize) -> (usize, usize) {
        clipped_window(oy * self.stride_h, self.pad_top, self.size_h, self.in_h)
    }
    /// Whether no input cell is in two windows (stride >= size both ways, as Keras's default
    /// stride = pool size).
    pub fn windows_disjoint(&self) -> bool {
        self.stride_h >= self.size_h && self.stride_w >= self.size_w
    }
    /// The input columns window column `ox` covers, clipped likewise.
    pub fn cols(&self, ox: usize) -> (usize, usize) {
        clipped_window(ox * self.stride_w, self.pad_left, self.size_w, self.in_w)
    }
}

/// A window starting at padded coordinate `start`, as input coordinates `lo..hi` within `len`.
fn clipped_window(start: usize, pad: usize, size: usize, len: usize) -> (usize, usize) {
    (start.saturating_sub(pad), (start + size).saturating_sub(pad).min(len))
}

/// An element-wise activation (Keras 3's keras/src/activations/activations.py), forward
/// y = f(x) and backward dx = dy * f'(x); the formulas live in activation.rs. Softmax is not
/// here: it stays fused with the loss.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ActivationFn {
    /// max(x, 0).
    Relu,
    /// x if x > 0 else negative_slope * x (Keras: 0.3 in the LeakyReLU layer, 0.2 in
    /// keras.activations.leaky_relu).
    LeakyRelu {
        negative_slope: f32,
    },
    /// x if x > 0 else alpha * (exp(x) - 1) (Keras default alpha 1).
    Elu {
        alpha: f32,
    },
    /// 0.5 x (1 + erf(x / sqrt 2)) (Keras's approximate=False), erf as in `activation::erf`.
    Gelu,
    /// 1 / (1 + exp(-x)).
    Sigmoid,
    Tanh,
    /// swish / silu: x * sigmoid(x).
    Swish,
}

/// A dense layer's geometry: x (n, inputs) * kernel (inputs, units) + bias (units).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DenseShape {
    pub inputs: usize,
    pub units: usize,
}

/// A BatchNormalization's geometry: normalised over the last axis (`channels`), with
/// `positions` values of each channel per sample (h * w of an NHWC tensor, 1 of a (n, units)
/// one). Statistics run over the n * positions values of a channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BatchNormShape {
    pub positions: usize,
    pub channels: usize,
    /// The forward applies ReLU to its output: a ReLU layer right after the BatchNormalization
    /// runs inside it (see `LayerKind::absorbs_relu`). The backward is unchanged (the layer
    /// after masks the gradient, as it does for any ReLU'd activation).
    pub relu: bool,
}

impl BatchNormShape {
    /// Values per sample.
    pub fn len(&self) -> usize {
        self.positions * self.channels
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Floats of the layer's `saved` scratch tensor: the batch mean and 1/sqrt(var + epsilon)
    /// the training forward writes, and two per-channel terms the backward writes between its
    /// two passes (see `Backend::batchnorm_backward`).
    pub fn saved_len(&self) -> usize {
        4 * self.channels
    }
}

/// Keras's BatchNormalization hyper-parameters (its defaults: momentum 0.99, epsilon 1e-3).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BatchNormConfig {
    pub momentum: f32,
    pub epsilon: f32,
}

impl Default for BatchNormConfig {
    fn default() -> Self {
        BatchNormConfig { momentum: 0.99, epsilon: 1e-3 }
    }
}

/// Adam's hyper-parameters (Keras defaults), Keras's formulation:
/// `alpha = lr * sqrt(1 - beta2^t) / (1 - beta1^t)`,
/// `m += (g - m)(1 - beta1)`, `v += (g^2 - v)(1 - beta2)`, `p -= alpha * m / (sqrt(v) + epsilon)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamConfig {
    pub learning_rate: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub epsilon: f32,
}

impl Default for AdamConfig {
    fn default() -> Self {
        AdamConfig { learning_rate: 1e-3, beta1: 0.9, beta2: 0.999, epsilon: 1e-7 }
    }
}

impl AdamConfig {
    /// The update of step `step` (1-based) with these hyper-parameters.
    pub fn at_step(self, step: u64) -> AdamStep {
        AdamStep { config: self, step }
    }
}

/// One Adam step: the hyper-parameters and the 1-based step count t.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamStep {
    pub config: AdamConfig,
    pub step: u64,
}

impl AdamStep {
    /// The bias-corrected step size alpha, computed in f64 so every backend gets the same f32.
    pub fn alpha(&self) -> f32 {
        let c = &self.config;
        // Past i32::MAX both powers are 0 in f64 already: saturate rather than wrap.
        let t = i32::try_from(self.step).unwrap_or(i32::MAX);
        let b1 = 1.0 - (c.beta1 as f64).powi(t);
        let b2 = 1.0 - (c.beta2 as f64).powi(t);
        (c.learning_rate as f64 * b2.sqrt() / b1) as f32
    }
}

/// One SGD step (keras/src/optimizers/sgd.py): without momentum p -= g * lr; with it
/// m = m * momentum - g * lr, then p += m, or with Nesterov p += m * momentum - g * lr.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SgdStep {
    pub learning_rate: f32,
    pub momentum: f32,
    pub nesterov: bool,
}

/// One RMSprop step (keras/src/optimizers/rmsprop.py, momentum 0, centered false):
/// v = rho * v + (1 - rho) * g^2, p -= lr * g / sqrt(v + epsilon).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RmsPropStep {
    pub learning_rate: f32,
    pub rho: f32,
    pub epsilon: f32,
}

/// Layout of the metrics accumulator every backend keeps on its device: `softmax_xent` adds to
/// it; the host reads it a few times a second and resets it each epoch.
pub const METRIC_LOSS_SUM: usize = 0; // sum over samples of the cross-entropy
pub const METRIC_CORRECT: usize = 1; // count of samples whose argmax equals the label
pub const METRIC_COUNT: usize = 2; // count of samples seen
pub const METRICS_LEN: usize = 3;

/// Work a backend has recorded so far (`Backend::record_counts`): kernel dispatches, the
/// compute passes holding them, and the device-memory bytes the kernels read and write,
/// counted from the shapes with each operand moved once per kernel (a lower bound: tiled
/// kernels read their inputs more than once).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecordCounts {
    pub dispatches: u64,
    pub compute_passes: u64,
    pub bytes_read: u64,
    pub bytes_written: u64,
}

impl RecordCounts {
    /// What was recorded between `earlier` and `self`.
    pub fn since(self, earlier: RecordCounts) -> RecordCounts {
        RecordCounts {
            dispatches: self.dispatches - earlier.dispatches,
            compute_passes: self.compute_passes - earlier.compute_passes,
            bytes_read: self.bytes_read - earlier.bytes_read,
            bytes_written: self.bytes_written - earlier.bytes_written,
        }
    }
}

/// Per-sample augmentation for `gather_batch`: each batch row's packed transform, laid out as
/// `layout` says (one `crate::augment::SampleTransform` word, or an `AffineTransform`'s
/// `AFFINE_WORDS`), and the (height, width, channels) of the images it moves pixels in.
pub struct GatherAugment<'a, I> {
    pub transforms: &'a I,
    pub shape: (usize, usize, usize),
    pub layout: crate::augment::TransformLayout,
}

/// One role of a network's trainable tensors (their values, their gradients, or one optimizer
/// state), a tensor per trainable tensor in one order, from `Backend::tensor_arena`.
pub struct TensorArena<T> {
    /// The parts, zero-filled, `lens[i]` elements each.
    pub parts: Vec<T>,
    /// Where the backend laid the parts out in one buffer (the GPU): that buffer and its length
    /// in elements. Each part starts where a binding may start (padding between them, which no
    /// part covers, starts at zero), so one element-wise update over the whole buffer updates
    /// every part: one dispatch for the optimizer step. None where the parts are separate.
    pub whole: Option<(T, usize)>,
}

impl<T> TensorArena<T> {
    /// Separate tensors of `lens` from `make`, no whole buffer.
    pub fn separate(lens: &[usize], make: impl Fn(usize) -> Result<T>) -> Result<Self> {
        Ok(TensorArena { parts: lens.iter().map(|&len| make(len)).collect::<Result<_>>()?, whole: None })
    }
}

pub trait Backend {
    /// An f32 array on the device.
    type Tensor;
    /// A u32 array on the device (batch indices, labels, max-pool argmax).
    type Indices;
    /// A u8 image set (N, H, W, C) with its u8 labels, on the device.
    type Images;

    /// One line naming the device (adapter name, backend, driver; or "CPU, N threads").
    fn describe(&self) -> String;
    /// True when tensors live in this machine's RAM (the CPU backend): then a network larger
    /// than the RAM is refused before allocating. A GPU checks its own limits.
    fn tensors_in_host_memory(&self) -> bool {
        false
    }

    /// A zero-filled tensor.
    fn tensor(&self, len: usize) -> Result<Self::Tensor>;
    /// Zero-filled tensors of `lens` elements for one role of the trainable tensors (see
    /// `TensorArena`). By default separate tensors, as `tensor` makes them (the CPU backend).
    fn tensor_arena(&self, lens: &[usize]) -> Result<TensorArena<Self::Tensor>> {
        TensorArena::separate(lens, |len| self.tensor(len))
    }
    fn upload(&self, t: &mut Self::Tensor, data: &[f32]);
    /// Reads the whole tensor back (waits for queued work).
    fn download(&self, t: &Self::Tensor) -> Result<Vec<f32>>;
    fn indices(&self, len: usize) -> Result<Self::Indices>;
    fn upload_indices(&self, t: &mut Self::Indices, data: &[u32]);
    fn download_indices(&self, t: &Self::Indices) -> Result<Vec<u32>>;
    /// Puts a data set on the device. `images.len() == labels.len() * image_len`.
    fn upload_images(&self, images: &[u8], labels: &[u8], image_len: usize) -> Result<Self::Images>;
    /// Puts an image set on the device: `upload_images` of its pixels and labels, except where
    /// the backend can share the set's pixels (the CPU backend holds the same Arc instead of a
    /// second copy: CIFAR-10's 184 MB once, not twice).
    fn upload_image_set(&self, set: &crate::data::ImageSet) -> Result<Self::Images> {
        self.upload_images(&set.images, &set.labels, set.image_len())
    }

    /// x[i] = images[idx[i]] / 255 as f32, labels_out[i] = labels[idx[i]], for i < n. With
    /// `augment`, row i is first transformed (flip and shift with zero fill; or the affine
    /// transform: bilinear with zero fill, contrast, brightness): every backend gives
    /// bit-identical rows.
    fn gather_batch(
        &self,
        data: &Self::Images,
        idx: &Self::Indices,
        n: usize,
        x: &mut Self::Tensor,
        labels: &mut Self::Indices,
        augment: Option<GatherAugment<'_, Self::Indices>>,
    );

    /// y (n, out_h, out_w, out_c) = conv(x (n, in_h, in_w, in_c), w HWIO) + b, then ReLU if `relu`.
    /// `b` None: no bias (Keras's `use_bias=False`), nothing is added.
    #[allow(clippy::too_many_arguments)]
    fn conv2d_forward(&self, x: &Self::Tensor, w: &Self::Tensor, b: Option<&Self::Tensor>, y: &mut Self::Tensor, s: &ConvShape, n: usize, relu: bool);
    /// dx (n, in_h, in_w, in_c) = gradient of the conv's input given dy (n, out_h, out_w, out_c).
    fn conv2d_backward_input(&self, dy: &Self::Tensor, w: &Self::Tensor, dx: &mut Self::Tensor, s: &ConvShape, n: usize);
    /// dw (HWIO) and db (out_c) = gradients summed over the batch (overwritten, not accumulated).
    /// `db` None: a conv without bias, no bias gradient is written.
    fn conv2d_backward_filter(&self, x: &Self::Tensor, dy: &Self::Tensor, dw: &mut Self::Tensor, db: Option<&mut Self::Tensor>, s: &ConvShape, n: usize);

    /// Depthwise conv (Keras DepthwiseConv2D): y (n, out_h, out_w, channels * multiplier) at
    /// channel c * multiplier + m = sum over taps of x (n, in_h, in_w, channels) at channel c times
    /// w (k_h, k_w, channels, multiplier) at (tap, c, m), + b (out_c) if any, then ReLU if `relu`.
    #[allow(clippy::too_many_arguments)]
    fn depthwise_conv2d_forward(
        &self,
        x: &Self::Tensor,
        w: &Self::Tensor,
        b: Option<&Self::Tensor>,
        y: &mut Self::Tensor,
        s: &DepthwiseShape,
        n: usize,
        relu: bool,
    );
    /// dx (n, in_h, in_w, channels) = gradient of the depthwise conv's input given dy.
    fn depthwise_conv2d_backward_input(&self, dy: &Self::Tensor, w: &Self::Tensor, dx: &mut Self::Tensor, s: &DepthwiseShape, n: usize);
    /// dw (k_h, k_w, channels, multiplier) and db (out_c, unless None) summed over the batch in a
    /// fixed order (overwritten, not accumulated).
    fn depthwise_conv2d_backward_filter(
        &self,
        x: &Self::Tensor,
        dy: &Self::Tensor,
        dw: &mut Self::Tensor,
        db: Option<&mut Self::Tensor>,
        s: &DepthwiseShape,
        n: usize,
    );
    /// dy[i] = 0 where y[i] <= 0 (y is the ReLU's output), for i < len.
    fn relu_backward(&self, y: &Self::Tensor, dy: &mut Self::Tensor, len: usize);

    /// y = max over each window's real cells (padding never wins); argmax[i] = index into x
    /// (within the whole batch) of the max, the first one on ties (in window order, rows then
    /// columns). With `PoolShape::global` this is GlobalMaxPooling2D.
    fn maxpool_forward(&self, x: &Self::Tensor, y: &mut Self::Tensor, argmax: &mut Self::Indices, s: &PoolShape, n: usize);
    /// `maxpool_forward`'s y for inference, where nothing reads the argmax: the same values
    /// bit for bit; `argmax` is the layer's buffer, which a backend may still fill.
    fn maxpool_forward_infer(&self, x: &Self::Tensor, y: &mut Self::Tensor, argmax: &mut Self::Indices, s: &PoolShape, n: usize) {
        self.maxpool_forward(x, y, argmax, s, n)
    }
    /// dx = 0, then dx[argmax[i]] += dy[i].
    fn maxpool_backward(&self, dy: &Self::Tensor, argmax: &Self::Indices, dx: &mut Self::Tensor, s: &PoolShape, n: usize);
    /// y = mean of each window's real cells (padding is not counted: Keras/TF "same" average
    /// pooling). With `PoolShape::global` this is GlobalAveragePooling2D.
    fn avgpool_forward(&self, x: &Self::Tensor, y: &mut Self::Tensor, s: &PoolShape, n: usize);
    /// dx[i] = sum over the windows w covering i of dy[w] / (real cells of w), windows in
    /// increasing order (overwritten, not accumulated).
    fn avgpool_backward(&self, dy: &Self::Tensor, dx: &mut Self::Tensor, s: &PoolShape, n: usize);

    /// y[i] = f(x[i]) for i < len.
    fn activation_forward(&self, x: &Self::Tensor, y: &mut Self::Tensor, len: usize, f: ActivationFn);
    /// dy[i] *= f'(x[i]) for i < len, in place (dy becomes the gradient of x): `x` is the
    /// activation's input and `y` its output (f(x)); each function reads whichever gives its
    /// derivative exactly and cheaply (see activation.rs).
    fn activation_backward(&self, x: &Self::Tensor, y: &Self::Tensor, dy: &mut Self::Tensor, len: usize, f: ActivationFn);

    /// y (n, units) = x (n, inputs) * w (inputs, units) + b, then ReLU if `relu`.
    #[allow(clippy::too_many_arguments)]
    fn dense_forward(&self, x: &Self::Tensor, w: &Self::Tensor, b: &Self::Tensor, y: &mut Self::Tensor, s: &DenseShape, n: usize, relu: bool);
    /// dx (n, inputs) = dy (n, units) * w^T.
    fn dense_backward_input(&self, dy: &Self::Tensor, w: &Self::Tensor, dx: &mut Self::Tensor, s: &DenseShape, n: usize);
    /// dw = x^T * dy, db = column sums of dy (overwritten).
    #[allow(clippy::too_many_arguments)]
    fn dense_backward_filter(&self, x: &Self::Tensor, dy: &Self::Tensor, dw: &mut Self::Tensor, db: &mut Self::Tensor, s: &DenseShape, n: usize);

    /// Fused softmax + sparse categorical cross-entropy over n rows of `classes` logits:
    /// dlogits = (softmax - onehot) / n (the gradient of the batch-mean loss), and
    /// metrics[LOSS_SUM] += sum of -log softmax[label], metrics[CORRECT] += argmax hits,
    /// metrics[COUNT] += n. Stable: log-softmax via the row max.
    fn softmax_xent(&self, logits: &Self::Tensor, labels: &Self::Indices, dlogits: &mut Self::Tensor, metrics: &mut Self::Tensor, n: usize, classes: usize);
    /// `softmax_xent` with a weight per class (`--class-weight`, Keras's `class_weight`): row i
    /// counts w = class_weights[label_i] times, so dlogits = w * (softmax - onehot) / n and
    /// metrics[LOSS_SUM] += sum of w * -log softmax[label] (Keras's "sum_over_batch_size").
    /// CORRECT and COUNT stay unweighted. A separate path, so unweighted runs do not change.
    #[allow(clippy::too_many_arguments)]
    fn softmax_xent_weighted(
        &self,
        logits: &Self::Tensor,
        labels: &Self::Indices,
        class_weights: &Self::Tensor,
        dlogits: &mut Self::Tensor,
        metrics: &mut Self::Tensor,
        n: usize,
        classes: usize,
    );
    /// `softmax_xent` (or `softmax_xent_weighted` with `class_weights`) against smoothed
    /// targets, Keras's CategoricalCrossentropy(label_smoothing=F): t = onehot * (1 - F) + F /
    /// classes, dlogits = w * (softmax - t) / n, metrics[LOSS_SUM] += sum of w * -sum_c t_c *
    /// log softmax_c. A separate path, so runs without smoothing keep their bits.
    #[allow(clippy::too_many_arguments)]
    fn softmax_xent_smoothed(
        &self,
        logits: &Self::Tensor,
        labels: &Self::Indices,
        class_weights: Option<&Self::Tensor>,
        dlogits: &mut Self::Tensor,
        metrics: &mut Self::Tensor,
        n: usize,
        classes: usize,
        label_smoothing: f32,
    );
    /// probs = softmax(logits) row by row (for predict).
    fn softmax(&self, logits: &Self::Tensor, probs: &mut Self::Tensor, n: usize, classes: usize);

    /// BatchNormalization's training forward over the last axis of x (n, positions, channels):
    /// per channel the batch mean and the biased variance (divided by m = n * positions, as
    /// Keras 3's `ops.moments`), xhat = (x - mean) / sqrt(var + epsilon), y = gamma * xhat +
    /// beta. Writes saved[0..c] = mean and saved[c..2c] = 1 / sqrt(var + epsilon) for the
    /// backward, and updates moving_mean = moving_mean * momentum + mean * (1 - momentum), and
    /// moving_variance likewise with the same biased variance (Keras 3 does both). Sums in a
    /// fixed order on every backend.
    #[allow(clippy::too_many_arguments)]
    fn batchnorm_forward_train(
        &self,
        x: &Self::Tensor,
        gamma: &Self::Tensor,
        beta: &Self::Tensor,
        moving_mean: &mut Self::Tensor,
        moving_variance: &mut Self::Tensor,
        saved: &mut Self::Tensor,
        y: &mut Self::Tensor,
        s: &BatchNormShape,
        n: usize,
        h: &BatchNormConfig,
    );
    /// BatchNormalization's inference forward (evaluate, predict): the training forward's
    /// formula with the moving statistics in place of the batch's. Writes saved[0..2c] (the
    /// moving mean and 1 / sqrt(moving_variance + epsilon)) on the way; nothing else changes.
    #[allow(clippy::too_many_arguments)]
    fn batchnorm_forward_infer(
        &self,
        x: &Self::Tensor,
        gamma: &Self::Tensor,
        beta: &Self::Tensor,
        moving_mean: &Self::Tensor,
        moving_variance: &Self::Tensor,
        saved: &mut Self::Tensor,
        y: &mut Self::Tensor,
        s: &BatchNormShape,
        n: usize,
        epsilon: f32,
    );
    /// The training forward's gradients, given its input x, dy and the `saved` it wrote:
    /// dbeta = sum of dy, dgamma = sum of dy * xhat per channel (overwritten), and
    /// dx = gamma * inv_std * (dy - dbeta / m - xhat * dgamma / m). Writes saved[2c..4c]
    /// (dgamma / m and dbeta / m) between its two passes.
    #[allow(clippy::too_many_arguments)]
    fn batchnorm_backward(
        &self,
        x: &Self::Tensor,
        dy: &Self::Tensor,
        gamma: &Self::Tensor,
        saved: &mut Self::Tensor,
        dx: &mut Self::Tensor,
        dgamma: &mut Self::Tensor,
        dbeta: &mut Self::Tensor,
        s: &BatchNormShape,
        n: usize,
    );

    /// Inverted dropout of `len` values: y[i] = x[i] / (1 - rate) where element i is kept,
    /// else 0, the mask drawn by `dropout::keeps` from the step's key (2 u32 on the device, see
    /// `dropout::step_key`) and the layer's index. The backward is the same call on dy -> dx
    /// with the same key and mask: the gradient of y[i] = keep[i] * scale * x[i].
    fn dropout(&self, x: &Self::Tensor, y: &mut Self::Tensor, len: usize, key: &Self::Indices, mask: &dropout::DropoutMask);

    /// One Adam update of `len` parameters in place.
    fn adam_update(&self, param: &mut Self::Tensor, grad: &Self::Tensor, m: &mut Self::Tensor, v: &mut Self::Tensor, len: usize, h: &AdamStep);
    /// One AdamW update: p = p - p * weight_decay * lr (lr = h's learning rate, Keras's
    /// decoupled weight decay), then `adam_update`'s step.
    #[allow(clippy::too_many_arguments)]
    fn adamw_update(
        &self,
        param: &mut Self::Tensor,
        grad: &Self::Tensor,
        m: &mut Self::Tensor,
        v: &mut Self::Tensor,
        len: usize,
        h: &AdamStep,
        weight_decay: f32,
    );
    /// One SGD update of `len` parameters in place; `momentum` holds the velocity when
    /// h.momentum != 0 (None: plain SGD, as Keras builds no momentum variables then).
    fn sgd_update(&self, param: &mut Self::Tensor, grad: &Self::Tensor, momentum: Option<&mut Self::Tensor>, len: usize, h: &SgdStep);
    /// One RMSprop update of `len` parameters in place.
    fn rmsprop_update(&self, param: &mut Self::Tensor, grad: &Self::Tensor, velocity: &mut Self::Tensor, len: usize, h: &RmsPropStep);

    /// Bytes this backend has allocated on its device so far, where it has a device of its own
    /// (None for the CPU backend, whose memory is the process's).
    fn device_bytes_allocated(&self) -> Option<u64> {
        None
    }

    /// Runs `run` (which records ops on this backend) and returns the seconds the device spent
    /// in them, measured on the device itself (GPU timestamps); None where the backend cannot
    /// measure that way (the CPU backend; a GPU without timestamp queries).
    fn device_seconds(&self, run: &mut dyn FnMut()) -> Result<Option<f64>> {
        run();
        Ok(None)
    }

    /// The input-gradient ops followed by the backward of the ReLU whose output `relu_y` is
    /// their dx's activation: dx zeroed where relu_y <= 0. A backend may fuse the two (the GPU
    /// does, saving a dispatch and a pass over dx); the result is the same bits either way.
    fn conv2d_backward_input_relu(&self, dy: &Self::Tensor, w: &Self::Tensor, relu_y: &Self::Tensor, dx: &mut Self::Tensor, s: &ConvShape, n: usize) {
        self.conv2d_backward_input(dy, w, dx, s, n);
        self.relu_backward(relu_y, dx, n * s.in_len());
    }
    fn maxpool_backward_relu(&self, dy: &Self::Tensor, argmax: &Self::Indices, relu_y: &Self::Tensor, dx: &mut Self::Tensor, s: &PoolShape, n: usize) {
        self.maxpool_backward(dy, argmax, dx, s, n);
        self.relu_backward(relu_y, dx, n * s.in_len());
    }
    fn dense_backward_input_relu(&self, dy: &Self::Tensor, w: &Self::Tensor, relu_y: &Self::Tensor, dx: &mut Self::Tensor, s: &DenseShape, n: usize) {
        self.dense_backward_input(dy, w, dx, s, n);
        self.relu_backward(relu_y, dx, n * s.inputs);
    }

    /// Whether the backend runs a BatchNormalization (with the ReLU it absorbed, if any) and
    /// the non-overlapping MaxPooling2D right after it as one layer, `batchnorm_maxpool_*`:
    /// the normalized activation is then never written out and read back, only the pooled
    /// one. Worth it where those passes over memory cost more than their arithmetic (the CPU
    /// backend). The three methods give the same bits as the layers one by one.
    fn fuses_batchnorm_maxpool(&self) -> bool {
        false
    }
    /// `batchnorm_forward_train` (ReLU'd when s.relu), then `maxpool_forward` of that output
    /// with `pool` (stride = size): y and argmax are the pool's, `saved` and the moving
    /// statistics the BatchNormalization's.
    #[allow(clippy::too_many_arguments)]
    fn batchnorm_maxpool_forward_train(
        &self,
        _x: &Self::Tensor,
        _gamma: &Self::Tensor,
        _beta: &Self::Tensor,
        _moving_mean: &mut Self::Tensor,
        _moving_variance: &mut Self::Tensor,
        _saved: &mut Self::Tensor,
        _y: &mut Self::Tensor,
        _argmax: &mut Self::Indices,
        _s: &BatchNormShape,
        _pool: &PoolShape,
        _n: usize,
        _h: &BatchNormConfig,
    ) {
        unreachable!("only a backend whose fuses_batchnorm_maxpool() is true runs the fused layer");
    }
    /// `batchnorm_forward_infer`, then `maxpool_forward` likewise.
    #[allow(clippy::too_many_arguments)]
    fn batchnorm_maxpool_forward_infer(
        &self,
        _x: &Self::Tensor,
        _gamma: &Self::Tensor,
        _beta: &Self::Tensor,
        _moving_mean: &Self::Tensor,
        _moving_variance: &Self::Tensor,
        _saved: &mut Self::Tensor,
        _y: &mut Self::Tensor,
        _argmax: &mut Self::Indices,
        _s: &BatchNormShape,
        _pool: &PoolShape,
        _n: usize,
        _epsilon: f32,
    ) {
        unreachable!("only a backend whose fuses_batchnorm_maxpool() is true runs the fused layer");
    }
    /// The fused forward's gradients from the pooled dy: `maxpool_backward_relu` (masked by
    /// the pooled y > 0 when s.relu, plain `maxpool_backward` else), then `batchnorm_backward`
    /// of that: dx, dgamma and dbeta as the two would write them.
    #[allow(clippy::too_many_arguments)]
    fn batchnorm_maxpool_backward(
        &self,
        _x: &Self::Tensor,
        _dy: &Self::Tensor,
        _y: &Self::Tensor,
        _argmax: &Self::Indices,
        _gamma: &Self::Tensor,
        _saved: &mut Self::Tensor,
        _dx: &mut Self::Tensor,
        _dgamma: &mut Self::Tensor,
        _dbeta: &mut Self::Tensor,
        _s: &BatchNormShape,
        _pool: &PoolShape,
        _n: usize,
    ) {
        unreachable!("only a backend whose fuses_batchnorm_maxpool() is true runs the fused layer");
    }

    /// Whether the backend runs a conv of shape `s` and the non-overlapping MaxPooling2D right
    /// after it as one layer in a network that runs `passes`: forward
    /// `conv2d_maxpool_forward_infer` (inference, and the validation pass of a network that
    /// trains), and in training `conv2d_maxpool_forward_train` and
    /// `conv2d_maxpool_backward_filter`. The conv's output is then never written out and read
    /// back, only the pooled one (and in training its gradient is rebuilt from the pool's).
    /// Worth it where that pass over memory costs more than its arithmetic (the CPU backend).
    fn fuses_conv_maxpool(&self, _s: &ConvShape, _passes: Passes) -> bool {
        false
    }
    /// `conv2d_forward` (ReLU'd when `relu`), then `maxpool_forward_infer` of that output with
    /// `pool`: y is the pool's output, with the bits the two give one after the other.
    #[allow(clippy::too_many_arguments)]
    fn conv2d_maxpool_forward_infer(
        &self,
        _x: &Self::Tensor,
        _w: &Self::Tensor,
        _b: Option<&Self::Tensor>,
        _y: &mut Self::Tensor,
        _s: &ConvShape,
        _pool: &PoolShape,
        _n: usize,
        _relu: bool,
    ) {
        unreachable!("only a backend whose fuses_conv_maxpool() is true runs the fused pass");
    }
    /// `conv2d_forward` (ReLU'd when `relu`), then `maxpool_forward` of that output with `pool`:
    /// y and argmax are the pool's (argmax indexing the conv's output as `maxpool_forward`'s
    /// does), with the bits the two give one after the other.
    #[allow(clippy::too_many_arguments)]
    fn conv2d_maxpool_forward_train(
        &self,
        _x: &Self::Tensor,
        _w: &Self::Tensor,
        _b: Option<&Self::Tensor>,
        _y: &mut Self::Tensor,
        _argmax: &mut Self::Indices,
        _s: &ConvShape,
        _pool: &PoolShape,
        _n: usize,
        _relu: bool,
    ) {
        unreachable!("only a backend whose fuses_conv_maxpool() is true runs the fused pass");
    }
    /// `conv2d_backward_filter` of the conv's output gradient that `maxpool_backward` (and with
    /// `relu`, `maxpool_backward_relu` masked by the conv's ReLU'd output) makes from the pool's
    /// gradient dy; y is the pool's output (the conv's output at each argmax). The same bits as
    /// those two. No input gradient: `fuses_conv_maxpool` allows this only where none is needed.
    #[allow(clippy::too_many_arguments)]
    fn conv2d_maxpool_backward_filter(
        &self,
        _x: &Self::Tensor,
        _dy: &Self::Tensor,
        _y: &Self::Tensor,
        _argmax: &Self::Indices,
        _dw: &mut Self::Tensor,
        _db: Option<&mut Self::Tensor>,
        _s: &ConvShape,
        _pool: &PoolShape,
        _n: usize,
        _relu: bool,
    ) {
        unreachable!("only a backend whose fuses_conv_maxpool() is true runs the fused pass");
    }

    /// Dispatches and compute passes recorded so far, where the backend records them (None
    /// for the CPU backend, which runs each op at once).
    fn record_counts(&self) -> Option<RecordCounts> {
        None
    }

    /// Ends a step: the GPU submits what it recorded. The CPU has nothing to do.
    fn flush(&self) -> Result<()> {
        Ok(())
    }
}

/// A shared backend is a backend: several networks (a server's models) can use one device,
/// `Network::new(&gpu, ...)`, each dropping its buffers when it goes.
impl<B: Backend> Backend for &B {
    type Tensor = B::Tensor;
    type Indices = B::Indices;
    type Images = B::Images;

    fn describe(&self) -> String {
        (**self).describe()
    }
    fn tensor(&self, len: usize) -> Result<Self::Tensor> {
        (**self).tensor(len)
    }
    fn tensor_arena(&self, lens: &[usize]) -> Result<TensorArena<Self::Tensor>> {
        (**self).tensor_arena(lens)
    }
    fn upload(&self, t: &mut Self::Tensor, data: &[f32]) {
        (**self).upload(t, data)
    }
    fn download(&self, t: &Self::Tensor) -> Result<Vec<f32>> {
        (**self).download(t)
    }
    fn indices(&self, len: usize) -> Result<Self::Indices> {
        (**self).indices(len)
    }
    fn upload_indices(&self, t: &mut Self::Indices, data: &[u32]) {
        (**self).upload_indices(t, data)
    }
    fn download_indices(&self, t: &Self::Indices) -> Result<Vec<u32>> {
        (**self).download_indices(t)
    }
    fn upload_images(&self, images: &[u8], labels: &[u8], image_len: usize) -> Result<Self::Images> {
        (**self).upload_images(images, labels, image_len)
    }
    fn gather_batch(
        &self,
        data: &Self::Images,
        idx: &Self::Indices,
        n: usize,
        x: &mut Self::Tensor,
        labels: &mut Self::Indices,
        augment: Option<GatherAugment<'_, Self::Indices>>,
    ) {
        (**self).gather_batch(data, idx, n, x, labels, augment)
    }
    fn conv2d_forward(&self, x: &Self::Tensor, w: &Self::Tensor, b: Option<&Self::Tensor>, y: &mut Self::Tensor, s: &ConvShape, n: usize, relu: bool) {
        (**self).conv2d_forward(x, w, b, y, s, n, relu)
    }
    fn conv2d_backward_input(&self, dy: &Self::Tensor, w: &Self::Tensor, dx: &mut Self::Tensor, s: &ConvShape, n: usize) {
        (**self).conv2d_backward_input(dy, w, dx, s, n)
    }
    fn conv2d_backward_filter(&self, x: &Self::Tensor, dy: &Self::Tensor, dw: &mut Self::Tensor, db: Option<&mut Self::Tensor>, s: &ConvShape, n: usize) {
        (**self).conv2d_backward_filter(x, dy, dw, db, s, n)
    }
    fn depthwise_conv2d_forward(
        &self,
        x: &Self::Tensor,
        w: &Self::Tensor,
        b: Option<&Self::Tensor>,
        y: &mut Self::Tensor,
        s: &DepthwiseShape,
        n: usize,
        relu: bool,
    ) {
        (**self).depthwise_conv2d_forward(x, w, b, y, s, n, relu)
    }
    fn depthwise_conv2d_backward_input(&self, dy: &Self::Tensor, w: &Self::Tensor, dx: &mut Self::Tensor, s: &DepthwiseShape, n: usize) {
        (**self).depthwise_conv2d_backward_input(dy, w, dx, s, n)
    }
    fn depthwise_conv2d_backward_filter(
        &self,
        x: &Self::Tensor,
        dy: &Self::Tensor,
        dw: &mut Self::Tensor,
        db: Option<&mut Self::Tensor>,
        s: &DepthwiseShape,
        n: usize,
    ) {
        (**self).depthwise_conv2d_backward_filter(x, dy, dw, db, s, n)
    }
    fn relu_backward(&self, y: &Self::Tensor, dy: &mut Self::Tensor, len: usize) {
        (**self).relu_backward(y, dy, len)
    }
    fn maxpool_forward(&self, x: &Self::Tensor, y: &mut Self::Tensor, argmax: &mut Self::Indices, s: &PoolShape, n: usize) {
        (**self).maxpool_forward(x, y, argmax, s, n)
    }
    fn maxpool_forward_infer(&self, x: &Self::Tensor, y: &mut Self::Tensor, argmax: &mut Self::Indices, s: &PoolShape, n: usize) {
        (**self).maxpool_forward_infer(x, y, argmax, s, n)
    }
    fn maxpool_backward(&self, dy: &Self::Tensor, argmax: &Self::Indices, dx: &mut Self::Tensor, s: &PoolShape, n: usize) {
        (**self).maxpool_backward(dy, argmax, dx, s, n)
    }
    fn avgpool_forward(&self, x: &Self::Tensor, y: &mut Self::Tensor, s: &PoolShape, n: usize) {
        (**self).avgpool_forward(x, y, s, n)
    }
    fn avgpool_backward(&self, dy: &Self::Tensor, dx: &mut Self::Tensor, s: &PoolShape, n: usize) {
        (**self).avgpool_backward(dy, dx, s, n)
    }
    fn activation_forward(&self, x: &Self::Tensor, y: &mut Self::Tensor, len: usize, f: ActivationFn) {
        (**self).activation_forward(x, y, len, f)
    }
    fn activation_backward(&self, x: &Self::Tensor, y: &Self::Tensor, dy: &mut Self::Tensor, len: usize, f: ActivationFn) {
        (**self).activation_backward(x, y, dy, len, f)
    }
    fn dense_forward(&self, x: &Self::Tensor, w: &Self::Tensor, b: &Self::Tensor, y: &mut Self::Tensor, s: &DenseShape, n: usize, relu: bool) {
        (**self).dense_forward(x, w, b, y, s, n, relu)
    }
    fn dense_backward_input(&self, dy: &Self::Tensor, w: &Self::Tensor, dx: &mut Self::Tensor, s: &DenseShape, n: usize) {
        (**self).dense_backward_input(dy, w, dx, s, n)
    }
    fn dense_backward_filter(&self, x: &Self::Tensor, dy: &Self::Tensor, dw: &mut Self::Tensor, db: &mut Self::Tensor, s: &DenseShape, n: usize) {
        (**self).dense_backward_filter(x, dy, dw, db, s, n)
    }
    fn softmax_xent(&self, logits: &Self::Tensor, labels: &Self::Indices, dlogits: &mut Self::Tensor, metrics: &mut Self::Tensor, n: usize, classes: usize) {
        (**self).softmax_xent(logits, labels, dlogits, metrics, n, classes)
    }
    fn softmax_xent_weighted(
        &self,
        logits: &Self::Tensor,
        labels: &Self::Indices,
        class_weights: &Self::Tensor,
        dlogits: &mut Self::Tensor,
        metrics: &mut Self::Tensor,
        n: usize,
        classes: usize,
    ) {
        (**self).softmax_xent_weighted(logits, labels, class_weights, dlogits, metrics, n, classes)
    }
    fn softmax(&self, logits: &Self::Tensor, probs: &mut Self::Tensor, n: usize, classes: usize) {
        (**self).softmax(logits, probs, n, classes)
    }
    fn batchnorm_forward_train(
        &self,
        x: &Self::Tensor,
        gamma: &Self::Tensor,
        beta: &Self::Tensor,
        moving_mean: &mut Self::Tensor,
        moving_variance: &mut Self::Tensor,
        saved: &mut Self::Tensor,
        y: &mut Self::Tensor,
        s: &BatchNormShape,
        n: usize,
        h: &BatchNormConfig,
    ) {
        (**self).batchnorm_forward_train(x, gamma, beta, moving_mean, moving_variance, saved, y, s, n, h)
    }
    fn batchnorm_forward_infer(
        &self,
        x: &Self::Tensor,
        gamma: &Self::Tensor,
        beta: &Self::Tensor,
        moving_mean: &Self::Tensor,
        moving_variance: &Self::Tensor,
        saved: &mut Self::Tensor,
        y: &mut Self::Tensor,
        s: &BatchNormShape,
        n: usize,
        epsilon: f32,
    ) {
        (**self).batchnorm_forward_infer(x, gamma, beta, moving_mean, moving_variance, saved, y, s, n, epsilon)
    }
    fn batchnorm_backward(
        &self,
        x: &Self::Tensor,
        dy: &Self::Tensor,
        gamma: &Self::Tensor,
        saved: &mut Self::Tensor,
        dx: &mut Self::Tensor,
        dgamma: &mut Self::Tensor,
        dbeta: &mut Self::Tensor,
        s: &BatchNormShape,
        n: usize,
    ) {
        (**self).batchnorm_backward(x, dy, gamma, saved, dx, dgamma, dbeta, s, n)
    }
    fn dropout(&self, x: &Self::Tensor, y: &mut Self::Tensor, len: usize, key: &Self::Indices, mask: &dropout::DropoutMask) {
        (**self).dropout(x, y, len, key, mask)
    }
    fn adam_update(&self, param: &mut Self::Tensor, grad: &Self::Tensor, m: &mut Self::Tensor, v: &mut Self::Tensor, len: usize, h: &AdamStep) {
        (**self).adam_update(param, grad, m, v, len, h)
    }
    fn softmax_xent_smoothed(
        &self,
        logits: &Self::Tensor,
        labels: &Self::Indices,
        class_weights: Option<&Self::Tensor>,
        dlogits: &mut Self::Tensor,
        metrics: &mut Self::Tensor,
        n: usize,
        classes: usize,
        label_smoothing: f32,
    ) {
        (**self).softmax_xent_smoothed(logits, labels, class_weights, dlogits, metrics, n, classes, label_smoothing)
    }
    fn adamw_update(
        &self,
        param: &mut Self::Tensor,
        grad: &Self::Tensor,
        m: &mut Self::Tensor,
        v: &mut Self::Tensor,
        len: usize,
        h: &AdamStep,
        weight_decay: f32,
    ) {
        (**self).adamw_update(param, grad, m, v, len, h, weight_decay)
    }
    fn sgd_update(&self, param: &mut Self::Tensor, grad: &Self::Tensor, momentum: Option<&mut Self::Tensor>, len: usize, h: &SgdStep) {
        (**self).sgd_update(param, grad, momentum, len, h)
    }
    fn rmsprop_update(&self, param: &mut Self::Tensor, grad: &Self::Tensor, velocity: &mut Self::Tensor, len: usize, h: &RmsPropStep) {
        (**self).rmsprop_update(param, grad, velocity, len, h)
    }
    fn device_bytes_allocated(&self) -> Option<u64> {
        (**self).device_bytes_allocated()
    }
    fn device_seconds(&self, run: &mut dyn FnMut()) -> Result<Option<f64>> {
        (**self).device_seconds(run)
    }
    fn record_counts(&self) -> Option<RecordCounts> {
        (**self).record_counts()
    }
    fn conv2d_backward_input_relu(&self, dy: &Self::Tensor, w: &Self::Tensor, relu_y: &Self::Tensor, dx: &mut Self::Tensor, s: &ConvShape, n: usize) {
        (**self).conv2d_backward_input_relu(dy, w, relu_y, dx, s, n)
    }
    fn maxpool_backward_relu(&self, dy: &Self::Tensor, argmax: &Self::Indices, relu_y: &Self::Tensor, dx: &mut Self::Tensor, s: &PoolShape, n: usize) {
        (**self).maxpool_backward_relu(dy, argmax, relu_y, dx, s, n)
    }
    fn dense_backward_input_relu(&self, dy: &Self::Tensor, w: &Self::Tensor, relu_y: &Self::Tensor, dx: &mut Self::Tensor, s: &DenseShape, n: usize) {
        (**self).dense_backward_input_relu(dy, w, relu_y, dx, s, n)
    }
    fn fuses_batchnorm_maxpool(&self) -> bool {
        (**self).fuses_batchnorm_maxpool()
    }
    fn fuses_conv_maxpool(&self, s: &ConvShape, passes: Passes) -> bool {
        (**self).fuses_conv_maxpool(s, passes)
    }
    #[allow(clippy::too_many_arguments)]
    fn conv2d_maxpool_forward_infer(
        &self,
        x: &Self::Tensor,
        w: &Self::Tensor,
        b: Option<&Self::Tensor>,
        y: &mut Self::Tensor,
        s: &ConvShape,
        pool: &PoolShape,
        n: usize,
        relu: bool,
    ) {
        (**self).conv2d_maxpool_forward_infer(x, w, b, y, s, pool, n, relu)
    }
    #[allow(clippy::too_many_arguments)]
    fn conv2d_maxpool_forward_train(
        &self,
        x: &Self::Tensor,
        w: &Self::Tensor,
        b: Option<&Self::Tensor>,
        y: &mut Self::Tensor,
        argmax: &mut Self::Indices,
        s: &ConvShape,
        pool: &PoolShape,
        n: usize,
        relu: bool,
    ) {
        (**self).conv2d_maxpool_forward_train(x, w, b, y, argmax, s, pool, n, relu)
    }
    #[allow(clippy::too_many_arguments)]
    fn conv2d_maxpool_backward_filter(
        &self,
        x: &Self::Tensor,
        dy: &Self::Tensor,
        y: &Self::Tensor,
        argmax: &Self::Indices,
        dw: &mut Self::Tensor,
        db: Option<&mut Self::Tensor>,
        s: &ConvShape,
        pool: &PoolShape,
        n: usize,
        relu: bool,
    ) {
        (**self).conv2d_maxpool_backward_filter(x, dy, y, argmax, dw, db, s, pool, n, relu)
    }
    fn batchnorm_maxpool_forward_train(
        &self,
        x: &Self::Tensor,
        gamma: &Self::Tensor,
        beta: &Self::Tensor,
        moving_mean: &mut Self::Tensor,
        moving_variance: &mut Self::Tensor,
        saved: &mut Self::Tensor,
        y: &mut Self::Tensor,
        argmax: &mut Self::Indices,
        s: &BatchNormShape,
        pool: &PoolShape,
        n: usize,
        h: &BatchNormConfig,
    ) {
        (**self).batchnorm_maxpool_forward_train(x, gamma, beta, moving_mean, moving_variance, saved, y, argmax, s, pool, n, h)
    }
    fn batchnorm_maxpool_forward_infer(
        &self,
        x: &Self::Tensor,
        gamma: &Self::Tensor,
        beta: &Self::Tensor,
        moving_mean: &Self::Tensor,
        moving_variance: &Self::Tensor,
        saved: &mut Self::Tensor,
        y: &mut Self::Tensor,
        argmax: &mut Self::Indices,
        s: &BatchNormShape,
        pool: &PoolShape,
        n: usize,
        epsilon: f32,
    ) {
        (**self).batchnorm_maxpool_forward_infer(x, gamma, beta, moving_mean, moving_variance, saved, y, argmax, s, pool, n, epsilon)
    }
    fn batchnorm_maxpool_backward(
        &self,
        x: &Self::Tensor,
        dy: &Self::Tensor,
        y: &Self::Tensor,
        argmax: &Self::Indices,
        gamma: &Self::Tensor,
        saved: &mut Self::Tensor,
        dx: &mut Self::Tensor,
        dgamma: &mut Self::Tensor,
        dbeta: &mut Self::Tensor,
        s: &BatchNormShape,
        pool: &PoolShape,
        n: usize,
    ) {
        (**self).batchnorm_maxpool_backward(x, dy, y, argmax, gamma, saved, dx, dgamma, dbeta, s, pool, n)
    }
    fn flush(&self) -> Result<()> {
        (**self).flush()
    }
}
