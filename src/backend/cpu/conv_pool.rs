//! A convolution and the MaxPooling2D right after it as one layer: each thread convolves a
//! cache-sized block of images into its own scratch and pools it from there, so the full-size
//! conv output (30x30x32 floats an image for the seed model's first layer, 29 MB at batch 256)
//! is never written to memory and read back. In training the backward rebuilds one image's
//! conv output gradient at a time from the pool's (its argmax and the pooled values as the
//! ReLU's mask) and takes the filter gradient from it while it is in cache. The results are
//! those of the layers one by one, bit for bit: the same kernels, on the same images.

use super::conv::{self, ConvAlgo};
use super::direct;
use super::gemm::{parallel_block, reduce_in_fixed_splits, with_scratch};
use super::pool::{maxpool_image, maxpool_values_image, unpool_image};
use crate::backend::{ConvShape, PoolShape};
use rayon::prelude::*;
use std::cell::RefCell;

/// Conv outputs per block at most (floats): half of a 512 KiB L2, so the block is still in
/// the core's cache when the pool reads it. Winograd's own blocks are smaller.
const BLOCK_FLOATS: usize = 64 * 1024;

thread_local! {
    /// The block's conv outputs (or one image's output gradient): a buffer of its own, since
    /// the conv kernels use `gemm::with_scratch`'s.
    static CONV_OUT: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Whether `forward_infer` can run `s`: where its conv algorithm runs on one thread a block.
pub fn can_run(s: &ConvShape) -> bool {
    conv::block_images(conv::forward_algo(s), s).is_some()
}

/// Whether `forward_train` and `backward_filter` can run `s`: where the direct kernels run it,
/// whose filter gradient is summed image by image (`direct::backward_filter_image`).
pub fn can_train(s: &ConvShape) -> bool {
    conv::forward_algo(s) == ConvAlgo::Direct && conv::backward_filter_algo(s) == ConvAlgo::Direct
}

/// y (n, pool out) = max-pool by `p` of (conv(x) + b, then ReLU if `relu`); `kernel` is
/// scratch for a transformed kernel.
#[allow(clippy::too_many_arguments)]
pub fn forward_infer(x: &[f32], w: &[f32], b: &[f32], y: &mut [f32], s: &ConvShape, p: &PoolShape, n: usize, relu: bool, kernel: &mut Vec<f32>) {
    // The algorithm is the whole conv's, so each output the pool reads has the bits it has
    // there; only those outputs are computed.
    let algo = conv::forward_algo(s);
    let (s, p) = &pooled_region(s, p);
    let block = block_len(algo, s, n);
    let k = conv::forward_kernel(algo, w, s, kernel);
    y[..n * p.out_len()].par_chunks_mut(block * p.out_len()).zip(x[..n * s.in_len()].par_chunks(block * s.in_len())).for_each(|(yb, xb)| {
        conv_block(algo, xb, k, b, s, relu, |i, out| maxpool_values_image(out, &mut yb[i * p.out_len()..][..p.out_len()], p));
    });
}

/// The conv cut to the output rows and columns some window of the pool reads, and the pool
/// reading that: a "valid" 2x2 pool of a 13x13 map never reads its last row and column, and
/// F(4x4, 3x3) covers the 12x12 left with 9 tiles instead of 16.
fn pooled_region(s: &ConvShape, p: &PoolShape) -> (ConvShape, PoolShape) {
    let read = |out: usize, stride: usize, size: usize, pad: usize, len: usize| (out.saturating_sub(1) * stride + size).saturating_sub(pad).min(len);
    let (h, w) = (read(p.out_h, p.stride_h, p.size_h, p.pad_top, s.out_h), read(p.out_w, p.stride_w, p.size_w, p.pad_left, s.out_w));
    (ConvShape { out_h: h, out_w: w, ..*s }, PoolShape { in_h: h, in_w: w, ..*p })
}

/// `forward_infer` with the pool's argmax too (indexing the conv's output of the whole batch,
/// as `pool::maxpool_forward`'s does), for training.
#[allow(clippy::too_many_arguments)]
pub fn forward_train(
    x: &[f32],
    w: &[f32],
    b: &[f32],
    y: &mut [f32],
    argmax: &mut [u32],
    s: &ConvShape,
    p: &PoolShape,
    n: usize,
    relu: bool,
    kernel: &mut Vec<f32>,
) {
    let algo = conv::forward_algo(s);
    let block = block_len(algo, s, n);
    let k = conv::forward_kernel(algo, w, s, kernel);
    let pooled = block * p.out_len();
    let blocks = y[..n * p.out_len()].par_chunks_mut(pooled).zip(argmax[..n * p.out_len()].par_chunks_mut(pooled));
    blocks.zip(x[..n * s.in_len()].par_chunks(block * s.in_len())).enumerate().for_each(|(bi, ((yb, ab), xb))| {
        conv_block(algo, xb, k, b, s, relu, |i, out| {
            let at = i * p.out_len()..(i + 1) * p.out_len();
            maxpool_image(out, &mut yb[at.clone()], &mut ab[at], (bi * block + i) * s.out_len(), p);
        });
    });
}

/// dw and db (summed over the batch as `conv::backward_filter` sums them) of the conv's output
/// gradient that the pool's backward makes from dy, masked where `pooled` (the pool's output,
/// given when the conv applied ReLU) is <= 0, as the ReLU's backward masks it.
#[allow(clippy::too_many_arguments)]
pub fn backward_filter(
    x: &[f32],
    dy: &[f32],
    pooled: Option<&[f32]>,
    argmax: &[u32],
    dw: &mut [f32],
    db: &mut [f32],
    s: &ConvShape,
    p: &PoolShape,
    n: usize,
    partials: &mut Vec<f32>,
) {
    assert!(can_train(s), "the fused backward runs the direct kernels only");
    reduce_in_fixed_splits(n, (s.kernel_len(), s.out_c), dw, db, partials, |(i0, i1), pw, pb| {
        with_scratch(direct::padded_len(s), 0, |xp, _| {
            with_conv_out(s.out_len(), |dconv| {
                for i in i0..i1 {
                    let at = i * p.out_len()..(i + 1) * p.out_len();
                    let pooled = pooled.map(|y| &y[at.clone()]);
                    unpool_image(&dy[at.clone()], &argmax[at], i * s.out_len(), dconv, |o, _| pooled.is_some_and(|y| y[o] <= 0.0));
                    direct::backward_filter_image(&x[i * s.in_len()..][..s.in_len()], dconv, pw, pb, s, xp);
                }
            })
        })
    });
}

/// Images per block: as many as `algo` runs on one thread at a time and the cache holds.
fn block_len(algo: ConvAlgo, s: &ConvShape, n: usize) -> usize {
    let most = conv::block_images(algo, s).expect("conv_pool::can_run checked the algorithm").min((BLOCK_FLOATS / s.out_len()).max(1));
    parallel_block(n, most)
}

/// Convolves one block of whole images into this thread's buffer, then hands each image's
/// output to `pool` (with its index in the block).
#[allow(clippy::too_many_arguments)]
fn conv_block(algo: ConvAlgo, xb: &[f32], k: &[f32], b: &[f32], s: &ConvShape, relu: bool, mut pool: impl FnMut(usize, &[f32])) {
    let images = xb.len() / s.in_len();
    with_conv_out(images * s.out_len(), |out| {
        conv::forward_block(algo, xb, k, b, out, s, relu);
        for (i, oi) in out.chunks(s.out_len()).enumerate() {
            pool(i, oi);
        }
    });
}

/// Runs `f` on this thread's CONV_OUT, at least `len` floats (contents unspecified).
fn with_conv_out<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    CONV_OUT.with(|cell| {
        let mut out = cell.borrow_mut();
        if out.len() < len {
            out.resize(len, 0.0);
        }
        f(&mut out[..len])
    })
}
