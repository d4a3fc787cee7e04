//! The optimizers (`--optimizer adam|adamw|sgd|rmsprop`) and label smoothing: each update
//! against Keras 3's formula computed here in f64, GPU against CPU on an awkward length,
//! steps recorded back to back, checkpoint round trips of every optimizer's state, a bit-exact
//! resume with SGD momentum, the smoothed loss and gradient by hand, and the CLI's rules.

#[macro_use]
mod common;
use common::{assert_close, assert_same_bits, max_abs, run_cli, temp_dir, uniform_vec};
use gpu_cnn::backend::cpu::CpuBackend;
use gpu_cnn::backend::{AdamConfig, Backend, RmsPropStep, SgdStep, METRIC_CORRECT, METRIC_COUNT, METRIC_LOSS_SUM};
use gpu_cnn::checkpoint;
use gpu_cnn::data::synthetic::{generate, SyntheticSpec};
use gpu_cnn::data::Dataset;
use gpu_cnn::model::{format_arch, parse_arch, Model};
use gpu_cnn::network::{HostTensor, Network};
use gpu_cnn::optimizer::{Optimizer, OptimizerName};
use gpu_cnn::rng::Rng;
use gpu_cnn::train::{fit, TrainOptions};
use gpu_cnn::{Device, TrainConfig, Trainer};
use std::path::Path;

fn up<B: Backend>(b: &B, data: &[f32]) -> B::Tensor {
    let mut t = b.tensor(data.len()).unwrap();
    b.upload(&mut t, data);
    t
}

/// One optimizer's update, as the Backend takes it.
#[derive(Clone, Copy, Debug)]
enum Update {
    Adam(AdamConfig),
    AdamW(AdamConfig, f32),
    Sgd(SgdStep),
    RmsProp(RmsPropStep),
}

impl Update {
    fn slots(&self) -> usize {
        match self {
            Update::Adam(_) | Update::AdamW(..) => 2,
            Update::Sgd(h) if h.momentum == 0.0 => 0,
            Update::Sgd(_) | Update::RmsProp(_) => 1,
        }
    }
    fn with_learning_rate(self, lr: f32) -> Self {
        match self {
            Update::Adam(c) => Update::Adam(AdamConfig { learning_rate: lr, ..c }),
            Update::AdamW(c, wd) => Update::AdamW(AdamConfig { learning_rate: lr, ..c }, wd),
            Update::Sgd(h) => Update::Sgd(SgdStep { learning_rate: lr, ..h }),
            Update::RmsProp(h) => Update::RmsProp(RmsPropStep { learning_rate: lr, ..h }),
        }
    }
}

/// Every optimizer with non-default settings that make each term of its formula count.
fn cases() -> Vec<(&'static str, Update)> {
    let adam = AdamConfig { learning_rate: 0.01, ..AdamConfig::default() };
    vec![
        ("adam", Update::Adam(adam)),
        ("adamw", Update::AdamW(adam, 0.1)),
        ("sgd", Update::Sgd(SgdStep { learning_rate: 0.1, momentum: 0.0, nesterov: false })),
        ("sgd momentum", Update::Sgd(SgdStep { learning_rate: 0.1, momentum: 0.9, nesterov: false })),
        ("sgd nesterov", Update::Sgd(SgdStep { learning_rate: 0.1, momentum: 0.9, nesterov: true })),
        ("rmsprop", Update::RmsProp(RmsPropStep { learning_rate: 0.01, rho: 0.9, epsilon: 1e-7 })),
    ]
}

/// One step (counted from 1) of `update` over `len` values.
fn apply<B: Backend>(b: &B, update: Update, step: u64, p: &mut B::Tensor, g: &B::Tensor, slots: &mut [B::Tensor], len: usize) {
    match (update, slots) {
        (Update::Adam(c), [m, v]) => b.adam_update(p, g, m, v, len, &c.at_step(step)),
        (Update::AdamW(c, wd), [m, v]) => b.adamw_update(p, g, m, v, len, &c.at_step(step), wd),
        (Update::Sgd(h), s) => b.sgd_update(p, g, s.first_mut(), len, &h),
        (Update::RmsProp(h), [v]) => b.rmsprop_update(p, g, v, len, &h),
        _ => unreachable!(),
    }
}

