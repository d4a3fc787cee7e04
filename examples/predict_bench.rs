//! How fast `predict` sorts large product photos: generates 120 photo-like JPEGs of 2400x3200
//! (once), saves a seed-model checkpoint for 32x32x3 inputs, then classifies all of them:
//!
//! 1. "before": as `predict` did before the one image pipeline (kept here as the baseline): each
//!    file decoded in full by the image crate, one after another, converted to RGBA, composited,
//!    resized with the image crate's Triangle filter;
//! 2. "after": through `gpu_cnn::predict::predict_on`, as `gpu-cnn predict --device cpu` does:
//!    parallel decode, JPEG DCT-scaled decoding, SIMD resize, streamed output.
//!
//! Prints wall seconds and CPU seconds (user + sys, this process): the machine may be shared,
//! and CPU seconds show the work done whatever else runs.
//!
//! cargo run --release --example predict_bench -- [DIR] [FILES] [REPEATS]

use gpu_cnn::backend::cpu::CpuBackend;
use gpu_cnn::model::{seed_layers, Model};
use gpu_cnn::network::Network;
use gpu_cnn::rng::Rng;
use rayon::prelude::*;
use std::path::{Path, PathBuf};
use std::time::Instant;

fn photo(i: usize) -> image::RgbImage {
    let mut rng = Rng::derive(9, 0, i as u64);
    let (w, h) = (2400u32, 3200u32);
    let (cx, cy, r) = (rng.unit_f32() * w as f32, rng.unit_f32() * h as f32, 300.0 + rng.unit_f32() * 600.0);
    let base = [rng.unit_f32() * 200.0, rng.unit_f32() * 200.0, rng.unit_f32() * 200.0];
    image::RgbImage::from_fn(w, h, |x, y| {
        let (fx, fy) = (x as f32 / w as f32, y as f32 / h as f32);
        let inside = ((x as f32 - cx).powi(2) + (y as f32 - cy).powi(2)).sqrt() < r;
        let mut px = [0u8; 3];
        for (c, p) in px.iter_mut().enumerate() {
            let v = base[c] * (0.6 + 0.4 * fx) + 50.0 * fy + if inside { 70.0 } else { 0.0 } + rng.unit_f32() * 24.0;
            *p = v.clamp(0.0, 255.0) as u8;
        }
        image::Rgb(px)
    })
}

/// CPU seconds (user + sys) this process has used so far (Linux; 0 elsewhere).
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else { return 0.0 };
    // Fields after the ")" that ends the command name: utime is the 12th, stime the 13th.
    let rest = stat.rsplit(')').next().unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// The pre-pipeline predict preparation, kept as the baseline: full decode, RGBA, alpha over
/// black, Triangle resize.
fn old_image_for_model(path: &Path) -> anyhow::Result<Vec<u8>> {
    let img = image::ImageReader::open(path)?.with_guessed_format()?.decode()?;
    let rgba = img.to_rgba8();
    let over_black = image::RgbImage::from_fn(rgba.width(), rgba.height(), |x, y| {
        let p = rgba.get_pixel(x, y).0;
        let a = p[3] as u32;
        image::Rgb([0, 1, 2].map(|i| ((p[i] as u32 * a + 127) / 255) as u8))
    });
    Ok(image::imageops::resize(&over_black, 32, 32, image::imageops::FilterType::Triangle).into_raw())
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let dir = args.get(1).map(PathBuf::from).unwrap_or_else(|| std::env::temp_dir().join("gpu-cnn-predict-bench"));
    let count: usize = args.get(2).map_or(Ok(120), |s| s.parse())?;
    let repeats: usize = args.get(3).map_or(Ok(1), |s| s.parse())?;
    let photos = dir.join("photos");
    std::fs::create_dir_all(&photos)?;
    let t = Instant::now();
    let files: Vec<PathBuf> = (0..count)
        .into_par_iter()
        .map(|i| {
            let path = photos.join(format!("photo{i:04}.jpg"));
            if !path.exists() {
                photo(i).save(&path).expect("writing a photo");
            }
            path
        })
        .collect();
    let bytes: u64 = files.iter().map(|f| f.metadata().map_or(0, |m| m.len())).sum();
    eprintln!("{count} JPEGs of 2400x3200 ready in {:.1} s ({:.1} MB each)", t.elapsed().as_secs_f64(), bytes as f64 / count as f64 / 1e6);

    // A checkpoint of the seed model (random weights: speed does not depend on them).
    let ck = dir.join("seed.safetensors");
    let model = Model::new(&seed_layers(), (32, 32, 3))?;
    let net = Network::new(CpuBackend::new(), model, 64, 0)?;
    let meta = gpu_cnn::checkpoint::CheckpointMeta {
        arch: gpu_cnn::model::format_arch(&seed_layers()),
        input: (32, 32, 3),
        class_names: (0..10).map(|i| format!("class {i}")).collect(),
        dataset: "bench".into(),
        epoch: 0,
        step: 0,
        seed: 0,
        batch_size: 64,
        learning_rate: 1e-3,
        optimizer: gpu_cnn::optimizer::Optimizer::default(),
        label_smoothing: 0.0,
        augment: gpu_cnn::augment::Augmentation::NONE,
        history: vec![],
        preprocessing: Some(gpu_cnn::image_pipeline::Preprocessing::new((32, 32, 3))?),
        data_source: None,
        class_weights: None,
        recipe: Default::default(),
    };
    gpu_cnn::checkpoint::save(&ck, &meta, &net.weights()?)?;
    println!("machine: {}", gpu_cnn::system_info::machine_name());
    for round in 0..repeats {
        // Before: sequential full decodes, then one forward pass per 64 images.
        let (t, cpu) = (Instant::now(), cpu_seconds());
        let mut before_net = Network::new(CpuBackend::new(), Model::new(&seed_layers(), (32, 32, 3))?, 64, 0)?;
        let mut pixels = Vec::new();
        for f in &files {
            pixels.extend(old_image_for_model(f)?);
        }
        let labels = vec![0u8; files.len()];
        let data = gpu_cnn::backend::Backend::upload_images(&before_net.backend, &pixels, &labels, 32 * 32 * 3)?;
        gpu_cnn::predict::probabilities(&mut before_net, &data, files.len())?;
        let (before_wall, before_cpu) = (t.elapsed().as_secs_f64(), cpu_seconds() - cpu);

        // After: the library call `gpu-cnn predict --device cpu` makes.
        let (t, cpu) = (Instant::now(), cpu_seconds());
        let args = gpu_cnn::predict::PredictArgs {
            checkpoint: ck.clone(),
            inputs: vec![photos.clone()],
            top: 3,
            batch_size: 64,
            json: false,
            threshold: None,
            max_pixels: None,
            progress: false,
        };
        let summary = gpu_cnn::predict::predict_on(gpu_cnn::backend::gpu::DeviceRequest::Cpu, &args, &mut std::io::sink(), &mut std::io::sink())?;
        let (after_wall, after_cpu) = (t.elapsed().as_secs_f64(), cpu_seconds() - cpu);
        assert_eq!(summary.predicted, count);
        println!(
            "round {}: before {before_wall:.2} s wall, {before_cpu:.2} s CPU | after {after_wall:.2} s wall, {after_cpu:.2} s CPU | {:.1}x faster (wall), {:.1}x less CPU | {:.0} images/s after",
            round + 1,
            before_wall / after_wall,
            before_cpu / after_cpu.max(1e-9),
            count as f64 / after_wall
        );
    }
    Ok(())
}
