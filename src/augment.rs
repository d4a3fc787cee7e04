//! Training-data augmentation, as Keras's preprocessing layers: random horizontal flips and
//! random crops after zero padding (the standard CIFAR recipe: pad 4 pixels, crop back to size
//! at a random offset), and RandomRotation, RandomZoom, RandomContrast, RandomBrightness.
//!
//! The random choices are made on the host, per training step, from (seed, epoch, step) alone,
//! so a resumed run makes exactly the choices an uninterrupted one would. Each sample's choice
//! is packed into a few u32 (a flip/crop-only run: one [`SampleTransform`]; with any of the
//! others: one [`AffineTransform`], [`AFFINE_WORDS`] words); the backend's `gather_batch`
//! applies it while it builds the batch (on the GPU inside the gather kernel: only these few
//! bytes per image cross to the device each step, never pixels). Evaluation and prediction
//! never augment.

mod affine;

pub use affine::{AffineTransform, SampleDraw, AFFINE_WORDS, MAX_AFFINE_CHANNELS, MAX_AFFINE_SIDE};

use crate::data::ImageSet;
use crate::rng::Rng;
use anyhow::{bail, ensure, Result};

/// What salts the augmentation generator (the shuffle uses 2).
pub const AUGMENT_PURPOSE: u64 = crate::rng::purpose::AUGMENT;

/// Zero padding before the random crop: the crop shifts the image by up to this many pixels
/// each way.
pub const CROP_PAD: i32 = 4;

/// The smallest non-zero factor `rotate=`, `zoom=`, `contrast=` and `brightness=` take. Below it
/// a draw could make subnormal floats, which a GPU may flush to zero: the CPU and GPU batches
/// would no longer agree bit for bit.
pub const MIN_FACTOR: f32 = 1e-3;

/// Which augmentations a training run applies (`--augment flip,crop,rotate=15,zoom=0.1`).
/// A factor of 0 is off.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Augmentation {
    pub flip: bool,
    pub crop: bool,
    /// RandomRotation: degrees, each image turned by a uniform angle in [-rotate, rotate]
    /// (positive is counter-clockwise).
    pub rotate: f32,
    /// RandomZoom(height_factor=zoom): each image scaled about its centre by a uniform zoom
    /// in [1 - zoom, 1 + zoom] (above 1 zooms out), both axes alike.
    pub zoom: f32,
    /// RandomContrast(contrast): x' = (x - mean) * c + mean per channel, c uniform in
    /// [1 - contrast, 1 + contrast], clipped to [0, 1].
    pub contrast: f32,
    /// RandomBrightness: x' = x + delta, delta uniform in [-brightness, brightness] of the
    /// value range [0, 1], clipped to [0, 1].
    pub brightness: f32,
}

/// How a batch's transforms are packed: which code `gather_batch` runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransformLayout {
    /// One u32 per image: a [`SampleTransform`] (flip and crop only).
    Shift,
    /// [`AFFINE_WORDS`] u32 per image: an [`AffineTransform`].
    Affine,
}

impl TransformLayout {
    pub fn words(self) -> usize {
        match self {
            TransformLayout::Shift => 1,
            TransformLayout::Affine => AFFINE_WORDS,
        }
    }

    /// The layout of `words` transform words for a batch of `n` images.
    pub fn of_batch(words: usize, n: usize) -> TransformLayout {
        match words {
            w if w == n => TransformLayout::Shift,
            w if w == n * AFFINE_WORDS => TransformLayout::Affine,
            w => panic!("{w} transform words for a batch of {n}: need 1 or {AFFINE_WORDS} per image"),
        }
    }
}

/// The factors `name=F` takes: its name, the largest value, and what Keras calls it.
const FACTORS: [(&str, f32, &str); 4] = [
    ("rotate", 180.0, "degrees (RandomRotation)"),
    ("zoom", 1.0, "RandomZoom's height_factor"),
    ("contrast", 1.0, "RandomContrast's factor"),
    ("brightness", 1.0, "RandomBrightness's factor, of the value range [0, 1]"),
];

const ACCEPTED: &str = "use none, or a comma list of flip and crop (no value) and rotate=DEG, zoom=F, contrast=F, brightness=F";

