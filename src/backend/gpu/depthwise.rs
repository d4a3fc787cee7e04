//! Depthwise convolution ops (shaders/depthwise.wgsl): one invocation per value; the filter
//! gradient as split partial sums added in order by the conv filter gradient's own kernel.

use super::conv::split_k;
use super::params::{u32_of, DepthwiseParams};
use super::recorder::linear_grid;
use super::{GpuBackend, GpuTensor};
use crate::backend::DepthwiseShape;

fn depthwise_params(s: &DepthwiseShape, n: usize) -> DepthwiseParams {
    DepthwiseParams {
        n: u32_of(n),
        in_h: u32_of(s.in_h),
        in_w: u32_of(s.in_w),
        channels: u32_of(s.channels),
        multiplier: u32_of(s.multiplier),
        out_h: u32_of(s.out_h),
        out_w: u32_of(s.out_w),
        k_h: u32_of(s.k_h),
        k_w: u32_of(s.k_w),
        stride_h: u32_of(s.stride_h),
        stride_w: u32_of(s.stride_w),
        pad_top: u32_of(s.pad_top),
        pad_left: u32_of(s.pad_left),
        dilation_h: u32_of(s.dilation_h),
        dilation_w: u32_of(s.dilation_w),
        ..Default::default()
    }
}

impl GpuBackend {
    // x (n, in_h, in_w, channels), w (taps, out_c), b (out_c) or none -> y (n, out_h, out_w, out_c).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn record_depthwise_forward(
        &self,
        x: &GpuTensor,
        w: &GpuTensor,
        b: Option<&GpuTensor>,
        y: &mut GpuTensor,
        s: &DepthwiseShape,
        n: usize,
        relu: bool,
    ) {
        let params = DepthwiseParams { bias: b.is_some() as u32, relu: relu as u32, ..depthwise_params(s, n) };
        // Without a bias the kernel does not read binding 3, but it must be bound: w stands in.
        let bound = [x.at(1), w.at(2), b.unwrap_or(w).at(3), y.at(4)];
        self.dispatch(&self.pipelines.depthwise_forward, &params, &bound, linear_grid(n * s.out_len(), self.max_per_dim()));
        self.moved(n * s.in_len() + s.kernel_len() + b.map_or(0, |_| s.out_c()), n * s.out_len());
    }

    // dy (n, out_h, out_w, out_c), w -> dx (n, in_h, in_w, channels).
    pub(super) fn record_depthwise_backward_input(&self, dy: &GpuTensor, w: &GpuTensor, dx: &mut GpuTensor, s: &DepthwiseShape, n: usize) {
        let bound = [dy.at(1), w.at(2), dx.at(4)];
        self.dispatch(&self.pipelines.depthwise_backward_input, &depthwise_params(s, n), &bound, linear_grid(n * s.in_len(), self.max_per_dim()));
        self.moved(n * s.out_len() + s.kernel_len(), n * s.in_len());
    }

    // x, dy -> dw (taps, out_c) and db (out_c) unless None, overwritten: split partial sums
    // (splits, taps + 1, out_c) into the scratch buffer, then the splits added in order.
    pub(super) fn record_depthwise_backward_filter(
        &self,
        x: &GpuTensor,
        dy: &GpuTensor,
        dw: &mut GpuTensor,
        db: Option<&mut GpuTensor>,
        s: &DepthwiseShape,
        n: usize,
    ) {
        let rows = s.taps() + 1; // + the bias gradient's row
        let (per, splits) = split_k(n * s.out_h * s.out_w, rows * s.out_c());
        let Some(scratch) = self.scratch(splits * rows * s.out_c()) else { return };
        let params = DepthwiseParams { k_per_split: u32_of(per), ..depthwise_params(s, n) };
        let bound = [x.at(1), dy.at(2), scratch.at(4)];
        self.dispatch(&self.pipelines.depthwise_backward_filter, &params, &bound, linear_grid(splits * rows * s.out_c(), self.max_per_dim()));
        self.moved(n * (s.in_len() + s.out_len()), splits * rows * s.out_c());
        self.record_sum_split_partials(&scratch, dw, db, s.taps(), s.out_c(), splits);
    }
}
