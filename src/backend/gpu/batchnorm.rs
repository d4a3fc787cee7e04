//! BatchNormalization (shaders/batchnorm.wgsl): per-channel sums by one workgroup per channel
//! in a fixed order, element-wise passes on a linear grid. Training forward = batch_stats +
//! normalize; inference forward = moving_stats + normalize; backward = backward_sums +
//! backward_input. Each kernel binds at most five storage buffers (the most some adapters allow).

use super::params::{u32_of, BatchNormParams};
use super::recorder::{linear_grid, LINEAR_GROUP_SIZE};
use super::{GpuBackend, GpuTensor};
use crate::backend::{BatchNormConfig, BatchNormShape};

fn params(s: &BatchNormShape, n: usize, momentum: f32, epsilon: f32) -> BatchNormParams {
    BatchNormParams { rows: u32_of(n * s.positions), channels: u32_of(s.channels), momentum, epsilon, relu: s.relu as u32, unused0: 0, unused1: 0, unused2: 0 }
}

impl GpuBackend {
    /// One workgroup (of 256, the per-channel kernels' size) per channel.
    fn per_channel_grid(&self, channels: usize) -> [u32; 3] {
        linear_grid(channels * LINEAR_GROUP_SIZE as usize, self.max_per_dim())
    }

    // saved[..2c] = the statistics; y = gamma * xhat + beta.
    fn record_batchnorm_normalize(&self, x: &GpuTensor, gamma: &GpuTensor, beta: &GpuTensor, saved: &GpuTensor, y: &mut GpuTensor, p: &BatchNormParams) {
        let len = p.rows as usize * p.channels as usize;
        let bound = [x.at(1), gamma.at(3), beta.at(4), saved.at(5), y.at(8)];
        self.dispatch(&self.pipelines.batchnorm_normalize, p, &bound, linear_grid(len, self.max_per_dim()));
        self.moved(len + 4 * p.channels as usize, len);
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn record_batchnorm_forward_train(
        &self,
        x: &GpuTensor,
        gamma: &GpuTensor,
        beta: &GpuTensor,
        moving_mean: &mut GpuTensor,
        moving_variance: &mut GpuTensor,
        saved: &mut GpuTensor,
        y: &mut GpuTensor,
        s: &BatchNormShape,
        n: usize,
        h: &BatchNormConfig,
    ) {
        let p = params(s, n, h.momentum, h.epsilon);
        if p.rows == 0 || p.channels == 0 {
            return;
        }
        let bound = [x.at(1), saved.at(5), moving_mean.at(6), moving_variance.at(7)];
        self.dispatch(&self.pipelines.batchnorm_batch_stats, &p, &bound, self.per_channel_grid(s.channels));
        self.moved(2 * n * s.len() + 2 * s.channels, 4 * s.channels);
        self.record_batchnorm_normalize(x, gamma, beta, saved, y, &p);
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn record_batchnorm_forward_infer(
        &self,
        x: &GpuTensor,
        gamma: &GpuTensor,
        beta: &GpuTensor,
        moving_mean: &GpuTensor,
        moving_variance: &GpuTensor,
        saved: &mut GpuTensor,
        y: &mut GpuTensor,
        s: &BatchNormShape,
        n: usize,
        epsilon: f32,
    ) {
        let p = params(s, n, 0.0, epsilon);
        if p.channels == 0 {
            return;
        }
        let bound = [saved.at(5), moving_mean.at(6), moving_variance.at(7)];
        self.dispatch(&self.pipelines.batchnorm_moving_stats, &p, &bound, linear_grid(s.channels, self.max_per_dim()));
        self.moved(2 * s.channels, 2 * s.channels);
        self.record_batchnorm_normalize(x, gamma, beta, saved, y, &p);
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn record_batchnorm_backward(
        &self,
        x: &GpuTensor,
        dy: &GpuTensor,
        gamma: &GpuTensor,
        saved: &mut GpuTensor,
        dx: &mut GpuTensor,
        dgamma: &mut GpuTensor,
        dbeta: &mut GpuTensor,
        s: &BatchNormShape,
        n: usize,
    ) {
        let p = params(s, n, 0.0, 0.0);
        if p.rows == 0 || p.channels == 0 {
            return;
        }
        let len = n * s.len();
        let bound = [x.at(1), dy.at(2), saved.at(5), dgamma.at(9), dbeta.at(10)];
        self.dispatch(&self.pipelines.batchnorm_backward_sums, &p, &bound, self.per_channel_grid(s.channels));
        self.moved(2 * len + 2 * s.channels, 4 * s.channels);
        let bound = [x.at(1), dy.at(2), gamma.at(3), saved.at(5), dx.at(8)];
        self.dispatch(&self.pipelines.batchnorm_backward_input, &p, &bound, linear_grid(len, self.max_per_dim()));
        self.moved(2 * len + 5 * s.channels, len);
    }
}
