//! Pooling ops beyond valid max-pooling: MaxPooling2D with padding="same", AveragePooling2D
//! (valid and same), GlobalAveragePooling2D and GlobalMaxPooling2D (a window of the whole image,
//! `PoolShape::global`). Keras's geometry and rules: "same" gives ceil(in / stride) windows with
//! the odd padding pixel at the bottom/right; padding never wins a max and is not counted in an
//! average. Checked against plain loops written from those rules, by finite differences (CPU),
//! and GPU against CPU on awkward shapes (batch 7, 13x13, 5 and 3 channels).

#[macro_use]
mod common;
use common::{assert_close, assert_same_bits, uniform_vec};
use gpu_cnn::backend::cpu::CpuBackend;
use gpu_cnn::backend::{Backend, PoolShape};
use gpu_cnn::rng::Rng;

fn up<B: Backend>(b: &B, data: &[f32]) -> B::Tensor {
    let mut t = b.tensor(data.len()).unwrap();
    b.upload(&mut t, data);
    t
}

fn same(input: (usize, usize, usize), size: usize, stride: usize) -> PoolShape {
    PoolShape::same(input, (size, size), (stride, stride)).unwrap()
}

fn valid(input: (usize, usize, usize), size: usize, stride: usize) -> PoolShape {
    PoolShape::valid(input, (size, size), (stride, stride)).unwrap()
}

fn global(input: (usize, usize, usize)) -> PoolShape {
    PoolShape::global(input).unwrap()
}

/// The shapes every comparison runs on, with their batch sizes.
fn awkward_shapes() -> Vec<(&'static str, PoolShape, usize)> {
    vec![
        ("13x13x5 pool 3 stride 2 same", same((13, 13, 5), 3, 2), 7),
        ("13x13x3 pool 2 stride 2 same (odd pad at the bottom/right)", same((13, 13, 3), 2, 2), 7),
        ("13x13x3 pool 2 stride 2 valid (last row dropped)", valid((13, 13, 3), 2, 2), 7),
        ("7x6x5 pool 3 stride 1 same (pads on both sides)", same((7, 6, 5), 3, 1), 3),
        ("5x5x3 pool 2x3 stride 3x1 same", PoolShape::same((5, 5, 3), (2, 3), (3, 1)).unwrap(), 2),
        ("13x13x5 global", global((13, 13, 5)), 7),
        ("1x1x3 pool 2 same (all padding but one cell)", same((1, 1, 3), 2, 2), 2),
    ]
}

/// (y, argmax, dx) of max-pooling on backend `b`.
fn maxpool_run<B: Backend>(b: &B, s: &PoolShape, n: usize, x: &[f32], dy: &[f32]) -> (Vec<f32>, Vec<u32>, Vec<f32>) {
    let (xt, dyt) = (up(b, x), up(b, dy));
    let mut y = b.tensor(n * s.out_len()).unwrap();
    let mut argmax = b.indices(n * s.out_len()).unwrap();
    let mut dx = b.tensor(n * s.in_len()).unwrap();
    b.maxpool_forward(&xt, &mut y, &mut argmax, s, n);
    b.maxpool_backward(&dyt, &argmax, &mut dx, s, n);
    b.flush().unwrap();
    (b.download(&y).unwrap(), b.download_indices(&argmax).unwrap(), b.download(&dx).unwrap())
}

/// (y, dx) of average pooling on backend `b`.
fn avgpool_run<B: Backend>(b: &B, s: &PoolShape, n: usize, x: &[f32], dy: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let (xt, dyt) = (up(b, x), up(b, dy));
    let mut y = b.tensor(n * s.out_len()).unwrap();
    let mut dx = b.tensor(n * s.in_len()).unwrap();
    b.avgpool_forward(&xt, &mut y, s, n);
    b.avgpool_backward(&dyt, &mut dx, s, n);
    b.flush().unwrap();
    (b.download(&y).unwrap(), b.download(&dx).unwrap())
}

/// Flat indices into x of window (img, oy, ox, ch)'s real cells, in row-then-column order,
/// from signed coordinates (the textbook form of Keras's rule, independent of PoolShape's
/// clipping helpers).
fn window_cells(s: &PoolShape, img: usize, oy: usize, ox: usize, ch: usize) -> Vec<usize> {
    let mut cells = Vec::new();
    for ky in 0..s.size_h {
        for kx in 0..s.size_w {
            let iy = (oy * s.stride_h + ky) as isize - s.pad_top as isize;
            let ix = (ox * s.stride_w + kx) as isize - s.pad_left as isize;
            if iy >= 0 && ix >= 0 && (iy as usize) < s.in_h && (ix as usize) < s.in_w {
                cells.push(img * s.in_len() + ((iy as usize * s.in_w) + ix as usize) * s.c + ch);
            }
        }
    }
    cells
}

