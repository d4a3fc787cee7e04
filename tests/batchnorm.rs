//! BatchNormalization ops: the CPU reference against plain f64 loops and finite differences;
//! the GPU against the CPU on awkward shapes (batch 7, 13x13 maps, 5 and 3 channels, a
//! (n, units) case, a partial batch); training vs inference mode; bit-for-bit repeats; folding
//! into the conv before it.

#[macro_use]
mod common;
use common::finite_diff::{dot, numeric_grad};
use common::{assert_close, assert_same_bits, max_abs, uniform_vec};
use gpu_cnn::backend::cpu::CpuBackend;
use gpu_cnn::backend::{Backend, BatchNormConfig, BatchNormShape, DenseShape};
use gpu_cnn::batchnorm_fold::{fold_batchnorm, BatchNormWeights};
use gpu_cnn::model::{conv_shape, Padding};
use gpu_cnn::rng::Rng;

fn up<B: Backend>(b: &B, data: &[f32]) -> B::Tensor {
    let mut t = b.tensor(data.len()).unwrap();
    b.upload(&mut t, data);
    t
}

/// One layer's inputs: x, gamma, beta, moving mean and variance, dy.
struct Inputs {
    x: Vec<f32>,
    gamma: Vec<f32>,
    beta: Vec<f32>,
    moving_mean: Vec<f32>,
    moving_variance: Vec<f32>,
    dy: Vec<f32>,
}

/// x with a per-channel offset and spread (a mean of a few units over a std of ~1: the case a
/// one-pass variance gets wrong), gamma around 1, moving statistics away from their initial
/// values, and `tail` extra samples of huge values past the batch, which no op may read.
fn inputs(s: &BatchNormShape, n: usize, tail: usize, seed: u64) -> Inputs {
    let mut rng = Rng::new(seed);
    let c = s.channels;
    let offset = uniform_vec(&mut rng, c).iter().map(|v| 3.0 * v).collect::<Vec<_>>();
    let mut x: Vec<f32> = uniform_vec(&mut rng, n * s.len()).iter().enumerate().map(|(i, v)| offset[i % c] + 1.7 * v).collect();
    x.extend(std::iter::repeat_n(1e6, tail * s.len()));
    let gamma = uniform_vec(&mut rng, c).iter().map(|v| 1.0 + 0.5 * v).collect();
    let beta = uniform_vec(&mut rng, c);
    let moving_mean = uniform_vec(&mut rng, c);
    let moving_variance = uniform_vec(&mut rng, c).iter().map(|v| 1.0 + 0.5 * v).collect();
    let mut dy = uniform_vec(&mut rng, n * s.len());
    dy.extend(std::iter::repeat_n(1e6, tail * s.len()));
    Inputs { x, gamma, beta, moving_mean, moving_variance, dy }
}

/// Everything one training step of the layer produces.
#[derive(Debug)]
struct Outputs {
    y: Vec<f32>,
    saved: Vec<f32>,
    moving_mean: Vec<f32>,
    moving_variance: Vec<f32>,
    dx: Vec<f32>,
    dgamma: Vec<f32>,
    dbeta: Vec<f32>,
    y_infer: Vec<f32>,
}

/// Training forward, backward and inference forward of `v` on backend `b` (the first n samples).
fn run<B: Backend>(b: &B, s: &BatchNormShape, n: usize, v: &Inputs) -> Outputs {
    let h = BatchNormConfig::default();
    let (x, dy, gamma, beta) = (up(b, &v.x), up(b, &v.dy), up(b, &v.gamma), up(b, &v.beta));
    let (mut mm, mut mv) = (up(b, &v.moving_mean), up(b, &v.moving_variance));
    let mut saved = b.tensor(s.saved_len()).unwrap();
    let (mut y, mut dx) = (b.tensor(v.x.len()).unwrap(), b.tensor(v.x.len()).unwrap());
    let (mut dgamma, mut dbeta) = (b.tensor(s.channels).unwrap(), b.tensor(s.channels).unwrap());
    b.batchnorm_forward_train(&x, &gamma, &beta, &mut mm, &mut mv, &mut saved, &mut y, s, n, &h);
    b.batchnorm_backward(&x, &dy, &gamma, &mut saved, &mut dx, &mut dgamma, &mut dbeta, s, n);
    let saved_out = b.download(&saved).unwrap();
    let mut y_infer = b.tensor(v.x.len()).unwrap();
    let mut infer_saved = b.tensor(s.saved_len()).unwrap();
    b.batchnorm_forward_infer(&x, &gamma, &beta, &mm, &mv, &mut infer_saved, &mut y_infer, s, n, h.epsilon);
    let len = n * s.len();
    let prefix = |t: &B::Tensor| b.download(t).unwrap()[..len].to_vec();
    Outputs {
        y: prefix(&y),
        saved: saved_out,
        moving_mean: b.download(&mm).unwrap(),
        moving_variance: b.download(&mv).unwrap(),
        dx: prefix(&dx),
        dgamma: b.download(&dgamma).unwrap(),
        dbeta: b.download(&dbeta).unwrap(),
        y_infer: prefix(&y_infer),
    }
}

