//! The optimised CPU backend against a tiny plain-loop oracle (llm.c's idea): convolution,
//! max-pool and dense layers, forward and backward, written as the textbook sums in f64, on
//! shapes chosen so that every CPU convolution algorithm (direct, Winograd, im2col + GEMM) runs,
//! with odd sizes, padding, strides and partial blocks.
//!
//! Tolerance: each output is compared with |got - want| <= rtol * mag, where mag is the sum of
//! the absolute values of the terms the output adds up (so the bound scales with what was
//! summed, not with the result, which may cancel to near zero). With u = 2^-24 (f32's unit
//! roundoff), an f32 sum of n terms errs by at most n * u * mag in any order, and typically
//! (random signs) by about sqrt(n) * u * mag: for our largest sums (n <= 600 terms) that is
//! 1.5e-6 * mag. RTOL = 2e-6 sits just above that typical worst case; Winograd F(2x2, 3x3)
//! multiplies the magnitudes its transforms add by up to 4 * 2.25 * 9 = 81 (see
//! src/backend/cpu/winograd.rs), of which we allow 10x. Measured: the worst element uses under
//! a quarter of its tolerance (printed with --nocapture). A wrong or dropped tap errs by about
//! mag / n >= 1.6e-3 * mag: hundreds of times the tolerance. Max-pool is exact.

mod common;
use common::{assert_same_bits, random_vec};
use gpu_cnn::backend::cpu::conv::{self, backward_filter_algo, backward_input_algo, forward_algo, ConvAlgo};
use gpu_cnn::backend::cpu::simd::has_fast_fma;
use gpu_cnn::backend::cpu::CpuBackend;
use gpu_cnn::backend::{Backend, BatchNormConfig, BatchNormShape, ConvShape, DenseShape, Passes, PoolShape};

/// Sums done in f32 in a fixed blocked order (GEMM, direct kernels): see the module comment.
const RTOL: f64 = 2e-6;
/// Winograd F(2x2, 3x3): RTOL times 10 of its growth factor's 81 (the worst case is reached
/// only when every term has the same sign and magnitude).
const RTOL_WINOGRAD: f64 = 2e-5;
/// Winograd F(4x4, 3x3): its growth bound is 9,025 (src/backend/cpu/winograd4.rs), and its
/// kernel transform rounds sixths; RTOL times 100 is about 1/45 of that bound and still 8x
/// under the error of a dropped tap.
const RTOL_WINOGRAD4: f64 = 2e-4;

/// A value with the magnitude of what it sums.
#[derive(Clone, Copy, Default)]
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

fn check(what: &str, got: &[f32], want: &[Sum], rtol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let mut worst = 0.0f64;
    for (i, (&g, w)) in got.iter().zip(want).enumerate() {
        let err = (g as f64 - w.value).abs();
        let tol = rtol * w.mag + 1e-30;
        assert!(err <= tol, "{what}[{i}]: got {g}, plain loops {} (|terms| sum {}, tolerance {tol})", w.value, w.mag);
        worst = worst.max(err / tol);
    }
    eprintln!("{what}: worst error {:.3} of the tolerance", worst);
}

/// Calls `f(image, out_index, in_index, kernel_index)` for every term of the convolution:
/// y[out] += x[in] * w[kernel] (taps that fall in the padding are skipped).
fn for_each_term(s: &ConvShape, n: usize, mut f: impl FnMut(usize, usize, usize)) {
    for img in 0..n {
        for oy in 0..s.out_h {
            for ox in 0..s.out_w {
                for ky in 0..s.k_h {
                    for kx in 0..s.k_w {
                        let iy = (oy * s.stride_h + ky) as isize - s.pad_top as isize;
                        let ix = (ox * s.stride_w + kx) as isize - s.pad_left as isize;
                        if iy < 0 || ix < 0 || iy >= s.in_h as isize || ix >= s.in_w as isize {
                            continue;
                        }
                        for ci in 0..s.in_c {
                            for co in 0..s.out_c {
                                let out = img * s.out_len() + (oy * s.out_w + ox) * s.out_c + co;
                                let inp = img * s.in_len() + (iy as usize * s.in_w + ix as usize) * s.in_c + ci;
                                let ker = ((ky * s.k_w + kx) * s.in_c + ci) * s.out_c + co;
                                f(out, inp, ker);
                            }
                        }
                    }
                }
            }
        }
    }
}

struct ConvCase {
    shape: ConvShape,
    /// The algorithms the CPU backend should pick (forward, backward input, backward filter)
    /// on a CPU with fused multiply-add; the test fails if a rule change drops a path from it.
    algos: (ConvAlgo, ConvAlgo, ConvAlgo),
}