impl Augmentation {
    pub const NONE: Augmentation = Augmentation { flip: false, crop: false, rotate: 0.0, zoom: 0.0, contrast: 0.0, brightness: 0.0 };

    fn factor_mut(&mut self, name: &str) -> Option<&mut f32> {
        match name {
            "rotate" => Some(&mut self.rotate),
            "zoom" => Some(&mut self.zoom),
            "contrast" => Some(&mut self.contrast),
            "brightness" => Some(&mut self.brightness),
            _ => None,
        }
    }

    fn factors(&self) -> [f32; 4] {
        [self.rotate, self.zoom, self.contrast, self.brightness]
    }

    /// "none", or a comma list of "flip", "crop" and "rotate=DEG", "zoom=F", "contrast=F",
    /// "brightness=F" (in any order, spaces allowed). Errors name the bad item.
    pub fn parse(text: &str) -> Result<Augmentation> {
        let mut a = Augmentation::NONE;
        let items: Vec<&str> = text.split(',').map(str::trim).collect();
        if items == ["none"] {
            return Ok(a);
        }
        let mut seen = Vec::new();
        for item in items {
            let (name, value) = match item.split_once('=') {
                Some((n, v)) => (n.trim(), Some(v.trim())),
                None => (item, None),
            };
            ensure!(!seen.contains(&name), "augmentation '{item}' in '{text}': {name} is given twice");
            seen.push(name);
            match (name, value) {
                ("flip", None) => a.flip = true,
                ("crop", None) => a.crop = true,
                ("flip" | "crop", Some(_)) => bail!("augmentation '{item}' in '{text}': {name} takes no value; {ACCEPTED}"),
                _ => {
                    let Some(&(_, max, meaning)) = FACTORS.iter().find(|f| f.0 == name) else {
                        bail!("unknown augmentation '{item}' in '{text}': {ACCEPTED}");
                    };
                    let Some(value) = value else { bail!("augmentation '{item}' in '{text}': {name} needs a value, as {name}=F ({meaning}); {ACCEPTED}") };
                    let v: f32 = value
                        .parse()
                        .ok()
                        .filter(|v: &f32| v.is_finite())
                        .ok_or_else(|| anyhow::anyhow!("augmentation '{item}' in '{text}': '{value}' is not a number ({name} is {meaning})"))?;
                    ensure!(
                        v == 0.0 || (MIN_FACTOR..=max).contains(&v),
                        "augmentation '{item}' in '{text}': {name} must be 0 (off) or in [{MIN_FACTOR}, {max}] ({meaning})"
                    );
                    *a.factor_mut(name).expect("a listed factor") = v.abs(); // -0 is 0
                }
            }
        }
        Ok(a)
    }

    /// The ranges `parse` enforces, for an augmentation built in code: each factor 0 (off) or
    /// in [MIN_FACTOR, its largest] (a negative one is refused: its name would not say it).
    pub fn check(&self) -> Result<()> {
        for ((name, max, meaning), v) in FACTORS.iter().zip(self.factors()) {
            ensure!(v == 0.0 || (MIN_FACTOR..=*max).contains(&v), "augmentation {name}={v}: must be 0 (off) or in [{MIN_FACTOR}, {max}] ({meaning})");
        }
        Ok(())
    }

    pub fn is_none(&self) -> bool {
        self.layout().is_none()
    }

    /// How the batches' transforms are packed, or None without augmentation.
    pub fn layout(&self) -> Option<TransformLayout> {
        if self.factors().iter().any(|&f| f > 0.0) {
            Some(TransformLayout::Affine)
        } else if self.flip || self.crop {
            Some(TransformLayout::Shift)
        } else {
            None
        }
    }

    /// The canonical text ("none", "flip,crop", "crop,rotate=15,contrast=0.2", ...); `parse`
    /// reads it back to the same value (f32s print as the shortest text that parses back).
    pub fn name(&self) -> String {
        let mut items: Vec<String> = [("flip", self.flip), ("crop", self.crop)].iter().filter(|i| i.1).map(|i| i.0.to_string()).collect();
        for ((name, _, _), value) in FACTORS.iter().zip(self.factors()) {
            if value > 0.0 {
                items.push(format!("{name}={value}"));
            }
        }
        if items.is_empty() {
            "none".into()
        } else {
            items.join(",")
        }
    }

