//! The GPU backend: every op is a WGSL compute shader run through wgpu, recorded into the
//! step's command encoder and submitted on `flush` (or before any read-back).
//!
//! Use from the CLI:
//! ```no_run
//! use gpu_cnn::backend::{gpu::{choose_adapter, GpuBackend, DeviceRequest}, Backend};
//! let request: DeviceRequest = "auto".parse()?;          // auto|cpu|gpu|vulkan|metal|dx12|gl|N
//! match choose_adapter(request)? {
//!     Some(adapter) => {
//!         let gpu = GpuBackend::new(adapter)?;
//!         println!("device: {}", gpu.describe());       // "name (backend, driver)"
//!         gpu.check_fits("conv2d output", 32 * 30 * 30 * 32 * 4)?; // before training
//!     }
//!     None => println!("no hardware GPU found: training on the CPU"),
//! }
//! # anyhow::Ok(())
//! ```
//! `list_adapters()` gives the rows of `gpu-cnn devices`. Errors wgpu raises while ops are
//! recorded come back from the next `flush()` or download.

mod activation;
mod adapter_choice;
mod batchnorm;
mod buffer;
mod context;
mod conv;
mod data;
mod dense;
mod depthwise;
mod dropout;
mod loss;
mod optimizers;
mod params;
mod pipelines;
mod pool;
mod recorder;
pub mod shader_check;
pub mod shader_sources;
mod timing;
pub mod validation;

pub use adapter_choice::{adapter_row, choose_adapter, enumerate_adapters, list_adapters, AdapterInfoRow, DeviceRequest};
pub use buffer::{GpuBuffer, GpuIndices, GpuTensor};
pub use conv::ConvInputGradAlgo;
pub use data::GpuImages;
pub use dense::Transpose;
pub use pipelines::ALL_SHADERS;
pub use recorder::CacheSizes;

use super::dropout::DropoutMask;
use super::{
    ActivationFn, AdamStep, Backend, BatchNormConfig, BatchNormShape, ConvShape, DenseShape, DepthwiseShape, GatherAugment, PoolShape, RecordCounts,
    RmsPropStep, SgdStep, TensorArena,
};
use anyhow::{Context as _, Result};
use buffer::{Bound, BufferRegistry};
use context::GpuContext;
use params::{ElementwiseParams, KernelParams};
use pipelines::{Pipeline, Pipelines};
use recorder::{linear_grid, Recorder};
use std::cell::{Cell, RefCell};
use std::sync::Arc;

pub struct GpuBackend {
    ctx: GpuContext,
    pipelines: Pipelines,
    recorder: Recorder,
    /// Ids and live bytes of every storage buffer this backend made (see buffer.rs).
    registry: Arc<BufferRegistry>,
    /// Split-k partial sums and col2im's dcol; grown to the largest need, then reused.
    scratch: RefCell<Option<GpuTensor>>,
    /// Host-visible buffer for read-backs, reused.
    staging: RefCell<Option<wgpu::Buffer>>,
    /// The optimizer's per-step scalars (see optimizers.rs).
    optimizer_scalars: wgpu::Buffer,
    optimizer_scalars_id: u64,
    optimizer_scalars_written: Cell<Option<optimizers::ScalarBits>>,
    optimizer_scalars_in_encoder: Cell<Option<optimizers::ScalarBits>>,
    /// Workgroups per grid dimension that dispatches may use: the adapter's limit, or less
    /// when a test lowers it to exercise the 2-D/3-D grid folding on small inputs.
    dispatch_limit: Cell<u32>,
    /// Most bytes an arena's whole buffer may have: the storage binding limit (the optimizer
    /// binds it whole), or less when a test lowers it.
    arena_limit: Cell<u64>,
    /// Bytes written from the host with queue writes (uploads, indices, optimizer scalars).
    written_bytes: Cell<u64>,
    /// A test forcing one way of computing conv input gradients (None: the shape decides).
    forced_conv_input_grad: Cell<Option<ConvInputGradAlgo>>,
}

