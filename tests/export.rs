//! ONNX export checked by an independent runtime: tract-onnx runs the exported graph on 200
//! images and must give the CPU backend's probabilities.
//!
//! Tolerance: max |p_tract - p_ours| < 1e-5 (the bar). Both compute in f32; they differ
//! only in summation order (our GEMM tiles vs tract's kernels), which moves a probability by a
//! few 1e-7 on these small models. Argmax must be equal on every image.

mod common;

use gpu_cnn::backend::cpu::CpuBackend;
use gpu_cnn::backend::Backend;
use gpu_cnn::checkpoint::{Checkpoint, CheckpointMeta};
use gpu_cnn::data::synthetic::{generate, SyntheticSpec};
use gpu_cnn::data::ImageSet;
use gpu_cnn::export::onnx::{export_onnx, OnnxInput};
use gpu_cnn::export::onnx_proto::ModelProto;
use gpu_cnn::model::{format_arch, parse_arch, Model, SEED_ARCH};
use gpu_cnn::network::Network;
use prost::Message;
use tract_onnx::prelude::*;

const IMAGES: usize = 200;
const TOLERANCE: f32 = 1e-5;

/// A checkpoint of `arch` trained for a few steps on synthetic data (so biases are not zero
/// and the probabilities are not uniform), the 200 test images and our CPU probabilities.
fn trained(arch: &str, spec: SyntheticSpec) -> (Checkpoint, ImageSet, Vec<f32>) {
    let ds = generate(&spec, 3);
    let layers = gpu_cnn::model::with_classes(&parse_arch(arch).unwrap(), ds.class_names.len()).unwrap();
    let model = Model::new(&layers, ds.input_shape()).unwrap();
    let mut net = Network::new(CpuBackend::new(), model, 32, 11).unwrap();
    net.learning_rate = 3e-3;
    let train = net.backend.upload_images(&ds.train.images, &ds.train.labels, ds.train.image_len()).unwrap();
    for step in 0..8u32 {
        let batch: Vec<u32> = (step * 32..step * 32 + 32).collect();
        net.train_step(&train, &batch).unwrap();
    }
    let mut test = ds.test.clone();
    test.truncate(IMAGES);
    assert_eq!(test.len(), IMAGES);
    let data = net.backend.upload_images(&test.images, &test.labels, test.image_len()).unwrap();
    let probs = gpu_cnn::predict::probabilities(&mut net, &data, IMAGES).unwrap();
    let meta = CheckpointMeta {
        dataset: ds.name.clone(),
        step: net.step,
        seed: 11,
        learning_rate: 3e-3,
        ..common::checkpoint_meta(&format_arch(&layers), ds.input_shape(), &ds.class_names)
    };
    (Checkpoint { meta, tensors: net.weights().unwrap() }, test, probs)
}

/// Runs the ONNX bytes with tract on an NHWC batch (shape given), returns the flat output.
fn run_tract(onnx: &[u8], input: Tensor) -> Vec<f32> {
    let model = tract_onnx::onnx()
        .model_for_read(&mut &onnx[..])
        .expect("tract reads the model")
        .into_optimized()
        .expect("tract optimises it")
        .into_runnable()
        .expect("runnable");
    let out = model.run(tvec!(input.into())).expect("tract runs it");
    out[0].to_plain_array_view::<f32>().unwrap().iter().copied().collect()
}

fn argmax(row: &[f32]) -> usize {
    (0..row.len()).max_by(|&a, &b| row[a].total_cmp(&row[b]).then(b.cmp(&a))).unwrap()
}

/// Checks tract's probabilities against ours: shape, tolerance, argmax on every image.
fn assert_matches(ours: &[f32], theirs: &[f32], classes: usize) {
    assert_eq!(ours.len(), theirs.len(), "output size");
    let max_diff = ours.iter().zip(theirs).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    eprintln!("max |difference| over {} images: {max_diff:e}", ours.len() / classes);
    assert!(max_diff < TOLERANCE, "max probability difference {max_diff} >= {TOLERANCE}");
    for (i, (a, b)) in ours.chunks(classes).zip(theirs.chunks(classes)).enumerate() {
        assert_eq!(argmax(a), argmax(b), "image {i}: argmax differs ({a:?} vs {b:?})");
        assert!((b.iter().sum::<f32>() - 1.0).abs() < 1e-5, "image {i}: tract's row sums to {}", b.iter().sum::<f32>());
    }
}

