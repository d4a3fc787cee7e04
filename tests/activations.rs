//! Element-wise activations (relu, leaky_relu, elu, gelu, sigmoid, tanh, swish): the scalar
//! formulas against f64 definitions (Keras 3's, keras/src/activations/activations.py; erf from
//! a series summed in f64), the erf approximation's measured error, the CPU backward by finite
//! differences, and the GPU against the CPU.

#[macro_use]
mod common;
use common::{assert_close, assert_same_bits, uniform_vec};
use gpu_cnn::backend::activation::{derivative, erf, forward};
use gpu_cnn::backend::cpu::CpuBackend;
use gpu_cnn::backend::{ActivationFn, Backend};
use gpu_cnn::rng::Rng;

/// Every function, with Keras's defaults for the parameters: LeakyReLU layer 0.3 and the
/// leaky_relu function 0.2, ELU alpha 1, and one alpha that is not 1.
const ALL: [ActivationFn; 9] = [
    ActivationFn::Relu,
    ActivationFn::LeakyRelu { negative_slope: 0.3 },
    ActivationFn::LeakyRelu { negative_slope: 0.2 },
    ActivationFn::Elu { alpha: 1.0 },
    ActivationFn::Elu { alpha: 0.5 },
    ActivationFn::Gelu,
    ActivationFn::Sigmoid,
    ActivationFn::Tanh,
    ActivationFn::Swish,
];