impl GpuBackend {
    /// Opens a device on `adapter` (with all its limits) and builds every pipeline.
    pub fn new(adapter: wgpu::Adapter) -> Result<Self> {
        let ctx = GpuContext::new(adapter)?;
        let pipelines = Pipelines::new(&ctx.device);
        let registry = Arc::new(BufferRegistry::default());
        let optimizer_scalars = ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("optimizer scalars"),
            size: (4 * optimizers::SCALAR_WORDS) as u64,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let backend = GpuBackend {
            ctx,
            pipelines,
            recorder: Recorder::new(),
            scratch: RefCell::new(None),
            staging: RefCell::new(None),
            optimizer_scalars,
            optimizer_scalars_id: registry.new_id(),
            registry,
            optimizer_scalars_written: Cell::new(None),
            optimizer_scalars_in_encoder: Cell::new(None),
            dispatch_limit: Cell::new(0),
            arena_limit: Cell::new(0),
            written_bytes: Cell::new(0),
            forced_conv_input_grad: Cell::new(None),
        };
        backend.dispatch_limit.set(backend.ctx.limits.max_compute_workgroups_per_dimension);
        backend.arena_limit.set(backend.ctx.limits.max_storage_buffer_binding_size.min(backend.ctx.limits.max_buffer_size));
        // Errors creating the fixed pipelines surface here; the GEMM pipelines are compiled on
        // first use and report at the next flush.
        let _ = backend.ctx.device.poll(wgpu::PollType::wait_indefinitely());
        backend.ctx.take_errors().context("creating the GPU pipelines")?;
        Ok(backend)
    }

    /// Every byte sent from the host to the device so far: queue writes and parameter
    /// uniforms. (Tests use it to check that a training step sends only its indices and
    /// Adam's scalars.)
    pub fn host_to_device_bytes(&self) -> u64 {
        self.written_bytes.get() + self.recorder.uniform_bytes_written()
    }

    fn count_written(&self, bytes: usize) {
        self.written_bytes.set(self.written_bytes.get() + bytes as u64);
    }

    /// The adapter's limits (all of them were requested).
    pub fn limits(&self) -> &wgpu::Limits {
        &self.ctx.limits
    }

    /// The wgpu device and queue, for benches and tools that run their own kernels beside ours.
    pub fn device(&self) -> &wgpu::Device {
        &self.ctx.device
    }
    pub fn queue(&self) -> &wgpu::Queue {
        &self.ctx.queue
    }

    pub fn adapter_info(&self) -> wgpu::AdapterInfo {
        self.ctx.adapter.get_info()
    }

    /// Err naming the limit (max_buffer_size or max_storage_buffer_binding_size) and both
    /// values when a buffer of `bytes` cannot exist or be bound on this adapter. Call it for
    /// every activation/weight buffer before training so a too-large batch fails up front.
    pub fn check_fits(&self, what: &str, bytes: u64) -> Result<()> {
        self.ctx.check_buffer_fits(what, bytes)
    }

    /// Bind groups (and their uniforms) cached now. A repeated step adds none, and dropping a
    /// buffer drops every entry that binds it.
    pub fn cache_sizes(&self) -> CacheSizes {
        self.recorder.cache_sizes(&self.registry)
    }

    /// Frees the scratch and read-back buffers, which otherwise stay at their largest size for
    /// reuse; they are made again when next needed. For a long-lived process between models.
    pub fn release_scratch(&self) {
        self.submit_pending();
        self.scratch.borrow_mut().take();
        self.staging.borrow_mut().take();
    }

    fn max_per_dim(&self) -> u32 {
        self.dispatch_limit.get()
    }

    /// Pretends the adapter allows only `limit` workgroups per grid dimension (at most the
    /// real limit), so tests reach the grid folding that big batches need with small inputs.
    /// Pretends an arena's whole buffer may hold at most `bytes` (at most the real limit), so
    /// tests reach the separate tensors a model too big for one binding gets.
    pub fn lower_arena_limit_for_tests(&self, bytes: u64) {
        let real = self.ctx.limits.max_storage_buffer_binding_size.min(self.ctx.limits.max_buffer_size);
        self.arena_limit.set(bytes.min(real));
    }

    pub fn lower_dispatch_limit_for_tests(&self, limit: u32) {
        self.dispatch_limit.set(limit.clamp(1, self.ctx.limits.max_compute_workgroups_per_dimension));
    }

