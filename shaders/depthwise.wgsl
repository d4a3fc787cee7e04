// Depthwise convolution (Keras DepthwiseConv2D): input channel c has `multiplier` filters of its
// own, output channel o = c * multiplier + m. NHWC activations; the kernel (k_h, k_w, channels,
// multiplier) is (taps, out_c) row-major. Tap (ky, kx) of output (oy, ox) reads input
// (oy * stride_h + ky * dilation_h - pad_top, ...). One invocation per value computed; every sum
// runs in a fixed order (taps in order; the filter gradient's pixels in order within a split,
// the splits added in order by matmul.wgsl's sum_split_partials): no atomics, deterministic.
// The CPU twin is src/backend/cpu/depthwise.rs.

struct DepthwiseParams {
    n: u32, in_h: u32, in_w: u32, channels: u32,
    multiplier: u32, out_h: u32, out_w: u32, k_h: u32,
    k_w: u32, stride_h: u32, stride_w: u32, pad_top: u32,
    pad_left: u32, dilation_h: u32, dilation_w: u32, bias: u32,
    relu: u32, k_per_split: u32, unused0: u32, unused1: u32,
}

@group(0) @binding(0) var<uniform> p: DepthwiseParams;
@group(0) @binding(1) var<storage, read> in0: array<f32>;
@group(0) @binding(2) var<storage, read> in1: array<f32>;
@group(0) @binding(3) var<storage, read> in2: array<f32>;
@group(0) @binding(4) var<storage, read_write> out0: array<f32>;

fn out_c() -> u32 {
    return p.channels * p.multiplier;
}

// The input row (or column) that tap k of output row o reads, -1 in the padding.
fn input_coord(o: u32, k: u32, stride: u32, dilation: u32, pad: u32, limit: u32) -> i32 {
    let i = i32(o * stride + k * dilation) - i32(pad);
    if (i < 0 || i >= i32(limit)) { return -1; }
    return i;
}

// The output row (or column) whose tap k reads input row i, -1 when none does.
fn output_coord(i: u32, k: u32, stride: u32, dilation: u32, pad: u32, limit: u32) -> i32 {
    let t = i32(i + pad) - i32(k * dilation);
    if (t < 0) { return -1; }
    var o = u32(t);
    // Only strided convolutions pay for a division (the branch is uniform).
    if (stride != 1u) {
        if (o % stride != 0u) { return -1; }
        o = o / stride;
    }
    if (o >= limit) { return -1; }
    return i32(o);
}

// x (n, in_h, in_w, channels) = in0, w (taps, out_c) = in1, b (out_c) = in2 (read only when
// p.bias != 0) -> y (n, out_h, out_w, out_c) = out0, ReLU'd when p.relu != 0.
@compute @workgroup_size(LINEAR_GROUP)
fn depthwise_forward(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wg: vec3<u32>,
                     @builtin(num_workgroups) nwg: vec3<u32>) {
    let id = linear_index(lid, wg, nwg);
    let oc = out_c();
    if (id >= p.n * p.out_h * p.out_w * oc) { return; }
    let o = id % oc;
    let pixel = id / oc;
    let ox = pixel % p.out_w;
    let oy = (pixel / p.out_w) % p.out_h;
    let img = pixel / (p.out_w * p.out_h);
    let c = o / p.multiplier;
    var sum = 0.0;
    for (var ky = 0u; ky < p.k_h; ky++) {
        let iy = input_coord(oy, ky, p.stride_h, p.dilation_h, p.pad_top, p.in_h);
        if (iy < 0) { continue; }
        for (var kx = 0u; kx < p.k_w; kx++) {
            let ix = input_coord(ox, kx, p.stride_w, p.dilation_w, p.pad_left, p.in_w);
            if (ix < 0) { continue; }
            sum += in0[((img * p.in_h + u32(iy)) * p.in_w + u32(ix)) * p.channels + c] * in1[(ky * p.k_w + kx) * oc + o];
        }
    }
    if (p.bias != 0u) { sum += in2[o]; }
    if (p.relu != 0u) { sum = max(sum, 0.0); }
    out0[id] = sum;
}

