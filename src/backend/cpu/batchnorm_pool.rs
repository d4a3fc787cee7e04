//! A BatchNormalization (with the ReLU it absorbed, if any) and the MaxPooling2D right after
//! it as one layer on the CPU (`Backend::fuses_batchnorm_maxpool`). Apart, the three write the
//! normalized activation, read it back to pool it, and in the backward write its whole
//! gradient (mostly zeros) to read it twice more: passes over a tensor that does not fit in
//! the cache, which cost more than the arithmetic. Fused, the forward normalizes each window's
//! cells as it pools them, and the backward makes each row of that gradient where it needs
//! it, from the pooled gradient and the argmax. The windows must not overlap (stride >= size,
//! Keras's default stride), so each cell has at most one window.
//!
//! Every value comes from the same formulas in the same order as the layers apart
//! (batchnorm.rs's `normalized`, pool.rs's `keep_max`, the sums over rows in chunks), so
//! the results are the same bits: tests/cpu_oracle.rs checks it.

use super::batchnorm::{self, RowGradient};
use super::pool;
use super::simd::{dispatch, Kernel, Lanes};
use crate::backend::{BatchNormConfig, BatchNormShape, PoolShape};
use rayon::prelude::*;

#[allow(clippy::too_many_arguments)]
pub fn forward_train(
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    moving_mean: &mut [f32],
    moving_variance: &mut [f32],
    saved: &mut [f32],
    y: &mut [f32],
    argmax: &mut [u32],
    s: &BatchNormShape,
    pool: &PoolShape,
    n: usize,
    h: &BatchNormConfig,
) {
    if n * s.positions == 0 || s.channels == 0 {
        return;
    }
    batchnorm::batch_statistics(x, moving_mean, moving_variance, saved, s, n, h);
    normalize_and_pool(x, gamma, beta, saved, y, argmax, s, pool, n);
}

#[allow(clippy::too_many_arguments)]
pub fn forward_infer(
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    moving_mean: &[f32],
    moving_variance: &[f32],
    saved: &mut [f32],
    y: &mut [f32],
    argmax: &mut [u32],
    s: &BatchNormShape,
    pool: &PoolShape,
    n: usize,
    epsilon: f32,
) {
    batchnorm::moving_statistics(moving_mean, moving_variance, saved, s.channels, epsilon);
    normalize_and_pool(x, gamma, beta, saved, y, argmax, s, pool, n);
}

#[allow(clippy::too_many_arguments)]
fn normalize_and_pool(
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    saved: &[f32],
    y: &mut [f32],
    argmax: &mut [u32],
    s: &BatchNormShape,
    pool: &PoolShape,
    n: usize,
) {
    let (in_len, out_len, c) = (pool.in_len(), pool.out_len(), s.channels);
    assert_eq!((in_len, pool.c), (s.len(), c), "the pool's input is the BatchNormalization's output");
    let (mean, inv_std) = (&saved[..c], &saved[c..2 * c]);
    y[..n * out_len].par_chunks_mut(out_len).zip(argmax[..n * out_len].par_chunks_mut(out_len)).enumerate().for_each(|(img, (y, am))| {
        let x = &x[img * in_len..][..in_len];
        dispatch(NormalizePoolImage { x, y, am, base: img * in_len, gamma: &gamma[..c], beta: &beta[..c], mean, inv_std, relu: s.relu, s: pool });
    });
}

/// One image of `normalize_and_pool`: pool.rs's `MaxPoolImage`, each cell normalized as it is
/// read. A copy, not `MaxPoolImage` made generic over a cell function: that version indexed
/// the per-channel terms by channel, which stopped the loop vectorizing (4.6x slower).
struct NormalizePoolImage<'a> {
    x: &'a [f32],
    y: &'a mut [f32],
    am: &'a mut [u32],
    /// The flat index of x[0] in the batch.
    base: usize,
    gamma: &'a [f32],
    beta: &'a [f32],
    mean: &'a [f32],
    inv_std: &'a [f32],
    relu: bool,
    s: &'a PoolShape,
}

