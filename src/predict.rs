//! `gpu-cnn predict`: classify image files with a checkpoint. Each file is decoded (JPEG, PNG,
//! WebP, BMP, GIF), converted to the model's channels (RGB; or grey with Rec. 709 luma weights;
//! transparency composited over black), resized to the model's input with a Triangle
//! (bilinear) filter, ignoring the aspect ratio as Keras's `load_img(target_size=)` does, then
//! run through the network in batches exactly as training data is (u8, scaled by 1/255).

use crate::backend::Backend;
use crate::checkpoint;
use crate::network::Network;
use anyhow::{Context, Result};
use image::{imageops::FilterType, DynamicImage};
use serde_json::json;
use std::path::{Path, PathBuf};

/// File endings taken from folders (a file named on the command line is tried whatever its name).
pub const IMAGE_EXTENSIONS: [&str; 7] = ["jpg", "jpeg", "png", "webp", "bmp", "gif", "jfif"];

#[derive(Clone, Debug)]
pub struct PredictArgs {
    pub checkpoint: PathBuf,
    /// Image files and folders of images (folders are searched recursively, in name order).
    pub inputs: Vec<PathBuf>,
    pub top: usize,
    pub batch_size: usize,
    pub json: bool,
}

/// What predict prints: the results on stdout and one line per file that failed.
pub struct PredictOutput {
    pub stdout: String,
    pub errors: Vec<String>,
}

/// One file's outcome: its class probabilities, or why it could not be read.
pub struct FilePrediction {
    pub file: PathBuf,
    pub probs: Result<Vec<f32>, String>,
}

/// The files to predict: files as given, folders expanded to their image files.
pub fn collect_inputs(inputs: &[PathBuf]) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for input in inputs {
        if input.is_dir() {
            let mut found = Vec::new();
            walk(input, &mut found);
            found.sort();
            files.extend(found);
        } else {
            files.push(input.clone());
        }
    }
    files
}

fn walk(dir: &Path, found: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            walk(&path, found);
        } else if path.extension().and_then(|e| e.to_str()).is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str())) {
            found.push(path);
        }
    }
}

/// An image as the model takes it: (h, w, c) u8, channels last.
pub fn image_for_model(img: &DynamicImage, (h, w, c): (usize, usize, usize)) -> Vec<u8> {
    let rgba = img.to_rgba8();
    // Composite over black so transparent pixels add nothing (as on Fashion-MNIST's background).
    let over_black = image::RgbImage::from_fn(rgba.width(), rgba.height(), |x, y| {
        let p = rgba.get_pixel(x, y).0;
        let a = p[3] as u32;
        image::Rgb([0, 1, 2].map(|i| ((p[i] as u32 * a + 127) / 255) as u8))
    });
    let resized = image::imageops::resize(&over_black, w as u32, h as u32, FilterType::Triangle);
    if c == 1 {
        DynamicImage::ImageRgb8(resized).to_luma8().into_raw()
    } else {
        resized.into_raw()
    }
}

/// Reads and decodes a file (by content, not by name) and prepares it for the model.
pub fn load_for_model(path: &Path, input: (usize, usize, usize)) -> Result<Vec<u8>> {
    let reader = image::ImageReader::open(path).with_context(|| "cannot open")?.with_guessed_format().context("cannot read")?;
    let img = reader.decode().context("cannot decode the image")?;
    Ok(image_for_model(&img, input))
}

/// Class probabilities (count, classes) of the first `count` images of `data`, in batches of
/// the network's maximum batch.
pub fn probabilities<B: Backend>(net: &mut Network<B>, data: &B::Images, count: usize) -> Result<Vec<f32>> {
    let all: Vec<u32> = (0..count as u32).collect();
    let mut probs = Vec::with_capacity(count * net.classes());
    for chunk in all.chunks(net.max_batch) {
        probs.extend(net.predict_step(data, chunk)?);
    }
    Ok(probs)
}

/// Decodes every file, predicts the ones that decoded, and reports each in input order.
pub fn predict_files<B: Backend>(net: &mut Network<B>, files: &[PathBuf]) -> Result<Vec<FilePrediction>> {
    let input = net.model.input;
    let loaded: Vec<Result<Vec<u8>, String>> = files.iter().map(|f| load_for_model(f, input).map_err(|e| format!("{e:#}"))).collect();
    let good: Vec<&Vec<u8>> = loaded.iter().filter_map(|r| r.as_ref().ok()).collect();
    let mut probs = Vec::new();
    if !good.is_empty() {
        let pixels: Vec<u8> = good.iter().flat_map(|v| v.iter().copied()).collect();
        let labels = vec![0u8; good.len()];
        let data = net.backend.upload_images(&pixels, &labels, net.model.input_len())?;
        probs = probabilities(net, &data, good.len())?;
    }
    let classes = net.classes();
    let mut rows = probs.chunks(classes);
    Ok(files
        .iter()
        .zip(loaded)
        .map(|(file, r)| FilePrediction { file: file.clone(), probs: r.map(|_| rows.next().expect("one row per decoded image").to_vec()) })
        .collect())
}

/// The `k` most probable classes, most probable first (ties: lower index first).
pub fn top_k(probs: &[f32], k: usize) -> Vec<(usize, f32)> {
    let mut order: Vec<usize> = (0..probs.len()).collect();
    order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]).then(a.cmp(&b)));
    order.into_iter().take(k).map(|i| (i, probs[i])).collect()
}

pub fn predict_on<B: Backend>(backend: B, args: &PredictArgs) -> Result<PredictOutput> {
    let ck = checkpoint::load(&args.checkpoint)?;
    let model = ck.model().with_context(|| format!("{}: its architecture", args.checkpoint.display()))?;
    let files = collect_inputs(&args.inputs);
    if files.is_empty() {
        anyhow::bail!("no image files found in {}", args.inputs.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "));
    }
    let mut net = Network::new(backend, model, args.batch_size.max(1), 0)?;
    net.load_state(&ck.tensors, false).with_context(|| format!("{}: does not match its architecture", args.checkpoint.display()))?;
    let names = &ck.meta.class_names;
    let name = |i: usize| names.get(i).cloned().unwrap_or_else(|| format!("class {i}"));
    let results = predict_files(&mut net, &files)?;
    let mut errors = Vec::new();
    let mut lines = Vec::new();
    let mut json_rows = Vec::new();
    for r in &results {
        let file = r.file.display().to_string();
        match &r.probs {
            Ok(p) => {
                let top = top_k(p, args.top.max(1));
                lines.push(format!("{file}: {}", top.iter().map(|&(i, p)| format!("{} {p:.4}", name(i))).collect::<Vec<_>>().join(", ")));
                let top_json: Vec<_> = top.iter().map(|&(i, p)| json!({"class": name(i), "index": i, "probability": p})).collect();
                json_rows.push(json!({"file": file, "top": top_json}));
            }
            Err(e) => {
                errors.push(format!("{file}: {e}"));
                json_rows.push(json!({"file": file, "error": e}));
            }
        }
    }
    let stdout = if args.json {
        serde_json::to_string_pretty(&json!({"checkpoint": args.checkpoint.display().to_string(), "device": net.backend.describe(), "predictions": json_rows}))?
    } else {
        lines.join("\n")
    };
    Ok(PredictOutput { stdout, errors })
}
