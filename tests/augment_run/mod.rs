//! The small seeded training runs tests/augment.rs and tests/augment_geometry.rs share: a tiny
//! model on synthetic 12x12x3 images, trained with a given augmentation on the CPU backend.
#![allow(dead_code)]

use gpu_cnn::augment::Augmentation;
use gpu_cnn::backend::cpu::CpuBackend;
use gpu_cnn::data::synthetic::{generate, SyntheticSpec};
use gpu_cnn::data::Dataset;
use gpu_cnn::model::{format_arch, parse_arch, Model};
use gpu_cnn::network::{HostTensor, Network};
use gpu_cnn::train::{fit, TrainOptions};
use std::path::Path;

pub const ARCH: &str = "conv2d 8 3 relu\nmaxpool 2\nconv2d 8 3 relu\nflatten\ndense 16 relu\ndense 4 softmax\n";

pub fn small_data() -> Dataset {
    generate(&SyntheticSpec { train: 200, test: 60, height: 12, width: 12, channels: 3, classes: 4 }, 1)
}

pub fn options(epochs: usize, out: Option<&Path>, augment: Augmentation) -> TrainOptions {
    TrainOptions { out_dir: out.map(Path::to_path_buf), augment, ..TrainOptions::new(&format_arch(&parse_arch(ARCH).unwrap()), epochs, 32, 5) }
}

pub fn new_net(ds: &Dataset, seed: u64) -> Network<CpuBackend> {
    let model = Model::new(&parse_arch(ARCH).unwrap(), ds.input_shape()).unwrap();
    Network::new(CpuBackend::new(), model, 32, seed).unwrap()
}

/// The weights after `epochs` epochs from scratch (seed 5), checkpoints in `out` if given.
pub fn train(epochs: usize, out: Option<&Path>, augment: Augmentation) -> Vec<HostTensor> {
    let ds = small_data();
    let mut net = new_net(&ds, 5);
    fit(&mut net, &ds, &options(epochs, out, augment), Vec::new()).unwrap();
    net.weights().unwrap()
}

pub fn same_bits(a: &[HostTensor], b: &[HostTensor]) -> bool {
    a.iter().zip(b).all(|(x, y)| x.name == y.name && x.data.iter().zip(&y.data).all(|(p, q)| p.to_bits() == q.to_bits()))
}

/// Resumes the run whose checkpoints are in `dir` from its last.safetensors until `epochs`,
/// from a different initialisation (so everything must come from the checkpoint) and with the
/// checkpoint's augmentation. Returns that augmentation and the final weights.
pub fn resume(dir: &Path, epochs: usize) -> (Augmentation, Vec<HostTensor>) {
    let ck = gpu_cnn::checkpoint::load(&dir.join("last.safetensors")).unwrap();
    let ds = small_data();
    let mut net = new_net(&ds, 123);
    net.load_state(&ck.tensors, true).unwrap();
    net.step = ck.meta.step;
    fit(&mut net, &ds, &options(epochs, Some(dir), ck.meta.augment), ck.meta.history.clone()).unwrap();
    (ck.meta.augment, net.weights().unwrap())
}
