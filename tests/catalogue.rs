//! A shop's own catalogue end to end, through the CLI as the README says: folders of mixed JPEG
//! and PNG photos (transparent cut-outs among them) with 4 and 7 classes train with
//! `gpu-cnn train --data DIR --image-size 32` and no --arch; `evaluate` scores exactly the split
//! training held out, and `predict` agrees with it image for image.

mod common;
use common::{run_cli_env, temp_dir};
use gpu_cnn::rng::Rng;
use image::{Rgb, RgbImage, Rgba, RgbaImage};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Whether pixel (x, y) of a w x h picture lies on class `class`'s shape (centred at cx, cy).
fn on_shape(class: usize, x: f32, y: f32, cx: f32, cy: f32, r: f32) -> bool {
    let (dx, dy) = (x - cx, y - cy);
    let d = (dx * dx + dy * dy).sqrt();
    match class % 7 {
        0 => d < r,                                          // disc
        1 => dx.abs() < r * 0.8 && dy.abs() < r * 0.8,       // square
        2 => d < r && d > r * 0.55,                          // ring
        3 => dx.abs() < r * 0.25 || dy.abs() < r * 0.25,     // cross (clipped below)
        4 => dy.abs() < r * 0.3,                             // horizontal bar
        5 => dx.abs() < r * 0.3,                             // vertical bar
        _ => dy > -r && dy < r && dx.abs() < (dy + r) * 0.5, // triangle
    }
}

/// Writes product photo `i` of `class` under `dir`: cycling through a transparent cut-out PNG,
/// a JPEG on white, an RGB PNG on a noisy backdrop and a large 3:4 JPEG; returns its path.
fn write_photo(dir: &Path, class: usize, i: usize) -> PathBuf {
    let mut rng = Rng::derive(11, class as u64, i as u64);
    let colour = [[200u8, 40, 40], [40, 160, 60], [40, 60, 200], [200, 160, 30], [150, 40, 170], [30, 160, 170], [90, 90, 90]][class % 7];
    let (w, h) = [(60, 80), (72, 72), (90, 60), (240, 320)][i % 4];
    let (cx, cy) = (w as f32 * (0.4 + 0.2 * rng.unit_f32()), h as f32 * (0.4 + 0.2 * rng.unit_f32()));
    let r = w.min(h) as f32 * (0.28 + 0.1 * rng.unit_f32());
    let inside = |x: u32, y: u32| {
        let (fx, fy) = (x as f32, y as f32);
        on_shape(class, fx, fy, cx, cy, r) && (fx - cx).abs() < r && (fy - cy).abs() < r
    };
    let shade = |v: u8, x: u32, y: u32| v.saturating_add(((x + y) % 16) as u8);
    let path = dir.join(format!("{i:03}.{}", if i % 2 == 1 { "jpg" } else { "png" }));
    match i % 4 {
        0 => RgbaImage::from_fn(w, h, |x, y| {
            if inside(x, y) {
                Rgba([shade(colour[0], x, y), shade(colour[1], x, y), shade(colour[2], x, y), 255])
            } else {
                Rgba([0, 0, 0, 0])
            }
        })
        .save(&path),
        2 => {
            let mut noise = Rng::derive(12, class as u64, i as u64);
            RgbImage::from_fn(w, h, |x, y| if inside(x, y) { Rgb(colour) } else { Rgb([0, 1, 2].map(|_| 200 + (noise.unit_f32() * 50.0) as u8)) }).save(&path)
        }
        _ => RgbImage::from_fn(w, h, |x, y| {
            if inside(x, y) {
                Rgb([shade(colour[0], x, y), shade(colour[1], x, y), shade(colour[2], x, y)])
            } else {
                Rgb([255, 255, 255])
            }
        })
        .save(&path),
    }
    .unwrap();
    path
}

/// DIR/train/<class>/ and DIR/test/<class>/; returns the test files with their class names.
fn make_catalogue(dir: &Path, classes: &[&str], train: usize, test: usize) -> Vec<(PathBuf, String)> {
    let mut test_files = Vec::new();
    for (c, name) in classes.iter().enumerate() {
        for (split, count, offset) in [("train", train, 0), ("test", test, 1000)] {
            let folder = dir.join(split).join(name);
            std::fs::create_dir_all(&folder).unwrap();
            for i in 0..count {
                let path = write_photo(&folder, c, offset + i);
                if split == "test" {
                    test_files.push((path, name.to_string()));
                }
            }
        }
    }
    test_files
}