/// Keras's formulas in plain f64 loops: (y, batch mean, biased batch variance, moving mean,
/// moving variance after the update, inference y with those updated moving statistics).
fn reference_forward(s: &BatchNormShape, n: usize, v: &Inputs) -> [Vec<f64>; 6] {
    let (c, rows) = (s.channels, n * s.positions);
    let (eps, momentum) = (1e-3f64, 0.99f64);
    let (mut mean, mut var) = (vec![0.0; c], vec![0.0; c]);
    for ch in 0..c {
        mean[ch] = (0..rows).map(|r| v.x[r * c + ch] as f64).sum::<f64>() / rows as f64;
        var[ch] = (0..rows).map(|r| (v.x[r * c + ch] as f64 - mean[ch]).powi(2)).sum::<f64>() / rows as f64;
    }
    let moving_mean: Vec<f64> = (0..c).map(|ch| v.moving_mean[ch] as f64 * momentum + mean[ch] * (1.0 - momentum)).collect();
    let moving_var: Vec<f64> = (0..c).map(|ch| v.moving_variance[ch] as f64 * momentum + var[ch] * (1.0 - momentum)).collect();
    let normalize = |mean: &[f64], var: &[f64]| -> Vec<f64> {
        let y = |i: usize| v.gamma[i % c] as f64 * (v.x[i] as f64 - mean[i % c]) / (var[i % c] + eps).sqrt() + v.beta[i % c] as f64;
        (0..rows * c).map(|i| if s.relu { y(i).max(0.0) } else { y(i) }).collect()
    };
    let y = normalize(&mean, &var);
    let y_infer = normalize(&moving_mean, &moving_var);
    [y, mean, var, moving_mean, moving_var, y_infer]
}

/// The shapes every comparison runs on: (shape, batch).
fn shapes() -> Vec<(BatchNormShape, usize)> {
    vec![
        (BatchNormShape { positions: 13 * 13, channels: 5, relu: false }, 7),
        // A ReLU layer after it, absorbed: the forwards end in ReLU, the backward is the same.
        (BatchNormShape { positions: 13 * 13, channels: 5, relu: true }, 7),
        (BatchNormShape { positions: 13 * 13, channels: 3, relu: false }, 7),
        (BatchNormShape { positions: 1, channels: 37, relu: false }, 7),
        (BatchNormShape { positions: 2 * 3, channels: 1, relu: false }, 1),
    ]
}

/// The CPU op is Keras's formula: y, the saved statistics (biased variance) and the moving
/// update. The CPU sums in f64 and rounds each stored value once, so it agrees with the f64
/// loops to a few f32 ulps of the values: 1e-5 relative (plus 1e-5 absolute for values near 0).
#[test]
fn cpu_forward_is_kerass_formula() {
    let cpu = CpuBackend::new();
    for (k, (s, n)) in shapes().into_iter().enumerate() {
        let v = inputs(&s, n, 0, 100 + k as u64);
        let out = run(&cpu, &s, n, &v);
        let [y, mean, var, moving_mean, moving_var, y_infer] = reference_forward(&s, n, &v);
        let c = s.channels;
        let inv_std: Vec<f64> = var.iter().map(|v| 1.0 / (v + 1e-3).sqrt()).collect();
        assert_close("y", &out.y, &y, 1e-5, 1e-5);
        assert_close("saved mean", &out.saved[..c], &mean, 1e-5, 1e-5);
        assert_close("saved inv_std", &out.saved[c..2 * c], &inv_std, 1e-5, 1e-5);
        assert_close("moving_mean", &out.moving_mean, &moving_mean, 1e-6, 1e-5);
        assert_close("moving_variance", &out.moving_variance, &moving_var, 1e-6, 1e-5);
        assert_close("inference y", &out.y_infer, &y_infer, 1e-5, 1e-5);
    }
}

