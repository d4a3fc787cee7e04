//! A model's tensors on a backend and the three things done with them: a training step
//! (gather, forward, loss, backward, Adam), evaluation and prediction. Generic over the
//! Backend, so the CPU and GPU paths run this same code.

pub use crate::backend::AdamConfig;
use crate::backend::{Backend, GatherAugment, METRICS_LEN};
use crate::model::{Activation, LayerOp, Model};
use crate::rng::Rng;
use anyhow::{bail, Result};

/// A tensor copied to the host, named as in checkpoints ("conv2d.kernel").
#[derive(Clone, Debug, PartialEq)]
pub struct HostTensor {
    pub name: String,
    pub dims: Vec<usize>,
    pub data: Vec<f32>,
}

/// One parameter tensor with its gradient and Adam moments.
struct Param<T> {
    name: String,
    dims: Vec<usize>,
    len: usize,
    value: T,
    grad: T,
    m: T,
    v: T,
}

/// Metrics read back from the device: mean loss and accuracy over `count` samples.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Metrics {
    pub loss: f64,
    pub accuracy: f64,
    pub count: usize,
}

pub struct Network<B: Backend> {
    pub backend: B,
    pub model: Model,
    pub max_batch: usize,
    pub adam: AdamConfig,
    /// Adam steps taken so far (Keras's `optimizer.iterations`).
    pub step: u64,
    /// params[2*i], params[2*i+1]: kernel and bias of the i-th layer with weights.
    params: Vec<Param<B::Tensor>>,
    /// acts[0] is the input batch; layer i writes acts[slot_out[i]]. Flatten writes nothing:
    /// in NHWC its output is its input, so it shares the slot.
    acts: Vec<B::Tensor>,
    grads: Vec<B::Tensor>,
    slot_in: Vec<usize>,
    slot_out: Vec<usize>,
    /// Whether the layer writing each slot applies ReLU (its gradient then needs masking).
    relu_slot: Vec<bool>,
    /// Index into params of each layer's kernel.
    param_of: Vec<Option<usize>>,
    argmax: Vec<Option<B::Indices>>,
    batch_idx: B::Indices,
    /// The augmented training batch's packed transforms (src/augment.rs).
    batch_transforms: B::Indices,
    labels: B::Indices,
    metrics: B::Tensor,
    probs: B::Tensor,
    /// Per-class loss weights (`--class-weight`); None trains unweighted.
    class_weights: Option<B::Tensor>,
    /// The same weights on the host, for checkpoints.
    class_weight_values: Option<Vec<f32>>,
}

/// Whether a layer with weights applies ReLU to its output (its backward then masks dy first).
fn has_relu(op: &LayerOp) -> bool {
    match op {
        LayerOp::Conv { relu, .. } => *relu,
        LayerOp::Dense { activation, .. } => *activation == Activation::Relu,
        LayerOp::Pool { .. } | LayerOp::Flatten => false,
    }
}

/// Splits a slice into one shared and one mutable element (a != b).
fn pair_mut<T>(v: &mut [T], a: usize, b: usize) -> (&T, &mut T) {
    assert_ne!(a, b);
    if a < b {
        let (lo, hi) = v.split_at_mut(b);
        (&lo[a], &mut hi[0])
    } else {
        let (lo, hi) = v.split_at_mut(a);
        (&hi[0], &mut lo[b])
    }
}

