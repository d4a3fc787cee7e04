//! `--device`: from the user's word to a backend, and the `devices` listing.

use crate::backend::cpu::CpuBackend;
use crate::backend::gpu::{choose_adapter, list_adapters, DeviceRequest, GpuBackend};
use anyhow::{Context, Result};

/// The backend a run computes on.
pub enum Device {
    Cpu(CpuBackend),
    Gpu(Box<GpuBackend>),
}

/// Opens the device `request` names (`auto|cpu|gpu|vulkan|metal|dx12|gl|N`, parsed once where
/// the word was read). `auto` falls back to the CPU backend, saying why in one line, when wgpu
/// finds only a software adapter or none.
pub fn open(request: DeviceRequest) -> Result<Device> {
    match choose_adapter(request)? {
        Some(adapter) => {
            let info = adapter.get_info();
            let gpu = GpuBackend::new(adapter).with_context(|| format!("opening {} ({:?})", info.name, info.backend))?;
            Ok(Device::Gpu(Box::new(gpu)))
        }
        None => {
            if request == DeviceRequest::Auto {
                let mut software: Vec<String> = list_adapters().into_iter().map(|a| a.name.split(" (").next().unwrap_or_default().to_string()).collect();
                software.dedup();
                if software.is_empty() {
                    crate::stderr_line!("--device auto: no GPU found; using the CPU backend");
                } else {
                    crate::stderr_line!("--device auto: only a software GPU ({}); using the CPU backend (--device gpu to use it)", software.join(", "));
                }
            }
            Ok(Device::Cpu(CpuBackend::new()))
        }
    }
}

/// Keeps Mesa's Vulkan device-select layer from loading, unless the user set it up
/// (MESA_VK_DEVICE_SELECT or NODEVICE_SELECT). wgpu enables the Wayland surface extension on
/// every Vulkan instance, and with it this implicit layer connects to a Wayland display to find
/// the "default" GPU: on a headless machine libwayland then prints `error: XDG_RUNTIME_DIR is
/// invalid or not set in the environment.` per instance. gpu-cnn chooses its adapter itself
/// (`--device`), so the layer adds nothing here. Call it first in main, before any thread starts
/// (it sets an environment variable).
pub fn quiet_vulkan_layers() {
    if std::env::var_os("MESA_VK_DEVICE_SELECT").is_none() && std::env::var_os("NODEVICE_SELECT").is_none() {
        std::env::set_var("NODEVICE_SELECT", "1");
    }
}

/// Opens the device `$request` (a `DeviceRequest`) names and runs `$body` with the backend bound to `$b`, whichever
/// kind it is (the body is compiled once per backend).
#[macro_export]
macro_rules! with_backend {
    ($request:expr, $b:ident => $body:expr) => {{
        match $crate::device::open($request)? {
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