/// The backward against central differences of L = sum(y * r) through the training forward
/// (batch statistics and all). L is linear in gamma and beta, so their differences are exact
/// but for rounding; in x it is smooth with curvature O(1 / var), and steps of 1e-2 on x of
/// spread ~1 leave a truncation error ~h^2 = 1e-4 relative, while f32 rounding of L (a sum of
/// <= 60 products of size ~1, ~1e-6) over 2h gives ~5e-5: 1e-3 absolute + 1e-3 relative.
#[test]
fn backward_matches_finite_differences() {
    let cpu = CpuBackend::new();
    let cases = [(BatchNormShape { positions: 4, channels: 3, relu: false }, 3), (BatchNormShape { positions: 1, channels: 5, relu: false }, 6)];
    for (k, (s, n)) in cases.into_iter().enumerate() {
        let v = inputs(&s, n, 0, 200 + k as u64);
        let r = &v.dy;
        let loss = |x: &[f32], gamma: &[f32], beta: &[f32]| {
            let h = BatchNormConfig::default();
            let (mut mm, mut mv) = (v.moving_mean.clone(), v.moving_variance.clone());
            let (mut saved, mut y) = (vec![0.0; s.saved_len()], vec![0.0; x.len()]);
            cpu.batchnorm_forward_train(&x.to_vec(), &gamma.to_vec(), &beta.to_vec(), &mut mm, &mut mv, &mut saved, &mut y, &s, n, &h);
            dot(&y, r)
        };
        let out = run(&cpu, &s, n, &v);
        assert_close("dx", &out.dx, &numeric_grad(&v.x, 1e-2, |x| loss(x, &v.gamma, &v.beta)), 1e-3, 1e-3);
        assert_close("dgamma", &out.dgamma, &numeric_grad(&v.gamma, 1e-2, |g| loss(&v.x, g, &v.beta)), 1e-3, 1e-3);
        assert_close("dbeta", &out.dbeta, &numeric_grad(&v.beta, 1e-2, |b| loss(&v.x, &v.gamma, b)), 1e-3, 1e-3);
    }
}

// The GPU against the CPU on every shape, with two samples of huge values past the batch
// (which must not be read). The GPU sums each channel in f32 (a run of <= 5 values per
// invocation, then an 8-level tree), the CPU in f64; for the <= 1,183 values of a channel
// here that leaves the statistics within ~1e-6 relative. Outputs of size ~1-5 then agree to
// 2e-5 absolute + 1e-4 relative; dgamma/dbeta (sums of ~1,000 terms of size ~1, which f32
// tree rounding moves by up to ~13 levels x 6e-8 x sum|terms| ~ 1e-3) to 2e-3 absolute; dx
// (a difference of per-channel terms of size ~1) to 1e-4 absolute + 1e-4 relative.
gpu_test! {
    fn gpu_matches_cpu_on_awkward_shapes(gpu: &GpuBackend) {
        for (k, (s, n)) in shapes().into_iter().enumerate() {
            let v = inputs(&s, n, 2, 300 + k as u64);
            let (want, got) = (run(&CpuBackend::new(), &s, n, &v), run(gpu, &s, n, &v));
            let what = |name: &str| format!("{name} ({s:?}, n {n})");
            assert_close(&what("y"), &got.y, &want.y, 2e-5, 1e-4);
            assert_close(&what("saved"), &got.saved, &want.saved, 2e-5, 1e-4);
            assert_close(&what("moving_mean"), &got.moving_mean, &want.moving_mean, 1e-6, 1e-5);
            assert_close(&what("moving_variance"), &got.moving_variance, &want.moving_variance, 1e-6, 1e-5);
            assert_close(&what("dgamma"), &got.dgamma, &want.dgamma, 2e-3, 1e-4);
            assert_close(&what("dbeta"), &got.dbeta, &want.dbeta, 2e-3, 1e-4);
            assert_close(&what("dx"), &got.dx, &want.dx, 1e-4, 1e-4);
            assert_close(&what("inference y"), &got.y_infer, &want.y_infer, 2e-5, 1e-4);
        }
    }
}

