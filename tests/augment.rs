//! Training-data augmentation (`--augment flip,crop`): the CPU gather flips and shifts as it
//! claims, the GPU gather kernel gives bit for bit the CPU's batch, augmentation changes the
//! training, a resumed augmented run equals an uninterrupted one, and the CLI runs with it on
//! both devices. Tolerance everywhere: exact equality (the batch is u8 / 255 on both sides).

mod common;
use gpu_cnn::augment::{Augmentation, SampleTransform, CROP_PAD};
use gpu_cnn::backend::cpu::CpuBackend;
use gpu_cnn::backend::{Backend, GatherAugment};
use gpu_cnn::checkpoint;
use gpu_cnn::data::synthetic::{generate, SyntheticSpec};
use gpu_cnn::data::Dataset;
use gpu_cnn::model::{format_arch, parse_arch, Model};
use gpu_cnn::network::{HostTensor, Network};
use gpu_cnn::rng::Rng;
use gpu_cnn::train::{fit, TrainOptions};
use std::path::Path;

/// 13x11x3: odd sizes, and 429-byte images that straddle u32 words on the GPU.
const SHAPE: (usize, usize, usize) = (13, 11, 3);

fn random_images(count: usize, seed: u64) -> (Vec<u8>, Vec<u8>) {
    let mut rng = Rng::new(seed);
    let len = SHAPE.0 * SHAPE.1 * SHAPE.2;
    ((0..count * len).map(|_| rng.below(256) as u8).collect(), (0..count).map(|_| rng.below(10) as u8).collect())
}

/// The batch `gather_batch` builds from the images at `idx`, each moved by its transform.
fn gather<B: Backend>(b: &B, data: &B::Images, idx: &[u32], transforms: &[SampleTransform]) -> (Vec<f32>, Vec<u32>) {
    let image_len = SHAPE.0 * SHAPE.1 * SHAPE.2;
    let mut it = b.indices(idx.len()).unwrap();
    b.upload_indices(&mut it, idx);
    let mut tt = b.indices(idx.len()).unwrap();
    b.upload_indices(&mut tt, &transforms.iter().map(SampleTransform::pack).collect::<Vec<_>>());
    let mut x = b.tensor(idx.len() * image_len).unwrap();
    let mut labels = b.indices(idx.len()).unwrap();
    b.gather_batch(data, &it, idx.len(), &mut x, &mut labels, Some(GatherAugment { transforms: &tt, shape: SHAPE }));
    b.flush().unwrap();
    (b.download(&x).unwrap(), b.download_indices(&labels).unwrap())
}

/// Pixel (y, x, c) of image `i` of a batch.
fn at(batch: &[f32], i: usize, y: usize, x: usize, c: usize) -> f32 {
    let (h, w, ch) = SHAPE;
    batch[((i * h + y) * w + x) * ch + c]
}

#[test]
fn cpu_flip_mirrors_and_crop_shifts_with_zero_fill() {
    let (images, labels) = random_images(3, 1);
    let cpu = CpuBackend::new();
    let data = cpu.upload_images(&images, &labels, SHAPE.0 * SHAPE.1 * SHAPE.2).unwrap();
    let idx = [2, 0, 1, 2];
    let t = |flip, dy, dx| SampleTransform { flip, dy, dx };
    let (x, got_labels) = gather(&cpu, &data, &idx, &[t(false, 0, 0), t(true, 0, 0), t(false, 2, -3), t(true, -4, 1)]);
    assert_eq!(got_labels, idx.iter().map(|&i| labels[i as usize] as u32).collect::<Vec<_>>());
    let (h, w, ch) = SHAPE;
    let source = |image: u32, y: usize, x: usize, c: usize| images[((image as usize * h + y) * w + x) * ch + c] as f32 / 255.0;
    for y in 0..h {
        for xx in 0..w {
            for c in 0..ch {
                // The identity: the plain scaled image.
                assert_eq!(at(&x, 0, y, xx, c), source(2, y, xx, c));
                // Flipped: the mirrored source.
                assert_eq!(at(&x, 1, y, xx, c), source(0, y, w - 1 - xx, c));
                // Shifted by (2, -3): source (y + 2, x - 3), zero where that is off the image.
                let want = if y + 2 < h && xx >= 3 { source(1, y + 2, xx - 3, c) } else { 0.0 };
                assert_eq!(at(&x, 2, y, xx, c), want, "crop at ({y}, {xx}, {c})");
                // Flipped, then shifted by (-4, 1): source (y - 4, (W-1-x) + 1).
                let want = if y >= 4 && xx >= 1 { source(2, y - 4, w - xx, c) } else { 0.0 };
                assert_eq!(at(&x, 3, y, xx, c), want, "flip + crop at ({y}, {xx}, {c})");
            }
        }
    }
    // The shift really zero-filled something (2 rows at the bottom, 3 columns on the left).
    assert_eq!(at(&x, 2, h - 1, w - 1, 0), 0.0);
    assert_eq!(at(&x, 2, 0, 0, 0), 0.0);
}

