//! `gpu-cnn export --format onnx`: a checkpoint as an ONNX model (opset 17) that any ONNX runtime
//! runs with the probabilities gpu-cnn computes.
//!
//! The graph's input is NHWC `[N, H, W, C]` like our tensors: float32 scaled to [0, 1] as training
//! saw it, or (with `OnnxInput::Uint8`) raw u8 pixels with the cast and /255 inside the graph. ONNX
//! convolutions are NCHW, so the graph transposes to NCHW before the first Conv/MaxPool and back
//! to NHWC before Flatten, so Dense kernels keep their Keras (NHWC-flatten) row order. The output
//! `probabilities` is `[N, classes]`: the softmax that predict applies to the last layer.
//! Each layer is one arm of `emit_layer`: a new layer kind adds one arm.

use super::onnx_proto::*;
use crate::backend::{ActivationFn, ConvShape, DepthwiseShape, PoolShape};
use crate::checkpoint::Checkpoint;
use crate::layers::activation::function_name;
use crate::model::{Activation, Layer, LayerSpec};
use crate::network::HostTensor;
use anyhow::{anyhow, bail, Context, Result};
use prost::Message;

/// The opset the graph is written for (operators as defined there).
pub const OPSET: i64 = 17;
/// IR version 8 is the one that goes with opset 17.
const IR_VERSION: i64 = 8;
/// The graph's input and output names.
pub const INPUT_NAME: &str = "input";
pub const OUTPUT_NAME: &str = "probabilities";

/// What the exported graph takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnnxInput {
    /// float32 in [0, 1] (the pixel / 255), NHWC.
    Float,
    /// uint8 pixels 0..=255, NHWC; the graph casts and divides by 255.
    Uint8,
}

/// The ONNX model's bytes for a checkpoint's weights and architecture.
pub fn export_onnx(ck: &Checkpoint, input: OnnxInput) -> Result<Vec<u8>> {
    let model = ck.model().context("the checkpoint's architecture")?;
    let (h, w, c) = model.input;
    let mut g = Graph::default();
    let (elem_type, mut x) = match input {
        OnnxInput::Float => (FLOAT, INPUT_NAME.to_string()),
        OnnxInput::Uint8 => {
            let cast = g.node("Cast", "input_cast", &[INPUT_NAME], vec![attr_int("to", FLOAT as i64)]);
            let scale = g.constant("input_scale", vec![], &[255.0]);
            (UINT8, g.node("Div", "input_scaled", &[&cast, &scale], vec![]))
        }
    };
    let mut nchw = false;
    for layer in &model.layers {
        x = emit_layer(&mut g, layer, &x, &mut nchw, &ck.tensors).with_context(|| format!("exporting layer {}", layer.name))?;
    }
    // predict's softmax over the last layer's scores (Softmax at opset 13+ works along one axis).
    g.node("Softmax", OUTPUT_NAME, &[&x], vec![attr_int("axis", -1)]);
    let batch = || Dimension { value: Some(DimValue::DimParam("N".into())) };
    let fixed = |n: usize| Dimension { value: Some(DimValue::DimValue(n as i64)) };
    let graph = GraphProto {
        node: g.nodes,
        name: Some("gpu_cnn".into()),
        initializer: g.initializers,
        input: vec![value_info(INPUT_NAME, elem_type, vec![batch(), fixed(h), fixed(w), fixed(c)])],
        output: vec![value_info(OUTPUT_NAME, FLOAT, vec![batch(), fixed(model.classes())])],
    };
    let meta = &ck.meta;
    let props = [
        ("class_names", serde_json::to_string(&meta.class_names)?),
        ("preprocessing", crate::classifier::preprocessing_json(meta, input == OnnxInput::Uint8).to_string()),
        ("architecture", meta.arch.clone()),
        ("dataset", meta.dataset.clone()),
        ("epochs", meta.epoch.to_string()),
    ];
    let doc = match input {
        OnnxInput::Float => {
            format!("gpu-cnn classifier. input: float32 [N, {h}, {w}, {c}] (NHWC), pixel values / 255; output: probabilities [N, {}]", model.classes())
        }
        OnnxInput::Uint8 => format!("gpu-cnn classifier. input: uint8 [N, {h}, {w}, {c}] (NHWC) pixels; output: probabilities [N, {}]", model.classes()),
    };
    let proto = ModelProto {
        ir_version: Some(IR_VERSION),
        opset_import: vec![OperatorSetIdProto { domain: Some(String::new()), version: Some(OPSET) }],
        producer_name: Some("gpu-cnn".into()),
        producer_version: Some(env!("CARGO_PKG_VERSION").into()),
        doc_string: Some(doc),
        graph: Some(graph),
        metadata_props: props.into_iter().map(|(k, v)| StringStringEntryProto { key: Some(k.into()), value: Some(v) }).collect(),
    };
    Ok(proto.encode_to_vec())
}