    /// Refuses an input shape the affine transforms cannot handle (checked before training).
    pub fn check_input(&self, (height, width, channels): (usize, usize, usize)) -> Result<()> {
        if self.layout() == Some(TransformLayout::Affine) {
            ensure!(
                height <= MAX_AFFINE_SIDE && width <= MAX_AFFINE_SIDE,
                "--augment {}: images of {height}x{width} are larger than the {MAX_AFFINE_SIDE}x{MAX_AFFINE_SIDE} rotate/zoom/contrast/brightness handle",
                self.name()
            );
            ensure!(
                channels <= MAX_AFFINE_CHANNELS,
                "--augment {}: images of {channels} channels; rotate/zoom/contrast/brightness handle at most {MAX_AFFINE_CHANNELS}",
                self.name()
            );
        }
        Ok(())
    }

    /// Every random choice of the `n` samples of one training step. Depends only on
    /// (seed, epoch, step). Every sample draws a flip and both offsets whatever is enabled, so
    /// "flip" makes the same flips as "flip,crop"; then, only when a factor is on, every sample
    /// draws an angle, a zoom, a contrast and a brightness (so the flips and crops stay those
    /// of "flip,crop", and turning one factor on does not change another's draws).
    pub fn batch_draws(&self, n: usize, seed: u64, epoch: usize, step: usize) -> Vec<SampleDraw> {
        let mut rng = Rng::derive(seed, AUGMENT_PURPOSE, (epoch as u64) << 32 | step as u64);
        let span = 2 * CROP_PAD as u64 + 1;
        let mut draws: Vec<SampleDraw> = (0..n)
            .map(|_| {
                let flip = rng.below(2) == 1;
                let dy = rng.below(span) as i32 - CROP_PAD;
                let dx = rng.below(span) as i32 - CROP_PAD;
                let shift = SampleTransform { flip: flip && self.flip, dy: if self.crop { dy } else { 0 }, dx: if self.crop { dx } else { 0 } };
                SampleDraw { shift, ..SampleDraw::IDENTITY }
            })
            .collect();
        if self.layout() == Some(TransformLayout::Affine) {
            // Uniform in [-f, f): Keras's uniform(minval, maxval).
            let mut symmetric = |f: f32| f as f64 * (2.0 * rng.unit_f32() as f64 - 1.0);
            for d in &mut draws {
                d.degrees = symmetric(self.rotate);
                d.zoom = 1.0 + symmetric(self.zoom);
                d.contrast = 1.0 + symmetric(self.contrast);
                d.brightness = symmetric(self.brightness);
            }
        }
        draws
    }

    /// The packed [`SampleTransform`]s of the `n` samples of one training step (the flips and
    /// crops of `batch_draws`).
    pub fn batch_transforms(&self, n: usize, seed: u64, epoch: usize, step: usize) -> Vec<u32> {
        self.batch_draws(n, seed, epoch, step).iter().map(|d| d.shift.pack()).collect()
    }

    /// The packed transforms of one training step on the images `indices` of `set`, laid out
    /// as `layout()` says: one word per image for flip/crop, else [`AFFINE_WORDS`] (the
    /// contrast needs each image's channel means, which is why the images are passed).
    pub fn step_transforms(&self, set: &ImageSet, indices: &[u32], seed: u64, epoch: usize, step: usize) -> Vec<u32> {
        match self.layout() {
            None => Vec::new(),
            Some(TransformLayout::Shift) => self.batch_transforms(indices.len(), seed, epoch, step),
            Some(TransformLayout::Affine) => {
                let shape = (set.height, set.width, set.channels);
                let draws = self.batch_draws(indices.len(), seed, epoch, step);
                let mut words = Vec::with_capacity(indices.len() * AFFINE_WORDS);
                for (d, &i) in draws.iter().zip(indices) {
                    let sums = if self.contrast > 0.0 { channel_sums(set.image(i as usize), set.channels) } else { Vec::new() };
                    words.extend(AffineTransform::new(d, shape, &sums).pack());
                }
                words
            }
        }
    }
}