#[test]
fn crop_equals_pad_then_crop() {
    // The standard recipe, written out: pad by CROP_PAD with zeros, cut an h x w window at
    // (dy + pad, dx + pad). The shift must equal it for every offset.
    let (images, labels) = random_images(1, 2);
    let cpu = CpuBackend::new();
    let data = cpu.upload_images(&images, &labels, images.len()).unwrap();
    let (h, w, ch) = SHAPE;
    let p = CROP_PAD as usize;
    let (ph, pw) = (h + 2 * p, w + 2 * p);
    let mut padded = vec![0.0f32; ph * pw * ch];
    for y in 0..h {
        for x in 0..w {
            for c in 0..ch {
                padded[((y + p) * pw + x + p) * ch + c] = images[(y * w + x) * ch + c] as f32 / 255.0;
            }
        }
    }
    for dy in -CROP_PAD..=CROP_PAD {
        for dx in -CROP_PAD..=CROP_PAD {
            let (x, _) = gather(&cpu, &data, &[0], &[SampleTransform { flip: false, dy, dx }]);
            let (oy, ox) = ((dy + CROP_PAD) as usize, (dx + CROP_PAD) as usize);
            let want: Vec<f32> =
                (0..h).flat_map(|y| (0..w).flat_map(move |xx| (0..ch).map(move |c| ((y + oy) * pw + xx + ox) * ch + c))).map(|i| padded[i]).collect();
            assert_eq!(x, want, "offset ({dy}, {dx})");
        }
    }
}

#[test]
fn gpu_gather_augments_exactly_as_the_cpu() {
    let Some(gpu) = common::gpu_backend() else { return };
    let cpu = CpuBackend::new();
    let image_len = SHAPE.0 * SHAPE.1 * SHAPE.2;
    let (images, labels) = random_images(10, 3);
    // 7 images, repeats included; the extremes of each shift and random ones.
    let idx = [9, 0, 4, 4, 7, 2, 5];
    let mut transforms: Vec<SampleTransform> =
        Augmentation { flip: true, crop: true }.batch_transforms(7, 4, 0, 0).into_iter().map(SampleTransform::unpack).collect();
    transforms[0] = SampleTransform { flip: true, dy: -CROP_PAD, dx: CROP_PAD };
    transforms[1] = SampleTransform { flip: false, dy: CROP_PAD, dx: -CROP_PAD };
    transforms[2] = SampleTransform::default();
    let want = gather(&cpu, &cpu.upload_images(&images, &labels, image_len).unwrap(), &idx, &transforms);
    let whole = gpu.upload_images(&images, &labels, image_len).unwrap();
    // Chunks of 3 images: the batch's images lie in different dispatches.
    let chunked = gpu.upload_images_in_chunks(&images, &labels, image_len, 3 * image_len as u64 + 3).unwrap();
    assert_eq!(chunked.chunk_count(), 4);
    for data in [whole, chunked] {
        let got = gather(&gpu, &data, &idx, &transforms);
        assert_eq!(got.1, want.1, "labels");
        assert!(got.0.iter().zip(&want.0).all(|(g, w)| g.to_bits() == w.to_bits()), "the GPU's augmented batch differs from the CPU's");
    }
}

/// The plain (un-augmented) batch of one 256-byte image holding every byte value.
fn every_byte_scaled<B: Backend>(b: &B) -> Vec<f32> {
    let bytes: Vec<u8> = (0..=255).collect();
    let data = b.upload_images(&bytes, &[0], 256).unwrap();
    let (mut idx, mut x, mut labels) = (b.indices(1).unwrap(), b.tensor(256).unwrap(), b.indices(1).unwrap());
    b.upload_indices(&mut idx, &[0]);
    b.gather_batch(&data, &idx, 1, &mut x, &mut labels, None);
    b.flush().unwrap();
    b.download(&x).unwrap()
}

#[test]
fn gpu_scales_every_byte_value_exactly_as_the_cpu() {
    // v / 255 on the GPU is built bit by bit (a GPU's division may be ulps off): check all 256.
    let Some(gpu) = common::gpu_backend() else { return };
    let (got, want) = (every_byte_scaled(&gpu), every_byte_scaled(&CpuBackend::new()));
    for v in 0..256 {
        assert_eq!(want[v], v as f32 / 255.0);
        assert_eq!(got[v].to_bits(), want[v].to_bits(), "{v} / 255: GPU {} vs CPU {}", got[v], want[v]);
    }
}

const ARCH: &str = "conv2d 8 3 relu\nmaxpool 2\nconv2d 8 3 relu\nflatten\ndense 16 relu\ndense 4 softmax\n";

fn small_data() -> Dataset {
    generate(&SyntheticSpec { train: 200, test: 60, height: 12, width: 12, channels: 3, classes: 4 }, 1)
}

fn options(epochs: usize, out: Option<&Path>, augment: Augmentation) -> TrainOptions {
    TrainOptions {
        epochs,
        batch_size: 32,
        seed: 5,
        out_dir: out.map(Path::to_path_buf),
        arch_text: format_arch(&parse_arch(ARCH).unwrap()),
        progress: false,
        augment,
        preprocessing: None,
        data_source: None,
        learning_rate: 1e-3,
        recipe: Default::default(),
    }
}

