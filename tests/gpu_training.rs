//! Whole training on the GPU backend against the CPU reference: the same steps from the same
//! weights agree, a seeded GPU run repeats exactly, and the CLI trains with --device gpu.
//! Small shapes and few steps: lavapipe (CI's GPU) runs shaders on the CPU.

#[macro_use]
mod common;
use gpu_cnn::backend::cpu::CpuBackend;
use gpu_cnn::backend::Backend;
use gpu_cnn::data::synthetic::{generate, SyntheticSpec};
use gpu_cnn::data::Dataset;
use gpu_cnn::model::{parse_arch, Model};
use gpu_cnn::network::{HostTensor, Network};

const ARCH: &str = "conv2d 8 3 relu\nmaxpool 2\nconv2d 6 3 relu padding=same stride=2\nflatten\ndense 16 relu\ndense 4 softmax\n";
const BATCH: usize = 7; // no tile size divides it

fn data() -> Dataset {
    generate(&SyntheticSpec { train: 140, test: 20, height: 13, width: 13, channels: 3, classes: 4 }, 2)
}

/// The test network on `backend` with the training images uploaded, and the first epoch's order.
fn network_on<B: Backend>(backend: B) -> (Network<B>, B::Images, Vec<u32>) {
    let ds = data();
    let model = Model::new(&parse_arch(ARCH).unwrap(), ds.input_shape()).unwrap();
    let net = Network::new(backend, model, BATCH, 11).unwrap();
    let images = net.backend.upload_images(&ds.train.images, &ds.train.labels, ds.train.image_len()).unwrap();
    (net, images, gpu_cnn::train::epoch_order(ds.train.len(), 11, 0))
}

/// Trains `steps` steps of BATCH on `backend`; returns the weights and the metrics.
fn run<B: Backend>(backend: B, steps: usize) -> (Vec<HostTensor>, gpu_cnn::network::Metrics) {
    let (mut net, images, order) = network_on(backend);
    for batch in order.chunks(BATCH).take(steps) {
        net.train_step(&images, batch).unwrap();
    }
    (net.weights().unwrap(), net.read_metrics().unwrap())
}

gpu_test! {
    fn twenty_gpu_steps_agree_with_the_cpu(gpu: &GpuBackend) {
        let (gw, gm) = run(gpu, 20);
        let (cw, cm) = run(CpuBackend::new(), 20);
        // Summation orders differ (GEMM blocking, reductions), so gradients differ in the last
        // bits each step; on lavapipe the weights after 20 steps differ by ~1e-7 at most. A real
        // divergence (a wrong gradient, or Adam flipping a near-zero gradient's sign) moves a
        // weight by ~lr = 1e-3 per step, so 1e-5 (max) and 1e-7 (mean) catch it with 100x margin
        // over rounding.
        for (g, c) in gw.iter().zip(&cw) {
            let diffs: Vec<f32> = g.data.iter().zip(&c.data).map(|(a, b)| (a - b).abs()).collect();
            let max = diffs.iter().cloned().fold(0.0, f32::max);
            let mean = diffs.iter().sum::<f32>() / diffs.len() as f32;
            assert!(max <= 1e-5 && mean <= 1e-7, "{}: max diff {max}, mean diff {mean}", g.name);
        }
        // The same samples were seen: the accumulated loss agrees to f32 rounding and a handful
        // of near-tie predictions.
        assert_eq!(gm.count, cm.count);
        assert!((gm.loss - cm.loss).abs() < 1e-3, "loss {} vs {}", gm.loss, cm.loss);
        assert!((gm.accuracy - cm.accuracy).abs() <= 2.0 / cm.count as f64, "accuracy {} vs {}", gm.accuracy, cm.accuracy);
    }
}

backend_test! {
    /// Two seeded runs on one device give the same bits (fixed-order sums, no float atomics).
    fn a_seeded_run_repeats_exactly<B>(backend: &B) {
        let (a, ma) = run(backend, 6);
        let (b, mb) = run(backend, 6);
        for (x, y) in a.iter().zip(&b) {
            common::assert_same_bits(&format!("{} of two seeded runs", x.name), &x.data, &y.data);
        }
        assert_eq!(ma, mb);
    }
}