#[allow(clippy::too_many_arguments)]
fn conv(in_hw: (usize, usize), in_c: usize, out_c: usize, k: usize, stride: usize, same: bool, algos: (ConvAlgo, ConvAlgo, ConvAlgo)) -> ConvCase {
    let (in_h, in_w) = in_hw;
    let (out_h, out_w, pad_top, pad_left) = if same {
        let (oh, ow) = (in_h.div_ceil(stride), in_w.div_ceil(stride));
        let pad = |o: usize, i: usize| ((o - 1) * stride + k).saturating_sub(i) / 2;
        (oh, ow, pad(oh, in_h), pad(ow, in_w))
    } else {
        ((in_h - k) / stride + 1, (in_w - k) / stride + 1, 0, 0)
    };
    let shape = ConvShape {
        in_h,
        in_w,
        in_c,
        out_h,
        out_w,
        out_c,
        k_h: k,
        k_w: k,
        stride_h: stride,
        stride_w: stride,
        pad_top,
        pad_left,
        dilation_h: 1,
        dilation_w: 1,
    };
    ConvCase { shape, algos }
}

fn conv_cases() -> Vec<ConvCase> {
    use ConvAlgo::*;
    vec![
        // The seed model's first layer, smaller: 3 channels in (direct), 7x9 outputs (a partial
        // block of 6 pixels per row), 32 and 24 channels out (a half vector block).
        conv((9, 11), 3, 32, 3, 1, false, (Direct, Im2colGemm, Direct)),
        conv((9, 11), 3, 24, 3, 1, false, (Direct, Im2colGemm, Direct)),
        // Direct with stride 2 and "same" padding.
        conv((10, 9), 3, 16, 3, 2, true, (Direct, Im2colGemm, Direct)),
        // Winograd F(4x4, 3x3): odd output (7x5: tiles hang off the edge, also in its 9x7
        // input gradient), then "same" padding, then conv2d_2's shape (a 4x4 output, one tile;
        // its 6x6 input gradient needs too many tiles). The filter gradients run F(2x2).
        conv((9, 7), 16, 24, 3, 1, false, (Winograd4x4, Winograd4x4, Winograd)),
        conv((8, 8), 16, 16, 3, 1, true, (Winograd4x4, Winograd4x4, Winograd)),
        conv((6, 6), 16, 16, 3, 1, false, (Winograd4x4, Im2colGemm, Winograd)),
        // Winograd F(2x2, 3x3) forward: a 6x6 output is 9 of its tiles, as many multiplies as
        // four F(4x4) tiles.
        conv((8, 8), 16, 16, 3, 1, false, (Winograd, Winograd4x4, Winograd)),
        // The seed model's conv2d_1 shape: four images per F(4x4) block (three per F(2x2)), so
        // 4 images make a partial block for F(2x2).
        conv((15, 15), 32, 64, 3, 1, false, (Winograd4x4, Winograd4x4, Winograd)),
        // im2col + GEMM: a 5x5 kernel (100 taps), and a stride-2 3x3 with 16 channels.
        conv((9, 8), 4, 8, 5, 1, true, (Im2colGemm, Im2colGemm, Im2colGemm)),
        conv((11, 11), 16, 16, 3, 2, false, (Im2colGemm, Im2colGemm, Im2colGemm)),
    ]
}

fn tolerance(algo: ConvAlgo) -> f64 {
    match algo {
        ConvAlgo::Winograd => RTOL_WINOGRAD,
        ConvAlgo::Winograd4x4 => RTOL_WINOGRAD4,
        _ => RTOL,
    }
}

