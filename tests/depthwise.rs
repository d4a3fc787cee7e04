//! DepthwiseConv2D, dilated Conv2D, Conv2D without bias and SeparableConv2D (depthwise + 1x1
//! conv), on both backends, against plain loops written as the textbook sums in f64
//! (tests/cpu_oracle.rs's idea) and against finite differences.
//!
//! Tolerance against the plain loops: |got - want| <= rtol * mag, mag the sum of |terms| the
//! output adds up. An f32 sum of n terms errs by about sqrt(n) * u * mag for random signs
//! (u = 2^-24), at most n * u * mag in any order. Our largest sums are filter gradients over a
//! batch of 7 13x13 maps, n <= 1,183: typically 2.1e-6 * mag. RTOL = 1e-5 allows ~5x that, for
//! any summation order (the GPU adds split partial sums, the CPU image ranges). A wrong or
//! dropped term errs by about mag / n >= 8e-4 * mag, 80 times the tolerance.

#[macro_use]
mod common;
use common::{assert_close, assert_same_bits, max_abs, random_vec};
use gpu_cnn::backend::cpu::conv::{backward_filter_algo, backward_input_algo, forward_algo, ConvAlgo};
use gpu_cnn::backend::cpu::{conv, CpuBackend};
use gpu_cnn::backend::{Backend, ConvShape, DepthwiseShape};
use gpu_cnn::model::{conv_shape, Padding};

const RTOL: f64 = 1e-5;

/// Keras's geometry for a conv with `dilation_rate`: the kernel spans (k - 1) * d + 1 pixels,
/// and "same"/"valid" are worked out from that extent (the model's own rule, given the extent).
fn dilated_conv(input: (usize, usize, usize), filters: usize, k: (usize, usize), stride: usize, dilation: (usize, usize), padding: Padding) -> ConvShape {
    let extent = ((k.0 - 1) * dilation.0 + 1, (k.1 - 1) * dilation.1 + 1);
    let s = conv_shape(input, filters, extent, (stride, stride), padding).expect("the kernel fits");
    ConvShape { k_h: k.0, k_w: k.1, dilation_h: dilation.0, dilation_w: dilation.1, ..s }
}

fn depthwise(input: (usize, usize, usize), multiplier: usize, k: (usize, usize), stride: usize, dilation: (usize, usize), padding: Padding) -> DepthwiseShape {
    DepthwiseShape::from_conv(&dilated_conv(input, input.2 * multiplier, k, stride, dilation, padding), multiplier)
}

/// A value with the magnitude of what it sums.
#[derive(Clone, Copy, Default, Debug)]
struct Sum {
    value: f64,
    mag: f64,
}

impl Sum {
    fn add(&mut self, a: f32, b: f32) {
        let t = a as f64 * b as f64;
        self.value += t;
        self.mag += t.abs();
    }
}

#[track_caller]
fn check(what: &str, got: &[f32], want: &[Sum]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, w)) in got.iter().zip(want).enumerate() {
        let tol = RTOL * w.mag + 1e-30;
        assert!((g as f64 - w.value).abs() <= tol, "{what}[{i}]: got {g}, plain loops {} (|terms| sum {}, tolerance {tol})", w.value, w.mag);
    }
}

/// The input pixel (row, column) tap (ky, kx) of output (oy, ox) reads, None in the padding.
fn tap_input(
    o: (usize, usize),
    k: (usize, usize),
    stride: (usize, usize),
    dilation: (usize, usize),
    pad: (usize, usize),
    size: (usize, usize),
) -> Option<(usize, usize)> {
    let iy = (o.0 * stride.0 + k.0 * dilation.0) as isize - pad.0 as isize;
    let ix = (o.1 * stride.1 + k.1 * dilation.1) as isize - pad.1 as isize;
    (iy >= 0 && ix >= 0 && iy < size.0 as isize && ix < size.1 as isize).then_some((iy as usize, ix as usize))
}

