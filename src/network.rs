//! A model's tensors on a backend and the three things done with them: a training step
//! (gather, forward, loss, backward, optimizer update), evaluation and prediction. Generic over the
//! Backend, so the CPU and GPU paths run this same code.

pub use crate::backend::AdamConfig;
use crate::backend::{Backend, GatherAugment, Passes, PoolShape, RmsPropStep, SgdStep, TensorArena, METRICS_LEN};
use crate::layers::{Backward, Forward, Init, LayerSpec, ParamSpec, Scratch};
use crate::model::{Layer, Model};
use crate::optimizer::Optimizer;
use crate::rng::Rng;
use anyhow::{bail, Context, Result};

/// A tensor copied to the host, named as in checkpoints ("conv2d.kernel").
#[derive(Clone, Debug, PartialEq)]
pub struct HostTensor {
    pub name: String,
    pub dims: Vec<usize>,
    pub data: Vec<f32>,
}

/// One layer's tensors on the device: its ParamSpecs' values (in their order), the gradients
/// and optimizer state of the trainable ones (in the same order, trainable only), its scratch.
struct LayerState<B: Backend> {
    specs: Vec<ParamSpec>,
    values: Vec<B::Tensor>,
    grads: Vec<B::Tensor>,
    /// Each trainable tensor's optimizer state, one per `Optimizer::slot_names` (Adam: m, v;
    /// SGD with momentum: momentum; RMSprop: velocity).
    slots: Vec<Vec<B::Tensor>>,
    scratch: Vec<Scratch<B>>,
}

impl<B: Backend> LayerState<B> {
    /// The layer's tensors: the trainable ones' values, gradients and optimizer state taken
    /// in order from `arenas`, the others (moving statistics) made here.
    fn new(backend: &B, layer: &Layer, max_batch: usize, arenas: &mut ArenaParts<B::Tensor>) -> Result<Self> {
        let specs = layer.params();
        let mut state = LayerState { specs: Vec::new(), values: Vec::new(), grads: Vec::new(), slots: Vec::new(), scratch: Vec::new() };
        for spec in &specs {
            if spec.trainable {
                state.values.push(arenas.values.next().expect("a value per trainable tensor"));
                state.grads.push(arenas.grads.next().expect("a gradient per trainable tensor"));
                state.slots.push(arenas.next_slots());
            } else {
                state.values.push(backend.tensor(spec.len())?);
            }
        }
        state.specs = specs;
        for s in layer.scratch() {
            state.scratch.push(Scratch::alloc(backend, &s, max_batch)?);
        }
        Ok(state)
    }
    /// (value index, spec) of each trainable tensor, in the order of `grads` and `slots`.
    fn trainable(&self) -> impl Iterator<Item = (usize, &ParamSpec)> {
        self.specs.iter().enumerate().filter(|(_, s)| s.trainable)
    }
}

/// The trainable tensors' arenas, split into their parts, handed out in trainable-tensor order
/// (layer by layer, each layer's ParamSpec order).
struct ArenaParts<T> {
    values: std::vec::IntoIter<T>,
    grads: std::vec::IntoIter<T>,
    /// One per optimizer slot name.
    slots: Vec<std::vec::IntoIter<T>>,
}

impl<T> ArenaParts<T> {
    /// The next trainable tensor's optimizer state, one tensor per slot name.
    fn next_slots(&mut self) -> Vec<T> {
        self.slots.iter_mut().map(|s| s.next().expect("optimizer state per trainable tensor")).collect()
    }
}

/// The whole buffers behind the arenas, where the backend lays each role out in one (the
/// GPU): the optimizer then updates every trainable tensor with one call over `len` elements.
struct WholeArenas<T> {
    len: usize,
    values: T,
    grads: T,
    slots: Vec<T>,
}