impl<B: Backend> Network<B> {
    /// Allocates every buffer for batches up to `max_batch` and initialises the weights as
    /// Keras does: glorot_uniform kernels, zero biases, seeded.
    pub fn new(backend: B, model: Model, max_batch: usize, seed: u64) -> Result<Self> {
        if max_batch == 0 {
            bail!("batch size must be at least 1");
        }
        check_memory(&model, max_batch, backend.tensors_in_host_memory())?;
        let mut params = Vec::new();
        let mut slot_in = Vec::new();
        let mut slot_out = Vec::new();
        let mut param_of = Vec::new();
        let mut argmax = Vec::new();
        let mut slot_lens = vec![model.input_len()];
        let mut relu_slot = vec![false];
        for layer in &model.layers {
            let input = *slot_out.last().unwrap_or(&0);
            slot_in.push(input);
            if layer.op == LayerOp::Flatten {
                slot_out.push(input);
            } else {
                slot_lens.push(layer.output_len());
                relu_slot.push(has_relu(&layer.op));
                slot_out.push(slot_lens.len() - 1);
            }
            argmax.push(match layer.op {
                LayerOp::Pool { shape } => Some(backend.indices(max_batch * shape.out_len())?),
                _ => None,
            });
            param_of.push(match layer.param_lens() {
                Some((k, b)) => {
                    param_of_push(&backend, &mut params, &layer.name, layer.kernel_dims().unwrap(), k, b)?;
                    Some(params.len() - 2)
                }
                None => None,
            });
        }
        let mut acts = Vec::new();
        let mut grads = Vec::new();
        for (i, &len) in slot_lens.iter().enumerate() {
            acts.push(backend.tensor(max_batch * len)?);
            // The input needs no gradient.
            grads.push(backend.tensor(if i == 0 { 0 } else { max_batch * len })?);
        }
        let classes = model.classes();
        let mut net = Network {
            batch_idx: backend.indices(max_batch)?,
            batch_transforms: backend.indices(max_batch)?,
            labels: backend.indices(max_batch)?,
            metrics: backend.tensor(METRICS_LEN)?,
            probs: backend.tensor(max_batch * classes)?,
            class_weights: None,
            class_weight_values: None,
            backend,
            model,
            max_batch,
            adam: AdamConfig::default(),
            step: 0,
            params,
            acts,
            grads,
            slot_in,
            slot_out,
            relu_slot,
            param_of,
            argmax,
        };
        net.init_weights(seed);
        Ok(net)
    }

    /// glorot_uniform: U(-l, l) with l = sqrt(6 / (fan_in + fan_out)); biases zero.
    pub fn init_weights(&mut self, seed: u64) {
        for (i, layer) in self.model.layers.iter().enumerate() {
            let Some(p) = self.param_of[i] else { continue };
            let (fan_in, fan_out) = match layer.op {
                LayerOp::Conv { shape: s, .. } => (s.k_h * s.k_w * s.in_c, s.k_h * s.k_w * s.out_c),
                LayerOp::Dense { shape: s, .. } => (s.inputs, s.units),
                _ => unreachable!(),
            };
            let limit = (6.0 / (fan_in + fan_out) as f64).sqrt() as f32;
            let mut rng = Rng::derive(seed, crate::rng::purpose::INIT_WEIGHTS, i as u64);
            let kernel: Vec<f32> = (0..self.params[p].len).map(|_| (rng.unit_f32() * 2.0 - 1.0) * limit).collect();
            self.backend.upload(&mut self.params[p].value, &kernel);
            let zeros = vec![0.0; self.params[p + 1].len];
            self.backend.upload(&mut self.params[p + 1].value, &zeros);
        }
        for p in &mut self.params {
            let zeros = vec![0.0; p.len];
            self.backend.upload(&mut p.m, &zeros);
            self.backend.upload(&mut p.v, &zeros);
        }
        self.step = 0;
    }

    pub fn classes(&self) -> usize {
        self.model.classes()
    }

    /// The learning rate of the next updates (schedules set it before every step).
    pub fn set_learning_rate(&mut self, rate: f32) {
        self.adam.learning_rate = rate;
    }

    fn forward(&mut self, n: usize) {
        let b = &self.backend;
        for (i, layer) in self.model.layers.iter().enumerate() {
            let (a, o) = (self.slot_in[i], self.slot_out[i]);
            if a == o {
                continue; // Flatten
            }
            let (x, y) = pair_mut(&mut self.acts, a, o);
            match &layer.op {
                LayerOp::Conv { shape, relu } => {
                    let p = self.param_of[i].unwrap();
                    b.conv2d_forward(x, &self.params[p].value, &self.params[p + 1].value, y, shape, n, *relu);
                }
                LayerOp::Pool { shape } => b.maxpool_forward(x, y, self.argmax[i].as_mut().unwrap(), shape, n),
                LayerOp::Dense { shape, activation } => {
                    let p = self.param_of[i].unwrap();
                    b.dense_forward(x, &self.params[p].value, &self.params[p + 1].value, y, shape, n, *activation == Activation::Relu);
                }
                LayerOp::Flatten => {}
            }
        }
    }

