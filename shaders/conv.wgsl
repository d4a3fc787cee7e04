// 2-D convolution as implicit GEMM: the im2col matrix is never stored; each tile load works out
// which input pixel (or zero pad) a (row, column) of it stands for. NHWC activations, HWIO kernels.
// Tap (ky, kx) sits ky * dilation_h rows and kx * dilation_w columns into its window.
// One workgroup computes a TM x TN tile of the output GEMM, each invocation RM x RN of it,
// walking K in slabs of TK held in workgroup memory.
// No integer division per loaded element (it is slow on GPUs and emulated on CPU drivers): each
// invocation always loads the same 4 tile rows, decoded once, and walks the columns of a slab
// (kernel tap and channel, or pixel) by carrying instead of dividing.
// No tile size divides anything: every load and store checks its bounds.

struct ConvParams {
    n: u32, in_h: u32, in_w: u32, in_c: u32,
    out_h: u32, out_w: u32, out_c: u32, k_h: u32,
    k_w: u32, stride_h: u32, stride_w: u32, pad_top: u32,
    pad_left: u32, relu: u32, k_per_split: u32, relu_mask: u32,
    dilation_h: u32, dilation_w: u32, bias: u32, direct: u32,
}

@group(0) @binding(0) var<uniform> p: ConvParams;
@group(0) @binding(1) var<storage, read> in0: array<f32>;
@group(0) @binding(2) var<storage, read> in1: array<f32>;
@group(0) @binding(3) var<storage, read> in2: array<f32>;
@group(0) @binding(4) var<storage, read_write> out0: array<f32>;
@group(0) @binding(5) var<storage, read_write> out1: array<f32>;

// The tile shape, workgroup tiles, multiply_tiles and the store_block epilogue: common/gemm_tile.wgsl.

const MODE_FORWARD: u32 = 0u;
const MODE_BACKWARD_INPUT: u32 = 1u;
const MODE_BACKWARD_FILTER: u32 = 2u;

// A row that lies past the matrix: its y offset fails every bounds check.
const NO_ROW: i32 = -1073741824;
// Backward filter's extra row of ones (it turns the GEMM's last row into the bias gradient).
const ONES_ROW: u32 = 0xffffffffu;

fn patch_len() -> u32 {
    return p.k_h * p.k_w * p.in_c;
}

// One row of the GEMM's A, decoded once: forward (oy*sh - pt, ox*sw - pl, img*in_h);
// backward input (iy + pt, ix + pl, img*out_h); backward filter (ky*dh - pt, kx*dw - pl, ci or
// ONES_ROW). A row past the matrix gets y = NO_ROW, which fails every bounds check.
struct Row {
    y: i32,
    x: i32,
    base: u32,
}

fn decode_row(mode: u32, m: u32) -> Row {
    var row = Row(NO_ROW, 0, 0u);
    if (mode == MODE_FORWARD) {
        let pixels = p.out_h * p.out_w;
        if (m < p.n * pixels) {
            let pix = m % pixels;
            row = Row(i32((pix / p.out_w) * p.stride_h) - i32(p.pad_top), i32((pix % p.out_w) * p.stride_w) - i32(p.pad_left), (m / pixels) * p.in_h);
        }
    } else if (mode == MODE_BACKWARD_INPUT) {
        let pixels = p.in_h * p.in_w;
        if (m < p.n * pixels) {
            let pix = m % pixels;
            row = Row(i32(pix / p.in_w + p.pad_top), i32(pix % p.in_w + p.pad_left), (m / pixels) * p.out_h);
        }
    } else if (m == patch_len()) {
        row = Row(0, 0, ONES_ROW);
    } else if (m < patch_len()) {
        let tap = m / p.in_c;
        row = Row(i32((tap / p.k_w) * p.dilation_h) - i32(p.pad_top), i32((tap % p.k_w) * p.dilation_w) - i32(p.pad_left), m % p.in_c);
    }
    return row;
}

