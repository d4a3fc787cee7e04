//! Helpers shared by the integration tests: one per idea. `backend_test!` runs one generic body
//! on every backend, `gpu_test!` a body on the GPU (or says it skips), `assert_close` compares
//! with a stated atol/rtol, and every random input comes from the crate's own Rng.
#![allow(dead_code, unused_macros)]

pub mod finite_diff;

use std::path::PathBuf;

/// Every new conv argument and activation= on awkward shapes (13x13x3 input, odd channel
/// counts): Conv2D without bias and dilated, DepthwiseConv2D, SeparableConv2D, and every
/// element-wise `activation=` on convs and dense layers (fused ReLU on the depthwise and
/// separable outputs). tests/layers.rs checks its shapes and Keras's parameter counts.
pub const CONV_KINDS_ARCH: &str = "Conv2D(5, 3, padding=\"same\", use_bias=False) BatchNormalization ReLU\n\
    Conv2D(6, 3, dilation_rate=2, activation=\"gelu\")\n\
    DepthwiseConv2D(3, padding=\"same\", depth_multiplier=2, activation=\"relu\")\n\
    SeparableConv2D(7, 3, padding=\"same\", dilation_rate=(1, 2), activation=\"relu\")\n\
    DepthwiseConv2D((3, 2), strides=2, use_bias=False, activation=\"leaky_relu\")\n\
    SeparableConv2D(5, 3, strides=2, padding=\"same\", depth_multiplier=2, use_bias=False, activation=\"swish\")\n\
    GlobalAveragePooling2D Dense(9, activation=\"elu\") Dense(8, activation=\"tanh\") Dense(6, activation=\"sigmoid\") Dense(classes, softmax)\n";

/// A fresh empty folder under the system temp dir, unique to this test. The test binary
/// removes its folders when it exits, unless a test failed after making one: then all are
/// kept to look at.
pub fn temp_dir(name: &str) -> PathBuf {
    remove_temp_dirs_at_exit();
    let dir = std::env::temp_dir().join(format!("gpu-cnn-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Set by the panic hook (installed by the first `temp_dir`): a test failed, so the folders stay.
static A_TEST_FAILED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Once per test binary: a panic hook that notes a failure (then calls the default hook, which
/// prints it), and an exit handler that removes this process's `temp_dir` folders. Without it
/// every run of the suite left ~50 MB of checkpoints and browser profiles in the temp dir.
fn remove_temp_dirs_at_exit() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            A_TEST_FAILED.store(true, std::sync::atomic::Ordering::SeqCst);
            default_hook(info)
        }));
        extern "C" {
            fn atexit(handler: extern "C" fn()) -> std::ffi::c_int;
        }
        // SAFETY: atexit takes a plain function, run once when the process exits normally
        // (the test harness returns from main, or calls exit after a failure).
        unsafe { atexit(remove_temp_dirs) };
    });
}

