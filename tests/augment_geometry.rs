//! `--augment rotate=DEG,zoom=F,contrast=F,brightness=F` (Keras's RandomRotation, RandomZoom,
//! RandomContrast, RandomBrightness): each transform against a hand-computed image, the GPU
//! gather kernel bit for bit the CPU's on a batch with everything on, draws from (seed, epoch,
//! step) alone, the checkpoint keeps the setting and a resumed run continues it exactly, and a
//! step's host-to-device traffic is the indices plus AFFINE_WORDS words an image.
//!
//! Tolerances: CPU against GPU is bit equality (both do the same integer geometry and the same
//! IEEE adds and multiplies, none fusable; see src/augment/affine.rs). Against hand-computed
//! values the affine path scales by 1/(255 * 2^16) rounded to f32 after rearranging the
//! contrast, so a value may differ from the exact one by a few f32 roundings of numbers <= 2:
//! atol 1e-6 (8 ulps of 1.0) states that; the sampling positions in these cases are exact.

mod augment_run;
#[macro_use]
mod common;
use augment_run::{resume, same_bits, train, ARCH};
use gpu_cnn::augment::{AffineTransform, Augmentation, SampleDraw, SampleTransform, TransformLayout, AFFINE_WORDS};
use gpu_cnn::backend::cpu::CpuBackend;
use gpu_cnn::backend::{Backend, GatherAugment};
use gpu_cnn::checkpoint;
use gpu_cnn::data::synthetic::{generate, SyntheticSpec};
use gpu_cnn::data::ImageSet;
use gpu_cnn::model::{parse_arch, Model};
use gpu_cnn::network::Network;
use gpu_cnn::rng::Rng;
use std::sync::Arc;

/// atol against hand-computed values (see the file's comment).
const ATOL: f64 = 1e-6;

const ALL_ON: Augmentation = Augmentation { flip: true, crop: true, rotate: 30.0, zoom: 0.3, contrast: 0.5, brightness: 0.2 };

fn image_set(images: Vec<u8>, (height, width, channels): (usize, usize, usize)) -> ImageSet {
    let count = images.len() / (height * width * channels);
    ImageSet { images: Arc::new(images), labels: (0..count).map(|i| (i % 10) as u8).collect(), height, width, channels }
}

/// The batch `gather_batch` builds from the images at `idx` of `set`, with `words` the packed
/// transforms (one SampleTransform or AFFINE_WORDS per image).
fn gather<B: Backend>(b: &B, data: &B::Images, set: &ImageSet, idx: &[u32], words: &[u32]) -> (Vec<f32>, Vec<u32>) {
    let n = idx.len();
    let (mut it, mut tt) = (b.indices(n).unwrap(), b.indices(words.len()).unwrap());
    b.upload_indices(&mut it, idx);
    b.upload_indices(&mut tt, words);
    let mut x = b.tensor(n * set.image_len()).unwrap();
    let mut labels = b.indices(n).unwrap();
    let augment = GatherAugment { transforms: &tt, shape: (set.height, set.width, set.channels), layout: TransformLayout::of_batch(words.len(), n) };
    b.gather_batch(data, &it, n, &mut x, &mut labels, Some(augment));
    b.flush().unwrap();
    (b.download(&x).unwrap(), b.download_indices(&labels).unwrap())
}

/// The CPU's transform of the one image of `set` by `draw`.
fn transform_one(set: &ImageSet, draw: SampleDraw) -> Vec<f32> {
    let cpu = CpuBackend::new();
    let data = cpu.upload_image_set(set).unwrap();
    let sums = gpu_cnn::augment::channel_sums(set.image(0), set.channels);
    let words = AffineTransform::new(&draw, (set.height, set.width, set.channels), &sums).pack();
    gather(&cpu, &data, set, &[0], &words).0
}

fn draw(f: impl FnOnce(&mut SampleDraw)) -> SampleDraw {
    let mut d = SampleDraw::IDENTITY;
    f(&mut d);
    d
}

