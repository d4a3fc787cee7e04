//! The CPU backend: the reference every other backend is tested against, and the fallback when
//! there is no GPU. Plain loops for the cheap ops; convolutions by the algorithm conv.rs picks
//! per shape (im2col + GEMM, direct register-blocked loops, Winograd F(2x2, 3x3)); matrix
//! products through `matrixmultiply`'s sgemm; rayon splits the work over the cores. Every split
//! is by a fixed rule and every sum runs in a fixed order, so a seeded run repeats bit for bit.

mod batchnorm;
mod batchnorm_pool;
mod blocked;
pub mod conv;
mod conv_pool;
mod depthwise;
mod direct;
mod dropout;
mod gemm;
mod im2col;
mod optimizers;
mod pool;
pub mod simd;
mod winograd;
mod winograd4;
mod winograd_filter;

use super::dropout::{layer_stream, DropoutMask};
use super::{
    activation, ActivationFn, AdamStep, Backend, BatchNormConfig, BatchNormShape, ConvShape, DenseShape, DepthwiseShape, GatherAugment, Passes, PoolShape,
    RmsPropStep, SgdStep, METRIC_CORRECT, METRIC_COUNT, METRIC_LOSS_SUM,
};
use crate::augment::{AffineTransform, SampleTransform, TransformLayout};
use crate::data::ImageSet;
use anyhow::Result;
use gemm::{add_bias_activate, gemm, sum_outer_products, Mat, Threads};
use rayon::prelude::*;
use simd::{dispatch, vectorized};
use std::cell::RefCell;
use std::sync::Arc;

pub struct CpuBackend {
    /// Partial sums of filter gradients, reused so a training step allocates nothing.
    partials: RefCell<Vec<f32>>,
    /// A transformed (Winograd) kernel, reused likewise.
    kernel: RefCell<Vec<f32>>,
    /// Stands in for a layer without bias: zeros added by the conv algorithms (which all take a
    /// bias), or the bias gradient nobody reads.
    no_bias: RefCell<Vec<f32>>,
}

pub struct CpuImages {
    /// Shared with the data set it came from where it came from one (`upload_image_set`).
    pub images: Arc<Vec<u8>>,
    pub labels: Vec<u8>,
    pub image_len: usize,
}

impl CpuBackend {
    pub fn new() -> Self {
        CpuBackend { partials: RefCell::new(Vec::new()), kernel: RefCell::new(Vec::new()), no_bias: RefCell::new(Vec::new()) }
    }
}

impl CpuBackend {
    /// Runs `f` on `bias`, or on `len` zeros where there is none (the zeros are rewritten
    /// each call: the filter gradient's stand-in writes them).
    fn with_bias<R>(&self, bias: Option<&mut Vec<f32>>, len: usize, f: impl FnOnce(&mut Vec<f32>) -> R) -> R {
        match bias {
            Some(b) => f(b),
            None => {
                let mut zeros = self.no_bias.borrow_mut();
                zeros.clear();
                zeros.resize(len, 0.0);
                f(&mut zeros)
            }
        }
    }

    /// Runs a forward `f` on `bias`, or on `len` zeros where there is none: every CPU
    /// algorithm then adds zeros, the same values as adding nothing.
    fn bias_or_zeros<R>(&self, bias: Option<&Vec<f32>>, len: usize, f: impl FnOnce(&[f32]) -> R) -> R {
        match bias {
            Some(b) => f(b),
            None => self.with_bias(None, len, |zeros| f(zeros)),
        }
    }
}

impl Default for CpuBackend {
    fn default() -> Self {
        Self::new()
    }
}

/// One image (h, w, c) of u8 -> dst / 255 with the transform applied: each output pixel is its
/// source pixel (see `SampleTransform::source`), or zero where that lies outside the image.
fn gather_transformed(src: &[u8], dst: &mut [f32], t: SampleTransform, (h, w, c): (usize, usize, usize)) {
    assert_eq!(h * w * c, src.len(), "augment shape {h}x{w}x{c} does not match the image length");
    for y in 0..h {
        for x in 0..w {
            let out = &mut dst[(y * w + x) * c..][..c];
            match t.source(y, x, h, w) {
                Some((sy, sx)) => {
                    for (d, &s) in out.iter_mut().zip(&src[(sy * w + sx) * c..][..c]) {
                        *d = s as f32 / 255.0;
                    }
                }
                None => out.fill(0.0),
            }
        }
    }
}

