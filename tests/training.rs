//! Training on the CPU backend: the loss falls, a seeded run repeats, and resuming from a
//! checkpoint gives bit for bit the weights of an uninterrupted run.

mod common;
use gpu_cnn::checkpoint;
use gpu_cnn::data::synthetic::{generate, SyntheticSpec};
use gpu_cnn::data::Dataset;
use gpu_cnn::history::EpochRecord;
use gpu_cnn::model::parse_arch;
use gpu_cnn::network::HostTensor;
use gpu_cnn::{Device, TrainConfig, Trainer};
use std::path::Path;

const ARCH: &str = "conv2d 8 3 relu\nmaxpool 2\nconv2d 8 3 relu\nflatten\ndense 16 relu\ndense 4 softmax\n";

fn small_data() -> Dataset {
    generate(&SyntheticSpec { train: 300, test: 100, height: 12, width: 12, channels: 3, classes: 4 }, 1)
}

/// ARCH on small_data through the library's Trainer, on the CPU backend, seed 5, batch 32.
fn trainer(epochs: usize, out: Option<&Path>, learning_rate: f32) -> Trainer {
    let config = TrainConfig { epochs, batch_size: 32, seed: 5, learning_rate, device: Device::Cpu, out_dir: out.map(Path::to_path_buf), ..Default::default() };
    Trainer::new(parse_arch(ARCH).unwrap(), small_data(), config)
}

fn train(epochs: usize, out: Option<&Path>) -> (Vec<HostTensor>, Vec<EpochRecord>) {
    train_at(epochs, out, 1e-3)
}

fn train_at(epochs: usize, out: Option<&Path>, learning_rate: f32) -> (Vec<HostTensor>, Vec<EpochRecord>) {
    let trained = trainer(epochs, out, learning_rate).fit().unwrap();
    (trained.checkpoint.tensors, trained.history)
}

#[test]
fn loss_falls_and_accuracy_rises_on_synthetic_data() {
    let (_, history) = train_at(6, None, 3e-3);
    let (first, last) = (&history[0], &history[5]);
    assert!(last.loss < first.loss * 0.7, "loss {} -> {}", first.loss, last.loss);
    // 4 classes: chance is 0.25.
    assert!(last.val_accuracy > 0.6, "val_accuracy {}", last.val_accuracy);
}

#[test]
fn a_seeded_run_repeats_exactly() {
    let (a, ha) = train(2, None);
    let (b, hb) = train(2, None);
    assert_eq!(a, b);
    assert_eq!(ha.iter().map(|r| r.loss).collect::<Vec<_>>(), hb.iter().map(|r| r.loss).collect::<Vec<_>>());
}

#[test]
fn resume_equals_an_uninterrupted_run_bit_for_bit() {
    let dir = common::temp_dir("resume");
    let (straight, straight_history) = train(3, None);
    let (_, _) = train(2, Some(&dir));
    let ck = checkpoint::load(&dir.join("last.safetensors")).unwrap();
    assert_eq!(ck.meta.epoch, 2);
    assert_eq!(ck.meta.history.len(), 2);
    // Resumed into the same folder from its last checkpoint: everything (weights, Adam state,
    // step, history) must come from the checkpoint for the third epoch to match.
    let resumed = trainer(3, Some(&dir), 1e-3).resume(ck, dir.join("last.safetensors")).fit().unwrap();
    let history = resumed.history;
    let resumed = resumed.checkpoint.tensors;
    for (a, b) in straight.iter().zip(&resumed) {
        assert_eq!(a.name, b.name);
        assert!(a.data.iter().zip(&b.data).all(|(x, y)| x.to_bits() == y.to_bits()), "{} differs", a.name);
    }
    assert_eq!(history.len(), 3);
    assert_eq!(history[2].loss, straight_history[2].loss);
    assert_eq!(history[2].val_accuracy, straight_history[2].val_accuracy);
}

#[test]
fn checkpoints_hold_keras_layouts_and_metadata() {
    let dir = common::temp_dir("layouts");
    train(1, Some(&dir));
    let ck = checkpoint::load(&dir.join("best.safetensors")).unwrap();
    let dims = |name: &str| ck.tensors.iter().find(|t| t.name == name).map(|t| t.dims.clone());
    assert_eq!(dims("conv2d.kernel"), Some(vec![3, 3, 3, 8])); // HWIO
    assert_eq!(dims("conv2d.bias"), Some(vec![8]));
    assert_eq!(dims("dense.kernel"), Some(vec![3 * 3 * 8, 16])); // (in, out): 12 -> conv 10 -> pool 5 -> conv 3
    assert_eq!(dims("dense_1.kernel.adam_m"), Some(vec![16, 4]));
    assert_eq!(ck.meta.input, (12, 12, 3));
    assert_eq!(ck.meta.class_names.len(), 4);
    assert_eq!(ck.meta.seed, 5);
    assert_eq!(ck.meta.step, 10); // 300 images in batches of 32: 9 full + 1 partial
    let history: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("history.json")).unwrap()).unwrap();
    assert_eq!(history["val_accuracy"].as_array().unwrap().len(), 1);
    assert!(!dir.join("last.safetensors.tmp").exists());
}

#[test]
fn a_checkpoint_of_another_architecture_is_refused_clearly() {
    let dir = common::temp_dir("mismatch");
    train(1, Some(&dir));
    let ck = checkpoint::load(&dir.join("last.safetensors")).unwrap();
    let other = parse_arch("conv2d 4 3 relu\nflatten\ndense 4 softmax").unwrap();
    let config = TrainConfig { epochs: 2, device: Device::Cpu, ..Default::default() };
    let path = dir.join("last.safetensors");
    let err = format!("{:#}", Trainer::new(other, small_data(), config).resume(ck, &path).fit().err().expect("refused"));
    // Refused as a whole before any tensor is compared, showing the architecture it holds.
    assert!(err.contains(&path.display().to_string()) && err.contains("was trained with a different architecture"), "names the checkpoint: {err}");
    assert!(err.contains("Conv2D(8, 3, activation=\"relu\")"), "{err}");
}
