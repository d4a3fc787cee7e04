//! Max and average pooling on the CPU, NHWC, any padding (`PoolShape`): the readable reference
//! for shaders/pool.wgsl. Channels are innermost, so each window cell is a whole row of
//! channels and every inner loop runs along it (loops the compiler vectorises). Each image is
//! independent: rayon splits the batch.

use super::simd::{dispatch, vectorized, Kernel, Lanes};
use crate::backend::PoolShape;
use rayon::prelude::*;

// x (n, in_h, in_w, c) -> y (n, out_h, out_w, c), argmax = flat index into x of each max: the
// first real cell of the window starts the max, later cells replace it only when strictly
// greater (the first max wins ties; padding is never looked at, so it never wins).
pub fn maxpool_forward(x: &[f32], y: &mut [f32], argmax: &mut [u32], s: &PoolShape, n: usize) {
    let (in_len, out_len) = (s.in_len(), s.out_len());
    y[..n * out_len].par_chunks_mut(out_len).zip(argmax[..n * out_len].par_chunks_mut(out_len)).enumerate().for_each(|(img, (y, am))| {
        maxpool_image(&x[img * in_len..][..in_len], y, am, img * in_len, s);
    });
}

/// One image of `maxpool_forward` (conv_pool.rs pools each conv output with it); `base` is the
/// flat index of x[0] in the batch.
pub(super) fn maxpool_image(x: &[f32], y: &mut [f32], am: &mut [u32], base: usize, s: &PoolShape) {
    dispatch(MaxPoolImage { x, y, am, base, s });
}

/// One image of `maxpool_forward`. A `Kernel` with its operands as fields rather than a
/// closure through `vectorized`: only this way does LLVM vectorise the u32 index selects.
struct MaxPoolImage<'a> {
    x: &'a [f32],
    y: &'a mut [f32],
    am: &'a mut [u32],
    /// The flat index of x[0] in the batch.
    base: usize,
    s: &'a PoolShape,
}

