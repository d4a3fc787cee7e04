//! Records a step's dispatches into one command encoder, all in one compute pass (per-pass cost
//! is large on some GPUs), and submits it on flush. Passes end only for a copy, a submission, or
//! while kernels are timed (each timed dispatch then gets a pass of its own with timestamps).
//! Uniforms and bind groups are cached per (pipeline, parameters, buffers), so from the second
//! step on a training step creates no GPU objects at all; an entry is dropped as soon as one of
//! the buffers it binds is (see buffer.rs), so the cache never holds dead memory.

use super::buffer::{Bound, BufferRegistry};
use super::params::KernelParams;
use super::pipelines::Pipeline;
use crate::backend::RecordCounts;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;

/// Most bytes a kernel's parameter uniform holds, and most buffers one dispatch binds.
const MAX_PARAM_BYTES: usize = 80;
const MAX_BOUND: usize = 6;

/// Invocations per workgroup of the linear kernels (LINEAR_GROUP in common/linear_index.wgsl).
pub const LINEAR_GROUP_SIZE: u32 = 256;

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct BindKey {
    pipeline: u32,
    params: [u8; MAX_PARAM_BYTES],
    bound: [(u32, u64); MAX_BOUND],
}

struct CacheEntry {
    bind_group: wgpu::BindGroup,
    uniform_bytes: u64,
}

/// Sizes of the bind-group cache (a test checks they return to their baseline).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheSizes {
    pub bind_groups: usize,
    /// Bytes of the parameter uniforms the cached bind groups hold.
    pub uniform_bytes: u64,
}

pub struct Recorder {
    encoder: RefCell<Option<wgpu::CommandEncoder>>,
    /// The open compute pass of `encoder`, if any (it locks the encoder until dropped).
    pass: RefCell<Option<wgpu::ComputePass<'static>>>,
    bind_groups: RefCell<HashMap<BindKey, CacheEntry>>,
    cached_uniform_bytes: Cell<u64>,
    last_submission: RefCell<Option<wgpu::SubmissionIndex>>,
    /// While kernels are being timed: the query set, and the next free query index. Each
    /// timed dispatch gets its own pass, with a timestamp at its start and one at its end.
    timestamps: RefCell<Option<(wgpu::QuerySet, u32)>>,
    /// Bytes of parameter uniforms written so far (host-to-device traffic).
    uniform_bytes_written: Cell<u64>,
    counts: Cell<RecordCounts>,
}

impl Recorder {
    pub fn new() -> Self {
        Recorder {
            encoder: RefCell::new(None),
            pass: RefCell::new(None),
            bind_groups: RefCell::new(HashMap::new()),
            cached_uniform_bytes: Cell::new(0),
            last_submission: RefCell::new(None),
            timestamps: RefCell::new(None),
            uniform_bytes_written: Cell::new(0),
            counts: Cell::new(RecordCounts::default()),
        }
    }

    /// True when ops are recorded but not yet submitted.
    pub fn has_pending(&self) -> bool {
        self.encoder.borrow().is_some()
    }

    /// The cache's sizes, after dropping the entries of buffers dropped since the last look.
    pub fn cache_sizes(&self, registry: &BufferRegistry) -> CacheSizes {
        self.retire(registry);
        CacheSizes { bind_groups: self.bind_groups.borrow().len(), uniform_bytes: self.cached_uniform_bytes.get() }
    }

    /// Bytes of parameter uniforms written so far.
    pub fn uniform_bytes_written(&self) -> u64 {
        self.uniform_bytes_written.get()
    }

    pub fn counts(&self) -> RecordCounts {
        self.counts.get()
    }

    /// Drops every cached bind group that binds a buffer dropped since the last call.
    fn retire(&self, registry: &BufferRegistry) {
        if !registry.has_retired() {
            return;
        }
        let retired = registry.take_retired();
        let mut freed = 0;
        self.bind_groups.borrow_mut().retain(|key, entry| {
            let keep = !key.bound.iter().any(|(binding, id)| *binding != u32::MAX && retired.contains(id));
            if !keep {
                freed += entry.uniform_bytes;
            }
            keep
        });
        self.cached_uniform_bytes.set(self.cached_uniform_bytes.get() - freed);
    }

