// Dense layers as a strided GEMM: c (m, n) = a (m, k) * b (k, n), where a and b are read through
// row/column strides so a transpose costs nothing (as in the CPU backend's gemm).
// One workgroup computes a TM x TN tile of c, each invocation RM x RN of it, walking k in slabs
// of TK held in workgroup memory. Every load and store checks its bounds.

struct MatmulParams {
    m: u32, n: u32, k: u32, a_row_stride: u32,
    a_col_stride: u32, b_row_stride: u32, b_col_stride: u32, bias: u32,
    relu: u32, k_per_split: u32, ones_row: u32, splits: u32,
}

@group(0) @binding(0) var<uniform> p: MatmulParams;
@group(0) @binding(1) var<storage, read> in0: array<f32>;
@group(0) @binding(2) var<storage, read> in1: array<f32>;
@group(0) @binding(3) var<storage, read> in2: array<f32>;
@group(0) @binding(4) var<storage, read_write> out0: array<f32>;
@group(0) @binding(5) var<storage, read_write> out1: array<f32>;

// Tile shape, chosen per call by the host (pipeline-overridable): the workgroup computes a
// TM x TN tile, each invocation RM x RN = 8 x 8 of it, k in slabs of TK. The loads need
// 4 * THREADS to be a multiple of TM and of TN and at most 16 times them (pipelines.rs checks
// every tile the host picks). Workgroup memory is TK * (TM + TN) floats: at most 16 KiB
// (128 x 128), the WebGPU default.
override TM: u32 = 128u;
override TN: u32 = 64u;
const RM: u32 = 8u; // multiply_tiles is written out for 8 x 8
const RN: u32 = 8u;
override THREADS: u32 = (TM / RM) * (TN / RN);
const TK: u32 = 16u;

var<workgroup> a_tile: array<vec4<f32>, TK * TM / 4u>; // [TK][TM / 4]: 4 rows per vec4
var<workgroup> b_tile: array<vec4<f32>, TK * TN / 4u>; // [TK][TN / 4]: 4 columns per vec4

// a (m, k) = in0 through strides; with ones_row, row m is all ones (so c's extra row holds the
// column sums of b: the bias gradient).
fn load_a(row: u32, col: u32) -> f32 {
    if (col >= p.k) { return 0.0; }
    if (row < p.m) { return in0[row * p.a_row_stride + col * p.a_col_stride]; }
    if (row == p.m && p.ones_row != 0u) { return 1.0; }
    return 0.0;
}

// b (k, n) = in1 through strides.
fn load_b(row: u32, col: u32) -> f32 {
    if (row >= p.k || col >= p.n) { return 0.0; }
    return in1[row * p.b_row_stride + col * p.b_col_stride];
}

// Fills whole vec4s: an invocation loads 4 consecutive rows of a (or columns of b) at one k.
fn load_tiles(lid: u32, m0: u32, n0: u32, k0: u32) {
    let mq = lid % (TM / 4u);
    let row = m0 + mq * 4u;
    for (var kk = lid / (TM / 4u); kk < TK; kk += 4u * THREADS / TM) {
        let k = k0 + kk;
        a_tile[kk * (TM / 4u) + mq] = vec4<f32>(load_a(row, k), load_a(row + 1u, k), load_a(row + 2u, k), load_a(row + 3u, k));
    }
    let nq = lid % (TN / 4u);
    let col = n0 + nq * 4u;
    for (var kk = lid / (TN / 4u); kk < TK; kk += 4u * THREADS / TN) {
        let k = k0 + kk;
        b_tile[kk * (TN / 4u) + nq] = vec4<f32>(load_b(k, col), load_b(k, col + 1u), load_b(k, col + 2u), load_b(k, col + 3u));
    }
}

// acc[i][jq] += a_tile[:, tm*RM + i] * b_tile[:, tn*RN + 4jq .. 4jq+3] over one slab: each
// invocation owns RM contiguous rows and RN contiguous columns and reads them as vec4s. (Four
// times fewer workgroup-memory reads than scalars; on lavapipe this is worth about 5x.)
fn multiply_tiles(tm: u32, tn: u32, acc: ptr<function, array<vec4<f32>, 16>>) {
    // Written out for RM = RN = 8: constant indices only, so the accumulator stays in registers
    // (a dynamically indexed function array lives in memory on lavapipe).
    for (var kk = 0u; kk < TK; kk++) {
        let a0 = a_tile[kk * (TM / 4u) + tm * 2u];
        let a1 = a_tile[kk * (TM / 4u) + tm * 2u + 1u];
        let b0 = b_tile[kk * (TN / 4u) + tn * 2u];
        let b1 = b_tile[kk * (TN / 4u) + tn * 2u + 1u];
        (*acc)[0] = fma(vec4<f32>(a0.x), b0, (*acc)[0]);
        (*acc)[1] = fma(vec4<f32>(a0.x), b1, (*acc)[1]);
        (*acc)[2] = fma(vec4<f32>(a0.y), b0, (*acc)[2]);
        (*acc)[3] = fma(vec4<f32>(a0.y), b1, (*acc)[3]);
        (*acc)[4] = fma(vec4<f32>(a0.z), b0, (*acc)[4]);
        (*acc)[5] = fma(vec4<f32>(a0.z), b1, (*acc)[5]);
        (*acc)[6] = fma(vec4<f32>(a0.w), b0, (*acc)[6]);
        (*acc)[7] = fma(vec4<f32>(a0.w), b1, (*acc)[7]);
        (*acc)[8] = fma(vec4<f32>(a1.x), b0, (*acc)[8]);
        (*acc)[9] = fma(vec4<f32>(a1.x), b1, (*acc)[9]);
        (*acc)[10] = fma(vec4<f32>(a1.y), b0, (*acc)[10]);
        (*acc)[11] = fma(vec4<f32>(a1.y), b1, (*acc)[11]);
        (*acc)[12] = fma(vec4<f32>(a1.z), b0, (*acc)[12]);
        (*acc)[13] = fma(vec4<f32>(a1.z), b1, (*acc)[13]);
        (*acc)[14] = fma(vec4<f32>(a1.w), b0, (*acc)[14]);
        (*acc)[15] = fma(vec4<f32>(a1.w), b1, (*acc)[15]);
    }
}

