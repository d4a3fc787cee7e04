//! GFLOP/s of the GEMM-shaped GPU kernels on whatever adapter wgpu finds. Ignored by default
//! (it measures, it asserts nothing): `cargo test --release --test gpu_bench -- --ignored --nocapture`.

use gpu_cnn::backend::gpu::{choose_adapter, DeviceRequest, GpuBackend};
use gpu_cnn::backend::{Backend, ConvShape, DenseShape};
use std::time::Instant;

/// CPU seconds this process has used (all threads: lavapipe runs shaders on a thread pool).
/// Other processes' load barely moves it, unlike wall-clock time on a shared machine.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after_name = stat.rsplit(')').next().unwrap_or("");
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after "(name)".
    let ticks: f64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0) + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

fn filled(gpu: &GpuBackend, len: usize) -> gpu_cnn::backend::gpu::GpuTensor {
    let mut t = gpu.tensor(len).unwrap();
    let data: Vec<f32> = (0..len).map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5).collect();
    gpu.upload(&mut t, &data);
    t
}

/// Runs `op` once to warm up, then `reps` times in one submission; prints GFLOP/s of wall time
/// and of CPU time (lavapipe), and the CPU-time ratio to the reference matmul timed just before.
fn time(gpu: &GpuBackend, name: &str, flops: f64, reps: usize, sync: &gpu_cnn::backend::gpu::GpuTensor, op: &mut dyn FnMut()) {
    let reference = reference_matmul_gflops(gpu, 1, false);
    op();
    gpu.download(sync).unwrap();
    let (start, cpu_start) = (Instant::now(), cpu_seconds());
    for _ in 0..reps {
        op();
    }
    gpu.flush().unwrap();
    gpu.download(sync).unwrap();
    let secs = start.elapsed().as_secs_f64() / reps as f64;
    let cpu = (cpu_seconds() - cpu_start) / reps as f64;
    let per_cpu = flops / cpu / 1e9;
    println!(
        "{name:<44} {:>8.1} ms {:>6.2} GFLOP/s wall {:>6.2} GFLOP/cpu-s  {:>5.2} x reference",
        secs * 1e3,
        flops / secs / 1e9,
        per_cpu,
        per_cpu / reference
    );
}

/// GFLOP/s of tests/reference_matmul.wgsl (plain 128 x 128 tiles) at n = 1024: the yardstick.
fn reference_matmul_gflops(gpu: &GpuBackend, reps: usize, print: bool) -> f64 {
    matmul_shader_gflops(gpu, include_str!("reference_matmul.wgsl"), "reference 128x128-tile matmul 1024^3", reps, print)
}

fn matmul_shader_gflops(gpu: &GpuBackend, source: &str, name: &str, reps: usize, print: bool) -> f64 {
    let device = gpu.device();
    let n = 1024u32;
    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor { label: None, source: wgpu::ShaderSource::Wgsl(source.into()) });
    let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: None,
        layout: None,
        module: &module,
        entry_point: Some("main"),
        compilation_options: Default::default(),
        cache: None,
    });
    let storage = |bytes: u64| {
        device.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size: bytes,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })
    };
    let bytes = (n * n * 4) as u64;
    let (a, b, c) = (storage(bytes), storage(bytes), storage(bytes));
    let dims = device.create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: 16,
        usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    gpu.queue().write_buffer(&dims, 0, bytemuck::cast_slice(&[n, 0, 0, 0]));
    let bind = device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: None,
        layout: &pipeline.get_bind_group_layout(0),
        entries: &[
            wgpu::BindGroupEntry { binding: 0, resource: dims.as_entire_binding() },
            wgpu::BindGroupEntry { binding: 1, resource: a.as_entire_binding() },
            wgpu::BindGroupEntry { binding: 2, resource: b.as_entire_binding() },
            wgpu::BindGroupEntry { binding: 3, resource: c.as_entire_binding() },
        ],
    });
    let run = |times: usize| {
        let mut encoder = device.create_command_encoder(&Default::default());
        {
            let mut pass = encoder.begin_compute_pass(&Default::default());
            pass.set_pipeline(&pipeline);
            pass.set_bind_group(0, &bind, &[]);
            for _ in 0..times {
                pass.dispatch_workgroups(n / 128, n / 128, 1);
            }
        }
        gpu.queue().submit([encoder.finish()]);
        device.poll(wgpu::PollType::wait_indefinitely()).unwrap();
    };
    if print {
        run(1);
    }
    let (start, cpu_start) = (Instant::now(), cpu_seconds());
    run(reps);
    let secs = start.elapsed().as_secs_f64() / reps as f64;
    let cpu = (cpu_seconds() - cpu_start) / reps as f64;
    let flops = 2.0 * (n as f64).powi(3);
    if print {
        println!("{:<44} {:>8.1} ms {:>6.2} GFLOP/s wall {:>6.2} GFLOP/cpu-s", name, secs * 1e3, flops / secs / 1e9, flops / cpu / 1e9);
    }
    flops / cpu / 1e9
}