    /// Forces conv input gradients through one algorithm whatever the shape (col2im still only
    /// where its buffer fits), so tests cover both; None restores the shape's choice.
    pub fn force_conv_input_grad_for_tests(&self, algo: Option<ConvInputGradAlgo>) {
        self.forced_conv_input_grad.set(algo);
    }

    /// A storage buffer of `len` elements (at least one: zero-sized bindings are invalid).
    fn storage<T>(&self, label: &str, len: usize) -> Result<GpuBuffer<T>> {
        let bytes = (len.max(1) as u64).checked_mul(4).context("buffer size overflows")?;
        let buffer = self.ctx.create_storage_buffer(label, bytes)?;
        Ok(GpuBuffer::new(buffer, len, &self.registry))
    }

    /// Counts a kernel's traffic in f32/u32 elements read and written (each operand once).
    fn moved(&self, read: usize, written: usize) {
        self.recorder.count_traffic(4 * read, 4 * written);
    }

    /// Records one dispatch into the step's pass.
    fn dispatch<P: KernelParams>(&self, pipeline: &Pipeline, params: &P, bound: &[Bound], groups: [u32; 3]) {
        self.recorder.dispatch(&self.ctx.device, &self.registry, pipeline, params, bound, groups);
    }

    /// Submits anything recorded so that a following queue write lands after it.
    fn submit_pending(&self) {
        if self.recorder.has_pending() {
            self.recorder.submit(&self.ctx.device, &self.ctx.queue);
            self.optimizer_scalars_in_encoder.set(None);
        }
    }

    /// The split-k scratch buffer, at least `len` floats.
    fn scratch(&self, len: usize) -> Option<std::cell::Ref<'_, GpuTensor>> {
        let too_small = self.scratch.borrow().as_ref().is_none_or(|s| s.len() < len);
        if too_small {
            // Drop the old one first, so the two never take memory together.
            self.scratch.borrow_mut().take();
            match self.tensor(len) {
                Ok(t) => *self.scratch.borrow_mut() = Some(t),
                Err(e) => {
                    self.ctx.record_error(format!("{e:#}"));
                    return None;
                }
            }
        }
        Some(std::cell::Ref::map(self.scratch.borrow(), |s| s.as_ref().expect("just made")))
    }

    /// `bytes` of `buffer` from byte `offset` on (waits for queued work).
    fn read_back(&self, buffer: &wgpu::Buffer, offset: u64, bytes: u64) -> Result<Vec<u8>> {
        self.submit_pending();
        let mut staging = self.staging.borrow_mut();
        if staging.as_ref().is_none_or(|s| s.size() < bytes) {
            *staging = Some(self.ctx.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("read-back"),
                size: bytes,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }));
        }
        let staging = staging.as_ref().expect("just made");
        self.recorder.copy(&self.ctx.device, buffer, offset, staging, bytes);
        self.recorder.submit(&self.ctx.device, &self.ctx.queue);
        let slice = staging.slice(..bytes);
        let mapped = std::sync::Arc::new(std::sync::Mutex::new(None));
        let sink = mapped.clone();
        slice.map_async(wgpu::MapMode::Read, move |r| *sink.lock().unwrap_or_else(|p| p.into_inner()) = Some(r));
        self.ctx.device.poll(wgpu::PollType::wait_indefinitely()).context("waiting for the GPU")?;
        self.ctx.take_errors()?;
        let result = mapped.lock().unwrap_or_else(|p| p.into_inner()).take();
        match result {
            Some(Ok(())) => {}
            Some(Err(e)) => anyhow::bail!("mapping the read-back buffer failed: {e}"),
            None => anyhow::bail!("the read-back buffer was not mapped after waiting for the GPU"),
        }
        let bytes_out = slice.get_mapped_range().map_err(|e| anyhow::anyhow!("read-back range: {e}"))?.to_vec();
        staging.unmap();
        Ok(bytes_out)
    }

    /// Writes `data` at the start of `to` (for a view: its offset in the arena).
    fn write<T>(&self, to: &GpuBuffer<T>, data: &[u8]) {
        self.submit_pending();
        self.count_written(data.len());
        if !data.is_empty() {
            self.ctx.queue.write_buffer(to.raw(), to.byte_offset(), data);
        }
    }
}

