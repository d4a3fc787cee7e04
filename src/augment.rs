//! Training-data augmentation: random horizontal flips and random crops after zero padding
//! (the standard CIFAR recipe: pad 4 pixels, crop back to size at a random offset).
//!
//! The random choices are made on the host, per training step, from (seed, epoch, step) alone,
//! so a resumed run makes exactly the choices an uninterrupted one would. Each sample's choice
//! is one [`SampleTransform`] packed into a u32; the backend's `gather_batch` applies it while
//! it builds the batch (on the GPU inside the gather kernel: only these few bytes per step
//! cross to the device, never pixels). Evaluation and prediction never augment.

use crate::rng::Rng;
use anyhow::{bail, Result};

/// What salts the augmentation generator (the shuffle uses 2).
pub const AUGMENT_PURPOSE: u64 = crate::rng::purpose::AUGMENT;

/// Zero padding before the random crop: the crop shifts the image by up to this many pixels
/// each way.
pub const CROP_PAD: i32 = 4;

/// Which augmentations a training run applies (`--augment flip,crop`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Augmentation {
    pub flip: bool,
    pub crop: bool,
}

impl Augmentation {
    pub const NONE: Augmentation = Augmentation { flip: false, crop: false };

    /// "none", or a comma list of "flip" and "crop" (in any order, spaces allowed).
    pub fn parse(text: &str) -> Result<Augmentation> {
        let mut a = Augmentation::NONE;
        let words: Vec<&str> = text.split(',').map(str::trim).collect();
        if words == ["none"] {
            return Ok(a);
        }
        for word in words {
            match word {
                "flip" => a.flip = true,
                "crop" => a.crop = true,
                _ => bail!("unknown augmentation '{word}' in '{text}': use none, or a comma list of flip and crop"),
            }
        }
        Ok(a)
    }

    pub fn is_none(&self) -> bool {
        !self.flip && !self.crop
    }

    /// The canonical text ("none", "flip", "crop", "flip,crop"); `parse` reads it back.
    pub fn name(&self) -> String {
        match (self.flip, self.crop) {
            (false, false) => "none".into(),
            (true, false) => "flip".into(),
            (false, true) => "crop".into(),
            (true, true) => "flip,crop".into(),
        }
    }

    /// The packed transforms of the `n` samples of one training step. Depends only on
    /// (seed, epoch, step). Every sample draws a flip and both offsets whatever is enabled, so
    /// "flip" makes the same flips as "flip,crop".
    pub fn batch_transforms(&self, n: usize, seed: u64, epoch: usize, step: usize) -> Vec<u32> {
        let mut rng = Rng::derive(seed, AUGMENT_PURPOSE, (epoch as u64) << 32 | step as u64);
        let span = 2 * CROP_PAD as u64 + 1;
        (0..n)
            .map(|_| {
                let flip = rng.below(2) == 1;
                let dy = rng.below(span) as i32 - CROP_PAD;
                let dx = rng.below(span) as i32 - CROP_PAD;
                let t = SampleTransform { flip: flip && self.flip, dy: if self.crop { dy } else { 0 }, dx: if self.crop { dx } else { 0 } };
                t.pack()
            })
            .collect()
    }
}

/// One sample's augmentation. Output pixel (y, x) takes source pixel (y + dy, x' + dx), where
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

    #[test]
    fn parse_and_name_round_trip() {
        for text in ["none", "flip", "crop", "flip,crop"] {
            assert_eq!(Augmentation::parse(text).unwrap().name(), text);
        }
        assert_eq!(Augmentation::parse("crop, flip").unwrap(), Augmentation { flip: true, crop: true });
        assert!(Augmentation::parse("flip,rotate").is_err());
        assert!(Augmentation::parse("").is_err());
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
        let a = Augmentation { flip: true, crop: true };
        assert_eq!(a.batch_transforms(50, 7, 2, 3), a.batch_transforms(50, 7, 2, 3));
        assert_ne!(a.batch_transforms(50, 7, 2, 3), a.batch_transforms(50, 7, 3, 2));
        assert_ne!(a.batch_transforms(50, 7, 2, 3), a.batch_transforms(50, 8, 2, 3));
        let t: Vec<SampleTransform> = a.batch_transforms(500, 1, 0, 0).into_iter().map(SampleTransform::unpack).collect();
        assert!(t.iter().any(|t| t.flip) && t.iter().any(|t| !t.flip));
        assert!(t.iter().all(|t| t.dy.abs() <= CROP_PAD && t.dx.abs() <= CROP_PAD));
        assert!(t.iter().any(|t| t.dy == -CROP_PAD) && t.iter().any(|t| t.dx == CROP_PAD));
        let flip_only = Augmentation { flip: true, crop: false }.batch_transforms(500, 1, 0, 0);
        assert!(flip_only.iter().map(|&c| SampleTransform::unpack(c)).all(|s| s.dy == 0 && s.dx == 0));
        assert!(Augmentation::NONE.batch_transforms(100, 1, 0, 0).iter().all(|&c| c == 0));
    }
}