    /// Loss gradient, then every layer's backward, last to first.
    fn backward(&mut self, n: usize) {
        let b = &self.backend;
        let last = *self.slot_out.last().unwrap();
        match &self.class_weights {
            Some(w) => b.softmax_xent_weighted(&self.acts[last], &self.labels, w, &mut self.grads[last], &mut self.metrics, n, self.model.classes()),
            None => b.softmax_xent(&self.acts[last], &self.labels, &mut self.grads[last], &mut self.metrics, n, self.model.classes()),
        }
        for (i, layer) in self.model.layers.iter().enumerate().rev() {
            let (a, o) = (self.slot_in[i], self.slot_out[i]);
            if a == o {
                continue;
            }
            // A ReLU'd activation's gradient is masked by the op that produces it (fused on the
            // GPU): `relu_y` is dx's activation when the layer that made it applied ReLU.
            let relu_y = (a != 0 && self.relu_slot[a]).then(|| &self.acts[a]);
            match &layer.op {
                LayerOp::Conv { .. } | LayerOp::Dense { .. } => {
                    // Only the loss's gradient reaches a layer unmasked.
                    if has_relu(&layer.op) && o == last {
                        b.relu_backward(&self.acts[o], &mut self.grads[o], n * layer.output_len());
                    }
                    let p = self.param_of[i].unwrap();
                    let (kernel, bias) = self.params.split_at_mut(p + 1);
                    let (kernel, bias) = (&mut kernel[p], &mut bias[0]);
                    match &layer.op {
                        LayerOp::Conv { shape, .. } => b.conv2d_backward_filter(&self.acts[a], &self.grads[o], &mut kernel.grad, &mut bias.grad, shape, n),
                        LayerOp::Dense { shape, .. } => b.dense_backward_filter(&self.acts[a], &self.grads[o], &mut kernel.grad, &mut bias.grad, shape, n),
                        _ => unreachable!(),
                    }
                    // The input needs no gradient.
                    if a != 0 {
                        let (dy, dx) = pair_mut(&mut self.grads, o, a);
                        match (&layer.op, relu_y) {
                            (LayerOp::Conv { shape, .. }, None) => b.conv2d_backward_input(dy, &kernel.value, dx, shape, n),
                            (LayerOp::Conv { shape, .. }, Some(y)) => b.conv2d_backward_input_relu(dy, &kernel.value, y, dx, shape, n),
                            (LayerOp::Dense { shape, .. }, None) => b.dense_backward_input(dy, &kernel.value, dx, shape, n),
                            (LayerOp::Dense { shape, .. }, Some(y)) => b.dense_backward_input_relu(dy, &kernel.value, y, dx, shape, n),
                            _ => unreachable!(),
                        }
                    }
                }
                LayerOp::Pool { shape } => {
                    if a != 0 {
                        let (dy, dx) = pair_mut(&mut self.grads, o, a);
                        let argmax = self.argmax[i].as_ref().unwrap();
                        match relu_y {
                            None => b.maxpool_backward(dy, argmax, dx, shape, n),
                            Some(y) => b.maxpool_backward_relu(dy, argmax, y, dx, shape, n),
                        }
                    }
                }
                LayerOp::Flatten => {}
            }
        }
    }

    fn adam_update(&mut self) {
        self.step += 1;
        let h = self.adam.at_step(self.step);
        for p in &mut self.params {
            self.backend.adam_update(&mut p.value, &p.grad, &mut p.m, &mut p.v, p.len, &h);
        }
    }

