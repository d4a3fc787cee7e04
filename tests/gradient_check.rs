//! Every CPU backward against finite differences of its forward.
//!
//! Linear ops (conv, dense without activation) are checked with L = sum(y * r) for a random r:
//! the central difference is then exact but for f32 rounding, so the tolerance only has to
//! cover rounding of sums of O(100) terms of size O(1): 2e-3 absolute. Non-linear ops use small
//! steps on inputs built so that no max-pool window has a near tie and no ReLU input is near 0.

mod common;
use common::finite_diff::{dot, numeric_grad};
use common::{assert_close, random_vec};
use gpu_cnn::backend::cpu::CpuBackend;
use gpu_cnn::backend::{Backend, ConvShape, DenseShape};
use gpu_cnn::model::{conv_shape, pool_shape, Padding};

fn conv_shapes() -> Vec<ConvShape> {
    vec![
        // valid, stride 1
        conv_shape((5, 6, 2), 3, (3, 3), (1, 1), Padding::Valid).unwrap(),
        // same padding, stride (2, 1), a 3x2 kernel on 7x6: out 4x6, pads top 1, left 0
        conv_shape((7, 6, 3), 4, (3, 2), (2, 1), Padding::Same).unwrap(),
    ]
}

#[test]
fn conv2d_backward_matches_finite_differences() {
    let cpu = CpuBackend::new();
    let n = 2;
    for (k, s) in conv_shapes().iter().enumerate() {
        let x = random_vec(n * s.in_len(), 10 + k as u64);
        let w = random_vec(s.kernel_len(), 20 + k as u64);
        let b = random_vec(s.out_c, 30 + k as u64);
        let r = random_vec(n * s.out_len(), 40 + k as u64);
        let forward = |x: &[f32], w: &[f32], b: &[f32]| {
            let mut y = vec![0.0; n * s.out_len()];
            cpu.conv2d_forward(&x.to_vec(), &w.to_vec(), Some(&b.to_vec()), &mut y, s, n, false);
            dot(&y, &r)
        };
        let mut dx = vec![0.0; n * s.in_len()];
        cpu.conv2d_backward_input(&r, &w, &mut dx, s, n);
        let (mut dw, mut db) = (vec![0.0; s.kernel_len()], vec![0.0; s.out_c]);
        cpu.conv2d_backward_filter(&x, &r, &mut dw, Some(&mut db), s, n);
        assert_close("conv dx", &dx, &numeric_grad(&x, 0.01, |x| forward(x, &w, &b)), 2e-3, 1e-3);
        assert_close("conv dw", &dw, &numeric_grad(&w, 0.01, |w| forward(&x, w, &b)), 2e-3, 1e-3);
        assert_close("conv db", &db, &numeric_grad(&b, 0.01, |b| forward(&x, &w, b)), 2e-3, 1e-3);
    }
}

#[test]
fn dense_backward_matches_finite_differences() {
    let cpu = CpuBackend::new();
    let (n, s) = (3, DenseShape { inputs: 7, units: 5 });
    let x = random_vec(n * s.inputs, 1);
    let w = random_vec(s.inputs * s.units, 2);
    let b = random_vec(s.units, 3);
    let r = random_vec(n * s.units, 4);
    let forward = |x: &[f32], w: &[f32], b: &[f32]| {
        let mut y = vec![0.0; n * s.units];
        cpu.dense_forward(&x.to_vec(), &w.to_vec(), &b.to_vec(), &mut y, &s, n, false);
        dot(&y, &r)
    };
    let mut dx = vec![0.0; n * s.inputs];
    cpu.dense_backward_input(&r, &w, &mut dx, &s, n);
    let (mut dw, mut db) = (vec![0.0; w.len()], vec![0.0; s.units]);
    cpu.dense_backward_filter(&x, &r, &mut dw, &mut db, &s, n);
    assert_close("dense dx", &dx, &numeric_grad(&x, 0.01, |x| forward(x, &w, &b)), 2e-3, 1e-3);
    assert_close("dense dw", &dw, &numeric_grad(&w, 0.01, |w| forward(&x, w, &b)), 2e-3, 1e-3);
    assert_close("dense db", &db, &numeric_grad(&b, 0.01, |b| forward(&x, &w, b)), 2e-3, 1e-3);
}

#[test]
fn relu_backward_matches_finite_differences() {
    let cpu = CpuBackend::new();
    // Inputs at least 0.05 away from 0 so a 0.01 step never crosses the kink.
    let z: Vec<f32> = random_vec(40, 5).iter().map(|v| if *v >= 0.0 { v + 0.05 } else { v - 0.05 }).collect();
    let r = random_vec(40, 6);
    let relu = |z: &[f32]| z.iter().map(|v| v.max(0.0)).collect::<Vec<f32>>();
    let y = relu(&z);
    let mut dz = r.clone();
    cpu.relu_backward(&y, &mut dz, 40);
    assert_close("relu", &dz, &numeric_grad(&z, 0.01, |z| dot(&relu(z), &r)), 1e-4, 1e-3);
}