#[test]
fn convolution_passes_match_plain_loops() {
    let cpu = CpuBackend::new();
    let n = 4;
    for (k, case) in conv_cases().iter().enumerate() {
        let s = &case.shape;
        let algos = (forward_algo(s), backward_input_algo(s), backward_filter_algo(s));
        if has_fast_fma() {
            assert_eq!(algos, case.algos, "{s:?}: the algorithms the test means to cover");
        }
        let x = random_vec(n * s.in_len(), 100 + k as u64);
        let w = random_vec(s.kernel_len(), 200 + k as u64);
        let b = random_vec(s.out_c, 300 + k as u64);
        let dy = random_vec(n * s.out_len(), 400 + k as u64);

        let mut y_want = vec![Sum::default(); n * s.out_len()];
        let mut dx_want = vec![Sum::default(); n * s.in_len()];
        let mut dw_want = vec![Sum::default(); s.kernel_len()];
        for_each_term(s, n, |out, inp, ker| {
            y_want[out].add(x[inp], w[ker]);
            dx_want[inp].add(dy[out], w[ker]);
            dw_want[ker].add(x[inp], dy[out]);
        });
        for (i, y) in y_want.iter_mut().enumerate() {
            y.value += b[i % s.out_c] as f64;
            y.mag += (b[i % s.out_c] as f64).abs();
        }
        let mut db_want = vec![Sum::default(); s.out_c];
        for (i, &d) in dy.iter().enumerate() {
            db_want[i % s.out_c].add(d, 1.0);
        }

        let up = |data: &[f32]| {
            let mut t = cpu.tensor(data.len()).unwrap();
            cpu.upload(&mut t, data);
            t
        };
        // Through the backend (the algorithm it picks).
        let (xt, wt, bt, dyt) = (up(&x), up(&w), up(&b), up(&dy));
        let mut y = cpu.tensor(n * s.out_len()).unwrap();
        cpu.conv2d_forward(&xt, &wt, Some(&bt), &mut y, s, n, false);
        check(&format!("conv {k} {:?} forward", algos.0), &y, &y_want, tolerance(algos.0));
        let mut dx = cpu.tensor(n * s.in_len()).unwrap();
        cpu.conv2d_backward_input(&dyt, &wt, &mut dx, s, n);
        check(&format!("conv {k} {:?} backward input", algos.1), &dx, &dx_want, tolerance(algos.1));
        let (mut dw, mut db) = (cpu.tensor(s.kernel_len()).unwrap(), cpu.tensor(s.out_c).unwrap());
        cpu.conv2d_backward_filter(&xt, &dyt, &mut dw, Some(&mut db), s, n);
        check(&format!("conv {k} {:?} backward filter", algos.2), &dw, &dw_want, tolerance(algos.2));
        check(&format!("conv {k} bias gradient"), &db, &db_want, RTOL);

        // Every algorithm that can run the shape, picked or not.
        let relu_want: Vec<Sum> = y_want.iter().map(|v| Sum { value: v.value.max(0.0), mag: v.mag }).collect();
        let (mut kernel, mut partials) = (Vec::new(), Vec::new());
        for algo in ConvAlgo::ALL.into_iter().filter(|a| a.can_run(s)) {
            conv::forward_with(algo, &x, &w, &b, &mut y, s, n, true, &mut kernel);
            check(&format!("conv {k} {algo:?} forward + relu"), &y, &relu_want, tolerance(algo));
            if algo.can_run_input_gradient(s) {
                conv::backward_input_with(algo, &dy, &w, &mut dx, s, n, &mut kernel);
                check(&format!("conv {k} {algo:?} backward input"), &dx, &dx_want, tolerance(algo));
            }
            if algo.can_run_filter_gradient(s) {
                conv::backward_filter_with(algo, &x, &dy, &mut dw, &mut db, s, n, &mut partials, &mut kernel);
                check(&format!("conv {k} {algo:?} backward filter"), &dw, &dw_want, tolerance(algo));
                check(&format!("conv {k} {algo:?} bias gradient"), &db, &db_want, RTOL);
            }
        }
    }
}

/// A conv whose whole input patch is zero gives exactly its bias, and an input-gradient
/// position that only zero gradients reach gives exactly zero, by every algorithm: a plain sum
/// of zero products is exact. Winograd's transforms left about 1e-9 there, which ReLU and
/// max-pool took for signal (the CPU's first-step gradients on Fashion-MNIST, whose
/// backgrounds are zero, differed from TensorFlow's and the GPU's by up to a third).
#[test]
fn zero_patches_give_exactly_the_bias() {
    let n = 2;
    for (k, case) in conv_cases().iter().enumerate() {
        let s = &case.shape;
        // Random values with every image's left half zero, and zero pixels scattered elsewhere.
        let with_zeros = |len: usize, (h, w, c): (usize, usize, usize), seed: u64| {
            let mut v = random_vec(len, seed);
            for (p, pixel) in v.chunks_mut(c).enumerate() {
                let (y, x) = (p / w % h, p % w);
                if x < w / 2 || (y * 7 + x * 3) % 5 == 0 {
                    pixel.fill(0.0);
                }
            }
            v
        };
        let x = with_zeros(n * s.in_len(), (s.in_h, s.in_w, s.in_c), 600 + k as u64);
        let dy = with_zeros(n * s.out_len(), (s.out_h, s.out_w, s.out_c), 700 + k as u64);
        let w = random_vec(s.kernel_len(), 800 + k as u64);
        let b = random_vec(s.out_c, 900 + k as u64);
        // The outputs only zero inputs reach, and the input positions only zero gradients reach.
        let (mut y_zero, mut dx_zero) = (vec![true; n * s.out_len()], vec![true; n * s.in_len()]);
        for_each_term(s, n, |out, inp, _| {
            y_zero[out] &= x[inp] == 0.0;
            dx_zero[inp] &= dy[out] == 0.0;
        });
        assert!(y_zero.iter().any(|&z| z) && y_zero.iter().any(|&z| !z), "conv {k}: the case must have zero patches and others");
        let (mut y, mut dx) = (vec![0.0; n * s.out_len()], vec![0.0; n * s.in_len()]);
        let mut kernel = Vec::new();
        for algo in ConvAlgo::ALL.into_iter().filter(|a| a.can_run(s)) {
            for relu in [false, true] {
                conv::forward_with(algo, &x, &w, &b, &mut y, s, n, relu, &mut kernel);
                for (i, _) in y_zero.iter().enumerate().filter(|(_, &z)| z) {
                    let bias = b[i % s.out_c];
                    let want = if relu { bias.max(0.0) } else { bias };
                    assert_eq!(y[i], want, "conv {k} {algo:?} (relu {relu}): output {i} of a zero patch");
                }
            }
            if algo.can_run_input_gradient(s) {
                conv::backward_input_with(algo, &dy, &w, &mut dx, s, n, &mut kernel);
                for (i, _) in dx_zero.iter().enumerate().filter(|(_, &z)| z) {
                    assert_eq!(dx[i], 0.0, "conv {k} {algo:?}: input gradient {i} reached only by zeros");
                }
            }
        }
    }
}

