// Softmax, fused with sparse categorical cross-entropy and its gradient for training.
// The metrics sums are reduced by one workgroup in a fixed tree order and added by one
// invocation: deterministic, no float atomics.

// label_smoothing F (training and validation loss, Keras's CategoricalCrossentropy): the
// target is onehot * (1 - F) + F / classes. F = 0 runs exactly the unsmoothed code.
struct LossParams {
    n: u32, classes: u32, label_smoothing: f32, unused1: u32,
}

@group(0) @binding(0) var<uniform> p: LossParams;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read> labels: array<u32>;
@group(0) @binding(3) var<storage, read_write> out0: array<f32>;
@group(0) @binding(4) var<storage, read_write> metrics: array<f32>;

const THREADS: u32 = 256u;
var<workgroup> loss_part: array<f32, 256>;
var<workgroup> correct_part: array<f32, 256>;

@group(0) @binding(5) var<storage, read> class_weights: array<f32>;

// One row of softmax_xent weighted by w: writes dlogits row = w * (softmax - target) / n and
// returns (w * cross-entropy against the target, 1 if argmax hits the label). A w of exactly 1.0 changes no
// bit, so the unweighted kernel computes what it did before class weights.
fn xent_row(row: u32, w: f32) -> vec2<f32> {
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
    let smoothing = p.label_smoothing;
    var loss = 0.0;
    if (label < p.classes) {
        let nll = log(sum) - (logits[base + label] - max_v);
        if (smoothing == 0.0) {
            loss = w * nll;
        } else {
            // (1 - F) * -log softmax[label] + F * mean over classes of -log softmax.
            var nll_sum = 0.0;
            for (var c = 0u; c < p.classes; c++) {
                nll_sum += log(sum) - (logits[base + c] - max_v);
            }
            loss = w * ((1.0 - smoothing) * nll + smoothing * (nll_sum / f32(p.classes)));
        }
    }
    var correct = 0.0;
    if (argmax == label) {
        correct = 1.0;
    }
    let off_target = smoothing / f32(p.classes);
    for (var c = 0u; c < p.classes; c++) {
        var want = 0.0;
        if (c == label) { want = 1.0; }
        if (smoothing != 0.0) {
            want = off_target;
            if (c == label) { want = (1.0 - smoothing) + off_target; }
        }
        let prob = exp(logits[base + c] - max_v) / sum;
        out0[base + c] = (prob - want) * w / f32(p.n);
    }
    return vec2<f32>(loss, correct);
}

// Adds one invocation's sums into the metrics: a fixed-order tree over the workgroup, then
// one invocation writes.
fn add_metrics(lid: u32, loss: f32, correct: f32) {
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

// logits (n, classes), labels (n) -> dlogits (n, classes) = out0 = (softmax - onehot) / n;
// metrics[0] += sum of -log softmax[label], metrics[1] += argmax hits, metrics[2] += n.
// Dispatch exactly one workgroup; invocation t handles rows t, t + 256, ...
@compute @workgroup_size(256)
fn softmax_xent(@builtin(local_invocation_index) lid: u32) {
    var sums = vec2<f32>(0.0, 0.0);
    for (var row = lid; row < p.n; row += THREADS) {
        sums += xent_row(row, 1.0);
    }
    add_metrics(lid, sums.x, sums.y);
}

// softmax_xent with row i weighted by class_weights[label_i] (loss and gradient; the hit
// count stays unweighted).
@compute @workgroup_size(256)
fn softmax_xent_weighted(@builtin(local_invocation_index) lid: u32) {
    var sums = vec2<f32>(0.0, 0.0);
    for (var row = lid; row < p.n; row += THREADS) {
        var w = 1.0;
        if (labels[row] < p.classes) { w = class_weights[labels[row]]; }
        sums += xent_row(row, w);
    }
    add_metrics(lid, sums.x, sums.y);
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
