//! Winograd F(4x4, 3x3) (Lavin & Gray 2015, "Fast Algorithms for Convolutional Neural
//! Networks", section 4.2) for 3x3 stride-1 convolutions: each 4x4 block of outputs ("tile")
//! reads a 6x6 input patch d; per (input, output) channel pair
//!
//!   Y = A^T [ (G g G^T) .* (B^T d B) ] A,   with the points 0, 1, -1, 2, -2 and infinity:
//!   B^T = [4 0 -5 0 1 0; 0 -4 -4 1 1 0; 0 4 -4 -1 1 0; 0 -2 -1 2 1 0; 0 2 -1 -2 1 0; 0 4 0 -5 0 1],
//!   G = [1/4 0 0; -1/6 -1/6 -1/6; -1/6 1/6 -1/6; 1/24 1/12 1/6; 1/24 -1/12 1/6; 0 0 1],
//!   A^T = [1 1 1 1 1 0; 0 1 -1 2 -2 0; 0 1 1 4 4 0; 0 1 -1 8 -8 1],
//!
//! so the sum over input channels becomes 36 GEMMs (tiles x in_c) * (in_c x out_c): 36
//! multiplies per tile and channel pair instead of 144 direct or 64 for four F(2x2, 3x3) tiles
//! (winograd.rs). The price is accuracy: the transforms scale what they add by larger factors
//! (row sums of |B^T| up to 10, of |G| 1/2, of |A^T| 19: a growth bound of 10^2 * 0.5^2 * 19^2
//! = 9,025 against F(2x2)'s 81), and G's sixths and twenty-fourths round (the kernel
//! transform multiplies by integers and divides by 24^2 once). tests/cpu_oracle.rs states the
//! tolerance this earns.
//!
//! Like F(2x2), the input gradient of a 3x3 stride-1 conv runs through the same code as the
//! conv `winograd::input_gradient_shape` gives; the filter gradient stays with F(2x2)'s
//! winograd_filter.rs.

use super::simd::{array, vectorized, Lanes};
use super::winograd::{self, Tiling};
use crate::backend::ConvShape;

/// The 36 positions of a 6x6 transformed tile.
const XI: usize = 36;

/// Whether F(4x4, 3x3) should run the forward pass of `s`: what F(2x2, 3x3) asks (enough
/// channels, under 4/5 of the direct multiplies), and fewer multiplies than F(2x2) (tiles
/// hanging off the edge count in both).
pub fn suits(s: &ConvShape) -> bool {
    winograd::pays(s, multiplies(s)) && multiplies(s) < winograd::multiplies(s)
}

/// Whether F(4x4, 3x3) should run the input gradient of `s` (the rule of `suits`, on the conv
/// the gradient is, against the 9 multiplies per output of im2col).
pub fn suits_input_gradient(s: &ConvShape) -> bool {
    let t = winograd::input_gradient_shape(s);
    winograd::pays(s, multiplies(&t)) && multiplies(&t) < winograd::multiplies(&t)
}

/// Multiplies per channel pair and image: 36 per 4x4 tile.
fn multiplies(s: &ConvShape) -> usize {
    let (th, tw) = F4x4::tiles(s);
    XI * th * tw
}

/// Floats of the transformed kernel, followed by 27 x out_c of working space for making it.
pub fn kernel_len(s: &ConvShape) -> usize {
    XI * s.in_c * s.out_c + 27 * s.out_c
}

/// G = GI / 24 with small integers, so the kernel transform multiplies exactly-representable
/// factors and divides by 24^2 once at the end.
const GI: [[f32; 3]; 6] = [[6.0, 0.0, 0.0], [-4.0, -4.0, -4.0], [-4.0, 4.0, -4.0], [1.0, 2.0, 4.0], [1.0, -2.0, 4.0], [0.0, 0.0, 24.0]];

