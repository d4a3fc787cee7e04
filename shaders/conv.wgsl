// 2-D convolution as implicit GEMM: the im2col matrix is never stored; each tile load works out
// which input pixel (or zero pad) a (row, column) of it stands for. NHWC activations, HWIO kernels.
// One workgroup computes a TM x TN tile of the output GEMM, each invocation RM x RN of it,
// walking K in slabs of TK held in workgroup memory.
// No integer division in the inner loops (it is slow on every GPU and emulated on CPU drivers):
// the tile's rows are decoded once per workgroup into a table, and a slab's column once per
// invocation (each invocation loads a single column of every slab: kk = lid % TK).
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
// Workgroup memory is TK * (TM + TN) + 3 * TM words: 13.5 KiB at 128 x 64 (the host never
// picks more), within the 16 KiB WebGPU default.
override TM: u32 = 128u;
override TN: u32 = 64u;
override RM: u32 = 8u;
override RN: u32 = 8u;
override THREADS: u32 = (TM / RM) * (TN / RN);
const TK: u32 = 16u;

const MODE_FORWARD: u32 = 0u;
const MODE_BACKWARD_INPUT: u32 = 1u;
const MODE_BACKWARD_FILTER: u32 = 2u;

// A row that lies past the matrix: its y offset fails every bounds check.
const NO_ROW: i32 = -1073741824;
// Backward filter's extra row of ones (it turns the GEMM's last row into the bias gradient).
const ONES_ROW: u32 = 0xffffffffu;

var<workgroup> a_tile: array<f32, TK * TM>; // [TK][TM]
var<workgroup> b_tile: array<f32, TK * TN>; // [TK][TN]
// Each tile row decoded once: forward (oy*sh - pt, ox*sw - pl, img*in_h); backward input
// (iy + pt, ix + pl, img*out_h); backward filter (ky - pt, kx - pl, ci or ONES_ROW).
var<workgroup> row_y: array<i32, TM>;
var<workgroup> row_x: array<i32, TM>;
var<workgroup> row_base: array<u32, TM>;

fn patch_len() -> u32 {
    return p.k_h * p.k_w * p.in_c;
}

fn gemm_rows(mode: u32) -> u32 {
    if (mode == MODE_FORWARD) { return p.n * p.out_h * p.out_w; }
    if (mode == MODE_BACKWARD_INPUT) { return p.n * p.in_h * p.in_w; }
    return patch_len() + 1u;
}

fn decode_rows(mode: u32, lid: u32, m0: u32) {
    for (var t = lid; t < TM; t += THREADS) {
        let m = m0 + t;
        var y = NO_ROW;
        var x = 0;
        var base = 0u;
        if (m < gemm_rows(mode)) {
            if (mode == MODE_FORWARD) {
                let pixels = p.out_h * p.out_w;
                let pix = m % pixels;
                y = i32((pix / p.out_w) * p.stride_h) - i32(p.pad_top);
                x = i32((pix % p.out_w) * p.stride_w) - i32(p.pad_left);
                base = (m / pixels) * p.in_h;
            } else if (mode == MODE_BACKWARD_INPUT) {
                let pixels = p.in_h * p.in_w;
                let pix = m % pixels;
                y = i32(pix / p.in_w + p.pad_top);
                x = i32(pix % p.in_w + p.pad_left);
                base = (m / pixels) * p.out_h;
            } else if (m == patch_len()) {
                y = 0;
                base = ONES_ROW;
            } else {
                let tap = m / p.in_c;
                y = i32(tap / p.k_w) - i32(p.pad_top);
                x = i32(tap % p.k_w) - i32(p.pad_left);
                base = m % p.in_c;
            }
        }
        row_y[t] = y;
        row_x[t] = x;
        row_base[t] = base;
    }
}

// Forward: A = im2col(x) (n*out_h*out_w, patch), B = w (patch, out_c).
fn load_forward(lid: u32, n0: u32, k0: u32) {
    let kk = lid % TK;
    let k = k0 + kk;
    let k_ok = k < patch_len();
    let ci = k % p.in_c;
    let tap = k / p.in_c;
    let ky = i32(tap / p.k_w);
    let kx = i32(tap % p.k_w);
    for (var i = 0u; i < TM * TK / THREADS; i++) {
        let mm = lid / TK + i * (THREADS / TK);
        let iy = row_y[mm] + ky;
        let ix = row_x[mm] + kx;
        var v = 0.0;
        if (k_ok && iy >= 0 && ix >= 0 && iy < i32(p.in_h) && ix < i32(p.in_w)) {
            v = in0[((row_base[mm] + u32(iy)) * p.in_w + u32(ix)) * p.in_c + ci];
        }
        a_tile[kk * TM + mm] = v;
    }
    for (var i = 0u; i < TN * TK / THREADS; i++) {
        let nn = lid / TK + i * (THREADS / TK);
        let c = n0 + nn;
        var v = 0.0;
        if (k_ok && c < p.out_c) { v = in1[k * p.out_c + c]; }
        b_tile[kk * TN + nn] = v;
    }
}