/// Calls `f(out, in, kernel)` for every term y[out] += x[in] * w[kernel] of a (dilated) conv.
fn conv_terms(s: &ConvShape, n: usize, mut f: impl FnMut(usize, usize, usize)) {
    for img in 0..n {
        for (oy, ox, ky, kx) in grid4(s.out_h, s.out_w, s.k_h, s.k_w) {
            let Some((iy, ix)) =
                tap_input((oy, ox), (ky, kx), (s.stride_h, s.stride_w), (s.dilation_h, s.dilation_w), (s.pad_top, s.pad_left), (s.in_h, s.in_w))
            else {
                continue;
            };
            for ci in 0..s.in_c {
                for co in 0..s.out_c {
                    let out = img * s.out_len() + (oy * s.out_w + ox) * s.out_c + co;
                    let inp = img * s.in_len() + (iy * s.in_w + ix) * s.in_c + ci;
                    f(out, inp, ((ky * s.k_w + kx) * s.in_c + ci) * s.out_c + co);
                }
            }
        }
    }
}

/// Calls `f(out, in, kernel)` for every term of a depthwise conv: output channel c * M + m
/// reads input channel c through kernel (ky, kx, c, m).
fn depthwise_terms(s: &DepthwiseShape, n: usize, mut f: impl FnMut(usize, usize, usize)) {
    let oc = s.out_c();
    for img in 0..n {
        for (oy, ox, ky, kx) in grid4(s.out_h, s.out_w, s.k_h, s.k_w) {
            let Some((iy, ix)) =
                tap_input((oy, ox), (ky, kx), (s.stride_h, s.stride_w), (s.dilation_h, s.dilation_w), (s.pad_top, s.pad_left), (s.in_h, s.in_w))
            else {
                continue;
            };
            for c in 0..s.channels {
                for m in 0..s.multiplier {
                    let o = c * s.multiplier + m;
                    f(img * s.out_len() + (oy * s.out_w + ox) * oc + o, img * s.in_len() + (iy * s.in_w + ix) * s.channels + c, (ky * s.k_w + kx) * oc + o);
                }
            }
        }
    }
}

/// (a, b, c, d) over 0..a x 0..b x 0..c x 0..d, last fastest.
fn grid4(a: usize, b: usize, c: usize, d: usize) -> impl Iterator<Item = (usize, usize, usize, usize)> {
    (0..a).flat_map(move |i| (0..b).flat_map(move |j| (0..c).flat_map(move |k| (0..d).map(move |l| (i, j, k, l)))))
}

/// Plain-loop y (without bias), dx, dw and db of one op given by its terms.
struct Reference {
    y: Vec<Sum>,
    dx: Vec<Sum>,
    dw: Vec<Sum>,
    db: Vec<Sum>,
}

fn reference(terms: impl Fn(&mut dyn FnMut(usize, usize, usize)), x: &[f32], w: &[f32], dy: &[f32], out_c: usize) -> Reference {
    let mut r =
        Reference { y: vec![Sum::default(); dy.len()], dx: vec![Sum::default(); x.len()], dw: vec![Sum::default(); w.len()], db: vec![Sum::default(); out_c] };
    terms(&mut |out, inp, ker| {
        r.y[out].add(x[inp], w[ker]);
        r.dx[inp].add(dy[out], w[ker]);
        r.dw[ker].add(x[inp], dy[out]);
    });
    for (i, &d) in dy.iter().enumerate() {
        r.db[i % out_c].add(d, 1.0);
    }
    r
}

/// `want` + bias, then ReLU if `relu`.
fn with_bias(want: &[Sum], b: &[f32], relu: bool) -> Vec<Sum> {
    want.iter()
        .enumerate()
        .map(|(i, s)| {
            let bias = b[i % b.len()] as f64;
            let value = s.value + bias;
            Sum { value: if relu { value.max(0.0) } else { value }, mag: s.mag + bias.abs() }
        })
        .collect()
}

