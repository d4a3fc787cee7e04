//! BatchNormalization on the CPU, over the last axis of (rows, channels) values (rows = n * h * w
//! of an NHWC tensor, or n of a (n, units) one).
//!
//! Per-channel sums accumulate in f64: this is the reference the GPU is compared against, and a
//! channel of a 32-image batch of 28x28 maps sums 25,088 values, where f32 accumulation would
//! lose ~3 digits. Rows are summed in fixed chunks, in parallel, and the chunks' partial sums
//! added in chunk order, so the result does not depend on the thread count: a seeded run
//! repeats bit for bit. Everything element-wise is f32, in the same formulas as
//! shaders/batchnorm.wgsl.

// The per-channel formulas index up to six arrays by channel; zipping six would hide them.
#![allow(clippy::needless_range_loop)]

use super::simd::vectorized;
use crate::backend::{activation, ActivationFn, BatchNormConfig, BatchNormShape};
use rayon::prelude::*;

/// Rows per partial sum (the fixed split of the reductions and of the element-wise passes).
const ROWS_PER_CHUNK: usize = 256;

/// Per channel, two sums over all rows in f64: `add_row(row, first, second, buffer)` adds one
/// row's terms of every channel to the chunk's sums (a loop over channels, which vectorizes;
/// each channel's sum still takes its rows in order). `buffer` is c floats of the chunk's own
/// to build a row in (`RowGradient`). Give `add_row` `#[inline(always)]`, so it compiles
/// inside `vectorized`'s SIMD context (see `simd::array`).
fn channel_sums(rows: usize, c: usize, add_row: impl Fn(usize, &mut [f64], &mut [f64], &mut [f32]) + Sync) -> Vec<[f64; 2]> {
    let partials: Vec<(Vec<f64>, Vec<f64>)> = (0..rows.div_ceil(ROWS_PER_CHUNK))
        .into_par_iter()
        .map(|chunk| {
            let (mut first, mut second, mut buffer) = (vec![0.0; c], vec![0.0; c], vec![0.0; c]);
            vectorized(
                #[inline(always)]
                || {
                    for row in chunk * ROWS_PER_CHUNK..((chunk + 1) * ROWS_PER_CHUNK).min(rows) {
                        add_row(row, &mut first, &mut second, &mut buffer);
                    }
                },
            );
            (first, second)
        })
        .collect();
    let mut total = vec![[0.0; 2]; c];
    for (first, second) in partials {
        for ((t, a), b) in total.iter_mut().zip(first).zip(second) {
            t[0] += a;
            t[1] += b;
        }
    }
    total
}

/// One output value: gamma * ((x - mean) * inv_std) + beta, then ReLU when `relu` (the
/// fused pooling computes each value with this too, so both round alike).
#[inline(always)]
pub(super) fn normalized(x: f32, gamma: f32, beta: f32, mean: f32, inv_std: f32, relu: bool) -> f32 {
    let y = gamma * ((x - mean) * inv_std) + beta;
    if relu {
        activation::forward(ActivationFn::Relu, y)
    } else {
        y
    }
}

/// y = `normalized` x with mean = saved[..c], inv_std = saved[c..2c].
fn normalize(x: &[f32], gamma: &[f32], beta: &[f32], saved: &[f32], y: &mut [f32], c: usize, relu: bool) {
    // Every per-channel slice is cut to c, so the channel loop has no bounds checks and runs
    // as whole vectors.
    let (gamma, beta, mean, inv_std) = (&gamma[..c], &beta[..c], &saved[..c], &saved[c..2 * c]);
    y.par_chunks_mut(ROWS_PER_CHUNK * c).zip(x.par_chunks(ROWS_PER_CHUNK * c)).for_each(|(y, x)| {
        vectorized(
            #[inline(always)]
            || {
                for (y, x) in y.chunks_exact_mut(c).zip(x.chunks_exact(c)) {
                    for (((y, &x), (&gamma, &beta)), (&mean, &inv_std)) in y.iter_mut().zip(x).zip(gamma.iter().zip(beta)).zip(mean.iter().zip(inv_std)) {
                        *y = normalized(x, gamma, beta, mean, inv_std, relu);
                    }
                }
            },
        )
    });
}

