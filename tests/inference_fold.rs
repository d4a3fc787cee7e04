//! Inference folds BatchNormalization into the Conv2D or Dense before it (src/inference.rs):
//! the folded network gives the unfolded one's probabilities on both backends, within a stated
//! tolerance, with the same predicted classes; the BN layers it cannot fold stay, renamed.

#[macro_use]
mod common;
use gpu_cnn::backend::cpu::CpuBackend;
use gpu_cnn::backend::Backend;
use gpu_cnn::checkpoint::Checkpoint;
use gpu_cnn::data::synthetic::{generate, SyntheticSpec};
use gpu_cnn::data::Dataset;
use gpu_cnn::inference::{evaluate_folded, fold_model, inference_network};
use gpu_cnn::model::{format_arch, parse_arch, Activation, LayerSpec, Model};
use gpu_cnn::network::{HostTensor, Network};
use gpu_cnn::rng::Rng;

/// Conv without bias -> BN -> ReLU (folds, gains a bias, ReLU fused), DepthwiseConv2D -> BN and
/// SeparableConv2D without bias -> BN -> ReLU (fold), Conv -> ReLU -> BN (cannot fold: the BN
/// stays and becomes `batch_normalization`), Dense -> BN without ReLU (folds), on awkward shapes.
const ARCH: &str = "Conv2D(8, 3, padding=\"same\", use_bias=False) BatchNormalization ReLU MaxPooling2D(2)\n\
                    DepthwiseConv2D(3, padding=\"same\", depth_multiplier=2) BatchNormalization SeparableConv2D(6, 3, use_bias=False) BatchNormalization ReLU\n\
                    Conv2D(5, 1) ReLU BatchNormalization GlobalAveragePooling2D Dense(7) BatchNormalization Dense(4, softmax)\n";

fn data() -> Dataset {
    generate(&SyntheticSpec { train: 7, test: 23, height: 13, width: 13, channels: 3, classes: 4 }, 8)
}

/// A checkpoint of ARCH whose BN tensors are far from their starts (gamma 0.5-1.5, beta and
/// moving mean +-0.3, moving variance 0.2-2), as after training.
fn checkpoint(ds: &Dataset) -> Checkpoint {
    let model = Model::new(&parse_arch(ARCH).unwrap(), ds.input_shape()).unwrap();
    let net = Network::new(CpuBackend::new(), model, 4, 2).unwrap();
    let mut rng = Rng::derive(11, 0, 0);
    let mut tensors: Vec<HostTensor> = net.weights().unwrap();
    for t in tensors.iter_mut().filter(|t| t.name.starts_with("batch_normalization")) {
        let (lo, hi) = match t.name.rsplit('.').next().unwrap() {
            "gamma" => (0.5, 1.5),
            "moving_variance" => (0.2, 2.0),
            _ => (-0.3, 0.3),
        };
        t.data.iter_mut().for_each(|v| *v = lo + (hi - lo) * rng.unit_f32());
    }
    Checkpoint { meta: common::checkpoint_meta(&format_arch(&parse_arch(ARCH).unwrap()), ds.input_shape(), &["a", "b", "c", "d"]), tensors }
}

fn probabilities<B: Backend>(net: &mut Network<B>, ds: &Dataset) -> Vec<f32> {
    let images = net.backend.upload_images(&ds.test.images, &ds.test.labels, ds.test.image_len()).unwrap();
    let all: Vec<u32> = (0..ds.test.len() as u32).collect();
    all.chunks(5).flat_map(|batch| net.predict_step(&images, batch).unwrap()).collect()
}

fn argmax(row: &[f32]) -> usize {
    (0..row.len()).max_by(|&a, &b| row[a].total_cmp(&row[b])).unwrap()
}

#[test]
fn folding_keeps_the_unfoldable_batch_normalization_and_renames_it() {
    let ds = data();
    let ck = checkpoint(&ds);
    let (folded, tensors) = fold_model(&ck.model().unwrap(), &ck.tensors).unwrap();
    let names: Vec<&str> = folded.layers.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "conv2d",
            "max_pooling2d",
            "depthwise_conv2d",
            "separable_conv2d",
            "conv2d_1",
            "re_lu",
            "batch_normalization",
            "global_average_pooling2d",
            "dense",
            "dense_1"
        ]
    );
    assert!(matches!(&folded.layers[0].spec, LayerSpec::Conv2D(c) if c.conv.activation == Activation::Relu && c.conv.use_bias), "bias gained, ReLU fused");
    assert!(matches!(&folded.layers[3].spec, LayerSpec::SeparableConv2D(c) if c.conv.activation == Activation::Relu && c.conv.use_bias));
    assert!(matches!(&folded.layers[8].spec, LayerSpec::Dense(d) if d.activation == Activation::None), "no ReLU followed that BN");
    // The BN after the ReLU was batch_normalization_3: its tensors move to the new name unchanged.
    let find = |ts: &[HostTensor], n: &str| ts.iter().find(|t| t.name == n).unwrap().data.clone();
    assert_eq!(find(&tensors, "batch_normalization.moving_mean"), find(&ck.tensors, "batch_normalization_3.moving_mean"));
    // The separable layer's depthwise kernel is not scaled (the BN follows its pointwise conv).
    assert_eq!(find(&tensors, "separable_conv2d.depthwise_kernel"), find(&ck.tensors, "separable_conv2d.depthwise_kernel"));
    let expected: usize = folded.layers.iter().map(|l| l.params().len()).sum();
    assert_eq!(tensors.len(), expected, "exactly the folded model's tensors");
}

