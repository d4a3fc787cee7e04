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

/// The gpu-cnn binary the CLI tests run: the one cargo built, or GPU_CNN_TEST_BIN's (test
/// executables copied to another machine, as scripts/device-check.sh does).
pub fn cli_binary() -> std::ffi::OsString {
    std::env::var_os("GPU_CNN_TEST_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_gpu-cnn").into())
}

/// Runs the gpu-cnn binary; returns (exit success, stdout, stderr).
pub fn run_cli(args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(cli_binary()).args(args).output().expect("run gpu-cnn");
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
    let mut cmd = std::process::Command::new(cli_binary());
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run gpu-cnn");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}