/// One image (h, w, c) of u8 -> dst with the affine transform applied (bilinear, zero fill,
/// contrast, brightness: see `AffineTransform::sample`).
fn gather_affine(src: &[u8], dst: &mut [f32], t: &AffineTransform, (h, w, c): (usize, usize, usize)) {
    assert_eq!(h * w * c, src.len(), "augment shape {h}x{w}x{c} does not match the image length");
    for (j, d) in dst.iter_mut().enumerate() {
        let (pixel, ch) = (j / c, j % c);
        *d = t.sample(src, pixel / w, pixel % w, ch, (h, w, c));
    }
}

impl Backend for CpuBackend {
    type Tensor = Vec<f32>;
    type Indices = Vec<u32>;
    type Images = CpuImages;

    fn tensors_in_host_memory(&self) -> bool {
        true
    }
    fn describe(&self) -> String {
        let simd = match simd::Simd::best() {
            simd::Simd::Avx512 => "AVX-512",
            simd::Simd::Avx2 => "AVX2 + FMA",
            simd::Simd::Portable => "portable lanes",
        };
        format!("CPU backend, {}, {simd}", crate::report::plural(rayon::current_num_threads(), "thread"))
    }

    fn tensor(&self, len: usize) -> Result<Vec<f32>> {
        crate::fallible::zeroed_vec(len)
    }
    fn upload(&self, t: &mut Vec<f32>, data: &[f32]) {
        t[..data.len()].copy_from_slice(data);
    }
    fn download(&self, t: &Vec<f32>) -> Result<Vec<f32>> {
        Ok(t.clone())
    }
    fn indices(&self, len: usize) -> Result<Vec<u32>> {
        crate::fallible::zeroed_vec(len)
    }
    fn upload_indices(&self, t: &mut Vec<u32>, data: &[u32]) {
        t[..data.len()].copy_from_slice(data);
    }
    fn download_indices(&self, t: &Vec<u32>) -> Result<Vec<u32>> {
        Ok(t.clone())
    }
    fn upload_images(&self, images: &[u8], labels: &[u8], image_len: usize) -> Result<CpuImages> {
        anyhow::ensure!(images.len() == labels.len() * image_len, "image bytes do not match the label count");
        Ok(CpuImages { images: Arc::new(images.to_vec()), labels: labels.to_vec(), image_len })
    }
    fn upload_image_set(&self, set: &ImageSet) -> Result<CpuImages> {
        let image_len = set.image_len();
        anyhow::ensure!(set.images.len() == set.labels.len() * image_len, "image bytes do not match the label count");
        Ok(CpuImages { images: Arc::clone(&set.images), labels: set.labels.clone(), image_len })
    }

    fn gather_batch(&self, data: &CpuImages, idx: &Vec<u32>, n: usize, x: &mut Vec<f32>, labels: &mut Vec<u32>, augment: Option<GatherAugment<'_, Vec<u32>>>) {
        let len = data.image_len;
        x[..n * len].par_chunks_mut(len).zip(&idx[..n]).enumerate().for_each(|(row, (dst, &i))| {
            let src = &data.images[i as usize * len..][..len];
            match &augment {
                None => {
                    for (d, &s) in dst.iter_mut().zip(src) {
                        *d = s as f32 / 255.0;
                    }
                }
                Some(a) => match a.layout {
                    TransformLayout::Shift => gather_transformed(src, dst, SampleTransform::unpack(a.transforms[row]), a.shape),
                    TransformLayout::Affine => gather_affine(src, dst, &AffineTransform::unpack(&a.transforms[row * a.layout.words()..]), a.shape),
                },
            }
        });
        for (l, &i) in labels[..n].iter_mut().zip(&idx[..n]) {
            *l = data.labels[i as usize] as u32;
        }
    }