#[test]
fn rotate_90_turns_the_image_counter_clockwise_with_zero_fill() {
    // 4x4: out(y, x) = in(x, 3 - y) (Keras's rotation matrix about the centre (1.5, 1.5) with
    // cos 0, sin 1): the top row becomes the old right column read downwards.
    let bytes: Vec<u8> = (0..16).map(|i| 10 + 15 * i as u8).collect();
    let got = transform_one(&image_set(bytes.clone(), (4, 4, 1)), draw(|d| d.degrees = 90.0));
    let want: Vec<f64> = (0..16).map(|i| bytes[(i % 4) * 4 + 3 - i / 4] as f64 / 255.0).collect();
    common::assert_close("rotate 90 of 4x4", &got, &want, ATOL, 0.0);
    // 2 rows x 4 columns, centre (1.5, 0.5): out(y, x) = in(x - 1, 2 - y) where that is inside;
    // columns 0 and 3 fall outside and are filled with exactly 0.
    let bytes: Vec<u8> = (1..=8).map(|i| 30 * i as u8).collect();
    let got = transform_one(&image_set(bytes.clone(), (2, 4, 1)), draw(|d| d.degrees = 90.0));
    let want: Vec<f64> = (0..8)
        .map(|i| {
            let (y, x) = (i / 4, i % 4);
            if (1..=2).contains(&x) {
                bytes[(x - 1) * 4 + 2 - y] as f64 / 255.0
            } else {
                0.0
            }
        })
        .collect();
    common::assert_close("rotate 90 of 2x4", &got, &want, ATOL, 0.0);
    assert!(got.iter().enumerate().filter(|(i, _)| i % 4 == 0 || i % 4 == 3).all(|(_, &v)| v.to_bits() == 0), "zero fill is +0.0: {got:?}");
}

#[test]
fn zoom_in_2x_samples_the_centre_bilinearly_and_zoom_out_fills_zeros() {
    // A linear ramp in(y, x) = 16 y + 4 x on 4x4. Zoom 0.5 (Keras's 1 + height_factor draw
    // of -0.5): source (0.5 y + 0.75, 0.5 x + 0.75), between pixels at quarter weights, where
    // bilinear sampling of a linear ramp is exact: 8 y + 2 x + 15.
    let bytes: Vec<u8> = (0..16).map(|i| (16 * (i / 4) + 4 * (i % 4)) as u8).collect();
    let set = image_set(bytes.clone(), (4, 4, 1));
    let got = transform_one(&set, draw(|d| d.zoom = 0.5));
    let want: Vec<f64> = (0..16).map(|i| (8 * (i / 4) + 2 * (i % 4) + 15) as f64 / 255.0).collect();
    common::assert_close("zoom in 2x", &got, &want, ATOL, 0.0);
    // Zoom 2 (out): source (2 y - 1.5, 2 x - 1.5). Row and column 0 sample at -1.5 (outside:
    // 0); (1, 1) samples (0.5, 0.5), the mean of in's top-left 2x2 block; row 3 samples 4.5
    // (the neighbours 4 and 5 are outside: 0).
    let got = transform_one(&set, draw(|d| d.zoom = 2.0));
    for i in 0..4 {
        for (y, x) in [(0, i), (i, 0), (3, i), (i, 3)] {
            assert_eq!(got[y * 4 + x], 0.0, "zoom out fill at ({y}, {x})");
        }
    }
    let block = (bytes[0] as f64 + bytes[1] as f64 + bytes[4] as f64 + bytes[5] as f64) / 4.0 / 255.0;
    common::assert_close("zoom out centre", &got[5..6], &[block], ATOL, 0.0);
}

#[test]
fn contrast_moves_each_channel_about_its_own_mean_and_clips() {
    // One channel, bytes 0, 51, 102, 255: x = 0, 0.2, 0.4, 1, mean 0.4. With c = 1.5,
    // (x - 0.4) * 1.5 + 0.4 = -0.2, 0.1, 0.4, 1.3, clipped to [0, 1] (Keras 3's
    // random_contrast.py clips to value_range after _adjust_contrast).
    let set = image_set(vec![0, 51, 102, 255], (2, 2, 1));
    let got = transform_one(&set, draw(|d| d.contrast = 1.5));
    common::assert_close("contrast 1.5", &got, &[0.0, 0.1, 0.4, 1.0], ATOL, 0.0);
    // Two channels, 1x2 image: channel 0 = 0.2, 0.6 (mean 0.4), channel 1 = 0, 1 (mean 0.5).
    // c = 0.5: channel 0 -> 0.3, 0.5; channel 1 -> 0.25, 0.75.
    let set = image_set(vec![51, 0, 153, 255], (1, 2, 2));
    let got = transform_one(&set, draw(|d| d.contrast = 0.5));
    common::assert_close("contrast 0.5 per channel", &got, &[0.3, 0.25, 0.5, 0.75], ATOL, 0.0);
    // c = 0 (a draw Keras allows with factor 1): every pixel becomes its channel's mean.
    let got = transform_one(&set, draw(|d| d.contrast = 0.0));
    common::assert_close("contrast 0", &got, &[0.4, 0.5, 0.4, 0.5], ATOL, 0.0);
}

