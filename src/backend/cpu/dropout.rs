//! Dropout's CPU loop. It runs as a `Kernel` with its operands as fields, not as a closure
//! through `simd::vectorized`: LLVM vectorises the mask hash's u32 multiplies and per-lane
//! shifts (AVX2) only this way; through the closure it stayed scalar, 7 ns an element.

use super::simd::{Kernel, Lanes};
use crate::backend::dropout::element_hash_in;

/// y[j] = x[j] * scale where element first + j is kept, else 0.
pub struct Chunk<'a> {
    pub y: &'a mut [f32],
    pub x: &'a [f32],
    /// The element index of x[0].
    pub first: u32,
    /// `layer_stream(key, layer)`.
    pub stream: u32,
    pub key: [u32; 2],
    pub threshold: u32,
    pub scale: f32,
}

impl Kernel for Chunk<'_> {
    type Output = ();
    fn lanes_fit(&self, _: usize) -> bool {
        true
    }
    #[inline(always)]
    fn run<L: Lanes>(self) {
        for (j, (y, &x)) in self.y.iter_mut().zip(self.x).enumerate() {
            let h = element_hash_in(self.stream, self.key, self.first.wrapping_add(j as u32));
            *y = if h >= self.threshold { x * self.scale } else { 0.0 };
        }
    }
}
