//! The modern layers wired into whole networks (BatchNormalization, ReLU, Dropout,
//! GlobalAveragePooling2D): archs/modern.txt has Keras's parameter counts, training agrees
//! between the GPU and the CPU and repeats bit for bit, inference uses the moving statistics
//! and no dropout (evaluate agrees with predict), and the ONNX export runs in tract.

#[macro_use]
mod common;
use gpu_cnn::backend::cpu::CpuBackend;
use gpu_cnn::backend::{Backend, Passes};
use gpu_cnn::data::synthetic::{generate, SyntheticSpec};
use gpu_cnn::data::Dataset;
use gpu_cnn::model::{parse_arch, summary_table, with_classes, LayerSpec, Model};
use gpu_cnn::network::{HostTensor, Network};

/// Every new layer, on awkward shapes: 13x13x3 input, odd channel counts, batch 7.
const ARCH: &str = "Conv2D(8, 3, padding=\"same\") BatchNormalization ReLU MaxPooling2D(2) Dropout(0.25)\n\
                    Conv2D(5, 3) BatchNormalization ReLU GlobalAveragePooling2D Dropout(0.5) Dense(4, softmax)\n";
/// The other new layers: padded max and average pooling, global max pooling, LeakyReLU and
/// element-wise activations after convs and dense layers.
const ARCH_MORE: &str = "Conv2D(6, 3, padding=\"same\") LeakyReLU MaxPooling2D(3, strides=2, padding=\"same\")\n\
                         Conv2D(5, 3) Activation(\"gelu\") AveragePooling2D(2, padding=\"same\") Conv2D(4, 1) Activation(\"swish\")\n\
                         GlobalMaxPooling2D Dense(7) Activation(\"elu\") Dense(6) Activation(\"tanh\") Dense(5) Activation(\"sigmoid\") Dense(4, softmax)\n";
/// The conv kinds and activations (tests/common's CONV_KINDS_ARCH, Dense(classes) = 4 here).
const ARCH_CONV: &str = common::CONV_KINDS_ARCH;
const BATCH: usize = 7;

fn data() -> Dataset {
    generate(&SyntheticSpec { train: 70, test: 21, height: 13, width: 13, channels: 3, classes: 4 }, 5)
}

fn network_on<B: Backend>(backend: B) -> (Network<B>, Dataset) {
    network_of(ARCH, backend)
}

fn network_of<B: Backend>(arch: &str, backend: B) -> (Network<B>, Dataset) {
    let ds = data();
    let model = Model::new(&with_classes(&parse_arch(arch).unwrap(), 4).unwrap(), ds.input_shape()).unwrap();
    (Network::new(backend, model, BATCH, 3).unwrap(), ds)
}

/// `steps` training steps of BATCH; the tensors (moving statistics included) and the metrics.
fn run<B: Backend>(backend: B, steps: usize) -> (Vec<HostTensor>, gpu_cnn::network::Metrics) {
    run_arch(ARCH, backend, steps)
}

fn run_arch<B: Backend>(arch: &str, backend: B, steps: usize) -> (Vec<HostTensor>, gpu_cnn::network::Metrics) {
    let (mut net, ds) = network_of(arch, backend);
    let images = net.backend.upload_images(&ds.train.images, &ds.train.labels, ds.train.image_len()).unwrap();
    let order = gpu_cnn::train::epoch_order(ds.train.len(), 3, 0);
    for batch in order.chunks(BATCH).take(steps) {
        net.train_step(&images, batch).unwrap();
    }
    (net.weights().unwrap(), net.read_metrics().unwrap())
}

