//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

/// A fresh empty folder under the system temp dir, unique to this test.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gpu-cnn-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Uniform values in [-1, 1), seeded.
pub fn random_vec(len: usize, seed: u64) -> Vec<f32> {
    let mut rng = gpu_cnn::rng::Rng::new(seed);
    (0..len).map(|_| rng.unit_f32() * 2.0 - 1.0).collect()
}

/// Runs the gpu-cnn binary; returns (exit success, stdout, stderr).
pub fn run_cli(args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gpu-cnn")).args(args).output().expect("run gpu-cnn");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Any wgpu adapter, software ones included (Mesa's lavapipe in CI), or the one
/// GPU_CNN_TEST_DEVICE names (vulkan, gl, 1, ...). None, after saying so, when there is none,
/// unless GPU_CNN_REQUIRE_GPU=1: then a missing adapter fails the test.
pub fn gpu_backend() -> Option<gpu_cnn::backend::gpu::GpuBackend> {
    use gpu_cnn::backend::gpu::{choose_adapter, DeviceRequest, GpuBackend};
    use gpu_cnn::backend::Backend;
    let request = match std::env::var("GPU_CNN_TEST_DEVICE") {
        Ok(name) => name.parse().expect("GPU_CNN_TEST_DEVICE"),
        Err(_) => DeviceRequest::Gpu,
    };
    match choose_adapter(request) {
        Ok(Some(adapter)) => {
            let gpu = GpuBackend::new(adapter).expect("opening the GPU device");
            eprintln!("GPU test on {}", gpu.describe());
            // CI runs the GPU tests once per implementation and says which it means to test,
            // so a missing driver cannot pass by falling back to another one.
            if let Ok(expected) = std::env::var("GPU_CNN_TEST_EXPECT_ADAPTER") {
                assert!(gpu.describe().contains(&expected), "GPU_CNN_TEST_EXPECT_ADAPTER={expected} but the test runs on {}", gpu.describe());
            }
            Some(gpu)
        }
        Ok(None) | Err(_) => {
            if std::env::var("GPU_CNN_REQUIRE_GPU").is_ok_and(|v| v == "1") {
                panic!("no GPU adapter but GPU_CNN_REQUIRE_GPU=1");
            }
            eprintln!("no GPU adapter: skipping this GPU test");
            None
        }
    }
}

/// Runs the gpu-cnn binary with extra environment variables; returns (exit success, stdout, stderr).
pub fn run_cli_env(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_gpu-cnn"));
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run gpu-cnn");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Every weight tensor of `model`, named and shaped as in checkpoints, filled with `value`.
pub fn constant_weights(model: &gpu_cnn::model::Model, value: f32) -> Vec<gpu_cnn::network::HostTensor> {
    use gpu_cnn::network::HostTensor;
    let mut tensors = Vec::new();
    for layer in &model.layers {
        if let (Some(dims), Some((k, b))) = (layer.kernel_dims(), layer.param_lens()) {
            tensors.push(HostTensor { name: format!("{}.kernel", layer.name), dims, data: vec![value; k] });
            tensors.push(HostTensor { name: format!("{}.bias", layer.name), dims: vec![b], data: vec![value; b] });
        }
    }
    tensors
}