/// Appends the nodes of one layer reading `x`; returns the name of its output.
fn emit_layer(g: &mut Graph, layer: &Layer, x: &str, nchw: &mut bool, tensors: &[HostTensor]) -> Result<String> {
    let name = layer.name.as_str();
    Ok(match &layer.spec {
        LayerSpec::Conv2D(conv) => {
            let s = &conv.shape(&layer.input);
            let x = to_layout(g, x, nchw, true);
            let hwio = weight(tensors, &format!("{name}.kernel"), &[s.k_h, s.k_w, s.in_c, s.out_c])?;
            let kernel = g.constant(&format!("{name}.kernel"), vec![s.out_c, s.in_c, s.k_h, s.k_w], &hwio_to_oihw(hwio, s.k_h, s.k_w, s.in_c, s.out_c));
            let bias = bias_constant(g, tensors, name, conv.conv.use_bias, s.out_c)?;
            let y = conv_node(g, name, &x, &kernel, bias.as_deref(), s, 1);
            emit_output_activation(g, name, &y, conv.conv.activation)
        }
        LayerSpec::DepthwiseConv2D(layer_args) => {
            let s = depthwise_as_conv(&layer_args.shape(&layer.input));
            let x = to_layout(g, x, nchw, true);
            let kernel = depthwise_kernel(g, tensors, name, &s)?;
            let bias = bias_constant(g, tensors, name, layer_args.conv.use_bias, s.out_c)?;
            let y = conv_node(g, name, &x, &kernel, bias.as_deref(), &s, s.in_c);
            emit_output_activation(g, name, &y, layer_args.conv.activation)
        }
        LayerSpec::SeparableConv2D(sep) => {
            let (d, p) = sep.shapes(&layer.input);
            let d = depthwise_as_conv(&d);
            let x = to_layout(g, x, nchw, true);
            let kernel = depthwise_kernel(g, tensors, name, &d)?;
            let t = conv_node(g, &format!("{name}_depthwise"), &x, &kernel, None, &d, d.in_c);
            let pointwise_name = format!("{name}.pointwise_kernel");
            let pointwise = weight(tensors, &pointwise_name, &[1, 1, p.in_c, p.out_c])?;
            let pointwise = g.constant(&pointwise_name, vec![p.out_c, p.in_c, 1, 1], &hwio_to_oihw(pointwise, 1, 1, p.in_c, p.out_c));
            let bias = bias_constant(g, tensors, name, sep.conv.use_bias, p.out_c)?;
            let y = conv_node(g, name, &t, &pointwise, bias.as_deref(), &p, 1);
            emit_output_activation(g, name, &y, sep.conv.activation)
        }
        LayerSpec::MaxPooling2D(pool) => {
            let s = &pool.shape(&layer.input);
            let x = to_layout(g, x, nchw, true);
            g.node("MaxPool", name, &[&x], pool_attrs(s))
        }
        LayerSpec::AveragePooling2D(pool) => {
            let s = &pool.shape(&layer.input);
            let x = to_layout(g, x, nchw, true);
            // Keras does not count padding in the mean.
            let mut attrs = pool_attrs(s);
            attrs.push(attr_int("count_include_pad", 0));
            g.node("AveragePool", name, &[&x], attrs)
        }
        LayerSpec::GlobalMaxPooling2D(_) => {
            let x = to_layout(g, x, nchw, true);
            let pooled = g.node("GlobalMaxPool", &format!("{name}_nc11"), &[&x], vec![]);
            *nchw = false;
            g.node("Flatten", name, &[&pooled], vec![attr_int("axis", 1)])
        }
        LayerSpec::Activation(a) => emit_activation(g, name, x, a.function),
        LayerSpec::LeakyReLU(l) => emit_activation(g, name, x, ActivationFn::LeakyRelu { negative_slope: l.negative_slope }),
        LayerSpec::Flatten(_) => {
            let x = to_layout(g, x, nchw, false);
            g.node("Flatten", name, &[&x], vec![attr_int("axis", 1)])
        }
        LayerSpec::Dense(dense) => {
            let s = &dense.shape(&layer.input);
            let kernel = g.constant(&format!("{name}.kernel"), vec![s.inputs, s.units], weight(tensors, &format!("{name}.kernel"), &[s.inputs, s.units])?);
            let bias = g.constant(&format!("{name}.bias"), vec![s.units], weight(tensors, &format!("{name}.bias"), &[s.units])?);
            let y = g.node("Gemm", name, &[x, &kernel, &bias], vec![]);
            // Softmax (the last layer) is the graph's final node.
            emit_output_activation(g, name, &y, dense.activation)
        }
        LayerSpec::BatchNormalization(bn) => {
            // ONNX normalises over axis 1: NCHW for images, (N, C) as is for flat inputs.
            let x = if layer.input.len() == 3 { to_layout(g, x, nchw, true) } else { x.to_string() };
            let c = *layer.input.last().unwrap_or(&0);
            let mut inputs = vec![x];
            for suffix in ["gamma", "beta", "moving_mean", "moving_variance"] {
                let t = format!("{name}.{suffix}");
                inputs.push(g.constant(&t, vec![c], weight(tensors, &t, &[c])?));
            }
            let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
            g.node("BatchNormalization", name, &inputs, vec![attr_float("epsilon", bn.epsilon)])
        }
        // Inference: dropout is the identity.
        LayerSpec::Dropout(_) => x.to_string(),
        #[cfg(test)]
        LayerSpec::Probe(_) => bail!("the test-only probe layer has no ONNX form"),
        LayerSpec::ReLU(_) => g.node("Relu", name, &[x], vec![]),
        LayerSpec::GlobalAveragePooling2D(_) => {
            let x = to_layout(g, x, nchw, true);
            let pooled = g.node("GlobalAveragePool", &format!("{name}_nc11"), &[&x], vec![]);
            *nchw = false;
            g.node("Flatten", name, &[&pooled], vec![attr_int("axis", 1)])
        }
    })
}

