//! Which adapter to run on: the list wgpu sees, and the rules behind `--device`.

use anyhow::{bail, Result};
use std::str::FromStr;

/// What the user asked for with `--device auto|cpu|gpu|vulkan|metal|dx12|gl|N`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceRequest {
    /// The best real GPU (discrete > integrated > virtual); the CPU backend when there is only a
    /// software adapter (llvmpipe/lavapipe) or none.
    Auto,
    /// The CPU backend, no wgpu at all.
    Cpu,
    /// Any wgpu adapter, software ones included; an error when there is none.
    Gpu,
    /// The best adapter of this wgpu backend; an error when it has none.
    Backend(wgpu::Backend),
    /// The adapter at this position of `list_adapters()`.
    Index(usize),
}

impl FromStr for DeviceRequest {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "auto" => DeviceRequest::Auto,
            "cpu" => DeviceRequest::Cpu,
            "gpu" => DeviceRequest::Gpu,
            "vulkan" => DeviceRequest::Backend(wgpu::Backend::Vulkan),
            "metal" => DeviceRequest::Backend(wgpu::Backend::Metal),
            "dx12" => DeviceRequest::Backend(wgpu::Backend::Dx12),
            "gl" => DeviceRequest::Backend(wgpu::Backend::Gl),
            other => match other.parse::<usize>() {
                Ok(i) => DeviceRequest::Index(i),
                Err(_) => bail!("unknown device {s:?}: expected auto, cpu, gpu, vulkan, metal, dx12, gl or an adapter number"),
            },
        })
    }
}

/// The `--device` word for the request (what `from_str` reads back).
impl std::fmt::Display for DeviceRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceRequest::Auto => f.write_str("auto"),
            DeviceRequest::Cpu => f.write_str("cpu"),
            DeviceRequest::Gpu => f.write_str("gpu"),
            DeviceRequest::Backend(wgpu::Backend::Vulkan) => f.write_str("vulkan"),
            DeviceRequest::Backend(wgpu::Backend::Metal) => f.write_str("metal"),
            DeviceRequest::Backend(wgpu::Backend::Dx12) => f.write_str("dx12"),
            DeviceRequest::Backend(wgpu::Backend::Gl) => f.write_str("gl"),
            DeviceRequest::Backend(other) => write!(f, "{other:?}"),
            DeviceRequest::Index(i) => write!(f, "{i}"),
        }
    }
}

/// One adapter as `gpu-cnn devices` shows it.
#[derive(Clone, Debug)]
pub struct AdapterInfoRow {
    pub index: usize,
    pub name: String,
    pub backend: wgpu::Backend,
    pub device_type: wgpu::DeviceType,
    pub driver: String,
    pub driver_info: String,
    pub max_buffer_size: u64,
    pub max_storage_buffer_binding_size: u64,
    pub max_compute_workgroup_storage_size: u32,
    pub max_compute_invocations_per_workgroup: u32,
    pub max_compute_workgroups_per_dimension: u32,
}

/// An instance that honours WGPU_BACKEND and friends.
pub fn new_instance() -> wgpu::Instance {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle().with_env();
    desc.flags = super::validation::instance_flags(desc.flags);
    wgpu::Instance::new(desc)
}

/// Every adapter wgpu finds, in a stable order (the order `Index(N)` refers to).
pub fn enumerate_adapters() -> Vec<wgpu::Adapter> {
    let instance = new_instance();
    pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()))
}

pub fn list_adapters() -> Vec<AdapterInfoRow> {
    enumerate_adapters().iter().enumerate().map(|(index, a)| adapter_row(index, a)).collect()
}

pub fn adapter_row(index: usize, adapter: &wgpu::Adapter) -> AdapterInfoRow {
    let info = adapter.get_info();
    let limits = adapter.limits();
    AdapterInfoRow {
        index,
        name: info.name,
        backend: info.backend,
        device_type: info.device_type,
        driver: info.driver,
        driver_info: info.driver_info,
        max_buffer_size: limits.max_buffer_size,
        max_storage_buffer_binding_size: limits.max_storage_buffer_binding_size,
        max_compute_workgroup_storage_size: limits.max_compute_workgroup_storage_size,
        max_compute_invocations_per_workgroup: limits.max_compute_invocations_per_workgroup,
        max_compute_workgroups_per_dimension: limits.max_compute_workgroups_per_dimension,
    }
}

/// Higher is preferred: real GPUs by kind, then software ones.
fn device_type_rank(t: wgpu::DeviceType) -> u32 {
    match t {
        wgpu::DeviceType::DiscreteGpu => 4,
        wgpu::DeviceType::IntegratedGpu => 3,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Cpu => 1,
        wgpu::DeviceType::Other => 0,
    }
}

/// Among equal kinds, native APIs before GL (GL on these drivers is the slower, older path).
fn backend_rank(b: wgpu::Backend) -> u32 {
    match b {
        wgpu::Backend::Vulkan | wgpu::Backend::Metal | wgpu::Backend::Dx12 => 2,
        wgpu::Backend::Gl => 1,
        _ => 0,
    }
}

/// The best of `adapters` (first one on ties, so the choice is stable).
fn best(adapters: Vec<wgpu::Adapter>) -> Option<wgpu::Adapter> {
    let mut best: Option<(u32, u32, wgpu::Adapter)> = None;
    for a in adapters {
        let info = a.get_info();
        let key = (device_type_rank(info.device_type), backend_rank(info.backend));
        if best.as_ref().is_none_or(|(t, b, _)| key > (*t, *b)) {
            best = Some((key.0, key.1, a));
        }
    }
    best.map(|(_, _, a)| a)
}

/// Applies the rules of `DeviceRequest`. `Ok(None)` means: use the CPU backend.
pub fn choose_adapter(request: DeviceRequest) -> Result<Option<wgpu::Adapter>> {
    if request == DeviceRequest::Cpu {
        return Ok(None);
    }
    let adapters = enumerate_adapters();
    match request {
        DeviceRequest::Cpu => Ok(None),
        DeviceRequest::Auto => {
            let real: Vec<_> = adapters
                .into_iter()
                .filter(|a| matches!(a.get_info().device_type, wgpu::DeviceType::DiscreteGpu | wgpu::DeviceType::IntegratedGpu | wgpu::DeviceType::VirtualGpu))
                .collect();
            Ok(best(real))
        }
        DeviceRequest::Gpu => match best(adapters) {
            Some(a) => Ok(Some(a)),
            None => bail!(
                "--device gpu: wgpu found no adapter (no Vulkan/Metal/DX12/GL driver; on Debian, `apt-get install mesa-vulkan-drivers` gives a software one)"
            ),
        },
        DeviceRequest::Backend(backend) => {
            let of_backend: Vec<_> = adapters.into_iter().filter(|a| a.get_info().backend == backend).collect();
            match best(of_backend) {
                Some(a) => Ok(Some(a)),
                None => bail!("--device {}: wgpu found no {backend} adapter (see `gpu-cnn devices`)", backend.to_str()),
            }
        }
        DeviceRequest::Index(i) => {
            let count = adapters.len();
            match adapters.into_iter().nth(i) {
                Some(a) => Ok(Some(a)),
                None => bail!("--device {i}: there are {count} adapters (numbered from 0; see `gpu-cnn devices`)"),
            }
        }
    }
}
