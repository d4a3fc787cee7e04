//! What `gpu-cnn bench` measures on one device: every kernel at the seed model's real shapes,
//! whole training steps, inference, time to first step, memory, and throughput against batch
//! size. Generic over the Backend, so the CPU and GPU figures come from the same code.

use crate::backend::{AdamConfig, Backend, ConvShape, DenseShape, PoolShape, RecordCounts};
use crate::data::synthetic::{generate, SyntheticSpec};
use crate::model::{seed_layers, LayerSpec, Model};
use crate::network::Network;
use crate::system_info::peak_rss_bytes;
use anyhow::Result;
use serde::Serialize;
use std::time::Instant;

#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// Batch sizes for the per-kernel table.
    pub kernel_batches: Vec<usize>,
    /// Batch sizes for whole training steps.
    pub train_batches: Vec<usize>,
    /// Batch sizes for the scaling table.
    pub scaling_batches: Vec<usize>,
    pub inference_batch: usize,
    /// Timed repetitions per figure (the median is reported).
    pub repeats: usize,
    /// Whole-step throughput runs for at least this long.
    pub min_seconds: f64,
    /// Ops recorded per submit when timing a kernel (1 on the CPU; more on a GPU, so the
    /// submit-and-wait cost is spread over many dispatches).
    pub per_submit: usize,
}

