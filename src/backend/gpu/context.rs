//! The device and queue of one adapter, and the errors wgpu reports outside any error scope.

use super::shader_check::error_chain;
use anyhow::{anyhow, bail, Context as _, Result};
use std::sync::{Arc, Mutex};

pub struct GpuContext {
    pub adapter: wgpu::Adapter,
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub limits: wgpu::Limits,
    /// Errors wgpu raised asynchronously (validation, lost device, out of memory in a
    /// submission). Ops cannot return errors, so they land here and `take_errors` reports them
    /// at the next flush or read-back.
    errors: Arc<Mutex<Vec<String>>>,
}

impl GpuContext {
    pub fn new(adapter: wgpu::Adapter) -> Result<Self> {
        // Ask for everything the adapter has: WebGPU's defaults would cap a buffer at 256 MiB.
        let limits = adapter.limits();
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("gpu-cnn"),
            // Timestamps when the adapter has them: `bench` times kernels with them.
            required_features: adapter.features() & wgpu::Features::TIMESTAMP_QUERY,
            required_limits: limits.clone(),
            experimental_features: wgpu::ExperimentalFeatures::disabled(),
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        }))
        .with_context(|| format!("could not open a device on {}", adapter.get_info().name))?;
        let errors = Arc::new(Mutex::new(Vec::new()));
        let sink = errors.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            sink.lock().unwrap_or_else(|p| p.into_inner()).push(error_chain(&e));
        }));
        let sink = errors.clone();
        device.set_device_lost_callback(move |reason, message| {
            if reason != wgpu::DeviceLostReason::Destroyed {
                sink.lock().unwrap_or_else(|p| p.into_inner()).push(format!("GPU device lost ({reason:?}): {message}"));
            }
        });
        super::validation::check_layer_present(&device).map_err(anyhow::Error::msg)?;
        super::validation::misuse_if_asked(&device);
        Ok(GpuContext { adapter, device, queue, limits, errors })
    }

    /// Records an error found while recording an op (ops return nothing).
    pub fn record_error(&self, message: String) {
        self.errors.lock().unwrap_or_else(|p| p.into_inner()).push(message);
    }

    /// Err with every error recorded since the last call, if any.
    pub fn take_errors(&self) -> Result<()> {
        let mut errors = self.errors.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(messages) = super::validation::take_messages() {
            errors.push(messages);
        }
        if errors.is_empty() {
            return Ok(());
        }
        let text = errors.join("\n");
        errors.clear();
        Err(anyhow!("GPU error: {text}"))
    }

    /// A storage buffer of `bytes`, or an error naming the limit it breaks or the OOM.
    pub fn create_storage_buffer(&self, label: &str, bytes: u64) -> Result<wgpu::Buffer> {
        self.check_buffer_fits(label, bytes)?;
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let buffer = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: bytes,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        if let Some(e) = pollster::block_on(scope.pop()) {
            bail!("GPU out of memory allocating {label} ({bytes} bytes): {}", error_chain(&e));
        }
        Ok(buffer)
    }

    /// Checks one storage buffer against max_buffer_size and max_storage_buffer_binding_size
    /// (every buffer here is bound whole), naming the limit and both values when it does not fit.
    pub fn check_buffer_fits(&self, what: &str, bytes: u64) -> Result<()> {
        let info = self.adapter.get_info();
        if bytes > self.limits.max_buffer_size {
            bail!(
                "{what} needs {bytes} bytes, over max_buffer_size = {} of {} ({:?}); use a smaller batch or layer",
                self.limits.max_buffer_size,
                info.name,
                info.backend
            );
        }
        if bytes > self.limits.max_storage_buffer_binding_size {
            bail!(
                "{what} needs {bytes} bytes, over max_storage_buffer_binding_size = {} of {} ({:?}); use a smaller batch or layer",
                self.limits.max_storage_buffer_binding_size,
                info.name,
                info.backend
            );
        }
        Ok(())
    }
}
