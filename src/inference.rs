//! The network evaluate, predict, review and the library's Classifier run: a checkpoint's model
//! with every BatchNormalization that directly follows a Conv2D, DepthwiseConv2D,
//! SeparableConv2D or Dense without activation folded into that layer (src/batchnorm_fold.rs), and a ReLU layer that then directly follows
//! it fused into the layer's kernel as `activation="relu"`. The modern model's inference thus
//! runs one conv pass where it ran conv, BN and ReLU passes. Only inference: training needs the
//! batch statistics, so it never folds.
//!
//! Folding changes no name a tensor is looked up by: the folded layers keep theirs, and the
//! BatchNormalizations left (say one after a ReLU) are renamed from their old Keras names to the
//! folded model's.

use crate::backend::{Backend, Passes};
use crate::batchnorm_fold::{fold_batchnorm, BatchNormWeights};
use crate::checkpoint::Checkpoint;
use crate::layers::BatchNormalization;
use crate::model::{Activation, Layer, LayerSpec, Model};
use crate::network::{absorbable_maxpool, layer_passes, HostTensor, Metrics, Network};
use anyhow::{anyhow, Context, Result};

/// A network for inference from `ck`, BatchNormalization folded where it can be.
pub fn inference_network<B: Backend>(backend: B, ck: &Checkpoint, max_batch: usize) -> Result<Network<B>> {
    let model = ck.model().context("its architecture")?;
    // `checkpoint::load` has checked every tensor's shape against the unfolded model; a missing
    // one is named by the fold that needs it or by `load_state`.
    let (folded, tensors) = fold_model(&model, &ck.tensors)?;
    let mut net = Network::for_inference(backend, folded, max_batch)?;
    net.load_state(&tensors, false).context("its weights do not match its architecture")?;
    net.label_smoothing = ck.meta.label_smoothing;
    Ok(net)
}

/// Loss and accuracy of the training network `net` on the first `count` images, as its
/// inference network computes them (the validation pass of every epoch). With nothing to fold
/// or fuse it is `net`'s own evaluate (also where the inference network does not fit); else the
/// inference network, made for the pass with `net`'s batch size and label smoothing: one pass
/// per conv instead of conv, BatchNormalization and ReLU (and the max-pool after it, on the
/// CPU), and the results `gpu-cnn evaluate` gets from the saved checkpoint.
pub fn evaluate_folded<B: Backend>(net: &mut Network<B>, images: &B::Images, count: usize) -> Result<Metrics> {
    // Checked on the model first: a model the inference network would run as the training
    // network does (nothing to fold or fuse; the seed model on a GPU) downloads no weights.
    if !has_fold(&net.model) && !has_pool_fusion(&net.backend, &net.model) {
        return net.evaluate(images, count);
    }
    let (folded, tensors) = fold_model(&net.model, &net.weights()?)?;
    // A device with room for the training network but not for both runs the pass unfolded,
    // rather than stop the run.
    let Ok(mut inference) = Network::for_inference(&net.backend, folded, net.max_batch) else {
        return net.evaluate(images, count);
    };
    inference.load_state(&tensors, false).context("the folded weights")?;
    inference.label_smoothing = net.label_smoothing;
    inference.evaluate(images, count)
}

/// The suffix of the kernel whose output channels a following BatchNormalization scales, for a
/// layer that can take one folded: a Conv2D, DepthwiseConv2D (its (kh, kw, in, multiplier)
/// kernel's output channel is in * multiplier + m, the last two axes flattened), SeparableConv2D
/// (its pointwise kernel) or Dense, without an activation.
fn folding_kernel(spec: &LayerSpec) -> Option<&'static str> {
    match spec {
        LayerSpec::Conv2D(c) if c.conv.activation == Activation::None => Some("kernel"),
        LayerSpec::DepthwiseConv2D(d) if d.conv.activation == Activation::None => Some("depthwise_kernel"),
        LayerSpec::SeparableConv2D(s) if s.conv.activation == Activation::None => Some("pointwise_kernel"),
        LayerSpec::Dense(d) if d.activation == Activation::None => Some("kernel"),
        _ => None,
    }
}

/// Whether a layer of `model` runs the MaxPooling2D after it (`absorbable_maxpool`) inside
/// itself on `backend` in an inference network only (on the CPU, a conv whose fused backward
/// would need its input's gradient: `Backend::fuses_conv_maxpool`).
fn has_pool_fusion<B: Backend>(backend: &B, model: &Model) -> bool {
    model.layers.windows(2).enumerate().any(|(i, w)| {
        let layer = &w[0];
        absorbable_maxpool(&w[1]).is_some()
            && layer.spec.absorbs_maxpool(backend, &layer.input, Passes::Inference)
            && !layer.spec.absorbs_maxpool(backend, &layer.input, layer_passes(model, i, true))
    })
}

