//! A shop's own photos: a generated folder tree of real PNG and JPEG files of mixed sizes and
//! colour types (grey, grey+alpha, 16-bit grey, RGB, RGBA) trains end to end through the CLI;
//! the decoded-image cache is reused, and rebuilt when a file changes; errors are clear.

mod common;
use common::{run_cli_env, temp_dir};
use gpu_cnn::data::folder::{self, FolderOptions};
use gpu_cnn::image_pipeline::{ColorMode, Preprocessing};
use image::{GrayAlphaImage, GrayImage, ImageBuffer, Luma, LumaA, Rgb, RgbImage, Rgba, RgbaImage};
use std::path::{Path, PathBuf};

/// The colour each class's pictures are painted (with a per-image shade), so they differ.
fn class_colour(class: usize) -> [u8; 3] {
    [[220, 40, 40], [40, 200, 60], [50, 60, 230]][class % 3]
}

/// Writes image `i` of a class, cycling through formats, sizes and colour types.
fn write_image(dir: &Path, class: usize, i: usize) {
    let [r, g, b] = class_colour(class);
    let shade = |v: u8| v.saturating_sub((i * 9) as u8);
    let (w, h) = [(40, 30), (20, 20), (50, 50), (64, 48), (33, 17), (16, 16), (70, 25), (24, 36)][i % 8];
    let grey = ((r as u32 * 2 + g as u32 * 7 + b as u32) / 10) as u8;
    let path = |ext: &str| dir.join(format!("img{i}.{ext}"));
    match i % 8 {
        0 => RgbImage::from_pixel(w, h, Rgb([shade(r), shade(g), shade(b)])).save(path("png")).unwrap(),
        1 => GrayImage::from_pixel(w, h, Luma([shade(grey)])).save(path("png")).unwrap(),
        2 => RgbaImage::from_pixel(w, h, Rgba([shade(r), shade(g), shade(b), 128])).save(path("png")).unwrap(),
        3 => RgbImage::from_fn(w, h, |x, y| Rgb([shade(r), shade(g).wrapping_add((x % 3) as u8), shade(b).wrapping_add((y % 5) as u8)]))
            .save(path("jpg"))
            .unwrap(),
        4 => GrayImage::from_pixel(w, h, Luma([shade(grey)])).save(path("jpeg")).unwrap(),
        5 => GrayAlphaImage::from_pixel(w, h, LumaA([shade(grey), 200])).save(path("png")).unwrap(),
        6 => ImageBuffer::<Luma<u16>, Vec<u16>>::from_pixel(w, h, Luma([shade(grey) as u16 * 257])).save(path("PNG")).unwrap(),
        _ => RgbImage::from_pixel(w, h, Rgb([shade(r), shade(g), shade(b)])).save(path("JPG")).unwrap(),
    }
}

/// DIR/<class>/ with `per_class` images each; a README that is not an image is ignored.
fn make_tree(root: &Path, classes: &[&str], per_class: usize) {
    for (c, name) in classes.iter().enumerate() {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..per_class {
            write_image(&dir, c, i);
        }
    }
    std::fs::write(root.join(classes[0]).join("notes.txt"), "not an image").unwrap();
}

/// A fresh test folder holding photos/ with `per_class` images of each class: (folder, photos/).
fn photo_tree(name: &str, classes: &[&str], per_class: usize) -> (PathBuf, PathBuf) {
    let dir = temp_dir(name);
    let photos = dir.join("photos");
    make_tree(&photos, classes, per_class);
    (dir, photos)
}

fn opts(seed: u64) -> FolderOptions {
    FolderOptions { preprocessing: Preprocessing::new((8, 8, 3)).unwrap(), val_split: 0.25, seed, skip_bad: false, cache_dir: None }
}

