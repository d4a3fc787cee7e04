//! Which algorithm runs each convolution pass on the CPU, chosen in one place per pass by a
//! rule on the shape (the bench's per-layer rows justify each rule), and the calls into it.

use super::gemm::{reduce_in_fixed_splits, with_scratch};
use super::{direct, im2col, winograd, winograd4, winograd_filter};
use crate::backend::ConvShape;
use rayon::prelude::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvAlgo {
    /// im2col of a cache-sized block of images, then one GEMM (any shape).
    Im2colGemm,
    /// Register-blocked direct loops (few taps per output: the first layer).
    Direct,
    /// Winograd F(2x2, 3x3) (3x3 stride-1 kernels between layers of 16+ channels).
    Winograd,
    /// Winograd F(4x4, 3x3): fewer multiplies than F(2x2) where whole 4x4 tiles fit the map
    /// (forward and input gradient; the filter gradient stays with F(2x2)).
    Winograd4x4,
}

impl ConvAlgo {
    pub const ALL: [ConvAlgo; 4] = [ConvAlgo::Im2colGemm, ConvAlgo::Direct, ConvAlgo::Winograd, ConvAlgo::Winograd4x4];

    /// Whether this algorithm can run `s` at all (fast or not): the tests run every one that can.
    pub fn can_run(self, s: &ConvShape) -> bool {
        match self {
            ConvAlgo::Im2colGemm => true,
            ConvAlgo::Direct => direct::can_run(s),
            ConvAlgo::Winograd | ConvAlgo::Winograd4x4 => winograd::can_run(s),
        }
    }

    /// Whether this algorithm can run the input gradient of `s` (Direct has none).
    pub fn can_run_input_gradient(self, s: &ConvShape) -> bool {
        self != ConvAlgo::Direct && self.can_run(s)
    }

    /// Whether this algorithm can run the filter gradient of `s` (Winograd's is F(2x2)'s).
    pub fn can_run_filter_gradient(self, s: &ConvShape) -> bool {
        self != ConvAlgo::Winograd4x4 && self.can_run(s)
    }
}

pub fn forward_algo(s: &ConvShape) -> ConvAlgo {
    if direct::suits(s) {
        ConvAlgo::Direct
    } else if winograd4::suits(s) {
        ConvAlgo::Winograd4x4
    } else if winograd::suits(s) {
        ConvAlgo::Winograd
    } else {
        ConvAlgo::Im2colGemm
    }
}

pub fn backward_input_algo(s: &ConvShape) -> ConvAlgo {
    if winograd4::suits_input_gradient(s) {
        ConvAlgo::Winograd4x4
    } else if winograd::suits_input_gradient(s) {
        ConvAlgo::Winograd
    } else {
        ConvAlgo::Im2colGemm
    }
}

/// The filter gradient follows the forward pass's rule: both kernels win on the same shapes
/// (its Winograd is F(2x2)'s, which runs wherever F(4x4) does).
pub fn backward_filter_algo(s: &ConvShape) -> ConvAlgo {
    match forward_algo(s) {
        ConvAlgo::Winograd4x4 => ConvAlgo::Winograd,
        algo => algo,
    }
}

/// y (n, out_h, out_w, out_c) = conv(x) + b, then ReLU; `kernel` is scratch for a
/// transformed kernel.
#[allow(clippy::too_many_arguments)]
pub fn forward(x: &[f32], w: &[f32], b: &[f32], y: &mut [f32], s: &ConvShape, n: usize, relu: bool, kernel: &mut Vec<f32>) {
    forward_with(forward_algo(s), x, w, b, y, s, n, relu, kernel)
}

/// `forward` by the given algorithm (it must `can_run` s): for tests and the bench.
#[allow(clippy::too_many_arguments)]
pub fn forward_with(algo: ConvAlgo, x: &[f32], w: &[f32], b: &[f32], y: &mut [f32], s: &ConvShape, n: usize, relu: bool, kernel: &mut Vec<f32>) {
    assert!(algo.can_run(s), "{algo:?} cannot run {s:?}");
    let y = &mut y[..n * s.out_len()];
    let k = forward_kernel(algo, w, s, kernel);
    match algo {
        ConvAlgo::Direct => {
            y.par_chunks_mut(s.out_len()).zip(x[..n * s.in_len()].par_chunks(s.in_len())).for_each(|(yi, xi)| forward_block(algo, xi, k, b, yi, s, relu))
        }
        ConvAlgo::Winograd => winograd::forward(x, k, Some(b), y, s, n, relu),
        ConvAlgo::Winograd4x4 => winograd4::forward(x, k, Some(b), y, s, n, relu),
        ConvAlgo::Im2colGemm => im2col::forward(x, w, b, y, s, n, relu),
    }
}

/// The kernel `algo`'s forward reads: Winograd's transform of w, made in `kernel`, or w.
pub fn forward_kernel<'a>(algo: ConvAlgo, w: &'a [f32], s: &ConvShape, kernel: &'a mut Vec<f32>) -> &'a [f32] {
    match algo {
        ConvAlgo::Winograd => {
            kernel.resize(winograd::kernel_len(s), 0.0);
            winograd::transform_kernel(w, s, false, kernel);
            kernel
        }
        ConvAlgo::Winograd4x4 => {
            kernel.resize(winograd4::kernel_len(s), 0.0);
            winograd4::transform_kernel(w, s, false, kernel);
            kernel
        }
        ConvAlgo::Direct | ConvAlgo::Im2colGemm => w,
    }
}