// Every load below fills whole vec4s of the tiles: an invocation loads 4 consecutive rows of A
// (decoded once, in `rows`) at one k, or 4 consecutive columns of B, per step. Its k advances
// by `step` = 4 * THREADS / TM (or / TN) each time, carried instead of divided.

// The loads below build each vec4 from 4 calls on constant row indices rather than a loop
// writing v[q]: a dynamically indexed function array or vector lives in memory on lavapipe.

// x at tap (ky, kx), channel ci of one forward row's window, 0 in the padding.
fn forward_elem(row: Row, ky: u32, kx: u32, ci: u32) -> f32 {
    let iy = row.y + i32(ky * p.dilation_h);
    let ix = row.x + i32(kx * p.dilation_w);
    if (iy >= 0 && ix >= 0 && iy < i32(p.in_h) && ix < i32(p.in_w)) {
        return in0[((row.base + u32(iy)) * p.in_w + u32(ix)) * p.in_c + ci];
    }
    return 0.0;
}

// in1[kb * cols + c], 0 past cols.
fn row_elem(kb: u32, c: u32, cols: u32) -> f32 {
    if (c < cols) { return in1[kb * cols + c]; }
    return 0.0;
}

// B's slab when B is in1 stored row-major (rows, out_c): forward's kernel, backward filter's dy.
fn load_b_rows(lid: u32, n0: u32, k0: u32, rows: u32) {
    let nq = lid % (TN / 4u);
    let c0 = n0 + nq * 4u;
    for (var kk = lid / (TN / 4u); kk < TK; kk += 4u * THREADS / TN) {
        let kb = k0 + kk;
        var v = vec4<f32>();
        if (kb < rows) {
            v = vec4<f32>(row_elem(kb, c0, p.out_c), row_elem(kb, c0 + 1u, p.out_c), row_elem(kb, c0 + 2u, p.out_c), row_elem(kb, c0 + 3u, p.out_c));
        }
        b_tile[kk * (TN / 4u) + nq] = v;
    }
}

// Forward: A = im2col(x) (n*out_h*out_w, patch), B = w (patch, out_c).
fn load_forward(lid: u32, rows: ptr<function, array<Row, 4>>, n0: u32, k0: u32) {
    let mq = lid % (TM / 4u);
    let step = 4u * THREADS / TM;
    var k = k0 + lid / (TM / 4u);
    // Column k = (ky, kx, ci).
    var ci = k % p.in_c;
    var kx = (k / p.in_c) % p.k_w;
    var ky = k / (p.in_c * p.k_w);
    for (var kk = lid / (TM / 4u); kk < TK; kk += step) {
        var v = vec4<f32>();
        if (k < patch_len()) {
            v = vec4<f32>(forward_elem((*rows)[0], ky, kx, ci), forward_elem((*rows)[1], ky, kx, ci),
                          forward_elem((*rows)[2], ky, kx, ci), forward_elem((*rows)[3], ky, kx, ci));
        }
        a_tile[kk * (TM / 4u) + mq] = v;
        k += step;
        ci += step;
        while (ci >= p.in_c) {
            ci -= p.in_c;
            kx += 1u;
            if (kx == p.k_w) { kx = 0u; ky += 1u; }
        }
    }
    load_b_rows(lid, n0, k0, patch_len());
}

// dy at channel oc of the output pixel whose window puts tap (ky, kx) on one backward-input
// row's pixel, 0 when none does.
fn input_elem(row: Row, ky: u32, kx: u32, oc: u32) -> f32 {
    let ty = row.y - i32(ky * p.dilation_h);
    let tx = row.x - i32(kx * p.dilation_w);
    if (ty < 0 || tx < 0) { return 0.0; }
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
        return in0[((row.base + oy) * p.out_w + ox) * p.out_c + oc];
    }
    return 0.0;
}

