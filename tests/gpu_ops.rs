//! Every GPU op against the CPU reference on seeded random inputs of awkward shapes (batch 7,
//! 13x13 maps, odd channel counts, stride 2, "same" padding, channel counts past one 64-wide
//! tile), forward and backward; plus determinism, limits and the shader validator.
//!
//! The GPU is whatever adapter wgpu finds (Mesa's lavapipe in CI). Without one these tests print
//! a line and pass, unless GPU_CNN_REQUIRE_GPU=1, which makes a missing adapter a failure.

use gpu_cnn::backend::cpu::CpuBackend;
use gpu_cnn::backend::gpu::{choose_adapter, shader_check::check_wgsl, DeviceRequest, ALL_SHADERS};
use gpu_cnn::backend::{AdamStep, Backend, ConvShape, DenseShape, PoolShape, METRIC_CORRECT, METRIC_COUNT, METRIC_LOSS_SUM};

mod common;
use common::gpu_backend as gpu;

/// xorshift64*: a seeded stream, so every run tests the same numbers.
struct Rng(u64);
impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in [-1, 1).
    fn f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
    fn vec(&mut self, len: usize) -> Vec<f32> {
        (0..len).map(|_| self.f32()).collect()
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

fn up<B: Backend>(b: &B, data: &[f32]) -> B::Tensor {
    let mut t = b.tensor(data.len()).unwrap();
    b.upload(&mut t, data);
    t
}

fn up_indices<B: Backend>(b: &B, data: &[u32]) -> B::Indices {
    let mut t = b.indices(data.len()).unwrap();
    b.upload_indices(&mut t, data);
    t
}

/// |got - want| <= tol * max|want| element by element. Summation orders differ between the CPU
/// (sgemm blocks, 4 fixed partial sums) and the GPU (16-wide k slabs, split-k), so results
/// agree to a few f32 ulps of the partial sums, not bit for bit; 1e-4 of the largest value
/// (about 800 ulps) covers sums of the few hundred to few thousand terms used here, while a
/// wrong index or a missed term shows up as an error of order the values themselves.
fn assert_close(what: &str, got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-6);
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= tol * scale, "{what}[{i}]: gpu {g} vs cpu {w} (scale {scale}, tolerance {tol})");
    }
}

const GEMM_TOL: f32 = 1e-4;

/// A Keras-style conv geometry ("same" pads the odd pixel at the bottom/right).
fn conv_shape(in_h: usize, in_w: usize, in_c: usize, out_c: usize, k: (usize, usize), stride: (usize, usize), same: bool) -> ConvShape {
    let (out_h, out_w, pad_top, pad_left) = if same {
        let (oh, ow) = (in_h.div_ceil(stride.0), in_w.div_ceil(stride.1));
        let ph = ((oh - 1) * stride.0 + k.0).saturating_sub(in_h);
        let pw = ((ow - 1) * stride.1 + k.1).saturating_sub(in_w);
        (oh, ow, ph / 2, pw / 2)
    } else {
        ((in_h - k.0) / stride.0 + 1, (in_w - k.1) / stride.1 + 1, 0, 0)
    };
    ConvShape { in_h, in_w, in_c, out_h, out_w, out_c, k_h: k.0, k_w: k.1, stride_h: stride.0, stride_w: stride.1, pad_top, pad_left }
}

/// y, dx, dw, db of one conv on backend `b`.
#[allow(clippy::too_many_arguments)]
fn conv_run<B: Backend>(b: &B, s: &ConvShape, n: usize, relu: bool, x: &[f32], w: &[f32], bias: &[f32], dy: &[f32]) -> [Vec<f32>; 4] {
    let (xt, wt, bt, dyt) = (up(b, x), up(b, w), up(b, bias), up(b, dy));
    let mut y = b.tensor(n * s.out_len()).unwrap();
    let mut dx = b.tensor(n * s.in_len()).unwrap();
    let mut dw = b.tensor(s.kernel_len()).unwrap();
    let mut db = b.tensor(s.out_c).unwrap();
    b.conv2d_forward(&xt, &wt, &bt, &mut y, s, n, relu);
    b.conv2d_backward_input(&dyt, &wt, &mut dx, s, n);
    b.conv2d_backward_filter(&xt, &dyt, &mut dw, &mut db, s, n);
    b.flush().unwrap();
    [b.download(&y).unwrap(), b.download(&dx).unwrap(), b.download(&dw).unwrap(), b.download(&db).unwrap()]
}