#[test]
fn maxpool_backward_matches_finite_differences() {
    let cpu = CpuBackend::new();
    // Overlapping 3x3 windows with stride 2 on 7x5, and 2x2 windows that drop the last row.
    let shapes = [pool_shape((7, 5, 2), (3, 3), (2, 2)).unwrap(), pool_shape((5, 4, 3), (2, 2), (2, 2)).unwrap()];
    for s in shapes {
        let n = 2;
        // Distinct values 0.01 apart, shuffled: no near ties, so a 0.001 step keeps every argmax.
        let mut x: Vec<f32> = (0..n * s.in_len()).map(|i| i as f32 * 0.01).collect();
        gpu_cnn::rng::Rng::new(7).shuffle(&mut x);
        let r = random_vec(n * s.out_len(), 8);
        let forward = |x: &[f32]| {
            let (mut y, mut am) = (vec![0.0; n * s.out_len()], vec![0u32; n * s.out_len()]);
            cpu.maxpool_forward(&x.to_vec(), &mut y, &mut am, &s, n);
            dot(&y, &r)
        };
        let (mut y, mut am) = (vec![0.0; n * s.out_len()], vec![0u32; n * s.out_len()]);
        cpu.maxpool_forward(&x, &mut y, &mut am, &s, n);
        let mut dx = vec![1.0; n * s.in_len()];
        cpu.maxpool_backward(&r, &am, &mut dx, &s, n);
        assert_close("maxpool dx", &dx, &numeric_grad(&x, 0.001, forward), 1e-3, 1e-3);
    }
}

#[test]
fn softmax_xent_gradient_matches_finite_differences() {
    let cpu = CpuBackend::new();
    let (n, classes) = (4, 10);
    let logits: Vec<f32> = random_vec(n * classes, 9).iter().map(|v| v * 3.0).collect();
    let labels: Vec<u32> = vec![0, 9, 3, 3];
    let loss = |z: &[f32]| {
        let (mut g, mut m) = (vec![0.0; n * classes], vec![0.0; 3]);
        cpu.softmax_xent(&z.to_vec(), &labels, &mut g, &mut m, n, classes);
        m[0] as f64 / n as f64 // mean loss, whose gradient softmax_xent returns
    };
    let (mut g, mut m) = (vec![0.0; n * classes], vec![0.0; 3]);
    cpu.softmax_xent(&logits, &labels, &mut g, &mut m, n, classes);
    assert_eq!(m[2], n as f32);
    // Step 1e-2 on a smooth function: truncation error O(h^2) ~ 1e-4, f32 loss rounding
    // ~1e-6 / 2e-2 = 5e-5; tolerance 5e-4.
    assert_close("softmax_xent", &g, &numeric_grad(&logits, 0.01, loss), 5e-4, 1e-2);
    // Huge logits must not overflow: log-softmax goes through the row max.
    let big = vec![1000.0, 0.0, -1000.0];
    let (mut g, mut m) = (vec![0.0; 3], vec![0.0; 3]);
    cpu.softmax_xent(&big, &vec![0], &mut g, &mut m, 1, 3);
    assert!(m[0].is_finite() && m[0].abs() < 1e-6 && m[1] == 1.0, "{m:?}");
}