/// The forward pass and input gradient of an image do not depend on the batch around it: the
/// passes split a batch into blocks by the thread count and the cache, so a different batch
/// size (or machine) must still give the same bits.
#[test]
fn convolution_results_do_not_depend_on_the_batch() {
    let n = 9;
    for (k, case) in conv_cases().iter().enumerate() {
        let s = &case.shape;
        let x = random_vec(n * s.in_len(), 700 + k as u64);
        let w = random_vec(s.kernel_len(), 800 + k as u64);
        let b = random_vec(s.out_c, 900 + k as u64);
        let dy = random_vec(n * s.out_len(), 1000 + k as u64);
        let mut kernel = Vec::new();
        for algo in ConvAlgo::ALL.into_iter().filter(|a| a.can_run(s)) {
            let mut y = vec![0.0; n * s.out_len()];
            conv::forward_with(algo, &x, &w, &b, &mut y, s, n, true, &mut kernel);
            let mut alone = vec![0.0; s.out_len()];
            for i in 0..n {
                conv::forward_with(algo, &x[i * s.in_len()..][..s.in_len()], &w, &b, &mut alone, s, 1, true, &mut kernel);
                assert!(alone.iter().zip(&y[i * s.out_len()..]).all(|(a, b)| a.to_bits() == b.to_bits()), "conv {k} {algo:?} forward, image {i}");
            }
            if algo.can_run_input_gradient(s) {
                let mut dx = vec![0.0; n * s.in_len()];
                conv::backward_input_with(algo, &dy, &w, &mut dx, s, n, &mut kernel);
                let mut alone = vec![0.0; s.in_len()];
                for i in 0..n {
                    conv::backward_input_with(algo, &dy[i * s.out_len()..][..s.out_len()], &w, &mut alone, s, 1, &mut kernel);
                    assert!(alone.iter().zip(&dx[i * s.in_len()..]).all(|(a, b)| a.to_bits() == b.to_bits()), "conv {k} {algo:?} input gradient, image {i}");
                }
            }
        }
    }
}