    fn conv2d_forward(&self, x: &Vec<f32>, w: &Vec<f32>, b: Option<&Vec<f32>>, y: &mut Vec<f32>, s: &ConvShape, n: usize, relu: bool) {
        self.bias_or_zeros(b, s.out_c, |b| conv::forward(x, w, b, y, s, n, relu, &mut self.kernel.borrow_mut()))
    }

    fn conv2d_backward_input(&self, dy: &Vec<f32>, w: &Vec<f32>, dx: &mut Vec<f32>, s: &ConvShape, n: usize) {
        conv::backward_input(dy, w, dx, s, n, &mut self.kernel.borrow_mut());
    }

    fn conv2d_backward_filter(&self, x: &Vec<f32>, dy: &Vec<f32>, dw: &mut Vec<f32>, db: Option<&mut Vec<f32>>, s: &ConvShape, n: usize) {
        // dw does not depend on db: without a bias its gradient goes to a stand-in.
        self.with_bias(db, s.out_c, |db| conv::backward_filter(x, dy, dw, db, s, n, &mut self.partials.borrow_mut(), &mut self.kernel.borrow_mut()));
    }

    fn depthwise_conv2d_forward(&self, x: &Vec<f32>, w: &Vec<f32>, b: Option<&Vec<f32>>, y: &mut Vec<f32>, s: &DepthwiseShape, n: usize, relu: bool) {
        depthwise::forward(x, w, b.map(|b| &b[..]), y, s, n, relu);
    }

    fn depthwise_conv2d_backward_input(&self, dy: &Vec<f32>, w: &Vec<f32>, dx: &mut Vec<f32>, s: &DepthwiseShape, n: usize) {
        depthwise::backward_input(dy, w, dx, s, n);
    }

    fn depthwise_conv2d_backward_filter(&self, x: &Vec<f32>, dy: &Vec<f32>, dw: &mut Vec<f32>, db: Option<&mut Vec<f32>>, s: &DepthwiseShape, n: usize) {
        self.with_bias(db, s.out_c(), |db| depthwise::backward_filter(x, dy, dw, db, s, n, &mut self.partials.borrow_mut()));
    }

    fn relu_backward(&self, y: &Vec<f32>, dy: &mut Vec<f32>, len: usize) {
        dy[..len].par_chunks_mut(4096).zip(y[..len].par_chunks(4096)).for_each(|(d, y)| {
            vectorized(
                #[inline(always)]
                || {
                    for (d, &y) in d.iter_mut().zip(y) {
                        if y <= 0.0 {
                            *d = 0.0;
                        }
                    }
                },
            )
        });
    }

    fn maxpool_forward(&self, x: &Vec<f32>, y: &mut Vec<f32>, argmax: &mut Vec<u32>, s: &PoolShape, n: usize) {
        pool::maxpool_forward(x, y, argmax, s, n);
    }
    fn maxpool_forward_infer(&self, x: &Vec<f32>, y: &mut Vec<f32>, _argmax: &mut Vec<u32>, s: &PoolShape, n: usize) {
        pool::maxpool_forward_values(x, y, s, n);
    }
    fn maxpool_backward(&self, dy: &Vec<f32>, argmax: &Vec<u32>, dx: &mut Vec<f32>, s: &PoolShape, n: usize) {
        pool::maxpool_backward(dy, argmax, dx, s, n);
    }
    fn maxpool_backward_relu(&self, dy: &Vec<f32>, argmax: &Vec<u32>, relu_y: &Vec<f32>, dx: &mut Vec<f32>, s: &PoolShape, n: usize) {
        pool::maxpool_backward_relu(dy, argmax, relu_y, dx, s, n);
    }
    fn avgpool_forward(&self, x: &Vec<f32>, y: &mut Vec<f32>, s: &PoolShape, n: usize) {
        pool::avgpool_forward(x, y, s, n);
    }
    fn avgpool_backward(&self, dy: &Vec<f32>, dx: &mut Vec<f32>, s: &PoolShape, n: usize) {
        pool::avgpool_backward(dy, dx, s, n);
    }