fn up<B: Backend>(b: &B, data: &[f32]) -> B::Tensor {
    let mut t = b.tensor(data.len()).unwrap();
    b.upload(&mut t, data);
    t
}

fn down<B: Backend>(b: &B, t: &B::Tensor) -> Vec<f32> {
    b.download(t).unwrap()
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum()
}

/// Central differences of `loss` with respect to every element of `x`.
fn numeric_grad(x: &[f32], h: f32, mut loss: impl FnMut(&[f32]) -> f64) -> Vec<f64> {
    let mut x = x.to_vec();
    (0..x.len())
        .map(|i| {
            let keep = x[i];
            x[i] = keep + h;
            let up = loss(&x);
            x[i] = keep - h;
            let down = loss(&x);
            x[i] = keep;
            (up - down) / (2.0 * h as f64)
        })
        .collect()
}

/// The awkward depthwise shapes both backends run: batch 7, 13x13, 3 and 5 channels,
/// multipliers 1 and 2, stride 2, same and valid, dilation 2 (and (2, 3) on a 3x2 kernel).
fn awkward_depthwise_shapes() -> Vec<DepthwiseShape> {
    vec![
        depthwise((13, 13, 3), 1, (3, 3), 1, (2, 2), Padding::Same),
        depthwise((13, 13, 5), 2, (3, 3), 2, (1, 1), Padding::Valid),
        depthwise((13, 13, 5), 2, (3, 2), 1, (2, 3), Padding::Valid),
        depthwise((13, 13, 3), 2, (5, 5), 2, (1, 1), Padding::Same),
    ]
}

/// Dilated convs on awkward shapes (Keras allows dilation only with stride 1).
fn awkward_dilated_convs() -> Vec<ConvShape> {
    vec![dilated_conv((13, 13, 3), 5, (3, 3), 1, (2, 2), Padding::Same), dilated_conv((13, 13, 5), 7, (3, 2), 1, (2, 3), Padding::Valid)]
}

#[test]
fn dilation_follows_keras_geometry() {
    // 13 px, 3x3 kernel, dilation 2: extent 5, "same" keeps 13 with 2 pixels of padding a side,
    // "valid" gives 13 - 5 + 1 = 9.
    let same = dilated_conv((13, 13, 3), 4, (3, 3), 1, (2, 2), Padding::Same);
    assert_eq!((same.out_h, same.out_w, same.pad_top, same.pad_left, same.k_h, same.dilation_h), (13, 13, 2, 2, 3, 2));
    let valid = dilated_conv((13, 13, 3), 4, (3, 3), 1, (2, 2), Padding::Valid);
    assert_eq!((valid.out_h, valid.out_w, valid.pad_top), (9, 9, 0));
    assert_eq!(valid.kernel_len(), 3 * 3 * 3 * 4, "dilation spreads the taps, it adds no weights");
}