#[allow(clippy::too_many_arguments)]
pub fn forward_train(
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    moving_mean: &mut [f32],
    moving_variance: &mut [f32],
    saved: &mut [f32],
    y: &mut [f32],
    s: &BatchNormShape,
    n: usize,
    h: &BatchNormConfig,
) {
    let (rows, c) = (n * s.positions, s.channels);
    if rows == 0 || c == 0 {
        return;
    }
    batch_statistics(x, moving_mean, moving_variance, saved, s, n, h);
    normalize(&x[..rows * c], gamma, beta, saved, &mut y[..rows * c], c, s.relu);
}

/// The training forward's statistics: saved[..c] = the batch mean, saved[c..2c] = its
/// 1 / sqrt(var + epsilon), and the moving statistics updated.
pub(super) fn batch_statistics(
    x: &[f32],
    moving_mean: &mut [f32],
    moving_variance: &mut [f32],
    saved: &mut [f32],
    s: &BatchNormShape,
    n: usize,
    h: &BatchNormConfig,
) {
    let (rows, c) = (n * s.positions, s.channels);
    let x = &x[..rows * c];
    let m = rows as f64;
    let row_of = |row: usize| &x[row * c..(row + 1) * c];
    let mean: Vec<f64> = channel_sums(
        rows,
        c,
        #[inline(always)]
        |row, sum, _, _| {
            for (s, &v) in sum.iter_mut().zip(row_of(row)) {
                *s += v as f64;
            }
        },
    )
    .iter()
    .map(|s| s[0] / m)
    .collect();
    // Two passes (mean, then squared deviations): no cancellation when |mean| >> std.
    let variance: Vec<f64> = channel_sums(
        rows,
        c,
        #[inline(always)]
        |row, sum, _, _| {
            for ((s, &v), &mean) in sum.iter_mut().zip(row_of(row)).zip(&mean) {
                let d = v as f64 - mean;
                *s += d * d;
            }
        },
    )
    .iter()
    .map(|s| s[0] / m)
    .collect();
    let (momentum, rest) = (h.momentum, 1.0 - h.momentum);
    for ch in 0..c {
        let (mean, variance) = (mean[ch] as f32, variance[ch] as f32);
        saved[ch] = mean;
        saved[c + ch] = 1.0 / (variance + h.epsilon).sqrt();
        moving_mean[ch] = moving_mean[ch] * momentum + mean * rest;
        moving_variance[ch] = moving_variance[ch] * momentum + variance * rest;
    }
}

/// The inference forward's statistics: saved[..c] = the moving mean, saved[c..2c] = 1 /
/// sqrt(moving_variance + epsilon).
pub(super) fn moving_statistics(moving_mean: &[f32], moving_variance: &[f32], saved: &mut [f32], c: usize, epsilon: f32) {
    for ch in 0..c {
        saved[ch] = moving_mean[ch];
        saved[c + ch] = 1.0 / (moving_variance[ch] + epsilon).sqrt();
    }
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
    s: &BatchNormShape,
    n: usize,
    epsilon: f32,
) {
    let (rows, c) = (n * s.positions, s.channels);
    moving_statistics(moving_mean, moving_variance, saved, c, epsilon);
    normalize(&x[..rows * c], gamma, beta, saved, &mut y[..rows * c], c, s.relu);
}

/// Where the backward reads dy: row by row (one position's c channels), so a fused layer can
/// make each row from a smaller tensor instead of writing the whole gradient first.
pub(super) trait RowGradient: Sync {
    /// dy's row `row`, in `buffer` (c floats) or borrowed from a whole tensor.
    fn row<'a>(&'a self, row: usize, buffer: &'a mut [f32]) -> &'a [f32];
}