/// Runs `update` once per gradient (step t uses `rates[t]` as its learning rate when given);
/// with `flush_each` every step is submitted alone. Returns the parameters and state tensors.
fn run_steps<B: Backend>(b: &B, update: Update, p0: &[f32], grads: &[Vec<f32>], rates: Option<&[f32]>, flush_each: bool) -> (Vec<f32>, Vec<Vec<f32>>) {
    let len = p0.len();
    let mut p = up(b, p0);
    let mut slots: Vec<B::Tensor> = (0..update.slots()).map(|_| b.tensor(len).unwrap()).collect();
    let grads: Vec<B::Tensor> = grads.iter().map(|g| up(b, g)).collect();
    for (t, g) in grads.iter().enumerate() {
        let update = rates.map_or(update, |r| update.with_learning_rate(r[t]));
        apply(b, update, t as u64 + 1, &mut p, g, &mut slots, len);
        if flush_each {
            b.flush().unwrap();
        }
    }
    (b.download(&p).unwrap(), slots.iter().map(|s| b.download(s).unwrap()).collect())
}

/// Keras 3's update in f64, element by element, for `grads.len()` steps: returns the
/// parameters and the state tensors in the order the Backend keeps them.
fn keras_reference(update: Update, p0: &[f32], grads: &[Vec<f32>]) -> (Vec<f64>, Vec<Vec<f64>>) {
    let mut p: Vec<f64> = p0.iter().map(|&x| x as f64).collect();
    let mut s = vec![vec![0.0f64; p.len()]; update.slots()];
    for (t, g) in grads.iter().enumerate() {
        let t = (t + 1) as i32;
        for i in 0..p.len() {
            let g = g[i] as f64;
            match update {
                // keras/src/optimizers/base_optimizer.py `_apply_weight_decay`:
                //   variable.assign(variable - variable * wd * lr)
                // then keras/src/optimizers/adam.py `update_step`:
                //   alpha = lr * sqrt(1 - beta_2_power) / (1 - beta_1_power)
                //   m.assign_add((g - m) * (1 - beta_1)); v.assign_add((g^2 - v) * (1 - beta_2))
                //   variable.assign_sub((m * alpha) / (sqrt(v) + epsilon))
                Update::Adam(c) | Update::AdamW(c, _) => {
                    if let Update::AdamW(_, wd) = update {
                        p[i] -= p[i] * wd as f64 * c.learning_rate as f64;
                    }
                    let (b1, b2) = (c.beta1 as f64, c.beta2 as f64);
                    let alpha = c.learning_rate as f64 * (1.0 - b2.powi(t)).sqrt() / (1.0 - b1.powi(t));
                    s[0][i] += (g - s[0][i]) * (1.0 - b1);
                    s[1][i] += (g * g - s[1][i]) * (1.0 - b2);
                    p[i] -= alpha * s[0][i] / (s[1][i].sqrt() + c.epsilon as f64);
                }
                // keras/src/optimizers/sgd.py `update_step`:
                //   no momentum: variable.assign_sub(g * lr)
                //   m.assign(m * momentum - g * lr); then variable.assign_add(m), or with
                //   nesterov variable.assign_add(m * momentum - g * lr)
                Update::Sgd(h) => {
                    let (lr, mom) = (h.learning_rate as f64, h.momentum as f64);
                    if h.momentum == 0.0 {
                        p[i] -= g * lr;
                    } else {
                        s[0][i] = s[0][i] * mom - g * lr;
                        p[i] += if h.nesterov { s[0][i] * mom - g * lr } else { s[0][i] };
                    }
                }
                // keras/src/optimizers/rmsprop.py `update_step` (momentum 0, centered False):
                //   velocity.assign(rho * velocity + (1 - rho) * square(g))
                //   variable.assign_sub(lr * g / sqrt(velocity + epsilon))
                Update::RmsProp(h) => {
                    let rho = h.rho as f64;
                    s[0][i] = rho * s[0][i] + (1.0 - rho) * g * g;
                    p[i] -= h.learning_rate as f64 * g / (s[0][i] + h.epsilon as f64).sqrt();
                }
            }
        }
    }
    (p, s)
}