#[test]
fn dilated_conv_backward_matches_finite_differences() {
    // L = sum(y * r) is linear in each argument: the central difference is exact but for f32
    // rounding of sums of O(50) terms of size O(1), hence 2e-3 absolute (gradient_check.rs).
    let cpu = CpuBackend::new();
    let n = 2;
    let shapes = [dilated_conv((7, 8, 2), 3, (3, 3), 1, (2, 2), Padding::Valid), dilated_conv((7, 6, 3), 2, (2, 3), 1, (3, 2), Padding::Same)];
    for (k, s) in shapes.iter().enumerate() {
        let x = random_vec(n * s.in_len(), 10 + k as u64);
        let w = random_vec(s.kernel_len(), 20 + k as u64);
        let b = random_vec(s.out_c, 30 + k as u64);
        let r = random_vec(n * s.out_len(), 40 + k as u64);
        let forward = |x: &[f32], w: &[f32], b: Option<&[f32]>| {
            let mut y = vec![0.0; n * s.out_len()];
            cpu.conv2d_forward(&x.to_vec(), &w.to_vec(), b.map(|b| b.to_vec()).as_ref(), &mut y, s, n, false);
            dot(&y, &r)
        };
        let mut dx = vec![0.0; n * s.in_len()];
        cpu.conv2d_backward_input(&r, &w, &mut dx, s, n);
        let (mut dw, mut db) = (vec![0.0; s.kernel_len()], vec![0.0; s.out_c]);
        cpu.conv2d_backward_filter(&x, &r, &mut dw, Some(&mut db), s, n);
        assert_close("dilated conv dx", &dx, &numeric_grad(&x, 0.01, |x| forward(x, &w, Some(&b[..]))), 2e-3, 1e-3);
        assert_close("dilated conv dw", &dw, &numeric_grad(&w, 0.01, |w| forward(&x, w, Some(&b[..]))), 2e-3, 1e-3);
        assert_close("dilated conv db", &db, &numeric_grad(&b, 0.01, |b| forward(&x, &w, Some(b))), 2e-3, 1e-3);
        // use_bias=False: the same kernel gradient, now of a loss without bias.
        let mut dw_no_bias = vec![0.0; s.kernel_len()];
        cpu.conv2d_backward_filter(&x, &r, &mut dw_no_bias, None, s, n);
        assert_close("conv dw without bias", &dw_no_bias, &numeric_grad(&w, 0.01, |w| forward(&x, w, None)), 2e-3, 1e-3);
    }
}

#[test]
fn depthwise_backward_matches_finite_differences() {
    // As above: a linear loss, sums of at most 25 * 2 terms of size O(1): 2e-3 absolute.
    let cpu = CpuBackend::new();
    let n = 2;
    let shapes = [
        depthwise((6, 7, 3), 1, (3, 3), 1, (1, 1), Padding::Valid),
        depthwise((7, 6, 2), 2, (3, 2), 2, (1, 1), Padding::Same),
        depthwise((9, 8, 2), 3, (3, 3), 1, (2, 2), Padding::Same),
    ];
    for (k, s) in shapes.iter().enumerate() {
        let x = random_vec(n * s.in_len(), 50 + k as u64);
        let w = random_vec(s.kernel_len(), 60 + k as u64);
        let b = random_vec(s.out_c(), 70 + k as u64);
        let r = random_vec(n * s.out_len(), 80 + k as u64);
        let forward = |x: &[f32], w: &[f32], b: &[f32]| {
            let mut y = vec![0.0; n * s.out_len()];
            cpu.depthwise_conv2d_forward(&x.to_vec(), &w.to_vec(), Some(&b.to_vec()), &mut y, s, n, false);
            dot(&y, &r)
        };
        let mut dx = vec![0.0; n * s.in_len()];
        cpu.depthwise_conv2d_backward_input(&r, &w, &mut dx, s, n);
        let (mut dw, mut db) = (vec![0.0; s.kernel_len()], vec![0.0; s.out_c()]);
        cpu.depthwise_conv2d_backward_filter(&x, &r, &mut dw, Some(&mut db), s, n);
        assert_close("depthwise dx", &dx, &numeric_grad(&x, 0.01, |x| forward(x, &w, &b)), 2e-3, 1e-3);
        assert_close("depthwise dw", &dw, &numeric_grad(&w, 0.01, |w| forward(&x, w, &b)), 2e-3, 1e-3);
        assert_close("depthwise db", &db, &numeric_grad(&b, 0.01, |b| forward(&x, &w, b)), 2e-3, 1e-3);
    }
}

