//! Winograd F(2x2, 3x3) for 3x3 stride-1 convolutions with enough channels (Lavin & Gray 2015,
//! "Fast Algorithms for Convolutional Neural Networks"). Each 2x2 block of outputs ("tile")
//! reads a 4x4 input patch d; per (input, output) channel pair
//!
//!   Y = A^T [ (G g G^T) .* (B^T d B) ] A,
//!   B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1],  G = [1 0 0; .5 .5 .5; .5 -.5 .5; 0 0 1],
//!   A^T = [1 1 1 0; 0 1 -1 -1],
//!
//! so the sum over input channels becomes 16 independent GEMMs (tiles x in_c) * (in_c x
//! out_c): 16 multiplies per tile and channel pair instead of 36, 2.25x fewer. The transforms
//! only add, subtract and halve (exact in binary), so the error stays that of a direct sum with
//! a growth factor of at most |B|^2 |G|^2 |A|^2 = 4 * 2.25 * 9 = 81 on the summed magnitudes.
//! tests/cpu_oracle.rs checks it against plain loops with a tolerance derived from that.
//!
//! The input gradient of a 3x3 stride-1 conv is itself such a conv (of dy, with the kernel
//! turned 180 degrees and its channels swapped), so it runs through the same code.

use super::blocked::Gemm;
use super::gemm::{parallel_block, with_scratch};
use super::simd::{array, dispatch, Kernel, Lanes, LANES};
use crate::backend::ConvShape;
use rayon::prelude::*;

/// The 16 positions of a 4x4 transformed tile.
pub(super) const XI: usize = 16;

/// Whether F(2x2, 3x3) should run the forward pass of `s`: it can, there are enough channels
/// on both sides for its 16 products to run near the GEMM rate, and it multiplies under 4/5 as
/// much as the direct sum (16 per 2x2 tile, tiles hanging off odd edges included, against 9 per
/// output; the transforms cost the rest). The input gradient asks the same of its own conv
/// (`input_gradient_shape`), against im2col's 9 per output of the forward pass (its col2im
/// scatters instead of multiplying): conv2d_1's 15x15 gradient qualifies, conv2d_2's 6x6 from
/// 4x4 does not (144 against 144).
pub fn suits(s: &ConvShape) -> bool {
    pays(s, multiplies(s))
}

/// Whether F(2x2, 3x3) should run the input gradient of `s` (see `suits`).
pub fn suits_input_gradient(s: &ConvShape) -> bool {
    pays(s, multiplies(&input_gradient_shape(s)))
}

/// The rule of `suits` for any tile size: a Winograd pass of the conv `s` (or of its input
/// gradient) that multiplies `multiplies` times per channel pair and image runs when it can,
/// both sides have 16+ channels, and that is under 4/5 of the direct sum's 9 per output of s.
pub(super) fn pays(s: &ConvShape, multiplies: usize) -> bool {
    can_run(s) && s.in_c >= 16 && s.out_c >= 16 && 5 * multiplies < 4 * 9 * s.out_h * s.out_w
}

/// Multiplies per channel pair and image: 16 per 2x2 tile.
pub(super) fn multiplies(s: &ConvShape) -> usize {
    let (th, tw) = tiles(s);
    16 * th * tw
}

/// F(2x2, 3x3) computes 3x3 stride-1 undilated convs (pads above 2 would make the input
/// gradient's pad negative), here on whole 8-lane vectors of channels.
pub fn can_run(s: &ConvShape) -> bool {
    s.undilated()
        && s.k_h == 3
        && s.k_w == 3
        && s.stride_h == 1
        && s.stride_w == 1
        && s.pad_top <= 2
        && s.pad_left <= 2
        && s.in_c.is_multiple_of(LANES)
        && s.out_c.is_multiple_of(LANES)
}

/// The conv whose forward pass is `s`'s input gradient: dy (out_h, out_w, out_c) in,
/// dx (in_h, in_w, in_c) out, the kernel turned 180 degrees with in/out channels swapped.
pub fn input_gradient_shape(s: &ConvShape) -> ConvShape {
    ConvShape {
        in_h: s.out_h,
        in_w: s.out_w,
        in_c: s.out_c,
        out_h: s.in_h,
        out_w: s.in_w,
        out_c: s.in_c,
        k_h: 3,
        k_w: 3,
        stride_h: 1,
        stride_w: 1,
        pad_top: 2 - s.pad_top,
        pad_left: 2 - s.pad_left,
        dilation_h: 1,
        dilation_w: 1,
    }
}