// Backward input: A (n*in_h*in_w, k_h*k_w*out_c) = dy at the output pixel whose window puts tap
// (ky, kx) on the row's input pixel (0 when none does), B = w[ky, kx, ci, oc] (k, in_c).
fn load_backward_input(lid: u32, n0: u32, k0: u32) {
    let kk = lid % TK;
    let k = k0 + kk;
    let k_ok = k < p.k_h * p.k_w * p.out_c;
    let oc = k % p.out_c;
    let tap = k / p.out_c;
    let ky = i32(tap / p.k_w);
    let kx = i32(tap % p.k_w);
    for (var i = 0u; i < TM * TK / THREADS; i++) {
        let mm = lid / TK + i * (THREADS / TK);
        let ty = row_y[mm] - ky;
        let tx = row_x[mm] - kx;
        var v = 0.0;
        if (k_ok && ty >= 0 && tx >= 0) {
            var oy = u32(ty);
            var ox = u32(tx);
            var hit = true;
            // Only strided convolutions pay for a division (the branch is uniform).
            if (p.stride_h != 1u) {
                hit = hit && oy % p.stride_h == 0u;
                oy = oy / p.stride_h;
            }
            if (p.stride_w != 1u) {
                hit = hit && ox % p.stride_w == 0u;
                ox = ox / p.stride_w;
            }
            if (hit && oy < p.out_h && ox < p.out_w) {
                v = in0[((row_base[mm] + oy) * p.out_w + ox) * p.out_c + oc];
            }
        }
        a_tile[kk * TM + mm] = v;
    }
    for (var i = 0u; i < TN * TK / THREADS; i++) {
        let nn = lid / TK + i * (THREADS / TK);
        let ci = n0 + nn;
        var v = 0.0;
        if (k_ok && ci < p.in_c) { v = in1[(tap * p.in_c + ci) * p.out_c + oc]; }
        b_tile[kk * TN + nn] = v;
    }
}

// Backward filter: A = im2col(x)^T with a row of ones under it (patch + 1, n*out_h*out_w),
// B = dy (n*out_h*out_w, out_c).
fn load_backward_filter(lid: u32, n0: u32, k0: u32) {
    let kk = lid % TK;
    let r = k0 + kk;
    let r_ok = r < p.n * p.out_h * p.out_w;
    let pixels = p.out_h * p.out_w;
    let img = r / pixels;
    let pix = r % pixels;
    let oy = i32((pix / p.out_w) * p.stride_h);
    let ox = i32((pix % p.out_w) * p.stride_w);
    for (var i = 0u; i < TM * TK / THREADS; i++) {
        let mm = lid / TK + i * (THREADS / TK);
        let base = row_base[mm];
        let iy = oy + row_y[mm];
        let ix = ox + row_x[mm];
        var v = 0.0;
        if (r_ok && base == ONES_ROW) {
            v = 1.0;
        } else if (r_ok && iy >= 0 && ix >= 0 && iy < i32(p.in_h) && ix < i32(p.in_w)) {
            v = in0[((img * p.in_h + u32(iy)) * p.in_w + u32(ix)) * p.in_c + base];
        }
        a_tile[kk * TM + mm] = v;
    }
    for (var i = 0u; i < TN * TK / THREADS; i++) {
        let nn = lid / TK + i * (THREADS / TK);
        let c = n0 + nn;
        var v = 0.0;
        if (r_ok && c < p.out_c) { v = in1[r * p.out_c + c]; }
        b_tile[kk * TN + nn] = v;
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
    decode_rows(mode, lid, m0);
    workgroupBarrier();
    var acc: array<f32, 64>;
    let tm = lid / (TN / RN);
    let tn = lid % (TN / RN);
    for (var k0 = k_begin; k0 < k_end; k0 += TK) {
        if (mode == MODE_FORWARD) {
            load_forward(lid, n0, k0);
        } else if (mode == MODE_BACKWARD_INPUT) {
            load_backward_input(lid, n0, k0);
        } else {
            load_backward_filter(lid, n0, k0);
        }
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