#[test]
#[ignore]
fn gemm_kernels_gflops() {
    let Ok(Some(adapter)) = choose_adapter(DeviceRequest::Gpu) else {
        eprintln!("no GPU adapter");
        return;
    };
    let gpu = GpuBackend::new(adapter).unwrap();
    println!("{}", gpu.describe());
    reference_matmul_gflops(&gpu, 3, true);

    let d = DenseShape { inputs: 1024, units: 1024 };
    let n = 1024;
    let (x, w, b, dy) = (filled(&gpu, n * d.inputs), filled(&gpu, d.inputs * d.units), filled(&gpu, d.units), filled(&gpu, n * d.units));
    let (mut y, mut dx, mut dw, mut db) =
        (gpu.tensor(n * d.units).unwrap(), gpu.tensor(n * d.inputs).unwrap(), gpu.tensor(d.inputs * d.units).unwrap(), gpu.tensor(d.units).unwrap());
    let flops = 2.0 * (n * d.inputs * d.units) as f64;
    time(&gpu, "dense forward 1024x1024x1024", flops, 1, &b, &mut || gpu.dense_forward(&x, &w, &b, &mut y, &d, n, true));
    time(&gpu, "dense backward input 1024x1024x1024", flops, 1, &b, &mut || gpu.dense_backward_input(&dy, &w, &mut dx, &d, n));
    time(&gpu, "dense backward filter 1024x1024x1024", flops, 1, &b, &mut || gpu.dense_backward_filter(&x, &dy, &mut dw, &mut db, &d, n));

    // The seed model's convolutions (CIFAR-10 32x32x3 input).
    let convs = [
        (
            "conv2d   32x32x3 -> 30x30x32",
            ConvShape {
                in_h: 32,
                in_w: 32,
                in_c: 3,
                out_h: 30,
                out_w: 30,
                out_c: 32,
                k_h: 3,
                k_w: 3,
                stride_h: 1,
                stride_w: 1,
                pad_top: 0,
                pad_left: 0,
                dilation_h: 1,
                dilation_w: 1,
            },
        ),
        (
            "conv2d_1 15x15x32 -> 13x13x64",
            ConvShape {
                in_h: 15,
                in_w: 15,
                in_c: 32,
                out_h: 13,
                out_w: 13,
                out_c: 64,
                k_h: 3,
                k_w: 3,
                stride_h: 1,
                stride_w: 1,
                pad_top: 0,
                pad_left: 0,
                dilation_h: 1,
                dilation_w: 1,
            },
        ),
        (
            "conv2d_2 6x6x64 -> 4x4x64",
            ConvShape {
                in_h: 6,
                in_w: 6,
                in_c: 64,
                out_h: 4,
                out_w: 4,
                out_c: 64,
                k_h: 3,
                k_w: 3,
                stride_h: 1,
                stride_w: 1,
                pad_top: 0,
                pad_left: 0,
                dilation_h: 1,
                dilation_w: 1,
            },
        ),
    ];
    // GPU_CNN_BENCH_BATCHES: a comma-separated list (default 32,128).
    let batches: Vec<usize> =
        std::env::var("GPU_CNN_BENCH_BATCHES").unwrap_or_else(|_| "32,128".into()).split(',').filter_map(|b| b.trim().parse().ok()).collect();
    for (name, s) in batches.iter().flat_map(|&n| convs.iter().map(move |(name, s)| (format!("{name} batch {n}"), (*s, n)))) {
        let (s, n) = s;
        let (x, w, b, dy) = (filled(&gpu, n * s.in_len()), filled(&gpu, s.kernel_len()), filled(&gpu, s.out_c), filled(&gpu, n * s.out_len()));
        let (mut y, mut dx, mut dw, mut db) =
            (gpu.tensor(n * s.out_len()).unwrap(), gpu.tensor(n * s.in_len()).unwrap(), gpu.tensor(s.kernel_len()).unwrap(), gpu.tensor(s.out_c).unwrap());
        let flops = 2.0 * (n * s.out_h * s.out_w * s.out_c * s.patch_len()) as f64;
        time(&gpu, &format!("{name} forward"), flops, 10, &b, &mut || gpu.conv2d_forward(&x, &w, Some(&b), &mut y, &s, n, true));
        time(&gpu, &format!("{name} backward input"), flops, 10, &b, &mut || gpu.conv2d_backward_input(&dy, &w, &mut dx, &s, n));
        time(&gpu, &format!("{name} backward filter"), flops, 10, &b, &mut || gpu.conv2d_backward_filter(&x, &dy, &mut dw, Some(&mut db), &s, n));
    }
    // Again at the end: the machine's load changes while the bench runs.
    reference_matmul_gflops(&gpu, 3, true);
}

