//! Direct convolution for layers with few taps per output (the first layer: 3x3x3 = 27), where
//! an im2col GEMM is too thin for the GEMM library and its columns cost 9x the input's memory
//! traffic. Blocks of output channels (vectors of 8 or 16 lanes) for a few output pixels stay
//! in registers while the taps stream past; an image that needs padding is first copied into a
//! zero-padded scratch block so the inner loops have no edge tests. Every sum runs in a fixed
//! order.

use super::blocked::{for_each_block, multiply_accumulate, BlockFn};
use super::simd::{array, dispatch, has_fast_fma, Kernel, Lanes, LANES};
use crate::backend::ConvShape;

/// Whether the direct kernels should run this shape: few taps per output (an im2col GEMM with
/// K <= 32 runs at a quarter of the GEMM library's rate), whole 8-lane vectors of output
/// channels, and a CPU with fused multiply-add.
pub fn suits(s: &ConvShape) -> bool {
    s.patch_len() <= 32 && can_run(s) && has_fast_fma()
}

/// The kernels handle output channels in whole 8-lane vectors, taps next to each other.
pub fn can_run(s: &ConvShape) -> bool {
    s.out_c.is_multiple_of(LANES) && s.undilated()
}

/// Height and width of the zero-padded input that the outputs read.
fn padded_dims(s: &ConvShape) -> (usize, usize) {
    ((s.out_h - 1) * s.stride_h + s.k_h, (s.out_w - 1) * s.stride_w + s.k_w)
}

pub fn padded_len(s: &ConvShape) -> usize {
    let (ph, pw) = padded_dims(s);
    ph * pw * s.in_c
}

/// One image x (in_h, in_w, c) -> xp (ph, pw, c) with the padding as zeros.
fn pad_image(x: &[f32], xp: &mut [f32], s: &ConvShape) {
    let (ph, pw) = padded_dims(s);
    let c = s.in_c;
    for py in 0..ph {
        let row = &mut xp[py * pw * c..][..pw * c];
        let iy = py as isize - s.pad_top as isize;
        if iy < 0 || iy >= s.in_h as isize {
            row.fill(0.0);
            continue;
        }
        for px in 0..pw {
            let ix = px as isize - s.pad_left as isize;
            let dst = &mut row[px * c..][..c];
            if ix < 0 || ix >= s.in_w as isize {
                dst.fill(0.0);
            } else {
                dst.copy_from_slice(&x[(iy as usize * s.in_w + ix as usize) * c..][..c]);
            }
        }
    }
}

/// The zero-padded image the kernels read: x itself where it needs no padding (no pad, and
/// the windows end at its right edge, as the seed model's first layer), else its copy in
/// `scratch`.
fn padded<'a>(x: &'a [f32], scratch: &'a mut [f32], s: &ConvShape) -> &'a [f32] {
    let (ph, pw) = padded_dims(s);
    if s.pad_top == 0 && s.pad_left == 0 && pw == s.in_w && ph <= s.in_h {
        return &x[..ph * pw * s.in_c];
    }
    pad_image(x, scratch, s);
    scratch
}

/// y (out_h, out_w, out_c) = conv(x) + b, then ReLU, for one image; `scratch` holds
/// `padded_len(s)` floats.
pub fn forward_image(x: &[f32], w: &[f32], b: &[f32], y: &mut [f32], s: &ConvShape, relu: bool, scratch: &mut [f32]) {
    dispatch(Forward { xp: padded(x, scratch, s), w, b, y, s, relu, oy: 0 });
}

struct Forward<'a> {
    xp: &'a [f32],
    w: &'a [f32],
    b: &'a [f32],
    y: &'a mut [f32],
    s: &'a ConvShape,
    relu: bool,
    /// The output row being computed.
    oy: usize,
}

impl Kernel for Forward<'_> {
    type Output = ();
    fn lanes_fit(&self, lanes: usize) -> bool {
        self.s.out_c.is_multiple_of(lanes)
    }
    #[inline(always)]
    fn run<L: Lanes>(mut self) {
        let s = self.s;
        for oy in 0..s.out_h {
            self.oy = oy;
            for_each_block::<L, _>(&mut self, s.out_w, s.out_c);
        }
    }
}