/// Six seeded steps and an evaluation of the two architectures (the same layers, one pool
/// fused into the layer before and one apart) give the same weights, metrics and evaluation,
/// bit for bit.
fn assert_trains_and_evaluates_alike<B: Backend>(fused: &str, apart: &str, backend: B) {
    let run = |arch: &str| {
        let (mut net, ds) = network_of(arch, &backend);
        let images = net.backend.upload_images(&ds.train.images, &ds.train.labels, ds.train.image_len()).unwrap();
        for batch in gpu_cnn::train::epoch_order(ds.train.len(), 3, 0).chunks(BATCH).take(6) {
            net.train_step(&images, batch).unwrap();
        }
        let trained = net.read_metrics().unwrap();
        let test = net.backend.upload_images(&ds.test.images, &ds.test.labels, ds.test.image_len()).unwrap();
        (net.weights().unwrap(), trained, net.evaluate(&test, ds.test.len()).unwrap())
    };
    let ((a, ma, ea), (b, mb, eb)) = (run(fused), run(apart));
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.name, y.name);
        common::assert_same_bits(&format!("{} with the pool fused and apart ({fused})", x.name), &x.data, &y.data);
    }
    assert_eq!((ma, ea), (mb, eb), "{fused}");
}

#[test]
fn modern_arch_has_kerass_parameter_counts_and_names() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/archs/modern.txt")).unwrap();
    let model = Model::new(&with_classes(&parse_arch(&text).unwrap(), 10).unwrap(), (28, 28, 1)).unwrap();
    // Keras 2.21's model.summary() of the same model: 132,042 in all, of which the four
    // BatchNormalization layers' moving statistics (2 x (32 + 64 + 64 + 128)) are not trainable.
    assert_eq!(model.param_count(), 132_042);
    let table = summary_table(&model);
    for line in ["Total params: 132,042", "Trainable params: 131,466", "Non-trainable params: 576"] {
        assert!(table.contains(line), "summary lacks '{line}':\n{table}");
    }
    let names: Vec<&str> = model.layers.iter().map(|l| l.name.as_str()).collect();
    for name in ["batch_normalization_3", "re_lu_3", "dropout_2", "global_average_pooling2d", "max_pooling2d_1", "dense"] {
        assert!(names.contains(&name), "no layer named {name}: {names:?}");
    }
}

#[test]
fn batch_normalization_keeps_kerass_tensor_names_and_starts() {
    let (net, _) = network_on(CpuBackend::new());
    let w = net.weights().unwrap();
    let find = |name: &str| w.iter().find(|t| t.name == name).unwrap_or_else(|| panic!("no tensor {name}"));
    assert!(find("batch_normalization.gamma").data.iter().all(|&v| v == 1.0));
    assert!(find("batch_normalization.beta").data.iter().all(|&v| v == 0.0));
    assert!(find("batch_normalization.moving_mean").data.iter().all(|&v| v == 0.0));
    assert!(find("batch_normalization_1.moving_variance").data.iter().all(|&v| v == 1.0));
    assert_eq!(find("batch_normalization_1.gamma").dims, vec![5]);
    // Optimizer state only for the trainable ones.
    let state = net.optimizer_state().unwrap();
    assert!(state.iter().any(|t| t.name == "batch_normalization.gamma.adam_m"));
    assert!(!state.iter().any(|t| t.name.starts_with("batch_normalization.moving_mean")));
}

backend_test! {
    /// Training updates the moving statistics, and two seeded runs give the same bits (fixed-
    /// order BN sums, dropout masks from a counter hash).
    fn a_seeded_run_with_the_new_layers_repeats_exactly<B>(backend: &B) {
        let (a, ma) = run(backend, 6);
        let (b, mb) = run(backend, 6);
        for (x, y) in a.iter().zip(&b) {
            common::assert_same_bits(&format!("{} of two seeded runs", x.name), &x.data, &y.data);
        }
        assert_eq!(ma, mb);
        let mean = a.iter().find(|t| t.name == "batch_normalization.moving_mean").unwrap();
        assert!(mean.data.iter().any(|&v| v != 0.0), "training moved the moving mean");
    }
}

