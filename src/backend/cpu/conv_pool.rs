//! A convolution and the MaxPooling2D right after it as one pass, for inference (evaluate,
//! predict, the validation pass): each thread convolves a cache-sized block of images into its
//! own scratch and pools it from there, so the full-size conv output (30x30x32 floats an image
//! for the seed model's first layer, 29 MB at batch 256) is never written to memory and read
//! back. The pooled values are those of `conv::forward` then `pool::maxpool_forward_values`,
//! bit for bit: the same kernels, on the same blocks of whole images.

use super::conv::{self, ConvAlgo};
use super::gemm::parallel_block;
use super::pool::maxpool_values_image;
use crate::backend::{ConvShape, PoolShape};
use rayon::prelude::*;
use std::cell::RefCell;

/// Conv outputs per block at most (floats): half of a 512 KiB L2, so the block is still in
/// the core's cache when the pool reads it. Winograd's own blocks are smaller.
const BLOCK_FLOATS: usize = 64 * 1024;

thread_local! {
    /// The block's conv outputs: a buffer of its own, since the conv kernels use
    /// `gemm::with_scratch`'s.
    static CONV_OUT: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Whether `forward_infer` can run `s`: where its conv algorithm runs on one thread a block.
pub fn can_run(s: &ConvShape) -> bool {
    conv::block_images(conv::forward_algo(s), s).is_some()
}

/// y (n, pool out) = max-pool by `p` of (conv(x) + b, then ReLU if `relu`); `kernel` is
/// scratch for a transformed kernel.
#[allow(clippy::too_many_arguments)]
pub fn forward_infer(x: &[f32], w: &[f32], b: &[f32], y: &mut [f32], s: &ConvShape, p: &PoolShape, n: usize, relu: bool, kernel: &mut Vec<f32>) {
    let algo = conv::forward_algo(s);
    let most = conv::block_images(algo, s).expect("conv_pool::can_run checked the algorithm").min((BLOCK_FLOATS / s.out_len()).max(1));
    let block = parallel_block(n, most);
    let k = conv::forward_kernel(algo, w, s, kernel);
    y[..n * p.out_len()].par_chunks_mut(block * p.out_len()).zip(x[..n * s.in_len()].par_chunks(block * s.in_len())).for_each(|(yb, xb)| {
        pool_block(algo, xb, k, b, yb, s, p, relu);
    });
}

/// One block of whole images: conv into this thread's buffer, then each image pooled from it.
#[allow(clippy::too_many_arguments)]
fn pool_block(algo: ConvAlgo, xb: &[f32], k: &[f32], b: &[f32], yb: &mut [f32], s: &ConvShape, p: &PoolShape, relu: bool) {
    let images = xb.len() / s.in_len();
    CONV_OUT.with(|cell| {
        let mut out = cell.borrow_mut();
        if out.len() < images * s.out_len() {
            out.resize(images * s.out_len(), 0.0);
        }
        let out = &mut out[..images * s.out_len()];
        conv::forward_block(algo, xb, k, b, out, s, relu);
        for (yi, oi) in yb.chunks_mut(p.out_len()).zip(out.chunks(s.out_len())) {
            maxpool_values_image(oi, yi, p);
        }
    });
}