impl<L: Lanes> BlockFn<L> for Forward<'_> {
    #[inline(always)]
    fn block<const P: usize, const V: usize>(&mut self, ox: usize, o0: usize) {
        let oy = self.oy;
        forward_block::<L, P, V>(self, Block { oy, ox, o0 })
    }
}

#[derive(Clone, Copy)]
struct Block {
    oy: usize,
    ox: usize,
    o0: usize,
}

/// P output pixels (oy, ox..ox+P) x V vectors of output channels from o0: bias, then the taps
/// in (ky, kx, ci) order.
#[inline(always)]
fn forward_block<L: Lanes, const P: usize, const V: usize>(k: &mut Forward, Block { oy, ox, o0 }: Block) {
    let s = k.s;
    let (c, oc) = (s.in_c, s.out_c);
    let pw = padded_dims(s).1;
    let row_len = s.k_w * c;
    let mut acc: [[L; V]; P] = [array(
        #[inline(always)]
        |j| L::load(&k.b[o0 + j * L::N..]),
    ); P];
    for ky in 0..s.k_h {
        let x_row = (oy * s.stride_h + ky) * pw;
        let a: [&[f32]; P] = array(
            #[inline(always)]
            |i| &k.xp[(x_row + (ox + i) * s.stride_w) * c..][..row_len],
        );
        multiply_accumulate(&mut acc, a, 1, &k.w[ky * row_len * oc + o0..], oc, row_len);
    }
    for (i, px) in acc.iter().enumerate() {
        let at = ((oy * s.out_w) + ox + i) * oc + o0;
        for (j, a) in px.iter().enumerate() {
            (if k.relu { a.relu() } else { *a }).store(&mut k.y[at + j * L::N..]);
        }
    }
}

/// dw (k_h, k_w, in_c, out_c) += the filter gradient of one image, db += its dy sums;
/// `scratch` holds `padded_len(s)` floats.
pub fn backward_filter_image(x: &[f32], dy: &[f32], dw: &mut [f32], db: &mut [f32], s: &ConvShape, scratch: &mut [f32]) {
    dispatch(Filter { xp: padded(x, scratch, s), dy, dw, s });
    super::gemm::add_rows(db, &dy[..s.out_len()]);
}

struct Filter<'a> {
    xp: &'a [f32],
    dy: &'a [f32],
    dw: &'a mut [f32],
    s: &'a ConvShape,
}

impl Kernel for Filter<'_> {
    type Output = ();
    fn lanes_fit(&self, lanes: usize) -> bool {
        self.s.out_c.is_multiple_of(lanes)
    }
    #[inline(always)]
    fn run<L: Lanes>(mut self) {
        let (patch, oc) = (self.s.patch_len(), self.s.out_c);
        // Blocks of taps by 32 channels where they tile exactly (the first layer: 27 taps, 32
        // or 64 channels): each pixel's dy row is loaded once for 12 (AVX2: 3 taps x 4
        // vectors) or 18 (AVX-512: 9 taps x 2 vectors) accumulators, and no short remainder
        // block runs out of independent chains, as 6 x 16 blocks leave for 27 taps (AVX2:
        // 1.47 -> 1.16 ms at batch 32 on one core). Each dw element sums the same terms in the
        // same order either way.
        let taps = if L::N == LANES { 3 } else { 9 };
        if patch.is_multiple_of(taps) && oc.is_multiple_of(32) {
            for t0 in (0..patch).step_by(taps) {
                for o0 in (0..oc).step_by(32) {
                    if L::N == LANES {
                        filter_block::<L, 3, 4>(&mut self, t0, o0);
                    } else {
                        filter_block::<L, 9, 2>(&mut self, t0, o0);
                    }
                }
            }
            return;
        }
        for_each_block::<L, _>(&mut self, patch, oc);
    }
}

impl<L: Lanes> BlockFn<L> for Filter<'_> {
    #[inline(always)]
    fn block<const G: usize, const V: usize>(&mut self, t0: usize, o0: usize) {
        filter_block::<L, G, V>(self, t0, o0)
    }
}

