//! Pictures of a run, as a Keras notebook would draw them, and the page that shows them all:
//! predictions.png, curves.png, confusion.png (+ confusion.json) and report.html.

pub mod confusion;
pub mod draw;
pub mod grid;
pub mod html;
pub mod plot;

use crate::data::ImageSet;
use crate::history::EpochRecord;
use anyhow::{Context, Result};
use confusion::Confusion;
use image::RgbImage;
use std::path::Path;

/// The prediction grid shows this many test images, 5 by 5 as in the notebook.
pub const GRID_IMAGES: usize = 25;
pub const GRID_COLUMNS: usize = 5;
/// The seed of the images the grids show (the same sample on every run of the same data).
pub const PREVIEW_SEED: u64 = 0;

/// "1 epoch", "2 epochs", "3 classes".
pub fn plural(n: usize, noun: &str) -> String {
    match (n, noun.ends_with('s')) {
        (1, _) => format!("1 {noun}"),
        (_, true) => format!("{n} {noun}es"),
        _ => format!("{n} {noun}s"),
    }
}

/// PNG bytes of an image.
pub fn png_bytes(img: &RgbImage) -> Result<Vec<u8>> {
    let mut buf = std::io::Cursor::new(Vec::new());
    img.write_to(&mut buf, image::ImageFormat::Png).context("encoding a PNG")?;
    Ok(buf.into_inner())
}

fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    let path = dir.join(name);
    crate::atomic_file::write_atomically(&path, bytes)
}

/// The index of the largest of each row of `classes` probabilities.
pub fn argmax_rows(probs: &[f32], classes: usize) -> Vec<usize> {
    probs.chunks(classes).map(|row| row.iter().enumerate().fold(0, |best, (i, &p)| if p > row[best] { i } else { best })).collect()
}

/// What a run's report is made of.
pub struct RunReport<'a> {
    pub title: String,
    /// Name and value pairs shown first (data set, architecture, epochs, device, ...).
    pub settings: Vec<(String, String)>,
    pub class_names: &'a [String],
    pub history: &'a [EpochRecord],
    pub test: &'a ImageSet,
    /// Class probabilities (test.len(), classes) of the test images.
    pub probs: &'a [f32],
    /// The file of each test image (folder data sets): adds the top-losses grid.
    pub test_files: Option<&'a [std::path::PathBuf]>,
}

/// The top-losses grid shows this many images.
pub const TOP_LOSSES: usize = 10;

/// fastai's `plot_top_losses`: the test images the model disagrees with most (review.rs's
/// ranking), captioned with the file name and "predicted (p) / true".
pub fn top_losses_grid(test: &ImageSet, files: &[std::path::PathBuf], class_names: &[String], probs: &[f32]) -> RgbImage {
    let losses = crate::review::top_losses(files, &test.labels[..files.len()], probs, class_names.len());
    let cells: Vec<grid::Cell> = losses
        .iter()
        .take(TOP_LOSSES)
        .map(|l| {
            let index = files.iter().position(|f| *f == l.file).unwrap_or(0);
            let name = l.file.file_name().map_or_else(|| l.file.display().to_string(), |n| n.to_string_lossy().into_owned());
            let colour = if l.predicted == l.truth { draw::GREEN } else { draw::RED };
            let verdict = format!("{} {:.2} / {}", grid::class_name(class_names, l.predicted), l.p_predicted, grid::class_name(class_names, l.truth));
            grid::Cell { image: grid::to_rgb(test, index), caption: vec![(name, draw::BLACK), (verdict, colour)] }
        })
        .collect();
    grid::captioned_grid(&cells, GRID_COLUMNS)
}

/// Writes predictions.png, curves.png, confusion.png, confusion.json and report.html into
/// `dir`; returns the confusion matrix (for the log).
pub fn write_run_report(dir: &Path, r: &RunReport) -> Result<Confusion> {
    std::fs::create_dir_all(dir).with_context(|| format!("{}: cannot create", dir.display()))?;
    let predicted = argmax_rows(r.probs, r.class_names.len());
    let truth: Vec<usize> = r.test.labels.iter().map(|&l| l as usize).collect();
    let conf = Confusion::new(r.class_names, &truth, &predicted);
    let predictions_png = png_bytes(&grid::prediction_grid(r.test, r.class_names, &predicted, GRID_IMAGES, GRID_COLUMNS, PREVIEW_SEED))?;
    let curves_png = png_bytes(&plot::curves(r.history))?;
    let confusion_png = png_bytes(&confusion::picture(&conf))?;
    write_file(dir, "predictions.png", &predictions_png)?;
    write_file(dir, "curves.png", &curves_png)?;
    write_file(dir, "confusion.png", &confusion_png)?;
    write_file(dir, "confusion.json", serde_json::to_string_pretty(&conf.to_json())?.as_bytes())?;
    let top_losses_png = match r.test_files {
        Some(files) if files.len() == r.test.len() && !files.is_empty() => {
            let png = png_bytes(&top_losses_grid(r.test, files, r.class_names, r.probs))?;
            write_file(dir, "top_losses.png", &png)?;
            Some(png)
        }
        _ => None,
    };
    let page = html::Page {
        title: &r.title,
        settings: &r.settings,
        history: r.history,
        confusion: &conf,
        curves_png: &curves_png,
        confusion_png: &confusion_png,
        predictions_png: &predictions_png,
        top_losses_png: top_losses_png.as_deref(),
    };
    write_file(dir, "report.html", html::render(&page).as_bytes())?;
    Ok(conf)
}

/// Predicts every test image with `net` and writes the run's pictures and report.html into
/// `dir` (used after `train` and by `evaluate`). Returns the confusion matrix.
#[allow(clippy::too_many_arguments)]
pub fn report_network<B: crate::backend::Backend>(
    net: &mut crate::network::Network<B>,
    test: &ImageSet,
    test_files: Option<&[std::path::PathBuf]>,
    class_names: &[String],
    history: &[EpochRecord],
    title: String,
    settings: Vec<(String, String)>,
    dir: &Path,
) -> Result<Confusion> {
    let data = net.backend.upload_image_set(test).context("putting the test set on the device")?;
    let probs = crate::predict::probabilities(net, &data, test.len())?;
    write_run_report(dir, &RunReport { title, settings, class_names, history, test, probs: &probs, test_files })
}
