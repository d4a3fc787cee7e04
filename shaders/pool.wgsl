// Max and average pooling, NHWC, "valid" or "same" padding (pad_top/pad_left; the bottom/right
// pad is what out_h/out_w imply). Padding cells are skipped: they never win a max and are not
// counted in an average (Keras). The backward passes use no atomics: each input element visits
// the windows that can cover it, in increasing window order (the CPU's order), so overlapping
// windows are handled and every sum is deterministic. Global pooling is a window of the whole
// image (PoolShape::global).

struct PoolParams {
    n: u32, in_h: u32, in_w: u32, c: u32,
    out_h: u32, out_w: u32, size_h: u32, size_w: u32,
    stride_h: u32, stride_w: u32, relu_mask: u32, pad_top: u32,
    pad_left: u32, unused0: u32, unused1: u32, unused2: u32,
}

@group(0) @binding(0) var<uniform> p: PoolParams;
@group(0) @binding(1) var<storage, read> in0: array<f32>;
@group(0) @binding(2) var<storage, read> argmax_in: array<u32>;
@group(0) @binding(3) var<storage, read_write> out0: array<f32>;
@group(0) @binding(4) var<storage, read_write> argmax_out: array<u32>;
// With p.relu_mask: the pool input's ReLU output, (n, in_h, in_w, c) (see maxpool_backward).
@group(0) @binding(5) var<storage, read> relu_y: array<f32>;

// The input rows (x) .. (y) of the window starting at padded coordinate `start`, clipped to
// 0..len (PoolShape::rows/cols).
fn clipped_window(start: u32, pad: u32, size: u32, len: u32) -> vec2<u32> {
    let lo = select(0u, start - pad, start > pad);
    let end = start + size;
    let hi = min(select(0u, end - pad, end > pad), len);
    return vec2<u32>(lo, hi);
}

// The windows o (0 <= o < out_len) covering padded coordinate q = index + pad:
// o * stride <= q < o * stride + size, as lo .. end.
fn covering_windows(q: u32, size: u32, stride: u32, out_len: u32) -> vec2<u32> {
    var lo = 0u;
    if (q + 1u > size) { lo = (q + 1u - size + stride - 1u) / stride; }
    return vec2<u32>(lo, min(q / stride + 1u, out_len));
}

// x (n, in_h, in_w, c) = in0 -> y (n, out_h, out_w, c) = out0, argmax = flat index into x of
// the first max among the window's real cells. One invocation per element of y.
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
    let rows = clipped_window(oy * p.stride_h, p.pad_top, p.size_h, p.in_h);
    let cols = clipped_window(ox * p.stride_w, p.pad_left, p.size_w, p.in_w);
    var best = 0.0;
    var best_at = 0u;
    for (var iy = rows.x; iy < rows.y; iy++) {
        for (var ix = cols.x; ix < cols.y; ix++) {
            let at = base + (iy * p.in_w + ix) * p.c + ch;
            let v = in0[at];
            if (v > best || (iy == rows.x && ix == cols.x)) {
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
    let wy = covering_windows(iy + p.pad_top, p.size_h, p.stride_h, p.out_h);
    let wx = covering_windows(ix + p.pad_left, p.size_w, p.stride_w, p.out_w);
    let out_base = img * p.out_h * p.out_w * p.c;
    var sum = 0.0;
    for (var oy = wy.x; oy < wy.y; oy++) {
        for (var ox = wx.x; ox < wx.y; ox++) {
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

// The number of real cells of window (oy, ox), as f32.
fn window_count(oy: u32, ox: u32) -> f32 {
    let rows = clipped_window(oy * p.stride_h, p.pad_top, p.size_h, p.in_h);
    let cols = clipped_window(ox * p.stride_w, p.pad_left, p.size_w, p.in_w);
    return f32((rows.y - rows.x) * (cols.y - cols.x));
}

// x (n, in_h, in_w, c) = in0 -> y (n, out_h, out_w, c) = out0: the window's real cells summed
// from 0 in row-then-column order, divided by their count. One invocation per element of y.
@compute @workgroup_size(LINEAR_GROUP)
fn avgpool_forward(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wg: vec3<u32>,
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
    let rows = clipped_window(oy * p.stride_h, p.pad_top, p.size_h, p.in_h);
    let cols = clipped_window(ox * p.stride_w, p.pad_left, p.size_w, p.in_w);
    var sum = 0.0;
    for (var iy = rows.x; iy < rows.y; iy++) {
        for (var ix = cols.x; ix < cols.y; ix++) {
            sum += in0[base + (iy * p.in_w + ix) * p.c + ch];
        }
    }
    out0[id] = sum / window_count(oy, ox);
}

// dy (n, out_h, out_w, c) = in0 -> dx (n, in_h, in_w, c) = out0: the sum over the windows
// covering the element, in increasing order, of dy / count. One invocation per element of dx.
@compute @workgroup_size(LINEAR_GROUP)
fn avgpool_backward(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wg: vec3<u32>,
                    @builtin(num_workgroups) nwg: vec3<u32>) {
    let id = linear_index(lid, wg, nwg);
    let in_len = p.in_h * p.in_w * p.c;
    if (id >= p.n * in_len) { return; }
    let img = id / in_len;
    let q = id % in_len;
    let ch = q % p.c;
    let ix = (q / p.c) % p.in_w;
    let iy = q / (p.c * p.in_w);
    let wy = covering_windows(iy + p.pad_top, p.size_h, p.stride_h, p.out_h);
    let wx = covering_windows(ix + p.pad_left, p.size_w, p.stride_w, p.out_w);
    let out_base = img * p.out_h * p.out_w * p.c;
    var sum = 0.0;
    for (var oy = wy.x; oy < wy.y; oy++) {
        for (var ox = wx.x; ox < wx.y; ox++) {
            sum += in0[out_base + (oy * p.out_w + ox) * p.c + ch] / window_count(oy, ox);
        }
    }
    out0[id] = sum;
}
