//! The optimizers' updates (shaders/adam.wgsl, adamw.wgsl, sgd.wgsl, rmsprop.wgsl). A step's
//! scalars (Adam's bias-corrected alpha, a scheduled learning rate) can change every step, so
//! they live in one small uniform written with the queue rather than in the cached per-shape
//! uniforms (which would mean a new buffer per step). Each optimizer writes only its own
//! struct's bytes: Adam's step still sends its 16.

use super::buffer::Bound;
use super::params::{u32_of, AdamScalars, AdamShape, AdamWScalars, AdamWShape, KernelParams, RmsPropScalars, RmsPropShape, SgdScalars, SgdShape};
use super::pipelines::Pipeline;
use super::recorder::linear_grid;
use super::{GpuBackend, GpuTensor};
use crate::backend::{AdamStep, RmsPropStep, SgdStep};

/// Room for the largest scalars struct (AdamWScalars), in u32 words.
pub(super) const SCALAR_WORDS: usize = 8;

/// The bytes of one scalars struct, as the key of what the uniform holds: its length and its
/// bits (compared by bits, so a NaN learning rate does not look new every time).
pub(super) type ScalarBits = (usize, [u32; SCALAR_WORDS]);

impl GpuBackend {
    /// Makes the optimizer scalars uniform hold `scalars` for the next dispatch.
    fn set_optimizer_scalars<S: KernelParams>(&self, scalars: &S) {
        let bytes = bytemuck::bytes_of(scalars);
        let mut words = [0u32; SCALAR_WORDS];
        bytemuck::cast_slice_mut::<u32, u8>(&mut words)[..bytes.len()].copy_from_slice(bytes);
        let key: ScalarBits = (bytes.len(), words);
        // A queue write lands before the next submission's commands: if this encoder already
        // holds an update with other scalars, submit it first so it keeps its own.
        if self.optimizer_scalars_in_encoder.get().is_some_and(|s| s != key) {
            self.submit_pending();
        }
        if self.optimizer_scalars_written.get() != Some(key) {
            self.ctx.queue.write_buffer(&self.optimizer_scalars, 0, bytes);
            self.count_written(bytes.len());
            self.optimizer_scalars_written.set(Some(key));
        }
        self.optimizer_scalars_in_encoder.set(Some(key));
    }

    /// One element-wise optimizer dispatch over `len` parameters: the shape uniform at
    /// binding 0, the scalars at 1, `tensors` from binding 2 on.
    fn dispatch_optimizer<'a, P: KernelParams>(&'a self, pipeline: &Pipeline, shape: &P, tensors: impl IntoIterator<Item = Bound<'a>>, len: usize) {
        let scalars_at = Bound { binding: 1, buffer: &self.optimizer_scalars, id: self.optimizer_scalars_id, range: None };
        let bound: Vec<Bound> = std::iter::once(scalars_at).chain(tensors).collect();
        self.dispatch(pipeline, shape, &bound, linear_grid(len, self.max_per_dim()));
    }

    // param, m, v (len) updated in place from grad (len).
    pub(super) fn record_adam_update(&self, param: &mut GpuTensor, grad: &GpuTensor, m: &mut GpuTensor, v: &mut GpuTensor, len: usize, h: &AdamStep) {
        self.set_optimizer_scalars(&AdamScalars { alpha: h.alpha(), beta1: h.config.beta1, beta2: h.config.beta2, epsilon: h.config.epsilon });
        let shape = AdamShape { len: u32_of(len), ..Default::default() };
        self.dispatch_optimizer(&self.pipelines.adam_update, &shape, [param.at(2), grad.at(3), m.at(4), v.at(5)], len);
        self.moved(4 + 4 * len, 3 * len);
    }

    // As record_adam_update, after p = p - p * weight_decay * lr.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn record_adamw_update(
        &self,
        param: &mut GpuTensor,
        grad: &GpuTensor,
        m: &mut GpuTensor,
        v: &mut GpuTensor,
        len: usize,
        h: &AdamStep,
        weight_decay: f32,
    ) {
        let c = &h.config;
        let scalars = AdamWScalars {
            alpha: h.alpha(),
            beta1: c.beta1,
            beta2: c.beta2,
            epsilon: c.epsilon,
            learning_rate: c.learning_rate,
            weight_decay,
            ..Default::default()
        };
        self.set_optimizer_scalars(&scalars);
        let shape = AdamWShape { len: u32_of(len), ..Default::default() };
        self.dispatch_optimizer(&self.pipelines.adamw_update, &shape, [param.at(2), grad.at(3), m.at(4), v.at(5)], len);
        self.moved(8 + 4 * len, 3 * len);
    }

    // param (len) updated in place from grad (len), with the velocity `momentum` when given.
    pub(super) fn record_sgd_update(&self, param: &mut GpuTensor, grad: &GpuTensor, momentum: Option<&mut GpuTensor>, len: usize, h: &SgdStep) {
        self.set_optimizer_scalars(&SgdScalars { learning_rate: h.learning_rate, momentum: h.momentum, nesterov: h.nesterov as u32, unused0: 0 });
        let shape = SgdShape { len: u32_of(len), ..Default::default() };
        match momentum {
            None => {
                self.dispatch_optimizer(&self.pipelines.sgd_update, &shape, vec![param.at(2), grad.at(3)], len);
                self.moved(4 + 2 * len, len);
            }
            Some(m) => {
                self.dispatch_optimizer(&self.pipelines.sgd_momentum_update, &shape, vec![param.at(2), grad.at(3), m.at(4)], len);
                self.moved(4 + 3 * len, 2 * len);
            }
        }
    }

    // param, velocity (len) updated in place from grad (len).
    pub(super) fn record_rmsprop_update(&self, param: &mut GpuTensor, grad: &GpuTensor, velocity: &mut GpuTensor, len: usize, h: &RmsPropStep) {
        self.set_optimizer_scalars(&RmsPropScalars { learning_rate: h.learning_rate, rho: h.rho, epsilon: h.epsilon, unused0: 0.0 });
        let shape = RmsPropShape { len: u32_of(len), ..Default::default() };
        self.dispatch_optimizer(&self.pipelines.rmsprop_update, &shape, [param.at(2), grad.at(3), velocity.at(4)], len);
        self.moved(4 + 3 * len, 2 * len);
    }
}