backend_test! {
    /// Three steps of every optimizer on a small vector (zeros and sign changes in the
    /// gradients) against Keras's formulas in f64. Values stay within |2|, where an f32 ulp is
    /// 2.4e-7; each step rounds a handful of times, so three steps stay within 2e-6. (The
    /// f32 constants, e.g. beta_1 = 0.9f32, go into the f64 reference as they are.)
    fn every_optimizer_follows_kerass_formula_for_three_steps<B>(b: &B) {
        let p0 = [0.5, -1.25, 2.0, 0.0, -0.3, 1e-3];
        let grads = vec![
            vec![0.2, -0.5, 1.0, 0.0, 0.7, -1e-4],
            vec![-0.1, -0.4, 0.5, 0.3, 0.0, 2e-4],
            vec![0.3, 0.6, -0.2, -0.3, 0.1, 0.0],
        ];
        for (name, update) in cases() {
            let (p, slots) = run_steps(b, update, &p0, &grads, None, true);
            let (want_p, want_slots) = keras_reference(update, &p0, &grads);
            assert_close(&format!("{name} param"), &p, &want_p, 2e-6, 0.0);
            for (s, (got, want)) in slots.iter().zip(&want_slots).enumerate() {
                assert_close(&format!("{name} state {s}"), got, want, 2e-6, 0.0);
            }
            assert_ne!(p, p0.to_vec(), "{name} moved nothing");
        }
    }
}

backend_test! {
    /// Keras's own RMSprop docstring example: var1 = 10, loss = var1^2 / 2, RMSprop(0.1),
    /// one minimize step gives 9.683772 (printed to 7 digits: half a unit of the last one).
    fn rmsprop_reproduces_the_keras_docstring_example<B>(b: &B) {
        let update = Update::RmsProp(RmsPropStep { learning_rate: 0.1, rho: 0.9, epsilon: 1e-7 });
        let (p, _) = run_steps(b, update, &[10.0], &[vec![10.0]], None, true);
        assert_close("rmsprop var1", &p, &[9.683772f64], 5e-7, 0.0);
    }
}

gpu_test! {
    /// 10,007 parameters (not a multiple of the 256-wide workgroup) for three steps, GPU
    /// against CPU. WGSL lets a driver fuse a multiply and an add and take sqrt and division
    /// to within a few ulps, so values may differ in their last bits: 1e-6 of the largest
    /// value (about 8 ulps of it).
    fn gpu_optimizers_match_the_cpu_on_an_awkward_length(gpu: &GpuBackend) {
        let mut rng = Rng::new(0x0971_0001);
        let p0 = uniform_vec(&mut rng, 10_007);
        let grads: Vec<Vec<f32>> = (0..3).map(|_| uniform_vec(&mut rng, 10_007)).collect();
        for (name, update) in cases() {
            let (want_p, want_slots) = run_steps(&CpuBackend::new(), update, &p0, &grads, None, true);
            let (p, slots) = run_steps(gpu, update, &p0, &grads, None, true);
            assert_close(&format!("{name} param"), &p, &want_p, 1e-6 * max_abs(&want_p) as f64, 0.0);
            for (s, (got, want)) in slots.iter().zip(&want_slots).enumerate() {
                assert_close(&format!("{name} state {s}"), got, want, 1e-6 * max_abs(want) as f64, 0.0);
            }
        }
    }
}

/// Three steps of `update` over tensors of `p0`'s lengths kept in arenas (`tensor_arena`):
/// with `fused`, one update over each arena's whole buffer per step where the backend has one,
/// else one update per tensor. Returns each tensor's values, then each one's state tensors.
fn run_arena_steps<B: Backend>(b: &B, update: Update, p0: &[Vec<f32>], grads: &[Vec<Vec<f32>>], fused: bool) -> Vec<Vec<f32>> {
    let lens: Vec<usize> = p0.iter().map(Vec::len).collect();
    let mut values = b.tensor_arena(&lens).unwrap();
    let mut g = b.tensor_arena(&lens).unwrap();
    let mut slots: Vec<_> = (0..update.slots()).map(|_| b.tensor_arena(&lens).unwrap()).collect();
    for (part, data) in values.parts.iter_mut().zip(p0) {
        b.upload(part, data);
    }
    for (t, step_grads) in grads.iter().enumerate() {
        for (part, data) in g.parts.iter_mut().zip(step_grads) {
            b.upload(part, data);
        }
        let step = t as u64 + 1;
        match (&mut values.whole, &g.whole) {
            (Some((p, len)), Some((gw, _))) if fused => {
                let mut s: Vec<B::Tensor> = slots.iter_mut().map(|a| a.whole.take().expect("a whole slot arena").0).collect();
                apply(b, update, step, p, gw, &mut s, *len);
                for (arena, whole) in slots.iter_mut().zip(s) {
                    arena.whole = Some((whole, *len));
                }
            }
            _ => {
                for (i, &len) in lens.iter().enumerate() {
                    let mut s: Vec<B::Tensor> = slots.iter_mut().map(|a| a.parts.remove(i)).collect();
                    apply(b, update, step, &mut values.parts[i], &g.parts[i], &mut s, len);
                    for (arena, part) in slots.iter_mut().zip(s) {
                        arena.parts.insert(i, part);
                    }
                }
            }
        }
        b.flush().unwrap();
    }
    let mut out: Vec<Vec<f32>> = values.parts.iter().map(|t| b.download(t).unwrap()).collect();
    for i in 0..lens.len() {
        out.extend(slots.iter().map(|a| b.download(&a.parts[i]).unwrap()));
    }
    out
}