#[test]
fn folder_tree_trains_end_to_end_and_the_cache_is_reused_and_rebuilt() {
    let dir = temp_dir("folder-cli");
    let photos = dir.join("shop-photos");
    make_tree(&photos, &["boots", "hats", "scarves"], 8);
    std::fs::write(photos.join("hats").join("broken.jpg"), b"\xFF\xD8\xFF\xE0 this is not really a JPEG").unwrap();
    let cache = dir.join("cache");
    let env = [("GPU_CNN_DATA", cache.to_str().unwrap())];
    let arch = dir.join("tiny.arch");
    std::fs::write(&arch, "conv2d 4 3 relu\nmaxpool 2\nflatten\ndense 3 softmax\n").unwrap();
    let run = dir.join("run");
    let base = ["train", "--data", photos.to_str().unwrap(), "--image-size", "12", "--arch", arch.to_str().unwrap(), "--epochs", "1", "--device", "cpu"];
    // The same run folder for every run here: --overwrite.
    let base = [&base[..], &["--out", run.to_str().unwrap(), "--overwrite"]].concat();

    // By default a file that does not decode stops the run, naming it.
    let (ok, _, err) = run_cli_env(&base, &env);
    assert!(!ok && !err.contains("panicked"), "{err}");
    assert!(err.contains("broken.jpg") && err.contains("cannot decode") && err.contains("--skip-bad"), "{err}");

    // With --skip-bad it is skipped and counted; 24 images, 2 of each 8 held out.
    let skip = [&base[..], &["--skip-bad"]].concat();
    let (ok, _, err) = run_cli_env(&skip, &env);
    assert!(ok, "{err}");
    assert!(err.contains("skipped 1 file that did not decode") && err.contains("broken.jpg"), "{err}");
    assert!(err.contains("from the cache"), "the failed run already cached the decode: {err}");
    assert!(err.contains("shop-photos (18 training, 6 test images of 12x12x3, 3 classes)"), "{err}");
    let ck = gpu_cnn::checkpoint::load(&run.join("last.safetensors")).unwrap();
    assert_eq!(ck.meta.class_names, ["boots", "hats", "scarves"]);
    assert_eq!(ck.meta.input, (12, 12, 3));

    // Evaluate takes the image size from the checkpoint and the same seeded split.
    let (ok, out, err) = run_cli_env(
        &["evaluate", "--checkpoint", run.join("last.safetensors").to_str().unwrap(), "--data", photos.to_str().unwrap(), "--skip-bad", "--json"],
        &env,
    );
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["images"], 6);
    assert_eq!(v["dataset"], "shop-photos");
    // Another folder with as many classes but other names is refused, not silently mislabelled.
    let other = dir.join("other");
    make_tree(&other, &["boots", "caps", "scarves"], 4);
    let (ok, _, err) = run_cli_env(&["evaluate", "--checkpoint", run.join("last.safetensors").to_str().unwrap(), "--data", other.to_str().unwrap()], &env);
    assert!(!ok && err.contains("trained on the classes") && err.contains("caps"), "{err}");

    // A changed file invalidates the cache; the run after that reads the new cache.
    RgbImage::from_pixel(13, 11, Rgb([1, 2, 3])).save(photos.join("boots").join("img0.png")).unwrap();
    let (ok, _, err) = run_cli_env(&skip, &env);
    assert!(ok && err.contains("Decoded 25 images") && !err.contains("from the cache"), "{err}");
    let (ok, _, err) = run_cli_env(&skip, &env);
    assert!(ok && err.contains("Loaded 24 images of 12x12x3 from the cache"), "{err}");
    // Grey input for a 1-channel model is a separate cache entry.
    let grey_run = dir.join("run-grey");
    let grey = [&base[..base.len() - 3], &["--skip-bad", "--color-mode", "grayscale", "--out", grey_run.to_str().unwrap()]].concat();
    let (ok, _, err) = run_cli_env(&grey, &env);
    assert!(ok && err.contains("images of 12x12x1") && err.contains("Decoded 25 images"), "{err}");
}

