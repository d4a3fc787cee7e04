// 2-D convolution as implicit GEMM: the im2col matrix is never stored; each tile load computes
// which input pixel (or zero pad) a (row, column) of it stands for. NHWC activations, HWIO kernels.
// One workgroup computes a TM x TN tile of the output GEMM, each invocation RM x RN of it,
// walking K in slabs of TK held in workgroup memory.
// No tile size divides anything: every load and store checks its bounds.

struct ConvParams {
    n: u32, in_h: u32, in_w: u32, in_c: u32,
    out_h: u32, out_w: u32, out_c: u32, k_h: u32,
    k_w: u32, stride_h: u32, stride_w: u32, pad_top: u32,
    pad_left: u32, relu: u32, k_per_split: u32, unused: u32,
}

@group(0) @binding(0) var<uniform> p: ConvParams;
@group(0) @binding(1) var<storage, read> in0: array<f32>;
@group(0) @binding(2) var<storage, read> in1: array<f32>;
@group(0) @binding(3) var<storage, read> in2: array<f32>;
@group(0) @binding(4) var<storage, read_write> out0: array<f32>;

// Tile shape, chosen per call by the host (pipeline-overridable): the workgroup computes a
// TM x TN tile, each invocation RM x RN of it (at most 8 x 8), k in slabs of TK.
// Workgroup memory is TK * (TM + TN) floats: at most 16 KiB (128 x 128), the WebGPU default.
override TM: u32 = 128u;
override TN: u32 = 64u;
override RM: u32 = 8u;
override RN: u32 = 8u;
override THREADS: u32 = (TM / RM) * (TN / RN);
const TK: u32 = 16u;

const MODE_FORWARD: u32 = 0u;
const MODE_BACKWARD_INPUT: u32 = 1u;
const MODE_BACKWARD_FILTER: u32 = 2u;

var<workgroup> a_tile: array<f32, TK * TM>; // [TK][TM]
var<workgroup> b_tile: array<f32, TK * TN>; // [TK][TN]

fn patch_len() -> u32 {
    return p.k_h * p.k_w * p.in_c;
}

// One element of image row r's im2col row: x[img, oy*sh+ky-pt, ox*sw+kx-pl, ci], 0 in the padding.
// r < n*out_h*out_w, col < k_h*k_w*in_c; x is in0.
fn im2col_at(r: u32, col: u32) -> f32 {
    let pixels = p.out_h * p.out_w;
    let img = r / pixels;
    let pix = r % pixels;
    let oy = pix / p.out_w;
    let ox = pix % p.out_w;
    let ci = col % p.in_c;
    let t = col / p.in_c;
    let kx = t % p.k_w;
    let ky = t / p.k_w;
    let iy = i32(oy * p.stride_h + ky) - i32(p.pad_top);
    let ix = i32(ox * p.stride_w + kx) - i32(p.pad_left);
    if (iy < 0 || ix < 0 || iy >= i32(p.in_h) || ix >= i32(p.in_w)) {
        return 0.0;
    }
    return in0[((img * p.in_h + u32(iy)) * p.in_w + u32(ix)) * p.in_c + ci];
}

// Backward input, A (n*in_h*in_w, k_h*k_w*out_c): dy at the output pixel whose window puts
// kernel tap (ky, kx) on input pixel r, or 0 when no output pixel does. dy is in0.
fn dy_for_input_at(r: u32, col: u32) -> f32 {
    let pixels = p.in_h * p.in_w;
    let img = r / pixels;
    let pix = r % pixels;
    let iy = pix / p.in_w;
    let ix = pix % p.in_w;
    let oc = col % p.out_c;
    let t = col / p.out_c;
    let kx = t % p.k_w;
    let ky = t / p.k_w;
    let ty = i32(iy + p.pad_top) - i32(ky);
    let tx = i32(ix + p.pad_left) - i32(kx);
    if (ty < 0 || tx < 0) {
        return 0.0;
    }
    let oy = u32(ty) / p.stride_h;
    let ox = u32(tx) / p.stride_w;
    if (oy * p.stride_h != u32(ty) || ox * p.stride_w != u32(tx) || oy >= p.out_h || ox >= p.out_w) {
        return 0.0;
    }
    return in0[((img * p.out_h + oy) * p.out_w + ox) * p.out_c + oc];
}

