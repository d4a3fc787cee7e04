//! A small seeded data set that a CNN can learn in a few epochs: each class is a bright
//! square at its own place with its own colour, on noise, jittered by a few pixels. For tests
//! and demos; no files needed.

use super::{Dataset, ImageSet};
use crate::rng::Rng;

#[derive(Clone, Debug)]
pub struct SyntheticSpec {
    pub train: usize,
    pub test: usize,
    pub height: usize,
    pub width: usize,
    pub channels: usize,
    pub classes: usize,
}

impl Default for SyntheticSpec {
    fn default() -> Self {
        SyntheticSpec { train: 2000, test: 500, height: 32, width: 32, channels: 3, classes: 10 }
    }
}

fn make_split(spec: &SyntheticSpec, n: usize, rng: &mut Rng) -> ImageSet {
    let (h, w, c) = (spec.height, spec.width, spec.channels);
    let side = (h.min(w) / 4).max(1);
    let mut set = ImageSet { height: h, width: w, channels: c, ..Default::default() };
    let images = std::sync::Arc::make_mut(&mut set.images);
    images.reserve(n * h * w * c);
    for _ in 0..n {
        let label = rng.below(spec.classes as u64) as usize;
        // The class's square sits on a ring of places; jitter by up to 2 pixels.
        let angle = label as f64 / spec.classes as f64 * std::f64::consts::TAU;
        let cy = (h as f64 / 2.0 + angle.sin() * h as f64 / 4.0) as isize + rng.below(5) as isize - 2;
        let cx = (w as f64 / 2.0 + angle.cos() * w as f64 / 4.0) as isize + rng.below(5) as isize - 2;
        for y in 0..h as isize {
            for x in 0..w as isize {
                let inside = (y - cy).abs() <= side as isize / 2 && (x - cx).abs() <= side as isize / 2;
                for ch in 0..c {
                    let noise = rng.below(80) as u8;
                    let bright = 150 + ((label * 37 + ch * 53) % 100) as u8;
                    images.push(if inside { bright.saturating_add(noise / 4) } else { noise });
                }
            }
        }
        set.labels.push(label as u8);
    }
    set
}

/// The data set of `spec`, seeded.
///
/// # Panics
/// With `classes` 0 or over 256 (labels are u8), or sizes whose pixels do not fit in memory:
/// a generator for tests and demos, whose spec is the program's own.
pub fn generate(spec: &SyntheticSpec, seed: u64) -> Dataset {
    assert!((1..=256).contains(&spec.classes), "SyntheticSpec::classes must be 1 to 256, not {}", spec.classes);
    let mut rng = Rng::new(seed ^ 0x5EED_DA7A);
    let train = make_split(spec, spec.train, &mut rng);
    let test = make_split(spec, spec.test, &mut rng);
    Dataset { name: "synthetic".into(), class_names: (0..spec.classes).map(|i| format!("class {i}")).collect(), train, test }
}