// Backward input: A (n*in_h*in_w, k_h*k_w*out_c) = dy at the output pixel whose window puts tap
// (ky, kx) on the row's input pixel (0 when none does), B = w[ky, kx, ci, oc] (k, in_c).
// w[tap, ci, oc] with tap_row = tap * in_c, 0 past in_c.
fn weight_t_elem(tap_row: u32, ci: u32, oc: u32) -> f32 {
    if (ci < p.in_c) { return in1[(tap_row + ci) * p.out_c + oc]; }
    return 0.0;
}

fn load_backward_input(lid: u32, rows: ptr<function, array<Row, 4>>, n0: u32, k0: u32) {
    let depth = p.k_h * p.k_w * p.out_c;
    let mq = lid % (TM / 4u);
    let step = 4u * THREADS / TM;
    var k = k0 + lid / (TM / 4u);
    // Column k = (ky, kx, oc).
    var oc = k % p.out_c;
    var kx = (k / p.out_c) % p.k_w;
    var ky = k / (p.out_c * p.k_w);
    for (var kk = lid / (TM / 4u); kk < TK; kk += step) {
        var v = vec4<f32>();
        if (k < depth) {
            v = vec4<f32>(input_elem((*rows)[0], ky, kx, oc), input_elem((*rows)[1], ky, kx, oc),
                          input_elem((*rows)[2], ky, kx, oc), input_elem((*rows)[3], ky, kx, oc));
        }
        a_tile[kk * (TM / 4u) + mq] = v;
        k += step;
        oc += step;
        while (oc >= p.out_c) {
            oc -= p.out_c;
            kx += 1u;
            if (kx == p.k_w) { kx = 0u; ky += 1u; }
        }
    }
    let nq = lid % (TN / 4u);
    let ci0 = n0 + nq * 4u;
    let b_step = 4u * THREADS / TN;
    var kb = k0 + lid / (TN / 4u);
    // Row kb of B = (tap, oc), carried the same way.
    var b_oc = kb % p.out_c;
    var b_tap = kb / p.out_c;
    for (var kk = lid / (TN / 4u); kk < TK; kk += b_step) {
        var v = vec4<f32>();
        if (kb < depth) {
            let base = b_tap * p.in_c;
            v = vec4<f32>(weight_t_elem(base, ci0, b_oc), weight_t_elem(base, ci0 + 1u, b_oc),
                          weight_t_elem(base, ci0 + 2u, b_oc), weight_t_elem(base, ci0 + 3u, b_oc));
        }
        b_tile[kk * (TN / 4u) + nq] = v;
        kb += b_step;
        b_oc += b_step;
        while (b_oc >= p.out_c) {
            b_oc -= p.out_c;
            b_tap += 1u;
        }
    }
}

// x under one backward-filter row (tap, channel) for the output pixel at (y, x) = (oy*sh,
// ox*sw) of image rows from img_row; 1 on the ones row, 0 in the padding.
fn filter_elem(row: Row, y: i32, x: i32, img_row: u32) -> f32 {
    if (row.base == ONES_ROW) { return 1.0; }
    let iy = y + row.y;
    let ix = x + row.x;
    if (iy >= 0 && ix >= 0 && iy < i32(p.in_h) && ix < i32(p.in_w)) {
        return in0[((img_row + u32(iy)) * p.in_w + u32(ix)) * p.in_c + row.base];
    }
    return 0.0;
}