fn train_evaluate_predict(classes: &[&str], with_mislabelled: bool) {
    let dir = temp_dir(&format!("catalogue-{}", classes.len()));
    let data = dir.join("shop-photos");
    let mut test_files = make_catalogue(&data, classes, 24, 8);
    // A photo of class 1 filed under class 0 by mistake: review should list it first.
    let mislabelled = data.join("test").join(classes[0]).join("zz-mislabelled.png");
    if with_mislabelled {
        let written = write_photo(&dir, 1, 2000);
        std::fs::rename(&written, &mislabelled).unwrap();
        test_files.push((mislabelled.clone(), classes[0].to_string()));
    }
    let cache = dir.join("cache");
    let env = [("GPU_CNN_DATA", cache.to_str().unwrap())];
    let run = dir.join("run");
    let (d, r) = (data.to_str().unwrap(), run.to_str().unwrap());
    // The README's command, no --arch: the seed model takes its last layer's units from the data.
    let (ok, _, err) = run_cli_env(&["train", "--data", d, "--image-size", "32", "--epochs", "6", "--device", "cpu", "--out", r], &env);
    assert!(ok, "{err}");
    assert!(err.contains(&format!("{} classes", classes.len())), "{err}");
    let ck = run.join("best.safetensors");
    let ckpt = gpu_cnn::checkpoint::load(&ck).unwrap();
    assert!(ckpt.meta.arch.ends_with(&format!("Dense({}, activation=\"softmax\")\n", classes.len())), "{}", ckpt.meta.arch);
    assert_eq!(ckpt.meta.preprocessing.unwrap().background, gpu_cnn::image_pipeline::Background::White);
    // evaluate with no data flags: the folder and split recorded in the checkpoint.
    let (ok, out, err) =
        run_cli_env(&["evaluate", "--checkpoint", ck.to_str().unwrap(), "--device", "cpu", "--json", "--out", dir.join("eval").to_str().unwrap()], &env);
    assert!(ok, "{err}");
    let eval: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(eval["images"].as_u64().unwrap() as usize, test_files.len());
    let accuracy = eval["accuracy"].as_f64().unwrap();
    // Better than chance by a margin: the shapes are easy (chance is 1/classes).
    assert!(accuracy > 2.0 / classes.len() as f64, "accuracy {accuracy}");
    let matrix: Vec<Vec<u64>> = serde_json::from_value(eval["confusion"]["matrix"].clone()).unwrap();
    // predict on the same files: its answers, tallied, are evaluate's confusion matrix, cell by cell.
    let mut args = vec!["predict", "--checkpoint", ck.to_str().unwrap(), "--device", "cpu", "--json", "--top", "1", "--batch-size", "5"];
    let test_dir = data.join("test");
    args.push(test_dir.to_str().unwrap());
    let (ok, out, err) = run_cli_env(&args, &env);
    assert!(ok, "{err}");
    let index: HashMap<&str, usize> = classes.iter().enumerate().map(|(i, c)| (*c, i)).collect();
    let truth: HashMap<PathBuf, usize> = test_files.iter().map(|(p, c)| (p.clone(), index[c.as_str()])).collect();
    let mut tally = vec![vec![0u64; classes.len()]; classes.len()];
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), test_files.len());
    for line in lines {
        let row: serde_json::Value = serde_json::from_str(line).unwrap();
        let file = PathBuf::from(row["file"].as_str().unwrap());
        tally[truth[&file]][index[row["prediction"].as_str().unwrap()]] += 1;
    }
    assert_eq!(tally, matrix, "predict and evaluate disagree on some image");
    if !with_mislabelled {
        return;
    }
    // review: the same images by loss; the mislabelled photo near the top, and the confused
    // pairs are the off-diagonal cells of evaluate's matrix.
    let (ok, out, err) = run_cli_env(&["review", "--checkpoint", ck.to_str().unwrap(), "--device", "cpu", "--json", "--top", "3"], &env);
    assert!(ok, "{err}");
    let review: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(review["split"], "validation");
    let top: Vec<&str> = review["top_losses"].as_array().unwrap().iter().map(|r| r["file"].as_str().unwrap()).collect();
    assert_eq!(top.len(), 3);
    assert!(top.contains(&mislabelled.to_str().unwrap()), "the mislabelled photo is not among the top losses: {top:?}");
    let losses: Vec<f64> = review["top_losses"].as_array().unwrap().iter().map(|r| r["loss"].as_f64().unwrap()).collect();
    assert!(losses.windows(2).all(|w| w[0] >= w[1]), "{losses:?}");
    for pair in review["most_confused"].as_array().unwrap() {
        let (t, p) = (index[pair["true"].as_str().unwrap()], index[pair["predicted"].as_str().unwrap()]);
        assert_eq!(pair["images"].as_u64().unwrap(), matrix[t][p]);
    }
    let wrong: u64 = (0..classes.len()).flat_map(|t| (0..classes.len()).filter(move |&p| p != t).map(move |p| (t, p))).map(|(t, p)| matrix[t][p]).sum();
    assert_eq!(review["most_confused"].as_array().unwrap().iter().map(|p| p["images"].as_u64().unwrap()).sum::<u64>(), wrong);
    let (ok, text, _) = run_cli_env(&["review", "--checkpoint", ck.to_str().unwrap(), "--device", "cpu", "--split", "train", "--top", "2"], &env);
    assert!(ok && text.contains("2 of the 96 training images") && text.contains("Most confused"), "{text}");
}

