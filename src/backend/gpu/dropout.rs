//! Dropout (shaders/dropout.wgsl). The layer's fixed parameters go in the cached uniform; the
//! step's key is a 2-u32 buffer the network writes once per step, so a step adds no bind group.

use super::params::{u32_of, DropoutParams};
use super::recorder::linear_grid;
use super::{GpuBackend, GpuIndices, GpuTensor};
use crate::backend::dropout::DropoutMask;

impl GpuBackend {
    pub(super) fn record_dropout(&self, x: &GpuTensor, y: &mut GpuTensor, len: usize, key: &GpuIndices, mask: &DropoutMask) {
        assert!(key.len() >= 2, "a dropout key is 2 u32");
        let params = DropoutParams { len: u32_of(len), layer: mask.layer, threshold: mask.threshold, scale: mask.scale };
        let bound = [x.at(1), y.at(2), key.at(3)];
        self.dispatch(&self.pipelines.dropout, &params, &bound, linear_grid(len, self.max_per_dim()));
        self.moved(len + 2, len);
    }
}