/// Every output (flat index, its window's cells).
fn windows(s: &PoolShape, n: usize) -> Vec<(usize, Vec<usize>)> {
    let mut all = Vec::new();
    for img in 0..n {
        for oy in 0..s.out_h {
            for ox in 0..s.out_w {
                for ch in 0..s.c {
                    all.push((img * s.out_len() + (oy * s.out_w + ox) * s.c + ch, window_cells(s, img, oy, ox, ch)));
                }
            }
        }
    }
    all
}

#[test]
fn same_padding_geometry_is_keras() {
    // TF/Keras "SAME": out = ceil(in / stride), pad = max((out - 1) * stride + size - in, 0),
    // pad_top = pad / 2 (the odd pixel at the bottom).
    let s = same((13, 13, 5), 3, 2);
    assert_eq!((s.out_h, s.out_w, s.pad_top, s.pad_left), (7, 7, 1, 1)); // pad 2: one each side
    let s = same((13, 13, 3), 2, 2);
    assert_eq!((s.out_h, s.out_w, s.pad_top, s.pad_left), (7, 7, 0, 0)); // pad 1: at the bottom
    assert_eq!((s.rows(6), s.cols(6)), ((12, 13), (12, 13)), "the last window keeps one real row and column");
    let s = same((7, 6, 5), 3, 1);
    assert_eq!((s.out_h, s.out_w, s.pad_top, s.pad_left), (7, 6, 1, 1));
    let s = PoolShape::same((5, 5, 3), (2, 3), (3, 1)).unwrap();
    assert_eq!((s.out_h, s.out_w, s.pad_top, s.pad_left), (2, 5, 0, 1)); // pads 0 and 2
    let s = same((4, 4, 1), 2, 2);
    assert_eq!((s.out_h, s.out_w, s.pad_top, s.pad_left), (2, 2, 0, 0)); // divisible: no padding
    let s = global((13, 11, 5));
    assert_eq!((s.out_h, s.out_w, s.out_len(), s.size_h, s.size_w), (1, 1, 5, 13, 11));
    // valid still refuses a window that does not fit; nothing accepts a zero size or stride.
    assert!(PoolShape::valid((1, 5, 1), (2, 2), (2, 2)).is_none());
    assert!(PoolShape::same((5, 5, 1), (0, 2), (1, 1)).is_none());
    assert!(PoolShape::same((5, 5, 1), (2, 2), (0, 1)).is_none());
    // Every window of every awkward shape has at least one real cell.
    for (what, s, n) in awkward_shapes() {
        assert!(windows(&s, n).iter().all(|(_, cells)| !cells.is_empty()), "{what}");
    }
}

#[test]
fn average_pooling_excludes_padding_as_keras() {
    // x = 0..9 as a 3x3 image, AveragePooling2D(2, padding="same"): windows {0,1,3,4},
    // {2,5}, {6,7}, {8} (the padding pixel at the bottom/right), each averaged over its real
    // cells only: Keras 3.15.1 (keras/src/backend/jax/nn.py average_pool divides by the window
    // counts; TF's avg_pool the same) gives [[2, 3.5], [6.5, 8]].
    let cpu = CpuBackend::new();
    let s = same((3, 3, 1), 2, 2);
    let x: Vec<f32> = (0..9).map(|v| v as f32).collect();
    let (y, dx) = avgpool_run(&cpu, &s, 1, &x, &[1.0, 1.0, 1.0, 1.0]);
    assert_eq!(y, [2.0, 3.5, 6.5, 8.0]);
    // dy = 1 everywhere: each cell gets 1 / (its window's real cells).
    assert_eq!(dx, [0.25, 0.25, 0.5, 0.25, 0.25, 0.5, 0.5, 0.5, 1.0]);
}