gpu_test! {
    /// Every optimizer over three tensors of 7, 300 and 1 values in arenas, updated with one
    /// dispatch over each arena's whole buffer (padding between the tensors included): the
    /// same bits as one dispatch per tensor on the GPU (the same per-element arithmetic), and
    /// the CPU's values to 1e-6 of the largest (sqrt and division within a few ulps in WGSL,
    /// as in gpu_optimizers_match_the_cpu_on_an_awkward_length).
    fn one_update_over_an_arena_equals_one_per_tensor(gpu: &GpuBackend) {
        let mut rng = Rng::new(0x0971_0003);
        let p0: Vec<Vec<f32>> = [7, 300, 1].iter().map(|&len| uniform_vec(&mut rng, len)).collect();
        let grads: Vec<Vec<Vec<f32>>> = (0..3).map(|_| p0.iter().map(|p| uniform_vec(&mut rng, p.len())).collect()).collect();
        let arena = gpu.tensor_arena(&[7, 300, 1]).unwrap();
        assert!(arena.whole.as_ref().is_some_and(|w| w.1 >= 308), "the GPU lays an arena out in one buffer");
        for (name, update) in cases() {
            let fused = run_arena_steps(gpu, update, &p0, &grads, true);
            let per_tensor = run_arena_steps(gpu, update, &p0, &grads, false);
            let cpu = run_arena_steps(&CpuBackend::new(), update, &p0, &grads, true);
            for (i, ((f, t), c)) in fused.iter().zip(&per_tensor).zip(&cpu).enumerate() {
                assert_same_bits(&format!("{name} output {i}, fused vs per tensor"), f, t);
                assert_close(&format!("{name} output {i}, GPU vs CPU"), f, c, 1e-6 * max_abs(c) as f64, 0.0);
            }
            assert_ne!(fused[0], p0[0], "{name} moved nothing");
        }
    }
}

// BatchNormalization after the ReLU: right after a conv, the conv's bias would have a zero
// gradient in exact arithmetic, and Adam turns its rounding noise into steps of +-lr.
const BN_ARCH: &str = "Conv2D(4, 3, activation=\"relu\") BatchNormalization MaxPooling2D(2) Flatten Dense(3, softmax)\n";

gpu_test! {
    /// A network's optimizer step is one dispatch for every optimizer, whatever the number of
    /// trainable tensors (6 here: kernels, biases, BatchNormalization's gamma and beta, whose
    /// moving statistics are not trainable and stay out of the arena), also after
    /// `set_optimizer` remakes the state; the GPU's weights then agree with the CPU's.
    fn a_networks_optimizer_step_is_one_dispatch(gpu: &GpuBackend) {
        let ds = tiny_data();
        let model = Model::new(&parse_arch(BN_ARCH).unwrap(), ds.input_shape()).unwrap();
        let images = (gpu.upload_image_set(&ds.train).unwrap(), CpuBackend::new().upload_image_set(&ds.train).unwrap());
        let batch: Vec<u32> = (0..16).collect();
        for name in OptimizerName::ALL {
            let mut optimizers = vec![Optimizer::keras_default(name)];
            if name == OptimizerName::Sgd {
                optimizers.push(Optimizer::Sgd { momentum: 0.9, nesterov: true });
            }
            for optimizer in optimizers {
                let mut g = Network::new(gpu, model.clone(), 16, 3).unwrap();
                let mut c = Network::new(CpuBackend::new(), model.clone(), 16, 3).unwrap();
                g.set_optimizer(optimizer).unwrap();
                c.set_optimizer(optimizer).unwrap();
                assert_eq!(g.weights().unwrap().len(), 8, "4 conv/dense tensors, gamma, beta and 2 moving statistics");
                for step in 0..3 {
                    g.train_step(&images.0, &batch).unwrap();
                    c.train_step(&images.1, &batch).unwrap();
                    let before = g.backend.record_counts().unwrap();
                    g.apply_gradients();
                    c.apply_gradients();
                    let after = g.backend.record_counts().unwrap();
                    assert_eq!(after.since(before).dispatches, 1, "{} step {step}", optimizer.describe());
                }
                // Six optimizer updates of lr 1e-3..1e-2 on gradients that differ in their last
                // bits between the backends: 1e-4 absolute (a wrong tensor in the arena moves
                // a weight by about the learning rate per step, 10x more).
                for (gt, ct) in g.weights().unwrap().iter().zip(&c.weights().unwrap()).chain(g.optimizer_state().unwrap().iter().zip(&c.optimizer_state().unwrap())) {
                    assert_eq!(gt.name, ct.name);
                    assert_close(&format!("{} {}", optimizer.describe(), gt.name), &gt.data, &ct.data, 1e-4, 0.0);
                }
            }
        }
    }
}

