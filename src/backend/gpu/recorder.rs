//! Records a step's dispatches into one command encoder and submits it on flush. Uniforms and
//! bind groups are cached per (pipeline, parameters, buffers), so from the second step on a
//! training step creates no GPU objects at all.

use super::pipelines::Pipeline;
use std::cell::RefCell;
use std::collections::HashMap;

/// Most words a kernel's parameter uniform holds, and most buffers one dispatch binds.
const MAX_PARAMS: usize = 16;
const MAX_BOUND: usize = 6;

/// A buffer bound at `binding` (the uniform at binding 0 is the recorder's).
pub struct Bound<'a> {
    pub binding: u32,
    pub buffer: &'a wgpu::Buffer,
    /// Unique per buffer for the backend's lifetime: the cache key.
    pub id: u64,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct BindKey {
    pipeline: u32,
    params: [u32; MAX_PARAMS],
    bound: [(u32, u64); MAX_BOUND],
}

pub struct Recorder {
    encoder: RefCell<Option<wgpu::CommandEncoder>>,
    bind_groups: RefCell<HashMap<BindKey, wgpu::BindGroup>>,
    last_submission: RefCell<Option<wgpu::SubmissionIndex>>,
    /// While kernels are being timed: the query set, and the next free query index. Each
    /// compute pass writes a timestamp at its start and one at its end.
    timestamps: RefCell<Option<(wgpu::QuerySet, u32)>>,
    /// Bytes of parameter uniforms written so far (host-to-device traffic).
    uniform_bytes: std::cell::Cell<u64>,
}

impl Recorder {
    pub fn new() -> Self {
        Recorder { encoder: RefCell::new(None), bind_groups: RefCell::new(HashMap::new()), last_submission: RefCell::new(None), timestamps: RefCell::new(None), uniform_bytes: std::cell::Cell::new(0) }
    }

    /// True when ops are recorded but not yet submitted.
    pub fn has_pending(&self) -> bool {
        self.encoder.borrow().is_some()
    }

    /// Number of cached bind groups (a test checks that a repeated step adds none).
    pub fn cached_bind_groups(&self) -> usize {
        self.bind_groups.borrow().len()
    }

    /// Bytes of parameter uniforms written so far.
    pub fn uniform_bytes(&self) -> u64 {
        self.uniform_bytes.get()
    }

    /// Records one dispatch of `pipeline` with `params` as its uniform at binding 0.
    pub fn dispatch(&self, device: &wgpu::Device, pipeline: &Pipeline, params: &[u32], bound: &[Bound], groups: [u32; 3]) {
        if groups.contains(&0) {
            return;
        }
        assert!(params.len() <= MAX_PARAMS && bound.len() <= MAX_BOUND, "too many parameters or bindings for the cache key");
        let mut key = BindKey { pipeline: pipeline.id, params: [0; MAX_PARAMS], bound: [(u32::MAX, 0); MAX_BOUND] };
        key.params[..params.len()].copy_from_slice(params);
        for (slot, b) in key.bound.iter_mut().zip(bound) {
            *slot = (b.binding, b.id);
        }
        let mut cache = self.bind_groups.borrow_mut();
        let bind_group = cache.entry(key).or_insert_with(|| {
            let mut words = [0u32; MAX_PARAMS];
            words[..params.len()].copy_from_slice(params);
            let uniform = device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("params"),
                size: (MAX_PARAMS * 4) as u64,
                usage: wgpu::BufferUsages::UNIFORM,
                mapped_at_creation: true,
            });
            uniform.slice(..).get_mapped_range_mut().expect("freshly mapped").copy_from_slice(bytemuck::cast_slice(&words));
            uniform.unmap();
            self.uniform_bytes.set(self.uniform_bytes.get() + (MAX_PARAMS * 4) as u64);
            let mut entries = vec![wgpu::BindGroupEntry { binding: 0, resource: uniform.as_entire_binding() }];
            entries.extend(bound.iter().map(|b| wgpu::BindGroupEntry { binding: b.binding, resource: b.buffer.as_entire_binding() }));
            device.create_bind_group(&wgpu::BindGroupDescriptor { label: None, layout: &pipeline.layout, entries: &entries })
        });
        let mut encoder = self.encoder.borrow_mut();
        let encoder = encoder.get_or_insert_with(|| device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("step") }));
        let mut timestamps = self.timestamps.borrow_mut();
        let timestamp_writes = timestamps.as_mut().and_then(|(set, next)| {
            // A full query set stops timing; the caller then sees too few timestamps.
            (*next + 2 <= set.count()).then(|| {
                *next += 2;
                wgpu::ComputePassTimestampWrites { query_set: &*set, beginning_of_pass_write_index: Some(*next - 2), end_of_pass_write_index: Some(*next - 1) }
            })
        });
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor { label: None, timestamp_writes });
        pass.set_pipeline(&pipeline.pipeline);
        pass.set_bind_group(0, &*bind_group, &[]);
        pass.dispatch_workgroups(groups[0], groups[1], groups[2]);
    }

    /// Starts timing every following pass into `set`.
    pub fn start_timestamps(&self, set: wgpu::QuerySet) {
        *self.timestamps.borrow_mut() = Some((set, 0));
    }

    /// Stops timing; records the resolve of the queries written into `into` (a QUERY_RESOLVE
    /// buffer) and returns the query set and how many queries were written.
    pub fn stop_timestamps(&self, device: &wgpu::Device, into: &wgpu::Buffer) -> Option<(wgpu::QuerySet, u32)> {
        let (set, used) = self.timestamps.borrow_mut().take()?;
        if used > 0 {
            let mut encoder = self.encoder.borrow_mut();
            let encoder = encoder.get_or_insert_with(|| device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("step") }));
            encoder.resolve_query_set(&set, 0..used, into, 0);
        }
        Some((set, used))
    }

    /// Records a buffer copy into the current encoder.
    pub fn copy(&self, device: &wgpu::Device, from: &wgpu::Buffer, to: &wgpu::Buffer, bytes: u64) {
        let mut encoder = self.encoder.borrow_mut();
        let encoder = encoder.get_or_insert_with(|| device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("step") }));
        encoder.copy_buffer_to_buffer(from, 0, to, 0, bytes);
    }

    /// Submits what was recorded. Keeps at most two submissions in flight (waits for the one
    /// before this), so a host that never reads back cannot queue unbounded work.
    pub fn submit(&self, device: &wgpu::Device, queue: &wgpu::Queue) -> Option<wgpu::SubmissionIndex> {
        let encoder = self.encoder.borrow_mut().take()?;
        let index = queue.submit([encoder.finish()]);
        if let Some(previous) = self.last_submission.borrow_mut().replace(index.clone()) {
            let _ = device.poll(wgpu::PollType::Wait { submission_index: Some(previous), timeout: None });
        }
        Some(index)
    }
}

/// Workgroups for one invocation per element (256 per group), 2-D when a row would pass the
/// per-dimension limit; shaders rebuild the index as (wg.y * num_wg.x + wg.x) * 256 + local.
pub fn linear_grid(threads: usize, max_per_dim: u32) -> [u32; 3] {
    let groups = threads.div_ceil(256) as u64;
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