#[test]
fn pixels_are_converted_and_resized() {
    let dir = temp_dir("folder-pixels");
    // PNG with alpha, BMP, WebP (lossless) and GIF: all four formats keep a flat colour exactly.
    for (class, colour) in [("red", [255u8, 0, 0]), ("white", [255, 255, 255])] {
        std::fs::create_dir_all(dir.join(class)).unwrap();
        // Opaque RGBA (transparency is composited over the background: tests/image_pipeline.rs).
        RgbaImage::from_pixel(50, 30, Rgba([colour[0], colour[1], colour[2], 255])).save(dir.join(class).join("a.png")).unwrap();
        RgbImage::from_pixel(7, 9, Rgb(colour)).save(dir.join(class).join("b.bmp")).unwrap();
        RgbaImage::from_pixel(9, 6, Rgba([colour[0], colour[1], colour[2], 255])).save(dir.join(class).join("c.webp")).unwrap();
        RgbaImage::from_pixel(12, 10, Rgba([colour[0], colour[1], colour[2], 255])).save(dir.join(class).join("d.gif")).unwrap();
    }
    let o = FolderOptions { val_split: 0.5, ..opts(0) };
    let ds = folder::load(&dir, &o).unwrap();
    assert_eq!((ds.train.len(), ds.test.len()), (4, 4));
    assert_eq!(ds.input_shape(), (8, 8, 3));
    for set in [&ds.train, &ds.test] {
        for i in 0..set.len() {
            let want: &[u8] = if set.labels[i] == 0 { &[255, 0, 0] } else { &[255, 255, 255] };
            // A flat colour stays exactly that colour under a normalised filter.
            assert!(set.image(i).chunks(3).all(|p| p == want), "{:?}", &set.image(i)[..6]);
        }
    }
    let grey = folder::load(&dir, &FolderOptions { preprocessing: Preprocessing { color: ColorMode::Grayscale, ..o.preprocessing }, ..o }).unwrap();
    assert_eq!(grey.input_shape(), (8, 8, 1));
    // Luma of pure red by Rec. 709 weights: 0.2126 * 255 = 54.
    let red = (0..grey.train.len()).find(|&i| grey.train.labels[i] == 0).unwrap();
    assert!(grey.train.image(red).iter().all(|&v| v == 54), "{:?}", grey.train.image(red));
}

#[test]
fn the_validation_split_is_stratified_and_seeded() {
    let dir = temp_dir("folder-split");
    make_tree(&dir, &["a", "b", "c"], 8);
    let a = folder::load(&dir, &opts(1)).unwrap();
    let b = folder::load(&dir, &opts(1)).unwrap();
    let c = folder::load(&dir, &opts(2)).unwrap();
    assert_eq!((a.train.len(), a.test.len()), (18, 6));
    for class in 0..3u8 {
        assert_eq!(a.test.labels.iter().filter(|&&l| l == class).count(), 2, "2 of every 8 held out");
    }
    assert_eq!(a.test.images, b.test.images, "same seed, same split");
    assert_ne!(a.test.images, c.test.images, "another seed, another split");
    assert_eq!(a.class_names, ["a", "b", "c"]);
}