// Backward filter: A = im2col(x)^T with a row of ones under it (patch + 1, n*out_h*out_w),
// B = dy (n*out_h*out_w, out_c).
fn load_backward_filter(lid: u32, rows: ptr<function, array<Row, 4>>, n0: u32, k0: u32) {
    let depth = p.n * p.out_h * p.out_w;
    let mq = lid % (TM / 4u);
    let step = 4u * THREADS / TM;
    var r = k0 + lid / (TM / 4u);
    // Column r = output pixel (img, oy, ox).
    var ox = r % p.out_w;
    var oy = (r / p.out_w) % p.out_h;
    var img = r / (p.out_w * p.out_h);
    for (var kk = lid / (TM / 4u); kk < TK; kk += step) {
        var v = vec4<f32>();
        if (r < depth) {
            let y = i32(oy * p.stride_h);
            let x = i32(ox * p.stride_w);
            let b = img * p.in_h;
            v = vec4<f32>(filter_elem((*rows)[0], y, x, b), filter_elem((*rows)[1], y, x, b),
                          filter_elem((*rows)[2], y, x, b), filter_elem((*rows)[3], y, x, b));
        }
        a_tile[kk * (TM / 4u) + mq] = v;
        r += step;
        ox += step;
        while (ox >= p.out_w) {
            ox -= p.out_w;
            oy += 1u;
            if (oy == p.out_h) { oy = 0u; img += 1u; }
        }
    }
    load_b_rows(lid, n0, k0, depth);
}

// The tile's GEMM over k in [k_begin, k_end); k_end is uniform, so the barriers are too.
fn gemm_tile(mode: u32, lid: u32, m0: u32, n0: u32, k_begin: u32, k_end: u32) -> array<vec4<f32>, 16> {
    let m = m0 + (lid % (TM / 4u)) * 4u;
    var rows = array<Row, 4>(decode_row(mode, m), decode_row(mode, m + 1u), decode_row(mode, m + 2u), decode_row(mode, m + 3u));
    var acc: array<vec4<f32>, 16>;
    let tm = lid / (TN / RN);
    let tn = lid % (TN / RN);
    for (var k0 = k_begin; k0 < k_end; k0 += TK) {
        if (mode == MODE_FORWARD) {
            load_forward(lid, &rows, n0, k0);
        } else if (mode == MODE_BACKWARD_INPUT) {
            load_backward_input(lid, &rows, n0, k0);
        } else {
            load_backward_filter(lid, &rows, n0, k0);
        }
        workgroupBarrier();
        multiply_tiles(tm, tn, &acc);
        workgroupBarrier();
    }
    return acc;
}

// x (n, in_h, in_w, in_c) = in0, w (k_h, k_w, in_c, out_c) = in1, b (out_c) = in2
//   -> y (n, out_h, out_w, out_c) = out0, ReLU'd when p.relu != 0; no bias when p.bias == 0
//   (in2 is then bound but not read).
// Grid: x = out_c tiles, y (+ z * num_y) = row tiles.
@compute @workgroup_size(THREADS)
fn conv2d_forward(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wg: vec3<u32>,
                  @builtin(num_workgroups) nwg: vec3<u32>) {
    let m0 = (wg.y + wg.z * nwg.y) * TM;
    let n0 = wg.x * TN;
    let acc = gemm_tile(MODE_FORWARD, lid, m0, n0, 0u, patch_len());
    var bias = NO_BIAS;
    if (p.bias != 0u) { bias = block_bias(lid, n0, p.out_c); }
    store_block(acc, lid, m0, n0, p.n * p.out_h * p.out_w, p.out_c, 0u, bias, p.bias != 0u, p.relu != 0u);
}

// dy (n, out_h, out_w, out_c) = in0, w = in1 -> dx (n, in_h, in_w, in_c) = out0; with
// p.relu_mask, 0 where the ReLU output in2 (n, in_h, in_w, in_c) is <= 0.
// Grid: x = in_c tiles, y (+ z * num_y) = row tiles.
@compute @workgroup_size(THREADS)
fn conv2d_backward_input(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wg: vec3<u32>,
                         @builtin(num_workgroups) nwg: vec3<u32>) {
    let m0 = (wg.y + wg.z * nwg.y) * TM;
    let n0 = wg.x * TN;
    var acc = gemm_tile(MODE_BACKWARD_INPUT, lid, m0, n0, 0u, p.k_h * p.k_w * p.out_c);
    let rows = p.n * p.in_h * p.in_w;
    if (p.relu_mask != 0u) { acc = relu_mask_block(acc, lid, m0, n0, rows, p.in_c); }
    store_block(acc, lid, m0, n0, rows, p.in_c, 0u, NO_BIAS, false, false);
}