backend_test! {
    /// Where the backend fuses them (the CPU), a MaxPooling2D right after a BatchNormalization
    /// (and the ReLU it absorbed) runs inside it: the same bits in training and evaluation as
    /// when a Dropout(0.0) between them keeps the pool a layer of its own (the Dropout swaps
    /// places with the pool, so every other layer keeps its index). With a ReLU and
    /// padding="valid" on an odd map (cells in no window); without, padding="same" with partial
    /// windows.
    fn a_maxpool_after_batch_normalization_runs_inside_it_with_the_same_bits<B>(backend: &B) {
        let fused = "Conv2D(8, 3, padding=\"same\") BatchNormalization ReLU MaxPooling2D(2) Dropout(0.0)\n\
                     Conv2D(5, 2) BatchNormalization MaxPooling2D(2, padding=\"same\") Dropout(0.0) GlobalAveragePooling2D Dense(4, softmax)\n";
        let apart = fused.replace("MaxPooling2D(2) Dropout(0.0)", "Dropout(0.0) MaxPooling2D(2)").replace("MaxPooling2D(2, padding=\"same\") Dropout(0.0)", "Dropout(0.0) MaxPooling2D(2, padding=\"same\")");
        let pools: &[&str] = if backend.fuses_batchnorm_maxpool() { &["max_pooling2d", "max_pooling2d_1"] } else { &[] };
        assert_eq!(network_of(fused, backend).0.absorbed_pool_layers(), pools);
        assert!(network_of(&apart, backend).0.absorbed_pool_layers().is_empty());
        assert_trains_and_evaluates_alike(fused, &apart, backend);
    }
}

backend_test! {
    /// Where the backend fuses them in training (the CPU: a direct conv whose input is the
    /// network's), a MaxPooling2D right after the first conv runs inside it: the same bits in
    /// training and evaluation as when a Dropout(0.0) between them keeps the pool a layer of its
    /// own. A ReLU'd conv under a "valid" pool that leaves cells out, and a linear one under a
    /// "same" pool; the second conv's input needs a gradient, so its pool stays apart.
    fn a_maxpool_after_the_first_conv_trains_inside_it_with_the_same_bits<B>(backend: &B) {
        let relu_valid = "Conv2D(8, 3, activation=\"relu\") MaxPooling2D(2) Dropout(0.0) Conv2D(8, 3, padding=\"same\", activation=\"relu\") MaxPooling2D(2) Flatten Dense(4, softmax)\n";
        let linear_same = "Conv2D(16, 3, padding=\"same\") MaxPooling2D(3, padding=\"same\") Dropout(0.0) GlobalAveragePooling2D Dense(4, softmax)\n";
        for fused in [relu_valid, linear_same] {
            let apart = fused.replacen(" MaxPooling2D(", " Dropout(0.0) MaxPooling2D(", 1);
            let apart = apart.replacen("Dropout(0.0) Conv2D", "Conv2D", 1).replacen("Dropout(0.0) GlobalAveragePooling2D", "GlobalAveragePooling2D", 1);
            let model = network_of(fused, backend).0.model;
            let LayerSpec::Conv2D(conv) = &model.layers[0].spec else { panic!("the first layer is the conv") };
            let fuses = backend.fuses_conv_maxpool(&conv.shape(&model.layers[0].input), Passes::Training { input_gradient: false });
            let pools: &[&str] = if fuses { &["max_pooling2d"] } else { &[] };
            assert_eq!(network_of(fused, backend).0.absorbed_pool_layers(), pools, "{fused}");
            assert!(network_of(&apart, backend).0.absorbed_pool_layers().is_empty(), "{apart}");
            assert_trains_and_evaluates_alike(fused, &apart, backend);
        }
    }
}