extern "C" fn remove_temp_dirs() {
    if A_TEST_FAILED.load(std::sync::atomic::Ordering::SeqCst) {
        return;
    }
    let prefix = format!("gpu-cnn-test-{}-", std::process::id());
    for entry in std::fs::read_dir(std::env::temp_dir()).into_iter().flatten().flatten() {
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Uniform values in [-1, 1), seeded.
pub fn random_vec(len: usize, seed: u64) -> Vec<f32> {
    uniform_vec(&mut gpu_cnn::rng::Rng::new(seed), len)
}

/// The next `len` values of `rng`, uniform in [-1, 1) (the crate's own generator, so a test's
/// inputs are the same on every platform and every version of every dependency).
pub fn uniform_vec(rng: &mut gpu_cnn::rng::Rng, len: usize) -> Vec<f32> {
    (0..len).map(|_| rng.unit_f32() * 2.0 - 1.0).collect()
}

/// The largest |value| (at least 1e-6), the scale GEMM tolerances are stated against.
pub fn max_abs(values: &[f32]) -> f32 {
    values.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-6)
}

/// Element by element |actual - expected| <= atol + rtol * |expected| (numpy's allclose). Each
/// call states its tolerances and why next to it. `what` names the case in the failure.
#[track_caller]
pub fn assert_close<E: Copy + Into<f64>>(what: &str, actual: &[f32], expected: &[E], atol: f64, rtol: f64) {
    assert_eq!(actual.len(), expected.len(), "{what}: lengths differ");
    for (i, (&a, &e)) in actual.iter().zip(expected).enumerate() {
        let e: f64 = e.into();
        let tolerance = atol + rtol * e.abs();
        assert!((a as f64 - e).abs() <= tolerance, "{what}[{i}]: {a} vs expected {e} (atol {atol}, rtol {rtol})");
    }
}

/// Bit-for-bit equality of f32 arrays (NaN payloads and signed zeros included).
#[track_caller]
pub fn assert_same_bits(what: &str, actual: &[f32], expected: &[f32]) {
    assert_eq!(actual.len(), expected.len(), "{what}: lengths differ");
    if let Some(i) = actual.iter().zip(expected).position(|(a, e)| a.to_bits() != e.to_bits()) {
        panic!("{what}[{i}]: {} vs {} (bits differ)", actual[i], expected[i]);
    }
}

/// One test per backend from one generic body:
/// `backend_test! { fn name<B>(b: &B) { ... } }` defines `fn name<B: Backend>(b: &B)` and the
/// tests `name::cpu` and `name::gpu`. The GPU test runs on `gpu_backend()` (skipped with a line
/// without an adapter, a failure with GPU_CNN_REQUIRE_GPU=1). Use `#[macro_use] mod common;`.
macro_rules! backend_test {
    ($(#[$meta:meta])* fn $name:ident<$B:ident>($b:ident: &$B2:ident) $body:block) => {
        $(#[$meta])*
        fn $name<$B: gpu_cnn::backend::Backend>($b: &$B2) $body

        mod $name {
            #[test]
            fn cpu() {
                super::$name(&gpu_cnn::backend::cpu::CpuBackend::new());
            }
            #[test]
            fn gpu() {
                if let Some(gpu) = super::common::gpu_backend() {
                    super::$name(&gpu);
                }
            }
        }
    };
}

/// A test of the GPU backend alone: `gpu_test! { fn name(gpu: &GpuBackend) { ... } }`, skipped
/// with a line without an adapter (a failure with GPU_CNN_REQUIRE_GPU=1).
macro_rules! gpu_test {
    ($(#[$meta:meta])* fn $name:ident($gpu:ident: &GpuBackend) $body:block) => {
        $(#[$meta])*
        #[test]
        fn $name() {
            if let Some(gpu) = common::gpu_backend() {
                let $gpu: &gpu_cnn::backend::gpu::GpuBackend = &gpu;
                $body
            }
        }
    };
}

/// The gpu-cnn binary the CLI tests run: the one cargo built, or GPU_CNN_TEST_BIN's (test
/// executables copied to another machine, as scripts/device-check.sh does).
pub fn cli_binary() -> std::ffi::OsString {
    std::env::var_os("GPU_CNN_TEST_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_gpu-cnn").into())
}

/// Runs the gpu-cnn binary; returns (exit success, stdout, stderr).
pub fn run_cli(args: &[&str]) -> (bool, String, String) {
    run_cli_env(args, &[])
}

/// (exit success, stdout, stderr) of a finished run. A failed run's stderr ends with its exit
/// status, so a test's "{err}" shows a signal (a crash with nothing printed) as well as a code.
fn outcome(out: std::process::Output) -> (bool, String, String) {
    let mut err = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() {
        err.push_str(&format!("\n(gpu-cnn ended with {})", out.status));
    }
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), err)
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
    let mut cmd = std::process::Command::new(cli_binary());
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    outcome(cmd.output().expect("run gpu-cnn"))
}

/// Every weight tensor of `model`, named and shaped as in checkpoints, filled with `value`.
pub fn constant_weights(model: &gpu_cnn::model::Model, value: f32) -> Vec<gpu_cnn::network::HostTensor> {
    use gpu_cnn::network::HostTensor;
    let mut tensors = Vec::new();
    for layer in &model.layers {
        for spec in layer.params() {
            tensors.push(HostTensor { name: gpu_cnn::network::param_name(layer, &spec), data: vec![value; spec.len()], dims: spec.dims });
        }
    }
    tensors
}

/// Checkpoint metadata for tests that write their own checkpoints: `arch`, `input` and
/// `class_names` as given, every other field a fresh run's (no history, no pipeline, no data
/// source, unweighted, seed 0, step 0, batch 32, rate 1e-3). Change fields with
/// `CheckpointMeta { step: 3, ..checkpoint_meta(..) }`.
pub fn checkpoint_meta<S: AsRef<str>>(arch: &str, input: (usize, usize, usize), class_names: &[S]) -> gpu_cnn::checkpoint::CheckpointMeta {
    gpu_cnn::checkpoint::CheckpointMeta {
        arch: arch.to_string(),
        input,
        class_names: class_names.iter().map(|c| c.as_ref().to_string()).collect(),
        dataset: "synthetic".into(),
        epoch: 0,
        step: 0,
        seed: 0,
        batch_size: 32,
        learning_rate: 1e-3,
        optimizer: gpu_cnn::optimizer::Optimizer::default(),
        label_smoothing: 0.0,
        augment: gpu_cnn::augment::Augmentation::NONE,
        history: Vec::new(),
        preprocessing: None,
        data_source: None,
        class_weights: None,
        recipe: Default::default(),
    }
}