#[test]
fn cpu_dilated_conv_runs_im2col_and_matches_plain_loops() {
    let cpu = CpuBackend::new();
    let n = 3;
    // Undilated, the second would run Winograd and the third the direct kernel (with fast FMA):
    // dilated, only im2col + GEMM can, and the chooser must pick it.
    let shapes = [
        dilated_conv((9, 10, 3), 4, (3, 3), 1, (2, 2), Padding::Valid),
        dilated_conv((12, 12, 16), 16, (3, 3), 1, (2, 2), Padding::Same),
        dilated_conv((8, 7, 2), 8, (2, 3), 1, (3, 1), Padding::Same),
    ];
    for (k, s) in shapes.iter().enumerate() {
        for algo in [ConvAlgo::Direct, ConvAlgo::Winograd] {
            assert!(!algo.can_run(s), "{algo:?} claims a dilated conv");
        }
        assert_eq!((forward_algo(s), backward_input_algo(s), backward_filter_algo(s)), (ConvAlgo::Im2colGemm, ConvAlgo::Im2colGemm, ConvAlgo::Im2colGemm));
        let x = random_vec(n * s.in_len(), 100 + k as u64);
        let w = random_vec(s.kernel_len(), 110 + k as u64);
        let b = random_vec(s.out_c, 120 + k as u64);
        let dy = random_vec(n * s.out_len(), 130 + k as u64);
        let want = reference(|f| conv_terms(s, n, f), &x, &w, &dy, s.out_c);
        let mut y = vec![0.0; n * s.out_len()];
        cpu.conv2d_forward(&x, &w, Some(&b), &mut y, s, n, true);
        check("dilated conv forward + bias + relu", &y, &with_bias(&want.y, &b, true));
        cpu.conv2d_forward(&x, &w, None, &mut y, s, n, false);
        check("dilated conv forward without bias", &y, &want.y);
        let mut dx = vec![0.0; n * s.in_len()];
        cpu.conv2d_backward_input(&dy, &w, &mut dx, s, n);
        check("dilated conv backward input", &dx, &want.dx);
        let (mut dw, mut db) = (vec![0.0; s.kernel_len()], vec![0.0; s.out_c]);
        cpu.conv2d_backward_filter(&x, &dy, &mut dw, Some(&mut db), s, n);
        check("dilated conv backward filter", &dw, &want.dw);
        check("dilated conv bias gradient", &db, &want.db);
        let (mut kernel, mut partials) = (Vec::new(), Vec::new());
        conv::forward_with(ConvAlgo::Im2colGemm, &x, &w, &b, &mut y, s, n, false, &mut kernel);
        check("im2col forward", &y, &with_bias(&want.y, &b, false));
        conv::backward_filter_with(ConvAlgo::Im2colGemm, &x, &dy, &mut dw, &mut db, s, n, &mut partials, &mut kernel);
        check("im2col backward filter", &dw, &want.dw);
    }
}

/// Forward (with bias and ReLU, and without bias), input gradient and filter gradient (with
/// and without bias) of every awkward depthwise shape on `b`, in that order.
fn depthwise_run<B: Backend>(b: &B, s: &DepthwiseShape, n: usize, seed: u64) -> Vec<Vec<f32>> {
    let x = up(b, &random_vec(n * s.in_len(), seed));
    let w = up(b, &random_vec(s.kernel_len(), seed + 1));
    let bias = up(b, &random_vec(s.out_c(), seed + 2));
    let dy = up(b, &random_vec(n * s.out_len(), seed + 3));
    let mut y = b.tensor(n * s.out_len()).unwrap();
    b.depthwise_conv2d_forward(&x, &w, Some(&bias), &mut y, s, n, true);
    let y_bias = down(b, &y);
    b.depthwise_conv2d_forward(&x, &w, None, &mut y, s, n, false);
    let mut dx = b.tensor(n * s.in_len()).unwrap();
    b.depthwise_conv2d_backward_input(&dy, &w, &mut dx, s, n);
    let (mut dw, mut db) = (b.tensor(s.kernel_len()).unwrap(), up(b, &vec![7.0; s.out_c()]));
    b.depthwise_conv2d_backward_filter(&x, &dy, &mut dw, None, s, n);
    let (dw_no_bias, db_untouched) = (down(b, &dw), down(b, &db));
    b.depthwise_conv2d_backward_filter(&x, &dy, &mut dw, Some(&mut db), s, n);
    vec![y_bias, down(b, &y), down(b, &dx), down(b, &dw), down(b, &db), dw_no_bias, db_untouched]
}