backend_test! {
    /// Max-pooling with "same" padding and global max-pooling against plain loops, on inputs
    /// with ties (a coarse grid) and with all values negative (a padded zero would win if
    /// padding were looked at). Exact: comparisons and in-order sums from zero only.
    fn maxpool_any_padding_matches_plain_loops<B>(b: &B) {
        let mut rng = Rng::new(0x9001);
        for (what, s, n) in awkward_shapes() {
            for case in ["random", "tied", "negative"] {
                let x: Vec<f32> = uniform_vec(&mut rng, n * s.in_len())
                    .into_iter()
                    .map(|v| match case {
                        "tied" => (v * 2.0).round(),
                        "negative" => -1.5 - v,
                        _ => v,
                    })
                    .collect();
                let dy = uniform_vec(&mut rng, n * s.out_len());
                let (mut y_want, mut at_want, mut dx_want) = (vec![0.0f32; n * s.out_len()], vec![0u32; n * s.out_len()], vec![0.0f32; n * s.in_len()]);
                for (o, cells) in windows(&s, n) {
                    // The first max in window order wins ties.
                    let first_max = cells.iter().copied().reduce(|best, i| if x[i] > x[best] { i } else { best }).unwrap();
                    (y_want[o], at_want[o]) = (x[first_max], first_max as u32);
                }
                for (o, &i) in at_want.iter().enumerate() {
                    dx_want[i as usize] += dy[o];
                }
                let (y, at, dx) = maxpool_run(b, &s, n, &x, &dy);
                assert_eq!(at, at_want, "{what} {case}: argmax");
                assert_same_bits(&format!("{what} {case}: y"), &y, &y_want);
                assert_same_bits(&format!("{what} {case}: dx"), &dx, &dx_want);
                if case == "negative" {
                    assert!(y.iter().all(|&v| v < 0.0), "{what}: a padded cell won a max");
                }
            }
        }
    }
}

backend_test! {
    /// Average pooling (valid, same, global) against plain f64 loops. Tolerance: y sums k <= 169
    /// terms in [-1, 1] in f32 (each rounding <= 2^-24 * k, the partial sums being <= k), then
    /// divides by k: error <= k * 2^-24 ~ 1e-5, plus the GPU division's 2.5 ulp; atol 2e-5
    /// holds that, while a missed or extra cell moves a value by ~1/k >= 6e-3. dx sums at most
    /// 4 terms dy / count of size <= 1: atol 1e-6.
    fn avgpool_any_padding_matches_plain_loops<B>(b: &B) {
        let mut rng = Rng::new(0x9002);
        for (what, s, n) in awkward_shapes() {
            let x = uniform_vec(&mut rng, n * s.in_len());
            let dy = uniform_vec(&mut rng, n * s.out_len());
            let (mut y_want, mut dx_want) = (vec![0.0f64; n * s.out_len()], vec![0.0f64; n * s.in_len()]);
            for (o, cells) in windows(&s, n) {
                let count = cells.len() as f64;
                y_want[o] = cells.iter().map(|&i| x[i] as f64).sum::<f64>() / count;
                for &i in &cells {
                    dx_want[i] += dy[o] as f64 / count;
                }
            }
            let (y, dx) = avgpool_run(b, &s, n, &x, &dy);
            assert_close(&format!("{what}: avgpool y"), &y, &y_want, 2e-5, 0.0);
            assert_close(&format!("{what}: avgpool dx"), &dx, &dx_want, 1e-6, 0.0);
        }
    }
}

/// Central differences of `loss` with respect to every element of `x`, in f64 around f32 x.
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

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum()
}

/// Distinct values at least 0.01 apart (a shuffled ramp), so that no max-pool window has a
/// near tie a finite-difference step of 1e-3 could flip.
fn untied(len: usize, seed: u64) -> Vec<f32> {
    let mut x: Vec<f32> = (0..len).map(|i| i as f32 * 0.01 - len as f32 * 0.005).collect();
    Rng::new(seed).shuffle(&mut x);
    x
}

#[test]
fn pooling_backward_matches_finite_differences() {
    // L = sum(y * r). Max-pooling is linear between ties and average pooling is linear, so the
    // central difference is exact but for f32 rounding of L's terms (values up to ~1.5, a few
    // hundred terms): 2e-3 absolute on gradients of order 1 covers it, while a gradient sent to
    // the wrong cell or divided by the wrong count is off by >= 0.1.
    let cpu = CpuBackend::new();
    let n = 2;
    let shapes = [same((5, 5, 3), 3, 2), same((5, 4, 3), 2, 2), same((4, 5, 2), 3, 1), valid((5, 5, 3), 2, 2), global((4, 5, 3))];
    for (k, s) in shapes.iter().enumerate() {
        let x = untied(n * s.in_len(), 70 + k as u64);
        let r = common::random_vec(n * s.out_len(), 80 + k as u64);
        let max_loss = |x: &[f32]| {
            let (mut y, mut at) = (vec![0.0; n * s.out_len()], vec![0; n * s.out_len()]);
            cpu.maxpool_forward(&x.to_vec(), &mut y, &mut at, s, n);
            dot(&y, &r)
        };
        let avg_loss = |x: &[f32]| {
            let mut y = vec![0.0; n * s.out_len()];
            cpu.avgpool_forward(&x.to_vec(), &mut y, s, n);
            dot(&y, &r)
        };
        let (_, _, max_dx) = maxpool_run(&cpu, s, n, &x, &r);
        let (_, avg_dx) = avgpool_run(&cpu, s, n, &x, &r);
        assert_close(&format!("maxpool dx {s:?}"), &max_dx, &numeric_grad(&x, 1e-3, max_loss), 2e-3, 0.0);
        assert_close(&format!("avgpool dx {s:?}"), &avg_dx, &numeric_grad(&x, 1e-3, avg_loss), 2e-3, 0.0);
    }
}