/// A Conv node (NCHW input) with the window of `s` (strides, dilations, pads: ONNX's are [top,
/// left, bottom, right], the end pads whatever the output needs) in `group` groups; no B input
/// without a bias.
fn conv_node(g: &mut Graph, name: &str, x: &str, kernel: &str, bias: Option<&str>, s: &ConvShape, group: usize) -> String {
    let extent = |k: usize, dilation: usize| (k - 1) * dilation + 1;
    let pad_end = |out: usize, stride: usize, k: usize, input: usize, begin: usize| ((out - 1) * stride + k).saturating_sub(input + begin);
    let pads = [
        s.pad_top,
        s.pad_left,
        pad_end(s.out_h, s.stride_h, extent(s.k_h, s.dilation_h), s.in_h, s.pad_top),
        pad_end(s.out_w, s.stride_w, extent(s.k_w, s.dilation_w), s.in_w, s.pad_left),
    ];
    let mut attrs = vec![
        attr_ints("kernel_shape", &[s.k_h, s.k_w]),
        attr_ints("strides", &[s.stride_h, s.stride_w]),
        attr_ints("pads", &pads),
        attr_ints("dilations", &[s.dilation_h, s.dilation_w]),
    ];
    if group != 1 {
        attrs.push(attr_int("group", group as i64));
    }
    let mut inputs = vec![x, kernel];
    inputs.extend(bias);
    g.node("Conv", name, &inputs, attrs)
}

/// A depthwise conv's window as a ConvShape of in_c -> in_c * multiplier channels (a Conv with
/// group = in_c).
fn depthwise_as_conv(d: &DepthwiseShape) -> ConvShape {
    ConvShape {
        in_h: d.in_h,
        in_w: d.in_w,
        in_c: d.channels,
        out_h: d.out_h,
        out_w: d.out_w,
        out_c: d.out_c(),
        k_h: d.k_h,
        k_w: d.k_w,
        stride_h: d.stride_h,
        stride_w: d.stride_w,
        pad_top: d.pad_top,
        pad_left: d.pad_left,
        dilation_h: d.dilation_h,
        dilation_w: d.dilation_w,
    }
}

/// The layer's `bias` tensor as an initializer, None when the layer has none (`use_bias=False`).
fn bias_constant(g: &mut Graph, tensors: &[HostTensor], layer: &str, use_bias: bool, len: usize) -> Result<Option<String>> {
    if !use_bias {
        return Ok(None);
    }
    let t = format!("{layer}.bias");
    Ok(Some(g.constant(&t, vec![len], weight(tensors, &t, &[len])?)))
}