/// The sum of each channel's bytes over one image (exact: at most 255 * 2048^2 per channel).
pub fn channel_sums(image: &[u8], channels: usize) -> Vec<u64> {
    let mut sums = vec![0u64; channels];
    for pixel in image.chunks_exact(channels) {
        for (s, &v) in sums.iter_mut().zip(pixel) {
            *s += v as u64;
        }
    }
    sums
}

/// One sample's flip and crop. Output pixel (y, x) takes source pixel (y + dy, x' + dx), where
/// x' = W-1-x when flipped, else x; outside the image it is zero. That is: crop the zero-padded
/// image at offset (dy + pad, dx + pad), then mirror the crop left to right.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SampleTransform {
    pub flip: bool,
    pub dy: i32,
    pub dx: i32,
}

impl SampleTransform {
    /// Bit 0: flip; bits 8..16: dy and bits 16..24: dx, each an i8 in two's complement. The
    /// identity packs to 0. shaders/data.wgsl unpacks the same layout.
    pub fn pack(&self) -> u32 {
        assert!((-128..128).contains(&self.dy) && (-128..128).contains(&self.dx), "shift {self:?} does not fit an i8");
        self.flip as u32 | (self.dy as i8 as u8 as u32) << 8 | (self.dx as i8 as u8 as u32) << 16
    }

    pub fn unpack(code: u32) -> SampleTransform {
        SampleTransform { flip: code & 1 == 1, dy: (code >> 8) as u8 as i8 as i32, dx: (code >> 16) as u8 as i8 as i32 }
    }