backend_test! {
    /// A ReLU (or Activation("relu")) right after a BatchNormalization runs inside it: the
    /// same bits as when a Dropout(0.0) between them (which keeps every value, times 1.0)
    /// keeps the ReLU a layer of its own, with its own forward pass and gradient copy. (The
    /// Dropout swaps places with the ReLU, so every other layer keeps its index, which seeds
    /// its initial weights.)
    fn a_relu_after_batch_normalization_runs_inside_it_with_the_same_bits<B>(backend: &B) {
        let fused = "Conv2D(8, 3, padding=\"same\") BatchNormalization ReLU Dropout(0.0) MaxPooling2D(2)\n\
                     Conv2D(5, 3) BatchNormalization Activation(\"relu\") Dropout(0.0) GlobalAveragePooling2D Dense(4, softmax)\n";
        let apart = fused.replace("ReLU Dropout(0.0)", "Dropout(0.0) ReLU").replace("Activation(\"relu\") Dropout(0.0)", "Dropout(0.0) Activation(\"relu\")");
        assert_eq!(network_of(fused, backend).0.absorbed_relu_layers(), ["re_lu", "activation"]);
        assert!(network_of(&apart, backend).0.absorbed_relu_layers().is_empty());
        let ((a, ma), (b, mb)) = (run_arch(fused, backend, 6), run_arch(&apart, backend, 6));
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(x.name, y.name);
            common::assert_same_bits(&format!("{} with the ReLU absorbed and apart", x.name), &x.data, &y.data);
        }
        assert_eq!(ma, mb);
    }
}

gpu_test! {
    fn gpu_training_with_the_new_layers_agrees_with_the_cpu(gpu: &GpuBackend) {
        let (gw, gm) = run(gpu, 8);
        let (cw, cm) = run(CpuBackend::new(), 8);
        // Summation orders differ (GEMM blocking, BN's per-channel sums: the CPU adds in f64, the
        // GPU in an f32 tree), so each step's gradients differ in the last bits; BN divides by a
        // batch deviation, which amplifies that a little. After 8 Adam steps of lr 1e-3 a wrong
        // gradient or mask would move a weight by ~1e-3; rounding moves them by < 1e-5.
        // A conv's bias right before a BatchNormalization has a zero gradient in exact arithmetic
        // (BN subtracts the batch mean), so its gradient is rounding noise, which Adam scales to
        // +-lr steps of either sign on each backend: those biases are only bounded (8 steps of
        // lr 1e-3) and change nothing downstream.
        let before_bn = ["conv2d.bias", "conv2d_1.bias"];
        for (g, c) in gw.iter().zip(&cw) {
            assert_eq!(g.name, c.name);
            if before_bn.contains(&g.name.as_str()) {
                assert!(g.data.iter().chain(&c.data).all(|v| v.abs() <= 8.0e-3 + 1e-6), "{}: {:?} / {:?}", g.name, g.data, c.data);
            } else {
                common::assert_close(&g.name, &g.data, &c.data, 5e-5, 1e-4);
            }
        }
        assert_eq!(gm.count, cm.count);
        assert!((gm.loss - cm.loss).abs() < 1e-3, "loss {} vs {}", gm.loss, cm.loss);
    }
}

#[test]
fn inference_uses_moving_statistics_and_no_dropout() {
    let (mut net, ds) = network_on(CpuBackend::new());
    let images = net.backend.upload_images(&ds.train.images, &ds.train.labels, ds.train.image_len()).unwrap();
    let order = gpu_cnn::train::epoch_order(ds.train.len(), 3, 0);
    for batch in order.chunks(BATCH) {
        net.train_step(&images, batch).unwrap();
    }
    let test = net.backend.upload_images(&ds.test.images, &ds.test.labels, ds.test.image_len()).unwrap();
    // Inference is deterministic (no dropout, no batch statistics): twice the same bits, and
    // the same probabilities whatever the batch split (batch statistics would depend on it).
    let a = gpu_cnn::predict::probabilities(&mut net, &test, ds.test.len()).unwrap();
    let b = gpu_cnn::predict::probabilities(&mut net, &test, ds.test.len()).unwrap();
    common::assert_same_bits("two predictions", &a, &b);
    let mut one_by_one = Vec::new();
    for i in 0..ds.test.len() as u32 {
        one_by_one.extend(net.predict_step(&test, &[i]).unwrap());
    }
    // Per-image vs per-batch GEMMs may split sums differently: f32 rounding only.
    common::assert_close("batch of 1 vs batch of 7", &one_by_one, &a, 1e-6, 1e-5);
    // evaluate scores the same probabilities.
    let m = net.evaluate(&test, ds.test.len()).unwrap();
    let correct = a.chunks(4).zip(&ds.test.labels).filter(|(p, &l)| (0..4).max_by(|&x, &y| p[x].total_cmp(&p[y])) == Some(l as usize)).count();
    assert_eq!((m.accuracy * ds.test.len() as f64).round() as usize, correct);
}

