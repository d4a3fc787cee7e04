//! Every SIMD level this CPU runs (portable lanes, AVX2, AVX-512) gives the same bits, for
//! every convolution algorithm and pass, on shapes that take each kernel's block paths: 16-lane
//! vectors where the channels allow them, 8-lane ones where they do not (24 channels), and a
//! remainder vector (48). Each level computes each lane with the same fused multiply-adds in
//! the same order, so seeded runs repeat bit for bit on machines with and without AVX-512.
//! (Its own test binary: `Simd::limit_to` caps the whole process.)

mod common;
use common::random_vec;
use gpu_cnn::backend::cpu::conv::{self, ConvAlgo};
use gpu_cnn::backend::cpu::simd::Simd;
use gpu_cnn::backend::ConvShape;

fn shape(in_hw: usize, in_c: usize, out_c: usize, pad: usize) -> ConvShape {
    let out = in_hw + 2 * pad - 2;
    ConvShape {
        in_h: in_hw,
        in_w: in_hw,
        in_c,
        out_h: out,
        out_w: out,
        out_c,
        k_h: 3,
        k_w: 3,
        stride_h: 1,
        stride_w: 1,
        pad_top: pad,
        pad_left: pad,
        dilation_h: 1,
        dilation_w: 1,
    }
}

/// The bits of every pass of every algorithm that runs `s`, at the current level.
fn all_passes(s: &ConvShape, n: usize, seed: u64) -> Vec<(String, Vec<u32>)> {
    let x = random_vec(n * s.in_len(), seed);
    let w = random_vec(s.kernel_len(), seed + 1);
    let b = random_vec(s.out_c, seed + 2);
    let dy = random_vec(n * s.out_len(), seed + 3);
    let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<u32>>();
    let (mut kernel, mut partials) = (Vec::new(), Vec::new());
    let mut out = Vec::new();
    for algo in ConvAlgo::ALL.into_iter().filter(|a| a.can_run(s)) {
        let mut y = vec![0.0; n * s.out_len()];
        conv::forward_with(algo, &x, &w, &b, &mut y, s, n, true, &mut kernel);
        out.push((format!("{algo:?} forward"), bits(&y)));
        if algo.can_run_input_gradient(s) {
            let mut dx = vec![0.0; n * s.in_len()];
            conv::backward_input_with(algo, &dy, &w, &mut dx, s, n, &mut kernel);
            out.push((format!("{algo:?} input gradient"), bits(&dx)));
        }
        if algo.can_run_filter_gradient(s) {
            let (mut dw, mut db) = (vec![0.0; s.kernel_len()], vec![0.0; s.out_c]);
            conv::backward_filter_with(algo, &x, &dy, &mut dw, &mut db, s, n, &mut partials, &mut kernel);
            out.push((format!("{algo:?} filter gradient"), bits(&dw)));
        }
    }
    out
}

#[test]
fn every_simd_level_gives_the_same_bits() {
    let levels = Simd::detected();
    println!("levels on this CPU: {levels:?}");
    let shapes = [
        // First layers: 1 and 3 channels in (the direct kernels' tap blocks), 32 and 48 out.
        shape(10, 1, 32, 0),
        shape(12, 3, 32, 0),
        shape(11, 3, 48, 1),
        // 24 channels: whole 8-lane vectors only.
        shape(9, 16, 24, 0),
        // The seed model's conv2d_1 and conv2d_2, and a 32-channel output (Winograd's 12-row
        // product blocks).
        shape(15, 32, 64, 0),
        shape(6, 64, 64, 0),
        shape(9, 32, 32, 1),
    ];
    for (k, s) in shapes.iter().enumerate() {
        Simd::limit_to(Simd::Portable);
        let want = all_passes(s, 5, 10 * k as u64);
        assert!(want.len() >= 3, "{s:?}: every shape runs at least one algorithm's three passes");
        for &level in &levels {
            Simd::limit_to(level);
            let got = all_passes(s, 5, 10 * k as u64);
            assert_eq!(got.len(), want.len());
            for ((what, g), (_, w)) in got.iter().zip(&want) {
                let differ = g.iter().zip(w).filter(|(a, b)| a != b).count();
                assert_eq!(differ, 0, "shape {k} {what} at {level:?}: {differ} of {} values differ from the portable lanes", w.len());
            }
        }
    }
}