gpu_test! {
    /// A model whose trainable tensors would not fit one storage binding (pretended here by
    /// lowering the limit) gets separate tensors, one optimizer dispatch each: the same bits as
    /// one dispatch over the arenas, as the update is element-wise.
    fn a_model_too_big_for_one_binding_updates_tensor_by_tensor_with_the_same_bits(gpu: &GpuBackend) {
        let ds = tiny_data();
        let model = Model::new(&parse_arch(BN_ARCH).unwrap(), ds.input_shape()).unwrap();
        let images = gpu.upload_image_set(&ds.train).unwrap();
        let mut fused = Network::new(gpu, model.clone(), 16, 3).unwrap();
        gpu.lower_arena_limit_for_tests(16);
        let mut separate = Network::new(gpu, model, 16, 3).unwrap();
        let dispatches = |net: &mut Network<&gpu_cnn::backend::gpu::GpuBackend>, batch: &[u32]| {
            let before = gpu.record_counts().unwrap();
            net.train_step(&images, batch).unwrap();
            gpu.record_counts().unwrap().since(before).dispatches
        };
        for step in 0..3u32 {
            let batch: Vec<u32> = (step * 16..(step + 1) * 16).collect();
            // 6 trainable tensors: 6 optimizer dispatches instead of 1.
            assert_eq!(dispatches(&mut separate, &batch), dispatches(&mut fused, &batch) + 5, "step {step}");
        }
        for (f, s) in fused.weights().unwrap().iter().zip(&separate.weights().unwrap()).chain(fused.optimizer_state().unwrap().iter().zip(&separate.optimizer_state().unwrap())) {
            assert_same_bits(&f.name, &s.data, &f.data);
        }
    }
}

backend_test! {
    /// Steps recorded back to back in one encoder, each with its own learning rate (as a
    /// schedule gives them), keep their own scalars on the GPU, where one uniform holds them:
    /// the same bits as steps submitted one by one.
    fn steps_with_changing_rates_recorded_without_flush_keep_their_own_scalars<B>(b: &B) {
        let mut rng = Rng::new(0x0971_0002);
        let p0 = uniform_vec(&mut rng, 300);
        let grads: Vec<Vec<f32>> = (0..3).map(|_| uniform_vec(&mut rng, 300)).collect();
        let rates = [0.1, 0.05, 0.025];
        for (name, update) in cases() {
            let one_by_one = run_steps(b, update, &p0, &grads, Some(&rates), true);
            let back_to_back = run_steps(b, update, &p0, &grads, Some(&rates), false);
            assert_same_bits(&format!("{name} param"), &back_to_back.0, &one_by_one.0);
            for (s, (got, want)) in back_to_back.1.iter().zip(&one_by_one.1).enumerate() {
                assert_same_bits(&format!("{name} state {s}"), got, want);
            }
        }
    }
}

/// Keras's CategoricalCrossentropy with label smoothing `f` over softmax(logits), by hand in
/// f64: (loss sum, hits, dlogits), each row weighted by `weights[label]`.
fn smoothed_reference(logits: &[f32], labels: &[u32], classes: usize, f: f64, weights: &[f64]) -> (f64, f64, Vec<f64>) {
    let n = labels.len();
    let (mut loss, mut hits, mut grad) = (0.0, 0.0, Vec::new());
    for (row, &label) in logits.chunks(classes).zip(labels) {
        let z: Vec<f64> = row.iter().map(|&v| v as f64).collect();
        let total: f64 = z.iter().map(|v| v.exp()).sum();
        let p: Vec<f64> = z.iter().map(|v| v.exp() / total).collect();
        // y_true = y_true * (1 - label_smoothing) + label_smoothing / num_classes
        let t: Vec<f64> = (0..classes).map(|c| (if c == label as usize { 1.0 } else { 0.0 }) * (1.0 - f) + f / classes as f64).collect();
        let w = weights[label as usize];
        loss += w * -(0..classes).map(|c| t[c] * p[c].ln()).sum::<f64>();
        let argmax = (0..classes).fold(0, |a, c| if z[c] > z[a] { c } else { a });
        hits += (argmax == label as usize) as u8 as f64;
        grad.extend((0..classes).map(|c| w * (p[c] - t[c]) / n as f64));
    }
    (loss, hits, grad)
}