    fn activation_forward(&self, x: &Vec<f32>, y: &mut Vec<f32>, len: usize, f: ActivationFn) {
        y[..len].par_chunks_mut(4096).zip(x[..len].par_chunks(4096)).for_each(|(y, x)| match f {
            // ReLU (a layer of its own in the modern model) as a loop that vectorizes.
            ActivationFn::Relu => vectorized(
                #[inline(always)]
                || {
                    for (y, &x) in y.iter_mut().zip(x) {
                        *y = activation::forward(ActivationFn::Relu, x);
                    }
                },
            ),
            _ => {
                for (y, &x) in y.iter_mut().zip(x) {
                    *y = activation::forward(f, x);
                }
            }
        });
    }
    fn activation_backward(&self, x: &Vec<f32>, y: &Vec<f32>, dy: &mut Vec<f32>, len: usize, f: ActivationFn) {
        dy[..len].par_chunks_mut(4096).zip(x[..len].par_chunks(4096).zip(y[..len].par_chunks(4096))).for_each(|(d, (x, y))| {
            for ((d, &x), &y) in d.iter_mut().zip(x).zip(y) {
                *d *= activation::derivative(f, x, y);
            }
        });
    }

    fn dense_forward(&self, x: &Vec<f32>, w: &Vec<f32>, b: &Vec<f32>, y: &mut Vec<f32>, s: &DenseShape, n: usize, relu: bool) {
        let y = &mut y[..n * s.units];
        gemm(Threads::Parallel, (n, s.inputs, s.units), Mat::rows(x, s.inputs), Mat::rows(w, s.units), y, 0.0);
        y.par_chunks_mut(s.units * 64).for_each(|rows| add_bias_activate(rows, &b[..s.units], relu));
    }

    fn dense_backward_input(&self, dy: &Vec<f32>, w: &Vec<f32>, dx: &mut Vec<f32>, s: &DenseShape, n: usize) {
        gemm(Threads::Parallel, (n, s.units, s.inputs), Mat::rows(dy, s.units), Mat::transposed(w, s.units), &mut dx[..n * s.inputs], 0.0);
    }

    fn dense_backward_filter(&self, x: &Vec<f32>, dy: &Vec<f32>, dw: &mut Vec<f32>, db: &mut Vec<f32>, s: &DenseShape, n: usize) {
        sum_outer_products(x, dy, (n, s.inputs, s.units), dw, db, &mut self.partials.borrow_mut());
    }

    fn softmax_xent(&self, logits: &Vec<f32>, labels: &Vec<u32>, dlogits: &mut Vec<f32>, metrics: &mut Vec<f32>, n: usize, classes: usize) {
        // A weight of exactly 1.0 leaves every product unchanged: the unweighted path is
        // bit for bit what it was before class weights existed.
        softmax_xent_rows(logits, labels, |_| 1.0, dlogits, metrics, n, classes, 0.0);
    }

    fn softmax_xent_weighted(
        &self,
        logits: &Vec<f32>,
        labels: &Vec<u32>,
        class_weights: &Vec<f32>,
        dlogits: &mut Vec<f32>,
        metrics: &mut Vec<f32>,
        n: usize,
        classes: usize,
    ) {
        softmax_xent_rows(logits, labels, |label| class_weights[label], dlogits, metrics, n, classes, 0.0);
    }

    fn softmax_xent_smoothed(
        &self,
        logits: &Vec<f32>,
        labels: &Vec<u32>,
        class_weights: Option<&Vec<f32>>,
        dlogits: &mut Vec<f32>,
        metrics: &mut Vec<f32>,
        n: usize,
        classes: usize,
        label_smoothing: f32,
    ) {
        let weight = |label: usize| class_weights.map_or(1.0, |w| w[label]);
        softmax_xent_rows(logits, labels, weight, dlogits, metrics, n, classes, label_smoothing);
    }

