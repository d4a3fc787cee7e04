//! `gpu-cnn predict`: classify image files with a checkpoint. Each file goes through the one
//! image pipeline (image_pipeline.rs) with the settings stored in the checkpoint, so it is
//! prepared exactly as the training images were; files are decoded in parallel on every core,
//! a batch at a time, and each batch's results are written as soon as it is done.

use crate::backend::gpu::DeviceRequest;
use crate::backend::Backend;
use crate::checkpoint;
use crate::classifier::Classifier;
use crate::image_pipeline::{self, Preprocessing};
use crate::network::Network;
use anyhow::{bail, Context, Result};
use rayon::prelude::*;
use serde_json::json;
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug)]
pub struct PredictArgs {
    pub checkpoint: PathBuf,
    /// Image files and folders of images (folders are searched recursively, in name order).
    pub inputs: Vec<PathBuf>,
    pub top: usize,
    pub batch_size: usize,
    /// One JSON object per line instead of text.
    pub json: bool,
    /// Below this top probability the answer is `unknown`.
    pub threshold: Option<f32>,
    /// Largest image accepted, in pixels [default: image_pipeline::DEFAULT_MAX_PIXELS].
    pub max_pixels: Option<u64>,
    /// Show a progress bar on stderr.
    pub progress: bool,
}

/// What a whole predict run did.
pub struct PredictSummary {
    pub predicted: usize,
    /// One line per file that could not be read, naming it.
    pub errors: Vec<String>,
}

/// One file's outcome: its class probabilities, or why it could not be read.
pub struct FilePrediction {
    pub file: PathBuf,
    pub probs: Result<Vec<f32>, String>,
}

/// The files to predict: files as given, folders expanded to their image files (hidden ones
/// skipped). Only real
/// folders are walked (a link to a folder is not followed, so link loops cannot recurse), and
/// only regular files (or links to them) are taken.
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
        let Ok(kind) = entry.file_type() else { continue };
        let path = entry.path();
        // Hidden files and folders are skipped, as training skips them: a folder copied from a
        // Mac holds `._photo.jpg` metadata files that are not images.
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        if kind.is_dir() {
            walk(&path, found);
        } else if image_pipeline::has_image_extension(&path) && (kind.is_file() || (kind.is_symlink() && path.metadata().is_ok_and(|m| m.is_file()))) {
            found.push(path);
        }
    }
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

/// Decodes `files` in parallel through the pipeline `p`, classifies the ones that decoded, and
/// reports each in input order.
pub fn predict_files(classifier: &Classifier, files: &[PathBuf], p: &Preprocessing) -> Result<Vec<FilePrediction>> {
    let loaded: Vec<Result<Vec<u8>, String>> = files.par_iter().map(|f| image_pipeline::load_image(f, p).map_err(|e| format!("{e:#}"))).collect();
    let pixels: Vec<u8> = loaded.iter().filter_map(|r| r.as_ref().ok()).flat_map(|v| v.iter().copied()).collect();
    let probs = if pixels.is_empty() { Vec::new() } else { classifier.probabilities(&pixels)? };
    let mut rows = probs.chunks(classifier.classes().max(1));
    let mut out = Vec::with_capacity(files.len());
    for (file, r) in files.iter().zip(loaded) {
        let probs = match r {
            Ok(_) => Ok(rows.next().context("the network returned fewer rows than images")?.to_vec()),
            Err(e) => Err(e),
        };
        out.push(FilePrediction { file: file.clone(), probs });
    }
    Ok(out)
}

/// The `k` most probable classes, most probable first (ties: lower index first).
pub fn top_k(probs: &[f32], k: usize) -> Vec<(usize, f32)> {
    let mut order: Vec<usize> = (0..probs.len()).collect();
    order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]).then(a.cmp(&b)));
    order.into_iter().take(k).map(|i| (i, probs[i])).collect()
}

/// A name safe to print on a terminal: control characters (escape sequences) and the
/// direction overrides that make text display reversed (`\u{202e}txt.exe`) become `?`.
pub fn printable(name: &str) -> String {
    name.chars().map(|c| if c.is_control() || is_bidi_control(c) { '?' } else { c }).collect()
}