backend_test! {
    /// The smoothed loss and its gradient (softmax - target) / n, with and without class
    /// weights, against the hand computation. f32 exp/log on values of a few units (WGSL
    /// allows exp and log a few ulps): 1e-5 on the loss sum of 7 rows, 1e-6 on gradients
    /// of magnitude below 1/7.
    fn label_smoothing_loss_and_gradient_match_a_hand_computation<B>(b: &B) {
        let (n, classes) = (7, 5);
        let logits = common::random_vec(n * classes, 0x0971_0003).iter().map(|v| v * 4.0).collect::<Vec<f32>>();
        let labels: Vec<u32> = vec![0, 4, 2, 2, 1, 3, 0];
        let weights = [1.0f32, 2.0, 0.5, 1.5, 0.25];
        for (f, weighted) in [(0.1f32, false), (0.1, true), (0.35, false)] {
            let t_logits = up(b, &logits);
            let mut t_labels = b.indices(n).unwrap();
            b.upload_indices(&mut t_labels, &labels);
            let t_weights = up(b, &weights);
            let mut dlogits = b.tensor(n * classes).unwrap();
            let mut metrics = b.tensor(3).unwrap();
            b.softmax_xent_smoothed(&t_logits, &t_labels, weighted.then_some(&t_weights), &mut dlogits, &mut metrics, n, classes, f);
            let w64: Vec<f64> = if weighted { weights.iter().map(|&w| w as f64).collect() } else { vec![1.0; classes] };
            let (loss, hits, grad) = smoothed_reference(&logits, &labels, classes, f as f64, &w64);
            let m = b.download(&metrics).unwrap();
            let what = format!("F {f}, weighted {weighted}");
            assert_close(&format!("{what}: loss sum"), &[m[METRIC_LOSS_SUM]], &[loss], 1e-5, 0.0);
            assert_eq!((m[METRIC_CORRECT] as f64, m[METRIC_COUNT] as usize), (hits, n), "{what}: hits and count are unsmoothed");
            assert_close(&format!("{what}: dlogits"), &b.download(&dlogits).unwrap(), &grad, 1e-6, 0.0);
        }
    }
}

backend_test! {
    /// F = 0 through the smoothed entry point is the unsmoothed loss, bit for bit.
    fn label_smoothing_zero_is_the_plain_loss_bit_for_bit<B>(b: &B) {
        let (n, classes) = (9, 10);
        let logits = up(b, &common::random_vec(n * classes, 0x0971_0004));
        let mut labels = b.indices(n).unwrap();
        b.upload_indices(&mut labels, &[3, 1, 4, 1, 5, 9, 2, 6, 5]);
        let run = |smoothed: bool| {
            let mut dlogits = b.tensor(n * classes).unwrap();
            let mut metrics = b.tensor(3).unwrap();
            if smoothed {
                b.softmax_xent_smoothed(&logits, &labels, None, &mut dlogits, &mut metrics, n, classes, 0.0);
            } else {
                b.softmax_xent(&logits, &labels, &mut dlogits, &mut metrics, n, classes);
            }
            (b.download(&dlogits).unwrap(), b.download(&metrics).unwrap())
        };
        let (plain, smoothed) = (run(false), run(true));
        assert_same_bits("dlogits", &smoothed.0, &plain.0);
        assert_same_bits("metrics", &smoothed.1, &plain.1);
    }
}

const ARCH: &str = "conv2d 4 3 relu\nmaxpool 2\nflatten\ndense 8 relu\ndense 3 softmax\n";

fn tiny_data() -> Dataset {
    generate(&SyntheticSpec { train: 96, test: 32, height: 8, width: 8, channels: 1, classes: 3 }, 2)
}

fn tiny_net(ds: &Dataset, seed: u64, optimizer: Optimizer, learning_rate: f32) -> Network<CpuBackend> {
    let model = Model::new(&parse_arch(ARCH).unwrap(), ds.input_shape()).unwrap();
    let mut net = Network::new(CpuBackend::new(), model, 16, seed).unwrap();
    net.set_optimizer(optimizer).unwrap();
    net.learning_rate = learning_rate;
    net
}