    fn softmax(&self, logits: &Vec<f32>, probs: &mut Vec<f32>, n: usize, classes: usize) {
        for (z, p) in logits[..n * classes].chunks(classes).zip(probs.chunks_mut(classes)) {
            let max = z.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            let sum: f32 = z.iter().map(|&v| (v - max).exp()).sum();
            for (p, &v) in p.iter_mut().zip(z) {
                *p = (v - max).exp() / sum;
            }
        }
    }

    fn batchnorm_forward_train(
        &self,
        x: &Vec<f32>,
        gamma: &Vec<f32>,
        beta: &Vec<f32>,
        moving_mean: &mut Vec<f32>,
        moving_variance: &mut Vec<f32>,
        saved: &mut Vec<f32>,
        y: &mut Vec<f32>,
        s: &BatchNormShape,
        n: usize,
        h: &BatchNormConfig,
    ) {
        batchnorm::forward_train(x, gamma, beta, moving_mean, moving_variance, saved, y, s, n, h);
    }

    fn batchnorm_forward_infer(
        &self,
        x: &Vec<f32>,
        gamma: &Vec<f32>,
        beta: &Vec<f32>,
        moving_mean: &Vec<f32>,
        moving_variance: &Vec<f32>,
        saved: &mut Vec<f32>,
        y: &mut Vec<f32>,
        s: &BatchNormShape,
        n: usize,
        epsilon: f32,
    ) {
        batchnorm::forward_infer(x, gamma, beta, moving_mean, moving_variance, saved, y, s, n, epsilon);
    }

    fn batchnorm_backward(
        &self,
        x: &Vec<f32>,
        dy: &Vec<f32>,
        gamma: &Vec<f32>,
        saved: &mut Vec<f32>,
        dx: &mut Vec<f32>,
        dgamma: &mut Vec<f32>,
        dbeta: &mut Vec<f32>,
        s: &BatchNormShape,
        n: usize,
    ) {
        batchnorm::backward(x, dy, gamma, saved, dx, dgamma, dbeta, s, n);
    }

    fn fuses_batchnorm_maxpool(&self) -> bool {
        true
    }

    fn fuses_conv_maxpool(&self, s: &ConvShape, passes: Passes) -> bool {
        match passes {
            Passes::Inference => conv_pool::can_run(s),
            Passes::Training { input_gradient: false } => conv_pool::can_train(s),
            // The input gradient's conv wants the whole output gradient in memory anyway.
            Passes::Training { input_gradient: true } => false,
        }
    }

    fn conv2d_maxpool_forward_infer(
        &self,
        x: &Vec<f32>,
        w: &Vec<f32>,
        b: Option<&Vec<f32>>,
        y: &mut Vec<f32>,
        s: &ConvShape,
        pool: &PoolShape,
        n: usize,
        relu: bool,
    ) {
        self.bias_or_zeros(b, s.out_c, |b| conv_pool::forward_infer(x, w, b, y, s, pool, n, relu, &mut self.kernel.borrow_mut()))
    }

    fn conv2d_maxpool_forward_train(
        &self,
        x: &Vec<f32>,
        w: &Vec<f32>,
        b: Option<&Vec<f32>>,
        y: &mut Vec<f32>,
        argmax: &mut Vec<u32>,
        s: &ConvShape,
        pool: &PoolShape,
        n: usize,
        relu: bool,
    ) {
        self.bias_or_zeros(b, s.out_c, |b| conv_pool::forward_train(x, w, b, y, argmax, s, pool, n, relu, &mut self.kernel.borrow_mut()))
    }

    fn conv2d_maxpool_backward_filter(
        &self,
        x: &Vec<f32>,
        dy: &Vec<f32>,
        y: &Vec<f32>,
        argmax: &Vec<u32>,
        dw: &mut Vec<f32>,
        db: Option<&mut Vec<f32>>,
        s: &ConvShape,
        pool: &PoolShape,
        n: usize,
        relu: bool,
    ) {
        let mask = relu.then_some(&y[..]);
        self.with_bias(db, s.out_c, |db| conv_pool::backward_filter(x, dy, mask, argmax, dw, db, s, pool, n, &mut self.partials.borrow_mut()));
    }