#[test]
fn conv2d_matches_cpu() {
    let Some(gpu) = gpu() else { return };
    let cpu = CpuBackend::new();
    let cases = [
        // 13x13 maps, batch 7, 3 -> 5 channels, valid; 7*11*11 = 847 pixels -> 4 k-splits in dw.
        (conv_shape(13, 13, 3, 5, (3, 3), (1, 1), false), 7, true),
        // stride 2 with "same" padding, odd channel counts.
        (conv_shape(13, 13, 5, 7, (3, 3), (2, 2), true), 7, false),
        // unequal kernel and strides, "same": pad_top 0, pad_left 1, padding only on some sides.
        (conv_shape(8, 9, 4, 3, (2, 3), (2, 1), true), 3, true),
        // 16+ input channels, with stride 2 and "same" padding, and with unequal kernel and
        // strides (every case runs the input gradient both ways: implicit GEMM and col2im).
        (conv_shape(9, 9, 17, 6, (3, 3), (2, 2), true), 3, true),
        (conv_shape(8, 9, 20, 3, (2, 3), (2, 1), true), 2, false),
        // channels past one 64-wide tile on both sides (in_c 70, out_c 65): K = 630.
        (conv_shape(6, 6, 70, 65, (3, 3), (1, 1), true), 3, true),
        // few rows, many columns: 32 x 128 tiles, where each invocation loads 4 columns per slab.
        (conv_shape(5, 5, 2, 70, (2, 2), (1, 1), false), 2, true),
        // 1x1 kernel on a 1-pixel-wide map, batch 1.
        (conv_shape(5, 1, 2, 3, (1, 1), (1, 1), false), 1, false),
        // The seed model's second and third layers: the shape picks the implicit GEMM for the
        // first and col2im for the second.
        (conv_shape(15, 15, 32, 64, (3, 3), (1, 1), false), 2, true),
        (conv_shape(6, 6, 64, 64, (3, 3), (1, 1), false), 3, true),
    ];
    let mut rng = Rng(0x5eed_0001);
    for (s, n, relu) in cases {
        let x = rng.vec(n * s.in_len());
        let w = rng.vec(s.kernel_len());
        let bias = rng.vec(s.out_c);
        let dy = rng.vec(n * s.out_len());
        let want = conv_run(&cpu, &s, n, relu, &x, &w, &bias, &dy);
        for path in [None, Some(false), Some(true)] {
            gpu.force_conv_input_grad_col2im_for_tests(path);
            let got = conv_run(&gpu, &s, n, relu, &x, &w, &bias, &dy);
            for (name, (g, w)) in ["y", "dx", "dw", "db"].iter().zip(got.iter().zip(&want)) {
                assert_close(&format!("conv {s:?} n={n} {name} (col2im forced: {path:?})"), g, w, GEMM_TOL);
            }
        }
        gpu.force_conv_input_grad_col2im_for_tests(None);
    }
}

#[test]
fn conv2d_partial_batch_uses_a_prefix() {
    // Buffers sized for batch 7, called with n = 4: the rows past n must be left alone.
    let Some(gpu) = gpu() else { return };
    let cpu = CpuBackend::new();
    let s = conv_shape(13, 13, 3, 5, (3, 3), (1, 1), false);
    let mut rng = Rng(0x5eed_0002);
    let x = rng.vec(7 * s.in_len());
    let w = rng.vec(s.kernel_len());
    let bias = rng.vec(s.out_c);
    let sentinel = vec![7.0f32; 7 * s.out_len()];
    fn forward_prefix<B: Backend>(b: &B, s: &ConvShape, x: &[f32], w: &[f32], bias: &[f32], sentinel: &[f32]) -> Vec<f32> {
        let (xt, wt, bt) = (up(b, x), up(b, w), up(b, bias));
        let mut y = up(b, sentinel);
        b.conv2d_forward(&xt, &wt, &bt, &mut y, s, 4, true);
        b.download(&y).unwrap()
    }
    let on_cpu = forward_prefix(&cpu, &s, &x, &w, &bias, &sentinel);
    let on_gpu = forward_prefix(&gpu, &s, &x, &w, &bias, &sentinel);
    assert_close("partial batch y", &on_gpu, &on_cpu, GEMM_TOL);
    assert!(on_gpu[4 * s.out_len()..].iter().all(|&v| v == 7.0));
}