/// Unicode's explicit bidirectional formatting characters (and the marks that act like them).
pub fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// An error message safe to print on a terminal: as `printable` line by line (file names and
/// checkpoint text can hold escape sequences), each line cut at `MAX_ERROR_LINE` characters
/// (an error may quote a hostile input's line whole).
pub fn printable_error(text: &str) -> String {
    text.split('\n')
        .map(|line| {
            let count = line.chars().count();
            let mut shown = printable(&line.chars().take(MAX_ERROR_LINE).collect::<String>());
            if count > MAX_ERROR_LINE {
                shown += &format!("... ({} more characters)", count - MAX_ERROR_LINE);
            }
            shown
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The longest line of an error printed whole.
const MAX_ERROR_LINE: usize = 1000;

/// The line (text or one JSON object) for one file's result.
fn format_row(r: &FilePrediction, names: &[String], args: &PredictArgs) -> String {
    let name = |i: usize| names.get(i).cloned().unwrap_or_else(|| format!("class {i}"));
    let file = r.file.display().to_string();
    match &r.probs {
        Ok(p) => {
            let top = top_k(p, args.top.max(1));
            let unknown = args.threshold.is_some_and(|t| top[0].1 < t);
            if args.json {
                let top_json: Vec<_> = top.iter().map(|&(i, p)| json!({"class": name(i), "index": i, "probability": p})).collect();
                let prediction = if unknown { "unknown".to_string() } else { name(top[0].0) };
                json!({"file": file, "prediction": prediction, "top": top_json}).to_string()
            } else {
                let list = top.iter().map(|&(i, p)| format!("{} {p:.4}", printable(&name(i)))).collect::<Vec<_>>().join(", ");
                if unknown {
                    format!("{}: unknown ({list})", printable(&file))
                } else {
                    format!("{}: {list}", printable(&file))
                }
            }
        }
        Err(e) => {
            if args.json {
                json!({"file": file, "error": e}).to_string()
            } else {
                String::new()
            }
        }
    }
}

/// Predicts every input a batch at a time, writing each batch's lines to `out` as soon as it
/// is done and each unreadable file's error to `err`, on the device `request` names: through
/// the library's [`Classifier`], as code would.
pub fn predict_on(request: DeviceRequest, args: &PredictArgs, out: &mut dyn Write, err: &mut dyn Write) -> Result<PredictSummary> {
    if let Some(t) = args.threshold {
        if !(0.0..=1.0).contains(&t) {
            bail!("--threshold must be a probability between 0 and 1, not {t}");
        }
    }
    let ck = checkpoint::load(&args.checkpoint)?;
    let mut p = ck.preprocessing().with_context(|| args.checkpoint.display().to_string())?;
    if let Some(max) = args.max_pixels {
        p.max_pixels = max;
    }
    let files = collect_inputs(&args.inputs);
    if files.is_empty() {
        bail!("no image files found in {}", args.inputs.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "));
    }
    // No buffers for more images than there are files.
    let batch = args.batch_size.clamp(1, files.len().clamp(1, 4096));
    let classifier = Classifier::from_checked(ck, request.into(), batch).with_context(|| format!("{}: at batch size {batch}", args.checkpoint.display()))?;
    let bar = if args.progress && files.len() > batch { indicatif::ProgressBar::new(files.len() as u64) } else { indicatif::ProgressBar::hidden() };
    if let Ok(style) = indicatif::ProgressStyle::with_template("{pos}/{len} images [{bar:30}] {per_sec} eta {eta}") {
        bar.set_style(style.progress_chars("=> "));
    }
    let mut summary = PredictSummary { predicted: 0, errors: Vec::new() };
    for chunk in files.chunks(batch) {
        let results = predict_files(&classifier, chunk, &p)?;
        bar.suspend(|| -> Result<()> {
            for r in &results {
                let line = format_row(r, classifier.class_names(), args);
                if !line.is_empty() {
                    writeln!(out, "{line}").context("cannot write the output")?;
                }
                match &r.probs {
                    Ok(_) => summary.predicted += 1,
                    Err(e) => {
                        // A message that cannot be written (stderr closed) must not stop the
                        // predictions on stdout; the summary still counts the error.
                        let _ = writeln!(err, "error: {}", printable(e));
                        summary.errors.push(e.clone());
                    }
                }
            }
            out.flush().context("cannot write the output")?;
            Ok(())
        })?;
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    Ok(summary)
}
