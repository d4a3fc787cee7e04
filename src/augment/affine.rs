//! The general per-image transform: geometry (flip, crop, rotation, zoom) composed into one
//! affine map from output pixel to source position, bilinear sampling with zero fill, then
//! contrast and brightness. The host computes everything in f64 once per image and packs it
//! into [`AFFINE_WORDS`] u32; the CPU gather (`AffineTransform::sample`) and the GPU gather
//! kernel (shaders/data.wgsl `affine_sample`) then do the same few operations on the packed
//! words and give the same bits.
//!
//! Why the same bits: the geometry is integer arithmetic (a 16.16 fixed-point matrix, bilinear
//! weights of 8 bits, their weighted byte sum exact in a u32 and below 2^24, so exact as an
//! f32 too). The float part is `clamp((sum + offset) * scale) + brightness, clamped`: every
//! operation is one IEEE add or multiply (correctly rounded on CPUs and, per the WGSL and
//! Vulkan specs, on GPUs), and no multiply feeds an add directly, so a shader compiler has
//! nothing to fuse into an FMA (which would round once instead of twice). Factors of at least
//! `MIN_FACTOR` and images of at most 2048 x 2048 keep every value normal, out of reach of a
//! GPU's flush of subnormals to zero.

use super::SampleTransform;

/// u32 words per image: the matrix (6), scale, brightness, one offset per channel (4).
pub const AFFINE_WORDS: usize = 12;
/// The largest height and width: keeps the 16.16 fixed-point source positions inside an i32.
pub const MAX_AFFINE_SIDE: usize = 2048;
/// The most channels (one contrast offset each).
pub const MAX_AFFINE_CHANNELS: usize = 4;

/// Fraction bits of the matrix entries and source positions.
const FRACTION_BITS: u32 = 16;
/// Fraction bits of the bilinear weights: the source position is rounded to 1/256 pixel.
const WEIGHT_BITS: u32 = 8;
const WEIGHT_ONE: u32 = 1 << WEIGHT_BITS;
/// The weighted byte sum of a pixel at value 1.0: 255 times the two weights' product (2^16).
const SUM_AT_ONE: f64 = 255.0 * (1u32 << (2 * WEIGHT_BITS)) as f64;
/// The smallest contrast factor (a draw of exactly 0 would divide by zero below; this one
/// gives the channel mean within f32 precision).
const MIN_CONTRAST: f64 = 1.0 / (1u32 << 24) as f64;

/// One sample's random choices: the flip and crop, then the rotation (degrees, positive is
/// counter-clockwise), zoom factor (above 1 zooms out: Keras's 1 + height_factor draw),
/// contrast factor and brightness delta (in units of the value range [0, 1]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SampleDraw {
    pub shift: SampleTransform,
    pub degrees: f64,
    pub zoom: f64,
    pub contrast: f64,
    pub brightness: f64,
}

impl SampleDraw {
    pub const IDENTITY: SampleDraw =
        SampleDraw { shift: SampleTransform { flip: false, dy: 0, dx: 0 }, degrees: 0.0, zoom: 1.0, contrast: 1.0, brightness: 0.0 };
}

/// One image's packed transform. Output element (y, x, c) is computed as:
/// 1. source position (sx, sy) = (m0 x + m1 y + m2, m3 x + m4 y + m5), 16.16 fixed point in
///    i32, rounded to 1/256 pixel;
/// 2. `sum` = the bilinear blend of the 4 source bytes around it, weights of 8 bits each way,
///    bytes outside the image 0 (Keras's fill_mode="constant", fill_value=0);
/// 3. v = clamp((sum + offset[c]) * scale, 0, 1) — the contrast, (x - mean) * c + mean with
///    x = sum / (255 * 2^16), rearranged as c / (255 * 2^16) * (sum + offset) so that no
///    multiply feeds an add; without contrast, scale = 1 / (255 * 2^16) and offset = 0;
/// 4. out = clamp(v + brightness, 0, 1).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AffineTransform {
    pub matrix: [i32; 6],
    pub scale: f32,
    pub brightness: f32,
    pub offset: [f32; MAX_AFFINE_CHANNELS],
}

/// An f32 that is never -0 or subnormal (the GPU may treat those differently).
fn normal_f32(v: f64) -> f32 {
    let f = v as f32;
    if f.abs() < f32::MIN_POSITIVE {
        0.0
    } else {
        f
    }
}

