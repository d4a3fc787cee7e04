// Keras's RMSprop (keras/src/optimizers/rmsprop.py update_step; momentum 0, centered false),
// one invocation per parameter. The step's scalars come in their own small uniform.

struct RmsPropShape {
    len: u32, unused0: u32, unused1: u32, unused2: u32,
}

struct RmsPropScalars {
    learning_rate: f32, rho: f32, epsilon: f32, unused0: f32,
}

@group(0) @binding(0) var<uniform> shape: RmsPropShape;
@group(0) @binding(1) var<uniform> h: RmsPropScalars;
@group(0) @binding(2) var<storage, read_write> param: array<f32>;
@group(0) @binding(3) var<storage, read> grad: array<f32>;
@group(0) @binding(4) var<storage, read_write> velocity: array<f32>;

// velocity = rho * velocity + (1 - rho) * g^2; param -= lr * g / sqrt(velocity + epsilon).
@compute @workgroup_size(LINEAR_GROUP)
fn rmsprop_update(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wg: vec3<u32>,
                  @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(lid, wg, nwg);
    if (i >= shape.len) { return; }
    let g = grad[i];
    let v_new = h.rho * velocity[i] + (1.0 - h.rho) * (g * g);
    velocity[i] = v_new;
    param[i] = param[i] - h.learning_rate * g / sqrt(v_new + h.epsilon);
}