/// y, dx, dw, db of one dense layer on backend `b`.
#[allow(clippy::too_many_arguments)]
fn dense_run<B: Backend>(b: &B, s: &DenseShape, n: usize, relu: bool, x: &[f32], w: &[f32], bias: &[f32], dy: &[f32]) -> [Vec<f32>; 4] {
    let (xt, wt, bt, dyt) = (up(b, x), up(b, w), up(b, bias), up(b, dy));
    let mut y = b.tensor(n * s.units).unwrap();
    let mut dx = b.tensor(n * s.inputs).unwrap();
    let mut dw = b.tensor(s.inputs * s.units).unwrap();
    let mut db = b.tensor(s.units).unwrap();
    b.dense_forward(&xt, &wt, &bt, &mut y, s, n, relu);
    b.dense_backward_input(&dyt, &wt, &mut dx, s, n);
    b.dense_backward_filter(&xt, &dyt, &mut dw, &mut db, s, n);
    b.flush().unwrap();
    [b.download(&y).unwrap(), b.download(&dx).unwrap(), b.download(&dw).unwrap(), b.download(&db).unwrap()]
}

#[test]
fn dense_matches_cpu() {
    let Some(gpu) = gpu() else { return };
    let cpu = CpuBackend::new();
    let cases = [
        (DenseShape { inputs: 37, units: 10 }, 7, false),
        // past one 64-wide tile in every dimension.
        (DenseShape { inputs: 130, units: 65, }, 70, true),
        // batch 300: the filter gradient is split over the batch (2 splits of 256).
        (DenseShape { inputs: 20, units: 10 }, 300, true),
        (DenseShape { inputs: 1, units: 1 }, 1, false),
    ];
    let mut rng = Rng(0x5eed_0003);
    for (s, n, relu) in cases {
        let x = rng.vec(n * s.inputs);
        let w = rng.vec(s.inputs * s.units);
        let bias = rng.vec(s.units);
        let dy = rng.vec(n * s.units);
        let want = dense_run(&cpu, &s, n, relu, &x, &w, &bias, &dy);
        let got = dense_run(&gpu, &s, n, relu, &x, &w, &bias, &dy);
        for (name, (g, w)) in ["y", "dx", "dw", "db"].iter().zip(got.iter().zip(&want)) {
            assert_close(&format!("dense {s:?} n={n} {name}"), g, w, GEMM_TOL);
        }
    }
}

fn pool_run<B: Backend>(b: &B, s: &PoolShape, n: usize, x: &[f32], dy: &[f32]) -> (Vec<f32>, Vec<u32>, Vec<f32>) {
    let (xt, dyt) = (up(b, x), up(b, dy));
    let mut y = b.tensor(n * s.out_len()).unwrap();
    let mut argmax = b.indices(n * s.out_len()).unwrap();
    let mut dx = b.tensor(n * s.in_len()).unwrap();
    b.maxpool_forward(&xt, &mut y, &mut argmax, s, n);
    b.maxpool_backward(&dyt, &argmax, &mut dx, s, n);
    b.flush().unwrap();
    (b.download(&y).unwrap(), b.download_indices(&argmax).unwrap(), b.download(&dx).unwrap())
}

fn pool_shape(in_h: usize, in_w: usize, c: usize, size: (usize, usize), stride: (usize, usize)) -> PoolShape {
    PoolShape { in_h, in_w, c, out_h: (in_h - size.0) / stride.0 + 1, out_w: (in_w - size.1) / stride.1 + 1, size_h: size.0, size_w: size.1, stride_h: stride.0, stride_w: stride.1 }
}