/// erf in f64: its Maclaurin series 2/sqrt(pi) sum (-1)^k x^(2k+1) / (k! (2k+1)) for |x| <= 3
/// (largest term < 3^(2k+1)/k! ~ 1.2e3, so cancellation costs ~1e-13), and above that
/// 1 - erfc(x) with erfc's continued fraction (which converges fast there). Both far below the
/// 1e-8 this file needs; checked against published values by the next test.
fn erf_f64(x: f64) -> f64 {
    let a = x.abs();
    let value = if a <= 3.0 {
        let (mut term, mut sum, mut k) = (a, a, 0.0f64);
        // term_k = (-1)^k a^(2k+1) / k!; sum of term_k / (2k+1).
        while term.abs() > 1e-17 * sum.abs().max(1e-300) || k < 3.0 {
            k += 1.0;
            term *= -a * a / k;
            sum += term / (2.0 * k + 1.0);
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    } else {
        // erfc(a) = exp(-a^2)/sqrt(pi) * 1/(a + (1/2)/(a + 1/(a + (3/2)/(a + 2/(a + ...))))).
        let mut f = a;
        for n in (1..200).rev() {
            f = a + (n as f64 / 2.0) / f;
        }
        1.0 - (-a * a).exp() / std::f64::consts::PI.sqrt() / f
    };
    value.copysign(x)
}

#[test]
fn the_f64_erf_reference_is_right() {
    // Published values (Abramowitz & Stegun table 7.1 and later tables); 1e-12 covers the
    // series' cancellation at 3 (~3e-13) and still sits far below the 1e-8 the tests need.
    for (x, want) in [
        (0.1, 0.1124629160182849),
        (0.5, 0.5204998778130465),
        (1.0, 0.8427007929497149),
        (2.0, 0.9953222650189527),
        (3.0, 0.9999779095030014),
        (3.5, 0.9999992569016276),
    ] {
        assert!((erf_f64(x) - want).abs() < 1e-12, "erf({x}) = {} vs {want}", erf_f64(x));
        assert!((erf_f64(-x) + want).abs() < 1e-12);
    }
}

/// The definition in f64: (f(x), f'(x)).
fn reference(f: ActivationFn, x: f64) -> (f64, f64) {
    let sigmoid = |x: f64| 1.0 / (1.0 + (-x).exp());
    match f {
        ActivationFn::Relu => (x.max(0.0), if x > 0.0 { 1.0 } else { 0.0 }),
        ActivationFn::LeakyRelu { negative_slope: a } => {
            let a = a as f64;
            if x > 0.0 {
                (x, 1.0)
            } else {
                (a * x, a)
            }
        }
        ActivationFn::Elu { alpha } => {
            let a = alpha as f64;
            if x > 0.0 {
                (x, 1.0)
            } else {
                (a * (x.exp() - 1.0), a * x.exp())
            }
        }
        ActivationFn::Gelu => {
            let cdf = 0.5 * (1.0 + erf_f64(x / std::f64::consts::SQRT_2));
            let pdf = (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt();
            (x * cdf, cdf + x * pdf)
        }
        ActivationFn::Sigmoid => (sigmoid(x), sigmoid(x) * (1.0 - sigmoid(x))),
        ActivationFn::Tanh => (x.tanh(), 1.0 - x.tanh() * x.tanh()),
        ActivationFn::Swish => (x * sigmoid(x), sigmoid(x) * (1.0 + x * (1.0 - sigmoid(x)))),
    }
}

/// Inputs from -12 to 12 in steps of 1/256, plus values near 0 and far out.
fn grid() -> Vec<f32> {
    let mut xs: Vec<f32> = (-12 * 256..=12 * 256).map(|i| i as f32 / 256.0).collect();
    xs.extend([1e-30, -1e-30, 1e-7, -1e-7, 3e-4, -3e-4, 30.0, -30.0, 88.0, -88.0, 1e4, -1e4, f32::MAX, f32::MIN]);
    xs
}

/// The erf approximation's largest error against the f64 erf above, on every f32 from -6 to 6
/// in steps of 2^-12 and on small values. The approximation itself (exact arithmetic) is off
/// by 6.5e-8; evaluated in f32 with fused multiply-adds, as here, an f32 simulation of these
/// same steps measured 3.2e-7 absolute (about 2.7 ulp of 1) and 2.2e-7 relative where
/// |x| < 0.5 (erf(x) ~ 1.13 x there, so GELU near 0 keeps its relative precision). Bounds:
/// 4e-7 absolute, 4e-7 relative below 0.5. Outside [-4, 4] it is its value at +-4 (1 in f32).
#[test]
fn erf_approximation_is_within_its_stated_error() {
    let (mut worst_abs, mut worst_rel) = (0.0f64, 0.0f64);
    let small = (1..=200).map(|i| 0.5f32 * (i as f32 / 200.0).powi(6));
    for x in (-6 * 4096..=6 * 4096).map(|i| i as f32 / 4096.0).chain(small).chain([1e-20, 1e-10]) {
        for x in [x, -x] {
            let (got, want) = (erf(x) as f64, erf_f64(x as f64));
            worst_abs = worst_abs.max((got - want).abs());
            if x.abs() < 0.5 && x != 0.0 {
                worst_rel = worst_rel.max(((got - want) / want).abs());
            }
        }
    }
    eprintln!("erf approximation: max abs error {worst_abs:.3e}, max rel error below 0.5 {worst_rel:.3e}");
    assert!(worst_abs <= 4e-7, "erf max abs error {worst_abs:e}");
    assert!(worst_rel <= 4e-7, "erf max relative error near 0 {worst_rel:e}");
}

/// Forward and derivative of every function against the f64 definition. Tolerance atol 1e-6 plus
/// rtol 1e-6: f32 evaluation of exp, one division and a few products costs a few ulp
/// (rtol), and near 0 the exp-based forms (tanh, sigmoid's 1 - y) lose up to ~1e-7 absolute
/// to the rounding of numbers near 1 (atol); the erf approximation's 4e-7 enters GELU times
/// |x| / 2 only while |x| / sqrt 2 < 4 (erf is then exactly 1); an f32 simulation of GELU on this
/// grid stayed under 0.6 of this tolerance. A wrong formula or a wrong parameter
/// is off by far more.
#[test]
fn each_activation_matches_its_definition() {
    let xs = grid();
    for f in ALL {
        // f32::MAX and MIN: x * x would overflow an unguarded formula; the results stay finite.
        let y: Vec<f32> = xs.iter().map(|&x| forward(f, x)).collect();
        let d: Vec<f32> = xs.iter().zip(&y).map(|(&x, &y)| derivative(f, x, y)).collect();
        assert!(y.iter().chain(&d).all(|v| v.is_finite()), "{f:?}: a non-finite value");
        let keep: Vec<usize> = (0..xs.len()).filter(|&i| xs[i].abs() <= 1e4).collect();
        let pick = |v: &[f32]| keep.iter().map(|&i| v[i]).collect::<Vec<_>>();
        let want: Vec<(f64, f64)> = keep.iter().map(|&i| reference(f, xs[i] as f64)).collect();
        assert_close(&format!("{f:?} forward"), &pick(&y), &want.iter().map(|w| w.0).collect::<Vec<_>>(), 1e-6, 1e-6);
        assert_close(&format!("{f:?} derivative"), &pick(&d), &want.iter().map(|w| w.1).collect::<Vec<_>>(), 1e-6, 1e-6);
    }
}

fn up<B: Backend>(b: &B, data: &[f32]) -> B::Tensor {
    let mut t = b.tensor(data.len()).unwrap();
    b.upload(&mut t, data);
    t
}

/// (y, dx) of one activation on backend `b`: y = f(x), dx = dy * f'(x).
fn run<B: Backend>(b: &B, f: ActivationFn, x: &[f32], dy: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let (xt, mut dt) = (up(b, x), up(b, dy));
    let mut y = b.tensor(x.len()).unwrap();
    b.activation_forward(&xt, &mut y, x.len(), f);
    b.activation_backward(&xt, &y, &mut dt, x.len(), f);
    b.flush().unwrap();
    (b.download(&y).unwrap(), b.download(&dt).unwrap())
}

#[test]
fn activation_backward_matches_finite_differences() {
    // L = sum(dy * f(x)) through the CPU backend; central differences with h = 1e-2 in f64 of
    // the f32 forward. Truncation h^2 / 6 * |f'''| <= 3e-5 (|f'''| <= 2 for all seven) and
    // rounding 2 * 2^-24 * |dy f| / (2h) <= 1e-5 at |x| <= 3: atol 1e-4 + rtol 1e-3. Inputs stay
    // 0.05 away from 0, where relu, leaky_relu and elu have their kink.
    let cpu = CpuBackend::new();
    let mut rng = Rng::new(0xac71);
    let x: Vec<f32> = uniform_vec(&mut rng, 500).into_iter().map(|v| 3.0 * v).map(|v| if v.abs() < 0.05 { v + 0.1 } else { v }).collect();
    let dy = uniform_vec(&mut rng, 500);
    let h = 1e-2f32;
    for f in ALL {
        let (_, dx) = run(&cpu, f, &x, &dy);
        let numeric: Vec<f64> = x.iter().zip(&dy).map(|(&x, &d)| d as f64 * (forward(f, x + h) as f64 - forward(f, x - h) as f64) / (2.0 * h as f64)).collect();
        assert_close(&format!("{f:?} dx"), &dx, &numeric, 1e-4, 1e-3);
    }
}

/// 7 x 13 x 13 x 5 inputs: uniform in [-8, 8], then values near 0 and far out (no function
/// may make an infinity or NaN of them on either backend).
fn gpu_inputs(rng: &mut Rng) -> Vec<f32> {
    let mut x: Vec<f32> = uniform_vec(rng, 7 * 13 * 13 * 5).into_iter().map(|v| 8.0 * v).collect();
    let extremes = [0.0, -0.0, 1e-30, -1e-30, 1e-6, -1e-6, 30.0, -30.0, 88.0, -88.0, 1e4, -1e4, 1e30, -1e30];
    x[..extremes.len()].copy_from_slice(&extremes);
    x
}

gpu_test! {
    /// GPU against CPU, forward and backward, every function. The shader evaluates the same
    /// expressions (activation.wgsl mirrors activation.rs), so the only differences are the
    /// GPU's exp (WGSL allows 3 + 2|x| ulp) and division (2.5 ulp): for the exp arguments here
    /// (|x| <= 16 after scaling) that is at most ~35 ulp of a value <= 1, 4e-6, and the
    /// derivatives from y inherit it times <= 2: atol 1e-5 + rtol 1e-5.
    fn activations_gpu_match_cpu(gpu: &GpuBackend) {
        let cpu = CpuBackend::new();
        let mut rng = Rng::new(0xac72);
        let x = gpu_inputs(&mut rng);
        let dy = uniform_vec(&mut rng, x.len());
        for f in ALL {
            let want = run(&cpu, f, &x, &dy);
            let got = run(gpu, f, &x, &dy);
            assert!(got.0.iter().chain(&got.1).all(|v| v.is_finite()), "{f:?}: the GPU made a non-finite value");
            assert_close(&format!("{f:?} y"), &got.0, &want.0, 1e-5, 1e-5);
            assert_close(&format!("{f:?} dx"), &got.1, &want.1, 1e-5, 1e-5);
            // A second run gives the same bits (seeded runs repeat).
            let again = run(gpu, f, &x, &dy);
            assert_same_bits(&format!("{f:?} y repeated"), &again.0, &got.0);
            assert_same_bits(&format!("{f:?} dx repeated"), &again.1, &got.1);
        }
    }
}

backend_test! {
    /// Only the first `len` elements are touched (a final partial batch uses a prefix of
    /// buffers sized for the largest batch).
    fn activations_touch_only_len_elements<B>(b: &B) {
        let x = common::random_vec(100, 7);
        for f in [ActivationFn::Gelu, ActivationFn::LeakyRelu { negative_slope: 0.3 }] {
            let (xt, mut dt) = (up(b, &x), up(b, &[2.0; 100]));
            let mut y = up(b, &[5.0; 100]);
            b.activation_forward(&xt, &mut y, 60, f);
            b.activation_backward(&xt, &y, &mut dt, 60, f);
            let (y, d) = (b.download(&y).unwrap(), b.download(&dt).unwrap());
            assert!(y[60..].iter().all(|&v| v == 5.0) && d[60..].iter().all(|&v| v == 2.0), "{f:?}: wrote past len");
            assert!(y[..60].iter().all(|&v| v != 5.0), "{f:?}: left the prefix unwritten");
        }
    }
}