#[test]
fn train_and_test_sub_folders_are_used_as_given() {
    let dir = temp_dir("folder-train-test");
    make_tree(&dir.join("train"), &["x", "y"], 5);
    make_tree(&dir.join("test"), &["x", "y"], 3);
    let ds = folder::load(&dir, &opts(0)).unwrap();
    assert_eq!((ds.train.len(), ds.test.len()), (10, 6));
    assert_eq!(ds.class_names, ["x", "y"]);
    make_tree(&dir.join("test"), &["z"], 1);
    let err = format!("{:#}", folder::load(&dir, &opts(0)).unwrap_err());
    assert!(err.contains("class 'z' is not among the training classes"), "{err}");

    // Train/ with validation/ (any case) was taken for two classes named after the folders.
    let dir = temp_dir("folder-train-validation");
    make_tree(&dir.join("Train"), &["x", "y"], 5);
    make_tree(&dir.join("validation"), &["x", "y"], 2);
    let ds = folder::load(&dir, &opts(0)).unwrap();
    assert_eq!((ds.class_names.as_slice(), ds.train.len(), ds.test.len()), (&["x".to_string(), "y".to_string()][..], 10, 4));
    // With test/ beside val/, training validates on val/ and leaves test/ unseen.
    make_tree(&dir.join("test"), &["x", "y"], 3);
    let ds = folder::load(&dir, &opts(0)).unwrap();
    assert_eq!((ds.train.len(), ds.test.len()), (10, 4));
    let split = folder::split_folders(&dir).unwrap().unwrap();
    assert_eq!(split.held_out, dir.join("validation"));
    assert!(split.notes[0].contains("is not used (score it with evaluate --data"), "{:?}", split.notes);
    // Two folders of one split, and a train/ alone: errors that say what to do.
    make_tree(&dir.join("val"), &["x", "y"], 1);
    let err = format!("{:#}", folder::load(&dir, &opts(0)).unwrap_err());
    assert!(err.contains("more than one folder of a split"), "{err}");
    let alone = temp_dir("folder-train-alone");
    make_tree(&alone.join("train"), &["x", "y"], 5);
    let err = format!("{:#}", folder::load(&alone, &opts(0)).unwrap_err());
    assert!(err.contains("holds only a 'train' folder") && err.contains("test/ (or val/)"), "{err}");
    // Split names that make no split were taken for classes: train/ beside Train/ or beside a
    // class, val/ and test/ without train/.
    for (name, folders, needle) in [
        ("folder-train-twice", ["train", "Train"], "more than one folder of a split"),
        ("folder-train-and-class", ["train", "photos"], "a train/ folder but no test/ or val/ beside it"),
        ("folder-no-train", ["val", "test"], "but no train/ folder"),
    ] {
        let dir = temp_dir(name);
        for f in folders {
            make_tree(&dir.join(f), &["x", "y"], 2);
        }
        let err = format!("{:#}", folder::load(&dir, &opts(0)).unwrap_err());
        assert!(err.contains(needle), "{name}: {err}");
    }
}

#[test]
fn bad_trees_get_clear_errors() {
    let expect = |dir: &Path, needles: &[&str]| {
        let err = format!("{:#}", folder::load(dir, &opts(0)).unwrap_err());
        for n in needles {
            assert!(err.contains(n), "'{err}' should mention '{n}'");
        }
    };
    let dir = temp_dir("folder-bad");
    expect(&dir.join("nope"), &["nope", "no such folder"]);
    std::fs::write(dir.join("file"), "x").unwrap();
    expect(&dir.join("file"), &["file", "not a folder"]);
    expect(&dir, &["no class sub-folders"]);
    make_tree(&dir, &["only"], 3);
    expect(&dir, &["only one class folder", "only"]);
    std::fs::create_dir_all(dir.join("empty")).unwrap();
    std::fs::write(dir.join("empty").join("readme.txt"), "no images here").unwrap();
    expect(&dir, &["empty", "holds no images"]);
    std::fs::remove_dir_all(dir.join("empty")).unwrap();
    make_tree(&dir, &["second"], 2);
    std::fs::write(dir.join("second").join("zz.png"), b"\x89PNG\r\n\x1a\n truncated").unwrap();
    expect(&dir, &["zz.png", "cannot decode", "--skip-bad"]);
    let skipped = folder::load(&dir, &FolderOptions { skip_bad: true, val_split: 0.34, ..opts(0) }).unwrap();
    assert_eq!(skipped.train.len() + skipped.test.len(), 5);
}

