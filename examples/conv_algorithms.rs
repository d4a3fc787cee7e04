//! Times every CPU convolution algorithm that can run each conv layer of the seed model, for
//! each pass, on one core: the figures behind the rules in src/backend/cpu/conv.rs.
//!
//!     cargo run --release --example conv_algorithms [-- BATCH...]   (default: 32 256)
//!
//! CONV_ALGORITHMS_ARCH=archs/modern.txt times that architecture's layers instead, on a 28x28x1
//! input (CONV_ALGORITHMS_INPUT=HxWxC for another) and 10 classes.
//!
//! Times are on-CPU seconds of the one worker thread (Linux CLOCK_THREAD_CPUTIME_ID; the wall
//! clock elsewhere), so a busy machine disturbs them less than wall time. GFLOP/s count
//! the direct convolution's 2 * outputs * taps multiply-adds whatever the algorithm does, so a
//! faster algorithm shows as a higher rate; "of sgemm" divides by one core's 1024^3 sgemm rate.

use gpu_cnn::backend::cpu::conv::{self, ConvAlgo};
use gpu_cnn::backend::ConvShape;
use gpu_cnn::model::{parse_arch, parse_input_shape, seed_layers, LayerSpec, Model};
use std::time::Instant;

/// Seconds this thread has run on a CPU (Linux: CLOCK_THREAD_CPUTIME_ID; elsewhere the wall
/// clock).
#[cfg(all(target_os = "linux", target_pointer_width = "64"))]
fn thread_seconds(_wall: Instant) -> f64 {
    #[repr(C)]
    struct Timespec {
        sec: i64,
        nsec: i64,
    }
    extern "C" {
        fn clock_gettime(clock: i32, t: *mut Timespec) -> i32;
    }
    const CLOCK_THREAD_CPUTIME_ID: i32 = 3;
    let mut t = Timespec { sec: 0, nsec: 0 };
    // SAFETY: t is a valid timespec (64-bit Linux layout) for the call to fill.
    assert_eq!(unsafe { clock_gettime(CLOCK_THREAD_CPUTIME_ID, &mut t) }, 0);
    t.sec as f64 + t.nsec as f64 * 1e-9
}

#[cfg(not(all(target_os = "linux", target_pointer_width = "64")))]
fn thread_seconds(wall: Instant) -> f64 {
    wall.elapsed().as_secs_f64()
}

/// Median seconds of `f` over enough runs for ~0.3 s (at least 5).
fn time(mut f: impl FnMut()) -> f64 {
    let wall = Instant::now();
    f();
    let mut runs = Vec::new();
    let started = thread_seconds(wall);
    while runs.len() < 5 || thread_seconds(wall) - started < 0.3 {
        let t = thread_seconds(wall);
        f();
        runs.push(thread_seconds(wall) - t);
    }
    runs.sort_by(|a, b| a.total_cmp(b));
    runs[runs.len() / 2]
}

fn random(len: usize, seed: u64) -> Vec<f32> {
    let mut rng = gpu_cnn::rng::Rng::new(seed);
    (0..len).map(|_| rng.unit_f32() - 0.5).collect()
}

fn main() {
    let batches: Vec<usize> = std::env::args().skip(1).map(|a| a.parse().expect("batch sizes")).collect();
    let batches = if batches.is_empty() { vec![32, 256] } else { batches };
    let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
    pool.install(|| {
        let (a, b) = (random(1024 * 1024, 1), random(1024 * 1024, 2));
        let mut c = vec![0.0; 1024 * 1024];
        let seconds = time(|| unsafe { matrixmultiply::sgemm(1024, 1024, 1024, 1.0, a.as_ptr(), 1024, 1, b.as_ptr(), 1024, 1, 0.0, c.as_mut_ptr(), 1024, 1) });
        let peak = 2.0 * 1024f64.powi(3) / seconds / 1e9;
        println!("one core: sgemm 1024^3 {peak:.1} GFLOP/s\n");
        println!("{:<10} {:>5} {:<16} {:<12} {:>9} {:>8} {:>8}", "layer", "batch", "pass", "algorithm", "ms", "GFLOP/s", "of sgemm");
        let model = match std::env::var("CONV_ALGORITHMS_ARCH") {
            Ok(path) => {
                let input = parse_input_shape(&std::env::var("CONV_ALGORITHMS_INPUT").unwrap_or("28x28x1".into())).unwrap();
                Model::new(&parse_arch(&std::fs::read_to_string(path).unwrap().replace("classes", "10")).unwrap(), input).unwrap()
            }
            Err(_) => Model::new(&seed_layers(), (32, 32, 3)).unwrap(),
        };
        for &n in &batches {
            for layer in &model.layers {
                let LayerSpec::Conv2D(conv) = &layer.spec else { continue };
                let s = conv.shape(&layer.input);
                row_set(&layer.name, &s, n, peak);
            }
        }
    });
}

fn row_set(layer: &str, s: &ConvShape, n: usize, peak: f64) {
    let (x, w, b, dy) = (random(n * s.in_len(), 3), random(s.kernel_len(), 4), random(s.out_c, 5), random(n * s.out_len(), 6));
    let (mut y, mut dx, mut dw, mut db) = (vec![0.0; n * s.out_len()], vec![0.0; n * s.in_len()], vec![0.0; s.kernel_len()], vec![0.0; s.out_c]);
    let (mut kernel, mut partials) = (Vec::new(), Vec::new());
    let flop = 2.0 * (n * s.out_len() * s.patch_len()) as f64;
    // CONV_ALGORITHMS_ONLY=Winograd (a name as printed) times only that algorithm (for profiling).
    let only = std::env::var("CONV_ALGORITHMS_ONLY").ok();
    let wanted = |a: &ConvAlgo| only.as_ref().is_none_or(|o| *o == format!("{a:?}"));
    let print = |pass: &str, algo: ConvAlgo, chosen: ConvAlgo, seconds: f64| {
        let gflops = flop / seconds / 1e9;
        let mark = if algo == chosen { " (chosen)" } else { "" };
        println!("{layer:<10} {n:>5} {pass:<16} {:<12} {:>9.3} {gflops:>8.1} {:>7.0}%{mark}", format!("{algo:?}"), seconds * 1e3, gflops / peak * 100.0);
    };
    for algo in ConvAlgo::ALL.into_iter().filter(|a| a.can_run(s) && wanted(a)) {
        print("forward", algo, conv::forward_algo(s), time(|| conv::forward_with(algo, &x, &w, &b, &mut y, s, n, true, &mut kernel)));
    }
    for algo in ConvAlgo::ALL.into_iter().filter(|a| a.can_run_input_gradient(s) && wanted(a)) {
        print("backward_input", algo, conv::backward_input_algo(s), time(|| conv::backward_input_with(algo, &dy, &w, &mut dx, s, n, &mut kernel)));
    }
    for algo in ConvAlgo::ALL.into_iter().filter(|a| a.can_run_filter_gradient(s) && wanted(a)) {
        print(
            "backward_filter",
            algo,
            conv::backward_filter_algo(s),
            time(|| conv::backward_filter_with(algo, &x, &dy, &mut dw, &mut db, s, n, &mut partials, &mut kernel)),
        );
    }
}
