// Inverted dropout: out0[i] = in0[i] * scale where element i is kept, else 0. The mask is a
// counter-based hash of (the step's key, the layer, i) in u32 arithmetic, the same operations
// as src/backend/dropout.rs, so both backends draw the same mask and nothing is stored: the
// backward is this kernel again on dy with the same key.

struct DropoutParams {
    len: u32, layer: u32, threshold: u32, scale: f32,
}

@group(0) @binding(0) var<uniform> p: DropoutParams;
@group(0) @binding(1) var<storage, read> in0: array<f32>;
@group(0) @binding(2) var<storage, read_write> out0: array<f32>;
// The step's key (2 u32), written once per step: the cached uniform stays the same each step.
@group(0) @binding(3) var<storage, read> key: array<u32>;

// PCG's output hash (RXS-M-XS on one LCG step), as pcg_hash in dropout.rs.
fn pcg_hash(v: u32) -> u32 {
    let state = v * 747796405u + 2891336453u;
    let word = ((state >> ((state >> 28u) + 4u)) ^ state) * 277803737u;
    return (word >> 22u) ^ word;
}

@compute @workgroup_size(LINEAR_GROUP)
fn dropout(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wg: vec3<u32>,
           @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(lid, wg, nwg);
    if (i >= p.len) { return; }
    let stream = pcg_hash(key[0] ^ pcg_hash(key[1] ^ p.layer));
    let bits = pcg_hash(pcg_hash(i ^ stream) ^ key[1]);
    var y = 0.0;
    if (bits >= p.threshold) {
        y = in0[i] * p.scale;
    }
    out0[i] = y;
}
