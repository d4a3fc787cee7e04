// Dense layers as a strided GEMM: c (m, n) = a (m, k) * b (k, n), where a and b are read through
// row/column strides so a transpose costs nothing (as in the CPU backend's gemm).
// One workgroup computes a TM x TN tile of c, each invocation RM x RN of it, walking k in slabs
// of TK held in workgroup memory. Every load and store checks its bounds.

struct MatmulParams {
    m: u32, n: u32, k: u32, a_row_stride: u32,
    a_col_stride: u32, b_row_stride: u32, b_col_stride: u32, bias: u32,
    relu: u32, k_per_split: u32, ones_row: u32, splits: u32,
    relu_mask: u32, direct: u32, unused1: u32, unused2: u32,
}

@group(0) @binding(0) var<uniform> p: MatmulParams;
@group(0) @binding(1) var<storage, read> in0: array<f32>;
@group(0) @binding(2) var<storage, read> in1: array<f32>;
@group(0) @binding(3) var<storage, read> in2: array<f32>;
@group(0) @binding(4) var<storage, read_write> out0: array<f32>;
@group(0) @binding(5) var<storage, read_write> out1: array<f32>;

// The tile shape, workgroup tiles, multiply_tiles and the store_block epilogue: common/gemm_tile.wgsl.

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

// a = in0 (m, k), b = in1 (k, n), bias = in2 (n) when p.bias != 0 -> c = out0 (m, n), ReLU'd
// when p.relu != 0; with p.relu_mask (and no bias), 0 where the ReLU output in2 (m, n) is <= 0.
// Grid: x = n tiles, y (+ z * num_y) = m tiles.
@compute @workgroup_size(THREADS)
fn matmul_bias_act(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wg: vec3<u32>,
                   @builtin(num_workgroups) nwg: vec3<u32>) {
    let m0 = (wg.y + wg.z * nwg.y) * TM;
    let n0 = wg.x * TN;
    var acc = gemm_tile(lid, m0, n0, 0u, p.k);
    if (p.relu_mask != 0u) { acc = relu_mask_block(acc, lid, m0, n0, p.m, p.n); }
    var bias: array<vec4<f32>, 2>;
    if (p.bias != 0u) { bias = block_bias(lid, n0, p.n); }
    store_block(acc, lid, m0, n0, p.m, p.n, 0u, bias, p.bias != 0u, p.relu != 0u);
}

// Split-k partial products: out0 (splits, m + ones_row, n), split z summing k in
// [z * k_per_split, (z+1) * k_per_split). Grid: x = n tiles, y = m tiles, z = splits.
// With p.direct (one split: nothing to add up), the product itself instead: rows 0..m to
// out0 (m, n), the ones row to out1 (n) when p.bias != 0 (a filter gradient and its bias
// gradient, without sum_split_partials after it).
@compute @workgroup_size(THREADS)
fn matmul_split_partials(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wg: vec3<u32>) {
    let m0 = wg.y * TM;
    let n0 = wg.x * TN;
    let k_begin = wg.z * p.k_per_split;
    let k_end = min(k_begin + p.k_per_split, p.k);
    let acc = gemm_tile(lid, m0, n0, k_begin, k_end);
    if (p.direct != 0u) {
        store_block(acc, lid, m0, n0, p.m, p.n, 0u, NO_BIAS, false, false);
        if (p.bias != 0u) { store_ones_row(acc, lid, m0, n0, p.m, p.n); }
        return;
    }
    let rows = p.m + p.ones_row;
    store_block(acc, lid, m0, n0, rows, p.n, wg.z * rows, NO_BIAS, false, false);
}


// partials in0 (splits, m + 1, n) -> out0 (m, n) = rows 0..m summed over the splits in order,
// out1 (n) = row m summed likewise (the bias gradient; not written when p.bias == 0: a layer
// without bias). Fixed order: deterministic.
// One invocation per element of (m + 1, n); grid x (+ y * num_x) of 256.
@compute @workgroup_size(LINEAR_GROUP)
fn sum_split_partials(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wg: vec3<u32>,
                      @builtin(num_workgroups) nwg: vec3<u32>) {
    let id = linear_index(lid, wg, nwg);
    let rows = p.m + 1u;
    if (id >= rows * p.n) { return; }
    var sum = 0.0;
    for (var s = 0u; s < p.splits; s++) {
        sum += in0[s * rows * p.n + id];
    }
    let row = id / p.n;
    if (row < p.m) {
        out0[id] = sum;
    } else if (p.bias != 0u) {
        out1[id - p.m * p.n] = sum;
    }
}