/// u (36, in_c, out_c) = G g G^T for each channel pair of w (3, 3, in_c, out_c). With
/// `for_input_gradient`, w is the kernel of the conv `input_gradient_shape` came from, and u
/// is that of the turned, channel-swapped kernel. `u` holds `kernel_len(s)` floats; the loops
/// run along out_c, so they vectorize.
pub fn transform_kernel(w: &[f32], s: &ConvShape, for_input_gradient: bool, u: &mut [f32]) {
    let (ci, co) = (s.in_c, s.out_c);
    let (u, work) = u.split_at_mut(XI * ci * co);
    // taps: row (ky, kx) of out_c values; gg: row (r, kx) of (GI g)[r][kx].
    let (taps, gg) = work.split_at_mut(9 * co);
    // Whole vectors along the output channels (the same bits at any width: no fused
    // multiply-adds here).
    vectorized(
        #[inline(always)]
        || {
            for i in 0..ci {
                winograd::gather_taps(w, s, for_input_gradient, i, taps);
                for r in 0..6 {
                    for kx in 0..3 {
                        let (g0, g1, g2) = (&taps[kx * co..][..co], &taps[(3 + kx) * co..][..co], &taps[(6 + kx) * co..][..co]);
                        let f = GI[r];
                        for (((v, g0), g1), g2) in gg[(r * 3 + kx) * co..][..co].iter_mut().zip(g0).zip(g1).zip(g2) {
                            *v = f[0] * g0 + f[1] * g1 + f[2] * g2;
                        }
                    }
                }
                for r in 0..6 {
                    let (h0, h1, h2) = (&gg[(r * 3) * co..][..co], &gg[(r * 3 + 1) * co..][..co], &gg[(r * 3 + 2) * co..][..co]);
                    for c in 0..6 {
                        let f = GI[c];
                        for (((v, h0), h1), h2) in u[((r * 6 + c) * ci + i) * co..][..co].iter_mut().zip(h0).zip(h1).zip(h2) {
                            *v = (f[0] * h0 + f[1] * h1 + f[2] * h2) / 576.0;
                        }
                    }
                }
            }
        },
    )
}

/// y (n, out_h, out_w, out_c) = conv(x (n, in_h, in_w, in_c)) + bias, then ReLU; u from
/// `transform_kernel`.
#[allow(clippy::too_many_arguments)]
pub fn forward(x: &[f32], u: &[f32], bias: Option<&[f32]>, y: &mut [f32], s: &ConvShape, n: usize, relu: bool) {
    winograd::forward_tiled::<F4x4>(x, u, bias, y, s, n, relu)
}

/// B^T d for one column of six values (the same combination serves the rows of (B^T d) B),
/// in fused multiply-adds (`a.mul_add(k, b)` is a + k b).
#[inline(always)]
fn input_column<L: Lanes>(d: [L; 6]) -> [L; 6] {
    let (four, minus_four, minus_five, two, minus_two) = (L::splat(4.0), L::splat(-4.0), L::splat(-5.0), L::splat(2.0), L::splat(-2.0));
    let (d0, d1, d2, d3, d4, d5) = (d[0], d[1], d[2], d[3], d[4], d[5]);
    let (d4_d2, d3_d1) = (d4.sub(d2), d3.sub(d1));
    [
        // d4 + 4 d0 - 5 d2
        d4.mul_add(four, d0).mul_add(minus_five, d2),
        // d3 + d4 - 4 (d1 + d2)
        d3.add(d4).mul_add(minus_four, d1.add(d2)),
        // d4 - d3 + 4 (d1 - d2)
        d4.sub(d3).mul_add(four, d1.sub(d2)),
        // d4 - d2 + 2 (d3 - d1)
        d4_d2.mul_add(two, d3_d1),
        // d4 - d2 - 2 (d3 - d1)
        d4_d2.mul_add(minus_two, d3_d1),
        // d5 + 4 d1 - 5 d3
        d5.mul_add(four, d1).mul_add(minus_five, d3),
    ]
}

/// A^T m for one column of six values: the four output rows.
#[inline(always)]
fn output_column<L: Lanes>(m: [L; 6]) -> [L; 4] {
    let (two, four, eight) = (L::splat(2.0), L::splat(4.0), L::splat(8.0));
    let (s12, d12, s34, d34) = (m[1].add(m[2]), m[1].sub(m[2]), m[3].add(m[4]), m[3].sub(m[4]));
    [m[0].add(s12).add(s34), d12.mul_add(two, d34), s12.mul_add(four, s34), d12.add(m[5]).mul_add(eight, d34)]
}

