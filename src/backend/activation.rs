//! The element-wise activations' formulas, one scalar function each way, shared by the CPU
//! backend and mirrored line by line in shaders/activation.wgsl (so the GPU computes the same
//! expressions, up to its exp's and division's accuracy).
//!
//! Definitions are Keras 3's (keras/src/activations/activations.py and the TensorFlow backend's
//! keras/src/backend/tensorflow/nn.py): relu, leaky_relu (tf.nn.leaky_relu), elu (tf.nn.elu,
//! times alpha where x <= 0), gelu with approximate=False (0.5 x (1 + erf(x / sqrt 2))),
//! sigmoid, tanh, silu/swish (x * sigmoid(x)).
//!
//! Backward: dx = dy * f'(x). Where the output y = f(x) gives f' exactly and cheaper it is
//! used, as TensorFlow's own gradients do: sigmoid y (1 - y) (SigmoidGrad), tanh 1 - y^2
//! (TanhGrad), elu y + alpha for x <= 0 (EluGrad). relu and leaky_relu test x's sign; gelu and
//! swish need x.
//!
//! Nothing here makes an infinity from a finite input (WGSL lets a GPU assume there are none):
//! exp only ever sees arguments <= 0.

use super::ActivationFn;

/// The function's value f(x).
pub fn forward(f: ActivationFn, x: f32) -> f32 {
    match f {
        ActivationFn::Relu => x.max(0.0),
        ActivationFn::LeakyRelu { negative_slope } => {
            if x > 0.0 {
                x
            } else {
                negative_slope * x
            }
        }
        ActivationFn::Elu { alpha } => {
            if x > 0.0 {
                x
            } else {
                alpha * (x.exp() - 1.0)
            }
        }
        ActivationFn::Gelu => 0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2)),
        ActivationFn::Sigmoid => sigmoid(x),
        ActivationFn::Tanh => tanh(x),
        ActivationFn::Swish => x * sigmoid(x),
    }
}

/// f'(x), given x and y = f(x).
pub fn derivative(f: ActivationFn, x: f32, y: f32) -> f32 {
    match f {
        ActivationFn::Relu => {
            if x > 0.0 {
                1.0
            } else {
                0.0
            }
        }
        ActivationFn::LeakyRelu { negative_slope } => {
            if x > 0.0 {
                1.0
            } else {
                negative_slope
            }
        }
        ActivationFn::Elu { alpha } => {
            if x > 0.0 {
                1.0
            } else {
                y + alpha
            }
        }
        // Phi(x) + x phi(x); phi's argument clamped to +-10 so x*x cannot overflow (phi(10) is
        // 7.7e-23: the clamp changes nothing visible).
        ActivationFn::Gelu => {
            let t = x.clamp(-10.0, 10.0);
            0.5 * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2)) + t * (-0.5 * t * t).exp() * FRAC_1_SQRT_2PI
        }
        ActivationFn::Sigmoid => y * (1.0 - y),
        ActivationFn::Tanh => 1.0 - y * y,
        ActivationFn::Swish => {
            let s = sigmoid(x);
            s * (1.0 + x * (1.0 - s))
        }
    }
}

/// 1 / sqrt(2 pi), the standard normal density's factor.
#[allow(clippy::excessive_precision)]
const FRAC_1_SQRT_2PI: f32 = 0.3989422804014327;

/// 1 / (1 + exp(-x)), evaluated with exp of -|x| only (no overflow for any finite x).
pub fn sigmoid(x: f32) -> f32 {
    let e = (-x.abs()).exp();
    if x >= 0.0 {
        1.0 / (1.0 + e)
    } else {
        e / (1.0 + e)
    }
}

/// tanh through exp(-2|x|), the sign put back: the same formula as the shader (WGSL's tanh
/// builtin overflows through sinh/cosh on some drivers). Absolute error a few 1e-8 against
/// f64 (the subtraction 1 - e costs one rounding of a number near 1); tests/activations.rs
/// measures it.
pub fn tanh(x: f32) -> f32 {
    let e = (-2.0 * x.abs()).exp();
    let t = (1.0 - e) / (1.0 + e);
    if x < 0.0 {
        -t
    } else {
        t
    }
}

/// erf(x) in f32 with no erf builtin (WGSL has none): Eigen's rational approximation
/// (generic_fast_erf_float, also TensorFlow/XLA's f32 erf), x P(x^2) / Q(x^2) on x clamped to
/// [-4, 4] (erf(4) rounds to 1 in f32), Horner with fused multiply-adds, clamped to [-1, 1].
/// Max error 6.5e-8 in exact arithmetic, 3.2e-7 absolute as evaluated in f32 (measured; the
/// test in tests/activations.rs bounds it by 4e-7 against an f64 erf).
#[allow(clippy::excessive_precision)] // Eigen's coefficients as published, rounded to f32 by the compiler
pub fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = -2.72614225801306e-10_f32;
    for a in [2.77068142495902e-08_f32, -2.10102402082508e-06, -5.69250639462346e-05, -7.34990630326855e-04, -2.95459980854025e-03, -1.60960333262415e-02] {
        p = p.mul_add(x2, a);
    }
    let mut q = -1.45660718464996e-05_f32;
    for b in [-2.13374055278905e-04_f32, -1.68282697438203e-03, -7.37332916720468e-03, -1.42647390514189e-02] {
        q = q.mul_add(x2, b);
    }
    (x * p / q).clamp(-1.0, 1.0)
}
