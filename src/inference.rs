//! The network evaluate, predict, review and the library's Classifier run: a checkpoint's model
//! with every BatchNormalization that directly follows a Conv2D or Dense without activation
//! folded into that layer (src/batchnorm_fold.rs), and a ReLU layer that then directly follows
//! it fused into the layer's kernel as `activation="relu"`. The modern model's inference thus
//! runs one conv pass where it ran conv, BN and ReLU passes. Only inference: training needs the
//! batch statistics, so it never folds.
//!
//! Folding changes no name a tensor is looked up by: the folded layers keep theirs, and the
//! BatchNormalizations left (say one after a ReLU) are renamed from their old Keras names to the
//! folded model's.

use crate::backend::Backend;
use crate::batchnorm_fold::{fold_batchnorm, BatchNormWeights};
use crate::checkpoint::Checkpoint;
use crate::model::{Activation, LayerSpec, Model};
use crate::network::{HostTensor, Network};
use anyhow::{anyhow, Context, Result};

/// A network for inference from `ck`, BatchNormalization folded where it can be.
pub fn inference_network<B: Backend>(backend: B, ck: &Checkpoint, max_batch: usize) -> Result<Network<B>> {
    let model = ck.model().context("its architecture")?;
    // The tensors are checked against the unfolded model first, so a damaged checkpoint gets
    // the same errors here as anywhere else.
    let (folded, tensors) = fold_model(&model, &ck.tensors)?;
    let mut net = Network::new(backend, folded, max_batch, 0)?;
    net.load_state(&tensors, false).context("its weights do not match its architecture")?;
    net.label_smoothing = ck.meta.label_smoothing;
    Ok(net)
}

/// `model` with its foldable BatchNormalizations folded, and `tensors` (named for `model`)
/// rewritten for it. Every tensor `model` needs must be in `tensors`.
pub fn fold_model(model: &Model, tensors: &[HostTensor]) -> Result<(Model, Vec<HostTensor>)> {
    let find = |name: String| -> Result<&HostTensor> { tensors.iter().find(|t| t.name == name).ok_or_else(|| anyhow!("tensor '{name}' is missing")) };
    let layers = &model.layers;
    // Each layer of the folded model: the index of the unfolded layer whose tensors it takes
    // (None: a folded layer, its tensors already in `out`) and its spec.
    let mut kept: Vec<(Option<usize>, LayerSpec)> = Vec::new();
    let mut out: Vec<HostTensor> = Vec::new();
    let mut i = 0;
    while i < layers.len() {
        let layer = &layers[i];
        let foldable = match &layer.spec {
            LayerSpec::Conv2D(c) => c.activation == Activation::None,
            LayerSpec::Dense(d) => d.activation == Activation::None,
            _ => false,
        };
        let bn = match (foldable, layers.get(i + 1).map(|l| &l.spec)) {
            (true, Some(LayerSpec::BatchNormalization(bn))) => Some((bn, &layers[i + 1].name)),
            _ => None,
        };
        let Some((bn, bn_name)) = bn else {
            kept.push((Some(i), layer.spec.clone()));
            i += 1;
            continue;
        };
        let kernel = find(format!("{}.kernel", layer.name))?;
        let bias = find(format!("{}.bias", layer.name))?;
        let part = |suffix: &str| find(format!("{bn_name}.{suffix}"));
        let weights = BatchNormWeights {
            gamma: &part("gamma")?.data,
            beta: &part("beta")?.data,
            moving_mean: &part("moving_mean")?.data,
            moving_variance: &part("moving_variance")?.data,
            epsilon: bn.epsilon,
        };
        let (k, b) = fold_batchnorm(&kernel.data, Some(&bias.data), &weights).with_context(|| format!("folding {bn_name} into {}", layer.name))?;
        out.push(HostTensor { data: k, ..kernel.clone() });
        out.push(HostTensor { data: b, ..bias.clone() });
        // A ReLU layer right after the BN becomes the layer's fused ReLU.
        let relu_next = matches!(layers.get(i + 2).map(|l| &l.spec), Some(LayerSpec::ReLU(_)));
        let mut spec = layer.spec.clone();
        if relu_next {
            match &mut spec {
                LayerSpec::Conv2D(c) => c.activation = Activation::Relu,
                LayerSpec::Dense(d) => d.activation = Activation::Relu,
                _ => unreachable!("only Conv2D and Dense fold"),
            }
        }
        kept.push((None, spec));
        i += if relu_next { 3 } else { 2 };
    }
    let specs: Vec<LayerSpec> = kept.iter().map(|(_, s)| s.clone()).collect();
    let folded = Model::new(&specs, model.input).context("the folded model")?;
    for ((old, _), new) in kept.iter().zip(&folded.layers) {
        let Some(old) = old.map(|i| &layers[i]) else { continue };
        // A missing tensor is left to `load_state`, which names it after the model's memory
        // check has refused an absurd one.
        for spec in old.params() {
            if let Ok(t) = find(format!("{}.{}", old.name, spec.suffix)) {
                out.push(HostTensor { name: format!("{}.{}", new.name, spec.suffix), ..t.clone() });
            }
        }
    }
    Ok((folded, out))
}