// More channels than the per-dimension workgroup limit a test sets: the per-channel grid folds
// into 2-D and every channel is still reduced (same tolerances as above).
gpu_test! {
    fn gpu_per_channel_grid_folds_past_the_limit(gpu: &GpuBackend) {
        let (s, n) = (BatchNormShape { positions: 3, channels: 11, relu: false }, 5);
        let v = inputs(&s, n, 0, 400);
        gpu.lower_dispatch_limit_for_tests(4);
        let got = run(gpu, &s, n, &v);
        let want = run(&CpuBackend::new(), &s, n, &v);
        assert_close("y", &got.y, &want.y, 2e-5, 1e-4);
        assert_close("dgamma", &got.dgamma, &want.dgamma, 2e-3, 1e-4);
        assert_close("dx", &got.dx, &want.dx, 1e-4, 1e-4);
    }
}

// Fixed-order reductions: the same inputs give the same bits, run after run, on each backend.
backend_test! {
    fn batchnorm_repeats_bit_for_bit<B>(b: &B) {
        let (s, n) = (BatchNormShape { positions: 13 * 13, channels: 5, relu: false }, 7);
        let v = inputs(&s, n, 0, 500);
        let (first, second) = (run(b, &s, n, &v), run(b, &s, n, &v));
        for (what, a, b) in [
            ("y", &first.y, &second.y),
            ("saved", &first.saved, &second.saved),
            ("moving_mean", &first.moving_mean, &second.moving_mean),
            ("moving_variance", &first.moving_variance, &second.moving_variance),
            ("dx", &first.dx, &second.dx),
            ("dgamma", &first.dgamma, &second.dgamma),
            ("dbeta", &first.dbeta, &second.dbeta),
        ] {
            assert_same_bits(what, a, b);
        }
    }
}

// Training mode normalises by the batch's statistics, inference by the moving ones: on a batch
// of mean ~2 and std ~2 with fresh moving statistics (0 and 1) the two differ by ~1 per value.
// After 1,500 training steps on that same batch the moving statistics are the batch's but for
// 0.99^1500 ~ 3e-7 of their initial distance, so inference then equals training to 1e-4.
backend_test! {
    fn inference_uses_the_moving_statistics<B>(b: &B) {
        let (s, n) = (BatchNormShape { positions: 9, channels: 3, relu: false }, 4);
        let mut rng = Rng::new(600);
        let host_x: Vec<f32> = uniform_vec(&mut rng, n * s.len()).iter().map(|v| 2.0 + 3.0 * v).collect();
        let h = BatchNormConfig::default();
        let (x, gamma, beta) = (up(b, &host_x), up(b, &[1.0, 0.5, 2.0]), up(b, &[0.0, 0.1, -0.3]));
        let (mut mm, mut mv) = (up(b, &[0.0; 3]), up(b, &[1.0; 3]));
        let mut saved = b.tensor(s.saved_len()).unwrap();
        let (mut y_train, mut y_infer) = (b.tensor(host_x.len()).unwrap(), b.tensor(host_x.len()).unwrap());
        let infer = |mm: &B::Tensor, mv: &B::Tensor, saved: &mut B::Tensor, y: &mut B::Tensor| {
            b.batchnorm_forward_infer(&x, &gamma, &beta, mm, mv, saved, y, &s, n, h.epsilon);
            b.download(y).unwrap()
        };
        b.batchnorm_forward_train(&x, &gamma, &beta, &mut mm, &mut mv, &mut saved, &mut y_train, &s, n, &h);
        let train = b.download(&y_train).unwrap();
        let fresh = infer(&up(b, &[0.0; 3]), &up(b, &[1.0; 3]), &mut saved, &mut y_infer);
        let largest_gap = train.iter().zip(&fresh).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
        assert!(largest_gap > 0.5, "fresh moving statistics should normalise differently (gap {largest_gap})");
        for step in 1..1500 {
            b.batchnorm_forward_train(&x, &gamma, &beta, &mut mm, &mut mv, &mut saved, &mut y_train, &s, n, &h);
            if step % 100 == 0 {
                b.flush().unwrap();
            }
        }
        let converged = infer(&mm, &mv, &mut saved, &mut y_infer);
        assert_close("inference after convergence", &converged, &b.download(&y_train).unwrap(), 1e-4, 1e-4);
    }
}