/// Floats of the transformed kernel, followed by 9 x out_c of working space for making it.
pub fn kernel_len(s: &ConvShape) -> usize {
    XI * s.in_c * s.out_c + 9 * s.out_c
}

/// u (16, in_c, out_c) = G g G^T for each channel pair of w (3, 3, in_c, out_c). With
/// `for_input_gradient`, w is the kernel of the conv `input_gradient_shape` came from, and u
/// is that of the turned, channel-swapped kernel. `u` holds `kernel_len(s)` floats.
pub fn transform_kernel(w: &[f32], s: &ConvShape, for_input_gradient: bool, u: &mut [f32]) {
    let (ci, co) = (s.in_c, s.out_c);
    // Row (ky, kx, i) of the kernel, out_c values: for the input gradient, gathered from the
    // turned tap with the channels swapped.
    let (u, taps) = u.split_at_mut(XI * ci * co);
    for i in 0..ci {
        gather_taps(w, s, for_input_gradient, i, taps);
        let g = |ky: usize, kx: usize| &taps[(ky * 3 + kx) * co..][..co];
        let mut put = |r: usize, c: usize, f: &dyn Fn(usize) -> f32| {
            for (o, v) in u[((r * 4 + c) * ci + i) * co..][..co].iter_mut().enumerate() {
                *v = f(o);
            }
        };
        // (G g G^T)[r][c] with (G g)[r] = g0, (g0+g1+g2)/2, (g0-g1+g2)/2, g2 over rows ky.
        let gg = |r: usize, kx: usize, o: usize| -> f32 {
            let (g0, g1, g2) = (g(0, kx)[o], g(1, kx)[o], g(2, kx)[o]);
            match r {
                0 => g0,
                1 => 0.5 * (g0 + g1 + g2),
                2 => 0.5 * (g0 - g1 + g2),
                _ => g2,
            }
        };
        for r in 0..4 {
            put(r, 0, &|o| gg(r, 0, o));
            put(r, 1, &|o| 0.5 * (gg(r, 0, o) + gg(r, 1, o) + gg(r, 2, o)));
            put(r, 2, &|o| 0.5 * (gg(r, 0, o) - gg(r, 1, o) + gg(r, 2, o)));
            put(r, 3, &|o| gg(r, 2, o));
        }
    }
}

/// taps (9 rows of out_c) = row (ky, kx, i) of the kernel w (3, 3, in_c, out_c); with
/// `for_input_gradient`, gathered from the turned tap with the channels swapped (w is then the
/// kernel of the conv `input_gradient_shape` came from).
pub(super) fn gather_taps(w: &[f32], s: &ConvShape, for_input_gradient: bool, i: usize, taps: &mut [f32]) {
    let (ci, co) = (s.in_c, s.out_c);
    for (tap, row) in taps[..9 * co].chunks_mut(co).enumerate() {
        if for_input_gradient {
            // w is (3, 3, co, ci) seen from the original conv: g'(ky, kx)[i][o] = g(2-ky, 2-kx)[o][i].
            let turned = 8 - tap;
            for (o, v) in row.iter_mut().enumerate() {
                *v = w[(turned * co + o) * ci + i];
            }
        } else {
            row.copy_from_slice(&w[(tap * ci + i) * co..][..co]);
        }
    }
}

/// Tiles of 2x2 outputs per image: (rows, columns).
pub(super) fn tiles(s: &ConvShape) -> (usize, usize) {
    (s.out_h.div_ceil(2), s.out_w.div_ceil(2))
}