fn new_net(ds: &Dataset, seed: u64) -> Network<CpuBackend> {
    let model = Model::new(&parse_arch(ARCH).unwrap(), ds.input_shape()).unwrap();
    Network::new(CpuBackend::new(), model, 32, seed).unwrap()
}

fn train(epochs: usize, out: Option<&Path>, augment: Augmentation) -> Vec<HostTensor> {
    let ds = small_data();
    let mut net = new_net(&ds, 5);
    fit(&mut net, &ds, &options(epochs, out, augment), Vec::new()).unwrap();
    net.weights().unwrap()
}

fn same_bits(a: &[HostTensor], b: &[HostTensor]) -> bool {
    a.iter().zip(b).all(|(x, y)| x.name == y.name && x.data.iter().zip(&y.data).all(|(p, q)| p.to_bits() == q.to_bits()))
}

#[test]
fn augmentation_changes_the_training_and_repeats_when_seeded() {
    let both = Augmentation { flip: true, crop: true };
    let plain = train(1, None, Augmentation::NONE);
    let augmented = train(1, None, both);
    assert!(!same_bits(&plain, &augmented), "augmentation left the weights unchanged");
    assert!(!same_bits(&train(1, None, Augmentation { flip: true, crop: false }), &augmented), "crop changed nothing");
    assert!(same_bits(&augmented, &train(1, None, both)), "a seeded augmented run must repeat exactly");
}

#[test]
fn resumed_augmented_run_equals_an_uninterrupted_one_bit_for_bit() {
    let both = Augmentation { flip: true, crop: true };
    let dir = common::temp_dir("augment-resume");
    let straight = train(3, None, both);
    train(2, Some(&dir), both);
    let ck = checkpoint::load(&dir.join("last.safetensors")).unwrap();
    assert_eq!(ck.meta.augment, both, "the checkpoint records the augmentation");
    let ds = small_data();
    let mut net = new_net(&ds, 123); // a different init: everything must come from the checkpoint
    net.load_state(&ck.tensors, true).unwrap();
    net.step = ck.meta.step;
    fit(&mut net, &ds, &options(3, Some(&dir), ck.meta.augment), ck.meta.history.clone()).unwrap();
    assert!(same_bits(&straight, &net.weights().unwrap()), "the resumed augmented run differs");
}

fn cli_train(device: &str, run: &Path, extra: &[&str]) -> String {
    let dir = run.parent().unwrap();
    let arch = dir.join("tiny.arch");
    std::fs::write(&arch, "conv2d 4 3 relu\nmaxpool 2\nflatten\ndense 10 softmax\n").unwrap();
    let args = [
        &[
            "train",
            "--device",
            device,
            "--dataset",
            "synthetic",
            "--arch",
            arch.to_str().unwrap(),
            "--limit-train",
            "200",
            "--limit-test",
            "100",
            "--out",
            run.to_str().unwrap(),
        ][..],
        extra,
    ]
    .concat();
    let (ok, _, err) = common::run_cli(&args);
    assert!(ok, "{err}");
    for f in ["history.json", "last.safetensors", "best.safetensors"] {
        assert!(run.join(f).exists(), "{f} missing: {err}");
    }
    err
}

#[test]
fn cli_trains_with_augment_on_the_cpu_and_resume_keeps_it() {
    let dir = common::temp_dir("augment-cli-cpu");
    let run = dir.join("run");
    let err = cli_train("cpu", &run, &["--epochs", "1", "--augment", "flip,crop"]);
    assert!(err.contains("Augmentation: flip,crop"), "{err}");
    let last = run.join("last.safetensors");
    assert_eq!(checkpoint::load(&last).unwrap().meta.augment, Augmentation { flip: true, crop: true });
    // Resumed without --augment: the checkpoint's is used, and stored again.
    let err = cli_train("cpu", &run, &["--epochs", "2", "--resume", last.to_str().unwrap()]);
    assert!(err.contains("Resuming") && err.contains("Augmentation: flip,crop") && err.contains("Epoch 2/2"), "{err}");
    assert_eq!(checkpoint::load(&last).unwrap().meta.augment, Augmentation { flip: true, crop: true });
    // A bad list is refused with the accepted words.
    let (ok, _, err) = common::run_cli(&["train", "--dataset", "synthetic", "--augment", "flip,rotate", "--out", dir.join("bad").to_str().unwrap()]);
    assert!(!ok && err.contains("rotate") && err.contains("flip and crop"), "{err}");
}

#[test]
fn cli_trains_with_augment_on_the_gpu() {
    if common::gpu_backend().is_none() {
        return;
    }
    let dir = common::temp_dir("augment-cli-gpu");
    let run = dir.join("run");
    let err = cli_train("gpu", &run, &["--epochs", "1", "--augment", "flip,crop"]);
    assert!(err.contains("Augmentation: flip,crop") && !err.contains("Device: CPU backend"), "{err}");
    assert_eq!(checkpoint::load(&run.join("last.safetensors")).unwrap().meta.augment, Augmentation { flip: true, crop: true });
}