    /// The source (row, column) of output pixel (y, x) in an image `height` x `width`, or None
    /// where the shift moved in zero padding.
    pub fn source(&self, y: usize, x: usize, height: usize, width: usize) -> Option<(usize, usize)> {
        let mirrored = if self.flip { width - 1 - x } else { x };
        let sy = y as i64 + self.dy as i64;
        let sx = mirrored as i64 + self.dx as i64;
        ((0..height as i64).contains(&sy) && (0..width as i64).contains(&sx)).then_some((sy as usize, sx as usize))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FLIP_CROP: Augmentation = Augmentation { flip: true, crop: true, ..Augmentation::NONE };

    #[test]
    fn parse_and_name_round_trip() {
        for text in ["none", "flip", "crop", "flip,crop", "rotate=15", "flip,crop,rotate=12.5,zoom=0.1,contrast=0.2,brightness=0.3", "zoom=1"] {
            assert_eq!(Augmentation::parse(text).unwrap().name(), text);
        }
        assert_eq!(Augmentation::parse("crop, flip").unwrap(), FLIP_CROP);
        let a = Augmentation::parse(" brightness = 0.1 ,rotate=30").unwrap();
        assert_eq!(a, Augmentation { rotate: 30.0, brightness: 0.1, ..Augmentation::NONE });
        assert_eq!(Augmentation::parse(&a.name()).unwrap(), a);
        assert_eq!(Augmentation::parse("rotate=0").unwrap(), Augmentation::NONE);
        // Each error names the bad item.
        for (text, bad) in [
            ("flip,rotate", "'rotate'"),
            ("", "''"),
            ("flip,shear=3", "'shear=3'"),
            ("rotate=200", "'rotate=200'"),
            ("zoom=1.5", "'zoom=1.5'"),
            ("contrast=-0.1", "'contrast=-0.1'"),
            ("brightness=abc", "'brightness=abc'"),
            ("brightness=nan", "'brightness=nan'"),
            ("zoom=0.0001", "'zoom=0.0001'"),
            ("flip=1", "'flip=1'"),
            ("crop,crop", "'crop'"),
        ] {
            let err = Augmentation::parse(text).unwrap_err().to_string();
            assert!(err.contains(bad), "{text}: {err}");
        }
    }

    #[test]
    fn layouts() {
        assert_eq!(Augmentation::NONE.layout(), None);
        assert_eq!(FLIP_CROP.layout(), Some(TransformLayout::Shift));
        assert_eq!(Augmentation { contrast: 0.1, ..Augmentation::NONE }.layout(), Some(TransformLayout::Affine));
        assert_eq!(TransformLayout::of_batch(7, 7), TransformLayout::Shift);
        assert_eq!(TransformLayout::of_batch(7 * AFFINE_WORDS, 7), TransformLayout::Affine);
        let rich = Augmentation { rotate: 10.0, ..Augmentation::NONE };
        assert!(rich.check_input((28, 28, 1)).is_ok() && rich.check_input((28, 28, 5)).is_err() && rich.check_input((4096, 8, 3)).is_err());
        assert!(FLIP_CROP.check_input((4096, 8, 5)).is_ok());
    }

    #[test]
    fn transforms_pack_and_unpack() {
        for flip in [false, true] {
            for dy in -CROP_PAD..=CROP_PAD {
                for dx in -CROP_PAD..=CROP_PAD {
                    let t = SampleTransform { flip, dy, dx };
                    assert_eq!(SampleTransform::unpack(t.pack()), t);
                }
            }
        }
        assert_eq!(SampleTransform::default().pack(), 0);
    }

    #[test]
    fn choices_depend_on_seed_epoch_and_step_only() {
        let a = FLIP_CROP;
        assert_eq!(a.batch_transforms(50, 7, 2, 3), a.batch_transforms(50, 7, 2, 3));
        assert_ne!(a.batch_transforms(50, 7, 2, 3), a.batch_transforms(50, 7, 3, 2));
        assert_ne!(a.batch_transforms(50, 7, 2, 3), a.batch_transforms(50, 8, 2, 3));
        let t: Vec<SampleTransform> = a.batch_transforms(500, 1, 0, 0).into_iter().map(SampleTransform::unpack).collect();
        assert!(t.iter().any(|t| t.flip) && t.iter().any(|t| !t.flip));
        assert!(t.iter().all(|t| t.dy.abs() <= CROP_PAD && t.dx.abs() <= CROP_PAD));
        assert!(t.iter().any(|t| t.dy == -CROP_PAD) && t.iter().any(|t| t.dx == CROP_PAD));
        let flip_only = Augmentation { flip: true, ..Augmentation::NONE }.batch_transforms(500, 1, 0, 0);
        assert!(flip_only.iter().map(|&c| SampleTransform::unpack(c)).all(|s| s.dy == 0 && s.dx == 0));
        assert!(Augmentation::NONE.batch_transforms(100, 1, 0, 0).iter().all(|&c| c == 0));
    }

    #[test]
    fn factors_draw_in_their_ranges_without_moving_the_flips_and_crops() {
        let rich = Augmentation { rotate: 20.0, zoom: 0.25, contrast: 0.5, brightness: 0.125, ..FLIP_CROP };
        let draws = rich.batch_draws(400, 3, 1, 2);
        let shifts: Vec<SampleTransform> = draws.iter().map(|d| d.shift).collect();
        let plain: Vec<SampleTransform> = FLIP_CROP.batch_draws(400, 3, 1, 2).iter().map(|d| d.shift).collect();
        assert_eq!(shifts, plain);
        // (which draw, its centre, its half-width)
        type Field = (fn(&SampleDraw) -> f64, f64, f64);
        let fields: [Field; 4] = [(|d| d.degrees, 0.0, 20.0), (|d| d.zoom, 1.0, 0.25), (|d| d.contrast, 1.0, 0.5), (|d| d.brightness, 0.0, 0.125)];
        for (get, centre, half) in fields {
            let v: Vec<f64> = draws.iter().map(get).collect();
            assert!(v.iter().all(|&x| (x - centre).abs() <= half), "outside {centre} +- {half}");
            // Both halves of the range are used, and most of its width.
            assert!(v.iter().any(|&x| x < centre - 0.8 * half) && v.iter().any(|&x| x > centre + 0.8 * half));
        }
        // Turning contrast off leaves the other factors' draws as they were.
        let fewer = Augmentation { contrast: 0.0, ..rich }.batch_draws(400, 3, 1, 2);
        assert!(fewer.iter().zip(&draws).all(|(f, d)| f.degrees == d.degrees && f.zoom == d.zoom && f.contrast == 1.0));
    }
}