#[test]
fn maxpool_matches_cpu_exactly() {
    // No arithmetic but comparisons and in-order sums starting from zero: results are exact.
    let Some(gpu) = gpu() else { return };
    let cpu = CpuBackend::new();
    let cases = [
        (pool_shape(13, 13, 5, (2, 2), (2, 2)), 7), // the odd last row/column is dropped
        (pool_shape(7, 7, 3, (3, 3), (2, 2)), 2),   // overlapping windows
        (pool_shape(5, 6, 2, (2, 2), (1, 1)), 3),   // stride 1: most inputs in 4 windows
        (pool_shape(6, 5, 1, (3, 2), (1, 2)), 1),
    ];
    let mut rng = Rng(0x5eed_0004);
    for (s, n) in cases {
        for tied in [false, true] {
            // Tied: values on a coarse grid, so windows hold equal maxima (first one wins).
            let x: Vec<f32> = rng.vec(n * s.in_len()).into_iter().map(|v| if tied { (v * 2.0).round() } else { v }).collect();
            let dy = rng.vec(n * s.out_len());
            let want = pool_run(&cpu, &s, n, &x, &dy);
            let got = pool_run(&gpu, &s, n, &x, &dy);
            assert_eq!(got.0, want.0, "maxpool {s:?} tied={tied} y");
            assert_eq!(got.1, want.1, "maxpool {s:?} tied={tied} argmax");
            assert_eq!(got.2, want.2, "maxpool {s:?} tied={tied} dx");
        }
    }
}

#[test]
fn relu_backward_matches_cpu_exactly() {
    let Some(gpu) = gpu() else { return };
    let cpu = CpuBackend::new();
    let mut rng = Rng(0x5eed_0005);
    let len = 1001;
    let y: Vec<f32> = rng.vec(len).into_iter().map(|v| if v < 0.0 { 0.0 } else { v }).collect();
    let dy = rng.vec(len);
    fn relu_back<B: Backend>(b: &B, y: &[f32], dy: &[f32]) -> Vec<f32> {
        let yt = up(b, y);
        let mut d = up(b, dy);
        b.relu_backward(&yt, &mut d, y.len() - 1); // the last element is left alone
        b.download(&d).unwrap()
    }
    assert_eq!(relu_back(&gpu, &y, &dy), relu_back(&cpu, &y, &dy));
}

#[test]
fn relu_backward_past_65535_workgroups() {
    // A 1-D grid of more workgroups than a dimension allows must be folded into 2-D. With the
    // real limit that takes 16.7M elements; a lowered limit (3) reaches the same code with 1k.
    let Some(gpu) = gpu() else { return };
    gpu.lower_dispatch_limit_for_tests(3);
    let len = 3 * 256 * 2 + 77;
    let y: Vec<f32> = (0..len).map(|i| if i % 3 == 0 { 0.0 } else { 1.0 }).collect();
    let yt = up(&gpu, &y);
    let mut d = up(&gpu, &vec![2.0f32; len]);
    gpu.relu_backward(&yt, &mut d, len);
    let got = gpu.download(&d).unwrap();
    assert!(got.iter().enumerate().all(|(i, &v)| v == if i % 3 == 0 { 0.0 } else { 2.0 }));
}

#[test]
fn ops_past_the_workgroups_per_dimension_limit_match_cpu() {
    // Every kind of grid folded: tile grids over y and z (conv, dense), 2-D linear grids (pool,
    // gather, softmax). The limit is lowered to 2 so small shapes need the folding.
    let Some(gpu) = gpu() else { return };
    gpu.lower_dispatch_limit_for_tests(2);
    let cpu = CpuBackend::new();
    let mut rng = Rng(0x5eed_000a);
    let s = conv_shape(13, 13, 3, 5, (3, 3), (1, 1), false); // 847 rows: 7 tiles of 128
    let n = 7;
    let (x, w, bias, dy) = (rng.vec(n * s.in_len()), rng.vec(s.kernel_len()), rng.vec(s.out_c), rng.vec(n * s.out_len()));
    let want = conv_run(&cpu, &s, n, true, &x, &w, &bias, &dy);
    let got = conv_run(&gpu, &s, n, true, &x, &w, &bias, &dy);
    for (name, (g, w)) in ["y", "dx", "dw", "db"].iter().zip(got.iter().zip(&want)) {
        assert_close(&format!("folded conv {name}"), g, w, GEMM_TOL);
    }
    let d = DenseShape { inputs: 9, units: 5 };
    let n = 700; // 6 tiles of 128 rows
    let (x, w, bias, dy) = (rng.vec(n * d.inputs), rng.vec(d.inputs * d.units), rng.vec(d.units), rng.vec(n * d.units));
    let want = dense_run(&cpu, &d, n, false, &x, &w, &bias, &dy);
    let got = dense_run(&gpu, &d, n, false, &x, &w, &bias, &dy);
    for (name, (g, w)) in ["y", "dx", "dw", "db"].iter().zip(got.iter().zip(&want)) {
        assert_close(&format!("folded dense {name}"), g, w, GEMM_TOL);
    }
    let p = pool_shape(13, 13, 5, (2, 2), (2, 2));
    let (x, dy) = (rng.vec(7 * p.in_len()), rng.vec(7 * p.out_len()));
    assert_eq!(pool_run(&gpu, &p, 7, &x, &dy), pool_run(&cpu, &p, 7, &x, &dy), "folded maxpool");
    let logits = rng.vec(700 * 10);
    let labels: Vec<u32> = (0..700).map(|_| rng.below(10) as u32).collect();
    let (want, got) = (loss_run(&cpu, &logits, &labels, 700, 10), loss_run(&gpu, &logits, &labels, 700, 10));
    assert_close("folded softmax", &got.2, &want.2, 1e-5);
}