// Element (m, k) of the GEMM's left matrix for each mode.
fn load_a(mode: u32, m: u32, k: u32) -> f32 {
    if (mode == MODE_FORWARD) {
        // (n*out_h*out_w, patch): the im2col matrix.
        if (m >= p.n * p.out_h * p.out_w || k >= patch_len()) { return 0.0; }
        return im2col_at(m, k);
    } else if (mode == MODE_BACKWARD_INPUT) {
        if (m >= p.n * p.in_h * p.in_w || k >= p.k_h * p.k_w * p.out_c) { return 0.0; }
        return dy_for_input_at(m, k);
    }
    // Backward filter: (patch + 1, n*out_h*out_w) = im2col^T with a row of ones under it, so
    // the same GEMM also sums dy into the bias gradient.
    if (k >= p.n * p.out_h * p.out_w || m > patch_len()) { return 0.0; }
    if (m == patch_len()) { return 1.0; }
    return im2col_at(k, m);
}

// Element (k, c) of the GEMM's right matrix for each mode.
fn load_b(mode: u32, k: u32, c: u32) -> f32 {
    if (mode == MODE_FORWARD) {
        // w (patch, out_c), HWIO flattened.
        if (k >= patch_len() || c >= p.out_c) { return 0.0; }
        return in1[k * p.out_c + c];
    } else if (mode == MODE_BACKWARD_INPUT) {
        // w transposed per tap: (k_h*k_w*out_c, in_c), element w[ky, kx, c, oc].
        if (k >= p.k_h * p.k_w * p.out_c || c >= p.in_c) { return 0.0; }
        let oc = k % p.out_c;
        let tap = k / p.out_c;
        return in1[(tap * p.in_c + c) * p.out_c + oc];
    }
    // Backward filter: dy (n*out_h*out_w, out_c).
    if (k >= p.n * p.out_h * p.out_w || c >= p.out_c) { return 0.0; }
    return in1[k * p.out_c + c];
}

fn load_tiles(mode: u32, lid: u32, m0: u32, n0: u32, k0: u32) {
    for (var i = 0u; i < TM * TK / THREADS; i++) {
        let e = lid + i * THREADS;
        let kk = e % TK;
        let mm = e / TK;
        a_tile[kk * TM + mm] = load_a(mode, m0 + mm, k0 + kk);
    }
    for (var i = 0u; i < TN * TK / THREADS; i++) {
        let e = lid + i * THREADS;
        let nn = e % TN;
        let kk = e / TN;
        b_tile[kk * TN + nn] = load_b(mode, k0 + kk, n0 + nn);
    }
}

// acc[i][j] += a_tile[:, tm + i*TM/RM] . b_tile[:, tn + j*TN/RN] over one slab.
fn multiply_tiles(tm: u32, tn: u32, acc: ptr<function, array<f32, 64>>) {
    for (var kk = 0u; kk < TK; kk++) {
        var a: array<f32, 8>;
        var b: array<f32, 8>;
        for (var i = 0u; i < RM; i++) { a[i] = a_tile[kk * TM + tm + i * (TM / RM)]; }
        for (var j = 0u; j < RN; j++) { b[j] = b_tile[kk * TN + tn + j * (TN / RN)]; }
        for (var i = 0u; i < RM; i++) {
            for (var j = 0u; j < RN; j++) {
                (*acc)[i * RN + j] = fma(a[i], b[j], (*acc)[i * RN + j]);
            }
        }
    }
}

