//! Seeing results: `predict` on real image files, `show`, the pictures and report.html that
//! `train` and `evaluate` write, and the report rendered by headless Chromium.

mod common;
use common::{run_cli, temp_dir};
use gpu_cnn::backend::{cpu::CpuBackend, Backend};
use gpu_cnn::checkpoint::{self, CheckpointMeta};
use gpu_cnn::network::{HostTensor, Network};
use gpu_cnn::report::{grid, plot};
use image::RgbImage;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// One small run shared by the tests: 2 epochs on 200 synthetic images, 100 test images.
fn trained_run() -> &'static PathBuf {
    static RUN: OnceLock<PathBuf> = OnceLock::new();
    RUN.get_or_init(|| {
        let run = temp_dir("pictures-run").join("run");
        let args = [
            "train",
            "--dataset",
            "synthetic",
            "--limit-train",
            "200",
            "--limit-test",
            "100",
            "--epochs",
            "2",
            "--device",
            "cpu",
            "--out",
            run.to_str().unwrap(),
        ];
        let (ok, _, err) = run_cli(&args);
        assert!(ok, "{err}");
        assert!(err.contains("Confusion matrix") && err.contains("precision") && err.contains("report.html"), "the log lacks the confusion matrix: {err}");
        run
    })
}

/// A picture is "not blank" when it has several colours (curves.png has 6: white, black, two
/// greys, blue, orange) and more than 2% of its pixels are not white.
fn assert_not_blank(img: &RgbImage, what: &str) {
    let colours: std::collections::HashSet<[u8; 3]> = img.pixels().map(|p| p.0).collect();
    let inked = img.pixels().filter(|p| p.0 != [255, 255, 255]).count() as f64 / (img.width() * img.height()) as f64;
    assert!(colours.len() >= 5, "{what}: only {} colours", colours.len());
    assert!(inked > 0.02, "{what}: only {:.1}% of pixels are not white", inked * 100.0);
}

fn has_colour(img: &RgbImage, c: [u8; 3]) -> bool {
    img.pixels().any(|p| p.0 == c)
}

fn open_rgb(path: &Path) -> RgbImage {
    image::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).to_rgb8()
}

#[test]
fn train_writes_legible_pictures_of_the_expected_size() {
    let run = trained_run();
    let predictions = open_rgb(&run.join("predictions.png"));
    assert_eq!(predictions.dimensions(), grid::grid_size(25, 5));
    assert_eq!(predictions.dimensions(), (5 * 192, 5 * 220), "5x5 cells of 192x220");
    assert_not_blank(&predictions, "predictions.png");
    // Every caption is green (right) or red (wrong).
    assert!(has_colour(&predictions, [0, 128, 0]) || has_colour(&predictions, [200, 0, 0]), "no green or red captions");
    let curves = open_rgb(&run.join("curves.png"));
    assert_eq!(curves.dimensions(), plot::CURVES_SIZE);
    assert_not_blank(&curves, "curves.png");
    assert!(has_colour(&curves, [31, 119, 180]) && has_colour(&curves, [255, 127, 14]), "train (blue) and validation (orange) lines");
    let confusion = open_rgb(&run.join("confusion.png"));
    let names: Vec<String> = (0..10).map(|i| format!("class {i}")).collect();
    assert_eq!(confusion.dimensions(), gpu_cnn::report::confusion::picture_size(&names));
    assert_not_blank(&confusion, "confusion.png");
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(run.join("confusion.json")).unwrap()).unwrap();
    let matrix: Vec<Vec<u64>> = serde_json::from_value(json["matrix"].clone()).unwrap();
    assert_eq!(matrix.len(), 10);
    assert_eq!(matrix.iter().flatten().sum::<u64>(), 100, "every test image counted once");
    // The diagonal agrees with the run's last validation accuracy.
    let history: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(run.join("history.json")).unwrap()).unwrap();
    let correct: u64 = (0..10).map(|i| matrix[i][i]).sum();
    assert!((correct as f64 / 100.0 - history["val_accuracy"][1].as_f64().unwrap()).abs() < 1e-9);
}