fn loss_run<B: Backend>(b: &B, logits: &[f32], labels: &[u32], n: usize, classes: usize) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let lt = up(b, logits);
    let lab = up_indices(b, labels);
    let mut d = b.tensor(n * classes).unwrap();
    let mut metrics = up(b, &[1.5, 2.0, 3.0]); // adds to what is there
    let mut probs = b.tensor(n * classes).unwrap();
    b.softmax_xent(&lt, &lab, &mut d, &mut metrics, n, classes);
    b.softmax(&lt, &mut probs, n, classes);
    b.flush().unwrap();
    (b.download(&d).unwrap(), b.download(&metrics).unwrap(), b.download(&probs).unwrap())
}

#[test]
fn softmax_xent_matches_cpu() {
    let Some(gpu) = gpu() else { return };
    let cpu = CpuBackend::new();
    let mut rng = Rng(0x5eed_0006);
    for (n, classes) in [(7, 10), (300, 10), (3, 1), (5, 70)] {
        let logits: Vec<f32> = rng.vec(n * classes).into_iter().map(|v| v * 8.0).collect();
        let labels: Vec<u32> = (0..n).map(|_| rng.below(classes as u64) as u32).collect();
        let want = loss_run(&cpu, &logits, &labels, n, classes);
        let got = loss_run(&gpu, &logits, &labels, n, classes);
        // exp/log on the GPU are not correctly rounded (Vulkan allows a few ulps): 1e-5.
        assert_close(&format!("dlogits n={n} classes={classes}"), &got.0, &want.0, 1e-5);
        assert_close(&format!("probs n={n} classes={classes}"), &got.2, &want.2, 1e-5);
        // The loss sum is a sum of n terms in a different (tree) order.
        assert!((got.1[METRIC_LOSS_SUM] - want.1[METRIC_LOSS_SUM]).abs() <= 1e-4 * want.1[METRIC_LOSS_SUM].abs(), "loss {:?} vs {:?}", got.1, want.1);
        assert_eq!(got.1[METRIC_CORRECT], want.1[METRIC_CORRECT], "correct");
        assert_eq!(got.1[METRIC_COUNT], want.1[METRIC_COUNT], "count");
    }
}

fn adam_run<B: Backend>(b: &B, p0: &[f32], grads: &[Vec<f32>]) -> [Vec<f32>; 3] {
    let len = p0.len();
    let mut p = up(b, p0);
    let mut m = b.tensor(len).unwrap();
    let mut v = b.tensor(len).unwrap();
    for (t, g) in grads.iter().enumerate() {
        let gt = up(b, g);
        let h = AdamStep { learning_rate: 1e-3, beta1: 0.9, beta2: 0.999, epsilon: 1e-7, step: t as u64 + 1 };
        b.adam_update(&mut p, &gt, &mut m, &mut v, len, &h);
        b.flush().unwrap();
    }
    [b.download(&p).unwrap(), b.download(&m).unwrap(), b.download(&v).unwrap()]
}

