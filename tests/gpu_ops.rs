//! Every GPU op against the CPU reference on seeded random inputs of awkward shapes (batch 7,
//! 13x13 maps, odd channel counts, stride 2, "same" padding, channel counts past one 64-wide
//! tile), forward and backward; properties every backend must have (`backend_test!`: partial
//! batches, bit-for-bit repeats, Adam steps recorded back to back); limits and the validator.
//!
//! The GPU is whatever adapter wgpu finds (Mesa's lavapipe in CI). Without one the GPU tests
//! print a line and pass, unless GPU_CNN_REQUIRE_GPU=1, which makes a missing adapter a failure.

#[macro_use]
mod common;
use common::{assert_close, assert_same_bits, max_abs, uniform_vec};
use gpu_cnn::backend::cpu::CpuBackend;
use gpu_cnn::backend::gpu::{choose_adapter, shader_check::check_wgsl, ConvInputGradAlgo, DeviceRequest, ALL_SHADERS};
use gpu_cnn::backend::{AdamConfig, Backend, ConvShape, DenseShape, PoolShape, METRIC_CORRECT, METRIC_COUNT, METRIC_LOSS_SUM};
use gpu_cnn::model::{conv_shape, pool_shape, Padding};
use gpu_cnn::rng::Rng;

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

/// GEMM results against the CPU: summation orders differ (CPU sgemm blocks vs 16-wide k slabs
/// and split-k on the GPU), so they agree to a few f32 ulps of the partial sums, not bit for
/// bit. 1e-4 of the largest value (about 800 ulps) covers sums of the few hundred to few
/// thousand terms used here, while a wrong index or a missed term shows up as an error of
/// order the values themselves.
const GEMM_TOL: f64 = 1e-4;

#[track_caller]
fn assert_gemm_close(what: &str, got: &[f32], want: &[f32]) {
    assert_close(what, got, want, GEMM_TOL * max_abs(want) as f64, 0.0);
}

/// A Keras conv geometry, from the model's own rule.
fn conv(input: (usize, usize, usize), out_c: usize, k: (usize, usize), stride: (usize, usize), padding: Padding) -> ConvShape {
    conv_shape(input, out_c, k, stride, padding).expect("the kernel fits")
}

fn pool(input: (usize, usize, usize), size: (usize, usize), stride: (usize, usize)) -> PoolShape {
    pool_shape(input, size, stride).expect("the window fits")
}

/// y, dx, dw, db of one conv on backend `b`.
#[allow(clippy::too_many_arguments)]
fn conv_run<B: Backend>(b: &B, s: &ConvShape, n: usize, relu: bool, x: &[f32], w: &[f32], bias: &[f32], dy: &[f32]) -> [Vec<f32>; 4] {
    let (xt, wt, bt, dyt) = (up(b, x), up(b, w), up(b, bias), up(b, dy));
    let mut y = b.tensor(n * s.out_len()).unwrap();
    let mut dx = b.tensor(n * s.in_len()).unwrap();
    let mut dw = b.tensor(s.kernel_len()).unwrap();
    let mut db = b.tensor(s.out_c).unwrap();
    b.conv2d_forward(&xt, &wt, Some(&bt), &mut y, s, n, relu);
    b.conv2d_backward_input(&dyt, &wt, &mut dx, s, n);
    b.conv2d_backward_filter(&xt, &dyt, &mut dw, Some(&mut db), s, n);
    b.flush().unwrap();
    [b.download(&y).unwrap(), b.download(&dx).unwrap(), b.download(&dw).unwrap(), b.download(&db).unwrap()]
}

/// Random inputs for one conv: x, w, bias, dy.
fn conv_inputs(rng: &mut Rng, s: &ConvShape, n: usize) -> [Vec<f32>; 4] {
    [uniform_vec(rng, n * s.in_len()), uniform_vec(rng, s.kernel_len()), uniform_vec(rng, s.out_c), uniform_vec(rng, n * s.out_len())]
}