#[test]
fn maxpool_matches_plain_loops_exactly() {
    let cpu = CpuBackend::new();
    let n = 2;
    // 2x2 stride 2 on an odd map (the last row/column dropped) and on an even one (every cell
    // in a window), overlapping 3x3 stride 2 windows (dx sums several dy), and 1x2 windows at
    // stride 2x3 (rows and columns between windows).
    let shapes = [
        PoolShape { in_h: 7, in_w: 5, c: 3, out_h: 3, out_w: 2, size_h: 2, size_w: 2, stride_h: 2, stride_w: 2, pad_top: 0, pad_left: 0 },
        PoolShape { in_h: 6, in_w: 4, c: 5, out_h: 3, out_w: 2, size_h: 2, size_w: 2, stride_h: 2, stride_w: 2, pad_top: 0, pad_left: 0 },
        PoolShape { in_h: 7, in_w: 7, c: 2, out_h: 3, out_w: 3, size_h: 3, size_w: 3, stride_h: 2, stride_w: 2, pad_top: 0, pad_left: 0 },
        PoolShape { in_h: 7, in_w: 8, c: 9, out_h: 4, out_w: 3, size_h: 1, size_w: 2, stride_h: 2, stride_w: 3, pad_top: 0, pad_left: 0 },
    ];
    for (k, s) in shapes.iter().enumerate() {
        // Values on a coarse grid so that windows hold ties (the first max must win).
        let x: Vec<f32> = random_vec(n * s.in_len(), 500 + k as u64).iter().map(|v| (v * 4.0).round()).collect();
        // A -0.0 term: the sum from 0.0 makes it 0.0, and dx must hold those bits.
        let mut dy = random_vec(n * s.out_len(), 600 + k as u64);
        dy[..2].copy_from_slice(&[-0.0, 0.0]);
        let mut y_want = vec![0.0f32; n * s.out_len()];
        let mut at_want = vec![0u32; n * s.out_len()];
        let mut dx_want = vec![0.0f32; n * s.in_len()];
        for img in 0..n {
            for oy in 0..s.out_h {
                for ox in 0..s.out_w {
                    for ch in 0..s.c {
                        let mut best: Option<(f32, usize)> = None;
                        for ky in 0..s.size_h {
                            for kx in 0..s.size_w {
                                let i = img * s.in_len() + ((oy * s.stride_h + ky) * s.in_w + ox * s.stride_w + kx) * s.c + ch;
                                if best.is_none_or(|(v, _)| x[i] > v) {
                                    best = Some((x[i], i));
                                }
                            }
                        }
                        let o = img * s.out_len() + (oy * s.out_w + ox) * s.c + ch;
                        let (v, i) = best.unwrap();
                        (y_want[o], at_want[o]) = (v, i as u32);
                    }
                }
            }
        }
        // dx in the order the outputs are visited (overlapping windows add in that order).
        for (o, &i) in at_want.iter().enumerate() {
            dx_want[i as usize] += dy[o];
        }
        let mut xt = cpu.tensor(x.len()).unwrap();
        cpu.upload(&mut xt, &x);
        let (mut y, mut at) = (cpu.tensor(n * s.out_len()).unwrap(), cpu.indices(n * s.out_len()).unwrap());
        cpu.maxpool_forward(&xt, &mut y, &mut at, s, n);
        assert_eq!(y, y_want, "pool {k} y");
        assert_eq!(at, at_want, "pool {k} argmax");
        let mut dyt = cpu.tensor(dy.len()).unwrap();
        cpu.upload(&mut dyt, &dy);
        // dx starts as garbage: every value must be written.
        let garbage = vec![f32::NAN; n * s.in_len()];
        let mut dx = cpu.tensor(n * s.in_len()).unwrap();
        cpu.upload(&mut dx, &garbage);
        cpu.maxpool_backward(&dyt, &at, &mut dx, s, n);
        assert_same_bits(&format!("pool {k} dx"), &dx, &dx_want);
        // With the ReLU backward of the layer before (dx zeroed where its output is <= 0).
        let relu_y: Vec<f32> = random_vec(n * s.in_len(), 650 + k as u64).iter().map(|v| v.max(0.0)).collect();
        let masked: Vec<f32> = dx_want.iter().zip(&relu_y).map(|(&d, &y)| if y <= 0.0 { 0.0 } else { d }).collect();
        assert!(masked.iter().zip(&dx_want).any(|(m, d)| m != d), "pool {k}: the mask changes something");
        let mut relu_yt = cpu.tensor(relu_y.len()).unwrap();
        cpu.upload(&mut relu_yt, &relu_y);
        cpu.upload(&mut dx, &garbage);
        cpu.maxpool_backward_relu(&dyt, &at, &relu_yt, &mut dx, s, n);
        assert_same_bits(&format!("pool {k} dx with the ReLU mask"), &dx, &masked);
    }
}