#[test]
fn adam_matches_cpu() {
    let Some(gpu) = gpu() else { return };
    let cpu = CpuBackend::new();
    let mut rng = Rng(0x5eed_0007);
    let len = 1000;
    let p0 = rng.vec(len);
    let grads: Vec<Vec<f32>> = (0..3).map(|_| rng.vec(len)).collect();
    let want = adam_run(&cpu, &p0, &grads);
    let got = adam_run(&gpu, &p0, &grads);
    // sqrt and division may be a few ulps off on the GPU; 1e-5 of the largest value.
    for (name, (g, w)) in ["param", "m", "v"].iter().zip(got.iter().zip(&want)) {
        assert_close(&format!("adam {name}"), g, w, 1e-5);
    }
}

#[test]
fn adam_steps_recorded_without_flush_keep_their_own_scalars() {
    // Two steps recorded back to back (no flush between): each must use its own alpha, though
    // the scalars live in one uniform that the queue writes.
    let Some(gpu) = gpu() else { return };
    let cpu = CpuBackend::new();
    let mut rng = Rng(0x5eed_0008);
    let (p0, g) = (rng.vec(300), rng.vec(300));
    fn two_steps<B: Backend>(b: &B, p0: &[f32], g: &[f32]) -> Vec<f32> {
        let mut p = up(b, p0);
        let (mut m, mut v, gt) = (b.tensor(p0.len()).unwrap(), b.tensor(p0.len()).unwrap(), up(b, g));
        for step in 1..=2 {
            let h = AdamStep { learning_rate: 0.01, beta1: 0.9, beta2: 0.999, epsilon: 1e-7, step };
            b.adam_update(&mut p, &gt, &mut m, &mut v, p0.len(), &h);
        }
        b.download(&p).unwrap()
    }
    assert_close("adam, 2 steps in one encoder", &two_steps(&gpu, &p0, &g), &two_steps(&cpu, &p0, &g), 1e-5);
}

fn gather_run<B: Backend>(b: &B, data: &B::Images, idx: &[u32], image_len: usize) -> (Vec<f32>, Vec<u32>) {
    let it = up_indices(b, idx);
    let mut x = b.tensor(idx.len() * image_len).unwrap();
    let mut labels = b.indices(idx.len()).unwrap();
    b.gather_batch(data, &it, idx.len(), &mut x, &mut labels, None);
    b.flush().unwrap();
    (b.download(&x).unwrap(), b.download_indices(&labels).unwrap())
}

#[test]
fn gather_batch_matches_cpu() {
    let Some(gpu) = gpu() else { return };
    let cpu = CpuBackend::new();
    let mut rng = Rng(0x5eed_0009);
    let (count, image_len) = (23, 75); // 75 bytes: images straddle u32 words
    let images: Vec<u8> = (0..count * image_len).map(|_| rng.below(256) as u8).collect();
    let labels: Vec<u8> = (0..count).map(|_| rng.below(10) as u8).collect();
    let idx: Vec<u32> = vec![22, 0, 5, 5, 13, 7, 21, 1, 16];
    let want = gather_run(&cpu, &cpu.upload_images(&images, &labels, image_len).unwrap(), &idx, image_len);
    // One chunk, then chunks of 5 images (what a data set over the binding limit gets).
    let whole = gpu.upload_images(&images, &labels, image_len).unwrap();
    let chunked = gpu.upload_images_in_chunks(&images, &labels, image_len, 5 * 75 + 3).unwrap();
    assert_eq!(whole.chunk_count(), 1);
    assert_eq!(chunked.chunk_count(), 5);
    for data in [whole, chunked] {
        let got = gather_run(&gpu, &data, &idx, image_len);
        // The kernel builds v / 255 correctly rounded, as the CPU: exactly equal.
        assert!(got.0.iter().zip(&want.0).all(|(g, w)| g.to_bits() == w.to_bits()), "gathered x differs from the CPU's");
        assert_eq!(got.1, want.1, "gathered labels");
    }
}