// dy (n, out_h, out_w, out_c) = in0, w (taps, out_c) = in1 -> dx (n, in_h, in_w, channels) =
// out0: each input value gathers, taps in order and each tap's filters in order, the outputs
// that read it.
@compute @workgroup_size(LINEAR_GROUP)
fn depthwise_backward_input(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wg: vec3<u32>,
                            @builtin(num_workgroups) nwg: vec3<u32>) {
    let id = linear_index(lid, wg, nwg);
    if (id >= p.n * p.in_h * p.in_w * p.channels) { return; }
    let oc = out_c();
    let c = id % p.channels;
    let pixel = id / p.channels;
    let ix = pixel % p.in_w;
    let iy = (pixel / p.in_w) % p.in_h;
    let img = pixel / (p.in_w * p.in_h);
    var sum = 0.0;
    for (var ky = 0u; ky < p.k_h; ky++) {
        let oy = output_coord(iy, ky, p.stride_h, p.dilation_h, p.pad_top, p.out_h);
        if (oy < 0) { continue; }
        for (var kx = 0u; kx < p.k_w; kx++) {
            let ox = output_coord(ix, kx, p.stride_w, p.dilation_w, p.pad_left, p.out_w);
            if (ox < 0) { continue; }
            let dy_at = ((img * p.out_h + u32(oy)) * p.out_w + u32(ox)) * oc + c * p.multiplier;
            let w_at = (ky * p.k_w + kx) * oc + c * p.multiplier;
            for (var m = 0u; m < p.multiplier; m++) {
                sum += in0[dy_at + m] * in1[w_at + m];
            }
        }
    }
    out0[id] = sum;
}

// x (n, in_h, in_w, channels) = in0, dy (n, out_h, out_w, out_c) = in1 -> partial sums
// (splits, taps + 1, out_c) = out0: split z sums the batch's output pixels [z * k_per_split,
// (z + 1) * k_per_split) in order; row `taps` of each split is the bias gradient (dy's sum).
// One invocation per partial sum.
@compute @workgroup_size(LINEAR_GROUP)
fn depthwise_backward_filter(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wg: vec3<u32>,
                             @builtin(num_workgroups) nwg: vec3<u32>) {
    let id = linear_index(lid, wg, nwg);
    let oc = out_c();
    let taps = p.k_h * p.k_w;
    let per_split = (taps + 1u) * oc;
    let pixels = p.n * p.out_h * p.out_w;
    let split = id / per_split;
    if (split * p.k_per_split >= pixels) { return; }
    let o = id % oc;
    let tap = (id / oc) % (taps + 1u);
    let c = o / p.multiplier;
    let ky = tap / p.k_w;
    let kx = tap % p.k_w;
    let end = min((split + 1u) * p.k_per_split, pixels);
    // Output pixel q = (img, oy, ox), carried instead of divided.
    var q = split * p.k_per_split;
    var ox = q % p.out_w;
    var oy = (q / p.out_w) % p.out_h;
    var img = q / (p.out_w * p.out_h);
    var sum = 0.0;
    for (; q < end; q++) {
        let g = in1[q * oc + o];
        if (tap == taps) {
            sum += g;
        } else {
            let iy = input_coord(oy, ky, p.stride_h, p.dilation_h, p.pad_top, p.in_h);
            let ix = input_coord(ox, kx, p.stride_w, p.dilation_w, p.pad_left, p.in_w);
            if (iy >= 0 && ix >= 0) {
                sum += in0[((img * p.in_h + u32(iy)) * p.in_w + u32(ix)) * p.channels + c] * g;
            }
        }
        ox += 1u;
        if (ox == p.out_w) {
            ox = 0u;
            oy += 1u;
            if (oy == p.out_h) { oy = 0u; img += 1u; }
        }
    }
    out0[id] = sum;
}