/// `fit` sets each step's rate from `learning_rate` (the schedule's base; constant here).
fn options(epochs: usize, out: &Path, learning_rate: f32) -> TrainOptions {
    TrainOptions { out_dir: Some(out.to_path_buf()), learning_rate, ..TrainOptions::new(&format_arch(&parse_arch(ARCH).unwrap()), epochs, 16, 4) }
}

fn same_bits(a: &[HostTensor], b: &[HostTensor]) {
    assert_eq!(a.iter().map(|t| &t.name).collect::<Vec<_>>(), b.iter().map(|t| &t.name).collect::<Vec<_>>());
    for (a, b) in a.iter().zip(b) {
        assert_same_bits(&a.name, &a.data, &b.data);
    }
}

#[test]
fn every_optimizers_state_round_trips_through_a_checkpoint() {
    let ds = tiny_data();
    let sgd_momentum = Optimizer::Sgd { momentum: 0.9, nesterov: true };
    let adamw = Optimizer::AdamW { beta_1: 0.8, beta_2: 0.99, epsilon: 1e-6, weight_decay: 0.01 };
    let cases = [
        (Optimizer::default(), &["adam_m", "adam_v"][..]),
        (adamw, &["adam_m", "adam_v"][..]),
        (Optimizer::keras_default(OptimizerName::Sgd), &[][..]),
        (sgd_momentum, &["momentum"][..]),
        (Optimizer::RmsProp { rho: 0.8, epsilon: 1e-6 }, &["velocity"][..]),
    ];
    for (optimizer, slots) in cases {
        let dir = temp_dir(&format!("optim-roundtrip-{}", optimizer.describe().replace(|c: char| !c.is_ascii_alphanumeric(), "")));
        let mut net = tiny_net(&ds, 1, optimizer, 0.01);
        fit(&mut net, &ds, &options(1, &dir, 0.01), Vec::new()).unwrap();
        let ck = checkpoint::load(&dir.join("last.safetensors")).unwrap();
        assert_eq!(ck.meta.optimizer, optimizer);
        assert_eq!(ck.meta.learning_rate, 0.01);
        let state = net.optimizer_state().unwrap();
        let want: Vec<String> = ["conv2d.kernel", "conv2d.bias", "dense.kernel", "dense.bias", "dense_1.kernel", "dense_1.bias"]
            .iter()
            .flat_map(|p| slots.iter().map(move |s| format!("{p}.{s}")))
            .collect();
        assert_eq!(state.iter().map(|t| t.name.clone()).collect::<Vec<_>>(), want, "{}", optimizer.describe());
        assert!(state.iter().all(|t| t.data.iter().any(|&v| v != 0.0)), "{}: a state tensor stayed zero", optimizer.describe());
        assert_eq!(ck.has_optimizer_state(), !slots.is_empty());
        // A net with other weights and state takes everything from the checkpoint.
        let mut other = tiny_net(&ds, 99, ck.meta.optimizer, ck.meta.learning_rate);
        other.load_state(&ck.tensors, true).unwrap();
        same_bits(&other.weights().unwrap(), &net.weights().unwrap());
        same_bits(&other.optimizer_state().unwrap(), &state);
    }
}

#[test]
fn a_damaged_optimizer_in_a_checkpoint_is_refused_clearly() {
    let dir = temp_dir("optim-damaged");
    let ds = tiny_data();
    let mut net = tiny_net(&ds, 1, Optimizer::Sgd { momentum: 0.5, nesterov: false }, 0.01);
    fit(&mut net, &ds, &options(1, &dir, 0.01), Vec::new()).unwrap();
    let path = dir.join("last.safetensors");
    let mut ck = checkpoint::load(&path).unwrap();
    ck.meta.optimizer = Optimizer::Sgd { momentum: 7.0, nesterov: false };
    checkpoint::save(&path, &ck.meta, &ck.tensors).unwrap();
    let err = format!("{:#}", checkpoint::load(&path).err().expect("a momentum of 7 is refused"));
    assert!(err.contains("last.safetensors") && err.contains("metadata optimizer") && err.contains("momentum"), "{err}");
    // State tensors of another optimizer than the metadata's are not weights of the model.
    ck.meta.optimizer = Optimizer::default();
    checkpoint::save(&path, &ck.meta, &ck.tensors).unwrap();
    let err = format!("{:#}", checkpoint::load(&path).err().expect("momentum tensors under adam are refused"));
    assert!(err.contains(".momentum") && err.contains("not a weight"), "{err}");
}