/// A Winograd tile size: its transforms, and how its positions lie in memory. The forward
/// pass (`forward_tiled`) is the same for every size: transform, one GEMM per position,
/// transform back.
pub(super) trait Tiling {
    /// Positions of a transformed tile (16 for F(2x2, 3x3)).
    const XI: usize;
    /// Tiles per image: (rows, columns).
    fn tiles(s: &ConvShape) -> (usize, usize);
    /// Floats between two positions' rows of `t` tiles of `channels`.
    fn position_stride(t: usize, channels: usize) -> usize;
    /// v[p][tile][c], the image's tiles numbered from `first`.
    fn transform_input<L: Lanes>(x: &[f32], v: &mut [f32], zeros: &[f32], s: &ConvShape, first: usize, t: usize);
    /// The image's outputs from m[p][tile][o], plus bias, then ReLU.
    #[allow(clippy::too_many_arguments)]
    fn transform_output<L: Lanes>(m: &[f32], y: &mut [f32], bias: &[f32], s: &ConvShape, first: usize, t: usize, relu: bool);
}

/// F(2x2, 3x3) as a `Tiling`.
pub(super) struct F2x2;

impl Tiling for F2x2 {
    const XI: usize = XI;
    fn tiles(s: &ConvShape) -> (usize, usize) {
        tiles(s)
    }
    fn position_stride(t: usize, channels: usize) -> usize {
        t * channels
    }
    #[inline(always)]
    fn transform_input<L: Lanes>(x: &[f32], v: &mut [f32], zeros: &[f32], s: &ConvShape, first: usize, t: usize) {
        transform_input::<L>(x, v, zeros, s, first, t)
    }
    #[inline(always)]
    fn transform_output<L: Lanes>(m: &[f32], y: &mut [f32], bias: &[f32], s: &ConvShape, first: usize, t: usize, relu: bool) {
        transform_output::<L>(m, y, bias, s, first, t, relu)
    }
}

/// Bytes a block's transformed input and output may take: a 512 KiB L2 (the AMD EPYC host's).
/// Blocks sized for 1 MiB spilled there: seed-model training steps at batch 32 were about 4%
/// slower (median of 18 alternating pairs). The results do not depend on the block size.
const BLOCK_BYTES: usize = 512 * 1024;

/// Images per parallel block: enough tiles for the GEMMs, few enough that the block's
/// transformed input and output (XI x tiles x (in_c + out_c) floats) stay in the L2.
pub(super) fn block_images<T: Tiling>(s: &ConvShape) -> usize {
    let (th, tw) = T::tiles(s);
    (BLOCK_BYTES / (T::XI * 4 * (s.in_c + s.out_c)) / (th * tw)).max(1)
}

/// `block_images` of F(2x2, 3x3) (the filter gradient's blocks too).
pub(super) fn images_per_block(s: &ConvShape) -> usize {
    block_images::<F2x2>(s)
}

/// y (n, out_h, out_w, out_c) = conv(x (n, in_h, in_w, in_c)) + bias, then ReLU by F(2x2, 3x3);
/// u from `transform_kernel`.
#[allow(clippy::too_many_arguments)]
pub fn forward(x: &[f32], u: &[f32], bias: Option<&[f32]>, y: &mut [f32], s: &ConvShape, n: usize, relu: bool) {
    forward_tiled::<F2x2>(x, u, bias, y, s, n, relu)
}

/// `forward` by the tile size T; u from T's kernel transform. Blocks of images run in parallel.
#[allow(clippy::too_many_arguments)]
pub(super) fn forward_tiled<T: Tiling>(x: &[f32], u: &[f32], bias: Option<&[f32]>, y: &mut [f32], s: &ConvShape, n: usize, relu: bool) {
    let block = parallel_block(n, block_images::<T>(s));
    y[..n * s.out_len()]
        .par_chunks_mut(block * s.out_len())
        .zip(x[..n * s.in_len()].par_chunks(block * s.in_len()))
        .for_each(|(yb, xb)| forward_block::<T>(xb, u, bias, yb, s, relu));
}

/// `forward_tiled` of one block of images (xb, yb: whole images), on this thread.
pub(super) fn forward_block<T: Tiling>(xb: &[f32], u: &[f32], bias: Option<&[f32]>, yb: &mut [f32], s: &ConvShape, relu: bool) {
    let (th, tw) = T::tiles(s);
    let (ci, co) = (s.in_c, s.out_c);
    let t = yb.len() / s.out_len() * th * tw;
    // v: the transformed input; m: the products; then a row of zeros (the padding, and the
    // bias when there is none).
    let zeros_len = ci.max(co);
    with_scratch(T::XI * T::position_stride(t, ci) + zeros_len, T::XI * T::position_stride(t, co), |v, m| {
        let (v, zeros) = v.split_at_mut(T::XI * T::position_stride(t, ci));
        zeros.fill(0.0);
        dispatch(Block::<T> { x: xb, y: yb, u, v, m, zeros, bias: bias.unwrap_or(&zeros[..co]), s, t, relu, tiling: std::marker::PhantomData });
    });
}

