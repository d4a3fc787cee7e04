// Keras's AdamW, one invocation per parameter: the decoupled weight decay every Keras
// optimizer applies before its step (keras/src/optimizers/base_optimizer.py
// `_apply_weight_decay`: p = p - p * weight_decay * lr), then Adam's step as adam.wgsl.
// The step's scalars come in their own small uniform, written once per step by the host.

struct AdamWShape {
    len: u32, unused0: u32, unused1: u32, unused2: u32,
}

// alpha = lr * sqrt(1 - beta2^t) / (1 - beta1^t), computed on the host in f64.
struct AdamWScalars {
    alpha: f32, beta1: f32, beta2: f32, epsilon: f32,
    learning_rate: f32, weight_decay: f32, unused0: f32, unused1: f32,
}

@group(0) @binding(0) var<uniform> shape: AdamWShape;
@group(0) @binding(1) var<uniform> h: AdamWScalars;
@group(0) @binding(2) var<storage, read_write> param: array<f32>;
@group(0) @binding(3) var<storage, read> grad: array<f32>;
@group(0) @binding(4) var<storage, read_write> m: array<f32>;
@group(0) @binding(5) var<storage, read_write> v: array<f32>;

// param, m, v (len) updated in place from grad (len).
@compute @workgroup_size(LINEAR_GROUP)
fn adamw_update(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wg: vec3<u32>,
                @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(lid, wg, nwg);
    if (i >= shape.len) { return; }
    let p = param[i] - param[i] * h.weight_decay * h.learning_rate;
    let g = grad[i];
    let m_new = m[i] + (g - m[i]) * (1.0 - h.beta1);
    let v_new = v[i] + (g * g - v[i]) * (1.0 - h.beta2);
    m[i] = m_new;
    v[i] = v_new;
    param[i] = p - h.alpha * m_new / (sqrt(v_new) + h.epsilon);
}