/// A `depthwise_kernel` (kh, kw, in_c, multiplier) as the kernel of a Conv with group = in_c:
/// ONNX's (in_c * multiplier, 1, kh, kw), whose output channel c * multiplier + m is group c's.
/// The Keras kernel is HWIO with in = 1 and out = in_c * multiplier in that order.
fn depthwise_kernel(g: &mut Graph, tensors: &[HostTensor], layer: &str, s: &ConvShape) -> Result<String> {
    let t = format!("{layer}.depthwise_kernel");
    let hwio = weight(tensors, &t, &[s.k_h, s.k_w, s.in_c, s.out_c / s.in_c])?;
    Ok(g.constant(&t, vec![s.out_c, 1, s.k_h, s.k_w], &hwio_to_oihw(hwio, s.k_h, s.k_w, 1, s.out_c)))
}

/// The activation after a layer's linear output `y` (Relu, or an element-wise function's
/// nodes); none for softmax, which is the graph's final node.
fn emit_output_activation(g: &mut Graph, name: &str, y: &str, activation: Activation) -> String {
    match activation {
        Activation::Relu => g.node("Relu", &format!("{name}_relu"), &[y], vec![]),
        Activation::Function(f) => emit_activation(g, &format!("{name}_{}", function_name(f)), y, f),
        Activation::None | Activation::Softmax => y.to_string(),
    }
}

/// A pool's kernel, strides and pads (ONNX: [top, left, bottom, right]; the end pads are what
/// the output size needs beyond the input).
fn pool_attrs(s: &PoolShape) -> Vec<AttributeProto> {
    let end = |out: usize, stride: usize, size: usize, input: usize, begin: usize| ((out - 1) * stride + size).saturating_sub(input + begin);
    let pads = [s.pad_top, s.pad_left, end(s.out_h, s.stride_h, s.size_h, s.in_h, s.pad_top), end(s.out_w, s.stride_w, s.size_w, s.in_w, s.pad_left)];
    vec![attr_ints("kernel_shape", &[s.size_h, s.size_w]), attr_ints("strides", &[s.stride_h, s.stride_w]), attr_ints("pads", &pads)]
}

/// An element-wise activation in opset-17 operators (Gelu as 0.5 x (1 + erf(x / sqrt 2)), swish
/// as x * sigmoid(x)).
fn emit_activation(g: &mut Graph, name: &str, x: &str, f: ActivationFn) -> String {
    match f {
        ActivationFn::Relu => g.node("Relu", name, &[x], vec![]),
        ActivationFn::LeakyRelu { negative_slope } => g.node("LeakyRelu", name, &[x], vec![attr_float("alpha", negative_slope)]),
        ActivationFn::Elu { alpha } => g.node("Elu", name, &[x], vec![attr_float("alpha", alpha)]),
        ActivationFn::Sigmoid => g.node("Sigmoid", name, &[x], vec![]),
        ActivationFn::Tanh => g.node("Tanh", name, &[x], vec![]),
        ActivationFn::Swish => {
            let s = g.node("Sigmoid", &format!("{name}_sigmoid"), &[x], vec![]);
            g.node("Mul", name, &[x, &s], vec![])
        }
        ActivationFn::Gelu => {
            let root2 = g.constant(&format!("{name}_sqrt2"), vec![1], &[std::f32::consts::SQRT_2]);
            let one = g.constant(&format!("{name}_one"), vec![1], &[1.0]);
            let half = g.constant(&format!("{name}_half"), vec![1], &[0.5]);
            let scaled = g.node("Div", &format!("{name}_scaled"), &[x, &root2], vec![]);
            let erf = g.node("Erf", &format!("{name}_erf"), &[&scaled], vec![]);
            let plus = g.node("Add", &format!("{name}_plus1"), &[&erf, &one], vec![]);
            let times = g.node("Mul", &format!("{name}_times_x"), &[x, &plus], vec![]);
            g.node("Mul", name, &[&times, &half], vec![])
        }
    }
}

/// Transposes `x` to NCHW (`want_nchw`) or back to NHWC when it is not in that layout already.
fn to_layout(g: &mut Graph, x: &str, nchw: &mut bool, want_nchw: bool) -> String {
    if *nchw == want_nchw {
        return x.to_string();
    }
    *nchw = want_nchw;
    let perm: [usize; 4] = if want_nchw { [0, 3, 1, 2] } else { [0, 2, 3, 1] };
    let name = format!("{x}_{}", if want_nchw { "nchw" } else { "nhwc" });
    g.node("Transpose", &name, &[x], vec![attr_ints("perm", &perm)])
}

/// The checkpoint's tensor `name`, which must have shape `dims`.
fn weight<'a>(tensors: &'a [HostTensor], name: &str, dims: &[usize]) -> Result<&'a [f32]> {
    let t = tensors.iter().find(|t| t.name == name).ok_or_else(|| anyhow!("tensor '{name}' is missing from the checkpoint"))?;
    if t.dims != dims || t.data.len() != dims.iter().product::<usize>() {
        bail!("tensor '{name}' has shape {:?}, the architecture needs {dims:?}", t.dims);
    }
    Ok(&t.data)
}

