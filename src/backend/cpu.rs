//! The CPU backend: the reference every other backend is tested against, and the fallback when
//! there is no GPU. Plain loops for everything but the matrix products, which go to
//! `matrixmultiply`'s sgemm; rayon splits the work over the cores. Every split is by a fixed
//! rule and every sum runs in a fixed order, so a seeded run repeats bit for bit.

use super::{AdamStep, Backend, ConvShape, DenseShape, GatherAugment, PoolShape, METRIC_COUNT, METRIC_CORRECT, METRIC_LOSS_SUM};
use crate::augment::SampleTransform;
use anyhow::Result;
use rayon::prelude::*;
use std::cell::RefCell;

/// Sums over the batch (filter gradients) are split into this many partial sums, added in order.
/// A constant, not the core count, so results do not depend on the machine.
const REDUCTION_SPLITS: usize = 4;

pub struct CpuBackend {
    /// Partial sums of filter gradients, reused so a training step allocates nothing.
    partials: RefCell<Vec<f32>>,
}

pub struct CpuImages {
    pub images: Vec<u8>,
    pub labels: Vec<u8>,
    pub image_len: usize,
}

impl CpuBackend {
    pub fn new() -> Self {
        CpuBackend { partials: RefCell::new(Vec::new()) }
    }
}

impl Default for CpuBackend {
    fn default() -> Self {
        Self::new()
    }
}

/// c (m, n) = a (m, k) * b (k, n) + beta * c, with explicit row/column strides (a transpose is a
/// swap of strides). Splits the rows of c over the cores; each element is computed by the same
/// kernel in the same order whatever the split, so the result does not depend on it.
#[allow(clippy::too_many_arguments)]
pub fn gemm(m: usize, k: usize, n: usize, a: &[f32], rsa: usize, csa: usize, b: &[f32], rsb: usize, csb: usize, c: &mut [f32], beta: f32) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(a.len() > (m - 1) * rsa + k.saturating_sub(1) * csa || k == 0, "gemm: a too short");
    assert!(b.len() > k.saturating_sub(1) * rsb + (n - 1) * csb || k == 0, "gemm: b too short");
    assert!(c.len() >= m * n, "gemm: c too short");
    let threads = rayon::current_num_threads();
    let rows_per = if m * k * n < 1 << 16 { m } else { m.div_ceil(threads).max(1) };
    c[..m * n].par_chunks_mut(rows_per * n).enumerate().for_each(|(i, c_rows)| {
        let r0 = i * rows_per;
        let rows = c_rows.len() / n;
        // SAFETY: the asserts above bound every index sgemm reads in a and b; c_rows holds
        // exactly `rows` rows of n.
        unsafe {
            matrixmultiply::sgemm(
                rows, k, n, 1.0,
                a.as_ptr().add(r0 * rsa), rsa as isize, csa as isize,
                b.as_ptr(), rsb as isize, csb as isize,
                beta, c_rows.as_mut_ptr(), n as isize, 1,
            );
        }
    });
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

