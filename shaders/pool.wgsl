// Max-pooling ("valid" windows), NHWC. The backward pass uses no atomics: each input element
// visits the windows that can cover it and adds dy where that window's argmax is this element,
// in increasing window order (the CPU's order), so overlapping windows are handled and the sum
// is deterministic.

struct PoolParams {
    n: u32, in_h: u32, in_w: u32, c: u32,
    out_h: u32, out_w: u32, size_h: u32, size_w: u32,
    stride_h: u32, stride_w: u32, relu_mask: u32, unused: u32,
}

@group(0) @binding(0) var<uniform> p: PoolParams;
@group(0) @binding(1) var<storage, read> in0: array<f32>;
@group(0) @binding(2) var<storage, read> argmax_in: array<u32>;
@group(0) @binding(3) var<storage, read_write> out0: array<f32>;
@group(0) @binding(4) var<storage, read_write> argmax_out: array<u32>;
// With p.relu_mask: the pool input's ReLU output, (n, in_h, in_w, c) (see maxpool_backward).
@group(0) @binding(5) var<storage, read> relu_y: array<f32>;

// x (n, in_h, in_w, c) = in0 -> y (n, out_h, out_w, c) = out0, argmax = flat index into x of
// the first max of each window. One invocation per element of y.
@compute @workgroup_size(LINEAR_GROUP)
fn maxpool_forward(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wg: vec3<u32>,
                   @builtin(num_workgroups) nwg: vec3<u32>) {
    let id = linear_index(lid, wg, nwg);
    let out_len = p.out_h * p.out_w * p.c;
    if (id >= p.n * out_len) { return; }
    let img = id / out_len;
    let o = id % out_len;
    let ch = o % p.c;
    let ox = (o / p.c) % p.out_w;
    let oy = o / (p.c * p.out_w);
    let base = img * p.in_h * p.in_w * p.c;
    var best = 0.0;
    var best_at = 0u;
    for (var ky = 0u; ky < p.size_h; ky++) {
        for (var kx = 0u; kx < p.size_w; kx++) {
            let at = base + ((oy * p.stride_h + ky) * p.in_w + ox * p.stride_w + kx) * p.c + ch;
            let v = in0[at];
            if (v > best || (ky == 0u && kx == 0u)) {
                best = v;
                best_at = at;
            }
        }
    }
    out0[id] = best;
    argmax_out[id] = best_at;
}

// dy (n, out_h, out_w, c) = in0, argmax = argmax_in -> dx (n, in_h, in_w, c) = out0; with
// p.relu_mask, 0 where relu_y <= 0 (the backward of the ReLU that made the pool's input, fused).
// One invocation per element of dx.
@compute @workgroup_size(LINEAR_GROUP)
fn maxpool_backward(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wg: vec3<u32>,
                    @builtin(num_workgroups) nwg: vec3<u32>) {
    let id = linear_index(lid, wg, nwg);
    let in_len = p.in_h * p.in_w * p.c;
    if (id >= p.n * in_len) { return; }
    let img = id / in_len;
    let q = id % in_len;
    let ch = q % p.c;
    let ix = (q / p.c) % p.in_w;
    let iy = q / (p.c * p.in_w);
    // Windows oy with oy*stride <= iy < oy*stride + size, clipped to the output.
    var oy_lo = 0u;
    if (iy + 1u > p.size_h) { oy_lo = (iy + 1u - p.size_h + p.stride_h - 1u) / p.stride_h; }
    let oy_end = min(iy / p.stride_h + 1u, p.out_h);
    var ox_lo = 0u;
    if (ix + 1u > p.size_w) { ox_lo = (ix + 1u - p.size_w + p.stride_w - 1u) / p.stride_w; }
    let ox_end = min(ix / p.stride_w + 1u, p.out_w);
    let out_base = img * p.out_h * p.out_w * p.c;
    var sum = 0.0;
    for (var oy = oy_lo; oy < oy_end; oy++) {
        for (var ox = ox_lo; ox < ox_end; ox++) {
            let o = out_base + (oy * p.out_w + ox) * p.c + ch;
            if (argmax_in[o] == id) {
                sum += in0[o];
            }
        }
    }
    if (p.relu_mask != 0u && relu_y[id] <= 0.0) {
        sum = 0.0;
    }
    out0[id] = sum;
}
