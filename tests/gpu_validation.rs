//! GPU_CNN_VALIDATION=1 turns on the Khronos validation layer and fails a run on any message it
//! reports. These tests prove both halves on a Vulkan adapter (lavapipe in CI): a clean training
//! run stays clean, and a deliberate misuse behind a test-only switch fails the run, naming the
//! broken rule. CI installs the layer (vulkan-validationlayers); without it these tests fail
//! under GPU_CNN_REQUIRE_GPU=1 instead of passing quietly.

mod common;
use common::run_cli_env;

const LAYER_MANIFEST: &str = "/usr/share/vulkan/explicit_layer.d/VkLayer_khronos_validation.json";

/// The layer and a Vulkan adapter, or None (after saying why) when this machine has neither
/// and GPU_CNN_REQUIRE_GPU is not set.
fn validation_available() -> bool {
    let has_layer = std::path::Path::new(LAYER_MANIFEST).exists();
    let has_vulkan = gpu_cnn::backend::gpu::list_adapters().iter().any(|a| a.backend == wgpu::Backend::Vulkan);
    if has_layer && has_vulkan {
        return true;
    }
    if std::env::var("GPU_CNN_REQUIRE_GPU").is_ok_and(|v| v == "1") {
        panic!("GPU_CNN_REQUIRE_GPU=1 but no Vulkan adapter ({has_vulkan}) or no validation layer at {LAYER_MANIFEST} ({has_layer})");
    }
    eprintln!("no Vulkan adapter or validation layer: skipping");
    false
}

/// A short training run on the Vulkan adapter into `dir/name`, with extra environment variables.
fn train(dir: &std::path::Path, name: &str, env: &[(&str, &str)]) -> (bool, String, String) {
    let out = dir.join(name);
    let out = out.to_str().unwrap();
    let args = ["train", "--dataset", "synthetic", "--device", "vulkan", "--epochs", "1", "--limit-train", "96", "--limit-test", "32", "--out", out];
    run_cli_env(&args, env)
}

#[test]
fn a_clean_run_under_validation_reports_nothing() {
    if !validation_available() {
        return;
    }
    let dir = common::temp_dir("validation-clean");
    let (ok, _, stderr) = train(&dir, "run", &[("GPU_CNN_VALIDATION", "1")]);
    assert!(ok, "a clean run failed under validation:\n{stderr}");
    assert!(!stderr.contains("validation message"), "{stderr}");
    assert!(dir.join("run").join("last.safetensors").exists());
}

#[test]
fn a_validation_message_fails_the_run() {
    if !validation_available() {
        return;
    }
    let dir = common::temp_dir("validation-misuse");
    let (ok, _, stderr) = train(&dir, "run", &[("GPU_CNN_VALIDATION", "1"), ("GPU_CNN_TEST_MISUSE", "zero-size-buffer")]);
    assert!(!ok, "the misuse went unnoticed:\n{stderr}");
    assert!(stderr.contains("validation message"), "{stderr}");
    // The layer names the rule the zero-sized buffer breaks.
    assert!(stderr.contains("VUID-VkBufferCreateInfo-size"), "{stderr}");
    // Without validation the same misuse is not caught: the failure above came from the layer.
    let (ok, _, stderr) = train(&dir, "run2", &[("GPU_CNN_TEST_MISUSE", "zero-size-buffer")]);
    assert!(ok, "{stderr}");
}

#[test]
fn validation_asked_for_without_the_layer_fails_instead_of_running_unchecked() {
    if !validation_available() {
        return;
    }
    let dir = common::temp_dir("validation-no-layer");
    // The loader then searches only this empty path for explicit layers.
    let empty = dir.join("no-layers");
    std::fs::create_dir_all(&empty).unwrap();
    let env = [("GPU_CNN_VALIDATION", "1"), ("VK_LAYER_PATH", empty.to_str().unwrap()), ("GPU_CNN_TEST_MISUSE", "zero-size-buffer")];
    let (ok, _, stderr) = train(&dir, "run", &env);
    assert!(!ok, "the run went unvalidated and passed:\n{stderr}");
    assert!(stderr.contains("finds no VK_LAYER_KHRONOS_validation"), "{stderr}");
    // A GL run under validation on a machine whose Vulkan loader finds no driver is not failed
    // by the loader's complaint.
    let out = dir.join("gl");
    let args =
        ["train", "--dataset", "synthetic", "--device", "gl", "--epochs", "1", "--limit-train", "96", "--limit-test", "32", "--out", out.to_str().unwrap()];
    let (ok, _, stderr) = run_cli_env(&args, &[("GPU_CNN_VALIDATION", "1"), ("VK_ICD_FILENAMES", "/nonexistent.json")]);
    assert!(ok, "{stderr}");
}