impl Backend for GpuBackend {
    fn device_seconds(&self, run: &mut dyn FnMut()) -> Result<Option<f64>> {
        self.time_passes(run)
    }

    /// Storage buffers alive, the read-back buffer and the cached uniforms.
    fn device_bytes_allocated(&self) -> Option<u64> {
        let staging = self.staging.borrow().as_ref().map_or(0, |s| s.size());
        Some(self.registry.live_bytes() + staging + self.cache_sizes().uniform_bytes)
    }

    type Tensor = GpuTensor;
    type Indices = GpuIndices;
    type Images = GpuImages;

    /// "name (backend, driver driver_info)".
    fn describe(&self) -> String {
        let info = self.ctx.adapter.get_info();
        let driver = [info.driver.as_str(), info.driver_info.as_str()].iter().filter(|s| !s.is_empty()).cloned().collect::<Vec<_>>().join(" ");
        format!("{} ({}, {})", info.name, info.backend.to_str(), if driver.is_empty() { "unknown driver" } else { &driver })
    }

    fn tensor(&self, len: usize) -> Result<GpuTensor> {
        self.storage("tensor", len)
    }
    /// Views into one buffer, each starting at a multiple of the adapter's
    /// `min_storage_buffer_offset_alignment` (and each at least one element long, as a
    /// binding cannot be empty). Past the storage binding limit (a model of over 33 million
    /// parameters on most adapters) separate tensors instead, updated one by one.
    fn tensor_arena(&self, lens: &[usize]) -> Result<TensorArena<GpuTensor>> {
        let align = (self.ctx.limits.min_storage_buffer_offset_alignment as usize / 4).max(1);
        let mut starts = Vec::with_capacity(lens.len());
        let mut end = 0usize;
        for &len in lens {
            let start = end.checked_next_multiple_of(align).context("arena size overflows")?;
            starts.push(start);
            end = start.checked_add(len.max(1)).context("arena size overflows")?;
        }
        if (end as u64).checked_mul(4).is_none_or(|bytes| bytes > self.arena_limit.get()) {
            return TensorArena::separate(lens, |len| self.tensor(len));
        }
        let whole: GpuTensor = self.storage("arena", end)?;
        let parts = starts.iter().zip(lens).map(|(&start, &len)| whole.view(start, len)).collect();
        Ok(TensorArena { parts, whole: Some((whole, end)) })
    }
    fn upload(&self, t: &mut GpuTensor, data: &[f32]) {
        assert!(data.len() <= t.len(), "upload of {} values into a tensor of {}", data.len(), t.len());
        self.write(t, bytemuck::cast_slice(data));
    }
    fn download(&self, t: &GpuTensor) -> Result<Vec<f32>> {
        let bytes = self.read_back(t.raw(), t.byte_offset(), t.byte_len())?;
        Ok(bytemuck::cast_slice::<u8, f32>(&bytes)[..t.len()].to_vec())
    }
    fn indices(&self, len: usize) -> Result<GpuIndices> {
        self.storage("indices", len)
    }
    fn upload_indices(&self, t: &mut GpuIndices, data: &[u32]) {
        assert!(data.len() <= t.len(), "upload of {} indices into a buffer of {}", data.len(), t.len());
        self.write(t, bytemuck::cast_slice(data));
    }
    fn download_indices(&self, t: &GpuIndices) -> Result<Vec<u32>> {
        let bytes = self.read_back(t.raw(), t.byte_offset(), t.byte_len())?;
        Ok(bytemuck::cast_slice::<u8, u32>(&bytes)[..t.len()].to_vec())
    }
    fn upload_images(&self, images: &[u8], labels: &[u8], image_len: usize) -> Result<GpuImages> {
        let limit = self.ctx.limits.max_storage_buffer_binding_size.min(self.ctx.limits.max_buffer_size);
        self.upload_images_in_chunks(images, labels, image_len, limit)
    }

    fn gather_batch(
        &self,
        data: &GpuImages,
        idx: &GpuIndices,
        n: usize,
        x: &mut GpuTensor,
        labels: &mut GpuIndices,
        augment: Option<GatherAugment<'_, GpuIndices>>,
    ) {
        self.record_gather_batch(data, idx, n, x, labels, augment);
    }