#[test]
fn resume_with_sgd_momentum_and_label_smoothing_equals_an_uninterrupted_run_bit_for_bit() {
    let ds = tiny_data();
    let sgd = Optimizer::Sgd { momentum: 0.9, nesterov: false };
    // Through the library's Trainer, as `gpu-cnn train` runs it (CPU backend, seed 3).
    let trainer = |dir: &Path, epochs: usize| {
        let config = TrainConfig {
            epochs,
            batch_size: 16,
            seed: 3,
            learning_rate: 0.05,
            optimizer: sgd,
            label_smoothing: 0.1,
            device: Device::Cpu,
            out_dir: Some(dir.to_path_buf()),
            ..Default::default()
        };
        Trainer::new(parse_arch(ARCH).unwrap(), ds.clone(), config)
    };
    let straight = trainer(&temp_dir("optim-straight"), 2).fit().unwrap();
    let dir = temp_dir("optim-resume");
    trainer(&dir, 1).fit().unwrap();
    let path = dir.join("last.safetensors");
    let ck = checkpoint::load(&path).unwrap();
    assert_eq!((ck.meta.optimizer, ck.meta.label_smoothing), (sgd, 0.1));
    assert!(ck.tensors.iter().any(|t| t.name.ends_with(".momentum")), "the momentum is saved");
    // Everything the second epoch needs (weights, momentum, step, history) comes from it.
    let resumed = trainer(&dir, 2).resume(ck, path).fit().unwrap();
    same_bits(&resumed.checkpoint.tensors, &straight.checkpoint.tensors);
    assert_eq!(resumed.history[1].loss, straight.history[1].loss);
    assert_eq!(resumed.history[1].val_loss, straight.history[1].val_loss);
}

#[test]
fn the_cli_takes_the_optimizer_flags_and_refuses_misplaced_ones() {
    let (ok, out, _) = run_cli(&["train", "--help"]);
    for flag in ["--optimizer", "--momentum", "--nesterov", "--weight-decay", "--rho", "--epsilon", "--label-smoothing"] {
        assert!(ok && out.contains(flag), "train --help lacks {flag}: {out}");
    }
    let dir = temp_dir("optim-cli");
    let run_dir = dir.join("run");
    let common =
        ["--dataset", "synthetic", "--limit-train", "64", "--limit-test", "32", "--device", "cpu", "--batch-size", "16", "--out", run_dir.to_str().unwrap()];
    for (flags, words) in [
        (&["--optimizer", "sgd", "--weight-decay", "0.1"][..], &["--weight-decay", "adamw", "sgd"][..]),
        (&["--momentum", "0.9"][..], &["--momentum", "sgd", "adam"][..]),
        (&["--optimizer", "sgd", "--momentum", "1.5"][..], &["momentum", "between 0 and 1"][..]),
        (&["--optimizer", "lion"][..], &["lion", "adam, adamw, sgd or rmsprop"][..]),
        (&["--label-smoothing", "2"][..], &["--label-smoothing", "between 0 and 1"][..]),
    ] {
        let (ok, _, err) = run_cli(&[&["train", "--epochs", "1"], flags, &common[..]].concat());
        assert!(!ok, "{flags:?} was accepted");
        for w in words {
            assert!(err.contains(w), "{flags:?}: the error should mention '{w}': {err}");
        }
    }
    let (ok, _, err) = run_cli(&[&["train", "--epochs", "1", "--optimizer", "rmsprop", "--label-smoothing", "0.1"], &common[..]].concat());
    assert!(ok, "{err}");
    assert!(err.contains("Optimizer: rmsprop (rho 0.9, epsilon 0.0000001), learning rate 0.001"), "{err}");
    let last = run_dir.join("last.safetensors");
    let resume = ["train", "--epochs", "2", "--resume", last.to_str().unwrap()];
    let (ok, _, err) = run_cli(&[&resume[..], &["--optimizer", "adam"], &common[..]].concat());
    assert!(!ok && err.contains("rmsprop") && err.contains("--optimizer adam cannot continue"), "{err}");
    let (ok, _, err) = run_cli(&[&resume[..], &common[..]].concat());
    assert!(ok && err.contains("Optimizer: rmsprop") && err.contains("Epoch 2/2"), "{err}");
    let ck = checkpoint::load(&last).unwrap();
    assert_eq!((ck.meta.optimizer, ck.meta.label_smoothing, ck.meta.epoch), (Optimizer::keras_default(OptimizerName::RmsProp), 0.1, 2));
}