/// The CPU's fused BatchNormalization + MaxPooling2D (`Backend::fuses_batchnorm_maxpool`)
/// against the same backend's layers run one by one, which the tests above and tests/gradcheck
/// check: the same bits in every output, forward (training and inference) and backward. Maps
/// with cells in no window (odd sizes, a stride over the size), "same" padding with partial
/// windows, ReLU on and off, odd channel counts, and values on a coarse grid so that windows
/// hold ties.
#[test]
fn fused_batchnorm_maxpool_matches_the_layers_apart_bit_for_bit() {
    let cpu = CpuBackend::new();
    assert!(cpu.fuses_batchnorm_maxpool());
    let cases = [
        (3, PoolShape::valid((13, 13, 5), (2, 2), (2, 2)).unwrap(), true),
        (2, PoolShape::same((7, 7, 3), (2, 2), (2, 2)).unwrap(), false),
        (2, PoolShape::same((7, 8, 4), (3, 3), (3, 3)).unwrap(), true),
        (2, PoolShape::valid((8, 7, 6), (2, 2), (3, 3)).unwrap(), true),
    ];
    for (k, (n, pool, relu)) in cases.into_iter().enumerate() {
        let what = |t: &str| format!("case {k} ({n}x{}x{}x{}, relu {relu}): {t}", pool.in_h, pool.in_w, pool.c);
        let bn = BatchNormShape { positions: pool.in_h * pool.in_w, channels: pool.c, relu };
        let h = BatchNormConfig::default();
        let upload = |v: &[f32]| {
            let mut t = cpu.tensor(v.len()).unwrap();
            cpu.upload(&mut t, v);
            t
        };
        let x = upload(&random_vec(n * pool.in_len(), 700 + k as u64).iter().map(|v| (v * 4.0).round()).collect::<Vec<_>>());
        let gamma = upload(&random_vec(pool.c, 710 + k as u64).iter().map(|v| v * 2.0).collect::<Vec<_>>());
        let beta = upload(&random_vec(pool.c, 720 + k as u64));
        let dy = upload(&random_vec(n * pool.out_len(), 730 + k as u64));
        let garbage = |len: usize| upload(&vec![f32::NAN; len]);
        // Apart: the layers' own calls, as the network makes them.
        let (mut mean_a, mut var_a, mut saved_a) = (upload(&vec![0.5; pool.c]), upload(&vec![2.0; pool.c]), garbage(bn.saved_len()));
        let (mut y_bn, mut y_a, mut at_a) = (garbage(n * pool.in_len()), garbage(n * pool.out_len()), cpu.indices(n * pool.out_len()).unwrap());
        cpu.batchnorm_forward_train(&x, &gamma, &beta, &mut mean_a, &mut var_a, &mut saved_a, &mut y_bn, &bn, n, &h);
        cpu.maxpool_forward(&y_bn, &mut y_a, &mut at_a, &pool, n);
        let mut dy_bn = garbage(n * pool.in_len());
        if relu {
            cpu.maxpool_backward_relu(&dy, &at_a, &y_bn, &mut dy_bn, &pool, n);
        } else {
            cpu.maxpool_backward(&dy, &at_a, &mut dy_bn, &pool, n);
        }
        let (mut dx_a, mut dgamma_a, mut dbeta_a) = (garbage(n * pool.in_len()), garbage(pool.c), garbage(pool.c));
        cpu.batchnorm_backward(&x, &dy_bn, &gamma, &mut saved_a, &mut dx_a, &mut dgamma_a, &mut dbeta_a, &bn, n);
        // Fused.
        let (mut mean_f, mut var_f, mut saved_f) = (upload(&vec![0.5; pool.c]), upload(&vec![2.0; pool.c]), garbage(bn.saved_len()));
        let (mut y_f, mut at_f) = (garbage(n * pool.out_len()), cpu.indices(n * pool.out_len()).unwrap());
        cpu.batchnorm_maxpool_forward_train(&x, &gamma, &beta, &mut mean_f, &mut var_f, &mut saved_f, &mut y_f, &mut at_f, &bn, &pool, n, &h);
        let (mut dx_f, mut dgamma_f, mut dbeta_f) = (garbage(n * pool.in_len()), garbage(pool.c), garbage(pool.c));
        cpu.batchnorm_maxpool_backward(&x, &dy, &y_f, &at_f, &gamma, &mut saved_f, &mut dx_f, &mut dgamma_f, &mut dbeta_f, &bn, &pool, n);
        assert!(y_a.iter().any(|&v| v > 0.0) && dx_a.iter().any(|&v| v != 0.0), "{}", what("the case is not degenerate"));
        for (name, got, want) in [
            ("y", &y_f, &y_a),
            ("moving mean", &mean_f, &mean_a),
            ("moving variance", &var_f, &var_a),
            ("saved", &saved_f, &saved_a),
            ("dx", &dx_f, &dx_a),
            ("dgamma", &dgamma_f, &dgamma_a),
            ("dbeta", &dbeta_f, &dbeta_a),
        ] {
            assert_same_bits(&what(name), got, want);
        }
        assert_eq!(at_f, at_a, "{}", what("argmax"));
        // Inference: the moving statistics, the same bits again.
        cpu.batchnorm_forward_infer(&x, &gamma, &beta, &mean_a, &var_a, &mut saved_a, &mut y_bn, &bn, n, h.epsilon);
        cpu.maxpool_forward(&y_bn, &mut y_a, &mut at_a, &pool, n);
        cpu.batchnorm_maxpool_forward_infer(&x, &gamma, &beta, &mean_a, &var_a, &mut saved_f, &mut y_f, &mut at_f, &bn, &pool, n, h.epsilon);
        assert_same_bits(&what("inference y"), &y_f, &y_a);
    }
}

