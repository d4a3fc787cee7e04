//! The parsers of untrusted input (IDX, CIFAR batch, checkpoint, architecture text) on the
//! regression corpus in tests/fuzz_corpus/<target>/ (inputs the fuzz targets in fuzz/ found
//! interesting), then on a few thousand seeded mutations of valid files: every input must give
//! Ok or an error, never a panic. The mutations are seeded, so a failure repeats exactly.

mod common;
use gpu_cnn::augment::Augmentation;
use gpu_cnn::checkpoint::{self, CheckpointMeta};
use gpu_cnn::data::{cifar, idx, ImageSet};
use gpu_cnn::model::{parse_arch, summary_table, Model, SEED_ARCH};
use gpu_cnn::rng::Rng;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

/// Mutations per seed file and target: enough to reach every header field of the small seeds
/// many times over, few enough to stay around a second per target.
const MUTATIONS: usize = 5000;

fn parse_idx(data: &[u8]) {
    let path = Path::new("fuzz-idx");
    let _ = idx::read_images_from(data, path);
    let _ = idx::read_labels_from(data, path, 10);
}

fn parse_cifar(data: &[u8]) {
    let mut set = ImageSet { height: 32, width: 32, channels: 3, ..Default::default() };
    let _ = cifar::parse_batch(data, Path::new("fuzz-batch.bin"), 10, &mut set);
}

fn parse_checkpoint(data: &[u8]) {
    let _ = checkpoint::load_bytes(data, Path::new("fuzz.safetensors"));
}

/// The same as fuzz/fuzz_targets/arch_text.rs: the input shape from the first three bytes.
fn parse_arch_text(data: &[u8]) {
    if data.len() < 3 {
        return;
    }
    let input = (data[0] as usize + 1, data[1] as usize + 1, data[2] as usize % 4 + 1);
    let Ok(text) = std::str::from_utf8(&data[3..]) else { return };
    if let Ok(layers) = parse_arch(text) {
        if let Ok(model) = Model::new(&layers, input) {
            let _ = summary_table(&model);
            let _ = model.memory_bytes(1 << 20);
        }
    }
}

fn idx_seeds() -> Vec<Vec<u8>> {
    let mut images: Vec<u8> = [0x803u32, 2, 3, 3].iter().flat_map(|w| w.to_be_bytes()).collect();
    images.extend(0..18u8);
    let mut labels: Vec<u8> = [0x801u32, 3].iter().flat_map(|w| w.to_be_bytes()).collect();
    labels.extend([1, 9, 0]);
    vec![images, labels]
}

fn cifar_seeds() -> Vec<Vec<u8>> {
    let dir = common::temp_dir("fuzz-cifar-seed");
    let path = dir.join("b.bin");
    let images: Vec<u8> = (0..2 * 3072).map(|i| (i % 256) as u8).collect();
    cifar::write_batch(&path, &images, &[3, 9]).unwrap();
    vec![std::fs::read(path).unwrap()]
}

fn checkpoint_seeds() -> Vec<Vec<u8>> {
    let dir = common::temp_dir("fuzz-ck-seed");
    let arch = "conv2d 2 3 relu\nmaxpool 2\nflatten\ndense 3 softmax\n";
    let model = Model::new(&parse_arch(arch).unwrap(), (6, 6, 1)).unwrap();
    let tensors = common::constant_weights(&model, 0.5);
    let meta = CheckpointMeta {
        arch: arch.into(),
        input: (6, 6, 1),
        class_names: vec!["a".into(), "b".into(), "c".into()],
        dataset: "synthetic".into(),
        epoch: 0,
        step: 3,
        seed: 1,
        batch_size: 4,
        learning_rate: 1e-3,
        optimizer: gpu_cnn::optimizer::Optimizer::default(),
        label_smoothing: 0.0,
        augment: Augmentation::NONE,
        history: Vec::new(),
        preprocessing: None,
        data_source: None,
        class_weights: None,
    };
    let path = dir.join("seed.safetensors");
    checkpoint::save(&path, &meta, &tensors).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    assert!(checkpoint::load_bytes(&bytes, &path).is_ok(), "the seed itself is valid");
    vec![bytes]
}

