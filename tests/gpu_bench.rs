//! GFLOP/s of the GEMM-shaped GPU kernels on whatever adapter wgpu finds. Ignored by default
//! (it measures, it asserts nothing): `cargo test --release --test gpu_bench -- --ignored --nocapture`.

use gpu_cnn::backend::gpu::{choose_adapter, DeviceRequest, GpuBackend};
use gpu_cnn::backend::{Backend, ConvShape, DenseShape};
use std::time::Instant;

fn filled(gpu: &GpuBackend, len: usize) -> gpu_cnn::backend::gpu::GpuTensor {
    let mut t = gpu.tensor(len).unwrap();
    let data: Vec<f32> = (0..len).map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5).collect();
    gpu.upload(&mut t, &data);
    t
}

/// Runs `op` once to warm up, then `reps` times in one submission; prints GFLOP/s.
fn time(gpu: &GpuBackend, name: &str, flops: f64, reps: usize, sync: &gpu_cnn::backend::gpu::GpuTensor, op: &dyn Fn()) {
    op();
    gpu.download(sync).unwrap();
    let start = Instant::now();
    for _ in 0..reps {
        op();
    }
    gpu.flush().unwrap();
    gpu.download(sync).unwrap();
    let secs = start.elapsed().as_secs_f64() / reps as f64;
    println!("{name:<48} {:>8.2} ms  {:>6.2} GFLOP/s", secs * 1e3, flops / secs / 1e9);
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

    let d = DenseShape { inputs: 1024, units: 1024 };
    let n = 1024;
    let (x, w, b, dy) = (filled(&gpu, n * d.inputs), filled(&gpu, d.inputs * d.units), filled(&gpu, d.units), filled(&gpu, n * d.units));
    let (mut y, mut dx, mut dw, mut db) = (gpu.tensor(n * d.units).unwrap(), gpu.tensor(n * d.inputs).unwrap(), gpu.tensor(d.inputs * d.units).unwrap(), gpu.tensor(d.units).unwrap());
    let flops = 2.0 * (n * d.inputs * d.units) as f64;
    let (yp, dxp, dwp, dbp) = (&mut y as *mut _, &mut dx as *mut _, &mut dw as *mut _, &mut db as *mut _);
    // SAFETY: each closure is the only user of its output while it runs (single thread).
    time(&gpu, "dense forward 1024x1024x1024", flops, 3, &b, &|| gpu.dense_forward(&x, &w, &b, unsafe { &mut *yp }, &d, n, true));
    time(&gpu, "dense backward input 1024x1024x1024", flops, 3, &b, &|| gpu.dense_backward_input(&dy, &w, unsafe { &mut *dxp }, &d, n));
    time(&gpu, "dense backward filter 1024x1024x1024", flops, 3, &b, &|| gpu.dense_backward_filter(&x, &dy, unsafe { &mut *dwp }, unsafe { &mut *dbp }, &d, n));

    // The seed model's convolutions at batch 32 (CIFAR-10 32x32x3 input).
    let convs = [
        ("conv2d   32x32x3 -> 30x30x32", ConvShape { in_h: 32, in_w: 32, in_c: 3, out_h: 30, out_w: 30, out_c: 32, k_h: 3, k_w: 3, stride_h: 1, stride_w: 1, pad_top: 0, pad_left: 0 }),
        ("conv2d_1 15x15x32 -> 13x13x64", ConvShape { in_h: 15, in_w: 15, in_c: 32, out_h: 13, out_w: 13, out_c: 64, k_h: 3, k_w: 3, stride_h: 1, stride_w: 1, pad_top: 0, pad_left: 0 }),
        ("conv2d_2 6x6x64 -> 4x4x64", ConvShape { in_h: 6, in_w: 6, in_c: 64, out_h: 4, out_w: 4, out_c: 64, k_h: 3, k_w: 3, stride_h: 1, stride_w: 1, pad_top: 0, pad_left: 0 }),
    ];
    let n = 32;
    for (name, s) in convs {
        let (x, w, b, dy) = (filled(&gpu, n * s.in_len()), filled(&gpu, s.kernel_len()), filled(&gpu, s.out_c), filled(&gpu, n * s.out_len()));
        let (mut y, mut dx, mut dw, mut db) = (gpu.tensor(n * s.out_len()).unwrap(), gpu.tensor(n * s.in_len()).unwrap(), gpu.tensor(s.kernel_len()).unwrap(), gpu.tensor(s.out_c).unwrap());
        let flops = 2.0 * (n * s.out_h * s.out_w * s.out_c * s.patch_len()) as f64;
        let (yp, dxp, dwp, dbp) = (&mut y as *mut _, &mut dx as *mut _, &mut dw as *mut _, &mut db as *mut _);
        time(&gpu, &format!("{name} forward"), flops, 10, &b, &|| gpu.conv2d_forward(&x, &w, &b, unsafe { &mut *yp }, &s, n, true));
        time(&gpu, &format!("{name} backward input"), flops, 10, &b, &|| gpu.conv2d_backward_input(&dy, &w, unsafe { &mut *dxp }, &s, n));
        time(&gpu, &format!("{name} backward filter"), flops, 10, &b, &|| gpu.conv2d_backward_filter(&x, &dy, unsafe { &mut *dwp }, unsafe { &mut *dbp }, &s, n));
    }
}