#[test]
fn show_writes_a_5x5_grid_of_named_training_images() {
    let dir = temp_dir("pictures-show");
    let out = dir.join("grid.png");
    let (ok, _, err) = run_cli(&["show", "--dataset", "synthetic", "--out", out.to_str().unwrap()]);
    assert!(ok, "{err}");
    let img = open_rgb(&out);
    assert_eq!(img.dimensions(), grid::grid_size(25, 5));
    assert_not_blank(&img, "grid.png");
    assert!(has_colour(&img, [0, 0, 0]), "black class names");
}

#[test]
fn evaluate_prints_per_class_metrics_and_writes_the_report_to_out() {
    let run = trained_run();
    let out = temp_dir("pictures-eval");
    let ck = run.join("last.safetensors");
    let (ok, text, err) =
        run_cli(&["evaluate", "--checkpoint", ck.to_str().unwrap(), "--limit-test", "100", "--device", "cpu", "--out", out.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(text.contains("precision") && text.contains("recall") && text.contains("Confusion matrix") && text.contains("class 9"), "{text}");
    for f in ["predictions.png", "curves.png", "confusion.png", "confusion.json", "report.html"] {
        assert!(out.join(f).exists(), "{f} missing from --out");
    }
    let (ok, json, err) =
        run_cli(&["evaluate", "--checkpoint", ck.to_str().unwrap(), "--limit-test", "100", "--device", "cpu", "--out", out.to_str().unwrap(), "--json"]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let per_class = v["confusion"]["per_class"].as_array().unwrap();
    assert_eq!(per_class.len(), 10);
    let correct = v["confusion"]["correct"].as_f64().unwrap();
    assert!((correct / 100.0 - v["accuracy"].as_f64().unwrap()).abs() < 1e-9, "confusion diagonal vs accuracy");
}

/// Writes test image 0 of the synthetic set in several forms; returns (its u8 pixels, files).
fn write_inputs(dir: &Path) -> (Vec<u8>, Vec<PathBuf>) {
    let ds = gpu_cnn::data::load(gpu_cnn::data::DatasetKind::Synthetic, None, 0).unwrap();
    let rgb = grid::to_rgb(&ds.test, 0);
    let png = dir.join("a.png");
    rgb.save(&png).unwrap();
    let jpeg = dir.join("b.jpg");
    rgb.save(&jpeg).unwrap();
    // A grey image of another size (resized and turned into RGB on the way in).
    let grey = dir.join("c-grey.png");
    image::GrayImage::from_fn(48, 40, |x, y| image::Luma([((x * 5 + y * 3) % 256) as u8])).save(&grey).unwrap();
    let rgba = dir.join("d-rgba.png");
    image::RgbaImage::from_fn(64, 64, |x, y| image::Rgba([200, (x * 4) as u8, (y * 4) as u8, if x < 32 { 255 } else { 0 }])).save(&rgba).unwrap();
    (ds.test.image(0).to_vec(), vec![png, jpeg, grey, rgba])
}

#[test]
fn predict_reads_png_jpeg_grey_and_rgba_files_and_reports_broken_ones() {
    let run = trained_run();
    let ck = run.join("last.safetensors");
    let dir = temp_dir("pictures-predict");
    let (pixels, files) = write_inputs(&dir);
    let broken = dir.join("e-broken.png");
    std::fs::write(&broken, b"\x89PNG\r\n\x1a\n not really a png").unwrap();
    // The folder holds all five; a folder and an explicit file may be mixed.
    // --batch-size 3: the four good images take two forward passes.
    let (ok, out, err) =
        run_cli(&["predict", "--checkpoint", ck.to_str().unwrap(), "--device", "cpu", "--top", "3", "--batch-size", "3", "--json", dir.to_str().unwrap()]);
    assert!(!ok, "a file that does not decode makes the exit code non-zero");
    assert!(err.contains("e-broken.png") && !err.contains("panicked"), "{err}");
    // JSON Lines: one object per file, streamed batch by batch, in input order.
    let rows: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).expect("one JSON object per line even when a file fails")).collect();
    assert_eq!(rows.len(), 5, "{out}");
    for (row, f) in rows.iter().zip(files.iter().chain([&broken])) {
        assert_eq!(row["file"].as_str().unwrap(), f.to_str().unwrap(), "folder order is by name");
    }
    assert!(rows[4]["error"].as_str().unwrap().contains("decode"), "{out}");
    for row in &rows[..4] {
        let top = row["top"].as_array().unwrap();
        assert_eq!(top.len(), 3);
        let p: Vec<f64> = top.iter().map(|t| t["probability"].as_f64().unwrap()).collect();
        assert!(p[0] >= p[1] && p[1] >= p[2] && p.iter().sum::<f64>() <= 1.0 + 1e-5, "{row}");
        assert!(top[0]["class"].as_str().unwrap().starts_with("class "), "class names from the checkpoint");
    }
    // The PNG of a test image is predicted exactly as the network predicts that image from the
    // data set (same pixels: no resize, same /255 scaling). Tolerance 1e-6: the same float ops.
    let ckpt = checkpoint::load(&ck).unwrap();
    let mut net = Network::new(CpuBackend::new(), ckpt.model().unwrap(), 1, 0).unwrap();
    net.load_state(&ckpt.tensors, false).unwrap();
    let data = net.backend.upload_images(&pixels, &[0], pixels.len()).unwrap();
    let probs = net.predict_step(&data, &[0]).unwrap();
    let best = (0..probs.len()).max_by(|&a, &b| probs[a].total_cmp(&probs[b])).unwrap();
    assert_eq!(rows[0]["top"][0]["index"].as_u64().unwrap() as usize, best);
    assert!((rows[0]["top"][0]["probability"].as_f64().unwrap() - probs[best] as f64).abs() < 1e-6);
    // JPEG is lossy: the same class is expected, not the same probability.
    assert_eq!(rows[1]["top"][0]["index"], rows[0]["top"][0]["index"], "JPEG copy of the same image");
    // Text output: one line per good file, and success when every file decodes.
    let (ok, out, err) =
        run_cli(&["predict", "--checkpoint", ck.to_str().unwrap(), "--device", "cpu", "--top", "2", files[2].to_str().unwrap(), files[3].to_str().unwrap()]);
    assert!(ok, "{err}");
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(out.lines().all(|l| l.matches("class ").count() == 2), "{out}");
}

#[test]
fn predict_output_is_stable_for_a_known_checkpoint_and_input() {
    let dir = temp_dir("pictures-known");
    // flatten -> dense 3 softmax on 2x2 grey images, with weights chosen by hand.
    let kernel = vec![1.0, 0.0, -1.0, 0.0, 2.0, 0.0, -1.0, 1.0, 0.5, 0.5, -0.5, 1.0];
    let bias = vec![0.1, -0.2, 0.3];
    let meta = CheckpointMeta {
        dataset: "hand-made".into(),
        batch_size: 1,
        ..common::checkpoint_meta("flatten\ndense 3 softmax\n", (2, 2, 1), &["cat", "dog", "bird"])
    };
    let tensors = [
        HostTensor { name: "dense.kernel".into(), dims: vec![4, 3], data: kernel.clone() },
        HostTensor { name: "dense.bias".into(), dims: vec![3], data: bias.clone() },
    ];
    let ck = dir.join("known.safetensors");
    checkpoint::save(&ck, &meta, &tensors).unwrap();
    let pixels = [0u8, 51, 153, 255];
    let img = dir.join("known.png");
    image::GrayImage::from_raw(2, 2, pixels.to_vec()).unwrap().save(&img).unwrap();
    // The expected probabilities, computed here independently: softmax(x W + b), x = pixels / 255.
    let logits: Vec<f64> = (0..3).map(|j| (0..4).map(|i| pixels[i] as f64 / 255.0 * kernel[i * 3 + j] as f64).sum::<f64>() + bias[j] as f64).collect();
    let sum: f64 = logits.iter().map(|l| l.exp()).sum();
    let expected: Vec<f64> = logits.iter().map(|l| l.exp() / sum).collect();
    let (ok, out, err) = run_cli(&["predict", "--checkpoint", ck.to_str().unwrap(), "--device", "cpu", "--json", img.to_str().unwrap()]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim_end()).unwrap();
    assert_eq!(v["prediction"], "bird");
    let top = v["top"].as_array().unwrap();
    let names: Vec<&str> = top.iter().map(|t| t["class"].as_str().unwrap()).collect();
    assert_eq!(names, ["bird", "dog", "cat"]);
    for t in top {
        let i = t["index"].as_u64().unwrap() as usize;
        assert!((t["probability"].as_f64().unwrap() - expected[i]).abs() < 1e-6, "{t} vs {}", expected[i]);
    }
    // The text form, exactly (golden), and the same on a second run.
    let (ok, text, _) = run_cli(&["predict", "--checkpoint", ck.to_str().unwrap(), "--device", "cpu", img.to_str().unwrap()]);
    assert!(ok);
    assert_eq!(text, format!("{}: bird 0.6782, dog 0.1848, cat 0.1369\n", img.display()));
    let (_, again, _) = run_cli(&["predict", "--checkpoint", ck.to_str().unwrap(), "--device", "cpu", img.to_str().unwrap()]);
    assert_eq!(text, again);
    // --threshold: below it the answer is `unknown` (the scores still shown); at or above, the class.
    let (ok, text, _) =
        run_cli(&["predict", "--checkpoint", ck.to_str().unwrap(), "--device", "cpu", "--threshold", "0.7", "--top", "1", img.to_str().unwrap()]);
    assert!(ok);
    assert_eq!(text, format!("{}: unknown (bird 0.6782)\n", img.display()));
    let (_, text, _) =
        run_cli(&["predict", "--checkpoint", ck.to_str().unwrap(), "--device", "cpu", "--threshold", "0.6", "--top", "1", "--json", img.to_str().unwrap()]);
    assert_eq!(serde_json::from_str::<serde_json::Value>(text.trim_end()).unwrap()["prediction"], "bird");
    let (ok, _, err) = run_cli(&["predict", "--checkpoint", ck.to_str().unwrap(), "--device", "cpu", "--threshold", "1.5", img.to_str().unwrap()]);
    assert!(!ok && err.contains("--threshold"), "{err}");
    // Class names from a checkpoint are printed without control characters (no terminal escapes).
    let hostile = CheckpointMeta { class_names: vec!["cat".into(), "dog".into(), "bi\x1b[2Jrd".into()], ..meta.clone() };
    let ck2 = dir.join("hostile.safetensors");
    checkpoint::save(&ck2, &hostile, &tensors).unwrap();
    let (ok, text, _) = run_cli(&["predict", "--checkpoint", ck2.to_str().unwrap(), "--device", "cpu", "--top", "1", img.to_str().unwrap()]);
    assert!(ok && !text.contains('\x1b') && text.contains("bi?[2Jrd"), "{text:?}");
}

/// Runs headless Chromium on a page; returns (the DOM after load, Chromium's log).
fn chromium(page: &Path, extra: &[&str]) -> (String, String) {
    let profile = temp_dir(&format!("chromium-profile-{}", page.file_stem().unwrap().to_string_lossy()));
    let url = format!("file://{}", page.canonicalize().unwrap().display());
    let out = std::process::Command::new("chromium")
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking"])
        .args(["--disable-component-update", "--disable-sync", "--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(url)
        .output()
        .expect("Chromium is needed for this test: apt-get install chromium");
    assert!(out.status.success(), "chromium failed: {}", String::from_utf8_lossy(&out.stderr));
    (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Appended to a copy of a page: after load, counts the images that decoded and shows the
/// count in the title (read back from the dumped DOM); a broken image is a console error.
const IMAGE_CHECK: &str = "<script>window.addEventListener('load', () => { const imgs = [...document.images]; \
    const ok = imgs.filter(i => i.complete && i.naturalWidth > 0); \
    imgs.filter(i => !(i.complete && i.naturalWidth > 0)).forEach(i => console.error('broken image: ' + i.alt)); \
    document.title = 'images ok: ' + ok.length + '/' + imgs.length; });</script>";

fn console_errors(log: &str) -> Vec<&str> {
    log.lines().filter(|l| l.contains("CONSOLE") || l.contains("Uncaught")).collect()
}

#[test]
fn report_html_renders_in_headless_chromium_with_its_images() {
    let run = trained_run();
    let html = std::fs::read_to_string(run.join("report.html")).unwrap();
    assert!(!html.contains("http://") && !html.contains("https://") && !html.contains("<script"), "self-contained, no scripts");
    for needle in ["Settings", "synthetic", "Conv2D", "class 9", "<table id=\"history\">", "data:image/png;base64,"] {
        assert!(html.contains(needle), "report.html lacks {needle}");
    }
    assert_eq!(html.matches("<img ").count(), 3, "curves, confusion matrix, predictions");
    let dir = temp_dir("pictures-chromium");
    let checked = dir.join("report.html");
    std::fs::write(&checked, html.replace("</body>", &format!("{IMAGE_CHECK}</body>"))).unwrap();
    let (dom, log) = chromium(&checked, &["--dump-dom"]);
    assert!(dom.contains("<title>images ok: 3/3</title>"), "images did not all load: {}", &dom[..dom.len().min(400)]);
    assert!(console_errors(&log).is_empty(), "console errors: {:?}", console_errors(&log));
    let shot = dir.join("report.png");
    chromium(&run.join("report.html"), &["--window-size=1200,1600", &format!("--screenshot={}", shot.display())]);
    assert_not_blank(&open_rgb(&shot), "the screenshot of report.html");
    // The checks can fail: a broken image and a script error are both caught.
    let bad = dir.join("bad.html");
    std::fs::write(&bad, format!("<!DOCTYPE html><html><head><title>t</title></head><body><img alt=\"x\" src=\"data:image/png;base64,AAAA\"><script>missing();</script>{IMAGE_CHECK}</body></html>")).unwrap();
    let (dom, log) = chromium(&bad, &["--dump-dom"]);
    assert!(dom.contains("images ok: 0/1"), "{dom}");
    assert!(console_errors(&log).iter().any(|l| l.contains("missing is not defined")), "{log}");
}

#[test]
fn help_explains_predict_and_show() {
    let (ok, out, _) = run_cli(&["predict", "--help"]);
    for needle in ["--checkpoint", "--top", "--json", "--device", "--batch-size", "--threshold", "IMAGE_OR_DIR"] {
        assert!(ok && out.contains(needle), "predict --help lacks {needle}: {out}");
    }
    let (ok, out, _) = run_cli(&["show", "--help"]);
    assert!(ok && out.contains("--dataset") && out.contains("--out"), "{out}");
}

#[test]
fn grid_captions_fit_and_long_names_are_clipped() {
    let long = "a very long class name indeed";
    assert!(gpu_cnn::report::draw::text_width(&gpu_cnn::report::draw::clip_text(long, grid::CELL_WIDTH - 4, 1), 1) <= grid::CELL_WIDTH - 4);
    assert_eq!(gpu_cnn::report::draw::fitting_scale("automobile", grid::CELL_WIDTH - 4, 2), 2);
}

fn record(epoch: usize, loss: f64, val_loss: f64, acc: f64) -> gpu_cnn::history::EpochRecord {
    gpu_cnn::history::EpochRecord { epoch, loss, accuracy: acc, val_loss, val_accuracy: acc, seconds: 1.0, learning_rate: None }
}

/// Whether any pixel inside (x, y, w, h), borders excluded, has `colour`.
fn colour_inside(img: &RgbImage, (x, y, w, h): (u32, u32, u32, u32), colour: image::Rgb<u8>) -> bool {
    (y + 1..y + h).any(|py| (x + 1..x + w).any(|px| *img.get_pixel(px, py) == colour))
}

#[test]
fn legends_sit_outside_the_plotted_area() {
    use gpu_cnn::report::draw::{BLUE, ORANGE};
    // No finite values: no curve is drawn, so any blue or orange pixel is the legend's.
    let history = [record(1, f64::NAN, f64::NAN, f64::NAN), record(2, f64::NAN, f64::NAN, f64::NAN)];
    let img = plot::curves(&history);
    let panel_w = plot::CURVES_SIZE.0 / 2;
    for x0 in [0, panel_w] {
        let rect = plot::plot_rect(x0);
        assert!(!colour_inside(&img, rect, BLUE) && !colour_inside(&img, rect, ORANGE), "legend pixels inside the plot of the panel at x={x0}");
        let panel = image::imageops::crop_imm(&img, x0, 0, panel_w, plot::CURVES_SIZE.1).to_image();
        assert!(has_colour(&panel, BLUE.0) && has_colour(&panel, ORANGE.0), "the legend is drawn in the panel at x={x0}");
    }
}

#[test]
fn a_diverged_loss_gets_a_log_axis_and_stays_readable() {
    // Spanning 1000x (2000 down to 2): log scale over whole decades.
    let diverged = [2000.0, 40.0, 2.0, 2.5];
    assert_eq!(plot::loss_axis(&diverged), plot::Axis::Log { lo: 0, hi: 4 });
    // Under 100x (and non-finite values ignored): linear from 0 to a round number.
    assert_eq!(plot::loss_axis(&[2.3, 0.5, 0.04, f64::INFINITY]), plot::Axis::Linear { hi: 2.5 });
    // On the log axis the late epochs (2.0 vs 2.5 after 2000) are visibly apart: their points
    // land more than 5 pixel rows apart, where a linear axis would put both in the same row.
    let history: Vec<_> = diverged.iter().enumerate().map(|(i, &l)| record(i + 1, l, l, 0.5)).collect();
    let img = plot::curves(&history);
    let (x, y, w, h) = plot::plot_rect(0);
    // val_loss (orange) is drawn last, over the equal train loss.
    let rows: Vec<u32> = (y + 1..y + h).filter(|&py| (x + w * 2 / 3..x + w).any(|px| *img.get_pixel(px, py) == gpu_cnn::report::draw::ORANGE)).collect();
    let spread = rows.last().unwrap() - rows.first().unwrap();
    assert!(spread > 5, "the last epochs' points span {spread} rows");
}

#[test]
fn prediction_grid_labels_are_all_one_size() {
    use gpu_cnn::report::draw::{GREEN, RED};
    let tile = RgbImage::from_pixel(4, 4, image::Rgb([128, 128, 128]));
    let cells = vec![
        grid::Cell { image: tile.clone(), caption: vec![("bag".into(), GREEN)] },
        grid::Cell { image: tile, caption: vec![("a-much-longer-class-name".into(), RED)] },
    ];
    // The long name only fits at scale 1, so every label is drawn at 1.
    assert_eq!(grid::caption_scale(&cells), 1);
    let img = grid::captioned_grid(&cells, 2);
    let green_rows: Vec<u32> = (0..img.height()).filter(|&y| (0..grid::CELL_WIDTH).any(|x| *img.get_pixel(x, y) == GREEN)).collect();
    let height = green_rows.last().unwrap() - green_rows.first().unwrap() + 1;
    assert!(height <= 8, "'bag' is {height} px tall: not at the grid's one scale (1)");
    // Names that all fit keep scale 2.
    assert_eq!(grid::caption_scale(&cells[..1]), 2);
}