// x = in0, dy = in1 -> partial sums (splits, patch + 1, out_c) = out0; the last row of each
// split is the bias gradient. Split z covers rows [z * k_per_split, (z+1) * k_per_split) of
// the batch's pixels; matmul.wgsl's sum_split_partials adds the splits in order. With p.direct
// (one split: nothing to add up), dw (patch, out_c) = out0 and, when p.bias != 0, the bias
// gradient db (out_c) = out1 instead.
// Grid: x = out_c tiles, y = (patch + 1) tiles, z = splits.
@compute @workgroup_size(THREADS)
fn conv2d_backward_filter(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wg: vec3<u32>) {
    let m0 = wg.y * TM;
    let n0 = wg.x * TN;
    let k_begin = wg.z * p.k_per_split;
    let k_end = min(k_begin + p.k_per_split, p.n * p.out_h * p.out_w);
    let acc = gemm_tile(MODE_BACKWARD_FILTER, lid, m0, n0, k_begin, k_end);
    if (p.direct != 0u) {
        store_block(acc, lid, m0, n0, patch_len(), p.out_c, 0u, NO_BIAS, false, false);
        if (p.bias != 0u) { store_ones_row(acc, lid, m0, n0, patch_len(), p.out_c); }
        return;
    }
    let rows = patch_len() + 1u;
    store_block(acc, lid, m0, n0, rows, p.out_c, wg.z * rows, NO_BIAS, false, false);
}

// Which output row (or column) puts kernel tap offset t = i + pad - k * dilation on input i: t / stride
// when stride divides t and the result is inside the output, else -1.
fn window_of(t: i32, stride: u32, limit: u32) -> i32 {
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

// dcol (n*out_h*out_w, patch) = in0, the input gradient per window (a plain GEMM of dy and w^T,
// done by matmul.wgsl) -> dx (n, in_h, in_w, in_c) = out0: each input element sums the dcol
// entries of the windows that cover it, taps in order; no atomics. With p.relu_mask, 0 where
// the ReLU output in2 (n, in_h, in_w, in_c) is <= 0. One invocation per element.
@compute @workgroup_size(LINEAR_GROUP)
fn conv2d_col2im(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wg: vec3<u32>,
                 @builtin(num_workgroups) nwg: vec3<u32>) {
    let id = linear_index(lid, wg, nwg);
    let in_len = p.in_h * p.in_w * p.in_c;
    if (id >= p.n * in_len) { return; }
    let img = id / in_len;
    let q = id % in_len;
    let ci = q % p.in_c;
    let ix = (q / p.in_c) % p.in_w;
    let iy = q / (p.in_c * p.in_w);
    let patch_width = patch_len();
    var sum = 0.0;
    for (var ky = 0u; ky < p.k_h; ky++) {
        let oy = window_of(i32(iy + p.pad_top) - i32(ky * p.dilation_h), p.stride_h, p.out_h);
        if (oy < 0) { continue; }
        for (var kx = 0u; kx < p.k_w; kx++) {
            let ox = window_of(i32(ix + p.pad_left) - i32(kx * p.dilation_w), p.stride_w, p.out_w);
            if (ox < 0) { continue; }
            sum += in0[((img * p.out_h + u32(oy)) * p.out_w + u32(ox)) * patch_width + (ky * p.k_w + kx) * p.in_c + ci];
        }
    }
    if (p.relu_mask != 0u && in2[id] <= 0.0) {
        sum = 0.0;
    }
    out0[id] = sum;
}
