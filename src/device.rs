//! `--device`: from the user's word to a backend, and the `devices` listing.

use crate::backend::cpu::CpuBackend;
use crate::backend::gpu::{choose_adapter, list_adapters, DeviceRequest, GpuBackend};
use anyhow::{Context, Result};

/// The backend a run computes on.
pub enum Device {
    Cpu(CpuBackend),
    Gpu(Box<GpuBackend>),
}

/// Opens the device `spec` names (`auto|cpu|gpu|vulkan|metal|dx12|gl|N`). `auto` falls back to
/// the CPU backend, saying why in one line, when wgpu finds only a software adapter or none.
pub fn open(spec: &str) -> Result<Device> {
    let request: DeviceRequest = spec.parse()?;
    match choose_adapter(request)? {
        Some(adapter) => {
            let info = adapter.get_info();
            let gpu = GpuBackend::new(adapter).with_context(|| format!("opening {} ({:?})", info.name, info.backend))?;
            Ok(Device::Gpu(Box::new(gpu)))
        }
        None => {
            if request == DeviceRequest::Auto {
                let software: Vec<String> = list_adapters().iter().map(|a| format!("{} ({:?})", a.name, a.backend)).collect();
                if software.is_empty() {
                    eprintln!("--device auto: wgpu found no GPU adapter; using the CPU backend");
                } else {
                    eprintln!("--device auto: only software adapters ({}); using the CPU backend (--device gpu uses them)", software.join(", "));
                }
            }
            Ok(Device::Cpu(CpuBackend::new()))
        }
    }
}

/// Opens the device `$spec` names and runs `$body` with the backend bound to `$b`, whichever
/// kind it is (the body is compiled once per backend).
#[macro_export]
macro_rules! with_backend {
    ($spec:expr, $b:ident => $body:expr) => {{
        match $crate::device::open($spec)? {
            $crate::device::Device::Cpu($b) => $body,
            $crate::device::Device::Gpu(gpu) => {
                let $b = *gpu;
                $body
            }
        }
    }};
}

/// `gpu-cnn devices`: every adapter wgpu finds, with the limits that matter here.
pub fn describe_devices() -> String {
    let mut out = String::from("cpu: the CPU backend (reference; always available)\n");
    let adapters = list_adapters();
    if adapters.is_empty() {
        out += "wgpu found no GPU adapter (on Debian, `apt-get install mesa-vulkan-drivers` gives a software Vulkan one)\n";
    }
    for a in adapters {
        out += &format!(
            "{}: {} | {:?} | {:?} | driver {} {}\n   max buffer {} MiB, max storage binding {} MiB, workgroup storage {} KiB, {} invocations per workgroup, {} workgroups per dimension\n",
            a.index,
            a.name,
            a.backend,
            a.device_type,
            a.driver,
            a.driver_info,
            a.max_buffer_size >> 20,
            a.max_storage_buffer_binding_size >> 20,
            a.max_compute_workgroup_storage_size >> 10,
            a.max_compute_invocations_per_workgroup,
            a.max_compute_workgroups_per_dimension
        );
    }
    out
}