/// Keras's conv kernel layout (kh, kw, in, out) to ONNX's (out, in, kh, kw).
fn hwio_to_oihw(hwio: &[f32], kh: usize, kw: usize, cin: usize, cout: usize) -> Vec<f32> {
    let mut oihw = vec![0.0; hwio.len()];
    for y in 0..kh {
        for x in 0..kw {
            for i in 0..cin {
                for o in 0..cout {
                    oihw[((o * cin + i) * kh + y) * kw + x] = hwio[((y * kw + x) * cin + i) * cout + o];
                }
            }
        }
    }
    oihw
}

/// Nodes and initializers in the order they are added (already topologically sorted).
#[derive(Default)]
struct Graph {
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
}

impl Graph {
    /// Adds a node whose output tensor is named after it; returns that name.
    fn node(&mut self, op: &str, output: &str, inputs: &[&str], attribute: Vec<AttributeProto>) -> String {
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.to_string()],
            name: Some(output.to_string()),
            op_type: Some(op.to_string()),
            attribute,
        });
        output.to_string()
    }

    /// A float32 initializer; returns its name.
    fn constant(&mut self, name: &str, dims: Vec<usize>, data: &[f32]) -> String {
        self.initializers.push(TensorProto {
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: Some(FLOAT),
            name: Some(name.to_string()),
            raw_data: Some(data.iter().flat_map(|v| v.to_le_bytes()).collect()),
        });
        name.to_string()
    }
}

fn attr_float(name: &str, f: f32) -> AttributeProto {
    AttributeProto { name: Some(name.into()), f: Some(f), r#type: Some(ATTR_FLOAT), ..Default::default() }
}

fn attr_int(name: &str, i: i64) -> AttributeProto {
    AttributeProto { name: Some(name.into()), i: Some(i), r#type: Some(ATTR_INT), ..Default::default() }
}

fn attr_ints(name: &str, values: &[usize]) -> AttributeProto {
    AttributeProto { name: Some(name.into()), ints: values.iter().map(|&v| v as i64).collect(), r#type: Some(ATTR_INTS), ..Default::default() }
}

fn value_info(name: &str, elem_type: i32, dim: Vec<Dimension>) -> ValueInfoProto {
    let tensor = TensorTypeProto { elem_type: Some(elem_type), shape: Some(TensorShapeProto { dim }) };
    ValueInfoProto { name: Some(name.into()), r#type: Some(TypeProto { value: Some(TypeValue::TensorType(tensor)) }) }
}

/// `gpu-cnn export --format onnx`: reads a checkpoint and writes the ONNX model (atomically).
/// Returns a one-line description of what was written.
/// An ONNX model written over a checkpoint destroys it (`--out` given the checkpoint's own
/// path, or best.safetensors beside it): refused before anything is read or written.
fn refuse_checkpoint_as_output(checkpoint: &std::path::Path, out: &std::path::Path) -> Result<()> {
    if out.extension().is_some_and(|e| e.eq_ignore_ascii_case("safetensors")) {
        anyhow::bail!("{}: is a checkpoint's name; write the ONNX model to a .onnx file", out.display());
    }
    if let (Ok(a), Ok(b)) = (std::fs::canonicalize(checkpoint), std::fs::canonicalize(out)) {
        if a == b {
            anyhow::bail!("{}: is the checkpoint being exported; write the ONNX model to another file", out.display());
        }
    }
    Ok(())
}

pub fn export_file(checkpoint: &std::path::Path, out: &std::path::Path, input: OnnxInput) -> Result<String> {
    refuse_checkpoint_as_output(checkpoint, out)?;
    let ck = crate::checkpoint::load(checkpoint)?;
    let bytes = export_onnx(&ck, input).with_context(|| checkpoint.display().to_string())?;
    crate::atomic_file::write_atomically(out, &bytes)?;
    let (h, w, c) = ck.meta.input;
    let dtype = if input == OnnxInput::Uint8 { "uint8 pixels" } else { "float32 pixels / 255" };
    Ok(format!(
        "Wrote {} ({} bytes, opset {OPSET}): input '{INPUT_NAME}' [N, {h}, {w}, {c}] {dtype}, NHWC; output '{OUTPUT_NAME}' [N, {}]",
        out.display(),
        bytes.len(),
        ck.model()?.classes()
    ))
}