/// One parallel block of images: transform, XI products, transform back.
struct Block<'a, T> {
    x: &'a [f32],
    y: &'a mut [f32],
    u: &'a [f32],
    v: &'a mut [f32],
    m: &'a mut [f32],
    zeros: &'a [f32],
    bias: &'a [f32],
    s: &'a ConvShape,
    /// Tiles in the block.
    t: usize,
    relu: bool,
    tiling: std::marker::PhantomData<T>,
}

impl<T: Tiling> Kernel for Block<'_, T> {
    type Output = ();
    fn lanes_fit(&self, lanes: usize) -> bool {
        self.s.in_c.is_multiple_of(lanes) && self.s.out_c.is_multiple_of(lanes)
    }
    #[inline(always)]
    fn run<L: Lanes>(self) {
        let (s, t) = (self.s, self.t);
        let (th, tw) = T::tiles(s);
        let (ci, co) = (s.in_c, s.out_c);
        for (img, xi) in self.x.chunks(s.in_len()).enumerate() {
            T::transform_input::<L>(xi, self.v, self.zeros, s, img * th * tw, t);
        }
        let (sv, sm) = (T::position_stride(t, ci), T::position_stride(t, co));
        for p in 0..T::XI {
            let a = &self.v[p * sv..][..t * ci];
            let c = &mut self.m[p * sm..][..t * co];
            Gemm { m: t, k: ci, n: co, a, a_row: ci, a_col: 1, b: &self.u[p * ci * co..][..ci * co], c, accumulate: false }.run::<L>();
        }
        for (img, yi) in self.y.chunks_mut(s.out_len()).enumerate() {
            T::transform_output::<L>(self.m, yi, self.bias, s, img * th * tw, t, self.relu);
        }
        for (xi, yi) in self.x.chunks(s.in_len()).zip(self.y.chunks_mut(s.out_len())) {
            exact_on_zero_patches(xi, yi, self.bias, s, self.relu);
        }
    }
}

/// Outputs whose whole 3x3 input patch is zero (padding included) get exactly the bias (then
/// ReLU), as a plain sum gives them. The transforms mix a tile's pixels, so such an output
/// came back as rounding residue (about 1e-9) of its tile's other pixels, which ReLU and
/// max-pool then took for signal: zero backgrounds, ReLU maps and masked gradients are full of
/// these patches, and with zero biases (the first step) the CPU's gradients differed from
/// TensorFlow's and the GPU's by up to a third. Costs a read of the patch until its first
/// non-zero value.
fn exact_on_zero_patches(x: &[f32], y: &mut [f32], bias: &[f32], s: &ConvShape, relu: bool) {
    let c = s.in_c;
    let zero_pixel = |iy: isize, ix: isize| {
        let outside = iy < 0 || ix < 0 || iy as usize >= s.in_h || ix as usize >= s.in_w;
        outside || x[(iy as usize * s.in_w + ix as usize) * c..][..c].iter().all(|&v| v == 0.0)
    };
    for oy in 0..s.out_h {
        for ox in 0..s.out_w {
            let (top, left) = (oy as isize - s.pad_top as isize, ox as isize - s.pad_left as isize);
            if (0..3).all(|ky| (0..3).all(|kx| zero_pixel(top + ky, left + kx))) {
                let out = &mut y[(oy * s.out_w + ox) * s.out_c..][..s.out_c];
                for (v, &b) in out.iter_mut().zip(bias) {
                    // As the vector ReLU: zero unless positive.
                    *v = if !relu || b > 0.0 { b } else { 0.0 };
                }
            }
        }
    }
}

