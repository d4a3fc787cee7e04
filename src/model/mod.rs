//! Model descriptions: the layer list, its text format, shape inference and the summary table.
//! The layers themselves (their arguments, tensors, forward and backward) live in src/layers/.

mod arch_text;
mod summary;

pub use crate::layers::{
    conv_shape, dilated_conv_shape, pool_shape, tensor_values, Activation, LayerSpec, Padding, ParamSpec, ScratchSpec, MAX_TENSOR_VALUES, UNITS_FROM_CLASSES,
};
pub use arch_text::{format_arch, parse_arch};
pub use summary::summary_table;

use anyhow::{anyhow, bail, Result};

#[derive(Clone, Debug)]
pub struct Layer {
    /// Keras's automatic name: conv2d, conv2d_1, max_pooling2d, flatten, dense, dense_1, ...
    pub name: String,
    pub spec: LayerSpec,
    /// Input shape without the batch dimension: (h, w, c), or (features).
    pub input: Vec<usize>,
    /// Output shape without the batch dimension: (h, w, c), or (units) after Flatten/Dense.
    pub output: Vec<usize>,
}

impl Layer {
    pub fn output_len(&self) -> usize {
        self.output.iter().product()
    }
    /// The tensors the layer owns, in Keras `get_weights()` order.
    pub fn params(&self) -> Vec<ParamSpec> {
        self.spec.params(&self.input)
    }
    /// The buffers its forward keeps for its backward.
    pub fn scratch(&self) -> Vec<ScratchSpec> {
        self.spec.scratch(&self.input)
    }
    /// Values in all its tensors, trainable or not.
    pub fn param_count(&self) -> usize {
        self.params().iter().map(ParamSpec::len).sum()
    }
    pub fn trainable_count(&self) -> usize {
        self.params().iter().filter(|p| p.trainable).map(ParamSpec::len).sum()
    }
}

/// A whole model: the layers resolved for one input shape (h, w, c).
#[derive(Clone, Debug)]
pub struct Model {
    pub input: (usize, usize, usize),
    pub layers: Vec<Layer>,
}

/// The seed model: Keras's CIFAR-10 tutorial CNN, ending in one unit per class of the data
/// (archs/seed.txt).
pub const SEED_ARCH: &str = include_str!("../../archs/seed.txt");

/// The seed model for 10 classes (CIFAR-10, Fashion-MNIST): 122,570 parameters on 32x32x3.
pub fn seed_layers() -> Vec<LayerSpec> {
    with_classes(&parse_arch(SEED_ARCH).expect("the seed architecture parses"), 10).expect("the seed model ends in Dense(classes)")
}

/// The layers with the last layer's units set to `classes` when it says `Dense(classes)`; an
/// explicit count that differs from `classes` is an error saying what to write instead.
pub fn with_classes(specs: &[LayerSpec], classes: usize) -> Result<Vec<LayerSpec>> {
    resolve_classes(specs, classes, true)
}

/// As `with_classes`, but an explicit count is kept as written (for `summary`).
pub fn fill_classes(specs: &[LayerSpec], classes: usize) -> Result<Vec<LayerSpec>> {
    resolve_classes(specs, classes, false)
}

fn resolve_classes(specs: &[LayerSpec], classes: usize, check: bool) -> Result<Vec<LayerSpec>> {
    let mut out = specs.to_vec();
    let last = out.len();
    for (i, spec) in out.iter_mut().enumerate() {
        if let LayerSpec::Dense(dense) = spec {
            if dense.units == UNITS_FROM_CLASSES {
                if i + 1 != last {
                    bail!("layer {}: only the last layer can be 'Dense(classes)'", i + 1);
                }
                dense.units = classes;
            } else if check && i + 1 == last && dense.units != classes {
                let units = dense.units;
                let mut fixed = dense.clone();
                let written = LayerSpec::Dense(fixed.clone()).to_call();
                fixed.units = UNITS_FROM_CLASSES;
                let from_data = LayerSpec::Dense(fixed.clone()).to_call();
                fixed.units = classes;
                let explicit = LayerSpec::Dense(fixed).to_call();
                bail!(
                    "the model ends in {units} class scores (its last layer is '{written}') but the data has {classes} classes: \
                     write '{from_data}' as the last layer to take the count from the data (or '{explicit}')"
                );
            }
        }
    }
    Ok(out)
}

