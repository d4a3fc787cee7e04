//! Max- and average-pooling ops, any padding, global pooling included (shaders/pool.wgsl).

use super::params::{u32_of, PoolParams};
use super::recorder::linear_grid;
use super::{GpuBackend, GpuIndices, GpuTensor};
use crate::backend::PoolShape;

fn pool_params(s: &PoolShape, n: usize) -> PoolParams {
    PoolParams {
        n: u32_of(n),
        in_h: u32_of(s.in_h),
        in_w: u32_of(s.in_w),
        c: u32_of(s.c),
        out_h: u32_of(s.out_h),
        out_w: u32_of(s.out_w),
        size_h: u32_of(s.size_h),
        size_w: u32_of(s.size_w),
        stride_h: u32_of(s.stride_h),
        stride_w: u32_of(s.stride_w),
        pad_top: u32_of(s.pad_top),
        pad_left: u32_of(s.pad_left),
        ..Default::default()
    }
}

impl GpuBackend {
    // x (n, in_h, in_w, c) -> y (n, out_h, out_w, c), argmax (same shape as y).
    pub(super) fn record_maxpool_forward(&self, x: &GpuTensor, y: &mut GpuTensor, argmax: &mut GpuIndices, s: &PoolShape, n: usize) {
        let bound = [x.at(1), y.at(3), argmax.at(4)];
        let groups = linear_grid(n * s.out_len(), self.max_per_dim());
        self.dispatch(&self.pipelines.maxpool_forward, &pool_params(s, n), &bound, groups);
        self.moved(n * s.in_len(), 2 * n * s.out_len());
    }

    // dy (n, out_h, out_w, c), argmax -> dx (n, in_h, in_w, c); with `relu_y`, 0 where
    // relu_y <= 0 (the ReLU backward of the layer before, fused).
    pub(super) fn record_maxpool_backward(&self, dy: &GpuTensor, argmax: &GpuIndices, relu_y: Option<&GpuTensor>, dx: &mut GpuTensor, s: &PoolShape, n: usize) {
        let params = PoolParams { relu_mask: relu_y.is_some() as u32, ..pool_params(s, n) };
        // Without a mask the kernel does not read binding 5, but it must be bound: dy stands in.
        let bound = [dy.at(1), argmax.at(2), dx.at(3), relu_y.unwrap_or(dy).at(5)];
        let groups = linear_grid(n * s.in_len(), self.max_per_dim());
        self.dispatch(&self.pipelines.maxpool_backward, &params, &bound, groups);
        self.moved(2 * n * s.out_len() + relu_y.map_or(0, |_| n * s.in_len()), n * s.in_len());
    }

    // x (n, in_h, in_w, c) -> y (n, out_h, out_w, c), the mean of each window's real cells.
    pub(super) fn record_avgpool_forward(&self, x: &GpuTensor, y: &mut GpuTensor, s: &PoolShape, n: usize) {
        let bound = [x.at(1), y.at(3)];
        let groups = linear_grid(n * s.out_len(), self.max_per_dim());
        self.dispatch(&self.pipelines.avgpool_forward, &pool_params(s, n), &bound, groups);
        self.moved(n * s.in_len(), n * s.out_len());
    }

    // dy (n, out_h, out_w, c) -> dx (n, in_h, in_w, c).
    pub(super) fn record_avgpool_backward(&self, dy: &GpuTensor, dx: &mut GpuTensor, s: &PoolShape, n: usize) {
        let bound = [dy.at(1), dx.at(3)];
        let groups = linear_grid(n * s.in_len(), self.max_per_dim());
        self.dispatch(&self.pipelines.avgpool_backward, &pool_params(s, n), &bound, groups);
        self.moved(n * s.out_len(), n * s.in_len());
    }
}
