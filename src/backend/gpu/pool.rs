//! Max-pooling ops (shaders/pool.wgsl).

use super::recorder::linear_grid;
use super::{GpuBackend, GpuIndices, GpuTensor};
use crate::backend::PoolShape;

fn pool_params(s: &PoolShape, n: usize) -> [u32; 12] {
    [
        n as u32, s.in_h as u32, s.in_w as u32, s.c as u32,
        s.out_h as u32, s.out_w as u32, s.size_h as u32, s.size_w as u32,
        s.stride_h as u32, s.stride_w as u32, 0, 0,
    ]
}

impl GpuBackend {
    // x (n, in_h, in_w, c) -> y (n, out_h, out_w, c), argmax (same shape as y).
    pub(super) fn record_maxpool_forward(&self, x: &GpuTensor, y: &mut GpuTensor, argmax: &mut GpuIndices, s: &PoolShape, n: usize) {
        let bound = [x.at(1), y.at(3), argmax.at(4)];
        let groups = linear_grid(n * s.out_len(), self.max_per_dim());
        self.recorder.dispatch(&self.ctx.device, &self.pipelines.maxpool_forward, &pool_params(s, n), &bound, groups);
    }

    // dy (n, out_h, out_w, c), argmax -> dx (n, in_h, in_w, c).
    pub(super) fn record_maxpool_backward(&self, dy: &GpuTensor, argmax: &GpuIndices, dx: &mut GpuTensor, s: &PoolShape, n: usize) {
        let bound = [dy.at(1), argmax.at(2), dx.at(3)];
        let groups = linear_grid(n * s.in_len(), self.max_per_dim());
        self.recorder.dispatch(&self.ctx.device, &self.pipelines.maxpool_backward, &pool_params(s, n), &bound, groups);
    }
}