    fn batchnorm_maxpool_forward_train(
        &self,
        x: &Vec<f32>,
        gamma: &Vec<f32>,
        beta: &Vec<f32>,
        moving_mean: &mut Vec<f32>,
        moving_variance: &mut Vec<f32>,
        saved: &mut Vec<f32>,
        y: &mut Vec<f32>,
        argmax: &mut Vec<u32>,
        s: &BatchNormShape,
        pool: &PoolShape,
        n: usize,
        h: &BatchNormConfig,
    ) {
        batchnorm_pool::forward_train(x, gamma, beta, moving_mean, moving_variance, saved, y, argmax, s, pool, n, h);
    }

    fn batchnorm_maxpool_forward_infer(
        &self,
        x: &Vec<f32>,
        gamma: &Vec<f32>,
        beta: &Vec<f32>,
        moving_mean: &Vec<f32>,
        moving_variance: &Vec<f32>,
        saved: &mut Vec<f32>,
        y: &mut Vec<f32>,
        argmax: &mut Vec<u32>,
        s: &BatchNormShape,
        pool: &PoolShape,
        n: usize,
        epsilon: f32,
    ) {
        batchnorm_pool::forward_infer(x, gamma, beta, moving_mean, moving_variance, saved, y, argmax, s, pool, n, epsilon);
    }

    fn batchnorm_maxpool_backward(
        &self,
        x: &Vec<f32>,
        dy: &Vec<f32>,
        y: &Vec<f32>,
        argmax: &Vec<u32>,
        gamma: &Vec<f32>,
        saved: &mut Vec<f32>,
        dx: &mut Vec<f32>,
        dgamma: &mut Vec<f32>,
        dbeta: &mut Vec<f32>,
        s: &BatchNormShape,
        pool: &PoolShape,
        n: usize,
    ) {
        batchnorm_pool::backward(x, dy, y, argmax, gamma, saved, dx, dgamma, dbeta, s, pool, n);
    }

    fn dropout(&self, x: &Vec<f32>, y: &mut Vec<f32>, len: usize, key: &Vec<u32>, mask: &DropoutMask) {
        let key = [key[0], key[1]];
        // The layer's stream is the same for every element: hashed once, not per element.
        let stream = layer_stream(key, mask.layer);
        y[..len].par_chunks_mut(4096).zip(x[..len].par_chunks(4096)).enumerate().for_each(|(chunk, (y, x))| {
            dispatch(dropout::Chunk { y, x, first: (chunk * 4096) as u32, stream, key, threshold: mask.threshold, scale: mask.scale });
        });
    }

    fn adam_update(&self, param: &mut Vec<f32>, grad: &Vec<f32>, m: &mut Vec<f32>, v: &mut Vec<f32>, len: usize, h: &AdamStep) {
        let alpha = h.alpha();
        let (b1, b2, eps) = (h.config.beta1, h.config.beta2, h.config.epsilon);
        param[..len].par_chunks_mut(4096).zip(grad[..len].par_chunks(4096)).zip(m[..len].par_chunks_mut(4096)).zip(v[..len].par_chunks_mut(4096)).for_each(
            |(((p, g), m), v)| {
                vectorized(
                    #[inline(always)]
                    || {
                        for i in 0..p.len() {
                            m[i] += (g[i] - m[i]) * (1.0 - b1);
                            v[i] += (g[i] * g[i] - v[i]) * (1.0 - b2);
                            p[i] -= alpha * m[i] / (v[i].sqrt() + eps);
                        }
                    },
                )
            },
        );
    }

    fn adamw_update(&self, param: &mut Vec<f32>, grad: &Vec<f32>, m: &mut Vec<f32>, v: &mut Vec<f32>, len: usize, h: &AdamStep, weight_decay: f32) {
        optimizers::weight_decay(&mut param[..len], weight_decay, h.config.learning_rate);
        self.adam_update(param, grad, m, v, len, h);
    }

    fn sgd_update(&self, param: &mut Vec<f32>, grad: &Vec<f32>, momentum: Option<&mut Vec<f32>>, len: usize, h: &SgdStep) {
        optimizers::sgd(&mut param[..len], &grad[..len], momentum.map(|m| &mut m[..len]), h);
    }