impl Kernel for NormalizePoolImage<'_> {
    type Output = ();
    fn lanes_fit(&self, _: usize) -> bool {
        true
    }
    #[inline(always)]
    fn run<L: Lanes>(self) {
        let NormalizePoolImage { x, y, am, base, gamma, beta, mean, inv_std, relu, s } = self;
        let c = s.c;
        for oy in 0..s.out_h {
            let (y0, y1) = s.rows(oy);
            for ox in 0..s.out_w {
                let (x0, x1) = s.cols(ox);
                let o = (oy * s.out_w + ox) * c;
                let (best, best_at) = (&mut y[o..o + c], &mut am[o..o + c]);
                for iy in y0..y1 {
                    for ix in x0..x1 {
                        let at = (iy * s.in_w + ix) * c;
                        let row = &x[at..at + c];
                        let first = (base + at) as u32;
                        let per_channel = gamma.iter().zip(beta).zip(mean.iter().zip(inv_std));
                        if iy == y0 && ix == x0 {
                            for (i, (((b, a), &x), ((&gamma, &beta), (&mean, &inv_std)))) in
                                best.iter_mut().zip(best_at.iter_mut()).zip(row).zip(per_channel).enumerate()
                            {
                                *b = batchnorm::normalized(x, gamma, beta, mean, inv_std, relu);
                                *a = first + i as u32;
                            }
                        } else {
                            for (i, (((b, a), &x), ((&gamma, &beta), (&mean, &inv_std)))) in
                                best.iter_mut().zip(best_at.iter_mut()).zip(row).zip(per_channel).enumerate()
                            {
                                pool::keep_max(b, a, batchnorm::normalized(x, gamma, beta, mean, inv_std, relu), first + i as u32);
                            }
                        }
                    }
                }
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
pub fn backward(
    x: &[f32],
    dy: &[f32],
    y: &[f32],
    argmax: &[u32],
    gamma: &[f32],
    saved: &mut [f32],
    dx: &mut [f32],
    dgamma: &mut [f32],
    dbeta: &mut [f32],
    s: &BatchNormShape,
    pool: &PoolShape,
    n: usize,
) {
    let gradient = PooledGradient::new(dy, y, argmax, s, pool);
    batchnorm::backward_from(x, &gradient, gamma, saved, dx, dgamma, dbeta, s, n);
}

/// The gradient of the normalized activation, row by row, as `maxpool_backward_relu` would
/// have written it: a cell gets its window's dy (as 0 + dy, the sum the pool's backward makes)
/// where it was the window's argmax and, after a ReLU, the pooled value is positive; every
/// other cell 0.
struct PooledGradient<'a> {
    dy: &'a [f32],
    y: &'a [f32],
    argmax: &'a [u32],
    relu: bool,
    pool: &'a PoolShape,
    /// Per cell of an image (y * in_w + x), the window holding it (oy * out_w + ox), or
    /// NO_WINDOW: a table, as the divisions that find it cost more than the row's arithmetic.
    window: Vec<u32>,
}

const NO_WINDOW: u32 = u32::MAX;

impl<'a> PooledGradient<'a> {
    fn new(dy: &'a [f32], y: &'a [f32], argmax: &'a [u32], s: &BatchNormShape, pool: &'a PoolShape) -> Self {
        assert!(pool.windows_disjoint(), "a fused pool's windows must not overlap");
        let mut window = vec![NO_WINDOW; pool.in_h * pool.in_w];
        for oy in 0..pool.out_h {
            let (y0, y1) = pool.rows(oy);
            for ox in 0..pool.out_w {
                let (x0, x1) = pool.cols(ox);
                for row in window[y0 * pool.in_w..y1 * pool.in_w].chunks_exact_mut(pool.in_w) {
                    row[x0..x1].fill((oy * pool.out_w + ox) as u32);
                }
            }
        }
        PooledGradient { dy, y, argmax, relu: s.relu, pool, window }
    }
}

impl RowGradient for PooledGradient<'_> {
    #[inline(always)]
    fn row<'b>(&'b self, row: usize, buffer: &'b mut [f32]) -> &'b [f32] {
        let p = self.pool;
        // u32 division: several times faster than usize's.
        let positions = self.window.len() as u32;
        let (img, at) = (row as u32 / positions, row as u32 % positions);
        let window = self.window[at as usize];
        if window == NO_WINDOW {
            buffer.fill(0.0);
            return buffer;
        }
        let o = (img as usize * p.out_h * p.out_w + window as usize) * p.c;
        let (dy, y, argmax) = (&self.dy[o..o + p.c], &self.y[o..o + p.c], &self.argmax[o..o + p.c]);
        let first = (row * p.c) as u32;
        // `&`, not `&&`: no branches, so the loop vectorizes.
        for (i, (((b, &dy), &y), &a)) in buffer.iter_mut().zip(dy).zip(y).zip(argmax).enumerate() {
            let masked = self.relu & (y <= 0.0);
            let through = (a == first + i as u32) & !masked;
            *b = if through { 0.0 + dy } else { 0.0 };
        }
        buffer
    }
}