    /// Builds the input batch; `transforms` (one packed SampleTransform per index) augments it.
    fn gather(&mut self, data: &B::Images, indices: &[u32], transforms: Option<&[u32]>) {
        let n = indices.len();
        assert!(n > 0 && n <= self.max_batch, "batch of {n} outside 1..={}", self.max_batch);
        self.backend.upload_indices(&mut self.batch_idx, indices);
        let augment = match transforms {
            Some(t) => {
                assert_eq!(t.len(), n, "one transform per image");
                self.backend.upload_indices(&mut self.batch_transforms, t);
                Some(GatherAugment { transforms: &self.batch_transforms, shape: self.model.input })
            }
            None => None,
        };
        self.backend.gather_batch(data, &self.batch_idx, n, &mut self.acts[0], &mut self.labels, augment);
    }

    /// One training step on the images at `indices` of `data`. Adds to the metrics.
    pub fn train_step(&mut self, data: &B::Images, indices: &[u32]) -> Result<()> {
        self.train_step_augmented(data, indices, None)
    }

    /// A training step on augmented images: `transforms` holds one packed
    /// `augment::SampleTransform` per index (see `Augmentation::batch_transforms`).
    pub fn train_step_augmented(&mut self, data: &B::Images, indices: &[u32], transforms: Option<&[u32]>) -> Result<()> {
        self.gather(data, indices, transforms);
        self.forward(indices.len());
        self.backward(indices.len());
        self.adam_update();
        self.backend.flush()
    }

    /// Forward and loss only (the loss gradient is computed and ignored). Adds to the metrics.
    pub fn eval_step(&mut self, data: &B::Images, indices: &[u32]) -> Result<()> {
        self.gather(data, indices, None);
        self.forward(indices.len());
        let last = *self.slot_out.last().unwrap();
        self.backend.softmax_xent(&self.acts[last], &self.labels, &mut self.grads[last], &mut self.metrics, indices.len(), self.model.classes());
        self.backend.flush()
    }

    /// Weights the training loss per class (None: unweighted). Validation loss stays
    /// unweighted, as Keras applies `class_weight` to the training data only.
    pub fn set_class_weights(&mut self, weights: Option<&[f32]>) -> Result<()> {
        self.class_weights = match weights {
            Some(w) => {
                if w.len() != self.model.classes() {
                    bail!("{} class weights for a model with {} classes", w.len(), self.model.classes());
                }
                let mut t = self.backend.tensor(w.len())?;
                self.backend.upload(&mut t, w);
                Some(t)
            }
            None => None,
        };
        self.class_weight_values = weights.map(<[f32]>::to_vec);
        Ok(())
    }

    /// The per-class loss weights set with `set_class_weights`.
    pub fn class_weights(&self) -> Option<&[f32]> {
        self.class_weight_values.as_deref()
    }

    /// Class probabilities (n, classes) of the images at `indices`.
    pub fn predict_step(&mut self, data: &B::Images, indices: &[u32]) -> Result<Vec<f32>> {
        self.gather(data, indices, None);
        self.forward(indices.len());
        let last = *self.slot_out.last().unwrap();
        let classes = self.model.classes();
        self.backend.softmax(&self.acts[last], &mut self.probs, indices.len(), classes);
        self.backend.flush()?;
        let mut probs = self.backend.download(&self.probs)?;
        probs.truncate(indices.len() * classes);
        Ok(probs)
    }

    /// Evaluates on the first `count` images of `data` in order: mean loss and accuracy.
    pub fn evaluate(&mut self, data: &B::Images, count: usize) -> Result<Metrics> {
        // Training metrics in progress are set aside and put back, raw, afterwards.
        let saved = self.backend.download(&self.metrics)?;
        self.reset_metrics();
        let all: Vec<u32> = (0..count as u32).collect();
        for chunk in all.chunks(self.max_batch) {
            self.eval_step(data, chunk)?;
        }
        let result = self.read_metrics()?;
        self.backend.upload(&mut self.metrics, &saved);
        Ok(result)
    }

    pub fn reset_metrics(&mut self) {
        self.backend.upload(&mut self.metrics, &[0.0; METRICS_LEN]);
    }