#[test]
fn images_in_sub_folders_count_and_hidden_files_and_run_folders_do_not() {
    let dir = temp_dir("folder-nested");
    make_tree(&dir, &["a", "b"], 4);
    // Keras and torchvision find images at any depth of a class folder.
    make_tree(&dir.join("a").join("2025").join("june"), &["x"], 2);
    // macOS's AppleDouble files and a hidden folder are skipped (they do not decode).
    std::fs::write(dir.join("b").join("._img0.png"), b"\x00\x05\x16\x07 AppleDouble").unwrap();
    std::fs::create_dir_all(dir.join("b").join(".thumbnails")).unwrap();
    std::fs::write(dir.join("b").join(".thumbnails").join("t.png"), b"not a png").unwrap();
    // A symlinked folder is not followed (a link to the class's own parent would loop).
    std::os::unix::fs::symlink(&dir, dir.join("b").join("loop")).unwrap();
    let ds = folder::load(&dir, &FolderOptions { val_split: 0.2, ..opts(0) }).unwrap();
    assert_eq!(ds.class_names, ["a", "b"]);
    assert_eq!((ds.train.len() + ds.test.len(), ds.train.labels.iter().chain(&ds.test.labels).filter(|&&l| l == 0).count()), (10, 6));
    // Training inside the data folder with the default --out puts runs/ there: its pictures
    // are not a third class, and a run folder inside a class is not that class's images.
    let run = dir.join("runs").join("photos");
    std::fs::create_dir_all(&run).unwrap();
    std::fs::write(run.join("history.json"), "[]").unwrap();
    make_tree(&run, &["pictures"], 2);
    let nested_run = dir.join("a").join("my-run");
    make_tree(&nested_run, &["pictures"], 3);
    std::fs::write(nested_run.join("last.safetensors"), "").unwrap();
    let again = folder::load(&dir, &FolderOptions { val_split: 0.2, ..opts(0) }).unwrap();
    assert_eq!(again.class_names, ["a", "b"]);
    assert_eq!(again.train.len() + again.test.len(), 10);
}

#[test]
fn the_cache_remembers_refusals_only_under_the_same_pixel_limit() {
    let (dir, photos) = photo_tree("folder-max-pixels", &["a", "b"], 3);
    let cache = dir.join("cache");
    let env = [("GPU_CNN_DATA", cache.to_str().unwrap())];
    let photos_arg = photos.to_str().unwrap();
    let arch = dir.join("tiny.arch");
    std::fs::write(&arch, "conv2d 4 3 relu\nmaxpool 2\nflatten\ndense 2 softmax\n").unwrap();
    let arch_arg = arch.to_str().unwrap();
    let train = |max_pixels: &str, out: &str| {
        let out = dir.join(out);
        let args =
            ["train", "--device", "cpu", "--data", photos_arg, "--image-size", "8", "--arch", arch_arg, "--epochs", "1", "--max-pixels", max_pixels, "--out"];
        run_cli_env(&[&args[..], &[out.to_str().unwrap()]].concat(), &env)
    };
    // Every image is over 100 pixels: refused, and the refusals are cached...
    let (ok, _, err) = train("100", "a");
    assert!(!ok && err.contains("over the limit"), "{err}");
    // ...but a higher limit is another cache entry, so the same files now decode.
    let (ok, _, err) = train("64000000", "b");
    assert!(ok, "{err}");
    assert!(!err.contains("from the cache"), "a new limit decodes again: {err}");
    let (ok, _, err) = train("64000000", "c");
    assert!(ok && err.contains("from the cache"), "{err}");
}

/// A tiny model trained (8x8 images, one epoch, CPU) on a fresh photos/ folder of boots, hats
/// and scarves, `per_class` images each: (the test's folder, photos/, the cache, the run).
fn tiny_run(name: &str, per_class: usize) -> (PathBuf, PathBuf, PathBuf, PathBuf) {
    let (dir, photos) = photo_tree(name, &["boots", "hats", "scarves"], per_class);
    let cache = dir.join("cache");
    let arch = dir.join("tiny.arch");
    std::fs::write(&arch, "conv2d 4 3 relu\nmaxpool 2\nflatten\ndense classes softmax\n").unwrap();
    let run = dir.join("run");
    let (p, a, r) = (photos.to_str().unwrap(), arch.to_str().unwrap(), run.to_str().unwrap());
    let args = ["train", "--data", p, "--image-size", "8", "--arch", a, "--epochs", "1", "--device", "cpu", "--out", r];
    let (ok, _, err) = run_cli_env(&args, &[("GPU_CNN_DATA", cache.to_str().unwrap())]);
    assert!(ok, "{err}");
    (dir, photos, cache, run)
}

