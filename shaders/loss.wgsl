// Softmax, fused with sparse categorical cross-entropy and its gradient for training.
// The metrics sums are reduced by one workgroup in a fixed tree order and added by one
// invocation: deterministic, no float atomics.

struct LossParams {
    n: u32, classes: u32, unused0: u32, unused1: u32,
}

@group(0) @binding(0) var<uniform> p: LossParams;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read> labels: array<u32>;
@group(0) @binding(3) var<storage, read_write> out0: array<f32>;
@group(0) @binding(4) var<storage, read_write> metrics: array<f32>;

const THREADS: u32 = 256u;
var<workgroup> loss_part: array<f32, 256>;
var<workgroup> correct_part: array<f32, 256>;

// logits (n, classes), labels (n) -> dlogits (n, classes) = out0 = (softmax - onehot) / n;
// metrics[0] += sum of -log softmax[label], metrics[1] += argmax hits, metrics[2] += n.
// Dispatch exactly one workgroup; invocation t handles rows t, t + 256, ...
@compute @workgroup_size(256)
fn softmax_xent(@builtin(local_invocation_index) lid: u32) {
    var loss = 0.0;
    var correct = 0.0;
    for (var row = lid; row < p.n; row += THREADS) {
        let base = row * p.classes;
        let label = labels[row];
        var max_v = logits[base];
        var argmax = 0u;
        for (var c = 1u; c < p.classes; c++) {
            let v = logits[base + c];
            if (v > max_v) {
                max_v = v;
                argmax = c;
            }
        }
        var sum = 0.0;
        for (var c = 0u; c < p.classes; c++) {
            sum += exp(logits[base + c] - max_v);
        }
        if (label < p.classes) {
            loss += log(sum) - (logits[base + label] - max_v);
        }
        if (argmax == label) {
            correct += 1.0;
        }
        for (var c = 0u; c < p.classes; c++) {
            var onehot = 0.0;
            if (c == label) { onehot = 1.0; }
            let prob = exp(logits[base + c] - max_v) / sum;
            out0[base + c] = (prob - onehot) / f32(p.n);
        }
    }
    loss_part[lid] = loss;
    correct_part[lid] = correct;
    workgroupBarrier();
    for (var stride = THREADS / 2u; stride > 0u; stride /= 2u) {
        if (lid < stride) {
            loss_part[lid] += loss_part[lid + stride];
            correct_part[lid] += correct_part[lid + stride];
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
        metrics[0] += loss_part[0];
        metrics[1] += correct_part[0];
        metrics[2] += f32(p.n);
    }
}

// logits (n, classes) -> probs (n, classes) = out0, row by row. One invocation per row.
@compute @workgroup_size(LINEAR_GROUP)
fn softmax(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wg: vec3<u32>,
           @builtin(num_workgroups) nwg: vec3<u32>) {
    let row = linear_index(lid, wg, nwg);
    if (row >= p.n) { return; }
    let base = row * p.classes;
    var max_v = logits[base];
    for (var c = 1u; c < p.classes; c++) {
        max_v = max(max_v, logits[base + c]);
    }
    var sum = 0.0;
    for (var c = 0u; c < p.classes; c++) {
        sum += exp(logits[base + c] - max_v);
    }
    for (var c = 0u; c < p.classes; c++) {
        out0[base + c] = exp(logits[base + c] - max_v) / sum;
    }
}
