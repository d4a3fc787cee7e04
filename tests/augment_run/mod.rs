//! The small seeded training runs tests/augment.rs and tests/augment_geometry.rs share: a tiny
//! model on synthetic 12x12x3 images, trained with a given augmentation on the CPU backend.
#![allow(dead_code)]

use gpu_cnn::augment::Augmentation;
use gpu_cnn::data::synthetic::{generate, SyntheticSpec};
use gpu_cnn::data::Dataset;
use gpu_cnn::model::parse_arch;
use gpu_cnn::network::HostTensor;
use gpu_cnn::{Device, TrainConfig, Trainer};
use std::path::Path;

pub const ARCH: &str = "conv2d 8 3 relu\nmaxpool 2\nconv2d 8 3 relu\nflatten\ndense 16 relu\ndense 4 softmax\n";

pub fn small_data() -> Dataset {
    generate(&SyntheticSpec { train: 200, test: 60, height: 12, width: 12, channels: 3, classes: 4 }, 1)
}

/// ARCH on small_data through the library's Trainer: CPU backend, seed 5, batch 32.
pub fn trainer(epochs: usize, out: Option<&Path>, augment: Augmentation) -> Trainer {
    let config = TrainConfig { epochs, batch_size: 32, seed: 5, augment, device: Device::Cpu, out_dir: out.map(Path::to_path_buf), ..Default::default() };
    Trainer::new(parse_arch(ARCH).unwrap(), small_data(), config)
}

/// The weights after `epochs` epochs from scratch (seed 5), checkpoints in `out` if given.
pub fn train(epochs: usize, out: Option<&Path>, augment: Augmentation) -> Vec<HostTensor> {
    trainer(epochs, out, augment).fit().unwrap().checkpoint.tensors
}

pub fn same_bits(a: &[HostTensor], b: &[HostTensor]) -> bool {
    a.iter().zip(b).all(|(x, y)| x.name == y.name && x.data.iter().zip(&y.data).all(|(p, q)| p.to_bits() == q.to_bits()))
}

/// Resumes the run whose checkpoints are in `dir` from its last.safetensors until `epochs`
/// with the checkpoint's augmentation (everything else must come from the checkpoint too).
/// Returns that augmentation and the final weights.
pub fn resume(dir: &Path, epochs: usize) -> (Augmentation, Vec<HostTensor>) {
    let path = dir.join("last.safetensors");
    let ck = gpu_cnn::checkpoint::load(&path).unwrap();
    let augment = ck.meta.augment;
    let trained = trainer(epochs, Some(dir), augment).resume(ck, path).fit().unwrap();
    (augment, trained.checkpoint.tensors)
}