#[test]
fn a_4_class_catalogue_trains_with_the_readme_command_and_predict_agrees_with_evaluate() {
    train_evaluate_predict(&["bags", "hats", "scarves", "shoes"], true);
}

#[test]
fn a_7_class_catalogue_trains_with_the_readme_command_and_predict_agrees_with_evaluate() {
    train_evaluate_predict(&["belts", "caps", "gloves", "mugs", "rings", "socks", "ties"], false);
}

#[test]
fn an_explicit_class_count_that_disagrees_with_the_data_says_what_to_write() {
    let dir = temp_dir("catalogue-wrong-count");
    let data = dir.join("photos");
    make_catalogue(&data, &["a", "b", "c"], 3, 1);
    let arch = dir.join("arch.txt");
    std::fs::write(&arch, "flatten\ndense 10 softmax\n").unwrap();
    let env = [("GPU_CNN_DATA", dir.join("cache").to_str().unwrap().to_string())];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (ok, _, err) = run_cli_env(
        &[
            "train",
            "--data",
            data.to_str().unwrap(),
            "--image-size",
            "8",
            "--arch",
            arch.to_str().unwrap(),
            "--epochs",
            "1",
            "--device",
            "cpu",
            "--out",
            dir.join("run").to_str().unwrap(),
        ],
        &env,
    );
    assert!(!ok && err.contains("Dense(classes, activation=\"softmax\")") && err.contains("3 classes") && !err.contains("panicked"), "{err}");
    // summary --classes fills in `dense classes`; the seed model on 10 classes is unchanged.
    let (ok, out, _) = run_cli_env(&["summary", "--classes", "5"], &env);
    assert!(ok && out.contains("(None, 5)") && out.contains("122,245"), "{out}");
    let (ok, out, _) = run_cli_env(&["summary"], &env);
    assert!(ok && out.contains("122,570"), "{out}");
}

#[test]
fn previews_are_a_seeded_sample_spread_over_the_classes() {
    use gpu_cnn::report::grid::preview_indices;
    // 5 classes of 30 images, sorted by class as a folder listing is.
    let labels: Vec<u8> = (0..150).map(|i| (i / 30) as u8).collect();
    let a = preview_indices(&labels, 25, 0);
    assert_eq!(a.len(), 25);
    for c in 0..5u8 {
        assert_eq!(a.iter().filter(|&&i| labels[i] == c).count(), 5, "5 of each class: {a:?}");
    }
    assert_eq!(a, preview_indices(&labels, 25, 0), "seeded");
    assert_ne!(a, preview_indices(&labels, 25, 1), "another seed, another sample");
    assert!(a.iter().collect::<std::collections::HashSet<_>>().len() == 25, "no image twice");
    // Fewer images than cells: every image once.
    assert_eq!(preview_indices(&labels[..7], 25, 0).len(), 7);
}

#[test]
fn a_headless_start_prints_no_xdg_runtime_dir_lines() {
    let out =
        std::process::Command::new(env!("CARGO_BIN_EXE_gpu-cnn")).arg("devices").env_remove("XDG_RUNTIME_DIR").env_remove("WAYLAND_DISPLAY").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(!err.contains("XDG_RUNTIME_DIR"), "{err}");
    // The adapters are still found (CI has lavapipe: GPU_CNN_REQUIRE_GPU=1 there).
    if std::env::var("GPU_CNN_REQUIRE_GPU").is_ok_and(|v| v == "1") {
        assert!(String::from_utf8_lossy(&out.stdout).contains("Vulkan"), "{}", String::from_utf8_lossy(&out.stdout));
    }
}