/// Tolerance 2e-6 on probabilities in [0, 1]: the folded weights are computed in f64 and
/// rounded once, so each folded output differs from conv + BN by a few f32 ulps of the terms
/// it sums (about 1e-7 relative at these sizes); softmax passes that on at most unchanged.
fn assert_same_predictions<B: Backend>(make: impl Fn() -> B) {
    let ds = data();
    let ck = checkpoint(&ds);
    let mut plain = Network::new(make(), ck.model().unwrap(), 5, 0).unwrap();
    plain.load_state(&ck.tensors, false).unwrap();
    let mut folded = inference_network(make(), &ck, 5).unwrap();
    assert!(folded.model.layers.len() < plain.model.layers.len());
    let (want, got) = (probabilities(&mut plain, &ds), probabilities(&mut folded, &ds));
    common::assert_close("folded vs unfolded probabilities", &got, &want, 2e-6, 0.0);
    for (a, b) in got.chunks(4).zip(want.chunks(4)) {
        assert_eq!(argmax(a), argmax(b));
    }
}

#[test]
fn folded_inference_matches_conv_plus_batchnorm_on_the_cpu() {
    assert_same_predictions(CpuBackend::new);
}

#[test]
fn folded_inference_matches_conv_plus_batchnorm_on_the_gpu() {
    let Some(_) = common::gpu_backend() else { return };
    assert_same_predictions(|| common::gpu_backend().unwrap());
}

/// Training's validation pass (`evaluate_folded`) is the inference network's evaluate, bit for
/// bit, and within rounding of the unfolded network's; a network made for inference (no
/// gradient buffers) refuses to train.
#[test]
fn validation_runs_the_inference_network() {
    let ds = data();
    let ck = checkpoint(&ds);
    let n = ds.test.len();
    let mut training = Network::new(CpuBackend::new(), ck.model().unwrap(), 5, 0).unwrap();
    training.load_state(&ck.tensors, false).unwrap();
    let images = training.backend.upload_images(&ds.test.images, &ds.test.labels, ds.test.image_len()).unwrap();
    let val = evaluate_folded(&mut training, &images, n).unwrap();
    let mut inference = inference_network(CpuBackend::new(), &ck, 5).unwrap();
    assert_eq!(inference.evaluate(&images, n).unwrap(), val, "the same folded network, the same batches");
    // The fold moves probabilities by at most 2e-6 (above), so the mean loss by about as much.
    let unfolded = training.evaluate(&images, n).unwrap();
    assert!((unfolded.loss - val.loss).abs() < 1e-5 && unfolded.accuracy == val.accuracy, "{unfolded:?} vs {val:?}");
    let trained = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| inference.train_step(&images, &[0, 1])));
    assert!(trained.is_err(), "an inference network has no gradient buffers to train with");
}

/// On the CPU an inference network runs each conv's max-pool inside the conv
/// (`Backend::fuses_conv_maxpool`): a fused ReLU's direct conv, a linear Winograd conv, a
/// "same" pool, but not a conv with an unfused activation (gelu runs after the conv). A
/// training network does so only for the first conv (direct, and its input needs no
/// gradient). Predictions and the validation pass keep the training network's bits.
#[test]
fn cpu_inference_pools_inside_the_conv_with_the_same_bits() {
    let arch = "Conv2D(16, 3, activation=\"relu\") MaxPooling2D(2)\n\
                Conv2D(16, 3, padding=\"same\") MaxPooling2D(2, padding=\"same\")\n\
                Conv2D(8, 3, padding=\"same\", activation=\"gelu\") MaxPooling2D(2)\n\
                Flatten Dense(4, softmax)\n";
    let ds = generate(&SyntheticSpec { train: 7, test: 23, height: 19, width: 17, channels: 3, classes: 4 }, 9);
    let model = Model::new(&parse_arch(arch).unwrap(), ds.input_shape()).unwrap();
    let mut training = Network::new(CpuBackend::new(), model.clone(), 5, 3).unwrap();
    assert_eq!(training.absorbed_pool_layers(), ["max_pooling2d"], "training keeps the output of a conv whose input needs a gradient");
    let mut inference = Network::for_inference(CpuBackend::new(), model, 5).unwrap();
    inference.load_state(&training.weights().unwrap(), false).unwrap();
    assert_eq!(inference.absorbed_pool_layers(), ["max_pooling2d", "max_pooling2d_1"]);
    let (apart, fused) = (probabilities(&mut training, &ds), probabilities(&mut inference, &ds));
    common::assert_same_bits("probabilities", &fused, &apart);
    let images = training.backend.upload_images(&ds.test.images, &ds.test.labels, ds.test.image_len()).unwrap();
    let n = ds.test.len();
    let own = training.evaluate(&images, n).unwrap();
    assert_eq!(evaluate_folded(&mut training, &images, n).unwrap(), own, "the validation pass, fused, gives the same metrics");
    assert_eq!(inference.evaluate(&images, n).unwrap(), own);
}