/// Images per block where `algo`'s forward can run block by block, each block on one thread
/// (`forward_block`): Winograd's cache-sized blocks, one image for the direct kernels. None for
/// the im2col GEMM, which splits its own work across threads.
pub fn block_images(algo: ConvAlgo, s: &ConvShape) -> Option<usize> {
    match algo {
        ConvAlgo::Direct => Some(1),
        ConvAlgo::Winograd => Some(winograd::block_images::<winograd::F2x2>(s)),
        ConvAlgo::Winograd4x4 => Some(winograd::block_images::<winograd4::F4x4>(s)),
        ConvAlgo::Im2colGemm => None,
    }
}

/// `forward_with` of the whole images xb into yb on this thread (an algorithm with
/// `block_images`); `k` from `forward_kernel`. Each image's outputs are those `forward_with`
/// gives it: no algorithm's result depends on the blocking.
#[allow(clippy::too_many_arguments)]
pub fn forward_block(algo: ConvAlgo, xb: &[f32], k: &[f32], b: &[f32], yb: &mut [f32], s: &ConvShape, relu: bool) {
    match algo {
        ConvAlgo::Direct => {
            for (yi, xi) in yb.chunks_mut(s.out_len()).zip(xb.chunks(s.in_len())) {
                with_scratch(direct::padded_len(s), 0, |xp, _| direct::forward_image(xi, k, b, yi, s, relu, xp));
            }
        }
        ConvAlgo::Winograd => winograd::forward_block::<winograd::F2x2>(xb, k, Some(b), yb, s, relu),
        ConvAlgo::Winograd4x4 => winograd::forward_block::<winograd4::F4x4>(xb, k, Some(b), yb, s, relu),
        ConvAlgo::Im2colGemm => unreachable!("the im2col GEMM runs no single-thread blocks"),
    }
}

/// dx (n, in_h, in_w, in_c) from dy (n, out_h, out_w, out_c).
pub fn backward_input(dy: &[f32], w: &[f32], dx: &mut [f32], s: &ConvShape, n: usize, kernel: &mut Vec<f32>) {
    backward_input_with(backward_input_algo(s), dy, w, dx, s, n, kernel)
}

/// `backward_input` by the given algorithm (either Winograd or Im2colGemm).
pub fn backward_input_with(algo: ConvAlgo, dy: &[f32], w: &[f32], dx: &mut [f32], s: &ConvShape, n: usize, kernel: &mut Vec<f32>) {
    assert!(algo.can_run_input_gradient(s), "{algo:?} cannot run the input gradient of {s:?}");
    match algo {
        ConvAlgo::Winograd => {
            let t = winograd::input_gradient_shape(s);
            kernel.resize(winograd::kernel_len(&t), 0.0);
            winograd::transform_kernel(w, &t, true, kernel);
            winograd::forward(dy, kernel, None, dx, &t, n, false);
        }
        ConvAlgo::Winograd4x4 => {
            let t = winograd::input_gradient_shape(s);
            kernel.resize(winograd4::kernel_len(&t), 0.0);
            winograd4::transform_kernel(w, &t, true, kernel);
            winograd4::forward(dy, kernel, None, dx, &t, n, false);
        }
        _ => im2col::backward_input(dy, w, dx, s, n),
    }
}

/// dw (k_h, k_w, in_c, out_c) and db (out_c) summed over the batch in REDUCTION_SPLITS fixed
/// ranges added in order, so the result does not depend on the thread count; `kernel` is
/// scratch for a transformed gradient.
#[allow(clippy::too_many_arguments)]
pub fn backward_filter(x: &[f32], dy: &[f32], dw: &mut [f32], db: &mut [f32], s: &ConvShape, n: usize, partials: &mut Vec<f32>, kernel: &mut Vec<f32>) {
    backward_filter_with(backward_filter_algo(s), x, dy, dw, db, s, n, partials, kernel)
}

/// `backward_filter` by the given algorithm.
#[allow(clippy::too_many_arguments)]
pub fn backward_filter_with(
    algo: ConvAlgo,
    x: &[f32],
    dy: &[f32],
    dw: &mut [f32],
    db: &mut [f32],
    s: &ConvShape,
    n: usize,
    partials: &mut Vec<f32>,
    kernel: &mut Vec<f32>,
) {
    assert!(algo.can_run_filter_gradient(s), "{algo:?} cannot run the filter gradient of {s:?}");
    if algo == ConvAlgo::Winograd {
        kernel.resize(winograd_filter::transformed_len(s), 0.0);
        return winograd_filter::backward_filter(x, dy, dw, db, s, n, kernel, partials);
    }
    reduce_in_fixed_splits(n, (s.kernel_len(), s.out_c), dw, db, partials, |(i0, i1), pw, pb| match algo {
        ConvAlgo::Direct => with_scratch(direct::padded_len(s), 0, |xp, _| {
            for i in i0..i1 {
                direct::backward_filter_image(&x[i * s.in_len()..][..s.in_len()], &dy[i * s.out_len()..][..s.out_len()], pw, pb, s, xp);
            }
        }),
        _ => im2col::backward_filter_range(x, dy, (i0, i1), pw, pb, s),
    });
}