/// Two training steps of a small net (gather, conv, pool, dense, loss, backward, Adam) on
/// backend `b`; returns every output of both steps.
fn two_training_steps<B: Backend>(b: &B, seed: u64) -> Vec<Vec<f32>> {
    let mut rng = Rng(seed);
    let s = conv_shape(13, 13, 3, 8, (3, 3), (1, 1), false);
    let p = pool_shape(11, 11, 8, (2, 2), (2, 2));
    let d = DenseShape { inputs: p.out_len(), units: 10 };
    let (n, count) = (7, 20);
    let images: Vec<u8> = (0..count * s.in_len()).map(|_| rng.below(256) as u8).collect();
    let labels: Vec<u8> = (0..count).map(|_| rng.below(10) as u8).collect();
    let data = b.upload_images(&images, &labels, s.in_len()).unwrap();
    let mut params = [
        up(b, &rng.vec(s.kernel_len())),
        up(b, &rng.vec(s.out_c)),
        up(b, &rng.vec(d.inputs * d.units).iter().map(|v| v * 0.1).collect::<Vec<_>>()),
        up(b, &rng.vec(d.units)),
    ];
    let lens = [s.kernel_len(), s.out_c, d.inputs * d.units, d.units];
    let mut grads = lens.map(|len| b.tensor(len).unwrap());
    let mut moments = lens.map(|len| b.tensor(len).unwrap());
    let mut velocities = lens.map(|len| b.tensor(len).unwrap());
    let mut idx = b.indices(n).unwrap();
    let mut x = b.tensor(n * s.in_len()).unwrap();
    let mut batch_labels = b.indices(n).unwrap();
    let mut y = b.tensor(n * s.out_len()).unwrap();
    let mut pooled = b.tensor(n * p.out_len()).unwrap();
    let mut argmax = b.indices(n * p.out_len()).unwrap();
    let mut logits = b.tensor(n * 10).unwrap();
    let mut dlogits = b.tensor(n * 10).unwrap();
    let mut metrics = b.tensor(3).unwrap();
    let mut dpooled = b.tensor(n * p.out_len()).unwrap();
    let mut dy = b.tensor(n * s.out_len()).unwrap();
    let mut out = Vec::new();
    for step in 1..=2u64 {
        let batch: Vec<u32> = (0..n).map(|_| rng.below(count as u64) as u32).collect();
        b.upload_indices(&mut idx, &batch);
        b.gather_batch(&data, &idx, n, &mut x, &mut batch_labels, None);
        b.conv2d_forward(&x, &params[0], &params[1], &mut y, &s, n, true);
        b.maxpool_forward(&y, &mut pooled, &mut argmax, &p, n);
        b.dense_forward(&pooled, &params[2], &params[3], &mut logits, &d, n, false);
        b.softmax_xent(&logits, &batch_labels, &mut dlogits, &mut metrics, n, 10);
        {
            let [gw, gb, gdw, gdb] = &mut grads;
            b.dense_backward_filter(&pooled, &dlogits, gdw, gdb, &d, n);
            b.dense_backward_input(&dlogits, &params[2], &mut dpooled, &d, n);
            b.maxpool_backward(&dpooled, &argmax, &mut dy, &p, n);
            b.relu_backward(&y, &mut dy, n * s.out_len());
            b.conv2d_backward_filter(&x, &dy, gw, gb, &s, n);
        }
        let h = AdamStep { learning_rate: 1e-2, beta1: 0.9, beta2: 0.999, epsilon: 1e-7, step };
        for i in 0..4 {
            b.adam_update(&mut params[i], &grads[i], &mut moments[i], &mut velocities[i], lens[i], &h);
        }
        b.flush().unwrap();
        for t in [&x, &logits, &dlogits, &metrics, &dy] {
            out.push(b.download(t).unwrap());
        }
        for t in grads.iter().chain(&params) {
            out.push(b.download(t).unwrap());
        }
    }
    out
}

#[test]
fn training_steps_match_cpu() {
    let Some(gpu) = gpu() else { return };
    let cpu = CpuBackend::new();
    let want = two_training_steps(&cpu, 7);
    let got = two_training_steps(&gpu, 7);
    // Errors compound over the chain (and Adam's first steps move every parameter by about
    // the learning rate whatever the gradient's size), so 1e-3 of the largest value.
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_close(&format!("training output {i}"), g, w, 1e-3);
    }
}

#[test]
fn repeated_runs_give_identical_bits_and_reuse_bind_groups() {
    let Some(gpu) = gpu() else { return };
    let first = two_training_steps(&gpu, 42);
    let after_first = gpu.cached_bind_groups();
    let second = two_training_steps(&gpu, 42);
    let bits = |v: &Vec<Vec<f32>>| v.iter().flatten().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert!(bits(&first) == bits(&second), "same inputs, same adapter: different bits");
    // Each call makes fresh tensors, hence fresh bind groups, but the same number: within a
    // call the second step reused every bind group of the first.
    assert_eq!(gpu.cached_bind_groups(), 2 * after_first);
    // One step records 16 dispatches (+2 split sums); a second step adding more would be a leak.
    assert!(after_first <= 18, "{after_first} bind groups for one step's 18 dispatches");
}