/// A CIFAR-10-sized training set (50000 x 32x32x3 = 153.6 MB, over the 128 MiB binding limit of
/// most adapters) goes up in chunks, and a gathered batch matches the host bytes. Ignored: it
/// moves 150 MB (`-- --ignored`).
#[test]
#[ignore]
fn cifar_sized_data_set_uploads_in_chunks_and_gathers() {
    let Ok(Some(adapter)) = choose_adapter(DeviceRequest::Gpu) else {
        eprintln!("no GPU adapter");
        return;
    };
    let gpu = GpuBackend::new(adapter).unwrap();
    let (count, image_len) = (50_000usize, 32 * 32 * 3);
    let images: Vec<u8> = (0..count * image_len).map(|i| (i.wrapping_mul(2654435761) >> 7) as u8).collect();
    let labels: Vec<u8> = (0..count).map(|i| (i % 10) as u8).collect();
    let start = Instant::now();
    let data = gpu.upload_images(&images, &labels, image_len).unwrap();
    println!("uploaded {} MB in {} chunks in {:.2} s", images.len() / 1_000_000, data.chunk_count(), start.elapsed().as_secs_f64());
    assert!(data.chunk_count() >= 2 || gpu.limits().max_storage_buffer_binding_size >= images.len() as u64);
    let idx: Vec<u32> = vec![0, 49_999, 25_000, 43_690, 43_691, 12_345, 43_689];
    let mut idx_t = gpu.indices(idx.len()).unwrap();
    gpu.upload_indices(&mut idx_t, &idx);
    let mut x = gpu.tensor(idx.len() * image_len).unwrap();
    let mut batch_labels = gpu.indices(idx.len()).unwrap();
    gpu.gather_batch(&data, &idx_t, idx.len(), &mut x, &mut batch_labels, None);
    let x = gpu.download(&x).unwrap();
    for (row, &i) in idx.iter().enumerate() {
        let want = &images[i as usize * image_len..][..image_len];
        let got = &x[row * image_len..][..image_len];
        assert!(got.iter().zip(want).all(|(g, &w)| (g * 255.0 - w as f32).abs() < 1e-3), "image {i}");
    }
    assert_eq!(gpu.download_indices(&batch_labels).unwrap(), idx.iter().map(|&i| i % 10).collect::<Vec<_>>());
}