    fn rmsprop_update(&self, param: &mut Vec<f32>, grad: &Vec<f32>, velocity: &mut Vec<f32>, len: usize, h: &RmsPropStep) {
        optimizers::rmsprop(&mut param[..len], &grad[..len], &mut velocity[..len], h);
    }
}

/// Softmax + cross-entropy + gradient, each row weighted by `weight(label)`:
/// loss_i = w * -log softmax[label], dlogits_i = w * (softmax - onehot) / n. With label
/// smoothing F > 0 the target is t = onehot * (1 - F) + F / classes (Keras's
/// CategoricalCrossentropy): loss_i = w * ((1 - F) * -log softmax[label] + F * mean_c -log
/// softmax_c) and dlogits_i = w * (softmax - t) / n. F = 0 computes what it did before.
#[allow(clippy::too_many_arguments)]
fn softmax_xent_rows(
    logits: &[f32],
    labels: &[u32],
    weight: impl Fn(usize) -> f32,
    dlogits: &mut [f32],
    metrics: &mut [f32],
    n: usize,
    classes: usize,
    smoothing: f32,
) {
    let mut loss_sum = 0.0f32;
    let mut correct = 0.0f32;
    for i in 0..n {
        let z = &logits[i * classes..][..classes];
        let g = &mut dlogits[i * classes..][..classes];
        let label = labels[i] as usize;
        let w = weight(label);
        let (mut max, mut argmax) = (z[0], 0);
        for (c, &v) in z.iter().enumerate() {
            if v > max {
                max = v;
                argmax = c;
            }
        }
        let sum: f32 = z.iter().map(|&v| (v - max).exp()).sum();
        let log_sum = sum.ln();
        let nll = log_sum - (z[label] - max);
        if smoothing == 0.0 {
            loss_sum += w * nll;
        } else {
            let mean_nll = z.iter().map(|&v| log_sum - (v - max)).sum::<f32>() / classes as f32;
            loss_sum += w * ((1.0 - smoothing) * nll + smoothing * mean_nll);
        }
        if argmax == label {
            correct += 1.0;
        }
        let off_target = smoothing / classes as f32;
        for c in 0..classes {
            let p = (z[c] - max).exp() / sum;
            let target = match (c == label, smoothing == 0.0) {
                (true, true) => 1.0,
                (false, true) => 0.0,
                (true, false) => (1.0 - smoothing) + off_target,
                (false, false) => off_target,
            };
            g[c] = (p - target) * w / n as f32;
        }
    }
    metrics[METRIC_LOSS_SUM] += loss_sum;
    metrics[METRIC_CORRECT] += correct;
    metrics[METRIC_COUNT] += n as f32;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The CPU backend holds the data set's own pixels, not a second copy (CIFAR-10's 184 MB
    /// once), and gathers the same batch from them as from a copy.
    #[test]
    fn an_image_set_is_shared_not_copied() {
        let set = ImageSet { images: Arc::new((0..6 * 4).map(|i| i as u8).collect()), labels: vec![0, 1, 2, 3, 4, 5], height: 2, width: 2, channels: 1 };
        let cpu = CpuBackend::new();
        let shared = cpu.upload_image_set(&set).unwrap();
        assert!(Arc::ptr_eq(&shared.images, &set.images));
        let copied = cpu.upload_images(&set.images, &set.labels, 4).unwrap();
        assert!(!Arc::ptr_eq(&copied.images, &set.images));
        let idx = vec![5, 0, 3];
        let gather = |data: &CpuImages| {
            let (mut x, mut labels) = (vec![0.0; 12], vec![0; 3]);
            cpu.gather_batch(data, &idx, 3, &mut x, &mut labels, None);
            (x, labels)
        };
        let (x, labels) = gather(&shared);
        assert_eq!((x.clone(), labels.clone()), gather(&copied));
        assert_eq!(labels, vec![5, 0, 3]);
        assert_eq!(x[..4], [20.0 / 255.0, 21.0 / 255.0, 22.0 / 255.0, 23.0 / 255.0]);
    }
}