// k_end is uniform over the workgroup, so every barrier is reached by all invocations.
fn gemm_tile(lid: u32, m0: u32, n0: u32, k_begin: u32, k_end: u32) -> array<vec4<f32>, 16> {
    var acc: array<vec4<f32>, 16>;
    let tm = lid / (TN / RN);
    let tn = lid % (TN / RN);
    for (var k0 = k_begin; k0 < k_end; k0 += TK) {
        load_tiles(lid, m0, n0, k0);
        workgroupBarrier();
        multiply_tiles(tm, tn, &acc);
        workgroupBarrier();
    }
    return acc;
}

// Writes out0[row_start + c .. + 4] = v where c + q < cols: whole vec4s of the accumulator, one
// bounds check per 4 outputs (not per output, and no dynamic component index: on lavapipe the
// per-scalar epilogue cost as much as several k slabs on short-k GEMMs).
fn store4(row_start: u32, c: u32, cols: u32, v: vec4<f32>) {
    let o = row_start + c;
    if (c + 4u <= cols) {
        out0[o] = v.x;
        out0[o + 1u] = v.y;
        out0[o + 2u] = v.z;
        out0[o + 3u] = v.w;
    } else {
        if (c < cols) { out0[o] = v.x; }
        if (c + 1u < cols) { out0[o + 1u] = v.y; }
        if (c + 2u < cols) { out0[o + 2u] = v.z; }
    }
}

// Bias values for 4 consecutive columns from c, 0 past cols.
fn bias4(c: u32, cols: u32) -> vec4<f32> {
    var b = vec4<f32>();
    for (var q = 0u; q < 4u; q++) {
        if (c + q < cols) { b[q] = in2[c + q]; }
    }
    return b;
}

// a = in0 (m, k), b = in1 (k, n), bias = in2 (n) when p.bias != 0 -> c = out0 (m, n), ReLU'd
// when p.relu != 0. Grid: x = n tiles, y (+ z * num_y) = m tiles.
@compute @workgroup_size(THREADS)
fn matmul_bias_act(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wg: vec3<u32>,
                   @builtin(num_workgroups) nwg: vec3<u32>) {
    let m0 = (wg.y + wg.z * nwg.y) * TM;
    let n0 = wg.x * TN;
    let acc = gemm_tile(lid, m0, n0, 0u, p.k);
    let tm = lid / (TN / RN);
    let tn = lid % (TN / RN);
    var bias: array<vec4<f32>, 2>;
    if (p.bias != 0u) {
        for (var jq = 0u; jq < RN / 4u; jq++) {
            bias[jq] = bias4(n0 + tn * RN + jq * 4u, p.n);
        }
    }
    for (var i = 0u; i < RM; i++) {
        let row = m0 + tm * RM + i;
        if (row < p.m) {
            for (var jq = 0u; jq < RN / 4u; jq++) {
                var v = acc[i * 2u + jq] + bias[jq];
                if (p.relu != 0u) { v = max(v, vec4<f32>()); }
                store4(row * p.n, n0 + tn * RN + jq * 4u, p.n, v);
            }
        }
    }
}

// Split-k partial products: out0 (splits, m + ones_row, n), split z summing k in
// [z * k_per_split, (z+1) * k_per_split). Grid: x = n tiles, y = m tiles, z = splits.
@compute @workgroup_size(THREADS)
fn matmul_split_partials(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wg: vec3<u32>) {
    let m0 = wg.y * TM;
    let n0 = wg.x * TN;
    let k_begin = wg.z * p.k_per_split;
    let k_end = min(k_begin + p.k_per_split, p.k);
    let acc = gemm_tile(lid, m0, n0, k_begin, k_end);
    let rows = p.m + p.ones_row;
    let tm = lid / (TN / RN);
    let tn = lid % (TN / RN);
    for (var i = 0u; i < RM; i++) {
        let row = m0 + tm * RM + i;
        if (row < rows) {
            for (var jq = 0u; jq < RN / 4u; jq++) {
                store4((wg.z * rows + row) * p.n, n0 + tn * RN + jq * 4u, p.n, acc[i * 2u + jq]);
            }
        }
    }
}

// partials in0 (splits, m + 1, n) -> out0 (m, n) = rows 0..m summed over the splits in order,
// out1 (n) = row m summed likewise (the bias gradient). Fixed order: deterministic.
// One invocation per element of (m + 1, n); grid x (+ y * num_x) of 256.
@compute @workgroup_size(256)
fn sum_split_partials(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wg: vec3<u32>,
                      @builtin(num_workgroups) nwg: vec3<u32>) {
    let id = (wg.y * nwg.x + wg.x) * 256u + lid;
    let rows = p.m + 1u;
    if (id >= rows * p.n) { return; }
    var sum = 0.0;
    for (var s = 0u; s < p.splits; s++) {
        sum += in0[s * rows * p.n + id];
    }
    let row = id / p.n;
    if (row < p.m) {
        out0[id] = sum;
    } else {
        out1[id - p.m * p.n] = sum;
    }
}