#[test]
fn too_large_tensor_names_the_limit() {
    let Some(gpu) = gpu() else { return };
    let limits = gpu.limits().clone();
    let over_binding = (limits.max_storage_buffer_binding_size / 4 + 1) as usize;
    let err = gpu.tensor(over_binding).err().expect("a tensor past the binding limit must be refused").to_string();
    assert!(err.contains("max_storage_buffer_binding_size") || err.contains("max_buffer_size"), "{err}");
    let err = gpu.indices((limits.max_buffer_size / 4 + 1) as usize).err().expect("past max_buffer_size").to_string();
    assert!(err.contains("max_buffer_size") && err.contains(&limits.max_buffer_size.to_string()), "{err}");
}

#[test]
fn wgpu_errors_come_back_from_flush() {
    let Some(gpu) = gpu() else { return };
    // MAP_READ with STORAGE is invalid: wgpu reports it to the uncaptured-error handler.
    let _bad = gpu.device().create_buffer(&wgpu::BufferDescriptor {
        label: Some("deliberately invalid"),
        size: 16,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::STORAGE,
        mapped_at_creation: false,
    });
    let err = gpu.flush().expect_err("the invalid buffer must be reported").to_string();
    assert!(err.contains("deliberately invalid") || err.to_lowercase().contains("usage"), "{err}");
    gpu.flush().expect("reported once, then cleared");
}

#[test]
fn describe_names_adapter_and_backend() {
    let Some(gpu) = gpu() else { return };
    let text = gpu.describe();
    let info = gpu.adapter_info();
    assert!(text.starts_with(&info.name) && text.contains(info.backend.to_str()), "{text}");
}

#[test]
fn embedded_shaders_validate() {
    for (name, source) in ALL_SHADERS {
        check_wgsl(source).unwrap_or_else(|e| panic!("{name}:{e}"));
    }
}

#[test]
fn validator_rejects_broken_wgsl_with_line_and_column() {
    let parse_error = "@compute @workgroup_size(1)\nfn main() {\n    let x: u32 = 1u +;\n}\n";
    let e = check_wgsl(parse_error).expect_err("a syntax error must be rejected");
    assert_eq!(e.line, 3, "{e}");
    assert!(e.column > 1, "{e}");
    let type_error = "@group(0) @binding(0) var<storage, read_write> out: array<f32>;\n\n@compute @workgroup_size(1)\nfn main() {\n    out[0] = 1u;\n}\n";
    let e = check_wgsl(type_error).expect_err("a type error must be rejected");
    assert!(e.line >= 4 && !e.message.is_empty(), "{e}");
    assert!(e.to_string().starts_with(&format!("{}:{}: ", e.line, e.column)));
}

#[test]
fn device_request_parses() {
    assert_eq!("auto".parse::<DeviceRequest>().unwrap(), DeviceRequest::Auto);
    assert_eq!("CPU".parse::<DeviceRequest>().unwrap(), DeviceRequest::Cpu);
    assert_eq!("gpu".parse::<DeviceRequest>().unwrap(), DeviceRequest::Gpu);
    assert_eq!("vulkan".parse::<DeviceRequest>().unwrap(), DeviceRequest::Backend(wgpu::Backend::Vulkan));
    assert_eq!("gl".parse::<DeviceRequest>().unwrap(), DeviceRequest::Backend(wgpu::Backend::Gl));
    assert_eq!("2".parse::<DeviceRequest>().unwrap(), DeviceRequest::Index(2));
    assert!("tpu".parse::<DeviceRequest>().is_err());
    // auto never picks a software adapter; cpu never touches wgpu.
    if let Ok(Some(a)) = choose_adapter(DeviceRequest::Auto) {
        assert_ne!(a.get_info().device_type, wgpu::DeviceType::Cpu);
    }
    assert!(choose_adapter(DeviceRequest::Cpu).unwrap().is_none());
    assert!(choose_adapter(DeviceRequest::Index(10_000)).is_err());
}