/// The conv + max-pool layer (conv_pool.rs) against the conv and the pool apart, as the network
/// runs them otherwise: the same bits, since it runs the same kernels on whole images.
/// Inference (`conv2d_maxpool_forward_infer` against `conv2d_forward` then
/// `maxpool_forward_infer`): every conv case whose forward algorithm runs in blocks on one
/// thread (direct, F(2x2), F(4x4)). Training, where the direct kernels run the conv and its
/// input needs no gradient: `conv2d_maxpool_forward_train` against `conv2d_forward` then
/// `maxpool_forward` (y and argmax), and `conv2d_maxpool_backward_filter` against
/// `maxpool_backward` (`maxpool_backward_relu` with ReLU) then `conv2d_backward_filter`. With
/// and without ReLU and bias, batches of 1, 7 and 13 (partial blocks and reduction splits),
/// under pools that leave cells out, pad, overlap, or stride past their size. Where the pool
/// never reads the conv's last rows or columns, the fused inference pass does not compute them.
#[test]
fn fused_conv_maxpool_matches_the_layers_apart_bit_for_bit() {
    let cpu = CpuBackend::new();
    let (mut inferred, mut trained) = (Vec::new(), Vec::new());
    // Inference cases whose pool leaves output rows or columns unread, by algorithm.
    let mut cut = Vec::new();
    for (k, case) in conv_cases().into_iter().enumerate() {
        let s = case.shape;
        let algo = forward_algo(&s);
        let infers = cpu.fuses_conv_maxpool(&s, Passes::Inference);
        let trains = cpu.fuses_conv_maxpool(&s, Passes::Training { input_gradient: false });
        assert_eq!(infers, algo != ConvAlgo::Im2colGemm, "case {k}: which algorithms the fused inference pass runs");
        assert_eq!(trains, algo == ConvAlgo::Direct, "case {k}: which algorithms the fused training passes run");
        assert!(!cpu.fuses_conv_maxpool(&s, Passes::Training { input_gradient: true }), "case {k}: no fused backward gives an input gradient");
        if !infers {
            continue;
        }
        inferred.push(algo);
        let out = (s.out_h, s.out_w, s.out_c);
        let pools = [
            PoolShape::valid(out, (2, 2), (2, 2)),
            PoolShape::same(out, (3, 3), (3, 3)),
            PoolShape::valid(out, (3, 3), (2, 2)),
            PoolShape::valid(out, (1, 2), (2, 3)),
        ];
        for (j, pool) in pools.into_iter().enumerate() {
            let pool = pool.unwrap();
            for (n, relu, bias) in [(7, true, true), (13, false, true), (1, true, false)] {
                let what = format!("case {k} ({algo:?}), pool {j}, batch {n}, relu {relu}, bias {bias}");
                let upload = |v: &[f32]| {
                    let mut t = cpu.tensor(v.len()).unwrap();
                    cpu.upload(&mut t, v);
                    t
                };
                let nan = |len: usize| upload(&vec![f32::NAN; len]);
                let seed = 1000 + 10 * k as u64;
                let x = upload(&random_vec(n * s.in_len(), seed));
                let w = upload(&random_vec(s.kernel_len(), seed + 1));
                let b = bias.then(|| upload(&random_vec(s.out_c, seed + 2)));
                let (mut conv_y, mut y_apart, mut y_fused) = (nan(n * s.out_len()), nan(n * pool.out_len()), nan(n * pool.out_len()));
                let (mut argmax_apart, mut argmax_fused) = (cpu.indices(n * pool.out_len()).unwrap(), cpu.indices(n * pool.out_len()).unwrap());
                cpu.conv2d_forward(&x, &w, b.as_ref(), &mut conv_y, &s, n, relu);
                cpu.maxpool_forward_infer(&conv_y, &mut y_apart, &mut argmax_apart, &pool, n);
                cpu.conv2d_maxpool_forward_infer(&x, &w, b.as_ref(), &mut y_fused, &s, &pool, n, relu);
                assert!(y_apart.iter().all(|v| v.is_finite()) && y_apart.iter().any(|&v| v != 0.0), "{what}: the case is not degenerate");
                assert_same_bits(&format!("{what}: inference"), &y_fused, &y_apart);
                let reads = |out: usize, stride: usize, size: usize, pad: usize| (out - 1) * stride + size - pad;
                if reads(pool.out_h, pool.stride_h, pool.size_h, pool.pad_top) < s.out_h
                    || reads(pool.out_w, pool.stride_w, pool.size_w, pool.pad_left) < s.out_w
                {
                    cut.push(algo);
                }
                if !trains {
                    continue;
                }
                trained.push(relu);
                // Training: y and argmax, then the filter gradient through the pool.
                cpu.maxpool_forward(&conv_y, &mut y_apart, &mut argmax_apart, &pool, n);
                let mut y_fused = nan(n * pool.out_len());
                cpu.conv2d_maxpool_forward_train(&x, &w, b.as_ref(), &mut y_fused, &mut argmax_fused, &s, &pool, n, relu);
                assert_same_bits(&format!("{what}: training y"), &y_fused, &y_apart);
                assert_eq!(argmax_fused, argmax_apart, "{what}: training argmax");
                let dy = upload(&random_vec(n * pool.out_len(), seed + 3));
                let mut dconv = nan(n * s.out_len());
                match relu {
                    true => cpu.maxpool_backward_relu(&dy, &argmax_apart, &conv_y, &mut dconv, &pool, n),
                    false => cpu.maxpool_backward(&dy, &argmax_apart, &mut dconv, &pool, n),
                }
                let (mut dw_apart, mut dw_fused) = (nan(s.kernel_len()), nan(s.kernel_len()));
                let (mut db_apart, mut db_fused) = (bias.then(|| nan(s.out_c)), bias.then(|| nan(s.out_c)));
                cpu.conv2d_backward_filter(&x, &dconv, &mut dw_apart, db_apart.as_mut(), &s, n);
                cpu.conv2d_maxpool_backward_filter(&x, &dy, &y_fused, &argmax_fused, &mut dw_fused, db_fused.as_mut(), &s, &pool, n, relu);
                assert!(dw_apart.iter().all(|v| v.is_finite()) && dw_apart.iter().any(|&v| v != 0.0), "{what}: the gradient is not degenerate");
                assert_same_bits(&format!("{what}: dw"), &dw_fused, &dw_apart);
                if let (Some(fused), Some(apart)) = (&db_fused, &db_apart) {
                    assert_same_bits(&format!("{what}: db"), fused, apart);
                }
            }
        }
    }
    for algo in [ConvAlgo::Direct, ConvAlgo::Winograd, ConvAlgo::Winograd4x4] {
        assert!(!has_fast_fma() || inferred.contains(&algo), "no case ran {algo:?} through the fused inference pass");
        assert!(!has_fast_fma() || cut.contains(&algo), "no case ran {algo:?} under a pool that leaves outputs unread");
    }
    assert!(!has_fast_fma() || (trained.contains(&true) && trained.contains(&false)), "the fused training passes ran with and without ReLU");
}