impl Kernel for MaxPoolImage<'_> {
    type Output = ();
    fn lanes_fit(&self, _: usize) -> bool {
        true
    }
    #[inline(always)]
    fn run<L: Lanes>(self) {
        let MaxPoolImage { x, y, am, base, s } = self;
        let c = s.c;
        for oy in 0..s.out_h {
            let (y0, y1) = s.rows(oy);
            for ox in 0..s.out_w {
                let (x0, x1) = s.cols(ox);
                let o = (oy * s.out_w + ox) * c;
                let (best, best_at) = (&mut y[o..o + c], &mut am[o..o + c]);
                if let Some(cells) = window_2x2(s, (y0, y1), (x0, x1)) {
                    // The common 2x2 window in one pass over the channels, the running max in
                    // registers.
                    let [r0, r1, r2, r3] = cells.map(|a| &x[a..a + c]);
                    let [i0, i1, i2, i3] = cells.map(|a| (base + a) as u32);
                    for (i, (b, a)) in best.iter_mut().zip(best_at.iter_mut()).enumerate() {
                        let (mut v, mut v_at) = (r0[i], i0 + i as u32);
                        keep_max(&mut v, &mut v_at, r1[i], i1 + i as u32);
                        keep_max(&mut v, &mut v_at, r2[i], i2 + i as u32);
                        keep_max(&mut v, &mut v_at, r3[i], i3 + i as u32);
                        (*b, *a) = (v, v_at);
                    }
                    continue;
                }
                for iy in y0..y1 {
                    for ix in x0..x1 {
                        let at = (iy * s.in_w + ix) * c;
                        let row = &x[at..at + c];
                        let first = (base + at) as u32;
                        if iy == y0 && ix == x0 {
                            best.copy_from_slice(row);
                            for (i, a) in best_at.iter_mut().enumerate() {
                                *a = first + i as u32;
                            }
                        } else {
                            for (i, ((b, a), &v)) in best.iter_mut().zip(best_at.iter_mut()).zip(row).enumerate() {
                                keep_max(b, a, v, first + i as u32);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Where the window (rows y0..y1, columns x0..x1) is 2x2: the offsets of its four cells' channel
/// rows in the image, in the order the general window loops visit them (row by row).
#[inline(always)]
fn window_2x2(s: &PoolShape, (y0, y1): (usize, usize), (x0, x1): (usize, usize)) -> Option<[usize; 4]> {
    let at = |iy: usize, ix: usize| (iy * s.in_w + ix) * s.c;
    (y1 - y0 == 2 && x1 - x0 == 2).then(|| [at(y0, x0), at(y0, x0 + 1), at(y0 + 1, x0), at(y0 + 1, x0 + 1)])
}

/// A later cell of a window: v (at flat index `at`) replaces the best so far only when
/// strictly greater, so the first max wins ties (batchnorm_pool.rs pools by this rule too).
/// Masks rather than branches: on real data the comparison is a coin flip, and this form
/// vectorises.
#[inline(always)]
pub(super) fn keep_max(best: &mut f32, best_at: &mut u32, v: f32, at: u32) {
    let mask = 0u32.wrapping_sub((v > *best) as u32);
    *best_at = (*best_at & !mask) | (at & mask);
    *best = f32::from_bits((best.to_bits() & !mask) | (v.to_bits() & mask));
}

// maxpool_forward's y alone, for inference: the same first-max-wins rule as a select, with no
// index to track, so the window loop is plain vector max-by-compare over whole channel rows.
pub fn maxpool_forward_values(x: &[f32], y: &mut [f32], s: &PoolShape, n: usize) {
    let (in_len, out_len) = (s.in_len(), s.out_len());
    y[..n * out_len].par_chunks_mut(out_len).enumerate().for_each(|(img, y)| maxpool_values_image(&x[img * in_len..][..in_len], y, s));
}

/// One image of `maxpool_forward_values` (conv_pool.rs pools each conv block's images with it).
pub(super) fn maxpool_values_image(x: &[f32], y: &mut [f32], s: &PoolShape) {
    let c = s.c;
    vectorized(
        #[inline(always)]
        || {
            for oy in 0..s.out_h {
                let (y0, y1) = s.rows(oy);
                for ox in 0..s.out_w {
                    let (x0, x1) = s.cols(ox);
                    let o = (oy * s.out_w + ox) * c;
                    let best = &mut y[o..o + c];
                    if let Some(cells) = window_2x2(s, (y0, y1), (x0, x1)) {
                        // The common 2x2 window in one pass, as in `MaxPoolImage`.
                        let [r0, r1, r2, r3] = cells.map(|a| &x[a..a + c]);
                        for (i, b) in best.iter_mut().enumerate() {
                            let mut v = r0[i];
                            for r in [r1, r2, r3] {
                                v = if r[i] > v { r[i] } else { v };
                            }
                            *b = v;
                        }
                        continue;
                    }
                    for iy in y0..y1 {
                        for ix in x0..x1 {
                            let row = &x[(iy * s.in_w + ix) * c..][..c];
                            if iy == y0 && ix == x0 {
                                best.copy_from_slice(row);
                            } else {
                                for (b, &v) in best.iter_mut().zip(row) {
                                    *b = if v > *b { v } else { *b };
                                }
                            }
                        }
                    }
                }
            }
        },
    )
}

// dy (n, out_h, out_w, c), argmax -> dx (n, in_h, in_w, c): dx = 0, then dx[argmax[o]] += dy[o]
// in increasing o (the order the shader sums in).
pub fn maxpool_backward(dy: &[f32], argmax: &[u32], dx: &mut [f32], s: &PoolShape, n: usize) {
    let (in_len, out_len) = (s.in_len(), s.out_len());
    dx[..n * in_len].par_chunks_mut(in_len).enumerate().for_each(|(img, dx)| {
        let o = img * out_len..(img + 1) * out_len;
        unpool_image(&dy[o.clone()], &argmax[o], img * in_len, dx, |_, _| false);
    });
}

// maxpool_backward, then the ReLU backward of the layer before (dx zeroed where relu_y <= 0)
// in the same pass: only cells some argmax names can be nonzero, so only those are masked,
// each right after its sum (zeroing after each add zeroes the total, as masking once would).
pub fn maxpool_backward_relu(dy: &[f32], argmax: &[u32], relu_y: &[f32], dx: &mut [f32], s: &PoolShape, n: usize) {
    let (in_len, out_len) = (s.in_len(), s.out_len());
    dx[..n * in_len].par_chunks_mut(in_len).zip(relu_y[..n * in_len].par_chunks(in_len)).enumerate().for_each(|(img, (dx, y))| {
        let o = img * out_len..(img + 1) * out_len;
        unpool_image(&dy[o.clone()], &argmax[o], img * in_len, dx, |_, at| y[at] <= 0.0);
    });
}

/// One image of `maxpool_backward` into dx (the image's input gradient): zeroed, then each
/// term dy[o] added at its argmax `at` (an index into dx) and that cell zeroed again where
/// `masked(o, at)` (the ReLU before the pool: `maxpool_backward_relu` tests the input at `at`,
/// conv_pool.rs the pooled value at o, the same number). `base` is the flat index of the
/// image's first input in the batch.
pub(super) fn unpool_image(dy: &[f32], am: &[u32], base: usize, dx: &mut [f32], masked: impl Fn(usize, usize) -> bool) {
    dx.fill(0.0);
    for (o, (&d, &at)) in dy.iter().zip(am).enumerate() {
        let at = at as usize - base;
        dx[at] += d;
        if masked(o, at) {
            dx[at] = 0.0;
        }
    }
}

// x (n, in_h, in_w, c) -> y (n, out_h, out_w, c): each window's real cells summed from 0 in
// row-then-column order, then divided by their count (padding is not counted: Keras's
// "same" average, keras/src/backend/jax/nn.py average_pool divides by the window counts; TF's
// avg_pool likewise).
pub fn avgpool_forward(x: &[f32], y: &mut [f32], s: &PoolShape, n: usize) {
    let (in_len, out_len, c) = (s.in_len(), s.out_len(), s.c);
    y[..n * out_len].par_chunks_mut(out_len).enumerate().for_each(|(img, y)| {
        vectorized(
            #[inline(always)]
            || {
                let x = &x[img * in_len..(img + 1) * in_len];
                for oy in 0..s.out_h {
                    let (y0, y1) = s.rows(oy);
                    for ox in 0..s.out_w {
                        let (x0, x1) = s.cols(ox);
                        let o = (oy * s.out_w + ox) * c;
                        let sum = &mut y[o..o + c];
                        sum.fill(0.0);
                        for iy in y0..y1 {
                            for ix in x0..x1 {
                                let at = (iy * s.in_w + ix) * c;
                                for (acc, &v) in sum.iter_mut().zip(&x[at..at + c]) {
                                    *acc += v;
                                }
                            }
                        }
                        let count = ((y1 - y0) * (x1 - x0)) as f32;
                        for acc in sum.iter_mut() {
                            *acc /= count;
                        }
                    }
                }
            },
        )
    });
}

// dy (n, out_h, out_w, c) -> dx (n, in_h, in_w, c): dx = 0, then every window in increasing
// order adds dy / count to each of its real cells (the shader gathers the same terms per cell
// in the same order, so the sums round alike).
pub fn avgpool_backward(dy: &[f32], dx: &mut [f32], s: &PoolShape, n: usize) {
    let (in_len, out_len, c) = (s.in_len(), s.out_len(), s.c);
    dx[..n * in_len].par_chunks_mut(in_len).enumerate().for_each(|(img, dx)| {
        vectorized(
            #[inline(always)]
            || {
                dx.fill(0.0);
                let dy = &dy[img * out_len..(img + 1) * out_len];
                for oy in 0..s.out_h {
                    let (y0, y1) = s.rows(oy);
                    for ox in 0..s.out_w {
                        let (x0, x1) = s.cols(ox);
                        let count = ((y1 - y0) * (x1 - x0)) as f32;
                        let o = (oy * s.out_w + ox) * c;
                        let g = &dy[o..o + c];
                        for iy in y0..y1 {
                            for ix in x0..x1 {
                                let at = (iy * s.in_w + ix) * c;
                                for (d, &g) in dx[at..at + c].iter_mut().zip(g) {
                                    *d += g / count;
                                }
                            }
                        }
                    }
                }
            },
        )
    });
}