    /// Records one dispatch of `pipeline` with `params` as its uniform at binding 0.
    pub fn dispatch<P: KernelParams>(
        &self,
        device: &wgpu::Device,
        registry: &BufferRegistry,
        pipeline: &Pipeline,
        params: &P,
        bound: &[Bound],
        groups: [u32; 3],
    ) {
        if groups.contains(&0) {
            return;
        }
        self.retire(registry);
        let param_bytes = bytemuck::bytes_of(params);
        assert!(param_bytes.len() <= MAX_PARAM_BYTES && bound.len() <= MAX_BOUND, "too many parameters or bindings for the cache key");
        let mut key = BindKey { pipeline: pipeline.id, params: [0; MAX_PARAM_BYTES], bound: [(u32::MAX, 0); MAX_BOUND] };
        key.params[..param_bytes.len()].copy_from_slice(param_bytes);
        for (slot, b) in key.bound.iter_mut().zip(bound) {
            *slot = (b.binding, b.id);
        }
        let mut cache = self.bind_groups.borrow_mut();
        let entry = cache.entry(key).or_insert_with(|| {
            let uniform = device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(P::WGSL.1),
                size: param_bytes.len() as u64,
                usage: wgpu::BufferUsages::UNIFORM,
                mapped_at_creation: true,
            });
            uniform.slice(..).get_mapped_range_mut().expect("freshly mapped").copy_from_slice(param_bytes);
            uniform.unmap();
            let bytes = param_bytes.len() as u64;
            self.uniform_bytes_written.set(self.uniform_bytes_written.get() + bytes);
            self.cached_uniform_bytes.set(self.cached_uniform_bytes.get() + bytes);
            let mut entries = vec![wgpu::BindGroupEntry { binding: 0, resource: uniform.as_entire_binding() }];
            entries.extend(bound.iter().map(|b| wgpu::BindGroupEntry { binding: b.binding, resource: b.resource() }));
            let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor { label: None, layout: &pipeline.layout, entries: &entries });
            CacheEntry { bind_group, uniform_bytes: bytes }
        });
        let timed = self.timestamps.borrow().is_some();
        if timed {
            self.end_pass();
        }
        let mut pass = self.pass.borrow_mut();
        if pass.is_none() {
            let mut timestamps = self.timestamps.borrow_mut();
            let timestamp_writes = timestamps.as_mut().and_then(|(set, next)| {
                // A full query set stops timing; the caller then sees too few timestamps.
                (*next + 2 <= set.count()).then(|| {
                    *next += 2;
                    wgpu::ComputePassTimestampWrites {
                        query_set: &*set,
                        beginning_of_pass_write_index: Some(*next - 2),
                        end_of_pass_write_index: Some(*next - 1),
                    }
                })
            });
            let mut encoder = self.encoder.borrow_mut();
            let encoder = encoder.get_or_insert_with(|| device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("step") }));
            *pass = Some(encoder.begin_compute_pass(&wgpu::ComputePassDescriptor { label: None, timestamp_writes }).forget_lifetime());
            self.count(0, 1);
        }
        let open = pass.as_mut().expect("just opened");
        open.set_pipeline(&pipeline.pipeline);
        open.set_bind_group(0, &entry.bind_group, &[]);
        open.dispatch_workgroups(groups[0], groups[1], groups[2]);
        self.count(1, 0);
        drop(pass);
        if timed {
            self.end_pass();
        }
    }

    /// Adds a kernel's device-memory traffic, counted by the caller from the shapes.
    pub fn count_traffic(&self, read: usize, written: usize) {
        let c = self.counts.get();
        self.counts.set(RecordCounts { bytes_read: c.bytes_read + read as u64, bytes_written: c.bytes_written + written as u64, ..c });
    }

    fn count(&self, dispatches: u64, compute_passes: u64) {
        let c = self.counts.get();
        self.counts.set(RecordCounts { dispatches: c.dispatches + dispatches, compute_passes: c.compute_passes + compute_passes, ..c });
    }

    /// Ends the open compute pass, unlocking the encoder for copies and submission.
    fn end_pass(&self) {
        self.pass.borrow_mut().take();
    }

    /// The current encoder (a new one if none), with no pass open on it.
    fn with_encoder(&self, device: &wgpu::Device, record: impl FnOnce(&mut wgpu::CommandEncoder)) {
        self.end_pass();
        let mut encoder = self.encoder.borrow_mut();
        record(encoder.get_or_insert_with(|| device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("step") })));
    }

    /// Starts timing every following dispatch into `set`.
    pub fn start_timestamps(&self, set: wgpu::QuerySet) {
        self.end_pass();
        *self.timestamps.borrow_mut() = Some((set, 0));
    }

    /// Stops timing; records the resolve of the queries written into `into` (a QUERY_RESOLVE
    /// buffer) and returns the query set and how many queries were written.
    pub fn stop_timestamps(&self, device: &wgpu::Device, into: &wgpu::Buffer) -> Option<(wgpu::QuerySet, u32)> {
        let (set, used) = self.timestamps.borrow_mut().take()?;
        if used > 0 {
            self.with_encoder(device, |encoder| encoder.resolve_query_set(&set, 0..used, into, 0));
        }
        Some((set, used))
    }

    /// Records a copy of `bytes` from byte `offset` of `from` to the start of `to`.
    pub fn copy(&self, device: &wgpu::Device, from: &wgpu::Buffer, offset: u64, to: &wgpu::Buffer, bytes: u64) {
        self.with_encoder(device, |encoder| encoder.copy_buffer_to_buffer(from, offset, to, 0, bytes));
    }

    /// Submits what was recorded. Keeps at most two submissions in flight (waits for the one
    /// before this), so a host that never reads back cannot queue unbounded work.
    pub fn submit(&self, device: &wgpu::Device, queue: &wgpu::Queue) -> Option<wgpu::SubmissionIndex> {
        self.end_pass();
        let encoder = self.encoder.borrow_mut().take()?;
        let index = queue.submit([encoder.finish()]);
        if let Some(previous) = self.last_submission.borrow_mut().replace(index.clone()) {
            let _ = device.poll(wgpu::PollType::Wait { submission_index: Some(previous), timeout: None });
        }
        Some(index)
    }
}

/// Workgroups for one invocation per element (LINEAR_GROUP_SIZE per group), 2-D when a row would
/// pass the per-dimension limit; shaders rebuild the index with linear_index().
pub fn linear_grid(threads: usize, max_per_dim: u32) -> [u32; 3] {
    let groups = threads.div_ceil(LINEAR_GROUP_SIZE as usize) as u64;
    let max = max_per_dim as u64;
    if groups <= max {
        [groups as u32, 1, 1]
    } else {
        [max as u32, groups.div_ceil(max) as u32, 1]
    }
}

/// Workgroups for a tiled GEMM: x = column tiles, y (+ z * num_y) = row tiles.
pub fn tile_grid(col_tiles: usize, row_tiles: usize, max_per_dim: u32) -> [u32; 3] {
    let max = max_per_dim as usize;
    if row_tiles <= max {
        [col_tiles as u32, row_tiles as u32, 1]
    } else {
        [col_tiles as u32, max as u32, row_tiles.div_ceil(max) as u32]
    }
}