fn float_input(images: &ImageSet, n: usize) -> Tensor {
    let data: Vec<f32> = images.images[..n * images.image_len()].iter().map(|&v| v as f32 / 255.0).collect();
    Tensor::from_shape(&[n, images.height, images.width, images.channels], &data).unwrap()
}

#[test]
fn seed_model_matches_tract_on_200_images_with_a_dynamic_batch() {
    let (ck, test, ours) = trained(SEED_ARCH, SyntheticSpec { train: 256, test: IMAGES, ..Default::default() });
    let onnx = export_onnx(&ck, OnnxInput::Float).unwrap();
    let classes = ck.meta.class_names.len();
    assert_matches(&ours, &run_tract(&onnx, float_input(&test, IMAGES)), classes);
    // The batch dimension is symbolic: the same file runs 7 images.
    assert_matches(&ours[..7 * classes], &run_tract(&onnx, float_input(&test, 7)), classes);
}

#[test]
fn strides_same_padding_linear_layers_and_uint8_input_match_tract() {
    let arch = "conv2d 8 3 relu stride=2 padding=same\nconv2d 6 4x3 none padding=same\nconv2d 5 3 relu stride=2\nmaxpool 2 stride=1\nflatten\ndense 16 none\ndense 12 relu\ndense 10 none\n";
    let spec = SyntheticSpec { train: 256, test: IMAGES, height: 29, width: 27, channels: 1, classes: 10 };
    let (ck, test, ours) = trained(arch, spec);
    let onnx = export_onnx(&ck, OnnxInput::Uint8).unwrap();
    let input = Tensor::from_shape(&[IMAGES, 29, 27, 1], &test.images).unwrap();
    assert_matches(&ours, &run_tract(&onnx, input), 10);
}

#[test]
fn modern_and_mobilenet_archs_match_tract() {
    // modern.txt: BatchNormalization, Dropout, global pooling; mobilenet.txt: a strided conv
    // without bias and SeparableConv2D (two Conv nodes, the first with group = channels).
    for (file, (height, width, channels)) in [("modern.txt", (28, 28, 1)), ("mobilenet.txt", (64, 64, 3))] {
        let text = std::fs::read_to_string(format!("{}/archs/{file}", env!("CARGO_MANIFEST_DIR"))).unwrap();
        let spec = SyntheticSpec { train: 256, test: IMAGES, height, width, channels, classes: 10 };
        let (ck, test, ours) = trained(&text, spec);
        let onnx = export_onnx(&ck, OnnxInput::Float).unwrap();
        eprintln!("{file}:");
        assert_matches(&ours, &run_tract(&onnx, float_input(&test, IMAGES)), 10);
    }
}

#[test]
fn conv_options_depthwise_separable_and_conv_activations_match_tract() {
    // Every new conv argument and activation= (tests/common's CONV_KINDS_ARCH), 13x13x3.
    let arch = common::CONV_KINDS_ARCH;
    let spec = SyntheticSpec { train: 256, test: IMAGES, height: 13, width: 13, channels: 3, classes: 10 };
    let (ck, test, ours) = trained(arch, spec);
    let onnx = export_onnx(&ck, OnnxInput::Float).unwrap();
    let proto = ModelProto::decode(&onnx[..]).unwrap();
    let graph = proto.graph.unwrap();
    // No B input where the layer has no bias; the depthwise convs are grouped.
    let conv = graph.node.iter().find(|n| n.name.as_deref() == Some("conv2d")).unwrap();
    assert_eq!(conv.input.len(), 2, "conv2d has use_bias=False: {:?}", conv.input);
    let groups = |name: &str| {
        graph.node.iter().find(|n| n.name.as_deref() == Some(name)).unwrap().attribute.iter().find(|a| a.name.as_deref() == Some("group")).and_then(|a| a.i)
    };
    assert_eq!((groups("depthwise_conv2d"), groups("separable_conv2d_depthwise")), (Some(6), Some(12)));
    assert_matches(&ours, &run_tract(&onnx, float_input(&test, IMAGES)), 10);
}