/// Conv + BN (inference) against the conv with BN folded into its kernel and bias, with and
/// without a conv bias, and a dense layer + BN. The folded weights are rounded once from f64,
/// so the two differ by f32 rounding of the conv's sums (27 or 45 products of size ~1) and of
/// BN's three operations: 1e-5 of the largest output (~100 ulps) covers it, while a channel
/// folded with the wrong statistics is off by ~0.1-1.
#[test]
fn folding_into_the_conv_before_is_exact_enough() {
    let cpu = CpuBackend::new();
    let mut rng = Rng::new(700);
    let s = conv_shape((13, 13, 3), 5, (3, 3), (1, 1), Padding::Same).unwrap();
    let n = 7;
    let bn_shape = BatchNormShape { positions: s.out_h * s.out_w, channels: s.out_c, relu: false };
    let x = uniform_vec(&mut rng, n * s.in_len());
    let kernel = uniform_vec(&mut rng, s.kernel_len());
    let bias = uniform_vec(&mut rng, s.out_c);
    let gamma: Vec<f32> = uniform_vec(&mut rng, 5).iter().map(|v| 1.0 + 0.5 * v).collect();
    let beta = uniform_vec(&mut rng, 5);
    let mean = uniform_vec(&mut rng, 5);
    let variance: Vec<f32> = uniform_vec(&mut rng, 5).iter().map(|v| 1.0 + 0.9 * v).collect();
    let bn = BatchNormWeights { gamma: &gamma, beta: &beta, moving_mean: &mean, moving_variance: &variance, epsilon: 1e-3 };
    for with_bias in [true, false] {
        let b0 = if with_bias { bias.clone() } else { vec![0.0; 5] };
        let mut z = vec![0.0; n * s.out_len()];
        cpu.conv2d_forward(&x, &kernel, Some(&b0), &mut z, &s, n, false);
        let (mut saved, mut y) = (vec![0.0; bn_shape.saved_len()], vec![0.0; z.len()]);
        cpu.batchnorm_forward_infer(&z, &gamma, &beta, &mean, &variance, &mut saved, &mut y, &bn_shape, n, 1e-3);
        let (folded_kernel, folded_bias) = fold_batchnorm(&kernel, with_bias.then_some(&bias[..]), &bn).unwrap();
        let mut folded = vec![0.0; z.len()];
        cpu.conv2d_forward(&x, &folded_kernel, Some(&folded_bias), &mut folded, &s, n, false);
        assert_close(&format!("folded conv (bias {with_bias})"), &folded, &y, 1e-5 * max_abs(&y) as f64, 0.0);
    }
    // Dense (in, out) kernels end in the output axis too.
    let d = DenseShape { inputs: 9, units: 5 };
    let (dx, dk) = (uniform_vec(&mut rng, n * 9), uniform_vec(&mut rng, 45));
    let mut z = vec![0.0; n * 5];
    cpu.dense_forward(&dx, &dk, &bias, &mut z, &d, n, false);
    let (mut saved, mut y) = (vec![0.0; 20], vec![0.0; n * 5]);
    cpu.batchnorm_forward_infer(&z, &gamma, &beta, &mean, &variance, &mut saved, &mut y, &BatchNormShape { positions: 1, channels: 5, relu: false }, n, 1e-3);
    let (fk, fb) = fold_batchnorm(&dk, Some(&bias), &bn).unwrap();
    let mut folded = vec![0.0; n * 5];
    cpu.dense_forward(&dx, &fk, &fb, &mut folded, &d, n, false);
    assert_close("folded dense", &folded, &y, 1e-5 * max_abs(&y) as f64, 0.0);
    // Mismatched tensors are an error, not a panic.
    assert!(fold_batchnorm(&kernel[..7], None, &bn).is_err());
    assert!(fold_batchnorm(&kernel, Some(&bias[..4]), &bn).is_err());
}