/// dy as a whole (rows, c) tensor.
struct WholeGradient<'a> {
    dy: &'a [f32],
    c: usize,
}

impl RowGradient for WholeGradient<'_> {
    #[inline(always)]
    fn row<'a>(&'a self, row: usize, _: &'a mut [f32]) -> &'a [f32] {
        &self.dy[row * self.c..][..self.c]
    }
}

#[allow(clippy::too_many_arguments)]
pub fn backward(x: &[f32], dy: &[f32], gamma: &[f32], saved: &mut [f32], dx: &mut [f32], dgamma: &mut [f32], dbeta: &mut [f32], s: &BatchNormShape, n: usize) {
    let rows = n * s.positions;
    backward_from(x, &WholeGradient { dy: &dy[..rows * s.channels], c: s.channels }, gamma, saved, dx, dgamma, dbeta, s, n);
}

/// `backward` with dy read row by row from `dy`.
#[allow(clippy::too_many_arguments)]
pub(super) fn backward_from(
    x: &[f32],
    dy: &impl RowGradient,
    gamma: &[f32],
    saved: &mut [f32],
    dx: &mut [f32],
    dgamma: &mut [f32],
    dbeta: &mut [f32],
    s: &BatchNormShape,
    n: usize,
) {
    let (rows, c) = (n * s.positions, s.channels);
    if rows == 0 || c == 0 {
        return;
    }
    let x = &x[..rows * c];
    let m = rows as f64;
    {
        let (mean, inv_std) = (&saved[..c], &saved[c..2 * c]);
        let sums = channel_sums(
            rows,
            c,
            #[inline(always)]
            |row, sum_dy, sum_dy_xhat, buffer| {
                let (x, dy) = (&x[row * c..(row + 1) * c], dy.row(row, buffer));
                for (((sum_dy, sum_dy_xhat), (&x, &dy)), (mean, inv_std)) in
                    sum_dy.iter_mut().zip(sum_dy_xhat).zip(x.iter().zip(dy)).zip(mean.iter().zip(inv_std))
                {
                    let xhat = (x - mean) * inv_std;
                    *sum_dy += dy as f64;
                    *sum_dy_xhat += dy as f64 * xhat as f64;
                }
            },
        );
        for (ch, [sum_dy, sum_dy_xhat]) in sums.into_iter().enumerate() {
            dbeta[ch] = sum_dy as f32;
            dgamma[ch] = sum_dy_xhat as f32;
            saved[2 * c + ch] = (sum_dy_xhat / m) as f32;
            saved[3 * c + ch] = (sum_dy / m) as f32;
        }
    }
    let saved = &*saved;
    let (mean, inv_std, dgamma_m, dbeta_m) = (&saved[..c], &saved[c..2 * c], &saved[2 * c..3 * c], &saved[3 * c..4 * c]);
    let gamma = &gamma[..c];
    let chunk = ROWS_PER_CHUNK * c;
    dx[..rows * c].par_chunks_mut(chunk).zip(x.par_chunks(chunk)).enumerate().for_each(|(k, (dx, x))| {
        let mut buffer = vec![0.0; c];
        vectorized(
            #[inline(always)]
            || {
                for (r, (dx, x)) in dx.chunks_exact_mut(c).zip(x.chunks_exact(c)).enumerate() {
                    let dy = dy.row(k * ROWS_PER_CHUNK + r, &mut buffer);
                    let per_channel = gamma.iter().zip(mean).zip(inv_std).zip(dgamma_m.iter().zip(dbeta_m));
                    for (((dx, x), dy), (((gamma, mean), inv_std), (dgamma_m, dbeta_m))) in dx.iter_mut().zip(x).zip(dy).zip(per_channel) {
                        let xhat = (x - mean) * inv_std;
                        *dx = gamma * inv_std * (dy - dbeta_m - xhat * dgamma_m);
                    }
                }
            },
        )
    });
}