#[test]
fn pooling_kinds_and_activations_match_tract() {
    let arch = "Conv2D(6, 3, padding=\"same\") LeakyReLU MaxPooling2D(3, strides=2, padding=\"same\")\n\
                Conv2D(5, 3) Activation(\"gelu\") AveragePooling2D(2, padding=\"same\") Conv2D(4, 1) Activation(\"swish\")\n\
                GlobalMaxPooling2D Dense(7) Activation(\"elu\") Dense(6) Activation(\"tanh\") Dense(5) Activation(\"sigmoid\") Dense(classes, softmax)\n";
    let spec = SyntheticSpec { train: 256, test: IMAGES, height: 13, width: 13, channels: 3, classes: 10 };
    let (ck, test, ours) = trained(arch, spec);
    let onnx = export_onnx(&ck, OnnxInput::Float).unwrap();
    assert_matches(&ours, &run_tract(&onnx, float_input(&test, IMAGES)), 10);
}

#[test]
fn model_carries_opset_class_names_and_preprocessing() {
    let (ck, _, _) = trained(SEED_ARCH, SyntheticSpec { train: 256, test: IMAGES, ..Default::default() });
    let proto = ModelProto::decode(&export_onnx(&ck, OnnxInput::Float).unwrap()[..]).unwrap();
    assert_eq!(proto.opset_import[0].version, Some(17));
    let prop =
        |key: &str| proto.metadata_props.iter().find(|p| p.key.as_deref() == Some(key)).and_then(|p| p.value.clone()).unwrap_or_else(|| panic!("no {key}"));
    let names: Vec<String> = serde_json::from_str(&prop("class_names")).unwrap();
    assert_eq!(names, ck.meta.class_names);
    let pre: serde_json::Value = serde_json::from_str(&prop("preprocessing")).unwrap();
    assert_eq!((pre["height"].as_u64(), pre["width"].as_u64(), pre["channels"].as_u64()), (Some(32), Some(32), Some(3)));
    assert_eq!(pre["layout"], "NHWC");
    assert_eq!(prop("architecture"), ck.meta.arch);
}

#[test]
fn cli_exports_a_checkpoint_and_names_a_bad_one() {
    let dir = common::temp_dir("export-cli");
    let (ck, test, ours) = trained(SEED_ARCH, SyntheticSpec { train: 256, test: IMAGES, ..Default::default() });
    let path = dir.join("model.safetensors");
    gpu_cnn::checkpoint::save(&path, &ck.meta, &ck.tensors).unwrap();
    let out = dir.join("model.onnx");
    let (ok, _, stderr) = common::run_cli(&["export", "--checkpoint", path.to_str().unwrap(), "--format", "onnx", "--out", out.to_str().unwrap()]);
    assert!(ok, "{stderr}");
    assert!(stderr.contains("opset 17"), "{stderr}");
    let onnx = std::fs::read(&out).unwrap();
    assert_matches(&ours[..20 * 10], &run_tract(&onnx, float_input(&test, 20)), 10);

    let garbage = dir.join("garbage.safetensors");
    std::fs::write(&garbage, b"not a checkpoint").unwrap();
    let (ok, _, stderr) = common::run_cli(&["export", "--checkpoint", garbage.to_str().unwrap(), "--out", dir.join("x.onnx").to_str().unwrap()]);
    assert!(!ok);
    assert!(stderr.contains("garbage.safetensors") && !stderr.contains("panicked"), "{stderr}");
    assert!(!dir.join("x.onnx").exists());

    // --out naming the checkpoint itself (it was replaced by the ONNX model), another path to it,
    // or any checkpoint's name: refused, the checkpoint untouched.
    let before = std::fs::read(&path).unwrap();
    let other = dir.join("best.safetensors");
    let renamed = dir.join("model.bin");
    std::fs::write(&renamed, &before).unwrap();
    for (checkpoint, out) in [(&path, &path), (&path, &other), (&renamed, &renamed), (&renamed, &dir.join(".").join("model.bin"))] {
        let (ok, _, stderr) = common::run_cli(&["export", "--checkpoint", checkpoint.to_str().unwrap(), "--out", out.to_str().unwrap()]);
        assert!(!ok && stderr.contains("write the ONNX model to"), "{stderr}");
    }
    assert_eq!(std::fs::read(&path).unwrap(), before);
    assert_eq!(std::fs::read(&renamed).unwrap(), before);
    assert!(!other.exists());
    // A folder that is not there: the error names the file asked for (it named a temporary one).
    let nowhere = dir.join("no-such-folder").join("m.onnx");
    let (ok, _, stderr) = common::run_cli(&["export", "--checkpoint", path.to_str().unwrap(), "--out", nowhere.to_str().unwrap()]);
    assert!(!ok && stderr.contains(&format!("{}: cannot create", nowhere.display())), "{stderr}");
}
