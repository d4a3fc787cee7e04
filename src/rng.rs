//! A small seeded generator (SplitMix64) so runs repeat exactly on every platform, without
//! depending on a crate's stream staying the same across versions.

/// What a derived stream is for (`Rng::derive`'s `purpose`): one constant per use, so two uses
/// never share a stream by accident, and a seeded run draws the same numbers forever.
pub mod purpose {
    /// Glorot-uniform initial weights; index = the layer.
    pub const INIT_WEIGHTS: u64 = 1;
    /// The training order of each epoch; index = the epoch.
    pub const SHUFFLE: u64 = 2;
    /// Per-sample augmentation; index = (epoch << 32) | step.
    pub const AUGMENT: u64 = 3;
    /// The stratified validation split of an image folder; index = the class.
    pub const VAL_SPLIT: u64 = 0x5A11_7E57;
    /// Dropout masks (backend/dropout.rs step_key); index = the training step over the run.
    pub const DROPOUT: u64 = 0xD20F_0000;
    /// All of them, for the test that keeps them distinct.
    pub const ALL: [u64; 5] = [INIT_WEIGHTS, SHUFFLE, AUGMENT, VAL_SPLIT, DROPOUT];
}

#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    /// A generator for one purpose and one index (e.g. the shuffle of epoch 3), independent of
    /// how many numbers other purposes drew.
    pub fn derive(seed: u64, purpose: u64, index: u64) -> Rng {
        let mut r = Rng(seed ^ purpose.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        r.0 ^= r.next_u64() ^ index.wrapping_mul(0xD1B5_4A32_D192_ED03);
        r.next_u64();
        r
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in 0..n (n > 0), by rejection so there is no modulo bias.
    pub fn below(&mut self, n: u64) -> u64 {
        let zone = u64::MAX - u64::MAX % n;
        loop {
            let v = self.next_u64();
            if v < zone {
                return v % n;
            }
        }
    }
    /// Uniform in [0, 1) with 24 bits, as an f32 would hold.
    pub fn unit_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purposes_are_distinct_and_give_distinct_streams() {
        let mut seen = std::collections::HashSet::new();
        for p in purpose::ALL {
            assert!(seen.insert(p), "purpose {p} used twice");
        }
        let firsts: std::collections::HashSet<u64> = purpose::ALL.iter().map(|&p| Rng::derive(7, p, 0).next_u64()).collect();
        assert_eq!(firsts.len(), purpose::ALL.len());
    }
}