#[test]
fn evaluate_and_resume_say_when_the_folder_changed_since_training() {
    let (dir, photos, cache, run) = tiny_run("folder-changed", 8);
    let env = [("GPU_CNN_DATA", cache.to_str().unwrap())];
    let last = run.join("last.safetensors");
    let ck = last.to_str().unwrap();
    let source = gpu_cnn::checkpoint::load(&last).unwrap().meta.data_source.unwrap();
    // 8 images a class, 20% held out: 2 of each.
    assert_eq!(source.held_out_images, Some(6));
    let evaluate = || run_cli_env(&["evaluate", "--checkpoint", ck, "--device", "cpu", "--json", "--out", dir.join("eval").to_str().unwrap()], &env);
    let (ok, out, err) = evaluate();
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!((v["images"].as_u64(), v["held_out_changed"].as_bool()), (Some(6), Some(false)), "{err}");
    assert!(!err.contains("not the ones training held out"), "{err}");

    // Five more hats reshuffle that class's split: 13 images, 3 held out, some of them trained on.
    for i in 8..13 {
        write_image(&photos.join("hats"), 1, i);
    }
    let (ok, out, err) = evaluate();
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!((v["images"].as_u64(), v["held_out_changed"].as_bool()), (Some(7), Some(true)), "{err}");
    assert!(err.contains("are not the ones training held out (7 now, 6 then"), "{err}");
    // A resumed run would validate on other images than its first epoch did: it says so too.
    // (No --data: a resume reads the folder the checkpoint was trained on, not CIFAR-10.)
    let (ok, _, err) = run_cli_env(&["train", "--resume", ck, "--epochs", "2", "--device", "cpu"], &env);
    assert!(ok, "{err}");
    assert!(err.contains("the folder the checkpoint was trained on"), "{err}");
    assert!(err.contains("are not the ones training held out (7 now, 6 then"), "{err}");
    // The resumed checkpoint validated on the new split, but its first epoch trained on some
    // of those images: evaluate keeps saying so.
    let (ok, out, err) = evaluate();
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["held_out_changed"].as_bool(), Some(true), "{err}");
    assert!(err.contains("training was resumed after epoch 1 on a changed"), "{err}");
    // The folder moved away: evaluate and a resume say so and how to point at it.
    std::fs::rename(&photos, dir.join("moved")).unwrap();
    let (ok, _, err) = evaluate();
    assert!(!ok && err.contains("which is not there any more") && err.contains("--data DIR") && !err.contains("note:"), "{err}");
    let (ok, _, err) = run_cli_env(&["train", "--resume", ck, "--epochs", "3", "--device", "cpu"], &env);
    assert!(!ok && err.contains("which is not there any more"), "{err}");
}