gpu_test! {
    fn conv2d_matches_cpu(gpu: &GpuBackend) {
        use Padding::{Same, Valid};
        let cpu = CpuBackend::new();
        let cases = [
            // 13x13 maps, batch 7, 3 -> 5 channels, valid; 7*11*11 = 847 pixels -> 4 k-splits in dw.
            (conv((13, 13, 3), 5, (3, 3), (1, 1), Valid), 7, true),
            // stride 2 with "same" padding, odd channel counts.
            (conv((13, 13, 5), 7, (3, 3), (2, 2), Same), 7, false),
            // unequal kernel and strides, "same": pad_top 0, pad_left 1, padding only on some sides.
            (conv((8, 9, 4), 3, (2, 3), (2, 1), Same), 3, true),
            // 16+ input channels, with stride 2 and "same" padding, and with unequal kernel and
            // strides (every case runs the input gradient both ways: implicit GEMM and col2im).
            (conv((9, 9, 17), 6, (3, 3), (2, 2), Same), 3, true),
            (conv((8, 9, 20), 3, (2, 3), (2, 1), Same), 2, false),
            // channels past one 64-wide tile on both sides (in_c 70, out_c 65): K = 630.
            (conv((6, 6, 70), 65, (3, 3), (1, 1), Same), 3, true),
            // few rows, many columns: 32 x 128 tiles, where each invocation loads 4 columns per slab.
            (conv((5, 5, 2), 70, (2, 2), (1, 1), Valid), 2, true),
            // 1x1 kernel on a 1-pixel-wide map, batch 1.
            (conv((5, 1, 2), 3, (1, 1), (1, 1), Valid), 1, false),
            // The seed model's second and third layers: the shape picks the implicit GEMM for the
            // first and col2im for the second.
            (conv((15, 15, 32), 64, (3, 3), (1, 1), Valid), 2, true),
            (conv((6, 6, 64), 64, (3, 3), (1, 1), Valid), 3, true),
        ];
        let mut rng = Rng::new(0x5eed_0001);
        for (s, n, relu) in cases {
            let [x, w, bias, dy] = conv_inputs(&mut rng, &s, n);
            let want = conv_run(&cpu, &s, n, relu, &x, &w, &bias, &dy);
            for algo in [None, Some(ConvInputGradAlgo::ImplicitGemm), Some(ConvInputGradAlgo::Col2im)] {
                gpu.force_conv_input_grad_for_tests(algo);
                let got = conv_run(gpu, &s, n, relu, &x, &w, &bias, &dy);
                for (name, (g, w)) in ["y", "dx", "dw", "db"].iter().zip(got.iter().zip(&want)) {
                    assert_gemm_close(&format!("conv {s:?} n={n} {name} (forced: {algo:?})"), g, w);
                }
            }
            gpu.force_conv_input_grad_for_tests(None);
        }
    }
}

