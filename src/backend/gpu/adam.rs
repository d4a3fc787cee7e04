//! Adam (shaders/adam.wgsl). The step's scalars change every step, so they live in one small
//! uniform written with the queue rather than in the cached per-shape uniforms (which would
//! mean a new buffer per step).

use super::buffer::Bound;
use super::params::{u32_of, AdamScalars, AdamShape};
use super::recorder::linear_grid;
use super::{GpuBackend, GpuTensor};
use crate::backend::AdamStep;

impl GpuBackend {
    // param, m, v (len) updated in place from grad (len).
    pub(super) fn record_adam_update(&self, param: &mut GpuTensor, grad: &GpuTensor, m: &mut GpuTensor, v: &mut GpuTensor, len: usize, h: &AdamStep) {
        let scalars = AdamScalars { alpha: h.alpha(), beta1: h.config.beta1, beta2: h.config.beta2, epsilon: h.config.epsilon };
        // Compared by their bits (a NaN learning rate must not look new every time).
        let bits: [u32; 4] = bytemuck::cast(scalars);
        // A queue write lands before the next submission's commands: if this encoder already
        // holds an update with other scalars, submit it first so it keeps its own.
        if self.adam_scalars_in_encoder.get().is_some_and(|s| s != bits) {
            self.submit_pending();
        }
        if self.adam_scalars_written.get() != Some(bits) {
            self.ctx.queue.write_buffer(&self.adam_scalars, 0, bytemuck::bytes_of(&scalars));
            self.count_written(std::mem::size_of_val(&scalars));
            self.adam_scalars_written.set(Some(bits));
        }
        self.adam_scalars_in_encoder.set(Some(bits));
        let params = AdamShape { len: u32_of(len), ..Default::default() };
        let scalars_at = Bound { binding: 1, buffer: &self.adam_scalars, id: self.adam_scalars_id };
        let bound = [scalars_at, param.at(2), grad.at(3), m.at(4), v.at(5)];
        self.dispatch(&self.pipelines.adam_update, &params, &bound, linear_grid(len, self.max_per_dim()));
        self.moved(4 + 4 * len, 3 * len);
    }
}