#[test]
fn brightness_adds_a_delta_and_clips() {
    let set = image_set(vec![0, 51, 102, 255], (2, 2, 1));
    common::assert_close("brightness +0.3", &transform_one(&set, draw(|d| d.brightness = 0.3)), &[0.3, 0.5, 0.7, 1.0], ATOL, 0.0);
    common::assert_close("brightness -0.3", &transform_one(&set, draw(|d| d.brightness = -0.3)), &[0.0, 0.0, 0.1, 0.7], ATOL, 0.0);
    // After the contrast, as Keras's RandomContrast -> RandomBrightness: each clips.
    let both = transform_one(
        &set,
        draw(|d| {
            d.contrast = 1.5;
            d.brightness = -0.3;
        }),
    );
    common::assert_close("contrast then brightness", &both, &[0.0, 0.0, 0.1, 0.7], ATOL, 0.0);
}

#[test]
fn flip_and_crop_in_the_affine_path_move_pixels_as_the_shift_path() {
    // The same flips and shifts through the 12-word layout land on the same source pixels
    // (values within ATOL: the affine path scales by a rounded 1/(255 * 2^16)).
    let mut rng = Rng::new(5);
    let shape = (13, 11, 3);
    let set = image_set((0..13 * 11 * 3).map(|_| rng.below(256) as u8).collect(), shape);
    let cpu = CpuBackend::new();
    let data = cpu.upload_image_set(&set).unwrap();
    for shift in [SampleTransform { flip: true, dy: 0, dx: 0 }, SampleTransform { flip: false, dy: 2, dx: -3 }, SampleTransform { flip: true, dy: -4, dx: 4 }] {
        let (plain, _) = gather(&cpu, &data, &set, &[0], &[shift.pack()]);
        let words = AffineTransform::new(&SampleDraw { shift, ..SampleDraw::IDENTITY }, shape, &[]).pack();
        let (affine, _) = gather(&cpu, &data, &set, &[0], &words);
        common::assert_close(&format!("{shift:?}"), &affine, &plain, ATOL, 0.0);
    }
}

/// An f64 model of Keras's pipeline for one element: the composed map (zoom, rotation, flip,
/// shift) evaluated exactly, bilinear with zero fill, then contrast and brightness.
fn reference(set: &ImageSet, d: &SampleDraw, y: usize, x: usize, c: usize) -> f64 {
    let (h, w, ch) = (set.height, set.width, set.channels);
    let (cx, cy) = ((w as f64 - 1.0) / 2.0, (h as f64 - 1.0) / 2.0);
    let (ux, uy) = (d.zoom * (x as f64 - cx), d.zoom * (y as f64 - cy));
    let (sin, cos) = d.degrees.to_radians().sin_cos();
    let (rx, ry) = (cos * ux - sin * uy, sin * ux + cos * uy);
    let mx = if d.shift.flip { -rx } else { rx };
    let (sx, sy) = (mx + cx + d.shift.dx as f64, ry + cy + d.shift.dy as f64);
    let at = |yy: f64, xx: f64| {
        let inside = (0.0..h as f64).contains(&yy) && (0.0..w as f64).contains(&xx);
        if inside {
            set.image(0)[(yy as usize * w + xx as usize) * ch + c] as f64 / 255.0
        } else {
            0.0
        }
    };
    let (x0, y0) = (sx.floor(), sy.floor());
    let (fx, fy) = (sx - x0, sy - y0);
    let v = at(y0, x0) * (1.0 - fy) * (1.0 - fx) + at(y0, x0 + 1.0) * (1.0 - fy) * fx + at(y0 + 1.0, x0) * fy * (1.0 - fx) + at(y0 + 1.0, x0 + 1.0) * fy * fx;
    let mean = (0..h * w).map(|p| set.image(0)[p * ch + c] as f64 / 255.0).sum::<f64>() / (h * w) as f64;
    let v = ((v - mean) * d.contrast + mean).clamp(0.0, 1.0);
    (v + d.brightness).clamp(0.0, 1.0)
}

