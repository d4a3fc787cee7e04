//! The filter gradient of a 3x3 stride-1 conv by Winograd F(3x3, 2x2) (Lavin & Gray 2015): the
//! gradient of one 3x3 kernel is the correlation of each 4x4 input patch d with the 2x2 block
//! of output gradients g of its tile, so per channel pair
//!
//!   dW = A^T [ sum over tiles (G g G^T) .* (B^T d B) ] A,
//!   B^T as in winograd.rs (the input transform is the forward pass's),
//!   G = [1 0; .5 .5; .5 -.5; 0 1],  A^T = [1 1 1 0; 0 1 -1 0; 0 1 1 -1],
//!
//! and the sum over tiles is 16 GEMMs (in_c x tiles) * (tiles x out_c): 16 multiplies per tile
//! and channel pair instead of 36. Tiles hanging off an odd edge see zero gradients there.
//! Like every filter gradient here, the images are summed in REDUCTION_SPLITS fixed ranges
//! added in order.

use super::blocked::Gemm;
use super::gemm::{add_rows, reduce_in_fixed_splits, with_scratch};
use super::simd::{array, dispatch, Kernel, Lanes};
use super::winograd::{images_per_block, tiles, transform_input, XI};
use crate::backend::ConvShape;

/// Floats of the transformed gradient `backward_filter` works in.
pub fn transformed_len(s: &ConvShape) -> usize {
    XI * s.in_c * s.out_c
}

/// dw (3, 3, in_c, out_c) and db (out_c) summed over n images; `m` is scratch of
/// `transformed_len(s)` floats, `partials` the fixed-split partial sums.
#[allow(clippy::too_many_arguments)]
pub fn backward_filter(x: &[f32], dy: &[f32], dw: &mut [f32], db: &mut [f32], s: &ConvShape, n: usize, m: &mut [f32], partials: &mut Vec<f32>) {
    let (ci, co) = (s.in_c, s.out_c);
    let (th, tw) = tiles(s);
    let block = images_per_block(s);
    reduce_in_fixed_splits(n, (XI * ci * co, co), m, db, partials, |(i0, i1), pm, pb| {
        for start in (i0..i1).step_by(block) {
            let images = block.min(i1 - start);
            let t = images * th * tw;
            let xb = &x[start * s.in_len()..][..images * s.in_len()];
            let dyb = &dy[start * s.out_len()..][..images * s.out_len()];
            let zeros_len = ci.max(co);
            with_scratch(XI * t * ci + zeros_len, XI * t * co, |v, d| {
                let (v, zeros) = v.split_at_mut(XI * t * ci);
                zeros.fill(0.0);
                dispatch(Transforms { x: xb, dy: dyb, v, d, zeros, s, t });
                for p in 0..XI {
                    // pm[p] (ci, co) += v[p]^T (ci, t) * d[p] (t, co)
                    let (a, b) = (&v[p * t * ci..][..t * ci], &d[p * t * co..][..t * co]);
                    dispatch(Gemm { m: ci, k: t, n: co, a, a_row: 1, a_col: ci, b, c: &mut pm[p * ci * co..][..ci * co], accumulate: true });
                }
            });
            add_rows(pb, dyb);
        }
    });
    inverse_transform(m, dw, s);
}

/// Both sides' transforms for a block of images.
struct Transforms<'a> {
    x: &'a [f32],
    dy: &'a [f32],
    v: &'a mut [f32],
    d: &'a mut [f32],
    zeros: &'a [f32],
    s: &'a ConvShape,
    t: usize,
}

impl Kernel for Transforms<'_> {
    type Output = ();
    fn lanes_fit(&self, lanes: usize) -> bool {
        self.s.in_c.is_multiple_of(lanes) && self.s.out_c.is_multiple_of(lanes)
    }
    #[inline(always)]
    fn run<L: Lanes>(self) {
        let s = self.s;
        let (th, tw) = tiles(s);
        for (img, (xi, dyi)) in self.x.chunks(s.in_len()).zip(self.dy.chunks(s.out_len())).enumerate() {
            transform_input::<L>(xi, self.v, self.zeros, s, img * th * tw, self.t);
            transform_gradient::<L>(dyi, self.d, self.zeros, s, img * th * tw, self.t);
        }
    }
}

/// d[p][tile][o] = (G g G^T)[p] of each 2x2 block g of the image's output gradient (zeros
/// past the edge), tiles numbered from `first`.
#[inline(always)]
fn transform_gradient<L: Lanes>(dy: &[f32], d: &mut [f32], zeros: &[f32], s: &ConvShape, first: usize, t: usize) {
    let (th, tw) = tiles(s);
    let co = s.out_c;
    let half = L::splat(0.5);
    for ty in 0..th {
        for tx in 0..tw {
            let tile = first + ty * tw + tx;
            let rows: [&[f32]; 4] = array(
                #[inline(always)]
                |q| {
                    let (oy, ox) = (2 * ty + q / 2, 2 * tx + q % 2);
                    if oy < s.out_h && ox < s.out_w {
                        &dy[(oy * s.out_w + ox) * co..][..co]
                    } else {
                        &zeros[..co]
                    }
                },
            );
            for o in (0..co).step_by(L::N) {
                let g: [L; 4] = array(
                    #[inline(always)]
                    |q| L::load(&rows[q][o..]),
                );
                // G g: four rows of two, then times G^T: four columns.
                let gg =
                    [[g[0], g[1]], [g[0].add(g[2]).mul(half), g[1].add(g[3]).mul(half)], [g[0].sub(g[2]).mul(half), g[1].sub(g[3]).mul(half)], [g[2], g[3]]];
                for (r, [a0, a1]) in gg.into_iter().enumerate() {
                    for (c, val) in [a0, a0.add(a1).mul(half), a0.sub(a1).mul(half), a1].into_iter().enumerate() {
                        val.store(&mut d[((r * 4 + c) * t + tile) * co + o..]);
                    }
                }
            }
        }
    }
}

/// dw (3, 3, in_c, out_c) = A^T m A for each channel pair of m (16, in_c, out_c).
fn inverse_transform(m: &[f32], dw: &mut [f32], s: &ConvShape) {
    let (ci, co) = (s.in_c, s.out_c);
    for i in 0..ci {
        for o in 0..co {
            let at = |p: usize| m[(p * ci + i) * co + o];
            // A^T m, column by column: cols[c][row].
            let col = |c: usize| {
                let (m0, m1, m2, m3) = (at(c), at(4 + c), at(8 + c), at(12 + c));
                [m0 + m1 + m2, m1 - m2, m1 + m2 - m3]
            };
            let cols = [col(0), col(1), col(2), col(3)];
            for ky in 0..3 {
                let (a0, a1, a2, a3) = (cols[0][ky], cols[1][ky], cols[2][ky], cols[3][ky]);
                for (kx, val) in [a0 + a1 + a2, a1 - a2, a1 + a2 - a3].into_iter().enumerate() {
                    dw[((ky * 3 + kx) * ci + i) * co + o] = val;
                }
            }
        }
    }
}