/// The most layers a model may have: Keras's largest applications have about 800, and each
/// layer costs every loader and network some memory whatever its size.
pub const MAX_LAYERS: usize = 10_000;

impl Model {
    /// Resolves every layer's shapes for an input of (h, w, c); a clear error when the
    /// architecture does not fit it.
    pub fn new(specs: &[LayerSpec], input: (usize, usize, usize)) -> Result<Model> {
        if input.0 == 0 || input.1 == 0 || input.2 == 0 {
            bail!("input shape {}x{}x{} has a zero dimension", input.0, input.1, input.2);
        }
        tensor_values(&[input.0, input.1, input.2], "the input")?;
        if specs.is_empty() {
            bail!("the architecture has no layers");
        }
        if specs.len() > MAX_LAYERS {
            bail!("the architecture has {} layers, over the limit of {MAX_LAYERS}", specs.len());
        }
        let mut counts = std::collections::HashMap::new();
        let mut shape = vec![input.0, input.1, input.2];
        let mut layers = Vec::new();
        for (i, spec) in specs.iter().enumerate() {
            let base = spec.base_name();
            let count = counts.entry(base).or_insert(0usize);
            let name = if *count == 0 { base.to_string() } else { format!("{base}_{count}") };
            *count += 1;
            let output = spec.output_shape(&shape, i + 1 == specs.len()).map_err(|e| anyhow!("layer {} ({name}): {e}", i + 1))?;
            let layer = Layer { name, spec: spec.clone(), input: std::mem::replace(&mut shape, output.clone()), output };
            for p in layer.params() {
                tensor_values(&p.dims, &format!("layer {} ({}): the {}", i + 1, layer.name, p.suffix))?;
            }
            layers.push(layer);
        }
        match layers.last().map(|l| &l.spec) {
            Some(LayerSpec::Dense(d)) if matches!(d.activation, Activation::Softmax | Activation::None) => {}
            _ => bail!("the last layer must be Dense with activation softmax (or none): its units are the class scores"),
        }
        Ok(Model { input, layers })
    }

    pub fn classes(&self) -> usize {
        self.layers.last().map_or(0, |l| l.output_len())
    }
    pub fn input_len(&self) -> usize {
        self.input.0 * self.input.1 * self.input.2
    }
    /// Every layer's tensors passed `tensor_values` in `new`, so with at most 2^31 values
    /// each, this sum cannot overflow for fewer than 2^31 tensors.
    pub fn param_count(&self) -> usize {
        self.layers.iter().map(|l| l.param_count()).sum()
    }
    /// Values the optimizer trains (Keras's "Trainable params").
    pub fn trainable_count(&self) -> usize {
        self.layers.iter().map(|l| l.trainable_count()).sum()
    }

    /// Host or device bytes a network of this model needs for batches of `batch` images:
    /// trainable tensors with their gradients and Adam moments, non-trainable tensors, the
    /// layers' scratch buffers, and activations with their gradients. None when that does not
    /// fit in a usize (a batch size or input far too large).
    pub fn memory_bytes(&self, batch: usize) -> Option<usize> {
        let per_image = self.layers.iter().try_fold(self.input_len(), |acc, l| acc.checked_add(l.output_len()))?;
        // Activation gradients share two buffers (Network::grads), each at most the largest output.
        let largest = self.layers.iter().map(|l| l.output_len()).max().unwrap_or(0);
        let activations = per_image.checked_add(largest.checked_mul(2)?)?.checked_mul(batch)?;
        let trainable = self.trainable_count();
        let params = trainable.checked_mul(4)?.checked_add(self.param_count() - trainable)?;
        let scratch = self.layers.iter().flat_map(|l| l.scratch()).try_fold(0usize, |acc, s| acc.checked_add(s.len(batch)?))?;
        activations.checked_add(params)?.checked_add(scratch)?.checked_mul(std::mem::size_of::<f32>())
    }
}

/// Parses "32x32x3" (h x w x c).
pub fn parse_input_shape(text: &str) -> Result<(usize, usize, usize)> {
    let parts: Vec<_> = text.split(['x', 'X', ',']).map(|p| p.trim().parse::<usize>()).collect();
    match parts[..] {
        [Ok(h), Ok(w), Ok(c)] if h > 0 && w > 0 && c > 0 => Ok((h, w, c)),
        _ => bail!("input shape '{text}' is not HxWxC with positive numbers, e.g. 32x32x3"),
    }
}