gpu_test! {
    fn cli_trains_and_evaluates_with_device_gpu(_gpu: &GpuBackend) {
        let dir = common::temp_dir("gpu-cli");
        let arch = dir.join("tiny.arch");
        std::fs::write(&arch, "conv2d 4 3 relu\nmaxpool 2\nflatten\ndense 10 softmax\n").unwrap();
        let run = dir.join("run");
        let args = ["train", "--device", "gpu", "--dataset", "synthetic", "--arch", arch.to_str().unwrap(), "--epochs", "1", "--limit-train", "96", "--limit-test", "32", "--out", run.to_str().unwrap()];
        let (ok, _, err) = common::run_cli(&args);
        assert!(ok, "{err}");
        assert!(err.contains("Device: ") && !err.contains("Device: CPU backend"), "the run must name its GPU adapter: {err}");
        assert!(run.join("last.safetensors").exists());
        let (ok, out, err) = common::run_cli(&["evaluate", "--device", "gpu", "--checkpoint", run.join("last.safetensors").to_str().unwrap(), "--limit-test", "32", "--json"]);
        assert!(ok, "{err}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["images"], 32);
    }
}

#[test]
fn auto_uses_the_cpu_backend_when_only_software_adapters_exist() {
    let adapters = gpu_cnn::backend::gpu::list_adapters();
    let only_software = adapters.iter().all(|a| a.device_type == wgpu::DeviceType::Cpu);
    let (ok, _, err) = common::run_cli(&[
        "train",
        "--device",
        "auto",
        "--dataset",
        "synthetic",
        "--limit-train",
        "32",
        "--limit-test",
        "16",
        "--epochs",
        "1",
        "--out",
        common::temp_dir("auto").join("r").to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    if only_software {
        assert!(err.contains("using the CPU backend") && err.contains("Device: CPU backend"), "{err}");
    } else {
        assert!(!err.contains("Device: CPU backend"), "a real GPU exists, auto must take it: {err}");
    }
}

gpu_test! {
    fn a_batch_too_big_for_the_device_is_refused_before_training(_gpu: &GpuBackend) {
        let dir = common::temp_dir("gpu-too-big");
        let out = dir.join("run");
        // A batch larger than the data is taken as all of it (2,000 images here); 16 MB of
        // activations an image make that 32 GB, over every device's buffer limits.
        let wide = dir.join("wide.arch");
        std::fs::write(&wide, "conv2d 4096 3 relu padding=same\nflatten\ndense 10 softmax\n").unwrap();
        let args = ["train", "--device", "gpu", "--dataset", "synthetic", "--arch", wide.to_str().unwrap(), "--batch-size", "100000", "--epochs", "1"];
        let (ok, _, err) = common::run_cli(&[&args[..], &["--out", out.to_str().unwrap()]].concat());
        assert!(!ok && !err.contains("panicked"), "{err}");
        assert!(err.contains("batch size 100000") && err.contains("max_"), "the error must name the limit: {err}");
        assert!(!out.join("last.safetensors").exists());
    }
}

gpu_test! {
    fn a_training_step_sends_only_its_indices_and_adams_scalars(gpu: &GpuBackend) {
        let (mut net, images, order) = network_on(gpu);
        let mut batches = order.chunks(BATCH);
        // Warm-up: the first step grows the split-k scratch buffer to its final size, so the
        // second still creates (and caches) the uniforms of the dispatches bound to it.
        for _ in 0..2 {
            net.train_step(&images, batches.next().unwrap()).unwrap();
        }
        let before = net.backend.host_to_device_bytes();
        net.train_step(&images, batches.next().unwrap()).unwrap();
        let sent = net.backend.host_to_device_bytes() - before;
        // BATCH u32 indices plus Adam's 4 per-step u32 scalars; no pixels, no weights.
        assert_eq!(sent, (BATCH * 4 + 16) as u64);
    }
}

gpu_test! {
    fn kernel_times_come_from_gpu_timestamps_where_the_adapter_has_them(gpu: &GpuBackend) {
        let has_timestamps = gpu.device().features().contains(wgpu::Features::TIMESTAMP_QUERY);
        let s = gpu_cnn::backend::DenseShape { inputs: 256, units: 256 };
        let x = gpu.tensor(64 * 256).unwrap();
        let w = gpu.tensor(256 * 256).unwrap();
        let b = gpu.tensor(256).unwrap();
        let mut y = gpu.tensor(64 * 256).unwrap();
        let started = std::time::Instant::now();
        let seconds = gpu.device_seconds(&mut || gpu.dense_forward(&x, &w, &b, &mut y, &s, 64, true)).unwrap();
        gpu.flush().unwrap();
        gpu.download(&y).unwrap();
        let host = started.elapsed().as_secs_f64();
        match seconds {
            // The GPU's own time for the pass is positive and within the host's wall time around it.
            Some(t) => assert!(has_timestamps && t > 0.0 && t <= host, "device {t} s, host {host} s"),
            None => assert!(!has_timestamps, "the adapter has timestamp queries, they must be used"),
        }
    }
}

gpu_test! {
    fn a_training_step_records_one_compute_pass(gpu: &GpuBackend) {
        let (mut net, images, order) = network_on(gpu);
        let mut batches = order.chunks(BATCH);
        for step in 0..3 {
            let before = net.backend.record_counts().unwrap();
            net.train_step(&images, batches.next().unwrap()).unwrap();
            let after = net.backend.record_counts().unwrap();
            // gather 1, forward 5, loss 1; backward 10: conv2d's filter gradient in 2 dispatches
            // (split-k partials over its 7 x 11 x 11 pixels + their sum), conv2d_1's and the 2
            // dense ones in 1 (one split of at most 256 rows: the GEMM writes dw and db itself),
            // the input gradients of dense_1, dense and the pool with the ReLU backward of the
            // layer before fused in (3), conv2d_1's through col2im (2); Adam 1 over all 8
            // trainable tensors (their arenas). 18 dispatches, all in one pass (per-pass cost is
            // large on Metal and mobile GPUs). Unfused, the three ReLU backwards would add 3, Adam
            // per tensor 7, the one-split filter gradients' sums 3.
            assert_eq!(after.dispatches - before.dispatches, 18, "step {step}: {before:?} -> {after:?}");
            assert_eq!(after.compute_passes - before.compute_passes, 1, "step {step}: {before:?} -> {after:?}");
        }
        let before = net.backend.record_counts().unwrap();
        net.evaluate(&images, 20).unwrap();
        let after = net.backend.record_counts().unwrap();
        // Three eval steps of 7, 7 and 6 images: one pass each.
        assert_eq!(after.compute_passes - before.compute_passes, 3, "{before:?} -> {after:?}");
    }
}

gpu_test! {
    /// While timing, each dispatch has its own pass, with timestamps at its start and end.
    fn timed_kernels_get_a_pass_each(gpu: &GpuBackend) {
        let s = gpu_cnn::backend::DenseShape { inputs: 16, units: 8 };
        let (x, w, b) = (gpu.tensor(4 * 16).unwrap(), gpu.tensor(16 * 8).unwrap(), gpu.tensor(8).unwrap());
        let mut y = gpu.tensor(4 * 8).unwrap();
        let before = gpu.record_counts().unwrap();
        gpu.device_seconds(&mut || {
            gpu.dense_forward(&x, &w, &b, &mut y, &s, 4, true);
            gpu.relu_backward(&x, &mut y, 32);
        })
        .unwrap();
        gpu.flush().unwrap();
        let after = gpu.record_counts().unwrap();
        let timed = gpu.device().features().contains(wgpu::Features::TIMESTAMP_QUERY);
        let step = after.since(before);
        assert_eq!(step.dispatches, 2);
        assert_eq!(step.compute_passes, if timed { 2 } else { 1 });
        // Traffic from the shapes, each operand once: dense reads x (4x16), w (16x8), b (8) and
        // writes y (4x8); relu_backward reads y and dy (32 each) and writes dy.
        assert_eq!((step.bytes_read, step.bytes_written), (4 * (64 + 128 + 8 + 64), 4 * (32 + 32)));
    }
}
