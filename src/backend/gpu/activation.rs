//! Element-wise activations (shaders/activation.wgsl): one pipeline each way, the function
//! chosen by the uniform's `kind`.

use super::params::{u32_of, ActivationParams};
use super::recorder::linear_grid;
use super::{GpuBackend, GpuTensor};
use crate::backend::ActivationFn;

/// The shader's `kind` number and scalar parameter (slope or alpha) of `f`.
fn activation_params(f: ActivationFn, len: usize) -> ActivationParams {
    let (kind, alpha) = match f {
        ActivationFn::Relu => (0, 0.0),
        ActivationFn::LeakyRelu { negative_slope } => (1, negative_slope),
        ActivationFn::Elu { alpha } => (2, alpha),
        ActivationFn::Gelu => (3, 0.0),
        ActivationFn::Sigmoid => (4, 0.0),
        ActivationFn::Tanh => (5, 0.0),
        ActivationFn::Swish => (6, 0.0),
    };
    ActivationParams { len: u32_of(len), kind, alpha, ..Default::default() }
}

impl GpuBackend {
    // x (len) -> y (len) = f(x).
    pub(super) fn record_activation_forward(&self, x: &GpuTensor, y: &mut GpuTensor, len: usize, f: ActivationFn) {
        let bound = [x.at(1), y.at(2)];
        self.dispatch(&self.pipelines.activation_forward, &activation_params(f, len), &bound, linear_grid(len, self.max_per_dim()));
        self.moved(len, len);
    }

    // x, y = f(x) (len) -> dy (len) *= f'(x).
    pub(super) fn record_activation_backward(&self, x: &GpuTensor, y: &GpuTensor, dy: &mut GpuTensor, len: usize, f: ActivationFn) {
        let bound = [x.at(1), dy.at(3), y.at(4)];
        self.dispatch(&self.pipelines.activation_backward, &activation_params(f, len), &bound, linear_grid(len, self.max_per_dim()));
        self.moved(3 * len, len);
    }
}