#[test]
fn class_weight_balanced_weights_an_imbalanced_catalogue_and_resume_keeps_it() {
    let dir = temp_dir("catalogue-class-weight");
    let data = dir.join("photos");
    // Training counts 12, 4, 2 of 18: Keras's balanced weights 18 / (3 * n_c) = 0.5, 1.5, 3.
    for (c, (name, count)) in [("bags", 12), ("caps", 4), ("mugs", 2)].iter().enumerate() {
        for (split, n, offset) in [("train", *count, 0), ("test", 1, 1000)] {
            let folder = data.join(split).join(name);
            std::fs::create_dir_all(&folder).unwrap();
            for i in 0..n {
                write_photo(&folder, c, offset + i);
            }
        }
    }
    let arch = dir.join("arch.txt");
    std::fs::write(&arch, "flatten\ndense classes softmax\n").unwrap();
    let cache = dir.join("cache");
    let env = [("GPU_CNN_DATA", cache.to_str().unwrap())];
    let run = dir.join("run");
    let (d, a, r) = (data.to_str().unwrap(), arch.to_str().unwrap(), run.to_str().unwrap());
    let (ok, _, err) = run_cli_env(
        &["train", "--data", d, "--image-size", "8", "--arch", a, "--epochs", "1", "--device", "cpu", "--out", r, "--class-weight", "balanced"],
        &env,
    );
    assert!(ok, "{err}");
    assert!(err.contains("Class weights (balanced, training loss only): bags 0.5000, caps 1.5000, mugs 3.0000"), "{err}");
    // The per-class table after training shows the training counts and weights.
    let table_row = |name: &str| err.lines().find(|l| l.starts_with(name) && l.contains("  ")).unwrap_or_else(|| panic!("no {name} row: {err}")).to_string();
    assert!(err.contains("training") && err.contains("weight"), "{err}");
    for (name, count, weight) in [("bags", "12", "0.5000"), ("caps", "4", "1.5000"), ("mugs", "2", "3.0000")] {
        let cells: Vec<String> = table_row(name).split_whitespace().map(str::to_string).collect();
        assert_eq!(&cells[cells.len() - 2..], &[count.to_string(), weight.to_string()], "{name}: {err}");
    }
    let meta = gpu_cnn::checkpoint::load_meta(&run.join("last.safetensors")).unwrap();
    assert_eq!(meta.class_weights, Some(vec![0.5, 1.5, 3.0]));
    // A folder run's report has the top-losses grid: all 3 validation images, 5 to a row.
    let html = std::fs::read_to_string(run.join("report.html")).unwrap();
    assert!(
        html.contains("<h2 id=\"top-losses\">Top losses</h2>") && html.contains("<img alt=\"top losses\" src=\"data:image/png;base64,"),
        "no top-losses section"
    );
    let grid = image::open(run.join("top_losses.png")).unwrap();
    assert_eq!((grid.width(), grid.height()), gpu_cnn::report::grid::grid_size(3, 5));
    // --resume with no flag keeps the weighting.
    let last = run.join("last.safetensors");
    let (ok, _, err) = run_cli_env(&["train", "--resume", last.to_str().unwrap(), "--data", d, "--image-size", "8", "--epochs", "2", "--device", "cpu"], &env);
    assert!(ok, "{err}");
    assert!(err.contains("Class weights (balanced"), "{err}");
    assert_eq!(gpu_cnn::checkpoint::load_meta(&last).unwrap().class_weights, Some(vec![0.5, 1.5, 3.0]));
    // Without the flag nothing is stored (and old checkpoints load as unweighted).
    let plain = dir.join("plain");
    let (ok, _, err) =
        run_cli_env(&["train", "--data", d, "--image-size", "8", "--arch", a, "--epochs", "1", "--device", "cpu", "--out", plain.to_str().unwrap()], &env);
    assert!(ok && !err.contains("Class weights"), "{err}");
    assert_eq!(gpu_cnn::checkpoint::load_meta(&plain.join("last.safetensors")).unwrap().class_weights, None);
}