/// F(4x4, 3x3) as a `Tiling`.
pub(super) struct F4x4;

impl Tiling for F4x4 {
    const XI: usize = XI;

    /// Tiles of 4x4 outputs per image: (rows, columns).
    fn tiles(s: &ConvShape) -> (usize, usize) {
        (s.out_h.div_ceil(4), s.out_w.div_ceil(4))
    }

    /// The rows themselves and 16 floats more. Without the 64 bytes, a block's 36 positions
    /// often lie a multiple of 4 KiB apart, all in one set of the L1 cache, which then misses
    /// on every transform's loads or stores.
    fn position_stride(t: usize, channels: usize) -> usize {
        t * channels + 16
    }

    /// v[p][tile][c] = (B^T d B)[p] (positions `position_stride` apart) for the image's tiles,
    /// numbered from `first`; `t` tiles in v. A vector of channels at a time.
    #[inline(always)]
    fn transform_input<L: Lanes>(x: &[f32], v: &mut [f32], zeros: &[f32], s: &ConvShape, first: usize, t: usize) {
        let (th, tw) = Self::tiles(s);
        let c = s.in_c;
        for ty in 0..th {
            for tx in 0..tw {
                let tile = first + ty * tw + tx;
                let rows: [&[f32]; XI] = winograd::patch_rows(x, zeros, s, (4 * ty, 4 * tx));
                let stride = Self::position_stride(t, c);
                for ch in (0..c).step_by(L::N) {
                    // B^T d, a column at a time: cols[col][row].
                    // SAFETY: every row holds c floats and ch + N <= c (`lanes_fit`: c is a
                    // multiple of N).
                    let cols: [[L; 6]; 6] = array(
                        #[inline(always)]
                        |col| {
                            input_column(array(
                                #[inline(always)]
                                |row| unsafe { L::load_ptr(rows[row * 6 + col].as_ptr().add(ch)) },
                            ))
                        },
                    );
                    // Then each row of that times B.
                    for row in 0..6 {
                        let out = input_column([cols[0][row], cols[1][row], cols[2][row], cols[3][row], cols[4][row], cols[5][row]]);
                        for (col, val) in out.into_iter().enumerate() {
                            val.store(&mut v[(row * 6 + col) * stride + tile * c + ch..]);
                        }
                    }
                }
            }
        }
    }

    /// The image's outputs from m[p][tile][o] (tiles numbered from `first`, positions
    /// `position_stride` apart): A^T m A, plus bias, then ReLU; outputs past the map's edge are
    /// dropped.
    #[inline(always)]
    fn transform_output<L: Lanes>(m: &[f32], y: &mut [f32], bias: &[f32], s: &ConvShape, first: usize, t: usize, relu: bool) {
        let (th, tw) = Self::tiles(s);
        let co = s.out_c;
        let stride = Self::position_stride(t, co);
        for ty in 0..th {
            for tx in 0..tw {
                let tile = first + ty * tw + tx;
                for o in (0..co).step_by(L::N) {
                    let b = L::load(&bias[o..]);
                    // A^T m, a column at a time: cols[col][out row].
                    let at = tile * co + o;
                    let cols: [[L; 4]; 6] = array(
                        #[inline(always)]
                        |col| {
                            output_column(array(
                                #[inline(always)]
                                |row| L::load(&m[(row * 6 + col) * stride + at..]),
                            ))
                        },
                    );
                    for (dy, oy) in (4 * ty..s.out_h).take(4).enumerate() {
                        let out = output_column([cols[0][dy], cols[1][dy], cols[2][dy], cols[3][dy], cols[4][dy], cols[5][dy]]);
                        for (dx, val) in out.into_iter().enumerate() {
                            let ox = 4 * tx + dx;
                            if ox < s.out_w {
                                let val = val.add(b);
                                (if relu { val.relu() } else { val }).store(&mut y[(oy * s.out_w + ox) * co + o..]);
                            }
                        }
                    }
                }
            }
        }
    }
}