// The tile's GEMM over k in [k_begin, k_end); k_end is uniform, so the barriers are too.
fn gemm_tile(mode: u32, lid: u32, m0: u32, n0: u32, k_begin: u32, k_end: u32) -> array<f32, 64> {
    var acc: array<f32, 64>;
    let tm = lid / (TN / RN);
    let tn = lid % (TN / RN);
    for (var k0 = k_begin; k0 < k_end; k0 += TK) {
        load_tiles(mode, lid, m0, n0, k0);
        workgroupBarrier();
        multiply_tiles(tm, tn, &acc);
        workgroupBarrier();
    }
    return acc;
}

// x (n, in_h, in_w, in_c) = in0, w (k_h, k_w, in_c, out_c) = in1, b (out_c) = in2
//   -> y (n, out_h, out_w, out_c) = out0, ReLU'd when p.relu != 0.
// Grid: x = out_c tiles, y (+ z * num_y) = row tiles.
@compute @workgroup_size(THREADS)
fn conv2d_forward(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wg: vec3<u32>,
                  @builtin(num_workgroups) nwg: vec3<u32>) {
    let m0 = (wg.y + wg.z * nwg.y) * TM;
    let n0 = wg.x * TN;
    let acc = gemm_tile(MODE_FORWARD, lid, m0, n0, 0u, patch_len());
    let rows = p.n * p.out_h * p.out_w;
    let tm = lid / (TN / RN);
    let tn = lid % (TN / RN);
    for (var i = 0u; i < RM; i++) {
        let m = m0 + tm + i * (TM / RM);
        for (var j = 0u; j < RN; j++) {
            let c = n0 + tn + j * (TN / RN);
            if (m < rows && c < p.out_c) {
                var v = acc[i * RN + j] + in2[c];
                if (p.relu != 0u) { v = max(v, 0.0); }
                out0[m * p.out_c + c] = v;
            }
        }
    }
}

// dy (n, out_h, out_w, out_c) = in0, w = in1 -> dx (n, in_h, in_w, in_c) = out0.
// Grid: x = in_c tiles, y (+ z * num_y) = row tiles.
@compute @workgroup_size(THREADS)
fn conv2d_backward_input(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wg: vec3<u32>,
                         @builtin(num_workgroups) nwg: vec3<u32>) {
    let m0 = (wg.y + wg.z * nwg.y) * TM;
    let n0 = wg.x * TN;
    let acc = gemm_tile(MODE_BACKWARD_INPUT, lid, m0, n0, 0u, p.k_h * p.k_w * p.out_c);
    let rows = p.n * p.in_h * p.in_w;
    let tm = lid / (TN / RN);
    let tn = lid % (TN / RN);
    for (var i = 0u; i < RM; i++) {
        let m = m0 + tm + i * (TM / RM);
        for (var j = 0u; j < RN; j++) {
            let c = n0 + tn + j * (TN / RN);
            if (m < rows && c < p.in_c) {
                out0[m * p.in_c + c] = acc[i * RN + j];
            }
        }
    }
}

// x = in0, dy = in1 -> partial sums (splits, patch + 1, out_c) = out0; the last row of each
// split is the bias gradient. Split z covers rows [z * k_per_split, (z+1) * k_per_split) of
// the batch's pixels; matmul.wgsl's sum_split_partials adds the splits in order.
// Grid: x = out_c tiles, y = (patch + 1) tiles, z = splits.
@compute @workgroup_size(THREADS)
fn conv2d_backward_filter(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wg: vec3<u32>) {
    let m0 = wg.y * TM;
    let n0 = wg.x * TN;
    let k_begin = wg.z * p.k_per_split;
    let k_end = min(k_begin + p.k_per_split, p.n * p.out_h * p.out_w);
    let acc = gemm_tile(MODE_BACKWARD_FILTER, lid, m0, n0, k_begin, k_end);
    let rows = patch_len() + 1u;
    let tm = lid / (TN / RN);
    let tn = lid % (TN / RN);
    for (var i = 0u; i < RM; i++) {
        let m = m0 + tm + i * (TM / RM);
        for (var j = 0u; j < RN; j++) {
            let c = n0 + tn + j * (TN / RN);
            if (m < rows && c < p.out_c) {
                out0[(wg.z * rows + m) * p.out_c + c] = acc[i * RN + j];
            }
        }
    }
}