#[test]
fn random_draws_follow_kerass_formulas() {
    // Against the exact f64 model, for random draws with everything on. The fixed-point
    // geometry moves a sampling position by at most 1/512 pixel (rounding to 1/256) plus the
    // 16.16 matrix's rounding (2^-17 per entry, times x + y + 1 <= 25): 0.0022 pixel each way.
    // A bilinear value changes by at most 1.0 per pixel each way (neighbouring bytes 0 and 255),
    // and the contrast multiplies by at most 1.5: atol 1.5 * 2 * 0.0022 = 0.0066 -> 0.007.
    let mut rng = Rng::new(8);
    let shape = (13, 13, 3);
    let set = image_set((0..13 * 13 * 3).map(|_| rng.below(256) as u8).collect(), shape);
    for (step, d) in ALL_ON.batch_draws(20, 9, 0, 4).iter().enumerate() {
        let got = transform_one(&set, *d);
        let want: Vec<f64> = (0..13 * 13 * 3).map(|j| reference(&set, d, j / 3 / 13, j / 3 % 13, j % 3)).collect();
        common::assert_close(&format!("draw {step}: {d:?}"), &got, &want, 0.007, 0.0);
    }
}

#[test]
fn gpu_gather_applies_every_transform_bit_for_bit_as_the_cpu() {
    let Some(gpu) = common::gpu_backend() else { return };
    let cpu = CpuBackend::new();
    let shape = (13, 13, 3);
    let mut rng = Rng::new(3);
    let set = image_set((0..10 * 13 * 13 * 3).map(|_| rng.below(256) as u8).collect(), shape);
    // 7 images, repeats included; everything on, drawn as training draws them, plus forced
    // extremes: an exact quarter turn with a flip, full zoom out with c = 0, zoom in with the
    // largest brightness.
    let idx = [9, 0, 4, 4, 7, 2, 5];
    let mut words = ALL_ON.step_transforms(&set, &idx, 4, 1, 2);
    assert_eq!(words.len(), 7 * AFFINE_WORDS);
    let forced = [
        SampleDraw { shift: SampleTransform { flip: true, dy: -4, dx: 4 }, degrees: 90.0, ..SampleDraw::IDENTITY },
        SampleDraw { zoom: 2.0, contrast: 0.0, degrees: -180.0, ..SampleDraw::IDENTITY },
        SampleDraw { zoom: 0.0, brightness: 1.0, ..SampleDraw::IDENTITY },
    ];
    for (row, d) in forced.iter().enumerate() {
        let sums = gpu_cnn::augment::channel_sums(set.image(idx[row] as usize), 3);
        words[row * AFFINE_WORDS..][..AFFINE_WORDS].copy_from_slice(&AffineTransform::new(d, shape, &sums).pack());
    }
    let want = gather(&cpu, &cpu.upload_image_set(&set).unwrap(), &set, &idx, &words);
    // Every transform did something: no row is the plain scaled image.
    for (row, &image) in idx.iter().enumerate().take(7) {
        let plain: Vec<f32> = set.image(image as usize).iter().map(|&v| v as f32 / 255.0).collect();
        assert!(want.0[row * set.image_len()..][..set.image_len()].iter().zip(&plain).any(|(a, b)| (a - b).abs() > 0.01), "row {row} unchanged");
    }
    let whole = gpu.upload_image_set(&set).unwrap();
    // Chunks of 3 images: the batch's images lie in different dispatches.
    let chunked = gpu.upload_images_in_chunks(&set.images, &set.labels, set.image_len(), 3 * set.image_len() as u64 + 3).unwrap();
    assert_eq!(chunked.chunk_count(), 4);
    for data in [whole, chunked] {
        let got = gather(&gpu, &data, &set, &idx, &words);
        assert_eq!(got.1, want.1, "labels");
        common::assert_same_bits("GPU affine batch vs CPU", &got.0, &want.0);
    }
}

#[test]
fn draws_depend_on_seed_epoch_and_step_only() {
    let mut rng = Rng::new(4);
    let set = image_set((0..6 * 5 * 5 * 3).map(|_| rng.below(256) as u8).collect(), (5, 5, 3));
    let idx = [5, 1, 3];
    let a = ALL_ON.step_transforms(&set, &idx, 7, 2, 3);
    assert_eq!(a, ALL_ON.step_transforms(&set, &idx, 7, 2, 3));
    assert_ne!(a, ALL_ON.step_transforms(&set, &idx, 7, 3, 2));
    assert_ne!(a, ALL_ON.step_transforms(&set, &idx, 8, 2, 3));
    // The batch's images enter only through the contrast's channel means.
    let other = [0, 2, 4];
    let no_contrast = Augmentation { contrast: 0.0, ..ALL_ON };
    assert_eq!(no_contrast.step_transforms(&set, &idx, 7, 2, 3), no_contrast.step_transforms(&set, &other, 7, 2, 3));
    assert_ne!(a, ALL_ON.step_transforms(&set, &other, 7, 2, 3));
    // Flip and crop alone keep their one-word layout and the flips and crops of before.
    let flip_crop = Augmentation { flip: true, crop: true, ..Augmentation::NONE };
    assert_eq!(flip_crop.step_transforms(&set, &idx, 7, 2, 3), flip_crop.batch_transforms(3, 7, 2, 3));
}