backend_test! {
    fn depthwise_matches_plain_loops_on_awkward_shapes<B>(b: &B) {
        let n = 7;
        for (k, s) in awkward_depthwise_shapes().iter().enumerate() {
            let seed = 200 + 10 * k as u64;
            let [y_bias, y, dx, dw, db, dw_no_bias, db_untouched]: [Vec<f32>; 7] = depthwise_run(b, s, n, seed).try_into().unwrap();
            let (x, w, bias, dy) = (random_vec(n * s.in_len(), seed), random_vec(s.kernel_len(), seed + 1), random_vec(s.out_c(), seed + 2), random_vec(n * s.out_len(), seed + 3));
            let want = reference(|f| depthwise_terms(s, n, f), &x, &w, &dy, s.out_c());
            let what = |op: &str| format!("{s:?} {op}");
            check(&what("forward + bias + relu"), &y_bias, &with_bias(&want.y, &bias, true));
            check(&what("forward without bias"), &y, &want.y);
            check(&what("backward input"), &dx, &want.dx);
            check(&what("backward filter"), &dw, &want.dw);
            check(&what("bias gradient"), &db, &want.db);
            // Without a bias: the kernel gradient's bits do not change and db is not written.
            assert_same_bits(&what("backward filter without bias"), &dw_no_bias, &dw);
            assert!(db_untouched.iter().all(|&v| v == 7.0), "{}: a bias gradient was written without a bias", what(""));
        }
    }
}

/// y, dx, dw, db of a conv with bias (forward with ReLU) and the dw and (untouched) db of the
/// same conv without bias.
fn conv_run<B: Backend>(b: &B, s: &ConvShape, n: usize, seed: u64) -> Vec<Vec<f32>> {
    let x = up(b, &random_vec(n * s.in_len(), seed));
    let w = up(b, &random_vec(s.kernel_len(), seed + 1));
    let bias = up(b, &random_vec(s.out_c, seed + 2));
    let dy = up(b, &random_vec(n * s.out_len(), seed + 3));
    let mut y = b.tensor(n * s.out_len()).unwrap();
    b.conv2d_forward(&x, &w, Some(&bias), &mut y, s, n, true);
    let y_bias = down(b, &y);
    b.conv2d_forward(&x, &w, None, &mut y, s, n, false);
    let mut dx = b.tensor(n * s.in_len()).unwrap();
    b.conv2d_backward_input(&dy, &w, &mut dx, s, n);
    let (mut dw, mut db) = (b.tensor(s.kernel_len()).unwrap(), up(b, &vec![7.0; s.out_c]));
    b.conv2d_backward_filter(&x, &dy, &mut dw, None, s, n);
    let (dw_no_bias, db_untouched) = (down(b, &dw), down(b, &db));
    b.conv2d_backward_filter(&x, &dy, &mut dw, Some(&mut db), s, n);
    vec![y_bias, down(b, &y), down(b, &dx), down(b, &dw), down(b, &db), dw_no_bias, db_untouched]
}

