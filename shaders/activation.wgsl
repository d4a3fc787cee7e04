// Element-wise activations, forward y = f(x) and backward dy *= f'(x) in place. The formulas
// mirror src/backend/activation.rs line by line (that file cites Keras 3's definitions); kind
// numbers are ActivationFn's (src/backend/gpu/activation.rs). No expression makes an
// infinity from a finite input (WGSL lets an implementation assume there are none): exp only
// sees arguments <= 0. One invocation per element; the grid may be 2-D.

struct ActivationParams {
    len: u32, kind: u32, alpha: f32, unused: u32,
}

const RELU: u32 = 0u;
const LEAKY_RELU: u32 = 1u;
const ELU: u32 = 2u;
const GELU: u32 = 3u;
const SIGMOID: u32 = 4u;
const TANH: u32 = 5u;
const SWISH: u32 = 6u;

const FRAC_1_SQRT_2: f32 = 0.7071067811865476;
const FRAC_1_SQRT_2PI: f32 = 0.3989422804014327;

@group(0) @binding(0) var<uniform> p: ActivationParams;
// x: the activation's input.
@group(0) @binding(1) var<storage, read> x_in: array<f32>;
// y: its output, written by the forward.
@group(0) @binding(2) var<storage, read_write> y_out: array<f32>;
// dy, multiplied in place by f'(x) in the backward.
@group(0) @binding(3) var<storage, read_write> grad: array<f32>;
// y again, read by the backward.
@group(0) @binding(4) var<storage, read> y_in: array<f32>;

fn sigmoid(x: f32) -> f32 {
    let e = exp(-abs(x));
    return select(e / (1.0 + e), 1.0 / (1.0 + e), x >= 0.0);
}

fn tanh_via_exp(x: f32) -> f32 {
    let e = exp(-2.0 * abs(x));
    let t = (1.0 - e) / (1.0 + e);
    return select(t, -t, x < 0.0);
}

// Eigen's rational erf approximation (activation.rs erf): x P(x^2) / Q(x^2) on [-4, 4].
fn erf_approx(x_any: f32) -> f32 {
    let x = clamp(x_any, -4.0, 4.0);
    let x2 = x * x;
    var p = -2.72614225801306e-10;
    p = fma(p, x2, 2.77068142495902e-08);
    p = fma(p, x2, -2.10102402082508e-06);
    p = fma(p, x2, -5.69250639462346e-05);
    p = fma(p, x2, -7.34990630326855e-04);
    p = fma(p, x2, -2.95459980854025e-03);
    p = fma(p, x2, -1.60960333262415e-02);
    var q = -1.45660718464996e-05;
    q = fma(q, x2, -2.13374055278905e-04);
    q = fma(q, x2, -1.68282697438203e-03);
    q = fma(q, x2, -7.37332916720468e-03);
    q = fma(q, x2, -1.42647390514189e-02);
    return clamp(x * p / q, -1.0, 1.0);
}

fn activate(x: f32) -> f32 {
    switch p.kind {
        case RELU: { return max(x, 0.0); }
        case LEAKY_RELU: { return select(p.alpha * x, x, x > 0.0); }
        case ELU: { return select(p.alpha * (exp(min(x, 0.0)) - 1.0), x, x > 0.0); }
        case GELU: { return 0.5 * x * (1.0 + erf_approx(x * FRAC_1_SQRT_2)); }
        case SIGMOID: { return sigmoid(x); }
        case TANH: { return tanh_via_exp(x); }
        default: { return x * sigmoid(x); }
    }
}

fn derivative(x: f32, y: f32) -> f32 {
    switch p.kind {
        case RELU: { return select(0.0, 1.0, x > 0.0); }
        case LEAKY_RELU: { return select(p.alpha, 1.0, x > 0.0); }
        case ELU: { return select(y + p.alpha, 1.0, x > 0.0); }
        case GELU: {
            let t = clamp(x, -10.0, 10.0);
            return 0.5 * (1.0 + erf_approx(x * FRAC_1_SQRT_2)) + t * exp(-0.5 * t * t) * FRAC_1_SQRT_2PI;
        }
        case SIGMOID: { return y * (1.0 - y); }
        case TANH: { return 1.0 - y * y; }
        default: {
            let s = sigmoid(x);
            return s * (1.0 + x * (1.0 - s));
        }
    }
}

// x (len) -> y (len).
@compute @workgroup_size(LINEAR_GROUP)
fn activation_forward(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wg: vec3<u32>,
                      @builtin(num_workgroups) nwg: vec3<u32>) {
    let id = linear_index(lid, wg, nwg);
    if (id >= p.len) { return; }
    y_out[id] = activate(x_in[id]);
}

// x, y (len) -> dy (len) *= f'(x).
@compute @workgroup_size(LINEAR_GROUP)
fn activation_backward(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wg: vec3<u32>,
                       @builtin(num_workgroups) nwg: vec3<u32>) {
    let id = linear_index(lid, wg, nwg);
    if (id >= p.len) { return; }
    grad[id] = grad[id] * derivative(x_in[id], y_in[id]);
}