    fn conv2d_forward(&self, x: &GpuTensor, w: &GpuTensor, b: Option<&GpuTensor>, y: &mut GpuTensor, s: &ConvShape, n: usize, relu: bool) {
        self.record_conv2d_forward(x, w, b, y, s, n, relu);
    }
    fn conv2d_backward_input(&self, dy: &GpuTensor, w: &GpuTensor, dx: &mut GpuTensor, s: &ConvShape, n: usize) {
        self.record_conv2d_backward_input(dy, w, None, dx, s, n);
    }
    fn conv2d_backward_input_relu(&self, dy: &GpuTensor, w: &GpuTensor, relu_y: &GpuTensor, dx: &mut GpuTensor, s: &ConvShape, n: usize) {
        self.record_conv2d_backward_input(dy, w, Some(relu_y), dx, s, n);
    }
    fn conv2d_backward_filter(&self, x: &GpuTensor, dy: &GpuTensor, dw: &mut GpuTensor, db: Option<&mut GpuTensor>, s: &ConvShape, n: usize) {
        self.record_conv2d_backward_filter(x, dy, dw, db, s, n);
    }
    fn depthwise_conv2d_forward(&self, x: &GpuTensor, w: &GpuTensor, b: Option<&GpuTensor>, y: &mut GpuTensor, s: &DepthwiseShape, n: usize, relu: bool) {
        self.record_depthwise_forward(x, w, b, y, s, n, relu);
    }
    fn depthwise_conv2d_backward_input(&self, dy: &GpuTensor, w: &GpuTensor, dx: &mut GpuTensor, s: &DepthwiseShape, n: usize) {
        self.record_depthwise_backward_input(dy, w, dx, s, n);
    }
    fn depthwise_conv2d_backward_filter(&self, x: &GpuTensor, dy: &GpuTensor, dw: &mut GpuTensor, db: Option<&mut GpuTensor>, s: &DepthwiseShape, n: usize) {
        self.record_depthwise_backward_filter(x, dy, dw, db, s, n);
    }

    // y (len) = ReLU output, dy (len) zeroed where y <= 0.
    fn relu_backward(&self, y: &GpuTensor, dy: &mut GpuTensor, len: usize) {
        let params = ElementwiseParams { len: params::u32_of(len), ..Default::default() };
        let bound = [y.at(1), dy.at(2)];
        self.dispatch(&self.pipelines.relu_backward, &params, &bound, linear_grid(len, self.max_per_dim()));
        self.moved(2 * len, len);
    }

    fn maxpool_forward(&self, x: &GpuTensor, y: &mut GpuTensor, argmax: &mut GpuIndices, s: &PoolShape, n: usize) {
        self.record_maxpool_forward(x, y, argmax, s, n);
    }
    fn maxpool_backward(&self, dy: &GpuTensor, argmax: &GpuIndices, dx: &mut GpuTensor, s: &PoolShape, n: usize) {
        self.record_maxpool_backward(dy, argmax, None, dx, s, n);
    }
    fn maxpool_backward_relu(&self, dy: &GpuTensor, argmax: &GpuIndices, relu_y: &GpuTensor, dx: &mut GpuTensor, s: &PoolShape, n: usize) {
        self.record_maxpool_backward(dy, argmax, Some(relu_y), dx, s, n);
    }
    fn avgpool_forward(&self, x: &GpuTensor, y: &mut GpuTensor, s: &PoolShape, n: usize) {
        self.record_avgpool_forward(x, y, s, n);
    }
    fn avgpool_backward(&self, dy: &GpuTensor, dx: &mut GpuTensor, s: &PoolShape, n: usize) {
        self.record_avgpool_backward(dy, dx, s, n);
    }

    fn activation_forward(&self, x: &GpuTensor, y: &mut GpuTensor, len: usize, f: ActivationFn) {
        self.record_activation_forward(x, y, len, f);
    }
    fn activation_backward(&self, x: &GpuTensor, y: &GpuTensor, dy: &mut GpuTensor, len: usize, f: ActivationFn) {
        self.record_activation_backward(x, y, dy, len, f);
    }