backend_test! {
    /// Buffers sized for batch 7, called with n = 4: rows past n are left alone, rows before it
    /// match the CPU reference.
    fn conv2d_partial_batch_uses_a_prefix<B>(b: &B) {
        let s = conv((13, 13, 3), 5, (3, 3), (1, 1), Padding::Valid);
        let mut rng = Rng::new(0x5eed_0002);
        let [x, w, bias, _] = conv_inputs(&mut rng, &s, 7);
        let sentinel = vec![7.0f32; 7 * s.out_len()];
        fn forward_prefix<B: Backend>(b: &B, s: &ConvShape, x: &[f32], w: &[f32], bias: &[f32], sentinel: &[f32]) -> Vec<f32> {
            let (xt, wt, bt) = (up(b, x), up(b, w), up(b, bias));
            let mut y = up(b, sentinel);
            b.conv2d_forward(&xt, &wt, Some(&bt), &mut y, s, 4, true);
            b.download(&y).unwrap()
        }
        let got = forward_prefix(b, &s, &x, &w, &bias, &sentinel);
        let want = forward_prefix(&CpuBackend::new(), &s, &x, &w, &bias, &sentinel);
        assert_gemm_close("partial batch y", &got, &want);
        assert!(got[4 * s.out_len()..].iter().all(|&v| v == 7.0), "rows past the batch were written");
    }
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

fn dense_inputs(rng: &mut Rng, s: &DenseShape, n: usize) -> [Vec<f32>; 4] {
    [uniform_vec(rng, n * s.inputs), uniform_vec(rng, s.inputs * s.units), uniform_vec(rng, s.units), uniform_vec(rng, n * s.units)]
}

gpu_test! {
    fn dense_matches_cpu(gpu: &GpuBackend) {
        let cpu = CpuBackend::new();
        let cases = [
            (DenseShape { inputs: 37, units: 10 }, 7, false),
            // past one 64-wide tile in every dimension.
            (DenseShape { inputs: 130, units: 65 }, 70, true),
            // batch 300: the filter gradient is split over the batch (2 splits of 256).
            (DenseShape { inputs: 20, units: 10 }, 300, true),
            (DenseShape { inputs: 1, units: 1 }, 1, false),
        ];
        let mut rng = Rng::new(0x5eed_0003);
        for (s, n, relu) in cases {
            let [x, w, bias, dy] = dense_inputs(&mut rng, &s, n);
            let want = dense_run(&cpu, &s, n, relu, &x, &w, &bias, &dy);
            let got = dense_run(gpu, &s, n, relu, &x, &w, &bias, &dy);
            for (name, (g, w)) in ["y", "dx", "dw", "db"].iter().zip(got.iter().zip(&want)) {
                assert_gemm_close(&format!("dense {s:?} n={n} {name}"), g, w);
            }
        }
    }
}

gpu_test! {
    /// Filter gradients written into views of an arena (as a network's are), with one split
    /// (batch 7: the GEMM writes dw and db itself) and with two (batch 300: partial sums, then
    /// their sum): the same bits as into tensors of their own, and the neighbouring parts
    /// untouched.
    fn dense_filter_gradients_into_arena_views_stay_inside_them(gpu: &GpuBackend) {
        let s = DenseShape { inputs: 13, units: 6 };
        let mut rng = Rng::new(0x5eed_0013);
        for n in [7, 300] {
            let [x, w, bias, dy] = dense_inputs(&mut rng, &s, n);
            let want = dense_run(gpu, &s, n, false, &x, &w, &bias, &dy);
            let mut arena = gpu.tensor_arena(&[5, s.inputs * s.units, s.units, 3]).unwrap();
            let sentinel = [7.0f32; 5];
            gpu.upload(&mut arena.parts[0], &sentinel);
            gpu.upload(&mut arena.parts[3], &sentinel[..3]);
            let [before, dw, db, after] = arena.parts.as_mut_slice() else { unreachable!() };
            gpu.dense_backward_filter(&up(gpu, &x), &up(gpu, &dy), dw, db, &s, n);
            gpu.flush().unwrap();
            assert_same_bits(&format!("dw in an arena, batch {n}"), &gpu.download(dw).unwrap(), &want[2]);
            assert_same_bits(&format!("db in an arena, batch {n}"), &gpu.download(db).unwrap(), &want[3]);
            assert_eq!(gpu.download(before).unwrap(), sentinel, "the part before, batch {n}");
            assert_eq!(gpu.download(after).unwrap(), sentinel[..3], "the part after, batch {n}");
        }
    }
}

gpu_test! {
    /// Conv filter gradients into arena views, with and without a bias, over 2 x 8x8 output
    /// pixels (one split: the GEMM writes dw and db itself) and 7 x 11x11 (4 splits, then their
    /// sum): the same bits as into tensors of their own, the neighbouring parts untouched, and
    /// without a bias the bias's part untouched too.
    fn conv_filter_gradients_into_arena_views_stay_inside_them(gpu: &GpuBackend) {
        let mut rng = Rng::new(0x5eed_0014);
        for (s, n) in [(conv((10, 10, 3), 5, (3, 3), (1, 1), Padding::Valid), 2), (conv((13, 13, 3), 5, (3, 3), (1, 1), Padding::Valid), 7)] {
            let [x, w, bias, dy] = conv_inputs(&mut rng, &s, n);
            let want = conv_run(gpu, &s, n, false, &x, &w, &bias, &dy);
            for with_bias in [true, false] {
                let mut arena = gpu.tensor_arena(&[5, s.kernel_len(), s.out_c, 3]).unwrap();
                let sentinel = [7.0f32; 5];
                gpu.upload(&mut arena.parts[0], &sentinel);
                gpu.upload(&mut arena.parts[2], &sentinel);
                gpu.upload(&mut arena.parts[3], &sentinel[..3]);
                let [before, dw, db, after] = arena.parts.as_mut_slice() else { unreachable!() };
                gpu.conv2d_backward_filter(&up(gpu, &x), &up(gpu, &dy), dw, with_bias.then_some(&mut *db), &s, n);
                gpu.flush().unwrap();
                let what = format!("batch {n}, bias {with_bias}");
                assert_same_bits(&format!("dw in an arena, {what}"), &gpu.download(dw).unwrap(), &want[2]);
                let db_want = if with_bias { want[3].clone() } else { sentinel.to_vec() };
                assert_same_bits(&format!("db in an arena, {what}"), &gpu.download(db).unwrap(), &db_want);
                assert_eq!(gpu.download(before).unwrap(), sentinel, "the part before, {what}");
                assert_eq!(gpu.download(after).unwrap(), sentinel[..3], "the part after, {what}");
            }
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

gpu_test! {
    fn maxpool_matches_cpu_exactly(gpu: &GpuBackend) {
        // No arithmetic but comparisons and in-order sums starting from zero: results are exact.
        let cpu = CpuBackend::new();
        let cases = [
            (pool((13, 13, 5), (2, 2), (2, 2)), 7), // the odd last row/column is dropped
            (pool((7, 7, 3), (3, 3), (2, 2)), 2),   // overlapping windows
            (pool((5, 6, 2), (2, 2), (1, 1)), 3),   // stride 1: most inputs in 4 windows
            (pool((6, 5, 1), (3, 2), (1, 2)), 1),
        ];
        let mut rng = Rng::new(0x5eed_0004);
        for (s, n) in cases {
            for tied in [false, true] {
                // Tied: values on a coarse grid, so windows hold equal maxima (first one wins).
                let x: Vec<f32> = uniform_vec(&mut rng, n * s.in_len()).into_iter().map(|v| if tied { (v * 2.0).round() } else { v }).collect();
                let dy = uniform_vec(&mut rng, n * s.out_len());
                let want = pool_run(&cpu, &s, n, &x, &dy);
                let got = pool_run(gpu, &s, n, &x, &dy);
                assert_same_bits(&format!("maxpool {s:?} tied={tied} y"), &got.0, &want.0);
                assert_eq!(got.1, want.1, "maxpool {s:?} tied={tied} argmax");
                assert_same_bits(&format!("maxpool {s:?} tied={tied} dx"), &got.2, &want.2);
            }
        }
    }
}

gpu_test! {
    /// The fused input gradients (dx masked where the layer before's ReLU output is <= 0) give
    /// the same bits as the op followed by relu_backward, for conv (both algorithms), max-pool
    /// and dense. Half of the ReLU outputs are 0.
    fn relu_masked_input_gradients_equal_op_then_relu_backward(gpu: &GpuBackend) {
        let mut rng = Rng::new(0x5eed_000b);
        let relu_y = |rng: &mut Rng, len: usize| -> Vec<f32> { uniform_vec(rng, len).into_iter().map(|v| v.max(0.0)).collect() };
        let n = 3;
        for s in [conv((9, 9, 17), 6, (3, 3), (2, 2), Padding::Same), conv((6, 6, 64), 64, (3, 3), (1, 1), Padding::Valid)] {
            let [_, w, _, dy] = conv_inputs(&mut rng, &s, n);
            let y = relu_y(&mut rng, n * s.in_len());
            for algo in [ConvInputGradAlgo::ImplicitGemm, ConvInputGradAlgo::Col2im] {
                gpu.force_conv_input_grad_for_tests(Some(algo));
                let (dyt, wt, yt) = (up(gpu, &dy), up(gpu, &w), up(gpu, &y));
                let (mut fused, mut two_step) = (gpu.tensor(n * s.in_len()).unwrap(), gpu.tensor(n * s.in_len()).unwrap());
                gpu.conv2d_backward_input_relu(&dyt, &wt, &yt, &mut fused, &s, n);
                gpu.conv2d_backward_input(&dyt, &wt, &mut two_step, &s, n);
                gpu.relu_backward(&yt, &mut two_step, n * s.in_len());
                assert_same_bits(&format!("conv {s:?} {algo:?}"), &gpu.download(&fused).unwrap(), &gpu.download(&two_step).unwrap());
            }
            gpu.force_conv_input_grad_for_tests(None);
        }
        let p = pool((7, 7, 3), (3, 3), (2, 2));
        let (x, dy, y) = (uniform_vec(&mut rng, n * p.in_len()), uniform_vec(&mut rng, n * p.out_len()), relu_y(&mut rng, n * p.in_len()));
        let (xt, dyt, yt) = (up(gpu, &x), up(gpu, &dy), up(gpu, &y));
        let (mut pooled, mut argmax) = (gpu.tensor(n * p.out_len()).unwrap(), gpu.indices(n * p.out_len()).unwrap());
        gpu.maxpool_forward(&xt, &mut pooled, &mut argmax, &p, n);
        let (mut fused, mut two_step) = (gpu.tensor(n * p.in_len()).unwrap(), gpu.tensor(n * p.in_len()).unwrap());
        gpu.maxpool_backward_relu(&dyt, &argmax, &yt, &mut fused, &p, n);
        gpu.maxpool_backward(&dyt, &argmax, &mut two_step, &p, n);
        gpu.relu_backward(&yt, &mut two_step, n * p.in_len());
        assert_same_bits("maxpool", &gpu.download(&fused).unwrap(), &gpu.download(&two_step).unwrap());
        let d = DenseShape { inputs: 70, units: 10 };
        let [_, w, _, dy] = dense_inputs(&mut rng, &d, n);
        let y = relu_y(&mut rng, n * d.inputs);
        let (dyt, wt, yt) = (up(gpu, &dy), up(gpu, &w), up(gpu, &y));
        let (mut fused, mut two_step) = (gpu.tensor(n * d.inputs).unwrap(), gpu.tensor(n * d.inputs).unwrap());
        gpu.dense_backward_input_relu(&dyt, &wt, &yt, &mut fused, &d, n);
        gpu.dense_backward_input(&dyt, &wt, &mut two_step, &d, n);
        gpu.relu_backward(&yt, &mut two_step, n * d.inputs);
        let fused = gpu.download(&fused).unwrap();
        assert!(fused.iter().filter(|v| **v == 0.0).count() >= n * d.inputs / 4, "the mask zeroed too little");
        assert_same_bits("dense", &fused, &gpu.download(&two_step).unwrap());
    }
}

gpu_test! {
    fn relu_backward_matches_cpu_exactly(gpu: &GpuBackend) {
        let mut rng = Rng::new(0x5eed_0005);
        let len = 1001;
        let y: Vec<f32> = uniform_vec(&mut rng, len).into_iter().map(|v| v.max(0.0)).collect();
        let dy = uniform_vec(&mut rng, len);
        fn relu_back<B: Backend>(b: &B, y: &[f32], dy: &[f32]) -> Vec<f32> {
            let yt = up(b, y);
            let mut d = up(b, dy);
            b.relu_backward(&yt, &mut d, y.len() - 1); // the last element is left alone
            b.download(&d).unwrap()
        }
        assert_same_bits("relu backward", &relu_back(gpu, &y, &dy), &relu_back(&CpuBackend::new(), &y, &dy));
    }
}

gpu_test! {
    fn relu_backward_past_65535_workgroups(gpu: &GpuBackend) {
        // A 1-D grid of more workgroups than a dimension allows must be folded into 2-D. With the
        // real limit that takes 16.7M elements; a lowered limit (3) reaches the same code with 1k.
        gpu.lower_dispatch_limit_for_tests(3);
        let len = 3 * 256 * 2 + 77;
        let y: Vec<f32> = (0..len).map(|i| if i % 3 == 0 { 0.0 } else { 1.0 }).collect();
        let yt = up(gpu, &y);
        let mut d = up(gpu, &vec![2.0f32; len]);
        gpu.relu_backward(&yt, &mut d, len);
        let got = gpu.download(&d).unwrap();
        assert!(got.iter().enumerate().all(|(i, &v)| v == if i % 3 == 0 { 0.0 } else { 2.0 }));
    }
}

gpu_test! {
    fn ops_past_the_workgroups_per_dimension_limit_match_cpu(gpu: &GpuBackend) {
        // Every kind of grid folded: tile grids over y and z (conv, dense), 2-D linear grids (pool,
        // gather, softmax). The limit is lowered to 2 so small shapes need the folding.
        gpu.lower_dispatch_limit_for_tests(2);
        let cpu = CpuBackend::new();
        let mut rng = Rng::new(0x5eed_000a);
        let s = conv((13, 13, 3), 5, (3, 3), (1, 1), Padding::Valid); // 847 rows: 7 tiles of 128
        let n = 7;
        let [x, w, bias, dy] = conv_inputs(&mut rng, &s, n);
        let want = conv_run(&cpu, &s, n, true, &x, &w, &bias, &dy);
        let got = conv_run(gpu, &s, n, true, &x, &w, &bias, &dy);
        for (name, (g, w)) in ["y", "dx", "dw", "db"].iter().zip(got.iter().zip(&want)) {
            assert_gemm_close(&format!("folded conv {name}"), g, w);
        }
        let d = DenseShape { inputs: 9, units: 5 };
        let n = 700; // 6 tiles of 128 rows
        let [x, w, bias, dy] = dense_inputs(&mut rng, &d, n);
        let want = dense_run(&cpu, &d, n, false, &x, &w, &bias, &dy);
        let got = dense_run(gpu, &d, n, false, &x, &w, &bias, &dy);
        for (name, (g, w)) in ["y", "dx", "dw", "db"].iter().zip(got.iter().zip(&want)) {
            assert_gemm_close(&format!("folded dense {name}"), g, w);
        }
        let p = pool((13, 13, 5), (2, 2), (2, 2));
        let (x, dy) = (uniform_vec(&mut rng, 7 * p.in_len()), uniform_vec(&mut rng, 7 * p.out_len()));
        assert_eq!(pool_run(gpu, &p, 7, &x, &dy), pool_run(&cpu, &p, 7, &x, &dy), "folded maxpool");
        let logits = uniform_vec(&mut rng, 700 * 10);
        let labels: Vec<u32> = (0..700).map(|_| rng.below(10) as u32).collect();
        let (want, got) = (loss_run(&cpu, &logits, &labels, 700, 10), loss_run(gpu, &logits, &labels, 700, 10));
        // exp on the GPU may be a few ulps off (Vulkan's precision rules): 1e-5 absolute on
        // probabilities in [0, 1].
        assert_close("folded softmax", &got.2, &want.2, 1e-5, 0.0);
    }
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

gpu_test! {
    fn softmax_xent_matches_cpu(gpu: &GpuBackend) {
        let cpu = CpuBackend::new();
        let mut rng = Rng::new(0x5eed_0006);
        for (n, classes) in [(7, 10), (300, 10), (3, 1), (5, 70)] {
            let logits: Vec<f32> = uniform_vec(&mut rng, n * classes).into_iter().map(|v| v * 8.0).collect();
            let labels: Vec<u32> = (0..n).map(|_| rng.below(classes as u64) as u32).collect();
            let want = loss_run(&cpu, &logits, &labels, n, classes);
            let got = loss_run(gpu, &logits, &labels, n, classes);
            // exp/log on the GPU are not correctly rounded (Vulkan allows a few ulps): 1e-5 of
            // the largest value.
            assert_close(&format!("dlogits n={n} classes={classes}"), &got.0, &want.0, 1e-5 * max_abs(&want.0) as f64, 0.0);
            assert_close(&format!("probs n={n} classes={classes}"), &got.2, &want.2, 1e-5 * max_abs(&want.2) as f64, 0.0);
            // The loss sum is a sum of n terms in a different (tree) order: 1e-4 relative.
            assert_close("loss sum", &got.1[METRIC_LOSS_SUM..=METRIC_LOSS_SUM], &want.1[METRIC_LOSS_SUM..=METRIC_LOSS_SUM], 0.0, 1e-4);
            assert_eq!(got.1[METRIC_CORRECT], want.1[METRIC_CORRECT], "correct");
            assert_eq!(got.1[METRIC_COUNT], want.1[METRIC_COUNT], "count");
        }
    }
}

fn weighted_loss_run<B: Backend>(b: &B, logits: &[f32], labels: &[u32], weights: &[f32], n: usize, classes: usize) -> (Vec<f32>, Vec<f32>) {
    let (lt, lab, w) = (up(b, logits), up_indices(b, labels), up(b, weights));
    let mut d = b.tensor(n * classes).unwrap();
    let mut metrics = up(b, &[1.5, 2.0, 3.0]); // adds to what is there
    b.softmax_xent_weighted(&lt, &lab, &w, &mut d, &mut metrics, n, classes);
    b.flush().unwrap();
    (b.download(&d).unwrap(), b.download(&metrics).unwrap())
}

gpu_test! {
    fn weighted_softmax_xent_matches_cpu(gpu: &GpuBackend) {
        let cpu = CpuBackend::new();
        let mut rng = Rng::new(0x5eed_0016);
        // Awkward shapes: more rows than the 256 invocations (rows wrap), a prime class count,
        // one class.
        for (n, classes) in [(301, 7), (3, 1), (5, 13)] {
            let logits: Vec<f32> = uniform_vec(&mut rng, n * classes).into_iter().map(|v| v * 8.0).collect();
            let labels: Vec<u32> = (0..n).map(|_| rng.below(classes as u64) as u32).collect();
            let weights: Vec<f32> = (0..classes).map(|c| 0.25 + c as f32 * 0.7).collect();
            let want = weighted_loss_run(&cpu, &logits, &labels, &weights, n, classes);
            let got = weighted_loss_run(gpu, &logits, &labels, &weights, n, classes);
            // As unweighted: exp/log on the GPU are a few ulps off (Vulkan's precision rules);
            // 1e-5 of the largest gradient, weights only scale rows.
            assert_close(&format!("weighted dlogits n={n} classes={classes}"), &got.0, &want.0, 1e-5 * max_abs(&want.0) as f64, 0.0);
            // n weighted terms summed in a tree order on the GPU, in row order on the CPU: 1e-4 relative.
            assert_close("weighted loss sum", &got.1[METRIC_LOSS_SUM..=METRIC_LOSS_SUM], &want.1[METRIC_LOSS_SUM..=METRIC_LOSS_SUM], 0.0, 1e-4);
            assert_eq!(got.1[METRIC_CORRECT], want.1[METRIC_CORRECT], "correct is not weighted");
            assert_eq!(got.1[METRIC_COUNT], want.1[METRIC_COUNT], "count is not weighted");
        }
        // Weights of exactly 1.0 give the unweighted kernel's results bit for bit.
        let (n, classes) = (260, 10);
        let logits: Vec<f32> = uniform_vec(&mut rng, n * classes).into_iter().map(|v| v * 8.0).collect();
        let labels: Vec<u32> = (0..n).map(|_| rng.below(classes as u64) as u32).collect();
        let ones = weighted_loss_run(gpu, &logits, &labels, &vec![1.0; classes], n, classes);
        let plain = loss_run(gpu, &logits, &labels, n, classes);
        assert_eq!((ones.0, ones.1), (plain.0, plain.1), "weights of 1.0 change nothing");
    }
}

/// Adam's defaults with learning rate `lr`, at step `step`.
fn adam_step(lr: f32, step: u64) -> gpu_cnn::backend::AdamStep {
    AdamConfig { learning_rate: lr, ..AdamConfig::default() }.at_step(step)
}

/// Adam over `grads`, one step each; with `flush_each`, the steps are submitted one by one.
fn adam_run<B: Backend>(b: &B, p0: &[f32], grads: &[Vec<f32>], lr: f32, flush_each: bool) -> [Vec<f32>; 3] {
    let len = p0.len();
    let mut p = up(b, p0);
    let mut m = b.tensor(len).unwrap();
    let mut v = b.tensor(len).unwrap();
    let grads: Vec<B::Tensor> = grads.iter().map(|g| up(b, g)).collect();
    for (t, g) in grads.iter().enumerate() {
        b.adam_update(&mut p, g, &mut m, &mut v, len, &adam_step(lr, t as u64 + 1));
        if flush_each {
            b.flush().unwrap();
        }
    }
    [b.download(&p).unwrap(), b.download(&m).unwrap(), b.download(&v).unwrap()]
}

gpu_test! {
    fn adam_matches_cpu(gpu: &GpuBackend) {
        let mut rng = Rng::new(0x5eed_0007);
        let p0 = uniform_vec(&mut rng, 1000);
        let grads: Vec<Vec<f32>> = (0..3).map(|_| uniform_vec(&mut rng, 1000)).collect();
        let want = adam_run(&CpuBackend::new(), &p0, &grads, 1e-3, true);
        let got = adam_run(gpu, &p0, &grads, 1e-3, true);
        // sqrt and division may be a few ulps off on the GPU; 1e-5 of the largest value.
        for (name, (g, w)) in ["param", "m", "v"].iter().zip(got.iter().zip(&want)) {
            assert_close(&format!("adam {name}"), g, w, 1e-5 * max_abs(w) as f64, 0.0);
        }
    }
}

backend_test! {
    /// Two steps recorded back to back (no flush between) each use their own alpha, though on
    /// the GPU the scalars live in one uniform that the queue writes: the same bits as two
    /// steps submitted one by one.
    fn adam_steps_recorded_without_flush_keep_their_own_scalars<B>(b: &B) {
        let mut rng = Rng::new(0x5eed_0008);
        let p0 = uniform_vec(&mut rng, 300);
        let grads = vec![uniform_vec(&mut rng, 300), uniform_vec(&mut rng, 300)];
        let one_by_one = adam_run(b, &p0, &grads, 0.01, true);
        let back_to_back = adam_run(b, &p0, &grads, 0.01, false);
        for (name, (g, w)) in ["param", "m", "v"].iter().zip(back_to_back.iter().zip(&one_by_one)) {
            assert_same_bits(&format!("adam {name}, 2 steps in one encoder"), g, w);
        }
    }
}

fn gather_run<B: Backend>(b: &B, data: &B::Images, idx: &[u32], image_len: usize) -> (Vec<f32>, Vec<u32>) {
    let it = up_indices(b, idx);
    let mut x = b.tensor(idx.len() * image_len).unwrap();
    let mut labels = b.indices(idx.len()).unwrap();
    b.gather_batch(data, &it, idx.len(), &mut x, &mut labels, None);
    b.flush().unwrap();
    (b.download(&x).unwrap(), b.download_indices(&labels).unwrap())
}

gpu_test! {
    fn gather_batch_matches_cpu(gpu: &GpuBackend) {
        let cpu = CpuBackend::new();
        let mut rng = Rng::new(0x5eed_0009);
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
            let got = gather_run(gpu, &data, &idx, image_len);
            // The kernel builds v / 255 correctly rounded, as the CPU: exactly equal.
            assert_same_bits("gathered x", &got.0, &want.0);
            assert_eq!(got.1, want.1, "gathered labels");
        }
    }
}

/// Two training steps of a small net (gather, conv, pool, dense, loss, backward, Adam) on
/// backend `b`; returns every output of both steps.
fn two_training_steps<B: Backend>(b: &B, seed: u64) -> Vec<Vec<f32>> {
    let mut rng = Rng::new(seed);
    let s = conv((13, 13, 3), 8, (3, 3), (1, 1), Padding::Valid);
    let p = pool((11, 11, 8), (2, 2), (2, 2));
    let d = DenseShape { inputs: p.out_len(), units: 10 };
    let (n, count) = (7, 20);
    let images: Vec<u8> = (0..count * s.in_len()).map(|_| rng.below(256) as u8).collect();
    let labels: Vec<u8> = (0..count).map(|_| rng.below(10) as u8).collect();
    let data = b.upload_images(&images, &labels, s.in_len()).unwrap();
    let mut params = [
        up(b, &uniform_vec(&mut rng, s.kernel_len())),
        up(b, &uniform_vec(&mut rng, s.out_c)),
        up(b, &uniform_vec(&mut rng, d.inputs * d.units).iter().map(|v| v * 0.1).collect::<Vec<_>>()),
        up(b, &uniform_vec(&mut rng, d.units)),
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
        b.conv2d_forward(&x, &params[0], Some(&params[1]), &mut y, &s, n, true);
        b.maxpool_forward(&y, &mut pooled, &mut argmax, &p, n);
        b.dense_forward(&pooled, &params[2], &params[3], &mut logits, &d, n, false);
        b.softmax_xent(&logits, &batch_labels, &mut dlogits, &mut metrics, n, 10);
        {
            let [gw, gb, gdw, gdb] = &mut grads;
            b.dense_backward_filter(&pooled, &dlogits, gdw, gdb, &d, n);
            b.dense_backward_input(&dlogits, &params[2], &mut dpooled, &d, n);
            b.maxpool_backward(&dpooled, &argmax, &mut dy, &p, n);
            b.relu_backward(&y, &mut dy, n * s.out_len());
            b.conv2d_backward_filter(&x, &dy, gw, Some(gb), &s, n);
        }
        for i in 0..4 {
            b.adam_update(&mut params[i], &grads[i], &mut moments[i], &mut velocities[i], lens[i], &adam_step(1e-2, step));
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

gpu_test! {
    fn training_steps_match_cpu(gpu: &GpuBackend) {
        let want = two_training_steps(&CpuBackend::new(), 7);
        let got = two_training_steps(gpu, 7);
        // Errors compound over the chain (and Adam's first steps move every parameter by about
        // the learning rate whatever the gradient's size), so 1e-3 of the largest value.
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_close(&format!("training output {i}"), g, w, 1e-3 * max_abs(w) as f64, 0.0);
        }
    }
}

backend_test! {
    /// Fixed-order reductions, no float atomics: the same inputs give the same bits.
    fn repeated_runs_give_identical_bits<B>(b: &B) {
        let first = two_training_steps(b, 42);
        let second = two_training_steps(b, 42);
        for (i, (x, y)) in first.iter().zip(&second).enumerate() {
            assert_same_bits(&format!("output {i} of two identical runs"), x, y);
        }
    }
}

gpu_test! {
    fn a_repeated_step_reuses_its_bind_groups(gpu: &GpuBackend) {
        two_training_steps(gpu, 42);
        let after_first = gpu.cache_sizes();
        two_training_steps(gpu, 42);
        // Each call makes fresh tensors, hence fresh bind groups; the first call's tensors are
        // dropped and their bind groups with them, so the cache is as big as after the first.
        assert_eq!(gpu.cache_sizes(), after_first);
        // One step records 16 dispatches (+2 split sums); a second step adding more would be a leak.
        assert!(after_first.bind_groups <= 18, "{after_first:?} for one step's 18 dispatches");
    }
}

gpu_test! {
    fn too_large_tensor_names_the_limit(gpu: &GpuBackend) {
        let limits = gpu.limits().clone();
        let over_binding = (limits.max_storage_buffer_binding_size / 4 + 1) as usize;
        let err = gpu.tensor(over_binding).err().expect("a tensor past the binding limit must be refused").to_string();
        assert!(err.contains("max_storage_buffer_binding_size") || err.contains("max_buffer_size"), "{err}");
        let err = gpu.indices((limits.max_buffer_size / 4 + 1) as usize).err().expect("past max_buffer_size").to_string();
        assert!(err.contains("max_buffer_size") && err.contains(&limits.max_buffer_size.to_string()), "{err}");
    }
}

gpu_test! {
    fn wgpu_errors_come_back_from_flush(gpu: &GpuBackend) {
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
}

gpu_test! {
    fn describe_names_adapter_and_backend(gpu: &GpuBackend) {
        let text = gpu.describe();
        let info = gpu.adapter_info();
        assert!(text.starts_with(&info.name) && text.contains(info.backend.to_str()), "{text}");
    }
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