#[test]
fn checkpoint_keeps_the_augmentation_and_resume_continues_it_bit_for_bit() {
    let rich = Augmentation { flip: true, crop: false, rotate: 12.5, zoom: 0.2, contrast: 0.3, brightness: 0.1 };
    let dir = common::temp_dir("augment-geometry-resume");
    let straight = train(3, None, rich);
    assert!(!same_bits(&straight, &train(3, None, Augmentation { flip: true, ..Augmentation::NONE })), "the factors changed nothing");
    train(2, Some(&dir), rich);
    let (stored, resumed) = resume(&dir, 3);
    assert_eq!(stored, rich, "the checkpoint records the augmentation, factors exactly");
    assert!(same_bits(&straight, &resumed), "the resumed augmented run differs");
}

#[test]
fn cli_trains_with_the_factors_and_names_a_bad_item() {
    let dir = common::temp_dir("augment-geometry-cli");
    let arch = dir.join("tiny.arch");
    std::fs::write(&arch, "conv2d 4 3 relu\nmaxpool 2\nflatten\ndense 10 softmax\n").unwrap();
    let run = dir.join("run");
    let args = [
        "train",
        "--device",
        "cpu",
        "--dataset",
        "synthetic",
        "--arch",
        arch.to_str().unwrap(),
        "--limit-train",
        "200",
        "--limit-test",
        "100",
        "--epochs",
        "1",
    ];
    let (ok, _, err) = common::run_cli(&[&args[..], &["--out", run.to_str().unwrap(), "--augment", "zoom=0.1, rotate=15,brightness=0.2,flip"]].concat());
    assert!(ok, "{err}");
    assert!(err.contains("Augmentation: flip,rotate=15,zoom=0.1,brightness=0.2"), "{err}");
    let want = Augmentation { flip: true, rotate: 15.0, zoom: 0.1, brightness: 0.2, ..Augmentation::NONE };
    assert_eq!(checkpoint::load(&run.join("last.safetensors")).unwrap().meta.augment, want);
    let (ok, _, err) = common::run_cli(&[&args[..], &["--out", dir.join("bad").to_str().unwrap(), "--augment", "flip,zoom=1.5"]].concat());
    assert!(!ok && err.contains("'zoom=1.5'") && err.contains("[0.001, 1]") && !err.contains("panicked"), "{err}");
}

gpu_test! {
    fn an_affine_step_sends_its_indices_and_twelve_words_an_image(gpu: &GpuBackend) {
        const BATCH: usize = 8;
        let ds = generate(&SyntheticSpec { train: 64, test: 8, height: 12, width: 12, channels: 3, classes: 4 }, 2);
        let model = Model::new(&parse_arch(ARCH).unwrap(), ds.input_shape()).unwrap();
        let mut net = Network::new(gpu, model, BATCH, 11).unwrap();
        let images = net.backend.upload_image_set(&ds.train).unwrap();
        let order = gpu_cnn::train::epoch_order(ds.train.len(), 11, 0);
        let mut sent = Vec::new();
        for (step, batch) in order.chunks(BATCH).take(4).enumerate() {
            let augment = if step % 2 == 0 { ALL_ON } else { Augmentation { flip: true, crop: true, ..Augmentation::NONE } };
            let words = augment.step_transforms(&ds.train, batch, 1, 0, step);
            let before = net.backend.host_to_device_bytes();
            net.train_step_augmented(&images, batch, Some(&words[..])).unwrap();
            sent.push(net.backend.host_to_device_bytes() - before);
        }
        // Steps 0 and 1 warm the caches (uniforms, scratch). Then: BATCH u32 indices, the
        // transforms (12 words an image affine, 1 flip/crop) and Adam's 4 u32 scalars.
        assert_eq!(sent[2], (BATCH * 4 + BATCH * 4 * AFFINE_WORDS + 16) as u64, "{sent:?}");
        assert_eq!(sent[3], (BATCH * 4 + BATCH * 4 + 16) as u64, "{sent:?}");
    }
}