gpu_test! {
    /// GPU against CPU on the awkward shapes. Max-pooling (any padding, global) is exact: only
    /// comparisons and in-order sums from zero. Average pooling sums in the same order on both,
    /// so only the division differs (WGSL allows 2.5 ulp): rtol 1e-6 on y; dx adds up to 4
    /// such quotients of size <= 1, atol 1e-6.
    fn pooling_gpu_matches_cpu(gpu: &GpuBackend) {
        let cpu = CpuBackend::new();
        let mut rng = Rng::new(0x9003);
        for (what, s, n) in awkward_shapes() {
            for tied in [false, true] {
                let x: Vec<f32> = uniform_vec(&mut rng, n * s.in_len()).into_iter().map(|v| if tied { (v * 2.0).round() } else { v }).collect();
                let dy = uniform_vec(&mut rng, n * s.out_len());
                let want = maxpool_run(&cpu, &s, n, &x, &dy);
                let got = maxpool_run(gpu, &s, n, &x, &dy);
                assert_same_bits(&format!("{what} tied={tied}: maxpool y"), &got.0, &want.0);
                assert_eq!(got.1, want.1, "{what} tied={tied}: maxpool argmax");
                assert_same_bits(&format!("{what} tied={tied}: maxpool dx"), &got.2, &want.2);
                let want = avgpool_run(&cpu, &s, n, &x, &dy);
                let got = avgpool_run(gpu, &s, n, &x, &dy);
                assert_close(&format!("{what}: avgpool y"), &got.0, &want.0, 1e-7, 1e-6);
                assert_close(&format!("{what}: avgpool dx"), &got.1, &want.1, 1e-6, 1e-6);
            }
        }
    }
}

gpu_test! {
    /// Seeded runs repeat bit for bit: the same pooling twice on the GPU gives the same bits
    /// (fixed-order sums, no atomics).
    fn pooling_repeats_bit_for_bit_on_the_gpu(gpu: &GpuBackend) {
        let (s, n) = (same((13, 13, 5), 3, 2), 7);
        let mut rng = Rng::new(0x9004);
        let x = uniform_vec(&mut rng, n * s.in_len());
        let dy = uniform_vec(&mut rng, n * s.out_len());
        let (a, b) = (avgpool_run(gpu, &s, n, &x, &dy), avgpool_run(gpu, &s, n, &x, &dy));
        assert_same_bits("avgpool y", &a.0, &b.0);
        assert_same_bits("avgpool dx", &a.1, &b.1);
        let g = global((13, 13, 5));
        let (a, b) = (avgpool_run(gpu, &g, n, &x, &dy[..n * 5]), avgpool_run(gpu, &g, n, &x, &dy[..n * 5]));
        assert_same_bits("global avgpool y", &a.0, &b.0);
        assert_same_bits("global avgpool dx", &a.1, &b.1);
    }
}

/// Inference's max-pool (no argmax) gives `maxpool_forward`'s values bit for bit on every
/// shape, with ties (the first max wins: -0.0 before 0.0 keeps -0.0), NaN cells (never greater,
/// so a NaN stays only where it came first) and padding: exactly equal, no tolerance.
#[test]
fn inference_max_pool_equals_the_training_one_bit_for_bit() {
    let cpu = CpuBackend::new();
    for (name, s, n) in awkward_shapes() {
        let mut x = uniform_vec(&mut Rng::new(21), n * s.in_len());
        for (i, v) in x.iter_mut().enumerate() {
            match i % 11 {
                0 => *v = -0.0,
                3 => *v = 0.0,
                7 => *v = f32::NAN,
                _ => *v = (*v * 4.0).round() / 4.0, // few distinct values: many ties
            }
        }
        let xt = up(&cpu, &x);
        let (mut train_y, mut infer_y) = (cpu.tensor(n * s.out_len()).unwrap(), cpu.tensor(n * s.out_len()).unwrap());
        let (mut argmax, mut unused) = (cpu.indices(n * s.out_len()).unwrap(), cpu.indices(n * s.out_len()).unwrap());
        cpu.maxpool_forward(&xt, &mut train_y, &mut argmax, &s, n);
        cpu.maxpool_forward_infer(&xt, &mut infer_y, &mut unused, &s, n);
        assert_same_bits(name, &cpu.download(&infer_y).unwrap(), &cpu.download(&train_y).unwrap());
    }
}