/// Whether `fold_model` folds anything in `model` (a `fold_pair` anywhere).
fn has_fold(model: &Model) -> bool {
    model.layers.windows(2).any(|w| fold_pair(&w[0].spec, Some(&w[1])).is_some())
}

/// Where `next` is a BatchNormalization that folds into the layer `spec` (one with a
/// `folding_kernel`): that kernel's suffix, the BatchNormalization and its name.
fn fold_pair<'a>(spec: &LayerSpec, next: Option<&'a Layer>) -> Option<(&'static str, &'a BatchNormalization, &'a str)> {
    match (folding_kernel(spec), next.map(|l| (&l.spec, l.name.as_str()))) {
        (Some(kernel_suffix), Some((LayerSpec::BatchNormalization(bn), name))) => Some((kernel_suffix, bn, name)),
        _ => None,
    }
}

/// The layer after folding: it has a bias (use_bias=False layers gain one), and a fused ReLU
/// when a ReLU layer followed the BN.
fn folded_spec(spec: &LayerSpec, relu: bool) -> LayerSpec {
    let mut spec = spec.clone();
    let activation = if relu { Activation::Relu } else { Activation::None };
    match &mut spec {
        LayerSpec::Conv2D(c) => (c.conv.use_bias, c.conv.activation) = (true, activation),
        LayerSpec::DepthwiseConv2D(d) => (d.conv.use_bias, d.conv.activation) = (true, activation),
        LayerSpec::SeparableConv2D(s) => (s.conv.use_bias, s.conv.activation) = (true, activation),
        LayerSpec::Dense(d) => d.activation = activation,
        _ => unreachable!("folding_kernel admits only these"),
    }
    spec
}

/// `model` with its foldable BatchNormalizations folded, and `tensors` (named for `model`)
/// rewritten for it. A tensor missing for an unfolded layer is left for `load_state` to name
/// (after the model's memory check has refused an absurd one); one a fold needs is an error.
pub fn fold_model(model: &Model, tensors: &[HostTensor]) -> Result<(Model, Vec<HostTensor>)> {
    let find = |name: String| -> Result<&HostTensor> { tensors.iter().find(|t| t.name == name).ok_or_else(|| anyhow!("tensor '{name}' is missing")) };
    let layers = &model.layers;
    // Each layer of the folded model: its spec and its tensors by suffix.
    let mut kept: Vec<(LayerSpec, Vec<(String, HostTensor)>)> = Vec::new();
    let mut i = 0;
    while i < layers.len() {
        let layer = &layers[i];
        let own = |suffix: &str| find(format!("{}.{suffix}", layer.name));
        let Some((kernel_suffix, bn, bn_name)) = fold_pair(&layer.spec, layers.get(i + 1)) else {
            let found = layer.params().into_iter().filter_map(|p| own(p.suffix).ok().map(|t| (p.suffix.to_string(), t.clone()))).collect();
            kept.push((layer.spec.clone(), found));
            i += 1;
            continue;
        };
        let part = |suffix: &str| find(format!("{bn_name}.{suffix}"));
        let weights = BatchNormWeights {
            gamma: &part("gamma")?.data,
            beta: &part("beta")?.data,
            moving_mean: &part("moving_mean")?.data,
            moving_variance: &part("moving_variance")?.data,
            epsilon: bn.epsilon,
        };
        let kernel = own(kernel_suffix)?;
        let has_bias = layer.params().iter().any(|p| p.suffix == "bias");
        let bias = if has_bias { Some(own("bias")?) } else { None };
        let (k, b) =
            fold_batchnorm(&kernel.data, bias.map(|b| b.data.as_slice()), &weights).with_context(|| format!("folding {bn_name} into {}", layer.name))?;
        let mut found = Vec::new();
        for p in layer.params() {
            match p.suffix {
                "bias" => {}
                s if s == kernel_suffix => found.push((s.to_string(), HostTensor { data: k.clone(), ..kernel.clone() })),
                s => found.push((s.to_string(), own(s)?.clone())),
            }
        }
        found.push(("bias".to_string(), HostTensor { name: String::new(), dims: vec![b.len()], data: b }));
        let relu = matches!(layers.get(i + 2).map(|l| &l.spec), Some(LayerSpec::ReLU(_)));
        kept.push((folded_spec(&layer.spec, relu), found));
        i += if relu { 3 } else { 2 };
    }
    let specs: Vec<LayerSpec> = kept.iter().map(|(s, _)| s.clone()).collect();
    let folded = Model::new(&specs, model.input).context("the folded model")?;
    let mut out = Vec::new();
    for ((_, found), layer) in kept.into_iter().zip(&folded.layers) {
        out.extend(found.into_iter().map(|(suffix, t)| HostTensor { name: format!("{}.{suffix}", layer.name), ..t }));
    }
    Ok((folded, out))
}