#[test]
fn a_resume_refuses_a_folder_whose_classes_changed() {
    // A class folder renamed from first to last place moved every label by one: the resume
    // trained on and saved shifted labels with no word (evaluate and review refused it).
    let (_, photos, cache, run) = tiny_run("folder-classes-changed", 6);
    let env = [("GPU_CNN_DATA", cache.to_str().unwrap())];
    let last = run.join("last.safetensors");
    let before = std::fs::read(&last).unwrap();
    let resume = || run_cli_env(&["train", "--resume", last.to_str().unwrap(), "--epochs", "2", "--device", "cpu"], &env);
    std::fs::rename(photos.join("boots"), photos.join("zz boots")).unwrap();
    let (ok, _, err) = resume();
    assert!(!ok && err.contains(r#"has ["zz boots"] and no ["boots"]"#) && err.contains("same classes in the same order"), "{err}");
    std::fs::rename(photos.join("zz boots"), photos.join("boots")).unwrap();
    make_tree(&photos, &["gloves"], 6);
    let (ok, _, err) = resume();
    assert!(!ok && err.contains(r#"has 1 more: ["gloves"]"#), "{err}");
    assert_eq!(std::fs::read(&last).unwrap(), before);
}

#[test]
fn evaluate_scores_every_image_of_a_folder_training_never_saw() {
    // A separate test folder was split 80/20 like a training folder, only a fifth scored, with
    // a note that training images might be among them.
    let (dir, photos, cache, run) = tiny_run("folder-separate-test", 6);
    let env = [("GPU_CNN_DATA", cache.to_str().unwrap())];
    let ck = run.join("best.safetensors");
    // The shop's shelf photos: two of the three classes.
    let shelf = dir.join("shelf");
    make_tree(&shelf, &["boots", "hats"], 4);
    let eval_out = dir.join("eval");
    let evaluate = |data: &Path, extra: &[&str]| {
        let mut args = vec!["evaluate", "--checkpoint", ck.to_str().unwrap(), "--data", data.to_str().unwrap(), "--device", "cpu", "--json"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--out", eval_out.to_str().unwrap()]);
        run_cli_env(&args, &env)
    };
    let (ok, out, err) = evaluate(&shelf, &[]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!((v["images"].as_u64(), v["split"].as_str()), (Some(8), Some("all")), "{err}");
    assert!(err.contains("Evaluating on every image of") && err.contains(r#"has no folder for ["scarves"]"#), "{err}");
    assert!(!err.contains("may include training images") && !err.contains("prepared otherwise"), "{err}");
    // Another pipeline than training's scores what predict and serve will never see: a note.
    let (ok, _, err) = evaluate(&shelf, &["--background", "black"]);
    assert!(ok && err.contains("prepared otherwise than in training (") && err.contains("black"), "{err}");
    // Another input shape cannot be scored: refused before the folder is decoded.
    let (ok, _, err) = evaluate(&shelf, &["--color-mode", "grayscale"]);
    assert!(!ok && err.contains("the model takes 8x8x3 images") && !err.contains("Decoded"), "{err}");
    // The same through review (labels are the checkpoint's: boots 0, hats 1); it has no
    // training split to review.
    let review = |data: &Path, extra: &[&str]| {
        let mut args = vec!["review", "--checkpoint", ck.to_str().unwrap(), "--data", data.to_str().unwrap(), "--device", "cpu"];
        args.extend_from_slice(extra);
        run_cli_env(&args, &env)
    };
    let (ok, _, err) = review(&shelf, &[]);
    assert!(ok, "{err}");
    let (ok, _, err) = review(&shelf, &["--interpolation", "nearest"]);
    assert!(ok && err.contains("prepared otherwise than in training ("), "{err}");
    let (ok, _, err) = review(&shelf, &["--split", "train"]);
    assert!(!ok && err.contains("has no training split"), "{err}");
    // A folder of one class's photos can be scored too (training needs two).
    let hats = dir.join("only-hats");
    make_tree(&hats, &["hats"], 3);
    let (ok, out, err) = evaluate(&hats, &[]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["images"].as_u64(), Some(3), "{err}");
    // --val-split 1 scores every image of the training folder too, and says what that means;
    // training refuses it before decoding anything.
    let (ok, out, err) = evaluate(&photos, &["--val-split", "1"]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["images"].as_u64(), Some(18), "{err}");
    assert!(err.contains("its training images are among them"), "{err}");
    let (ok, _, err) =
        run_cli_env(&["train", "--data", photos.to_str().unwrap(), "--val-split", "1", "--device", "cpu", "--out", dir.join("r2").to_str().unwrap()], &env);
    assert!(!ok && err.contains("--val-split must be between 0 and 1 (exclusive) for training") && !err.contains("Decoded"), "{err}");
}

/// `train` of a tiny model on `photos` (8x8 images, CPU, one epoch) with `extra` flags; the
/// cache and run in `dir`. (ok, stderr).
fn train_tiny_cli(dir: &Path, photos: &Path, extra: &[&str]) -> (bool, String) {
    let arch = dir.join("tiny.arch");
    std::fs::write(&arch, "conv2d 4 3 relu\nflatten\ndense classes softmax\n").unwrap();
    let (p, a, r) = (photos.to_str().unwrap(), arch.to_str().unwrap(), dir.join("run"));
    let mut args = vec!["train", "--data", p, "--image-size", "8", "--arch", a, "--epochs", "1", "--device", "cpu", "--out", r.to_str().unwrap()];
    args.extend_from_slice(extra);
    let (ok, _, err) = run_cli_env(&args, &[("GPU_CNN_DATA", dir.join("cache").to_str().unwrap())]);
    (ok, err)
}

#[test]
fn skip_bad_names_every_file_it_skips() {
    // Only the first was named, so a shop fixed its broken photos one run at a time.
    let (dir, photos) = photo_tree("folder-skip-names", &["boots", "hats"], 4);
    std::fs::write(photos.join("boots").join("cut-1.jpg"), b"\xff\xd8\xff not a jpeg").unwrap();
    std::fs::write(photos.join("hats").join("cut-2.png"), b"\x89PNG not a png").unwrap();
    let (ok, err) = train_tiny_cli(&dir, &photos, &["--skip-bad"]);
    assert!(ok, "{err}");
    assert!(err.contains("skipped 2 files that did not decode (--skip-bad):") && err.contains("cut-1.jpg") && err.contains("cut-2.png"), "{err}");
}

#[cfg(unix)]
#[test]
fn what_a_folder_does_not_use_is_named() {
    // iPhone photos (.heic), files beside the class folders, linked folders and a class too
    // small to validate were all passed over without a word.
    let (dir, photos) = photo_tree("folder-unused", &["boots", "hats"], 6);
    make_tree(&photos, &["scarves"], 1);
    std::fs::write(photos.join("boots").join("IMG_0001.HEIC"), b"heic").unwrap();
    std::fs::write(photos.join("boots").join("IMG_0002.heic"), b"heic").unwrap();
    write_image(&photos, 0, 99);
    std::os::unix::fs::symlink(photos.join("hats"), photos.join("boots").join("more")).unwrap();
    std::os::unix::fs::symlink(photos.join("gone.png"), photos.join("hats").join("dangling.png")).unwrap();
    // An `evaluate --out` report inside the folder is not a class (its pictures were trained as one).
    let report = photos.join("my-eval");
    make_tree(&report, &["pictures"], 1);
    std::fs::write(report.join("report.html"), "<html>").unwrap();
    std::fs::write(report.join("confusion.json"), "{}").unwrap();
    let (ok, err) = train_tiny_cli(&dir, &photos, &[]);
    assert!(ok, "{err}");
    assert!(err.contains("3 classes") && err.matches("my-eval: it holds gpu-cnn runs or reports").count() == 1, "{err}");
    assert!(err.contains("1 broken link"), "{err}");
    assert!(err.contains("not used in the class folders: 2 .heic, 2 .txt, 1 broken link, 1 link to a folder (images are read from"), "{err}");
    assert!(err.contains("not used beside the class folders of") && err.contains("1 .jpg"), "{err}");
    assert!(err.contains(r#"["scarves"] have too few images for --val-split 0.2"#), "{err}");
}

#[test]
fn an_architecture_that_cannot_run_fails_before_the_folder_is_decoded() {
    // A typo in --arch or an image size too small for the layers cost a whole decode first.
    let (dir, photos) = photo_tree("folder-arch-early", &["boots", "hats"], 3);
    let deep = dir.join("deep.arch");
    std::fs::write(&deep, "conv2d 8 3 relu\nmaxpool 2\nconv2d 8 3 relu\nmaxpool 2\nconv2d 8 3 relu\nflatten\ndense classes softmax\n").unwrap();
    let env = [("GPU_CNN_DATA", dir.to_str().unwrap())];
    let out = dir.join("r");
    for (arch, needle) in [(deep.clone(), "does not fit 8x8x3 images"), (dir.join("typo.arch"), "typo.arch")] {
        let (a, p, o) = (arch.to_str().unwrap(), photos.to_str().unwrap(), out.to_str().unwrap());
        let args = ["train", "--arch", a, "--image-size", "8", "--data", p, "--out", o, "--device", "cpu"];
        let (ok, _, err) = run_cli_env(&args, &env);
        assert!(!ok && err.contains(needle) && !err.contains("Decoded"), "{err}");
    }
}
