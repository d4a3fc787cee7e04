//! Depthwise convolution (Keras DepthwiseConv2D) on the CPU: plain loops, the readable reference
//! for shaders/depthwise.wgsl. Each input channel c has its own `multiplier` filters, output
//! channel c * multiplier + m; the kernel is (taps, out_c) row-major, Keras's (k_h, k_w,
//! channels, multiplier). Images run in parallel; the filter gradient sums images in the fixed
//! ranges of `reduce_in_fixed_splits`, so no result depends on the thread count.

use super::gemm::{add_rows, reduce_in_fixed_splits};
use crate::backend::DepthwiseShape;
use rayon::prelude::*;

/// The input pixel (row * in_w + column) that tap (ky, kx) of output (oy, ox) reads; None
/// where the tap lies in the padding.
fn input_pixel(s: &DepthwiseShape, (oy, ox): (usize, usize), (ky, kx): (usize, usize)) -> Option<usize> {
    let iy = (oy * s.stride_h + ky * s.dilation_h).checked_sub(s.pad_top)?;
    let ix = (ox * s.stride_w + kx * s.dilation_w).checked_sub(s.pad_left)?;
    (iy < s.in_h && ix < s.in_w).then_some(iy * s.in_w + ix)
}

/// Calls `f(output pixel, tap, input pixel)` for every tap of every output pixel of one image
/// that lands inside the image, outputs in order, taps in order within each.
fn for_each_tap(s: &DepthwiseShape, mut f: impl FnMut(usize, usize, usize)) {
    for oy in 0..s.out_h {
        for ox in 0..s.out_w {
            for ky in 0..s.k_h {
                for kx in 0..s.k_w {
                    if let Some(pixel) = input_pixel(s, (oy, ox), (ky, kx)) {
                        f(oy * s.out_w + ox, ky * s.k_w + kx, pixel);
                    }
                }
            }
        }
    }
}

/// acc[c * m + j] += x[c] * w[c * m + j] for every channel c and each of its m filters.
fn multiply_accumulate(acc: &mut [f32], x: &[f32], w: &[f32], m: usize) {
    if m == 1 {
        // One filter per channel (MobileNet's case): the same multiply-adds in the same order as
        // below, as one loop over the channels that the compiler vectorises.
        for ((a, &xv), &wv) in acc.iter_mut().zip(x).zip(w) {
            *a += xv * wv;
        }
        return;
    }
    for ((acc, w), &xv) in acc.chunks_mut(m).zip(w.chunks(m)).zip(x) {
        for (a, &wv) in acc.iter_mut().zip(w) {
            *a += xv * wv;
        }
    }
}

/// x (n, in_h, in_w, channels), w (taps, out_c) -> y (n, out_h, out_w, out_c) = taps summed in
/// order from 0, + b, then ReLU.
#[allow(clippy::too_many_arguments)]
pub fn forward(x: &[f32], w: &[f32], b: Option<&[f32]>, y: &mut [f32], s: &DepthwiseShape, n: usize, relu: bool) {
    let (oc, c) = (s.out_c(), s.channels);
    y[..n * s.out_len()].par_chunks_mut(s.out_len()).zip(x[..n * s.in_len()].par_chunks(s.in_len())).for_each(|(yi, xi)| {
        yi.fill(0.0);
        for_each_tap(s, |out, tap, pixel| multiply_accumulate(&mut yi[out * oc..][..oc], &xi[pixel * c..][..c], &w[tap * oc..][..oc], s.multiplier));
        for row in yi.chunks_mut(oc) {
            if let Some(b) = b {
                for (v, b) in row.iter_mut().zip(b) {
                    *v += b;
                }
            }
            if relu {
                for v in row.iter_mut() {
                    *v = v.max(0.0);
                }
            }
        }
    });
}

/// dy (n, out_h, out_w, out_c), w -> dx (n, in_h, in_w, channels): each output's gradient
/// scattered back to the input pixels its taps read (within one image, so no races).
pub fn backward_input(dy: &[f32], w: &[f32], dx: &mut [f32], s: &DepthwiseShape, n: usize) {
    let (oc, m) = (s.out_c(), s.multiplier);
    dx[..n * s.in_len()].par_chunks_mut(s.in_len()).zip(dy[..n * s.out_len()].par_chunks(s.out_len())).for_each(|(dxi, dyi)| {
        dxi.fill(0.0);
        for_each_tap(s, |out, tap, pixel| {
            let (g, wt) = (&dyi[out * oc..][..oc], &w[tap * oc..][..oc]);
            let dxp = &mut dxi[pixel * s.channels..][..s.channels];
            if m == 1 {
                // The sum of one product is that product: the same bits, in a loop that vectorises.
                for ((d, g), wt) in dxp.iter_mut().zip(g).zip(wt) {
                    *d += g * wt;
                }
                return;
            }
            for ((d, g), wt) in dxp.iter_mut().zip(g.chunks(m)).zip(wt.chunks(m)) {
                *d += g.iter().zip(wt).map(|(g, w)| g * w).sum::<f32>();
            }
        });
    });
}

/// x, dy -> dw (taps, out_c) and db (out_c), summed over the batch in fixed image ranges.
#[allow(clippy::too_many_arguments)]
pub fn backward_filter(x: &[f32], dy: &[f32], dw: &mut [f32], db: &mut [f32], s: &DepthwiseShape, n: usize, partials: &mut Vec<f32>) {
    let (oc, c) = (s.out_c(), s.channels);
    reduce_in_fixed_splits(n, (s.kernel_len(), oc), dw, db, partials, |(i0, i1), pw, pb| {
        for i in i0..i1 {
            let (xi, dyi) = (&x[i * s.in_len()..][..s.in_len()], &dy[i * s.out_len()..][..s.out_len()]);
            for_each_tap(s, |out, tap, pixel| multiply_accumulate(&mut pw[tap * oc..][..oc], &xi[pixel * c..][..c], &dyi[out * oc..][..oc], s.multiplier));
            add_rows(pb, dyi);
        }
    });
}