impl BenchOptions {
    pub fn full(per_submit: usize) -> Self {
        BenchOptions {
            kernel_batches: vec![32, 128],
            train_batches: vec![32, 128, 256],
            scaling_batches: vec![32, 64, 128, 256, 512],
            inference_batch: 256,
            repeats: 7,
            min_seconds: 2.0,
            per_submit,
        }
    }
    /// A short run at small batches (under a minute on lavapipe); the shapes are still the
    /// seed model's, only the batch is smaller.
    pub fn quick(per_submit: usize) -> Self {
        BenchOptions {
            kernel_batches: vec![8],
            train_batches: vec![8],
            scaling_batches: vec![4, 8],
            inference_batch: 16,
            repeats: 3,
            min_seconds: 0.2,
            per_submit: per_submit.min(3),
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct KernelTiming {
    pub kernel: String,
    pub layer: String,
    pub batch: usize,
    pub median_ms: f64,
    /// For compute-bound ops.
    pub gflops: Option<f64>,
    /// For memory-bound ops: bytes read and written per second.
    pub gbytes_per_s: Option<f64>,
    /// gflops over the device's 1024^3 matmul rate.
    pub fraction_of_peak: Option<f64>,
    /// "device timestamps" or "host clock".
    pub timed_by: &'static str,
}

#[derive(Clone, Debug, Serialize)]
pub struct Throughput {
    pub batch: usize,
    pub images_per_second: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct DeviceBench {
    pub device: String,
    /// GFLOP/s of a 1024x1024x1024 matmul on this backend (the dense kernel; on the CPU the
    /// GEMM library).
    pub matmul_1024_gflops: f64,
    pub kernels: Vec<KernelTiming>,
    pub training: Vec<Throughput>,
    pub inference: Throughput,
    pub time_to_first_step_ms: f64,
    pub peak_rss_bytes: u64,
    /// Bytes allocated on the device to train the seed model at the first training batch size
    /// (weights, Adam's moments, activations, gradients, a data set of 4x the batch, scratch);
    /// null for the CPU backend, whose memory is in peak_rss_bytes.
    pub device_bytes_allocated: Option<u64>,
    /// Kernel dispatches and compute passes one training step records (first training batch
    /// size); null for the CPU backend, which runs each op at once.
    pub dispatches_per_step: Option<u64>,
    pub compute_passes_per_step: Option<u64>,
    /// Device-memory bytes one such step reads and writes, counted from the shapes with each
    /// kernel's operands moved once (a lower bound on what the kernels move).
    pub device_bytes_read_per_step: Option<u64>,
    pub device_bytes_written_per_step: Option<u64>,
    /// The least device memory such a step must read and write (`StepBytes::minimum`), to
    /// set the figures above against.
    pub minimum_bytes_per_step: StepBytes,
    /// Training FLOP rate (25.7 MFLOP per image for the seed model) over the matmul rate.
    pub training_fraction_of_matmul: f64,
    pub scaling: Vec<Throughput>,
}

/// Device-memory bytes a training step reads and writes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct StepBytes {
    pub read: u64,
    pub written: u64,
}

impl StepBytes {
    /// The minimum for one training step of `model` at batch `n` with `slots` optimizer state
    /// tensors per trainable tensor (Adam 2): every tensor of the step moved once, as if each
    /// layer's passes were one fused kernel and no kernel re-read or spilled anything. Read
    /// once: the batch's u8 pixels and labels, every parameter (moving statistics included),
    /// every optimizer state, every layer output (the backward needs it) and its gradient,
    /// every parameter gradient (the update reads it). Written once: every layer output and its
    /// gradient, every parameter gradient, every parameter and optimizer state. Views
    /// (Flatten) are no tensor of their own; small things (metrics, max-pool's argmax, the
    /// uniforms) are left out. The backends' own counts (`RecordCounts`) count each kernel's
    /// operands once, so their distance from this is what fusion could still save.
    pub fn minimum(model: &Model, n: usize, slots: usize) -> StepBytes {
        let layer_outputs: usize = model.layers.iter().filter(|l| !l.spec.is_view()).map(|l| l.output_len()).sum();
        let params: Vec<_> = model.layers.iter().flat_map(|l| l.params()).collect();
        let all_params: usize = params.iter().map(|p| p.len()).sum();
        let trainable: usize = params.iter().filter(|p| p.trainable).map(|p| p.len()).sum();
        let f32s = |count: usize| 4 * count as u64;
        let batch = (n * (model.input_len() + 1)) as u64; // u8 pixels and a u8 label per image
        let activations = f32s(2 * n * layer_outputs); // the outputs and their gradients
        let updated = f32s(all_params + slots * trainable);
        StepBytes { read: batch + activations + updated + f32s(trainable), written: activations + updated + f32s(trainable) }
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Median seconds of one `op`, run `per_submit` times per flush: from the device's own
/// timestamps where it has them, else by the host clock around flush and wait. Returns the
/// seconds and which clock measured them.
fn time_op<B: Backend>(b: &B, sync: &B::Tensor, o: &BenchOptions, mut op: impl FnMut()) -> Result<(f64, &'static str)> {
    op();
    b.flush()?;
    b.download(sync)?;
    let mut device_times = Vec::new();
    let mut host_times = Vec::new();
    for _ in 0..o.repeats {
        let t = Instant::now();
        let device = b.device_seconds(&mut || {
            for _ in 0..o.per_submit {
                op();
            }
        })?;
        b.flush()?;
        b.download(sync)?;
        host_times.push(t.elapsed().as_secs_f64() / o.per_submit as f64);
        if let Some(seconds) = device {
            device_times.push(seconds / o.per_submit as f64);
        }
    }
    Ok(if device_times.len() == o.repeats { (median(device_times), "device timestamps") } else { (median(host_times), "host clock") })
}

fn random_tensor<B: Backend>(b: &B, len: usize, seed: u64) -> Result<B::Tensor> {
    let mut rng = crate::rng::Rng::new(seed);
    let data: Vec<f32> = (0..len).map(|_| rng.unit_f32() - 0.5).collect();
    let mut t = b.tensor(len)?;
    b.upload(&mut t, &data);
    Ok(t)
}

struct Recorder<'a> {
    out: Vec<KernelTiming>,
    peak: f64,
    batch: usize,
    layer: &'a str,
}

impl Recorder<'_> {
    fn compute(&mut self, kernel: &str, (seconds, timed_by): (f64, &'static str), flops: f64) {
        let gflops = flops / seconds / 1e9;
        self.out.push(KernelTiming {
            kernel: kernel.into(),
            layer: self.layer.into(),
            batch: self.batch,
            median_ms: seconds * 1e3,
            gflops: Some(gflops),
            gbytes_per_s: None,
            fraction_of_peak: Some(gflops / self.peak),
            timed_by,
        });
    }
    fn memory(&mut self, kernel: &str, (seconds, timed_by): (f64, &'static str), bytes: f64) {
        self.out.push(KernelTiming {
            kernel: kernel.into(),
            layer: self.layer.into(),
            batch: self.batch,
            median_ms: seconds * 1e3,
            gflops: None,
            gbytes_per_s: Some(bytes / seconds / 1e9),
            fraction_of_peak: None,
            timed_by,
        });
    }
}

/// GFLOP/s of (1024 x 1024) * (1024 x 1024) through the backend's dense kernel.
pub fn matmul_gflops<B: Backend>(b: &B, o: &BenchOptions) -> Result<f64> {
    let s = DenseShape { inputs: 1024, units: 1024 };
    let (x, w, bias) = (random_tensor(b, 1024 * 1024, 1)?, random_tensor(b, 1024 * 1024, 2)?, b.tensor(1024)?);
    let mut y = b.tensor(1024 * 1024)?;
    let sync = b.tensor(1)?;
    let (sec, _) = time_op(b, &sync, o, || b.dense_forward(&x, &w, &bias, &mut y, &s, 1024, false))?;
    Ok(2.0 * 1024f64.powi(3) / sec / 1e9)
}

fn conv_kernels<B: Backend>(b: &B, r: &mut Recorder, s: &ConvShape, n: usize, o: &BenchOptions) -> Result<()> {
    let x = random_tensor(b, n * s.in_len(), 3)?;
    let w = random_tensor(b, s.kernel_len(), 4)?;
    let bias = random_tensor(b, s.out_c, 5)?;
    let dy = random_tensor(b, n * s.out_len(), 6)?;
    let (mut y, mut dx, mut dw, mut db) = (b.tensor(n * s.out_len())?, b.tensor(n * s.in_len())?, b.tensor(s.kernel_len())?, b.tensor(s.out_c)?);
    let sync = b.tensor(1)?;
    let flops = 2.0 * (n * s.out_h * s.out_w * s.out_c * s.patch_len()) as f64;
    let t = time_op(b, &sync, o, || b.conv2d_forward(&x, &w, Some(&bias), &mut y, s, n, true))?;
    r.compute("conv2d_forward", t, flops);
    let t = time_op(b, &sync, o, || b.conv2d_backward_input(&dy, &w, &mut dx, s, n))?;
    r.compute("conv2d_backward_input", t, flops);
    let t = time_op(b, &sync, o, || b.conv2d_backward_filter(&x, &dy, &mut dw, Some(&mut db), s, n))?;
    r.compute("conv2d_backward_filter", t, flops);
    Ok(())
}

fn pool_kernels<B: Backend>(b: &B, r: &mut Recorder, s: &PoolShape, n: usize, o: &BenchOptions) -> Result<()> {
    let x = random_tensor(b, n * s.in_len(), 7)?;
    let dy = random_tensor(b, n * s.out_len(), 8)?;
    let (mut y, mut dx, mut am) = (b.tensor(n * s.out_len())?, b.tensor(n * s.in_len())?, b.indices(n * s.out_len())?);
    let sync = b.tensor(1)?;
    let t = time_op(b, &sync, o, || b.maxpool_forward(&x, &mut y, &mut am, s, n))?;
    r.memory("maxpool_forward", t, 4.0 * (n * (s.in_len() + 2 * s.out_len())) as f64);
    let t = time_op(b, &sync, o, || b.maxpool_backward(&dy, &am, &mut dx, s, n))?;
    r.memory("maxpool_backward", t, 4.0 * (n * (s.in_len() + 2 * s.out_len())) as f64);
    Ok(())
}

fn dense_kernels<B: Backend>(b: &B, r: &mut Recorder, s: &DenseShape, n: usize, o: &BenchOptions) -> Result<()> {
    let x = random_tensor(b, n * s.inputs, 9)?;
    let w = random_tensor(b, s.inputs * s.units, 10)?;
    let bias = random_tensor(b, s.units, 11)?;
    let dy = random_tensor(b, n * s.units, 12)?;
    let (mut y, mut dx, mut dw, mut db) = (b.tensor(n * s.units)?, b.tensor(n * s.inputs)?, b.tensor(s.inputs * s.units)?, b.tensor(s.units)?);
    let sync = b.tensor(1)?;
    let flops = 2.0 * (n * s.inputs * s.units) as f64;
    let t = time_op(b, &sync, o, || b.dense_forward(&x, &w, &bias, &mut y, s, n, true))?;
    r.compute("dense_forward", t, flops);
    let t = time_op(b, &sync, o, || b.dense_backward_input(&dy, &w, &mut dx, s, n))?;
    r.compute("dense_backward_input", t, flops);
    let t = time_op(b, &sync, o, || b.dense_backward_filter(&x, &dy, &mut dw, &mut db, s, n))?;
    r.compute("dense_backward_filter", t, flops);
    Ok(())
}

/// Every kernel of the seed model on 32x32x3 at batch n, plus the loss, Adam and the gather.
pub fn kernel_timings<B: Backend>(b: &B, n: usize, peak: f64, o: &BenchOptions) -> Result<Vec<KernelTiming>> {
    let model = Model::new(&seed_layers(), (32, 32, 3))?;
    let mut r = Recorder { out: Vec::new(), peak, batch: n, layer: "" };
    for layer in &model.layers {
        r.layer = &layer.name;
        match &layer.spec {
            LayerSpec::Conv2D(conv) => conv_kernels(b, &mut r, &conv.shape(&layer.input), n, o)?,
            LayerSpec::MaxPooling2D(pool) => pool_kernels(b, &mut r, &pool.shape(&layer.input), n, o)?,
            LayerSpec::Dense(dense) => dense_kernels(b, &mut r, &dense.shape(&layer.input), n, o)?,
            // Kernels timed here are the seed model's; the other layers run in training benches.
            _ => {}
        }
    }
    let sync = b.tensor(1)?;
    let classes = model.classes();
    r.layer = "dense_1";
    let logits = random_tensor(b, n * classes, 13)?;
    let mut labels = b.indices(n)?;
    b.upload_indices(&mut labels, &(0..n as u32).map(|i| i % classes as u32).collect::<Vec<_>>());
    let (mut dl, mut metrics) = (b.tensor(n * classes)?, b.tensor(crate::backend::METRICS_LEN)?);
    let t = time_op(b, &sync, o, || b.softmax_xent(&logits, &labels, &mut dl, &mut metrics, n, classes))?;
    r.memory("softmax_xent", t, 4.0 * (2 * n * classes + n) as f64);
    r.layer = "all";
    let len = model.trainable_count();
    let (mut p, g, mut m, mut v) = (random_tensor(b, len, 14)?, random_tensor(b, len, 15)?, b.tensor(len)?, b.tensor(len)?);
    let h = AdamConfig::default().at_step(1);
    let t = time_op(b, &sync, o, || b.adam_update(&mut p, &g, &mut m, &mut v, len, &h))?;
    r.memory("adam_update", t, 4.0 * 7.0 * len as f64);
    r.layer = "input";
    let image_len = 32 * 32 * 3;
    let count = 1024.max(n);
    let images: Vec<u8> = (0..count * image_len).map(|i| (i * 31 % 256) as u8).collect();
    let data = b.upload_images(&images, &vec![0u8; count], image_len)?;
    let mut idx = b.indices(n)?;
    b.upload_indices(&mut idx, &(0..n as u32).map(|i| (i * 7) % count as u32).collect::<Vec<_>>());
    let (mut x, mut lab) = (b.tensor(n * image_len)?, b.indices(n)?);
    let t = time_op(b, &sync, o, || b.gather_batch(&data, &idx, n, &mut x, &mut lab, None))?;
    r.memory("gather_batch", t, (n * image_len * 5) as f64);
    Ok(r.out)
}

/// Images per second of whole training steps (gather, forward, backward, Adam) at batch n,
/// seconds to the first step, device bytes allocated, and what one step records.
fn training_throughput<B: Backend>(make: &dyn Fn() -> Result<B>, n: usize, o: &BenchOptions) -> Result<(f64, f64, Option<u64>, Option<RecordCounts>)> {
    let started = Instant::now();
    let ds = generate(&SyntheticSpec { train: (n * 4).max(512), test: 1, ..Default::default() }, 0);
    let b = make()?;
    let model = Model::new(&seed_layers(), (32, 32, 3))?;
    let mut net = Network::new(b, model, n, 0)?;
    let data = net.backend.upload_images(&ds.train.images, &ds.train.labels, ds.train.image_len())?;
    let batches: Vec<Vec<u32>> = (0..4).map(|k| ((k * n) as u32..((k + 1) * n) as u32).map(|i| i % ds.train.len() as u32).collect()).collect();
    net.train_step(&data, &batches[0])?;
    net.read_metrics()?;
    let first_step = started.elapsed().as_secs_f64();
    let before = net.backend.record_counts();
    net.train_step(&data, &batches[1])?;
    let per_step = before.zip(net.backend.record_counts()).map(|(a, b)| b.since(a));
    // At least `min_seconds` and 4 steps: a few steps alone are at the mercy of the machine's noise.
    let t = Instant::now();
    let mut steps = 0;
    while steps < 4 || t.elapsed().as_secs_f64() < o.min_seconds {
        net.train_step(&data, &batches[steps % batches.len()])?;
        steps += 1;
        if steps % 4 == 0 {
            net.read_metrics()?;
        }
    }
    net.read_metrics()?;
    Ok(((steps * n) as f64 / t.elapsed().as_secs_f64(), first_step, net.backend.device_bytes_allocated(), per_step))
}

/// Images per second of forward passes with softmax at batch n, by the inference network
/// evaluate and predict run (`Network::for_inference`).
fn inference_throughput<B: Backend>(make: &dyn Fn() -> Result<B>, n: usize, o: &BenchOptions) -> Result<f64> {
    let ds = generate(&SyntheticSpec { train: n, test: 1, ..Default::default() }, 0);
    let model = Model::new(&seed_layers(), (32, 32, 3))?;
    let mut net = Network::for_inference(make()?, model, n)?;
    let data = net.backend.upload_images(&ds.train.images, &ds.train.labels, ds.train.image_len())?;
    let idx: Vec<u32> = (0..n as u32).collect();
    net.predict_step(&data, &idx)?;
    let t = Instant::now();
    let mut steps = 0;
    while steps < 3 || t.elapsed().as_secs_f64() < o.min_seconds {
        net.predict_step(&data, &idx)?;
        steps += 1;
    }
    Ok((steps * n) as f64 / t.elapsed().as_secs_f64())
}

/// FLOP per trained image of the seed model on 32x32x3: forward, filter and input gradients.
pub const SEED_TRAIN_FLOP_PER_IMAGE: f64 = 25.7e6;

pub fn bench_device<B: Backend>(make: &dyn Fn() -> Result<B>, o: &BenchOptions) -> Result<DeviceBench> {
    let b = make()?;
    let device = b.describe();
    let peak = matmul_gflops(&b, o)?;
    let mut kernels = Vec::new();
    for &n in &o.kernel_batches {
        kernels.extend(kernel_timings(&b, n, peak, o)?);
    }
    drop(b);
    let mut training = Vec::new();
    let mut first_step = f64::NAN;
    let mut device_bytes = None;
    let mut per_step = None;
    for &n in &o.train_batches {
        let (ips, first, bytes, counts) = training_throughput(make, n, o)?;
        if first_step.is_nan() {
            first_step = first;
            device_bytes = bytes;
            per_step = counts;
        }
        training.push(Throughput { batch: n, images_per_second: ips });
    }
    let inference = Throughput { batch: o.inference_batch, images_per_second: inference_throughput(make, o.inference_batch, o)? };
    let mut scaling = Vec::new();
    for &n in &o.scaling_batches {
        scaling.push(Throughput { batch: n, images_per_second: training_throughput(make, n, o)?.0 });
    }
    let fraction = training[0].images_per_second * SEED_TRAIN_FLOP_PER_IMAGE / 1e9 / peak;
    let seed_model = Model::new(&seed_layers(), (32, 32, 3))?;
    let adam_slots = crate::optimizer::Optimizer::default().slot_names().len();
    let minimum_bytes_per_step = StepBytes::minimum(&seed_model, training[0].batch, adam_slots);
    Ok(DeviceBench {
        device,
        matmul_1024_gflops: peak,
        kernels,
        training,
        inference,
        time_to_first_step_ms: first_step * 1e3,
        peak_rss_bytes: peak_rss_bytes(),
        device_bytes_allocated: device_bytes,
        dispatches_per_step: per_step.map(|c| c.dispatches),
        compute_passes_per_step: per_step.map(|c| c.compute_passes),
        device_bytes_read_per_step: per_step.map(|c| c.bytes_read),
        device_bytes_written_per_step: per_step.map(|c| c.bytes_written),
        minimum_bytes_per_step,
        training_fraction_of_matmul: fraction,
        scaling,
    })
}

/// The readable table.
pub fn format_table(r: &DeviceBench) -> String {
    let mut out = format!("== {} ==\n", r.device);
    out += &format!("matmul 1024^3: {:.1} GFLOP/s (the peak below is relative to this)\n", r.matmul_1024_gflops);
    out += &format!("kernels timed by the {}\n\n", r.kernels.first().map_or("host clock", |k| k.timed_by));
    out += &format!("{:<24} {:<16} {:>5} {:>10} {:>10} {:>8} {:>8}\n", "kernel", "layer", "batch", "median ms", "GFLOP/s", "of peak", "GB/s");
    for k in &r.kernels {
        let opt = |v: Option<f64>, p: usize| v.map_or("-".to_string(), |v| format!("{v:.p$}"));
        out += &format!(
            "{:<24} {:<16} {:>5} {:>10.3} {:>10} {:>8} {:>8}\n",
            k.kernel,
            k.layer,
            k.batch,
            k.median_ms,
            opt(k.gflops, 1),
            opt(k.fraction_of_peak.map(|f| f * 100.0), 0) + if k.fraction_of_peak.is_some() { "%" } else { "" },
            opt(k.gbytes_per_s, 2)
        );
    }
    out += "\ntraining (seed model, 32x32x3):\n";
    for t in &r.training {
        out += &format!("  batch {:>4}: {:>9.0} images/s\n", t.batch, t.images_per_second);
    }
    out += &format!("inference batch {}: {:.0} images/s\n", r.inference.batch, r.inference.images_per_second);
    out += &format!("time to first step: {:.0} ms; peak host memory: {:.0} MB", r.time_to_first_step_ms, r.peak_rss_bytes as f64 / 1e6);
    if let Some(bytes) = r.device_bytes_allocated {
        out += &format!("; device memory allocated for training at batch {}: {:.1} MB", r.training[0].batch, bytes as f64 / 1e6);
    }
    out.push('\n');
    if let (Some(d), Some(p)) = (r.dispatches_per_step, r.compute_passes_per_step) {
        out += &format!("one training step at batch {}: {d} dispatches in {p} compute pass(es)", r.training[0].batch);
        if let (Some(read), Some(written)) = (r.device_bytes_read_per_step, r.device_bytes_written_per_step) {
            out += &format!(", {:.2} MB read and {:.2} MB written in device memory (each kernel's operands once)", read as f64 / 1e6, written as f64 / 1e6);
            let min = &r.minimum_bytes_per_step;
            out += &format!("; the least it needs: {:.2} MB read, {:.2} MB written (every tensor once)", min.read as f64 / 1e6, min.written as f64 / 1e6);
        }
        out.push('\n');
    }
    out += &format!("training FLOP rate / matmul rate: {:.0}%\n", r.training_fraction_of_matmul * 100.0);
    out += "scaling (training images/s by batch):";
    for t in &r.scaling {
        out += &format!("  {}: {:.0}", t.batch, t.images_per_second);
    }
    out.push('\n');
    out
}