backend_test! {
    fn dilated_and_unbiased_conv_match_plain_loops<B>(b: &B) {
        let n = 7;
        // The dilated shapes, and one plain strided conv for use_bias=False on the usual path.
        let mut shapes = awkward_dilated_convs();
        shapes.push(dilated_conv((13, 13, 5), 8, (3, 3), 2, (1, 1), Padding::Same));
        for (k, s) in shapes.iter().enumerate() {
            let seed = 300 + 10 * k as u64;
            let [y_bias, y, dx, dw, db, dw_no_bias, db_untouched]: [Vec<f32>; 7] = conv_run(b, s, n, seed).try_into().unwrap();
            let (x, w, bias, dy) = (random_vec(n * s.in_len(), seed), random_vec(s.kernel_len(), seed + 1), random_vec(s.out_c, seed + 2), random_vec(n * s.out_len(), seed + 3));
            let want = reference(|f| conv_terms(s, n, f), &x, &w, &dy, s.out_c);
            let what = |op: &str| format!("{s:?} {op}");
            check(&what("forward + bias + relu"), &y_bias, &with_bias(&want.y, &bias, true));
            check(&what("forward without bias"), &y, &want.y);
            check(&what("backward input"), &dx, &want.dx);
            check(&what("backward filter"), &dw, &want.dw);
            check(&what("bias gradient"), &db, &want.db);
            assert_same_bits(&what("backward filter without bias"), &dw_no_bias, &dw);
            assert!(db_untouched.iter().all(|&v| v == 7.0), "{}: a bias gradient was written without a bias", what(""));
        }
    }
}

backend_test! {
    /// SeparableConv2D as a layer runs it: depthwise (no bias) into a scratch tensor t, then a
    /// 1x1 conv with bias; backward: dt = the 1x1 conv's input gradient, then the depthwise
    /// gradients from dt. Checked against the separable conv written as one direct loop.
    fn separable_conv_composes_depthwise_and_pointwise<B>(b: &B) {
        let (n, filters) = (7, 4);
        let s = depthwise((13, 13, 3), 2, (3, 3), 2, (1, 1), Padding::Same);
        let p = conv_shape((s.out_h, s.out_w, s.out_c()), filters, (1, 1), (1, 1), Padding::Valid).unwrap();
        let (x, dw_k, pw_k, bias, dy) =
            (random_vec(n * s.in_len(), 1), random_vec(s.kernel_len(), 2), random_vec(p.kernel_len(), 3), random_vec(filters, 4), random_vec(n * p.out_len(), 5));
        let (xt, dwt, pwt, bt, dyt) = (up(b, &x), up(b, &dw_k), up(b, &pw_k), up(b, &bias), up(b, &dy));
        let (mut t, mut y) = (b.tensor(n * s.out_len()).unwrap(), b.tensor(n * p.out_len()).unwrap());
        b.depthwise_conv2d_forward(&xt, &dwt, None, &mut t, &s, n, false);
        b.conv2d_forward(&t, &pwt, Some(&bt), &mut y, &p, n, false);
        let (mut dt, mut dx) = (b.tensor(n * s.out_len()).unwrap(), b.tensor(n * s.in_len()).unwrap());
        let (mut g_dw, mut g_pw, mut g_b) = (b.tensor(s.kernel_len()).unwrap(), b.tensor(p.kernel_len()).unwrap(), b.tensor(filters).unwrap());
        b.conv2d_backward_filter(&t, &dyt, &mut g_pw, Some(&mut g_b), &p, n);
        b.conv2d_backward_input(&dyt, &pwt, &mut dt, &p, n);
        b.depthwise_conv2d_backward_filter(&xt, &dt, &mut g_dw, None, &s, n);
        b.depthwise_conv2d_backward_input(&dt, &dwt, &mut dx, &s, n);

        // y = sum over (tap, c, m) of x * depthwise_kernel[tap, c, m] * pointwise_kernel[c*M+m, f] + b:
        // one loop, no intermediate tensor.
        let oc = s.out_c();
        let mut y_want = vec![Sum::default(); n * p.out_len()];
        let mut dx_want = vec![Sum::default(); n * s.in_len()];
        let mut g_dw_want = vec![Sum::default(); s.kernel_len()];
        depthwise_terms(&s, n, |out, inp, ker| {
            let (pixel, o) = (out / oc, out % oc);
            for f in 0..filters {
                let (k, at) = (pw_k[o * filters + f] as f64, pixel * filters + f);
                let g = dy[at] as f64;
                for (sum, t) in [(&mut y_want[at], x[inp] as f64 * dw_k[ker] as f64 * k), (&mut dx_want[inp], g * dw_k[ker] as f64 * k), (&mut g_dw_want[ker], g * x[inp] as f64 * k)] {
                    sum.value += t;
                    sum.mag += t.abs();
                }
            }
        });
        let y_want = with_bias(&y_want, &bias, false);
        // dpointwise[o, f] = sum over pixels of t[o] * dy[f], t from the depthwise plain loops.
        let t_want = reference(|f| depthwise_terms(&s, n, f), &x, &dw_k, &vec![0.0; n * s.out_len()], oc).y;
        let mut g_pw_want = vec![Sum::default(); p.kernel_len()];
        for pixel in 0..n * s.out_h * s.out_w {
            for o in 0..oc {
                for f in 0..filters {
                    let (tv, g) = (t_want[pixel * oc + o], dy[pixel * filters + f] as f64);
                    g_pw_want[o * filters + f].value += tv.value * g;
                    g_pw_want[o * filters + f].mag += tv.mag * g.abs();
                }
            }
        }
        let g_b_want = reference(|_| {}, &[], &[], &dy, filters).db;
        check("separable forward", &down(b, &y), &y_want);
        check("separable input gradient", &down(b, &dx), &dx_want);
        check("separable depthwise_kernel gradient", &down(b, &g_dw), &g_dw_want);
        check("separable pointwise_kernel gradient", &down(b, &g_pw), &g_pw_want);
        check("separable bias gradient", &down(b, &g_b), &g_b_want);
    }
}