thread_local! {
    /// Each worker thread's im2col block, reused across calls.
    static COLUMNS: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` on this thread's scratch block of `len` floats.
fn with_columns<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    COLUMNS.with(|cell| {
        let mut cols = cell.borrow_mut();
        if cols.len() < len {
            cols.resize(len, 0.0);
        }
        f(&mut cols[..len])
    })
}

/// How many images a convolution handles per block: enough rows (~256) for an efficient GEMM,
/// few enough that the block's im2col stays in the core's cache while the GEMM reads it.
fn images_per_block(pixels: usize) -> usize {
    256usize.div_ceil(pixels).max(1)
}

/// c (m, n) = a (m, k) * b (k, n) + beta * c on the calling thread.
#[allow(clippy::too_many_arguments)]
fn gemm_serial(m: usize, k: usize, n: usize, a: &[f32], rsa: usize, csa: usize, b: &[f32], rsb: usize, csb: usize, c: &mut [f32], beta: f32) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(k == 0 || a.len() > (m - 1) * rsa + (k - 1) * csa, "gemm: a too short");
    assert!(k == 0 || b.len() > (k - 1) * rsb + (n - 1) * csb, "gemm: b too short");
    assert!(c.len() >= m * n, "gemm: c too short");
    // SAFETY: the asserts bound every index sgemm touches.
    unsafe {
        matrixmultiply::sgemm(m, k, n, 1.0, a.as_ptr(), rsa as isize, csa as isize, b.as_ptr(), rsb as isize, csb as isize, beta, c.as_mut_ptr(), n as isize, 1);
    }
}

/// Splits 0..total into REDUCTION_SPLITS ranges (some may be empty).
fn split_ranges(total: usize) -> Vec<(usize, usize)> {
    let per = total.div_ceil(REDUCTION_SPLITS).max(1);
    (0..REDUCTION_SPLITS).map(|i| ((i * per).min(total), ((i + 1) * per).min(total))).collect()
}

/// One image's im2col: col (out_h*out_w, k_h*k_w*in_c), zeros where the window hangs off the edge.
fn im2col(x: &[f32], col: &mut [f32], s: &ConvShape) {
    let patch = s.patch_len();
    for oy in 0..s.out_h {
        for ox in 0..s.out_w {
            let row = &mut col[(oy * s.out_w + ox) * patch..][..patch];
            for ky in 0..s.k_h {
                let iy = (oy * s.stride_h + ky) as isize - s.pad_top as isize;
                for kx in 0..s.k_w {
                    let ix = (ox * s.stride_w + kx) as isize - s.pad_left as isize;
                    let dst = &mut row[(ky * s.k_w + kx) * s.in_c..][..s.in_c];
                    if iy < 0 || ix < 0 || iy >= s.in_h as isize || ix >= s.in_w as isize {
                        dst.fill(0.0);
                    } else {
                        let src = (iy as usize * s.in_w + ix as usize) * s.in_c;
                        dst.copy_from_slice(&x[src..src + s.in_c]);
                    }
                }
            }
        }
    }
}

/// The adjoint of im2col for one image: dx += each column row scattered back to its window.
fn col2im(col: &[f32], dx: &mut [f32], s: &ConvShape) {
    dx.fill(0.0);
    let patch = s.patch_len();
    for oy in 0..s.out_h {
        for ox in 0..s.out_w {
            let row = &col[(oy * s.out_w + ox) * patch..][..patch];
            for ky in 0..s.k_h {
                let iy = (oy * s.stride_h + ky) as isize - s.pad_top as isize;
                if iy < 0 || iy >= s.in_h as isize {
                    continue;
                }
                for kx in 0..s.k_w {
                    let ix = (ox * s.stride_w + kx) as isize - s.pad_left as isize;
                    if ix < 0 || ix >= s.in_w as isize {
                        continue;
                    }
                    let dst = (iy as usize * s.in_w + ix as usize) * s.in_c;
                    let src = &row[(ky * s.k_w + kx) * s.in_c..][..s.in_c];
                    for (d, v) in dx[dst..dst + s.in_c].iter_mut().zip(src) {
                        *d += v;
                    }
                }
            }
        }
    }
}

/// y[row] += bias, then ReLU, for every row of `width`.
fn add_bias_activate(y: &mut [f32], b: &[f32], width: usize, relu: bool) {
    y.par_chunks_mut(width * 64).for_each(|rows| {
        for row in rows.chunks_mut(width) {
            for (v, bias) in row.iter_mut().zip(b) {
                *v += bias;
                if relu && *v < 0.0 {
                    *v = 0.0;
                }
            }
        }
    });
}

/// Filter gradients as fixed partial sums: 0..items is cut into REDUCTION_SPLITS ranges,
/// `partial(range, dw_part, db_part)` sums one range (ranges run in parallel, each part starts
/// at zero), and the parts are added in order into dw (len) and db (cols).
#[allow(clippy::type_complexity)]
fn reduce_in_fixed_splits(
    items: usize,
    len: usize,
    cols: usize,
    dw: &mut [f32],
    db: &mut [f32],
    partials: &mut Vec<f32>,
    partial: impl Fn((usize, usize), &mut [f32], &mut [f32]) + Sync,
) {
    partials.resize(REDUCTION_SPLITS * (len + cols), 0.0);
    let ranges = split_ranges(items);
    partials.par_chunks_mut(len + cols).zip(ranges.par_iter()).for_each(|(part, &range)| {
        part.fill(0.0);
        let (pw, pb) = part.split_at_mut(len);
        partial(range, pw, pb);
    });
    dw[..len].fill(0.0);
    db[..cols].fill(0.0);
    for part in partials.chunks(len + cols) {
        for (d, p) in dw[..len].iter_mut().zip(&part[..len]) {
            *d += p;
        }
        for (d, p) in db[..cols].iter_mut().zip(&part[len..]) {
            *d += p;
        }
    }
}

/// sums += each row of `rows` (rows of `sums.len()` values): a bias gradient.
fn add_rows(sums: &mut [f32], rows: &[f32]) {
    for row in rows.chunks(sums.len()) {
        for (acc, v) in sums.iter_mut().zip(row) {
            *acc += v;
        }
    }
}

/// dw (rows_k, cols) = a^T * dy summed over `m` rows; a is (m, rows_k), dy is (m, cols).
/// db = column sums of dy.
fn sum_outer_products(a: &[f32], dy: &[f32], m: usize, rows_k: usize, cols: usize, dw: &mut [f32], db: &mut [f32], partials: &mut Vec<f32>) {
    reduce_in_fixed_splits(m, rows_k * cols, cols, dw, db, partials, |(r0, r1), pw, pb| {
        if r1 > r0 {
            // pw (rows_k, cols) += a[r0..r1]^T (rows_k, rows) * dy[r0..r1] (rows, cols)
            gemm_serial(rows_k, r1 - r0, cols, &a[r0 * rows_k..r1 * rows_k], 1, rows_k, &dy[r0 * cols..r1 * cols], cols, 1, pw, 1.0);
            add_rows(pb, &dy[r0 * cols..r1 * cols]);
        }
    });
}

impl Backend for CpuBackend {
    type Tensor = Vec<f32>;
    type Indices = Vec<u32>;
    type Images = CpuImages;

    fn tensors_in_host_memory(&self) -> bool {
        true
    }
    fn describe(&self) -> String {
        format!("CPU backend, {} threads", rayon::current_num_threads())
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
        Ok(CpuImages { images: images.to_vec(), labels: labels.to_vec(), image_len })
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
                Some(a) => gather_transformed(src, dst, SampleTransform::unpack(a.transforms[row]), a.shape),
            }
        });
        for (l, &i) in labels[..n].iter_mut().zip(&idx[..n]) {
            *l = data.labels[i as usize] as u32;
        }
    }

    // x (n, in_h, in_w, in_c) -> y (n, out_h, out_w, out_c). Per block of images: im2col, one
    // GEMM with the kernel, bias + ReLU; blocks run in parallel.
    fn conv2d_forward(&self, x: &Vec<f32>, w: &Vec<f32>, b: &Vec<f32>, y: &mut Vec<f32>, s: &ConvShape, n: usize, relu: bool) {
        let (patch, pixels, block) = (s.patch_len(), s.out_h * s.out_w, images_per_block(s.out_h * s.out_w));
        let y = &mut y[..n * s.out_len()];
        y.par_chunks_mut(block * s.out_len()).zip(x[..n * s.in_len()].par_chunks(block * s.in_len())).for_each(|(yb, xb)| {
            let rows = yb.len() / s.out_c;
            with_columns(rows * patch, |col| {
                for (c, xi) in col.chunks_mut(pixels * patch).zip(xb.chunks(s.in_len())) {
                    im2col(xi, c, s);
                }
                gemm_serial(rows, patch, s.out_c, col, patch, 1, w, s.out_c, 1, yb, 0.0);
            });
            for row in yb.chunks_mut(s.out_c) {
                for (v, bias) in row.iter_mut().zip(b) {
                    *v += bias;
                    if relu && *v < 0.0 {
                        *v = 0.0;
                    }
                }
            }
        });
    }

    // dy (n, out_h, out_w, out_c) -> dx (n, in_h, in_w, in_c). Per block: dcol = dy * w^T,
    // then col2im image by image.
    fn conv2d_backward_input(&self, dy: &Vec<f32>, w: &Vec<f32>, dx: &mut Vec<f32>, s: &ConvShape, n: usize) {
        let (patch, pixels, block) = (s.patch_len(), s.out_h * s.out_w, images_per_block(s.out_h * s.out_w));
        dx[..n * s.in_len()].par_chunks_mut(block * s.in_len()).zip(dy[..n * s.out_len()].par_chunks(block * s.out_len())).for_each(|(dxb, dyb)| {
            let rows = dyb.len() / s.out_c;
            with_columns(rows * patch, |col| {
                gemm_serial(rows, s.out_c, patch, dyb, s.out_c, 1, w, 1, s.out_c, col, 0.0);
                for (d, c) in dxb.chunks_mut(s.in_len()).zip(col.chunks(pixels * patch)) {
                    col2im(c, d, s);
                }
            });
        });
    }

    // x, dy -> dw (k_h, k_w, in_c, out_c) = sum over images of im2col(x)^T * dy, db = sum of dy.
    // The images are split into REDUCTION_SPLITS fixed ranges summed in parallel, then added in
    // order, so the result does not depend on the thread count.
    fn conv2d_backward_filter(&self, x: &Vec<f32>, dy: &Vec<f32>, dw: &mut Vec<f32>, db: &mut Vec<f32>, s: &ConvShape, n: usize) {
        let (patch, pixels, block) = (s.patch_len(), s.out_h * s.out_w, images_per_block(s.out_h * s.out_w));
        let (len, oc) = (s.kernel_len(), s.out_c);
        reduce_in_fixed_splits(n, len, oc, dw, db, &mut self.partials.borrow_mut(), |(i0, i1), pw, pb| {
            for start in (i0..i1).step_by(block) {
                let rows = block.min(i1 - start) * pixels;
                let dyb = &dy[start * s.out_len()..][..rows * oc];
                with_columns(rows * patch, |col| {
                    for (k, c) in col.chunks_mut(pixels * patch).enumerate() {
                        im2col(&x[(start + k) * s.in_len()..][..s.in_len()], c, s);
                    }
                    // pw (patch, oc) += col^T (patch, rows) * dyb (rows, oc)
                    gemm_serial(patch, rows, oc, col, 1, patch, dyb, oc, 1, pw, 1.0);
                });
                add_rows(pb, dyb);
            }
        });
    }

    fn relu_backward(&self, y: &Vec<f32>, dy: &mut Vec<f32>, len: usize) {
        dy[..len].par_chunks_mut(4096).zip(y[..len].par_chunks(4096)).for_each(|(d, y)| {
            for (d, &y) in d.iter_mut().zip(y) {
                if y <= 0.0 {
                    *d = 0.0;
                }
            }
        });
    }

    // x (n, in_h, in_w, c) -> y (n, out_h, out_w, c), argmax = flat index into x of each max.
    // Channels are innermost (NHWC), so each window position is compared as a whole row of
    // channels: a loop the compiler vectorises.
    fn maxpool_forward(&self, x: &Vec<f32>, y: &mut Vec<f32>, argmax: &mut Vec<u32>, s: &PoolShape, n: usize) {
        let (in_len, out_len, c) = (s.in_len(), s.out_len(), s.c);
        y[..n * out_len].par_chunks_mut(out_len).zip(argmax[..n * out_len].par_chunks_mut(out_len)).enumerate().for_each(|(img, (y, am))| {
            let base = img * in_len;
            let x = &x[base..base + in_len];
            for oy in 0..s.out_h {
                for ox in 0..s.out_w {
                    let o = (oy * s.out_w + ox) * c;
                    let (best, best_at) = (&mut y[o..o + c], &mut am[o..o + c]);
                    for ky in 0..s.size_h {
                        for kx in 0..s.size_w {
                            let at = ((oy * s.stride_h + ky) * s.in_w + ox * s.stride_w + kx) * c;
                            let row = &x[at..at + c];
                            if ky == 0 && kx == 0 {
                                best.copy_from_slice(row);
                                for (i, a) in best_at.iter_mut().enumerate() {
                                    *a = (base + at + i) as u32;
                                }
                            } else {
                                // Strictly greater: the first max wins ties.
                                let first = (base + at) as u32;
                                // Masks rather than branches: on real data the comparison is
                                // a coin flip, and this form vectorises.
                                for (i, ((b, a), &v)) in best.iter_mut().zip(best_at.iter_mut()).zip(row).enumerate() {
                                    let mask = 0u32.wrapping_sub((v > *b) as u32);
                                    *a = (*a & !mask) | ((first + i as u32) & mask);
                                    *b = f32::from_bits((b.to_bits() & !mask) | (v.to_bits() & mask));
                                }
                            }
                        }
                    }
                }
            }
        });
    }

    fn maxpool_backward(&self, dy: &Vec<f32>, argmax: &Vec<u32>, dx: &mut Vec<f32>, s: &PoolShape, n: usize) {
        let (in_len, out_len) = (s.in_len(), s.out_len());
        dx[..n * in_len].par_chunks_mut(in_len).enumerate().for_each(|(img, dx)| {
            dx.fill(0.0);
            let base = img * in_len;
            for o in img * out_len..(img + 1) * out_len {
                dx[argmax[o] as usize - base] += dy[o];
            }
        });
    }

    fn dense_forward(&self, x: &Vec<f32>, w: &Vec<f32>, b: &Vec<f32>, y: &mut Vec<f32>, s: &DenseShape, n: usize, relu: bool) {
        let y = &mut y[..n * s.units];
        gemm(n, s.inputs, s.units, x, s.inputs, 1, w, s.units, 1, y, 0.0);
        add_bias_activate(y, b, s.units, relu);
    }

    fn dense_backward_input(&self, dy: &Vec<f32>, w: &Vec<f32>, dx: &mut Vec<f32>, s: &DenseShape, n: usize) {
        gemm(n, s.units, s.inputs, dy, s.units, 1, w, 1, s.units, &mut dx[..n * s.inputs], 0.0);
    }

    fn dense_backward_filter(&self, x: &Vec<f32>, dy: &Vec<f32>, dw: &mut Vec<f32>, db: &mut Vec<f32>, s: &DenseShape, n: usize) {
        sum_outer_products(x, dy, n, s.inputs, s.units, dw, db, &mut self.partials.borrow_mut());
    }

    fn softmax_xent(&self, logits: &Vec<f32>, labels: &Vec<u32>, dlogits: &mut Vec<f32>, metrics: &mut Vec<f32>, n: usize, classes: usize) {
        // A weight of exactly 1.0 leaves every product unchanged: the unweighted path is
        // bit for bit what it was before class weights existed.
        softmax_xent_rows(logits, labels, |_| 1.0, dlogits, metrics, n, classes);
    }

    fn softmax_xent_weighted(&self, logits: &Vec<f32>, labels: &Vec<u32>, class_weights: &Vec<f32>, dlogits: &mut Vec<f32>, metrics: &mut Vec<f32>, n: usize, classes: usize) {
        softmax_xent_rows(logits, labels, |label| class_weights[label], dlogits, metrics, n, classes);
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

    fn adam_update(&self, param: &mut Vec<f32>, grad: &Vec<f32>, m: &mut Vec<f32>, v: &mut Vec<f32>, len: usize, h: &AdamStep) {
        let alpha = h.alpha();
        let (b1, b2, eps) = (h.config.beta1, h.config.beta2, h.config.epsilon);
        param[..len].par_chunks_mut(4096).zip(grad[..len].par_chunks(4096)).zip(m[..len].par_chunks_mut(4096)).zip(v[..len].par_chunks_mut(4096)).for_each(
            |(((p, g), m), v)| {
                for i in 0..p.len() {
                    m[i] += (g[i] - m[i]) * (1.0 - b1);
                    v[i] += (g[i] * g[i] - v[i]) * (1.0 - b2);
                    p[i] -= alpha * m[i] / (v[i].sqrt() + eps);
                }
            },
        );
    }
}

/// Softmax + cross-entropy + gradient, each row weighted by `weight(label)`:
/// loss_i = w * -log softmax[label], dlogits_i = w * (softmax - onehot) / n.
#[allow(clippy::too_many_arguments)]
fn softmax_xent_rows(logits: &[f32], labels: &[u32], weight: impl Fn(usize) -> f32, dlogits: &mut [f32], metrics: &mut [f32], n: usize, classes: usize) {
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
        loss_sum += w * (log_sum - (z[label] - max));
        if argmax == label {
            correct += 1.0;
        }
        for c in 0..classes {
            let p = (z[c] - max).exp() / sum;
            g[c] = (p - if c == label { 1.0 } else { 0.0 }) * w / n as f32;
        }
    }
    metrics[METRIC_LOSS_SUM] += loss_sum;
    metrics[METRIC_CORRECT] += correct;
    metrics[METRIC_COUNT] += n as f32;
}