#[test]
fn weighted_softmax_xent_is_keras_sum_over_batch_size() {
    let cpu = CpuBackend::new();
    let (n, classes) = (5, 3);
    let logits: Vec<f32> = random_vec(n * classes, 21).iter().map(|v| v * 3.0).collect();
    let labels: Vec<u32> = vec![0, 2, 2, 1, 0];
    let weights = vec![0.5f32, 2.0, 1.25];
    // Hand-computed in f64: loss = sum_i w[y_i] * -log softmax_i[y_i] / n.
    let want_loss: f64 = (0..n)
        .map(|i| {
            let z: Vec<f64> = logits[i * classes..][..classes].iter().map(|&v| v as f64).collect();
            let lse = z.iter().map(|v| v.exp()).sum::<f64>().ln();
            weights[labels[i] as usize] as f64 * (lse - z[labels[i] as usize])
        })
        .sum::<f64>()
        / n as f64;
    let loss = |z: &[f32]| {
        let (mut g, mut m) = (vec![0.0; n * classes], vec![0.0; 3]);
        cpu.softmax_xent_weighted(&z.to_vec(), &labels, &weights, &mut g, &mut m, n, classes);
        m[0] as f64 / n as f64
    };
    let (mut g, mut m) = (vec![0.0; n * classes], vec![0.0; 3]);
    cpu.softmax_xent_weighted(&logits, &labels, &weights, &mut g, &mut m, n, classes);
    // f32 sums of 5 terms of size ~5: 1e-5 relative.
    assert!((m[0] as f64 / n as f64 - want_loss).abs() < 1e-5 * want_loss, "loss {} vs {want_loss}", m[0] / n as f32);
    // Accuracy and count are not weighted.
    assert_eq!(m[2], n as f32);
    let hits = (0..n).filter(|&i| {
        let z = &logits[i * classes..][..classes];
        let argmax = (0..classes).fold(0, |a, c| if z[c] > z[a] { c } else { a });
        argmax == labels[i] as usize
    });
    assert_eq!(m[1], hits.count() as f32);
    // Same finite-difference tolerance as the unweighted check (weights <= 2 scale both sides).
    assert_close("weighted softmax_xent", &g, &numeric_grad(&logits, 0.01, loss), 1e-3, 1e-2);
    // Weights of exactly 1.0 reproduce the unweighted kernel bit for bit.
    let (mut g1, mut m1) = (vec![0.0; n * classes], vec![0.0; 3]);
    cpu.softmax_xent_weighted(&logits, &labels, &vec![1.0; classes], &mut g1, &mut m1, n, classes);
    let (mut g0, mut m0) = (vec![0.0; n * classes], vec![0.0; 3]);
    cpu.softmax_xent(&logits, &labels, &mut g0, &mut m0, n, classes);
    assert_eq!((g1, m1), (g0, m0));
}

/// Whole networks through the layer framework: the seed model's layers, and the conv kinds
/// (no bias, dilation, DepthwiseConv2D, SeparableConv2D) with every element-wise `activation=`
/// (fused ReLU masks reaching conv, depthwise and separable input gradients). Kinked functions
/// (relu, leaky_relu) sit where the signal is large: after the last layers the signal is small
/// and the biases start at 0, so a whole layer's inputs would sit at the kink, where a central
/// difference of 1e-3 straddles it.
const GRADIENT_ARCHS: &[&str] = &[
    "conv2d 4 3 relu\nmaxpool 2\nconv2d 3 2 relu padding=same\nflatten\ndense 6 relu\ndense 3 softmax",
    "Conv2D(4, 3, padding=\"same\", use_bias=False, activation=\"relu\") DepthwiseConv2D(3, padding=\"same\", depth_multiplier=2, activation=\"relu\")\n\
     SeparableConv2D(4, 2, activation=\"leaky_relu\") Conv2D(3, 2, dilation_rate=2, activation=\"tanh\")\n\
     SeparableConv2D(3, 3, strides=2, padding=\"same\", depth_multiplier=2, use_bias=False, activation=\"swish\")\n\
     Flatten Dense(5, activation=\"elu\") Dense(4, activation=\"gelu\") Dense(6, activation=\"sigmoid\") Dense(3, softmax)",
];

#[test]
fn whole_network_gradients_match_finite_differences() {
    use gpu_cnn::model::{parse_arch, Model};
    use gpu_cnn::network::Network;
    for arch in GRADIENT_ARCHS {
        let layers = parse_arch(arch).unwrap();
        let model = Model::new(&layers, (7, 7, 2)).unwrap();
        let n = 5;
        let mut rng = gpu_cnn::rng::Rng::new(99);
        let images: Vec<u8> = (0..n * 98).map(|_| rng.below(256) as u8).collect();
        let labels: Vec<u8> = vec![0, 1, 2, 1, 0];
        let cpu = CpuBackend::new();
        let data = cpu.upload_images(&images, &labels, 98).unwrap();
        let mut net = Network::new(cpu, model, n, 3).unwrap();
        let weights = net.weights().unwrap();
        let idx: Vec<u32> = (0..n as u32).collect();
        net.train_step(&data, &idx).unwrap();
        let grads = net.gradients().unwrap();
        // Check 6 coordinates of every parameter tensor: loss through the whole net in f32, step
        // 1e-3; ReLU kinks and pool switches are possible but rare at this step size, and the
        // f32 loss rounding (~3e-7 relative on a loss of ~1) over 2e-3 gives ~3e-4 error.
        for (t, g) in grads.iter().enumerate() {
            for j in (0..g.data.len()).step_by((g.data.len() / 6).max(1)).take(6) {
                let mut loss_at = |delta: f32| {
                    let mut w = weights.clone();
                    w[t].data[j] += delta;
                    net.load_state(&w, false).unwrap();
                    net.evaluate(&data, n).unwrap().loss
                };
                let numeric = (loss_at(1e-3) - loss_at(-1e-3)) / 2e-3;
                let a = g.data[j] as f64;
                assert!((a - numeric).abs() <= 1e-3 + 2e-2 * numeric.abs(), "{arch}: {}[{j}]: analytic {a} vs numeric {numeric}", g.name);
            }
        }
    }
}
