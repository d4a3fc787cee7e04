//! Convolution as GEMM over an im2col of a block of images small enough to stay in cache: the
//! general path, for any kernel size, stride, padding and dilation.

use super::gemm::{add_bias_activate, add_rows, gemm, parallel_block, with_scratch, Mat, Threads};
use crate::backend::ConvShape;
use rayon::prelude::*;

/// How many images a convolution handles per block: enough rows (~256) for an efficient GEMM,
/// few enough that the block's im2col stays in the core's cache while the GEMM reads it.
pub fn images_per_block(pixels: usize) -> usize {
    256usize.div_ceil(pixels).max(1)
}

/// One image's im2col: col (out_h*out_w, k_h*k_w*in_c), zeros where the window hangs off the edge.
fn im2col(x: &[f32], col: &mut [f32], s: &ConvShape) {
    let patch = s.patch_len();
    for oy in 0..s.out_h {
        for ox in 0..s.out_w {
            let row = &mut col[(oy * s.out_w + ox) * patch..][..patch];
            for ky in 0..s.k_h {
                let iy = (oy * s.stride_h + ky * s.dilation_h) as isize - s.pad_top as isize;
                for kx in 0..s.k_w {
                    let ix = (ox * s.stride_w + kx * s.dilation_w) as isize - s.pad_left as isize;
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

/// The adjoint of im2col for one image: dx = each column row scattered back to its window.
fn col2im(col: &[f32], dx: &mut [f32], s: &ConvShape) {
    dx.fill(0.0);
    let patch = s.patch_len();
    for oy in 0..s.out_h {
        for ox in 0..s.out_w {
            let row = &col[(oy * s.out_w + ox) * patch..][..patch];
            for ky in 0..s.k_h {
                let iy = (oy * s.stride_h + ky * s.dilation_h) as isize - s.pad_top as isize;
                if iy < 0 || iy >= s.in_h as isize {
                    continue;
                }
                for kx in 0..s.k_w {
                    let ix = (ox * s.stride_w + kx * s.dilation_w) as isize - s.pad_left as isize;
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

/// x (n, in_h, in_w, in_c) -> y (n, out_h, out_w, out_c). Per block of images: im2col, one
/// GEMM with the kernel, bias + ReLU; blocks run in parallel.
pub fn forward(x: &[f32], w: &[f32], b: &[f32], y: &mut [f32], s: &ConvShape, n: usize, relu: bool) {
    let (patch, pixels, block) = (s.patch_len(), s.out_h * s.out_w, parallel_block(n, images_per_block(s.out_h * s.out_w)));
    y[..n * s.out_len()].par_chunks_mut(block * s.out_len()).zip(x[..n * s.in_len()].par_chunks(block * s.in_len())).for_each(|(yb, xb)| {
        let rows = yb.len() / s.out_c;
        with_scratch(rows * patch, 0, |col, _| {
            for (c, xi) in col.chunks_mut(pixels * patch).zip(xb.chunks(s.in_len())) {
                im2col(xi, c, s);
            }
            gemm(Threads::Serial, (rows, patch, s.out_c), Mat::rows(col, patch), Mat::rows(w, s.out_c), yb, 0.0);
        });
        add_bias_activate(yb, b, relu);
    });
}

/// dy (n, out_h, out_w, out_c) -> dx (n, in_h, in_w, in_c). Per block: dcol = dy * w^T, then
/// col2im image by image.
pub fn backward_input(dy: &[f32], w: &[f32], dx: &mut [f32], s: &ConvShape, n: usize) {
    let (patch, pixels, block) = (s.patch_len(), s.out_h * s.out_w, parallel_block(n, images_per_block(s.out_h * s.out_w)));
    dx[..n * s.in_len()].par_chunks_mut(block * s.in_len()).zip(dy[..n * s.out_len()].par_chunks(block * s.out_len())).for_each(|(dxb, dyb)| {
        let rows = dyb.len() / s.out_c;
        with_scratch(rows * patch, 0, |col, _| {
            gemm(Threads::Serial, (rows, s.out_c, patch), Mat::rows(dyb, s.out_c), Mat::transposed(w, s.out_c), col, 0.0);
            for (d, c) in dxb.chunks_mut(s.in_len()).zip(col.chunks(pixels * patch)) {
                col2im(c, d, s);
            }
        });
    });
}

/// pw (patch, out_c) += im2col(x)^T * dy and pb += column sums of dy over images i0..i1
/// (one of the fixed partial sums of the filter gradient).
pub fn backward_filter_range(x: &[f32], dy: &[f32], (i0, i1): (usize, usize), pw: &mut [f32], pb: &mut [f32], s: &ConvShape) {
    let (patch, pixels, block) = (s.patch_len(), s.out_h * s.out_w, images_per_block(s.out_h * s.out_w));
    let oc = s.out_c;
    for start in (i0..i1).step_by(block) {
        let rows = block.min(i1 - start) * pixels;
        let dyb = &dy[start * s.out_len()..][..rows * oc];
        with_scratch(rows * patch, 0, |col, _| {
            for (k, c) in col.chunks_mut(pixels * patch).enumerate() {
                im2col(&x[(start + k) * s.in_len()..][..s.in_len()], c, s);
            }
            // pw (patch, oc) += col^T (patch, rows) * dyb (rows, oc)
            gemm(Threads::Serial, (patch, rows, oc), Mat::transposed(col, patch), Mat::rows(dyb, oc), pw, 1.0);
        });
        add_rows(pb, dyb);
    }
}
