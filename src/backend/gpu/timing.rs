//! Kernel times from GPU timestamps (for `gpu-cnn bench`): every compute pass recorded while
//! timing writes a timestamp at its start and end, and the time is the sum over passes.

use super::GpuBackend;
use anyhow::Result;

/// Most passes one timed run may record.
const MAX_TIMED_PASSES: u32 = 1024;

impl GpuBackend {
    /// Seconds the GPU spent in the passes `run` records, or None when the adapter has no
    /// timestamp queries (or `run` recorded more passes than can be timed).
    pub(super) fn time_passes(&self, run: &mut dyn FnMut()) -> Result<Option<f64>> {
        if !self.ctx.device.features().contains(wgpu::Features::TIMESTAMP_QUERY) {
            run();
            return Ok(None);
        }
        self.submit_pending();
        let queries = 2 * MAX_TIMED_PASSES;
        let set = self.ctx.device.create_query_set(&wgpu::QuerySetDescriptor { label: Some("kernel times"), ty: wgpu::QueryType::Timestamp, count: queries });
        let resolve = self.ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("kernel times"),
            size: queries as u64 * 8,
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        self.recorder.start_timestamps(set);
        run();
        let Some((_, used)) = self.recorder.stop_timestamps(&self.ctx.device, &resolve) else { return Ok(None) };
        if used == 0 || used >= queries {
            self.flush_errors()?;
            return Ok(None);
        }
        let bytes = self.read_back(&resolve, 0, used as u64 * 8)?;
        let ticks: &[u64] = bytemuck::cast_slice(&bytes);
        let total: u64 = ticks.chunks(2).map(|pass| pass[1].saturating_sub(pass[0])).sum();
        Ok(Some(total as f64 * self.ctx.queue.get_timestamp_period() as f64 * 1e-9))
    }

    fn flush_errors(&self) -> Result<()> {
        self.submit_pending();
        self.ctx.take_errors()
    }
}
