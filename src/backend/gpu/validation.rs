//! Opt-in API validation for CI and driver bring-up: `GPU_CNN_VALIDATION=1` turns on wgpu's own
//! validation and the Khronos validation layer (when installed), routes the layer's messages
//! (wgpu logs them through the `log` crate) into a list, and makes the next flush or read-back
//! fail with them. A shader or barrier that only works on one driver shows up here before it
//! reaches a user's GPU.

use std::sync::{Mutex, Once};

/// The environment variable that turns validation on ("1").
pub const ENV: &str = "GPU_CNN_VALIDATION";

/// Test-only: `GPU_CNN_TEST_MISUSE=zero-size-buffer` makes every new Vulkan device create a
/// zero-sized VkBuffer behind wgpu's back, which the validation layer must report. It proves
/// that a validation message fails the run (tests/gpu_validation.rs).
pub const MISUSE_ENV: &str = "GPU_CNN_TEST_MISUSE";

/// wgpu logs the Vulkan debug messenger's messages under this target.
const VULKAN_MESSENGER_TARGET: &str = "wgpu_hal::vulkan::instance";

/// The one known false report: layers older than the SPIR-V registry's WGSL entry (Debian 12
/// ships 1.3.239) reject the OpSource that naga writes with InstanceFlags::DEBUG (source
/// language 10 = WGSL). wgpu also logs each message's objects on a second line, which says
/// nothing by itself.
fn is_known_false_report(text: &str) -> bool {
    (text.contains("InconsistentSpirv") && text.contains("Invalid source language operand: 10"))
        // The Vulkan loader's own messages (no driver, a missing ICD file), which come while
        // wgpu tries every backend: not the layer's findings, and a GL run must not fail for
        // them (a Vulkan run without a driver fails for want of an adapter anyway).
        || text.contains("[Loader Message")
}

/// The Khronos validation layer's name, as the Vulkan loader lists it.
const LAYER: &str = "VK_LAYER_KHRONOS_validation";

/// With validation requested on a Vulkan device, Err when the Khronos layer is not installed:
/// wgpu then runs without it and says so only at debug level, so a run meant to be checked
/// would pass unchecked.
pub fn check_layer_present(device: &wgpu::Device) -> Result<(), String> {
    if !requested() {
        return Ok(());
    }
    // SAFETY: the hal device is only read (its instance's loader entry), not used for work.
    let layers = unsafe {
        let Some(hal) = device.as_hal::<wgpu::hal::api::Vulkan>() else { return Ok(()) };
        hal.shared_instance().entry().enumerate_instance_layer_properties().unwrap_or_default()
    };
    if layers.iter().any(|l| l.layer_name_as_c_str().is_ok_and(|n| n.to_bytes() == LAYER.as_bytes())) {
        Ok(())
    } else {
        Err(format!("{ENV}=1 asks for the Khronos validation layer, but the Vulkan loader finds no {LAYER} (Debian: vulkan-validationlayers)"))
    }
}

static MESSAGES: Mutex<Vec<String>> = Mutex::new(Vec::new());

pub fn requested() -> bool {
    std::env::var(ENV).is_ok_and(|v| v == "1")
}

/// Keeps the validation layer's warnings and errors; everything else wgpu logs is ignored.
struct MessageCapture;

impl log::Log for MessageCapture {
    fn enabled(&self, meta: &log::Metadata) -> bool {
        meta.level() <= log::Level::Warn && meta.target() == VULKAN_MESSENGER_TARGET
    }
    fn log(&self, record: &log::Record) {
        if self.enabled(record.metadata()) {
            let text = format!("{}: {}", record.level(), record.args()).replace("\n\t", " ");
            if is_known_false_report(&text) || record.args().to_string().trim_start().starts_with("objects:") {
                return;
            }
            MESSAGES.lock().unwrap_or_else(|p| p.into_inner()).push(text);
        }
    }
    fn flush(&self) {}
}

/// The instance flags to use: with validation requested, wgpu's VALIDATION (loads the Khronos
/// layer) and DEBUG (enables the debug messenger), with the message capture installed first
/// (wgpu asks the messenger only for the severities `log` lets through).
pub fn instance_flags(flags: wgpu::InstanceFlags) -> wgpu::InstanceFlags {
    if !requested() {
        return flags;
    }
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        if log::set_logger(&MessageCapture).is_ok() {
            log::set_max_level(log::LevelFilter::Warn);
        }
    });
    flags | wgpu::InstanceFlags::VALIDATION | wgpu::InstanceFlags::DEBUG
}

/// Err with every validation message captured since the last call (in any device of the
/// process: the messenger belongs to the instance).
pub fn take_messages() -> Result<(), String> {
    let mut messages = MESSAGES.lock().unwrap_or_else(|p| p.into_inner());
    if messages.is_empty() {
        return Ok(());
    }
    let text = format!("{} validation message(s) ({ENV}=1): {}", messages.len(), messages.join("\n"));
    messages.clear();
    Err(text)
}

/// The deliberate misuse behind `GPU_CNN_TEST_MISUSE`, on Vulkan devices only.
pub fn misuse_if_asked(device: &wgpu::Device) {
    if std::env::var(MISUSE_ENV).as_deref() != Ok("zero-size-buffer") {
        return;
    }
    // SAFETY: the buffer is created and destroyed at once and never handed to wgpu.
    unsafe {
        if let Some(hal) = device.as_hal::<wgpu::hal::api::Vulkan>() {
            let raw = hal.raw_device();
            // A default VkBufferCreateInfo has size 0: VUID-VkBufferCreateInfo-size-00912.
            if let Ok(buffer) = raw.create_buffer(&Default::default(), None) {
                raw.destroy_buffer(buffer, None);
            }
        }
    }
}
