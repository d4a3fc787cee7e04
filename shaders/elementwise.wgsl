// Element-wise ops. One invocation per element; the grid may be 2-D when a 1-D one would pass
// the 65535-workgroups-per-dimension limit.

struct ElementwiseParams {
    len: u32, unused0: u32, unused1: u32, unused2: u32,
}

@group(0) @binding(0) var<uniform> p: ElementwiseParams;
@group(0) @binding(1) var<storage, read> in0: array<f32>;
@group(0) @binding(2) var<storage, read_write> out0: array<f32>;

// y (len) = in0, the ReLU's output; dy (len) = out0, zeroed where y <= 0.
@compute @workgroup_size(LINEAR_GROUP)
fn relu_backward(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wg: vec3<u32>,
                 @builtin(num_workgroups) nwg: vec3<u32>) {
    let id = linear_index(lid, wg, nwg);
    if (id >= p.len) { return; }
    if (in0[id] <= 0.0) {
        out0[id] = 0.0;
    }
}