/// The optimizer-state arenas of `optimizer` for trainable tensors of `lens`.
fn slot_arenas<B: Backend>(backend: &B, optimizer: &Optimizer, lens: &[usize]) -> Result<Vec<TensorArena<B::Tensor>>> {
    optimizer.slot_names().iter().map(|_| backend.tensor_arena(lens)).collect()
}

/// Splits slot arenas into their parts and their wholes (None where any has no whole, or a
/// whole of another length than `len`).
fn split_slots<T>(arenas: Vec<TensorArena<T>>, len: usize) -> (Vec<std::vec::IntoIter<T>>, Option<Vec<T>>) {
    let mut parts = Vec::new();
    let mut wholes = Some(Vec::new());
    for arena in arenas {
        parts.push(arena.parts.into_iter());
        match (arena.whole, wholes.as_mut()) {
            (Some((t, l)), Some(w)) if l == len => w.push(t),
            _ => wholes = None,
        }
    }
    (parts, wholes)
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
    /// The optimizer (`set_optimizer` changes it and its state); Adam by default.
    optimizer: Optimizer,
    /// The optimizer's learning rate (a schedule may change it between steps).
    pub learning_rate: f32,
    /// Label smoothing of the loss (training and validation, as Keras's compiled loss); 0: none.
    pub label_smoothing: f32,
    /// Optimizer steps taken so far (Keras's `optimizer.iterations`).
    pub step: u64,
    /// The run's seed (random draws in layers, e.g. dropout masks, come from seed and step).
    pub seed: u64,
    /// Each layer's tensors, gradients, moments and scratch, in layer order.
    state: Vec<LayerState<B>>,
    /// The trainable tensors' lengths, in arena order (layer by layer).
    trainable_lens: Vec<usize>,
    /// The arenas' whole buffers, on a backend that has them (the GPU); None: the optimizer
    /// updates tensor by tensor (the CPU backend).
    whole_arenas: Option<WholeArenas<B::Tensor>>,
    /// acts[0] is the input batch; layer i writes acts[slot_out[i]]. Flatten writes nothing:
    /// in NHWC its output is its input, so it shares the slot; so does a ReLU that the layer
    /// before it absorbs (`absorbs_relu`), which then writes its output already ReLU'd.
    acts: Vec<B::Tensor>,
    /// Two gradient buffers for all slots: slot k's gradient lives in `grads[grad_buffer(k)]`.
    /// A layer's dy and dx are consecutive slots, so they never share one, and a gradient is
    /// dead once the layer before has read it: two buffers the size of the largest output
    /// instead of one per output.
    grads: [B::Tensor; 2],
    slot_in: Vec<usize>,
    slot_out: Vec<usize>,
    /// Whether the layer writing each slot applies ReLU (its gradient then needs masking).
    relu_slot: Vec<bool>,
    /// Per layer: its forward applies the ReLU layer that follows it (`Forward::relu`).
    absorbed_relu: Vec<bool>,
    /// Per layer: the MaxPooling2D layer its forward runs (`Forward::pool`), whose argmax
    /// scratch it writes, and that pool's geometry.
    absorbed_pool: Vec<Option<(usize, PoolShape)>>,
    /// False for `for_inference`: no gradient buffers but the loss's.
    trains: bool,
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

/// Which of the two gradient buffers holds slot k's gradient.
fn grad_buffer(slot: usize) -> usize {
    slot % 2
}

/// The geometry of `layer` where it is a MaxPooling2D that the layer writing its input may
/// run inside itself (`LayerKind::absorbs_maxpool`): one with disjoint windows (stride >= size).
pub fn absorbable_maxpool(layer: &Layer) -> Option<PoolShape> {
    match &layer.spec {
        LayerSpec::MaxPooling2D(p) => Some(p.shape(&layer.input)).filter(PoolShape::windows_disjoint),
        _ => None,
    }
}

/// The passes layer i of `model` runs in a network that trains (`trains`) or only infers. Its
/// input needs a gradient unless every layer before it is a view of the network's input (then
/// it reads the input's slot, which has none).
pub fn layer_passes(model: &Model, i: usize, trains: bool) -> Passes {
    match trains {
        true => Passes::Training { input_gradient: !model.layers[..i].iter().all(|l| l.spec.is_view()) },
        false => Passes::Inference,
    }
}

/// Layer i's state, and where it runs the MaxPooling2D layer k (> i) too, that pool's
/// geometry and argmax.
fn layer_and_pool<B: Backend>(
    state: &mut [LayerState<B>],
    pool: Option<(usize, PoolShape)>,
    i: usize,
) -> (&mut LayerState<B>, Option<(PoolShape, &mut B::Indices)>) {
    match pool {
        None => (&mut state[i], None),
        Some((k, shape)) => {
            let (head, tail) = state.split_at_mut(k);
            (&mut head[i], Some((shape, tail[0].scratch[0].indices_mut())))
        }
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
    /// Allocates every buffer for batches up to `max_batch` and initialises the tensors as
    /// Keras does (each ParamSpec's `Init`: glorot_uniform kernels, zero biases), seeded.
    pub fn new(backend: B, model: Model, max_batch: usize, seed: u64) -> Result<Self> {
        Self::build(backend, model, max_batch, seed, true)
    }

    /// A network for forward passes only (evaluate, predict): of the activation gradients it
    /// keeps just the loss's, which evaluate computes and ignores, so it holds no buffer the
    /// size of the largest activation for gradients it never takes. Training it panics.
    pub fn for_inference(backend: B, model: Model, max_batch: usize) -> Result<Self> {
        Self::build(backend, model, max_batch, 0, false)
    }

    fn build(backend: B, model: Model, max_batch: usize, seed: u64, trains: bool) -> Result<Self> {
        if max_batch == 0 {
            bail!("batch size must be at least 1");
        }
        check_memory(&model, max_batch, backend.tensors_in_host_memory())?;
        let optimizer = Optimizer::default();
        let trainable_lens: Vec<usize> = model.layers.iter().flat_map(|l| l.params()).filter(|s| s.trainable).map(|s| s.len()).collect();
        let values = backend.tensor_arena(&trainable_lens)?;
        let grads = backend.tensor_arena(&trainable_lens)?;
        let (slot_parts, slot_wholes) = split_slots(slot_arenas(&backend, &optimizer, &trainable_lens)?, values.whole.as_ref().map_or(0, |w| w.1));
        let whole_arenas = match (values.whole, grads.whole, slot_wholes) {
            (Some((values, len)), Some((grads, grads_len)), Some(slots)) if grads_len == len => Some(WholeArenas { len, values, grads, slots }),
            _ => None,
        };
        let mut parts = ArenaParts { values: values.parts.into_iter(), grads: grads.parts.into_iter(), slots: slot_parts };
        let mut state = Vec::new();
        let mut slot_in = Vec::new();
        let mut slot_out = Vec::new();
        let mut slot_lens = vec![model.input_len()];
        let mut relu_slot = vec![false];
        let mut absorbed_relu = vec![false; model.layers.len()];
        let mut absorbed_pool = vec![None; model.layers.len()];
        // The layer that writes each slot (none for the input).
        let mut writer = vec![None];
        for (i, layer) in model.layers.iter().enumerate() {
            let input = *slot_out.last().unwrap_or(&0);
            slot_in.push(input);
            let absorbed = i > 0 && layer.spec.is_plain_relu() && model.layers[i - 1].spec.absorbs_relu() && slot_in[i - 1] != input;
            let pooled_by = writer[input].zip(absorbable_maxpool(layer)).filter(|&(w, _): &(usize, PoolShape)| {
                let writer = &model.layers[w];
                writer.spec.absorbs_maxpool(&backend, &writer.input, layer_passes(&model, w, trains)) && absorbed_pool[w].is_none()
            });
            if absorbed {
                // Runs inside the layer before, whose slot now holds ReLU'd values.
                absorbed_relu[i - 1] = true;
                relu_slot[input] = true;
                slot_out.push(input);
            } else if let Some((w, shape)) = pooled_by {
                // Runs inside the layer that wrote its input, whose slot now holds the pooled
                // values; that layer's backward masks by its ReLU itself.
                absorbed_pool[w] = Some((i, shape));
                slot_lens[input] = layer.output_len();
                relu_slot[input] = layer.spec.output_relu();
                slot_out.push(input);
            } else if layer.spec.is_view() {
                slot_out.push(input);
            } else {
                slot_lens.push(layer.output_len());
                relu_slot.push(layer.spec.output_relu());
                writer.push(Some(i));
                slot_out.push(slot_lens.len() - 1);
            }
            state.push(LayerState::new(&backend, layer, max_batch, &mut parts)?);
        }
        let mut acts = Vec::new();
        let mut grad_lens = [0; 2];
        let last = *slot_out.last().unwrap_or(&0);
        for (i, &len) in slot_lens.iter().enumerate() {
            acts.push(backend.tensor(max_batch * len)?);
            // The input needs no gradient; inference only the loss's.
            if i > 0 && (trains || i == last) {
                grad_lens[grad_buffer(i)] = grad_lens[grad_buffer(i)].max(max_batch * len);
            }
        }
        let grads = [backend.tensor(grad_lens[0])?, backend.tensor(grad_lens[1])?];
        let classes = model.classes();
        let mut net = Network {
            batch_idx: backend.indices(max_batch)?,
            batch_transforms: backend.indices(max_batch * crate::augment::AFFINE_WORDS)?,
            labels: backend.indices(max_batch)?,
            metrics: backend.tensor(METRICS_LEN)?,
            probs: backend.tensor(max_batch * classes)?,
            class_weights: None,
            class_weight_values: None,
            backend,
            model,
            max_batch,
            optimizer,
            learning_rate: AdamConfig::default().learning_rate,
            label_smoothing: 0.0,
            step: 0,
            seed,
            state,
            trainable_lens,
            whole_arenas,
            acts,
            grads,
            slot_in,
            slot_out,
            relu_slot,
            absorbed_relu,
            absorbed_pool,
            trains,
        };
        net.init_weights(seed)?;
        Ok(net)
    }

    /// Every tensor from its ParamSpec's `Init`; zero Adam moments. Glorot draws come from one
    /// stream per layer (seed, INIT_WEIGHTS, layer index), in the layer's tensor order.
    pub fn init_weights(&mut self, seed: u64) -> Result<()> {
        self.seed = seed;
        // The host-side values of the largest tensor, allocated fallibly: on a GPU they are
        // not part of the memory check, and a Dense of 10^8 weights is 400 MB here.
        let filled = |len: usize, value: f32| -> Result<Vec<f32>> {
            let mut v = crate::fallible::with_capacity(len).context("initialising the weights")?;
            v.resize(len, value);
            Ok(v)
        };
        for (i, state) in self.state.iter_mut().enumerate() {
            let mut rng = Rng::derive(seed, crate::rng::purpose::INIT_WEIGHTS, i as u64);
            for (spec, value) in state.specs.iter().zip(&mut state.values) {
                let data: Vec<f32> = match spec.init {
                    Init::GlorotUniform { fan_in, fan_out } => {
                        let limit = (6.0 / (fan_in + fan_out) as f64).sqrt() as f32;
                        let mut v = filled(spec.len(), 0.0)?;
                        v.iter_mut().for_each(|w| *w = (rng.unit_f32() * 2.0 - 1.0) * limit);
                        v
                    }
                    Init::Zeros => filled(spec.len(), 0.0)?,
                    Init::Ones => filled(spec.len(), 1.0)?,
                };
                self.backend.upload(value, &data);
            }
            for (spec, slots) in state.specs.iter().filter(|s| s.trainable).zip(&mut state.slots) {
                let zeros = filled(spec.len(), 0.0)?;
                for slot in slots {
                    self.backend.upload(slot, &zeros);
                }
            }
        }
        self.step = 0;
        Ok(())
    }

    pub fn optimizer(&self) -> Optimizer {
        self.optimizer
    }

    /// Switches to `optimizer` with fresh (zero) state tensors, as Keras builds them.
    pub fn set_optimizer(&mut self, optimizer: Optimizer) -> Result<()> {
        let len = self.whole_arenas.as_ref().map_or(0, |w| w.len);
        let (slot_parts, slot_wholes) = split_slots(slot_arenas(&self.backend, &optimizer, &self.trainable_lens)?, len);
        let mut parts = ArenaParts { values: Vec::new().into_iter(), grads: Vec::new().into_iter(), slots: slot_parts };
        for state in &mut self.state {
            for slots in &mut state.slots {
                *slots = parts.next_slots();
            }
        }
        self.whole_arenas = match (self.whole_arenas.take(), slot_wholes) {
            (Some(w), Some(slots)) => Some(WholeArenas { slots, ..w }),
            _ => None,
        };
        self.optimizer = optimizer;
        Ok(())
    }

    pub fn classes(&self) -> usize {
        self.model.classes()
    }

    /// The ReLU layers that run inside the layer before them (`LayerKind::absorbs_relu`).
    pub fn absorbed_relu_layers(&self) -> Vec<&str> {
        self.absorbed_relu.iter().zip(self.model.layers.iter().skip(1)).filter(|(&absorbed, _)| absorbed).map(|(_, relu)| relu.name.as_str()).collect()
    }
    /// The MaxPooling2D layers that run inside a layer before them (`LayerKind::absorbs_maxpool`).
    pub fn absorbed_pool_layers(&self) -> Vec<&str> {
        self.absorbed_pool.iter().flatten().map(|&(k, _)| self.model.layers[k].name.as_str()).collect()
    }

    /// Every layer's forward; `training` is false in evaluate and predict.
    fn forward(&mut self, n: usize, training: bool) {
        for (i, layer) in self.model.layers.iter().enumerate() {
            let (a, o) = (self.slot_in[i], self.slot_out[i]);
            if a == o {
                continue; // a view (Flatten), or a ReLU the layer before applied
            }
            let (x, y) = pair_mut(&mut self.acts, a, o);
            let (state, pool) = layer_and_pool(&mut self.state, self.absorbed_pool[i], i);
            let f = Forward {
                backend: &self.backend,
                n,
                training,
                seed: self.seed,
                step: self.step,
                layer: i,
                relu: self.absorbed_relu[i],
                input: &layer.input,
                x,
                y,
                pool,
                params: &mut state.values,
                scratch: &mut state.scratch,
            };
            layer.spec.forward(f);
        }
    }

    /// Loss gradient, then every layer's backward, last to first.
    fn backward(&mut self, n: usize) {
        assert!(self.trains, "a network made for inference (Network::for_inference) cannot train");
        let b = &self.backend;
        let last = *self.slot_out.last().unwrap();
        match &self.class_weights {
            _ if self.label_smoothing != 0.0 => b.softmax_xent_smoothed(
                &self.acts[last],
                &self.labels,
                self.class_weights.as_ref(),
                &mut self.grads[grad_buffer(last)],
                &mut self.metrics,
                n,
                self.model.classes(),
                self.label_smoothing,
            ),
            Some(w) => {
                b.softmax_xent_weighted(&self.acts[last], &self.labels, w, &mut self.grads[grad_buffer(last)], &mut self.metrics, n, self.model.classes())
            }
            None => b.softmax_xent(&self.acts[last], &self.labels, &mut self.grads[grad_buffer(last)], &mut self.metrics, n, self.model.classes()),
        }
        for (i, layer) in self.model.layers.iter().enumerate().rev() {
            let (a, o) = (self.slot_in[i], self.slot_out[i]);
            if a == o {
                continue;
            }
            // A ReLU'd activation's gradient is masked by the layer that consumes it (fused on
            // the GPU); only the loss's gradient reaches a layer unmasked.
            if self.relu_slot[o] && o == last {
                b.relu_backward(&self.acts[o], &mut self.grads[grad_buffer(o)], n * layer.output_len());
            }
            // `relu_y` is dx's activation when the layer that made it applied ReLU.
            let relu_y = (a != 0 && self.relu_slot[a]).then(|| &self.acts[a]);
            // The input needs no gradient.
            let (dy, dx) = if a == 0 {
                (&self.grads[grad_buffer(o)], None)
            } else {
                let (dy, dx) = pair_mut(&mut self.grads, grad_buffer(o), grad_buffer(a));
                (dy, Some(dx))
            };
            let (state, pool) = layer_and_pool(&mut self.state, self.absorbed_pool[i], i);
            let pool = pool.map(|(shape, argmax)| (shape, &*argmax));
            let back = Backward {
                backend: b,
                n,
                seed: self.seed,
                step: self.step,
                layer: i,
                input: &layer.input,
                x: &self.acts[a],
                y: &self.acts[o],
                dy,
                pool,
                relu: self.absorbed_relu[i],
                dx,
                relu_y,
                params: &state.values,
                grads: &mut state.grads,
                scratch: &mut state.scratch,
            };
            layer.spec.backward(back);
        }
    }

    /// One step of the optimizer over every trainable tensor, from the gradients the last
    /// backward pass left (Keras's `apply_gradients`; `train_step` calls it). Where the backend
    /// keeps the arenas in whole buffers (the GPU) it is one update over each, else one per
    /// tensor: element-wise updates, so the same values either way.
    pub fn apply_gradients(&mut self) {
        self.step += 1;
        let (b, optimizer, lr, step) = (&self.backend, self.optimizer, self.learning_rate, self.step);
        if let Some(w) = &mut self.whole_arenas {
            optimizer_update(b, optimizer, lr, step, &mut w.values, &w.grads, &mut w.slots, w.len);
            return;
        }
        for state in &mut self.state {
            let trainable: Vec<usize> = state.trainable().map(|(i, _)| i).collect();
            for ((&i, grad), slots) in trainable.iter().zip(&state.grads).zip(&mut state.slots) {
                optimizer_update(b, optimizer, lr, step, &mut state.values[i], grad, slots, state.specs[i].len());
            }
        }
    }

    /// Builds the input batch; `transforms` (each index's packed transform: one SampleTransform
    /// word, or AFFINE_WORDS) augments it.
    fn gather(&mut self, data: &B::Images, indices: &[u32], transforms: Option<&[u32]>) {
        let n = indices.len();
        assert!(n > 0 && n <= self.max_batch, "batch of {n} outside 1..={}", self.max_batch);
        self.backend.upload_indices(&mut self.batch_idx, indices);
        let augment = match transforms {
            Some(t) => {
                let layout = crate::augment::TransformLayout::of_batch(t.len(), n);
                self.backend.upload_indices(&mut self.batch_transforms, t);
                Some(GatherAugment { transforms: &self.batch_transforms, shape: self.model.input, layout })
            }
            None => None,
        };
        self.backend.gather_batch(data, &self.batch_idx, n, &mut self.acts[0], &mut self.labels, augment);
    }

    /// One training step on the images at `indices` of `data`. Adds to the metrics.
    pub fn train_step(&mut self, data: &B::Images, indices: &[u32]) -> Result<()> {
        self.train_step_augmented(data, indices, None)
    }

    /// A training step on augmented images: `transforms` holds each index's packed transform
    /// (see `Augmentation::step_transforms`).
    pub fn train_step_augmented(&mut self, data: &B::Images, indices: &[u32], transforms: Option<&[u32]>) -> Result<()> {
        self.gather(data, indices, transforms);
        self.forward(indices.len(), true);
        self.backward(indices.len());
        self.apply_gradients();
        self.backend.flush()
    }

    /// Forward and loss only (the loss gradient is computed and ignored). Adds to the metrics.
    pub fn eval_step(&mut self, data: &B::Images, indices: &[u32]) -> Result<()> {
        self.gather(data, indices, None);
        self.forward(indices.len(), false);
        let (last, n, classes) = (*self.slot_out.last().unwrap(), indices.len(), self.model.classes());
        // Keras reports the compiled loss, label smoothing included, for validation too.
        if self.label_smoothing == 0.0 {
            self.backend.softmax_xent(&self.acts[last], &self.labels, &mut self.grads[grad_buffer(last)], &mut self.metrics, n, classes);
        } else {
            let f = self.label_smoothing;
            self.backend.softmax_xent_smoothed(&self.acts[last], &self.labels, None, &mut self.grads[grad_buffer(last)], &mut self.metrics, n, classes, f);
        }
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
                if let Some(v) = w.iter().find(|v| !(v.is_finite() && **v > 0.0)) {
                    bail!("class weight {v}: every class weight must be a positive number");
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
        self.forward(indices.len(), false);
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

    /// Every layer's tensors (trainable or not) as named host tensors, in layer order and each
    /// layer's Keras `get_weights()` order.
    pub fn weights(&self) -> Result<Vec<HostTensor>> {
        let mut out = Vec::new();
        for (layer, state) in self.model.layers.iter().zip(&self.state) {
            for (spec, value) in state.specs.iter().zip(&state.values) {
                out.push(HostTensor { name: param_name(layer, spec), dims: spec.dims.clone(), data: self.backend.download(value)? });
            }
        }
        Ok(out)
    }

    /// The optimizer's state tensors of the trainable tensors, named "<param>.<slot>"
    /// (`Optimizer::slot_names`: Adam's "adam_m"/"adam_v", SGD's "momentum", RMSprop's "velocity").
    pub fn optimizer_state(&self) -> Result<Vec<HostTensor>> {
        let mut out = Vec::new();
        for (layer, state) in self.model.layers.iter().zip(&self.state) {
            for ((_, spec), slots) in state.trainable().zip(&state.slots) {
                let name = param_name(layer, spec);
                for (slot, t) in self.optimizer.slot_names().iter().zip(slots) {
                    out.push(HostTensor { name: format!("{name}.{slot}"), dims: spec.dims.clone(), data: self.backend.download(t)? });
                }
            }
        }
        Ok(out)
    }

    /// The last computed gradients of the trainable tensors (for tests comparing backends).
    pub fn gradients(&self) -> Result<Vec<HostTensor>> {
        let mut out = Vec::new();
        for (layer, state) in self.model.layers.iter().zip(&self.state) {
            for ((_, spec), grad) in state.trainable().zip(&state.grads) {
                out.push(HostTensor { name: param_name(layer, spec), dims: spec.dims.clone(), data: self.backend.download(grad)? });
            }
        }
        Ok(out)
    }

    /// Loads every tensor (and, when asked, the trainable ones' Adam moments) by name; each
    /// must be present with the right shape.
    pub fn load_state(&mut self, tensors: &[HostTensor], with_optimizer: bool) -> Result<()> {
        let find = |name: &str, dims: &[usize]| -> Result<&HostTensor> {
            let t = tensors.iter().find(|t| t.name == name).ok_or_else(|| anyhow::anyhow!("tensor '{name}' is missing"))?;
            if t.dims != dims {
                bail!("tensor '{name}' has shape {:?}, the model needs {:?}", t.dims, dims);
            }
            Ok(t)
        };
        for (layer, state) in self.model.layers.iter().zip(&mut self.state) {
            let mut slots = state.slots.iter_mut();
            for (spec, value) in state.specs.iter().zip(&mut state.values) {
                let name = param_name(layer, spec);
                self.backend.upload(value, &find(&name, &spec.dims)?.data);
                if !spec.trainable {
                    continue;
                }
                let tensors = slots.next().expect("one set of optimizer state per trainable tensor");
                if with_optimizer {
                    for (slot, t) in self.optimizer.slot_names().iter().zip(tensors) {
                        self.backend.upload(t, &find(&format!("{name}.{slot}"), &spec.dims)?.data);
                    }
                }
            }
        }
        Ok(())
    }
}

/// One update of `len` values from their gradients with the optimizer state `slots`
/// (`Optimizer::slot_names` order) at step `step` (counted from 1).
#[allow(clippy::too_many_arguments)]
fn optimizer_update<B: Backend>(b: &B, optimizer: Optimizer, lr: f32, step: u64, value: &mut B::Tensor, grad: &B::Tensor, slots: &mut [B::Tensor], len: usize) {
    match (optimizer, slots) {
        (Optimizer::Adam { beta_1, beta_2, epsilon }, [m, v]) => {
            let h = AdamConfig { learning_rate: lr, beta1: beta_1, beta2: beta_2, epsilon }.at_step(step);
            b.adam_update(value, grad, m, v, len, &h)
        }
        (Optimizer::AdamW { beta_1, beta_2, epsilon, weight_decay }, [m, v]) => {
            let h = AdamConfig { learning_rate: lr, beta1: beta_1, beta2: beta_2, epsilon }.at_step(step);
            b.adamw_update(value, grad, m, v, len, &h, weight_decay)
        }
        (Optimizer::Sgd { momentum, nesterov }, slots) => b.sgd_update(value, grad, slots.first_mut(), len, &SgdStep { learning_rate: lr, momentum, nesterov }),
        (Optimizer::RmsProp { rho, epsilon }, [velocity]) => b.rmsprop_update(value, grad, velocity, len, &RmsPropStep { learning_rate: lr, rho, epsilon }),
        (o, slots) => unreachable!("{} with {} state tensors", o.describe(), slots.len()),
    }
}

/// A tensor's checkpoint name: "<layer>.<suffix>" ("conv2d.kernel").
pub fn param_name(layer: &Layer, spec: &ParamSpec) -> String {
    format!("{}.{}", layer.name, spec.suffix)
}

/// Refuses a batch size (or model) whose buffers could never fit this machine, before allocating.
fn check_memory(model: &Model, batch: usize, host_memory: bool) -> Result<()> {
    let gb = |b: u64| b as f64 / 1e9;
    let scratch = if host_memory { cpu_conv_scratch_bytes(model) } else { Some(0) };
    let need = model.memory_bytes(batch).zip(scratch).and_then(|(a, b)| a.checked_add(b));
    let advice = match batch {
        1 => "the model is too large for this machine".to_string(),
        _ => "use a smaller batch size".to_string(),
    };
    match (need, crate::system_info::usable_memory_bytes().filter(|_| host_memory)) {
        (None, _) => bail!("batch size {batch}: the model's buffers for that many images would exceed the address space; {advice}"),
        (Some(need), Some(total)) if need as u64 > total => {
            bail!(
                "batch size {batch}: the model's buffers need {:.1} GB, more than the {:.1} GB of memory this process may use; {advice}",
                gb(need as u64),
                gb(total)
            )
        }
        _ => Ok(()),
    }
}

/// The CPU backend's im2col blocks: each thread unfolds at least one image of a conv at a
/// time (patch x output pixels), allocated when the conv first runs, so a huge input must be
/// refused here rather than abort there. An upper bound: convs the backend runs directly or
/// by Winograd need less.
fn cpu_conv_scratch_bytes(model: &Model) -> Option<usize> {
    let widest = model.layers.iter().try_fold(0usize, |most, l| match &l.spec {
        LayerSpec::Conv2D(c) => {
            let s = c.shape(&l.input);
            Some(most.max(s.patch_len().checked_mul(s.out_h)?.checked_mul(s.out_w)?))
        }
        _ => Some(most),
    })?;
    widest.checked_mul(rayon::current_num_threads().max(1))?.checked_mul(std::mem::size_of::<f32>())
}