#[test]
fn resume_with_batch_normalization_and_dropout_is_bit_exact_on_the_cpu() {
    let dir = common::temp_dir("modern-resume");
    let arch = dir.join("arch.txt");
    std::fs::write(&arch, ARCH.replace("Dense(4, softmax)", "Dense(classes, softmax)")).unwrap();
    let arch = arch.to_str().unwrap();
    let common_args = ["train", "--dataset", "synthetic", "--limit-train", "70", "--limit-test", "14", "--batch-size", "7", "--device", "cpu", "--arch", arch];
    let straight = dir.join("straight");
    let (ok, _, err) = common::run_cli(&[&common_args[..], &["--epochs", "2", "--out", straight.to_str().unwrap()]].concat());
    assert!(ok, "{err}");
    let halves = dir.join("halves");
    let (ok, _, err) = common::run_cli(&[&common_args[..], &["--epochs", "1", "--out", halves.to_str().unwrap()]].concat());
    assert!(ok, "{err}");
    let last = halves.join("last.safetensors");
    let (ok, _, err) = common::run_cli(&[&common_args[..], &["--epochs", "2", "--resume", last.to_str().unwrap(), "--out", halves.to_str().unwrap()]].concat());
    assert!(ok, "{err}");
    let a = gpu_cnn::checkpoint::load(&straight.join("last.safetensors")).unwrap();
    let b = gpu_cnn::checkpoint::load(&halves.join("last.safetensors")).unwrap();
    assert_eq!(a.tensors.len(), b.tensors.len());
    for (x, y) in a.tensors.iter().zip(&b.tensors) {
        assert_eq!(x.name, y.name);
        common::assert_same_bits(&x.name, &x.data, &y.data);
    }
}

backend_test! {
    fn a_seeded_run_with_pooling_kinds_activations_and_conv_kinds_repeats_exactly<B>(backend: &B) {
        for arch in [ARCH_MORE, ARCH_CONV] {
            let (a, ma) = run_arch(arch, backend, 6);
            let (b, mb) = run_arch(arch, backend, 6);
            for (x, y) in a.iter().zip(&b) {
                common::assert_same_bits(&format!("{} of two seeded runs", x.name), &x.data, &y.data);
            }
            assert_eq!(ma, mb);
        }
    }
}

gpu_test! {
    fn gpu_training_with_pooling_kinds_activations_and_conv_kinds_agrees_with_the_cpu(gpu: &GpuBackend) {
        for arch in [ARCH_MORE, ARCH_CONV] {
            let (gw, gm) = run_arch(arch, gpu, 8);
            let (cw, cm) = run_arch(arch, CpuBackend::new(), 8);
            // As above: summation orders and WGSL's exp/erf (a few ulp) differ from the CPU's, so
            // each step's gradients differ in the last bits; 8 Adam steps of lr 1e-3 move a weight
            // by ~1e-3 when a gradient is wrong, rounding by < 1e-5. (ARCH_CONV's conv before its
            // BatchNormalization has no bias, so no tensor there is rounding noise alone.)
            for (g, c) in gw.iter().zip(&cw) {
                assert_eq!(g.name, c.name);
                common::assert_close(&g.name, &g.data, &c.data, 5e-5, 1e-4);
            }
            assert_eq!(gm.count, cm.count);
            assert!((gm.loss - cm.loss).abs() < 1e-3, "loss {} vs {}", gm.loss, cm.loss);
        }
    }
}