#[test]
fn dense_passes_match_plain_loops() {
    let cpu = CpuBackend::new();
    // A batch of 5; and a batch large enough for the GEMM to split its rows over the cores.
    for (k, (n, s)) in [(5, DenseShape { inputs: 37, units: 11 }), (300, DenseShape { inputs: 256, units: 64 })].into_iter().enumerate() {
        let x = random_vec(n * s.inputs, 700 + k as u64);
        let w = random_vec(s.inputs * s.units, 800 + k as u64);
        let b = random_vec(s.units, 900 + k as u64);
        let dy = random_vec(n * s.units, 1000 + k as u64);
        let mut y_want = vec![Sum::default(); n * s.units];
        let mut dx_want = vec![Sum::default(); n * s.inputs];
        let mut dw_want = vec![Sum::default(); s.inputs * s.units];
        let mut db_want = vec![Sum::default(); s.units];
        for r in 0..n {
            for i in 0..s.inputs {
                for u in 0..s.units {
                    y_want[r * s.units + u].add(x[r * s.inputs + i], w[i * s.units + u]);
                    dx_want[r * s.inputs + i].add(dy[r * s.units + u], w[i * s.units + u]);
                    dw_want[i * s.units + u].add(x[r * s.inputs + i], dy[r * s.units + u]);
                }
            }
            for u in 0..s.units {
                y_want[r * s.units + u].add(b[u], 1.0);
                db_want[u].add(dy[r * s.units + u], 1.0);
            }
        }
        let relu_want: Vec<Sum> = y_want.iter().map(|v| Sum { value: v.value.max(0.0), mag: v.mag }).collect();
        let (xt, wt, bt, dyt) = (x.clone(), w.clone(), b.clone(), dy.clone());
        let mut y = cpu.tensor(n * s.units).unwrap();
        cpu.dense_forward(&xt, &wt, &bt, &mut y, &s, n, true);
        check(&format!("dense {k} forward + relu"), &y, &relu_want, RTOL);
        let mut dx = cpu.tensor(n * s.inputs).unwrap();
        cpu.dense_backward_input(&dyt, &wt, &mut dx, &s, n);
        check(&format!("dense {k} backward input"), &dx, &dx_want, RTOL);
        let (mut dw, mut db) = (cpu.tensor(s.inputs * s.units).unwrap(), cpu.tensor(s.units).unwrap());
        cpu.dense_backward_filter(&xt, &dyt, &mut dw, &mut db, &s, n);
        check(&format!("dense {k} backward filter"), &dw, &dw_want, RTOL);
        check(&format!("dense {k} bias gradient"), &db, &db_want, RTOL);
    }
}