/// The channel rows of the square input patch (side^2 = P pixels) whose top-left output is
/// `(oy, ox)`, row by row; zeros off the image (the padding).
#[inline(always)]
pub(super) fn patch_rows<'a, const P: usize>(x: &'a [f32], zeros: &'a [f32], s: &ConvShape, (oy, ox): (usize, usize)) -> [&'a [f32]; P] {
    let side = P.isqrt();
    let c = s.in_c;
    array(
        #[inline(always)]
        |p| {
            let iy = (oy + p / side) as isize - s.pad_top as isize;
            let ix = (ox + p % side) as isize - s.pad_left as isize;
            let inside = iy >= 0 && ix >= 0 && (iy as usize) < s.in_h && (ix as usize) < s.in_w;
            if inside {
                &x[(iy as usize * s.in_w + ix as usize) * c..][..c]
            } else {
                &zeros[..c]
            }
        },
    )
}

/// v[p][tile][c] = (B^T d B)[p] for the image's tiles, numbered from `first`; `t` tiles in v.
/// A vector of channels at a time, the 4x4 patch in registers.
#[inline(always)]
pub(super) fn transform_input<L: Lanes>(x: &[f32], v: &mut [f32], zeros: &[f32], s: &ConvShape, first: usize, t: usize) {
    let (th, tw) = tiles(s);
    let c = s.in_c;
    for ty in 0..th {
        for tx in 0..tw {
            let tile = first + ty * tw + tx;
            let rows: [&[f32]; XI] = patch_rows(x, zeros, s, (2 * ty, 2 * tx));
            for ch in (0..c).step_by(L::N) {
                let d: [L; XI] = array(
                    #[inline(always)]
                    |p| L::load(&rows[p][ch..]),
                );
                // B^T d (rows), then times B (columns).
                let mut r = [L::zero(); XI];
                for col in 0..4 {
                    let (d0, d1, d2, d3) = (d[col], d[4 + col], d[8 + col], d[12 + col]);
                    r[col] = d0.sub(d2);
                    r[4 + col] = d1.add(d2);
                    r[8 + col] = d2.sub(d1);
                    r[12 + col] = d1.sub(d3);
                }
                for row in 0..4 {
                    let (a0, a1, a2, a3) = (r[row * 4], r[row * 4 + 1], r[row * 4 + 2], r[row * 4 + 3]);
                    for (col, val) in [a0.sub(a2), a1.add(a2), a2.sub(a1), a1.sub(a3)].into_iter().enumerate() {
                        val.store(&mut v[((row * 4 + col) * t + tile) * c + ch..]);
                    }
                }
            }
        }
    }
}

/// The image's outputs from m[p][tile][o] (tiles numbered from `first`): A^T m A, plus bias,
/// then ReLU; outputs past the map's edge (odd sizes) are dropped.
#[inline(always)]
fn transform_output<L: Lanes>(m: &[f32], y: &mut [f32], bias: &[f32], s: &ConvShape, first: usize, t: usize, relu: bool) {
    let (th, tw) = tiles(s);
    let co = s.out_c;
    for ty in 0..th {
        for tx in 0..tw {
            let tile = first + ty * tw + tx;
            for o in (0..co).step_by(L::N) {
                let mv: [L; XI] = array(
                    #[inline(always)]
                    |p| L::load(&m[(p * t + tile) * co + o..]),
                );
                let b = L::load(&bias[o..]);
                // A^T m (two rows), then times A (two columns), plus bias.
                let mut r = [[L::zero(); 4]; 2];
                for col in 0..4 {
                    let (m0, m1, m2, m3) = (mv[col], mv[4 + col], mv[8 + col], mv[12 + col]);
                    r[0][col] = m0.add(m1).add(m2);
                    r[1][col] = m1.sub(m2).sub(m3);
                }
                for (dy, [a0, a1, a2, a3]) in r.into_iter().enumerate() {
                    let oy = 2 * ty + dy;
                    for (dx, val) in [a0.add(a1).add(a2), a1.sub(a2).sub(a3)].into_iter().enumerate() {
                        let ox = 2 * tx + dx;
                        if oy < s.out_h && ox < s.out_w {
                            let val = val.add(b);
                            (if relu { val.relu() } else { val }).store(&mut y[(oy * s.out_w + ox) * co + o..]);
                        }
                    }
                }
            }
        }
    }
}