#[test]
fn mobilenet_arch_has_kerass_parameter_counts_and_trains() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/archs/mobilenet.txt")).unwrap();
    let layers = with_classes(&parse_arch(&text).unwrap(), 10).unwrap();
    let model = Model::new(&layers, (64, 64, 3)).unwrap();
    // By hand, on 64x64x3 with 10 classes: stem conv 3*3*3*32 = 864 (no bias); separable convs
    // 3*3*32 + 32*64 = 2,336, 3*3*64 + 64*128 = 8,768, 3*3*128 + 128*128 = 17,536 (no biases);
    // BatchNormalization 4 * (32 + 64 + 128 + 128) = 1,408, half of it moving statistics (704,
    // not trainable); dense 128*10 + 10 = 1,290. 32,202 in all, as Keras 3.15's model.summary()
    // of the same model says ("Trainable params: 31,498", "Non-trainable params: 704").
    assert_eq!((model.param_count(), model.trainable_count()), (32_202, 31_498));
    let table = summary_table(&model);
    for line in ["Total params: 32,202", "Trainable params: 31,498", "Non-trainable params: 704", "separable_conv2d_2 (SeparableConv2D)"] {
        assert!(table.contains(line), "summary lacks '{line}':\n{table}");
    }
    let shapes: Vec<Vec<usize>> = model.layers.iter().map(|l| l.output.clone()).collect();
    assert_eq!((&shapes[0], &shapes[6], &shapes[11], &shapes[14]), (&vec![32, 32, 32], &vec![16, 16, 64], &vec![8, 8, 128], &vec![128]));
    // A few steps on 64x64 photos of 10 classes: the loss is finite and falls.
    let ds = generate(&SyntheticSpec { train: 48, test: 8, height: 64, width: 64, channels: 3, classes: 10 }, 9);
    let mut net = Network::new(CpuBackend::new(), model, 8, 1).unwrap();
    net.learning_rate = 3e-3;
    let images = net.backend.upload_images(&ds.train.images, &ds.train.labels, ds.train.image_len()).unwrap();
    let mut losses = Vec::new();
    for epoch in 0..3 {
        net.reset_metrics();
        for batch in gpu_cnn::train::epoch_order(ds.train.len(), 1, epoch).chunks(8) {
            net.train_step(&images, batch).unwrap();
        }
        losses.push(net.read_metrics().unwrap().loss);
    }
    assert!(losses.iter().all(|l| l.is_finite()) && losses[2] < losses[0], "losses {losses:?}");
}

#[test]
fn pooling_kinds_and_activations_parse_name_and_round_trip() {
    let layers = parse_arch(ARCH_MORE).unwrap();
    assert_eq!(parse_arch(&gpu_cnn::model::format_arch(&layers)).unwrap(), layers);
    let model = Model::new(&layers, (13, 13, 3)).unwrap();
    let names: Vec<&str> = model.layers.iter().map(|l| l.name.as_str()).collect();
    for name in ["leaky_re_lu", "activation_3", "average_pooling2d", "global_max_pooling2d"] {
        assert!(names.contains(&name), "no layer named {name}: {names:?}");
    }
    // Same padding keeps ceil(13 / 2) = 7 rows; a valid 3x3 conv then leaves 5, a same pool 3.
    let shapes: Vec<Vec<usize>> = model.layers.iter().map(|l| l.output.clone()).collect();
    assert_eq!(shapes[2], vec![7, 7, 6]);
    assert_eq!(shapes[5], vec![3, 3, 5]);
    for (bad, says) in [
        ("Activation(\"softmax\") Dense(4, softmax)", "last Dense"),
        ("Activation(\"mish\") Dense(4, softmax)", "unknown activation"),
        ("AveragePooling2D(2, padding=\"full\") Dense(4, softmax)", "padding"),
    ] {
        let err = parse_arch(bad).map(|_| ()).unwrap_err();
        assert!(format!("{err:#}").contains(says), "{bad}: {err:#}");
    }
}