fn arch_seeds() -> Vec<Vec<u8>> {
    let with_input = |h: u8, w: u8, c: u8, text: &str| [&[h, w, c][..], text.as_bytes()].concat();
    vec![with_input(31, 31, 2, SEED_ARCH), with_input(27, 27, 0, "conv2d 16 3x5 stride=2 padding=same relu\nmaxpool 3 stride=2\nflatten\ndense 10 softmax\n")]
}

/// Words that make sizes overflow or vanish when written over a header field.
const EXTREMES: [u32; 6] = [0, 1, 0x7FFF_FFFF, 0x8000_0000, 0xFFFF_FFFF, 0x0001_0000];

fn mutate(seed: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut data = seed.to_vec();
    for _ in 0..1 + rng.below(3) {
        let len = data.len().max(1) as u64;
        let at = rng.below(len) as usize;
        match rng.below(6) {
            0 if !data.is_empty() => data[at] ^= 1 << rng.below(8),
            1 if data.len() >= 4 => {
                let at = at.min(data.len() - 4);
                let word = EXTREMES[rng.below(EXTREMES.len() as u64) as usize];
                let bytes = if rng.below(2) == 0 { word.to_be_bytes() } else { word.to_le_bytes() };
                data[at..at + 4].copy_from_slice(&bytes);
            }
            2 => data.truncate(at),
            3 => {
                let end = (at + 1 + rng.below(64) as usize).min(data.len());
                let chunk = data[at.min(end)..end].to_vec();
                data.splice(at.min(data.len())..at.min(data.len()), chunk);
            }
            // Digits and punctuation: the text formats (JSON header, arch lines) hide their
            // sizes in decimal.
            4 if !data.is_empty() => {
                let alphabet = b"0123456789-x,{}[]\"\n 9";
                data[at] = alphabet[rng.below(alphabet.len() as u64) as usize];
            }
            _ => {
                let insert: Vec<u8> = (0..1 + rng.below(8)).map(|_| rng.below(256) as u8).collect();
                let at = at.min(data.len());
                data.splice(at..at, insert);
            }
        }
    }
    data
}

/// Runs `parse` on the corpus and on seeded mutations of `seeds`; fails listing every input
/// that panicked (saved under target/ to add to the corpus).
fn check(target: &str, parse: fn(&[u8]), seeds: Vec<Vec<u8>>) {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz_corpus").join(target);
    let mut inputs: Vec<Vec<u8>> = std::fs::read_dir(&corpus).into_iter().flatten().flatten().map(|e| std::fs::read(e.path()).unwrap()).collect();
    assert!(!inputs.is_empty() || !corpus.exists(), "{} is empty", corpus.display());
    let mut rng = Rng::new(0x5EED);
    for seed in &seeds {
        inputs.push(seed.clone());
        inputs.extend((0..MUTATIONS).map(|_| mutate(seed, &mut rng)));
    }
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let failed: Vec<&Vec<u8>> = inputs.iter().filter(|input| catch_unwind(AssertUnwindSafe(|| parse(input))).is_err()).collect();
    std::panic::set_hook(hook);
    if !failed.is_empty() {
        let dir = common::temp_dir(&format!("fuzz-failed-{target}"));
        for (i, input) in failed.iter().enumerate() {
            std::fs::write(dir.join(format!("{i}")), input).unwrap();
        }
        panic!("{target}: {} of {} inputs panicked; saved in {}", failed.len(), inputs.len(), dir.display());
    }
}

#[test]
fn idx_parser_never_panics() {
    check("idx", parse_idx, idx_seeds());
}

#[test]
fn cifar_batch_parser_never_panics() {
    check("cifar_batch", parse_cifar, cifar_seeds());
}

#[test]
fn checkpoint_loader_never_panics() {
    check("checkpoint", parse_checkpoint, checkpoint_seeds());
}

#[test]
fn arch_text_parser_never_panics() {
    check("arch_text", parse_arch_text, arch_seeds());
}
