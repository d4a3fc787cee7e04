// BatchNormalization over the last axis of (rows, channels) values (rows = n * h * w of NHWC).
// Per-channel sums: one workgroup per channel (ch = wg.y * nwg.x + wg.x: the grid may be folded
// into 2-D, as linear grids; workgroups past the last channel sum nothing and write nothing, with
// no early return, so every barrier is reached by the whole workgroup), each invocation summing
// rows lid, lid + 256, ...
// in order, then a fixed tree over the workgroup: the same bits on every run, no float atomics.
// Element-wise passes: one invocation per value (linear grid). Same formulas as
// src/backend/cpu/batchnorm.rs (which accumulates in f64).
// saved (4 * channels): [mean | inv_std | dgamma / m | dbeta / m].

struct BatchNormParams {
    rows: u32, channels: u32, momentum: f32, epsilon: f32,
    relu: u32, unused0: u32, unused1: u32, unused2: u32,
}

@group(0) @binding(0) var<uniform> p: BatchNormParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> dy: array<f32>;
@group(0) @binding(3) var<storage, read> gamma: array<f32>;
@group(0) @binding(4) var<storage, read> beta: array<f32>;
@group(0) @binding(5) var<storage, read_write> saved: array<f32>;
@group(0) @binding(6) var<storage, read_write> moving_mean: array<f32>;
@group(0) @binding(7) var<storage, read_write> moving_variance: array<f32>;
@group(0) @binding(8) var<storage, read_write> out0: array<f32>;
@group(0) @binding(9) var<storage, read_write> dgamma: array<f32>;
@group(0) @binding(10) var<storage, read_write> dbeta: array<f32>;

const THREADS: u32 = 256u;
var<workgroup> part_a: array<f32, 256>;
var<workgroup> part_b: array<f32, 256>;

// The workgroup's sums of a and of b, by a fixed tree; every invocation gets them.
fn tree_sums(lid: u32, a: f32, b: f32) -> vec2<f32> {
    part_a[lid] = a;
    part_b[lid] = b;
    workgroupBarrier();
    for (var stride = THREADS / 2u; stride > 0u; stride /= 2u) {
        if (lid < stride) {
            part_a[lid] += part_a[lid + stride];
            part_b[lid] += part_b[lid + stride];
        }
        workgroupBarrier();
    }
    let total = vec2<f32>(part_a[0], part_b[0]);
    // Everyone has read the totals before the arrays are written again.
    workgroupBarrier();
    return total;
}

// Training statistics: per channel the batch mean and biased variance (two passes), written to
// saved[ch] and saved[channels + ch] = 1 / sqrt(var + epsilon); the moving statistics updated
// as Keras 3 does (the same biased variance).
@compute @workgroup_size(256)
fn batchnorm_batch_stats(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wg: vec3<u32>,
                         @builtin(num_workgroups) nwg: vec3<u32>) {
    let ch = wg.y * nwg.x + wg.x;
    let rows = select(0u, p.rows, ch < p.channels);
    let m = f32(p.rows);
    var sum = 0.0;
    for (var r = lid; r < rows; r += THREADS) {
        sum += x[r * p.channels + ch];
    }
    let mean = tree_sums(lid, sum, 0.0).x / m;
    var squares = 0.0;
    for (var r = lid; r < rows; r += THREADS) {
        let d = x[r * p.channels + ch] - mean;
        squares += d * d;
    }
    let variance = tree_sums(lid, squares, 0.0).x / m;
    if (lid == 0u && ch < p.channels) {
        saved[ch] = mean;
        saved[p.channels + ch] = 1.0 / sqrt(variance + p.epsilon);
        let rest = 1.0 - p.momentum;
        moving_mean[ch] = moving_mean[ch] * p.momentum + mean * rest;
        moving_variance[ch] = moving_variance[ch] * p.momentum + variance * rest;
    }
}

// Inference statistics: saved[..2c] from the moving ones. One invocation per channel.
@compute @workgroup_size(LINEAR_GROUP)
fn batchnorm_moving_stats(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wg: vec3<u32>,
                          @builtin(num_workgroups) nwg: vec3<u32>) {
    let ch = linear_index(lid, wg, nwg);
    if (ch >= p.channels) { return; }
    saved[ch] = moving_mean[ch];
    saved[p.channels + ch] = 1.0 / sqrt(moving_variance[ch] + p.epsilon);
}

// y = out0 = gamma * ((x - mean) * inv_std) + beta, then ReLU when p.relu (a ReLU layer fused
// into this one), one invocation per value.
@compute @workgroup_size(LINEAR_GROUP)
fn batchnorm_normalize(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wg: vec3<u32>,
                       @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(lid, wg, nwg);
    if (i >= p.rows * p.channels) { return; }
    let ch = i % p.channels;
    let v = gamma[ch] * ((x[i] - saved[ch]) * saved[p.channels + ch]) + beta[ch];
    out0[i] = select(v, max(v, 0.0), p.relu != 0u);
}

// Backward, first pass: dbeta = sum dy, dgamma = sum dy * xhat per channel (one workgroup per
// channel), and saved[2c + ch] = dgamma / m, saved[3c + ch] = dbeta / m for the second pass.
@compute @workgroup_size(256)
fn batchnorm_backward_sums(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wg: vec3<u32>,
                           @builtin(num_workgroups) nwg: vec3<u32>) {
    let ch = wg.y * nwg.x + wg.x;
    let rows = select(0u, p.rows, ch < p.channels);
    var sum_dy = 0.0;
    var sum_dy_xhat = 0.0;
    for (var r = lid; r < rows; r += THREADS) {
        let i = r * p.channels + ch;
        let g = dy[i];
        sum_dy += g;
        sum_dy_xhat += g * ((x[i] - saved[ch]) * saved[p.channels + ch]);
    }
    let sums = tree_sums(lid, sum_dy, sum_dy_xhat);
    if (lid == 0u && ch < p.channels) {
        let m = f32(p.rows);
        dbeta[ch] = sums.x;
        dgamma[ch] = sums.y;
        saved[2u * p.channels + ch] = sums.y / m;
        saved[3u * p.channels + ch] = sums.x / m;
    }
}

// Backward, second pass: dx = out0 = gamma * inv_std * (dy - dbeta / m - xhat * dgamma / m).
@compute @workgroup_size(LINEAR_GROUP)
fn batchnorm_backward_input(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wg: vec3<u32>,
                            @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(lid, wg, nwg);
    if (i >= p.rows * p.channels) { return; }
    let c = p.channels;
    let ch = i % c;
    let inv_std = saved[c + ch];
    let xhat = (x[i] - saved[ch]) * inv_std;
    out0[i] = gamma[ch] * inv_std * (dy[i] - saved[3u * c + ch] - xhat * saved[2u * c + ch]);
}