impl AffineTransform {
    /// The transform of `draw` on an image of `shape`; `channel_sums` (each channel's byte sum,
    /// from `super::channel_sums`) is needed only when the draw changes the contrast.
    ///
    /// The geometry is Keras's, composed: output pixel p maps through the zoom
    /// z (p - centre) + centre (RandomZoom's matrix), the rotation R(θ) (p - centre) + centre
    /// (RandomRotation's), then the flip and the crop's shift, to its source; the centre is
    /// ((W-1)/2, (H-1)/2), pixel centres at integers. The image is sampled once, through the
    /// composed map. Contrast and brightness then apply to the moved pixels (filled ones too,
    /// as after Keras's RandomRotation -> RandomContrast), with the contrast's mean taken over
    /// the stored image (before moving: the host knows it without the pixels' new places).
    pub fn new(draw: &SampleDraw, (height, width, channels): (usize, usize, usize), channel_sums: &[u64]) -> AffineTransform {
        assert!(height <= MAX_AFFINE_SIDE && width <= MAX_AFFINE_SIDE && channels <= MAX_AFFINE_CHANNELS, "shape checked by Augmentation::check_input");
        let (cx, cy) = ((width as f64 - 1.0) / 2.0, (height as f64 - 1.0) / 2.0);
        let (sin, cos) = draw.degrees.to_radians().sin_cos();
        let mirror = if draw.shift.flip { -1.0 } else { 1.0 };
        let z = draw.zoom;
        let l = [[z * mirror * cos, -z * mirror * sin], [z * sin, z * cos]];
        let tx = cx + draw.shift.dx as f64 - (l[0][0] * cx + l[0][1] * cy);
        let ty = cy + draw.shift.dy as f64 - (l[1][0] * cx + l[1][1] * cy);
        let fixed = |v: f64| (v * (1u32 << FRACTION_BITS) as f64).round() as i32;
        let matrix = [fixed(l[0][0]), fixed(l[0][1]), fixed(tx), fixed(l[1][0]), fixed(l[1][1]), fixed(ty)];

        let mut offset = [0.0f32; MAX_AFFINE_CHANNELS];
        let scale = if draw.contrast == 1.0 {
            1.0 / SUM_AT_ONE
        } else {
            assert_eq!(channel_sums.len(), channels, "one byte sum per channel");
            let c = draw.contrast.max(MIN_CONTRAST);
            for (o, &s) in offset.iter_mut().zip(channel_sums) {
                // mean in sum units: SUM_AT_ONE * s / (255 * H * W)
                let mean = SUM_AT_ONE * s as f64 / (255.0 * (height * width) as f64);
                *o = normal_f32(mean * (1.0 - c) / c);
            }
            c / SUM_AT_ONE
        };
        AffineTransform { matrix, scale: scale as f32, brightness: normal_f32(draw.brightness), offset }
    }

    /// Words 0..6: the matrix (i32 bits); 6: scale; 7: brightness; 8..12: the offsets (f32
    /// bits). shaders/data.wgsl reads the same layout.
    pub fn pack(&self) -> [u32; AFFINE_WORDS] {
        let mut w = [0u32; AFFINE_WORDS];
        for (w, &m) in w.iter_mut().zip(&self.matrix) {
            *w = m as u32;
        }
        w[6] = self.scale.to_bits();
        w[7] = self.brightness.to_bits();
        for (w, o) in w[8..].iter_mut().zip(self.offset) {
            *w = o.to_bits();
        }
        w
    }

    pub fn unpack(words: &[u32]) -> AffineTransform {
        let w = &words[..AFFINE_WORDS];
        AffineTransform {
            matrix: std::array::from_fn(|i| w[i] as i32),
            scale: f32::from_bits(w[6]),
            brightness: f32::from_bits(w[7]),
            offset: std::array::from_fn(|i| f32::from_bits(w[8 + i])),
        }
    }

    /// Output element (y, x, c) of the transformed `image` (h, w, channels) of u8.
    pub fn sample(&self, image: &[u8], y: usize, x: usize, c: usize, (h, w, channels): (usize, usize, usize)) -> f32 {
        let [m0, m1, m2, m3, m4, m5] = self.matrix;
        let (x, y) = (x as i32, y as i32);
        // Wrapping as WGSL's i32 does; the bounds on the matrix and the image keep it exact.
        let sx = m0.wrapping_mul(x).wrapping_add(m1.wrapping_mul(y)).wrapping_add(m2);
        let sy = m3.wrapping_mul(x).wrapping_add(m4.wrapping_mul(y)).wrapping_add(m5);
        let half = 1 << (FRACTION_BITS - WEIGHT_BITS - 1);
        let (sx, sy) = (sx.wrapping_add(half) >> (FRACTION_BITS - WEIGHT_BITS), sy.wrapping_add(half) >> (FRACTION_BITS - WEIGHT_BITS));
        let (x0, fx) = (sx >> WEIGHT_BITS, (sx & (WEIGHT_ONE as i32 - 1)) as u32);
        let (y0, fy) = (sy >> WEIGHT_BITS, (sy & (WEIGHT_ONE as i32 - 1)) as u32);
        let byte = |yy: i32, xx: i32| -> u32 {
            if (0..h as i32).contains(&yy) && (0..w as i32).contains(&xx) {
                image[(yy as usize * w + xx as usize) * channels + c] as u32
            } else {
                0
            }
        };
        let sum = byte(y0, x0) * (WEIGHT_ONE - fy) * (WEIGHT_ONE - fx)
            + byte(y0, x0 + 1) * (WEIGHT_ONE - fy) * fx
            + byte(y0 + 1, x0) * fy * (WEIGHT_ONE - fx)
            + byte(y0 + 1, x0 + 1) * fy * fx;
        // max then min, in WGSL's order (clamp treats -0.0 and NaN its own way).
        #[allow(clippy::manual_clamp)]
        let v = ((sum as f32 + self.offset[c]) * self.scale).max(0.0).min(1.0);
        #[allow(clippy::manual_clamp)]
        let out = (v + self.brightness).max(0.0).min(1.0);
        out
    }
}