    fn dense_forward(&self, x: &GpuTensor, w: &GpuTensor, b: &GpuTensor, y: &mut GpuTensor, s: &DenseShape, n: usize, relu: bool) {
        self.record_dense_forward(x, w, b, y, s, n, relu);
    }
    fn dense_backward_input(&self, dy: &GpuTensor, w: &GpuTensor, dx: &mut GpuTensor, s: &DenseShape, n: usize) {
        self.record_dense_backward_input(dy, w, None, dx, s, n);
    }
    fn dense_backward_input_relu(&self, dy: &GpuTensor, w: &GpuTensor, relu_y: &GpuTensor, dx: &mut GpuTensor, s: &DenseShape, n: usize) {
        self.record_dense_backward_input(dy, w, Some(relu_y), dx, s, n);
    }
    fn dense_backward_filter(&self, x: &GpuTensor, dy: &GpuTensor, dw: &mut GpuTensor, db: &mut GpuTensor, s: &DenseShape, n: usize) {
        self.record_dense_backward_filter(x, dy, dw, db, s, n);
    }

    fn softmax_xent(&self, logits: &GpuTensor, labels: &GpuIndices, dlogits: &mut GpuTensor, metrics: &mut GpuTensor, n: usize, classes: usize) {
        self.record_softmax_xent(logits, labels, dlogits, metrics, n, classes);
    }

    fn softmax_xent_weighted(
        &self,
        logits: &GpuTensor,
        labels: &GpuIndices,
        class_weights: &GpuTensor,
        dlogits: &mut GpuTensor,
        metrics: &mut GpuTensor,
        n: usize,
        classes: usize,
    ) {
        self.record_softmax_xent_weighted(logits, labels, class_weights, dlogits, metrics, n, classes);
    }
    fn softmax_xent_smoothed(
        &self,
        logits: &GpuTensor,
        labels: &GpuIndices,
        class_weights: Option<&GpuTensor>,
        dlogits: &mut GpuTensor,
        metrics: &mut GpuTensor,
        n: usize,
        classes: usize,
        label_smoothing: f32,
    ) {
        self.record_softmax_xent_smoothed(logits, labels, class_weights, dlogits, metrics, n, classes, label_smoothing);
    }
    fn softmax(&self, logits: &GpuTensor, probs: &mut GpuTensor, n: usize, classes: usize) {
        self.record_softmax(logits, probs, n, classes);
    }

    fn batchnorm_forward_train(
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
        self.record_batchnorm_forward_train(x, gamma, beta, moving_mean, moving_variance, saved, y, s, n, h);
    }
    fn batchnorm_forward_infer(
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
        self.record_batchnorm_forward_infer(x, gamma, beta, moving_mean, moving_variance, saved, y, s, n, epsilon);
    }
    fn batchnorm_backward(
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
        self.record_batchnorm_backward(x, dy, gamma, saved, dx, dgamma, dbeta, s, n);
    }
    fn dropout(&self, x: &GpuTensor, y: &mut GpuTensor, len: usize, key: &GpuIndices, mask: &DropoutMask) {
        self.record_dropout(x, y, len, key, mask);
    }

    fn adam_update(&self, param: &mut GpuTensor, grad: &GpuTensor, m: &mut GpuTensor, v: &mut GpuTensor, len: usize, h: &AdamStep) {
        self.record_adam_update(param, grad, m, v, len, h);
    }
    fn adamw_update(&self, param: &mut GpuTensor, grad: &GpuTensor, m: &mut GpuTensor, v: &mut GpuTensor, len: usize, h: &AdamStep, weight_decay: f32) {
        self.record_adamw_update(param, grad, m, v, len, h, weight_decay);
    }
    fn sgd_update(&self, param: &mut GpuTensor, grad: &GpuTensor, momentum: Option<&mut GpuTensor>, len: usize, h: &SgdStep) {
        self.record_sgd_update(param, grad, momentum, len, h);
    }
    fn rmsprop_update(&self, param: &mut GpuTensor, grad: &GpuTensor, velocity: &mut GpuTensor, len: usize, h: &RmsPropStep) {
        self.record_rmsprop_update(param, grad, velocity, len, h);
    }

    fn record_counts(&self) -> Option<RecordCounts> {
        Some(self.recorder.counts())
    }

    /// Submits the step; reports any error wgpu raised since the last flush.
    fn flush(&self) -> Result<()> {
        self.submit_pending();
        self.ctx.take_errors()
    }
}