gpu_test! {
    /// The GPU against the CPU directly, twice on the GPU for determinism: depthwise and dilated
    /// conv, forward and backward (the dilated input gradient by both of the GPU's algorithms).
    fn gpu_depthwise_and_dilated_conv_repeat_bit_for_bit_and_match_the_cpu(gpu: &GpuBackend) {
        use gpu_cnn::backend::gpu::ConvInputGradAlgo;
        let cpu = CpuBackend::new();
        let n = 7;
        let compare = |what: String, first: Vec<Vec<f32>>, again: Vec<Vec<f32>>, on_cpu: Vec<Vec<f32>>| {
            for (i, ((g, g2), c)) in first.iter().zip(&again).zip(&on_cpu).enumerate() {
                assert_same_bits(&format!("{what} output {i}, GPU twice"), g2, g);
                // Sums of at most 1,183 products of values in [-1, 1] (|result| <= ~40): both
                // backends err by ~1e-5 at that scale; 1e-5 * max|cpu| + 1e-5 leaves margin
                // and is far below one term's worth (~1e-2).
                let atol = 1e-5 * max_abs(c) as f64 + 1e-5;
                assert_close(&format!("{what} output {i}, GPU vs CPU"), g, c, atol, 1e-5);
            }
        };
        for (k, s) in awkward_depthwise_shapes().iter().enumerate() {
            let seed = 400 + 10 * k as u64;
            compare(format!("depthwise {s:?}"), depthwise_run(gpu, s, n, seed), depthwise_run(gpu, s, n, seed), depthwise_run(&cpu, s, n, seed));
        }
        for algo in [ConvInputGradAlgo::ImplicitGemm, ConvInputGradAlgo::Col2im] {
            gpu.force_conv_input_grad_for_tests(Some(algo));
            for (k, s) in awkward_dilated_convs().iter().enumerate() {
                let seed = 500 + 10 * k as u64;
                compare(format!("dilated conv {algo:?} {s:?}"), conv_run(gpu, s, n, seed), conv_run(gpu, s, n, seed), conv_run(&cpu, s, n, seed));
            }
        }
        gpu.force_conv_input_grad_for_tests(None);
    }
}
