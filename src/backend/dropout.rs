//! Dropout's mask as a counter-based hash, so no mask is stored or sent: element i of a layer's
//! tensor is kept or dropped by a hash of (step key, layer, i) in u32 arithmetic, which
//! shaders/dropout.wgsl computes with the same operations. Both backends therefore draw the same
//! mask, the backward recomputes the forward's mask, and a resumed run draws the same masks.

use crate::rng::{purpose, Rng};
use anyhow::{ensure, Result};

/// One Dropout layer's mask parameters (fixed for the layer; the step's key comes separately).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DropoutMask {
    /// The layer's index in the model: two Dropout layers in one step draw different masks.
    pub layer: u32,
    /// Element i is dropped when its hash is below this: round(rate * 2^32).
    pub threshold: u32,
    /// What a kept value is multiplied by: 1 / (1 - rate), in f32 on every backend.
    pub scale: f32,
}

impl DropoutMask {
    /// Keras's Dropout(rate): rate in [0, 1).
    pub fn new(rate: f32, layer: u32) -> Result<Self> {
        ensure!((0.0..1.0).contains(&rate), "Dropout rate {rate} is not in [0, 1)");
        let threshold = (rate as f64 * 4294967296.0).round().min(u32::MAX as f64) as u32;
        Ok(DropoutMask { layer, threshold, scale: 1.0 / (1.0 - rate) })
    }
}

/// The key of training step `step` (counted over the whole run, so a resumed run continues the
/// same sequence): two u32 the network uploads once per step for all its Dropout layers.
pub fn step_key(seed: u64, step: u64) -> [u32; 2] {
    let bits = Rng::derive(seed, purpose::DROPOUT, step).next_u64();
    [bits as u32, (bits >> 32) as u32]
}

/// PCG's output hash (O'Neill's RXS-M-XS on one LCG step): a bijection of u32 that mixes
/// every input bit into every output bit. Wrapping u32 arithmetic, as WGSL's.
#[inline(always)]
pub fn pcg_hash(v: u32) -> u32 {
    let state = v.wrapping_mul(747796405).wrapping_add(2891336453);
    let word = ((state >> ((state >> 28) + 4)) ^ state).wrapping_mul(277803737);
    (word >> 22) ^ word
}

/// The hash that decides element `i` of layer `layer` with the step's `key`.
pub fn element_hash(key: [u32; 2], layer: u32, i: u32) -> u32 {
    element_hash_in(layer_stream(key, layer), key, i)
}

/// The part of the element hash shared by a layer's elements in one step.
pub fn layer_stream(key: [u32; 2], layer: u32) -> u32 {
    pcg_hash(key[0] ^ pcg_hash(key[1] ^ layer))
}

/// `element_hash` given its layer's stream.
#[inline(always)]
pub fn element_hash_in(stream: u32, key: [u32; 2], i: u32) -> u32 {
    pcg_hash(pcg_hash(i ^ stream) ^ key[1])
}

/// True when element `i` is kept (with probability 1 - threshold / 2^32); `stream` is
/// `layer_stream(key, mask.layer)`, hashed once for all of the layer's elements.
#[inline(always)]
pub fn keeps(stream: u32, key: [u32; 2], mask: &DropoutMask, i: u32) -> bool {
    element_hash_in(stream, key, i) >= mask.threshold
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hash's first values, pinned (computed by an independent Python transcription of the
    /// formulas): the WGSL copy is checked against this one by tests/dropout.rs, and this keeps
    /// this one from drifting, which would change every resumed run's masks.
    #[test]
    fn the_hash_is_pinned() {
        let firsts: Vec<u32> = (0..4).map(|i| element_hash([1, 2], 3, i)).collect();
        assert_eq!(firsts, PINNED);
        let mut seen = std::collections::HashSet::new();
        assert!((0..10_000u32).all(|v| seen.insert(pcg_hash(v))), "pcg_hash is a bijection");
    }
    const PINNED: [u32; 4] = [1782204697, 2764454639, 77328835, 1323900735];

    #[test]
    fn rates_outside_zero_to_one_are_refused() {
        assert!(DropoutMask::new(1.0, 0).is_err());
        assert!(DropoutMask::new(-0.1, 0).is_err());
        assert!(DropoutMask::new(f32::NAN, 0).is_err());
        let zero = DropoutMask::new(0.0, 0).unwrap();
        assert_eq!((zero.threshold, zero.scale), (0, 1.0));
        assert_eq!(DropoutMask::new(0.5, 0).unwrap().threshold, 1 << 31);
    }
}
