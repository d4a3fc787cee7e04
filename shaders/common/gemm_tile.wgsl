// The register-blocked GEMM tile shared by conv.wgsl and matmul.wgsl (appended to each by the
// shader composer, src/backend/gpu/shader_sources.rs). The including shader declares in2 (the
// bias) and out0 (the output).

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

// For the kernels without a bias.
const NO_BIAS = array<vec4<f32>, 2>();

// The bias values of the invocation's RN columns of the tile at n0 (bias4 from in2): only the
// kernels that add a bias call it, so the others need no in2 binding.
fn block_bias(lid: u32, n0: u32, cols: u32) -> array<vec4<f32>, 2> {
    let tn = lid % (TN / RN);
    var b: array<vec4<f32>, 2>;
    for (var jq = 0u; jq < RN / 4u; jq++) {
        b[jq] = bias4(n0 + tn * RN + jq * 4u, cols);
    }
    return b;
}

// acc with each element whose ReLU output y (in2, laid out as this kernel's output (rows, cols))
// is <= 0 set to 0: the backward of the ReLU that made this gradient's activation, fused into
// the kernel that produces the gradient. Only the kernels that mask call it (they bind in2).
fn relu_mask_block(acc: array<vec4<f32>, 16>, lid: u32, m0: u32, n0: u32, rows: u32, cols: u32) -> array<vec4<f32>, 16> {
    let tm = lid / (TN / RN);
    let tn = lid % (TN / RN);
    var out = acc;
    for (var i = 0u; i < RM; i++) {
        let m = m0 + tm * RM + i;
        if (m < rows) {
            for (var jq = 0u; jq < RN / 4u; jq++) {
                let c = n0 + tn * RN + jq * 4u;
                var y = vec4<f32>(1.0);
                for (var q = 0u; q < 4u; q++) {
                    if (c + q < cols) { y[q] = in2[m * cols + c + q]; }
                }
                out[i * 2u + jq] = select(out[i * 2u + jq], vec4<f32>(), y <= vec4<f32>());
            }
        }
    }
    return out;
}

// Row `row` of the invocation's block (a filter gradient's ones row: the column sums, its bias
// gradient) to out1 (cols). Only the kernels that write a bias gradient call it (they bind out1).
fn store_ones_row(acc: array<vec4<f32>, 16>, lid: u32, m0: u32, n0: u32, row: u32, cols: u32) {
    let tm = lid / (TN / RN);
    let tn = lid % (TN / RN);
    for (var i = 0u; i < RM; i++) {
        if (m0 + tm * RM + i == row) {
            for (var jq = 0u; jq < RN / 4u; jq++) {
                let c = n0 + tn * RN + jq * 4u;
                let v = acc[i * 2u + jq];
                if (c < cols) { out1[c] = v.x; }
                if (c + 1u < cols) { out1[c + 1u] = v.y; }
                if (c + 2u < cols) { out1[c + 2u] = v.z; }
                if (c + 3u < cols) { out1[c + 3u] = v.w; }
            }
        }
    }
}

// The epilogue of every GEMM kernel: the invocation's RM x RN block of the tile at (m0, n0),
// plus `bias` (block_bias) when `add_bias`, ReLU'd when `relu`, written to
// out0[(row_offset + m) * cols + c] for rows m < rows and columns c < cols.
fn store_block(acc: array<vec4<f32>, 16>, lid: u32, m0: u32, n0: u32, rows: u32, cols: u32, row_offset: u32,
               bias: array<vec4<f32>, 2>, add_bias: bool, relu: bool) {
    let tm = lid / (TN / RN);
    let tn = lid % (TN / RN);
    for (var i = 0u; i < RM; i++) {
        let m = m0 + tm * RM + i;
        if (m < rows) {
            for (var jq = 0u; jq < RN / 4u; jq++) {
                var v = acc[i * 2u + jq];
                if (add_bias) { v += bias[jq]; }
                if (relu) { v = max(v, vec4<f32>()); }
                store4((row_offset + m) * cols, n0 + tn * RN + jq * 4u, cols, v);
            }
        }
    }
}