    /// Reads the metrics accumulated since the last reset (waits for queued work).
    pub fn read_metrics(&self) -> Result<Metrics> {
        let m = self.backend.download(&self.metrics)?;
        let count = m[crate::backend::METRIC_COUNT] as usize;
        if count == 0 {
            return Ok(Metrics::default());
        }
        Ok(Metrics { loss: m[crate::backend::METRIC_LOSS_SUM] as f64 / count as f64, accuracy: m[crate::backend::METRIC_CORRECT] as f64 / count as f64, count })
    }

    /// The weights as named host tensors, in layer order (kernel, bias, ...).
    pub fn weights(&self) -> Result<Vec<HostTensor>> {
        self.params.iter().map(|p| Ok(HostTensor { name: p.name.clone(), dims: p.dims.clone(), data: self.backend.download(&p.value)? })).collect()
    }

    /// Adam's first and second moments, named "<param>.adam_m" and "<param>.adam_v".
    pub fn optimizer_state(&self) -> Result<Vec<HostTensor>> {
        let mut out = Vec::new();
        for p in &self.params {
            out.push(HostTensor { name: format!("{}.adam_m", p.name), dims: p.dims.clone(), data: self.backend.download(&p.m)? });
            out.push(HostTensor { name: format!("{}.adam_v", p.name), dims: p.dims.clone(), data: self.backend.download(&p.v)? });
        }
        Ok(out)
    }

    /// The last computed gradients (for tests comparing backends).
    pub fn gradients(&self) -> Result<Vec<HostTensor>> {
        self.params.iter().map(|p| Ok(HostTensor { name: p.name.clone(), dims: p.dims.clone(), data: self.backend.download(&p.grad)? })).collect()
    }

    /// Loads weights (and, when given, Adam moments) by name; every parameter must be present
    /// with the right shape.
    pub fn load_state(&mut self, tensors: &[HostTensor], with_optimizer: bool) -> Result<()> {
        let find = |name: &str, dims: &[usize]| -> Result<&HostTensor> {
            let t = tensors.iter().find(|t| t.name == name).ok_or_else(|| anyhow::anyhow!("tensor '{name}' is missing"))?;
            if t.dims != dims {
                bail!("tensor '{name}' has shape {:?}, the model needs {:?}", t.dims, dims);
            }
            Ok(t)
        };
        for i in 0..self.params.len() {
            let (name, dims) = (self.params[i].name.clone(), self.params[i].dims.clone());
            let value = find(&name, &dims)?.data.clone();
            self.backend.upload(&mut self.params[i].value, &value);
            if with_optimizer {
                let m = find(&format!("{name}.adam_m"), &dims)?.data.clone();
                let v = find(&format!("{name}.adam_v"), &dims)?.data.clone();
                self.backend.upload(&mut self.params[i].m, &m);
                self.backend.upload(&mut self.params[i].v, &v);
            }
        }
        Ok(())
    }
}

/// Refuses a batch size (or model) whose buffers could never fit this machine, before allocating.
fn check_memory(model: &Model, batch: usize, host_memory: bool) -> Result<()> {
    let gb = |b: u64| b as f64 / 1e9;
    match (model.memory_bytes(batch), crate::system_info::usable_memory_bytes().filter(|_| host_memory)) {
        (None, _) => bail!("batch size {batch}: the model's buffers for that many images would exceed the address space; use a smaller batch size"),
        (Some(need), Some(total)) if need as u64 > total => {
            bail!(
                "batch size {batch}: the model's buffers need {:.1} GB, more than the {:.1} GB of memory this process may use; use a smaller batch size",
                gb(need as u64),
                gb(total)
            )
        }
        _ => Ok(()),
    }
}

fn param_of_push<B: Backend>(backend: &B, params: &mut Vec<Param<B::Tensor>>, layer: &str, kernel_dims: Vec<usize>, k: usize, b: usize) -> Result<()> {
    for (suffix, dims, len) in [("kernel", kernel_dims, k), ("bias", vec![b], b)] {
        params.push(Param {
            name: format!("{layer}.{suffix}"),
            dims,
            len,
            value: backend.tensor(len)?,
            grad: backend.tensor(len)?,
            m: backend.tensor(len)?,
            v: backend.tensor(len)?,
        });
    }
    Ok(())
}
