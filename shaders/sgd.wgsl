// Keras's SGD (keras/src/optimizers/sgd.py update_step), one invocation per parameter. The
// step's scalars come in their own small uniform, written once per step by the host.

struct SgdShape {
    len: u32, unused0: u32, unused1: u32, unused2: u32,
}

struct SgdScalars {
    learning_rate: f32, momentum: f32, nesterov: u32, unused0: u32,
}

@group(0) @binding(0) var<uniform> shape: SgdShape;
@group(0) @binding(1) var<uniform> h: SgdScalars;
@group(0) @binding(2) var<storage, read_write> param: array<f32>;
@group(0) @binding(3) var<storage, read> grad: array<f32>;
@group(0) @binding(4) var<storage, read_write> velocity: array<f32>;

// Without momentum: param -= grad * learning_rate.
@compute @workgroup_size(LINEAR_GROUP)
fn sgd_update(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wg: vec3<u32>,
              @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(lid, wg, nwg);
    if (i >= shape.len) { return; }
    param[i] = param[i] - grad[i] * h.learning_rate;
}

// With momentum: m = m * momentum - g * lr; param += m, or with Nesterov
// param += m * momentum - g * lr. `velocity` is Keras's `momentum` variable.
@compute @workgroup_size(LINEAR_GROUP)
fn sgd_momentum_update(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wg: vec3<u32>,
                       @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(lid, wg, nwg);
    if (i >= shape.len) { return; }
    let g = grad[i];
    let m_new = velocity[i] * h.momentum - g * h.learning_rate;
    velocity[i] = m_new;
    if (h.nesterov != 0u) {
        param[i] = param[i] + (m_new * h.momentum - g * h.learning_rate);
    } else {
        param[i] = param[i] + m_new;
    }
}