/// dw rows t0..t0+G, channels o0..o0+8V: += sum over the image's pixels (row by row) of
/// x(pixel, tap) * dy(pixel).
#[inline(always)]
fn filter_block<L: Lanes, const G: usize, const V: usize>(k: &mut Filter, t0: usize, o0: usize) {
    let s = k.s;
    let (c, oc) = (s.in_c, s.out_c);
    let pw = padded_dims(s).1;
    let row_len = s.k_w * c;
    // Offset of each tap from its pixel's window corner in the padded image.
    let tap_at: [usize; G] = array(
        #[inline(always)]
        |g| {
            let t = t0 + g;
            (t / row_len) * pw * c + t % row_len
        },
    );
    let mut acc = [[L::zero(); V]; G];
    for (g, tap) in acc.iter_mut().enumerate() {
        for (j, a) in tap.iter_mut().enumerate() {
            *a = L::load(&k.dw[(t0 + g) * oc + o0 + j * L::N..]);
        }
    }
    // Every read below is inside these bounds: the last pixel's window corner plus the
    // largest tap offset, and the last pixel's dy vectors.
    let last_corner = ((s.out_h - 1) * s.stride_h * pw + (s.out_w - 1) * s.stride_w) * c;
    assert!(last_corner + tap_at[G - 1] < k.xp.len() && s.out_len() <= k.dy.len() && o0 + V * L::N <= oc);
    for oy in 0..s.out_h {
        for ox in 0..s.out_w {
            let corner = (oy * s.stride_h * pw + ox * s.stride_w) * c;
            let d_at = (oy * s.out_w + ox) * oc + o0;
            // SAFETY: within the bounds asserted above.
            let dv: [L; V] = array(
                #[inline(always)]
                |j| unsafe { L::load_ptr(k.dy.as_ptr().add(d_at + j * L::N)) },
            );
            for (g, tap) in acc.iter_mut().enumerate() {
                let xv = L::splat(unsafe { *k.xp.get_unchecked(corner + tap_at[g]) });
                for (a, &d) in tap.iter_mut().zip(&dv) {
                    *a = a.mul_add(xv, d);
                }
            }
        }
    }
    for (g, tap) in acc.iter().enumerate() {
        for (j, a) in tap.iter().enumerate() {
            a.store(&mut k.dw[(t0 + g) * oc + o0 + j * L::N..]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::simd::Portable;

    /// The AVX2 + FMA lanes and the portable lanes give the same bits: both round each lane's
    /// multiply-add once, in the same order (on a CPU without AVX2 both runs are portable).
    #[test]
    fn simd_and_portable_lanes_agree_bit_for_bit() {
        let s = ConvShape {
            in_h: 8,
            in_w: 13,
            in_c: 3,
            out_h: 4,
            out_w: 7,
            out_c: 24,
            k_h: 3,
            k_w: 3,
            stride_h: 2,
            stride_w: 2,
            pad_top: 0,
            pad_left: 1,
            dilation_h: 1,
            dilation_w: 1,
        };
        let mut rng = crate::rng::Rng::new(5);
        let mut random = |len: usize| (0..len).map(|_| rng.unit_f32() - 0.5).collect::<Vec<f32>>();
        let (x, w, b, dy) = (random(s.in_len()), random(s.kernel_len()), random(s.out_c), random(s.out_len()));
        let mut xp = vec![0.0; padded_len(&s)];
        pad_image(&x, &mut xp, &s);
        let (mut y_simd, mut y_portable) = (vec![0.0; s.out_len()], vec![0.0; s.out_len()]);
        dispatch(Forward { xp: &xp, w: &w, b: &b, y: &mut y_simd, s: &s, relu: true, oy: 0 });
        Forward { xp: &xp, w: &w, b: &b, y: &mut y_portable, s: &s, relu: true, oy: 0 }.run::<Portable>();
        assert_eq!(y_simd.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), y_portable.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
        let (mut dw_simd, mut dw_portable) = (vec![0.5; s.kernel_len()], vec![0.5; s.kernel_len()]);
        dispatch(Filter { xp: &xp, dy: &dy, dw: &mut dw_simd, s: &s });
        Filter { xp: &xp, dy: &dy, dw: &mut dw_portable, s: &s }.run::<Portable>();
        assert_eq!(dw_simd.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), dw_portable.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
        assert!(y_simd.iter().any(|&v| v > 0.0) && dw_simd.iter().any(|&v| v != 0.5));
    }
}