/// One training step of the seed model (Keras's CIFAR-10 CNN) at batch 32, on the GPU and on
/// the CPU backend: ops only, no data loading. Ignored (`-- --ignored --nocapture`); set
/// GPU_CNN_BENCH_PROFILE=1 for a time per op (each then waited for on its own).
#[test]
#[ignore]
fn seed_model_step_time() {
    use gpu_cnn::backend::cpu::CpuBackend;
    use gpu_cnn::backend::{AdamConfig, PoolShape};
    let Ok(Some(adapter)) = choose_adapter(DeviceRequest::Gpu) else {
        eprintln!("no GPU adapter");
        return;
    };
    let gpu = GpuBackend::new(adapter).unwrap();
    let cpu = CpuBackend::new();
    let gpu_ms = step_ms(&gpu);
    let cpu_ms = step_ms(&cpu);
    println!("seed model step, batch 32: {gpu_ms:.1} ms on {}, {cpu_ms:.1} ms on {}", gpu.describe(), cpu.describe());

    fn step_ms<B: Backend>(b: &B) -> f64 {
        let n = 32;
        let conv = |in_h: usize, in_c: usize, out_c: usize| ConvShape {
            in_h,
            in_w: in_h,
            in_c,
            out_h: in_h - 2,
            out_w: in_h - 2,
            out_c,
            k_h: 3,
            k_w: 3,
            stride_h: 1,
            stride_w: 1,
            pad_top: 0,
            pad_left: 0,
            dilation_h: 1,
            dilation_w: 1,
        };
        let pool = |in_h: usize, c: usize| PoolShape {
            in_h,
            in_w: in_h,
            c,
            out_h: in_h / 2,
            out_w: in_h / 2,
            size_h: 2,
            size_w: 2,
            stride_h: 2,
            stride_w: 2,
            pad_top: 0,
            pad_left: 0,
        };
        let (c1, p1, c2, p2, c3) = (conv(32, 3, 32), pool(30, 32), conv(15, 32, 64), pool(13, 64), conv(6, 64, 64));
        let (d1, d2) = (DenseShape { inputs: 1024, units: 64 }, DenseShape { inputs: 64, units: 10 });
        let t = |len: usize| {
            let mut t = b.tensor(len).unwrap();
            b.upload(&mut t, &(0..len).map(|i| ((i * 7919) % 1000) as f32 / 5000.0 - 0.1).collect::<Vec<_>>());
            t
        };
        let (x, w1, b1, w2, b2, w3, b3, w4, b4, w5, b5) =
            (t(n * c1.in_len()), t(c1.kernel_len()), t(32), t(c2.kernel_len()), t(64), t(c3.kernel_len()), t(64), t(1024 * 64), t(64), t(640), t(10));
        let (mut y1, mut q1, mut y2, mut q2, mut y3, mut h, mut z) =
            (t(n * c1.out_len()), t(n * p1.out_len()), t(n * c2.out_len()), t(n * p2.out_len()), t(n * c3.out_len()), t(n * 64), t(n * 10));
        let (mut a1, mut a2) = (b.indices(n * p1.out_len()).unwrap(), b.indices(n * p2.out_len()).unwrap());
        let mut labels = b.indices(n).unwrap();
        b.upload_indices(&mut labels, &(0..n as u32).map(|i| i % 10).collect::<Vec<_>>());
        let (mut dz, mut dh, mut dy3, mut dq2, mut dy2, mut dq1, mut dy1, mut metrics) =
            (t(n * 10), t(n * 64), t(n * c3.out_len()), t(n * p2.out_len()), t(n * c2.out_len()), t(n * p1.out_len()), t(n * c1.out_len()), t(3));
        let mut grads = [t(c1.kernel_len()), t(32), t(c2.kernel_len()), t(64), t(c3.kernel_len()), t(64), t(1024 * 64), t(64), t(640), t(10)];
        let mut params = [w1, b1, w2, b2, w3, b3, w4, b4, w5, b5];
        let lens: Vec<usize> =
            params.iter().enumerate().map(|(i, _)| [c1.kernel_len(), 32, c2.kernel_len(), 64, c3.kernel_len(), 64, 1024 * 64, 64, 640, 10][i]).collect();
        let mut m: Vec<_> = lens.iter().map(|&l| b.tensor(l).unwrap()).collect();
        let mut v: Vec<_> = lens.iter().map(|&l| b.tensor(l).unwrap()).collect();
        let profile = std::env::var("GPU_CNN_BENCH_PROFILE").is_ok();
        let prof = std::cell::RefCell::new(Vec::<(&str, u32, f64)>::new());
        // Runs one op; with GPU_CNN_BENCH_PROFILE set, waits for it and records its time.
        macro_rules! op {
            ($name:literal, $e:expr) => {{
                let t0 = Instant::now();
                $e;
                if profile {
                    b.flush().unwrap();
                    b.download(&x).unwrap();
                    prof.borrow_mut().push(($name, line!(), t0.elapsed().as_secs_f64() * 1e3));
                }
            }};
        }
        let mut run = |step: u64| {
            op!("conv2d_forward", b.conv2d_forward(&x, &params[0], Some(&params[1]), &mut y1, &c1, n, true));
            op!("maxpool_forward", b.maxpool_forward(&y1, &mut q1, &mut a1, &p1, n));
            op!("conv2d_forward", b.conv2d_forward(&q1, &params[2], Some(&params[3]), &mut y2, &c2, n, true));
            op!("maxpool_forward", b.maxpool_forward(&y2, &mut q2, &mut a2, &p2, n));
            op!("conv2d_forward", b.conv2d_forward(&q2, &params[4], Some(&params[5]), &mut y3, &c3, n, true));
            op!("dense_forward", b.dense_forward(&y3, &params[6], &params[7], &mut h, &d1, n, true));
            op!("dense_forward", b.dense_forward(&h, &params[8], &params[9], &mut z, &d2, n, false));
            op!("softmax_xent", b.softmax_xent(&z, &labels, &mut dz, &mut metrics, n, 10));
            let [g1, g1b, g2, g2b, g3, g3b, g4, g4b, g5, g5b] = &mut grads;
            op!("dense_backward_filter", b.dense_backward_filter(&h, &dz, g5, g5b, &d2, n));
            op!("dense_backward_input", b.dense_backward_input(&dz, &params[8], &mut dh, &d2, n));
            op!("relu_backward", b.relu_backward(&h, &mut dh, n * 64));
            op!("dense_backward_filter", b.dense_backward_filter(&y3, &dh, g4, g4b, &d1, n));
            op!("dense_backward_input", b.dense_backward_input(&dh, &params[6], &mut dy3, &d1, n));
            op!("relu_backward", b.relu_backward(&y3, &mut dy3, n * c3.out_len()));
            op!("conv2d_backward_filter", b.conv2d_backward_filter(&q2, &dy3, g3, Some(g3b), &c3, n));
            op!("conv2d_backward_input", b.conv2d_backward_input(&dy3, &params[4], &mut dq2, &c3, n));
            op!("maxpool_backward", b.maxpool_backward(&dq2, &a2, &mut dy2, &p2, n));
            op!("relu_backward", b.relu_backward(&y2, &mut dy2, n * c2.out_len()));
            op!("conv2d_backward_filter", b.conv2d_backward_filter(&q1, &dy2, g2, Some(g2b), &c2, n));
            op!("conv2d_backward_input", b.conv2d_backward_input(&dy2, &params[2], &mut dq1, &c2, n));
            op!("maxpool_backward", b.maxpool_backward(&dq1, &a1, &mut dy1, &p1, n));
            op!("relu_backward", b.relu_backward(&y1, &mut dy1, n * c1.out_len()));
            op!("conv2d_backward_filter", b.conv2d_backward_filter(&x, &dy1, g1, Some(g1b), &c1, n)); // no input gradient for layer 1
            let h = AdamConfig::default().at_step(step);
            for i in 0..10 {
                op!("adam_update", b.adam_update(&mut params[i], &grads[i], &mut m[i], &mut v[i], lens[i], &h));
            }
            b.flush().unwrap();
        };
        run(1);
        b.download(&x).unwrap(); // waits for the queue
        let steps = 5;
        let start = Instant::now();
        for s in 0..steps {
            run(s + 2);
        }
        b.download(&x).unwrap(); // waits for the queue
        let ms = start.elapsed().as_secs_f64() * 1e3 / steps as f64;
        let prof = prof.borrow();
        for line in prof.iter().map(|p| p.1).collect::<std::collections::BTreeSet<_>>() {
            let times: Vec<_> = prof.iter().filter(|p| p.1 == line).collect();
            println!("  line {line:>4} {:<24} {:>8.2} ms", times[0].0, times.iter().map(|p| p.2).sum::<f64>() / times.len() as f64);
        }
        ms
    }
}
