//! The Rust library API: `Trainer` with its epoch callback, `Classifier` (Send + Sync, batch and
//! single answers agree, the same answers as `gpu-cnn predict`), clear errors for bad input.

mod common;

use gpu_cnn::data::synthetic::{generate, SyntheticSpec};
use gpu_cnn::history::EpochRecord;
use gpu_cnn::image::{DynamicImage, ImageFormat, RgbImage};
use gpu_cnn::{Classifier, Device, TrainConfig, Trainer};
use std::cell::RefCell;
use std::rc::Rc;

/// The same weights on the same CPU backend: only rounding from a different batch split can
/// differ, far below 1e-6 on probabilities.
const TOLERANCE: f32 = 1e-6;

fn assert_send_sync<T: Send + Sync>() {}

#[test]
fn classifier_is_send_and_sync() {
    assert_send_sync::<Classifier>();
}

#[test]
fn trainer_reports_every_epoch_and_its_classifier_matches_predict() {
    let dir = common::temp_dir("library");
    let data = generate(&SyntheticSpec { train: 256, test: 64, ..Default::default() }, 1);
    let test = data.test.clone();
    let seen = Rc::new(RefCell::new(Vec::new()));
    let config = TrainConfig { epochs: 2, device: Device::Cpu, out_dir: Some(dir.clone()), ..Default::default() };
    let trained = Trainer::new(gpu_cnn::model::seed_layers(), data, config)
        .on_epoch({
            let seen = seen.clone();
            move |record| seen.borrow_mut().push(record.clone())
        })
        .fit()
        .unwrap();
    assert_eq!(*seen.borrow(), trained.history, "the callback saw each epoch's record");
    assert_eq!(trained.history.iter().map(|r| r.epoch).collect::<Vec<_>>(), vec![1, 2]);

    // Images as files, classified three ways: from the trained weights in memory, from the
    // checkpoint file, and by the predict command.
    let mut files = Vec::new();
    let mut images = Vec::new();
    for i in 0..6 {
        let img = DynamicImage::ImageRgb8(RgbImage::from_raw(32, 32, test.image(i).to_vec()).unwrap());
        let path = dir.join(format!("img{i}.png"));
        img.save_with_format(&path, ImageFormat::Png).unwrap();
        files.push(path);
        images.push(img);
    }
    let in_memory = trained.classifier(Device::Cpu).unwrap();
    let from_file = Classifier::load(dir.join("last.safetensors"), Device::Cpu).unwrap();
    let batch = from_file.classify_batch(&images).unwrap();
    assert_eq!(batch.len(), 6);
    let (ok, stdout, stderr) = common::run_cli(&[
        "predict",
        "--checkpoint",
        dir.join("last.safetensors").to_str().unwrap(),
        "--device",
        "cpu",
        "--json",
        "--top",
        "5",
        dir.to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
    // predict --json prints one JSON object per file and line, in input order.
    let predicted: Vec<serde_json::Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    for (i, path) in files.iter().enumerate() {
        let single = from_file.classify_path(path).unwrap();
        let memory = in_memory.classify(&images[i]).unwrap();
        let cli = &predicted[i]["top"];
        assert_eq!(single.len(), 5);
        for (k, p) in single.iter().enumerate() {
            assert_eq!(p.class, batch[i][k].class);
            assert_eq!(p.class, memory[k].class);
            assert_eq!(cli[k]["class"].as_str(), Some(p.class.as_str()), "image {i}, rank {k}");
            assert!((p.probability - batch[i][k].probability).abs() < TOLERANCE);
            assert!((p.probability - memory[k].probability).abs() < TOLERANCE);
            assert!((p.probability - cli[k]["probability"].as_f64().unwrap() as f32).abs() < TOLERANCE);
        }
    }
    assert!(from_file.classify_batch(&[]).unwrap().is_empty());
}

#[test]
fn bad_files_are_named_in_errors() {
    let dir = common::temp_dir("library-bad");
    let missing = dir.join("missing.safetensors");
    let e = Classifier::load(&missing, Device::Cpu).err().expect("a missing checkpoint fails");
    assert!(format!("{e:#}").contains("missing.safetensors"), "{e:#}");

    let data = generate(&SyntheticSpec { train: 64, test: 16, ..Default::default() }, 1);
    let trained = Trainer::new(gpu_cnn::model::seed_layers(), data, TrainConfig { epochs: 1, device: Device::Cpu, ..Default::default() }).fit().unwrap();
    let classifier = trained.classifier(Device::Cpu).unwrap();
    let junk = dir.join("junk.jpg");
    std::fs::write(&junk, b"not a jpeg").unwrap();
    let e = classifier.classify_path(&junk).expect_err("junk fails");
    assert!(format!("{e:#}").contains("junk.jpg"), "{e:#}");
    let e = classifier.probabilities(&[0u8; 10]).expect_err("a partial image fails");
    assert!(format!("{e:#}").contains("3072-byte images"), "{e:#}");
}

/// The classifier on a wgpu adapter (lavapipe in CI) answers as on the CPU backend. Tolerance
/// 1e-4 on probabilities: the GPU's tiled sums run in another order than the CPU's, which moves
/// the scores by a few 1e-6 through this small model.
#[test]
fn classifier_on_the_gpu_matches_the_cpu() {
    if common::gpu_backend().is_none() {
        return; // said why; with GPU_CNN_REQUIRE_GPU=1 gpu_backend() fails the test instead
    }
    let data = generate(&SyntheticSpec { train: 64, test: 16, ..Default::default() }, 2);
    let test = data.test.clone();
    let trained = Trainer::new(gpu_cnn::model::seed_layers(), data, TrainConfig { epochs: 1, device: Device::Cpu, ..Default::default() }).fit().unwrap();
    let cpu = trained.classifier(Device::Cpu).unwrap();
    let gpu = trained.classifier(Device::Gpu).unwrap();
    assert_ne!(cpu.device(), gpu.device());
    let pixels = &test.images[..8 * test.image_len()];
    let (a, b) = (cpu.probabilities(pixels).unwrap(), gpu.probabilities(pixels).unwrap());
    let max_diff = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
    assert!(max_diff < 1e-4, "GPU vs CPU max difference {max_diff}");
}

#[test]
fn trainer_runs_a_schedule_and_callbacks_in_one_run() {
    use gpu_cnn::schedule::{LrSchedule, ScheduleKind};
    let data = generate(&SyntheticSpec { train: 64, test: 32, ..Default::default() }, 2);
    let schedule = LrSchedule::new(ScheduleKind::Cosine, 0, None, 3).unwrap();
    let config = TrainConfig { epochs: 3, device: Device::Cpu, schedule, early_stopping: Some(5), reduce_lr_on_plateau: Some(4), ..Default::default() };
    let calls = Rc::new(RefCell::new(0));
    let trained = Trainer::new(gpu_cnn::model::seed_layers(), data, config)
        .on_epoch({
            let calls = calls.clone();
            move |_| *calls.borrow_mut() += 1
        })
        .fit()
        .unwrap();
    assert_eq!(*calls.borrow(), 3);
    // Cosine to 0 over 3 epochs: each epoch's last rate is lower than the one before.
    let rates: Vec<f64> = trained.history.iter().map(|r| r.learning_rate.unwrap()).collect();
    assert!(rates[0] < 1e-3 && rates[1] < rates[0] && rates[2] < rates[1], "{rates:?}");
    let recipe = &trained.checkpoint.meta.recipe;
    assert_eq!(recipe.schedule, schedule);
    // The callbacks' state went through all three epochs (one run, not one per epoch).
    assert_eq!(recipe.early_stopping.as_ref().map(|e| e.patience), Some(5));
    assert!(recipe.early_stopping.as_ref().unwrap().best_epoch >= 1);
}

#[test]
fn trainer_resumes_bit_exactly_writes_the_report_and_guards_its_folder() {
    let data = || generate(&SyntheticSpec { train: 128, test: 32, ..Default::default() }, 2);
    let config = |dir: &std::path::Path, epochs| TrainConfig { epochs, device: Device::Cpu, out_dir: Some(dir.to_path_buf()), ..Default::default() };
    let straight_dir = common::temp_dir("library-straight");
    let straight = Trainer::new(gpu_cnn::model::seed_layers(), data(), config(&straight_dir, 2)).fit().unwrap();
    assert!(straight.confusion.is_none(), "no report unless asked for");

    // A second run into a folder holding a run is refused, naming the folder, unless it may
    // replace it; nothing of the first run is touched by the refusal.
    let before = std::fs::read(straight_dir.join("last.safetensors")).unwrap();
    let refused = Trainer::new(gpu_cnn::model::seed_layers(), data(), config(&straight_dir, 1)).fit().err().expect("a non-empty run folder is refused");
    assert!(format!("{refused:#}").contains("not empty") && format!("{refused:#}").contains(&straight_dir.display().to_string()), "{refused:#}");
    assert_eq!(std::fs::read(straight_dir.join("last.safetensors")).unwrap(), before);

    // One epoch, then resumed from its checkpoint for the second: the same bits as straight
    // (the CPU backend is deterministic and the resume restores weights, Adam state and step).
    let first_dir = common::temp_dir("library-first");
    Trainer::new(gpu_cnn::model::seed_layers(), data(), config(&first_dir, 1)).fit().unwrap();
    let ck = gpu_cnn::checkpoint::load(&first_dir.join("last.safetensors")).unwrap();
    let resumed_dir = common::temp_dir("library-resumed");
    let resumed =
        Trainer::new(gpu_cnn::model::seed_layers(), data(), config(&resumed_dir, 2)).resume(ck, first_dir.join("last.safetensors")).report(None).fit().unwrap();
    let strip = |h: &[EpochRecord]| h.iter().map(|r| EpochRecord { seconds: 0.0, ..r.clone() }).collect::<Vec<_>>();
    assert_eq!(strip(&resumed.history), strip(&straight.history), "the same two epochs, the first one from the checkpoint");
    for (a, b) in straight.checkpoint.tensors.iter().zip(&resumed.checkpoint.tensors) {
        assert_eq!(a.name, b.name);
        assert!(a.data.iter().zip(&b.data).all(|(x, y)| x.to_bits() == y.to_bits()), "{} differs after resuming", a.name);
    }
    // Saved from memory, it is the same checkpoint the run wrote as last.safetensors.
    let saved = resumed_dir.join("saved.safetensors");
    resumed.save(&saved).unwrap();
    let (from_memory, from_run) = (gpu_cnn::checkpoint::load(&saved).unwrap(), gpu_cnn::checkpoint::load(&resumed_dir.join("last.safetensors")).unwrap());
    assert!(from_memory.tensors.iter().any(|t| t.name.ends_with(".adam_m")), "with the optimizer state");
    assert_eq!(from_memory.tensors, from_run.tensors);
    assert_eq!(from_memory.meta.step, from_run.meta.step);
    let conf = resumed.confusion.expect("the report was asked for");
    assert_eq!(conf.total(), 32, "the report scores the whole test split");
    for file in ["report.html", "predictions.png", "curves.png", "confusion.png"] {
        assert!(resumed_dir.join(file).is_file(), "{file} written into the run folder");
    }
}

/// `Err` with `what` in its text (a panic here fails the test as itself).
fn refused<T>(result: anyhow::Result<T>, what: &str) -> String {
    let Err(e) = result else { panic!("accepted; expected an error about {what}") };
    let text = format!("{e:#}");
    assert!(text.contains(what), "expected '{what}' in: {text}");
    text
}

/// What the CLI refuses flag by flag, built in code instead: a clear `Err` from the library,
/// never a panic, and nothing written into the run folder.
#[test]
fn runs_built_in_code_get_the_checks_the_cli_gets() {
    use gpu_cnn::augment::Augmentation;
    use gpu_cnn::layers::{dropout::Dropout, LayerSpec};
    use gpu_cnn::optimizer::{Optimizer, OptimizerName};
    let data = || generate(&SyntheticSpec { train: 64, test: 16, height: 12, width: 12, classes: 3, ..Default::default() }, 3);
    let layers = || gpu_cnn::model::parse_arch("Conv2D(4, 3, activation=\"relu\")\nFlatten()\nDense(3, activation=\"softmax\")").unwrap();
    let dir = common::temp_dir("library-checks");
    let config = |epochs| TrainConfig { epochs, device: Device::Cpu, out_dir: Some(dir.clone()), ..Default::default() };
    let fit = |layers, data, config| Trainer::new(layers, data, config).fit();

    // A label past the classes (the CPU indexed out of bounds; the GPU skipped its loss).
    let mut bad = data();
    bad.train.labels[5] = 3;
    refused(fit(layers(), bad, config(1)), "training image 5 has label 3, but there are 3 classes");
    // A test split of another shape than the training split.
    let mut bad = data();
    bad.test = generate(&SyntheticSpec { train: 0, test: 16, height: 10, width: 10, classes: 3, ..Default::default() }, 3).test;
    refused(fit(layers(), bad, config(1)), "the test images are 10x10x3 but the training images are 12x12x3");
    // Layers no architecture file could give: every checkpoint would be unloadable.
    let mut dropout = layers();
    dropout.insert(1, LayerSpec::Dropout(Dropout { rate: 1.0 }));
    refused(fit(dropout, data(), config(1)), "Dropout");
    // Augmentation factors out of the ranges --augment takes.
    let rotate = TrainConfig { augment: Augmentation { rotate: 500.0, ..Augmentation::NONE }, ..config(1) };
    refused(fit(layers(), data(), rotate), "rotate=500");
    let zoom = TrainConfig { augment: Augmentation { zoom: -0.2, ..Augmentation::NONE }, ..config(1) };
    refused(fit(layers(), data(), zoom), "zoom=-0.2");
    // A report asked for with nowhere to write it (it was silently skipped).
    let nowhere = TrainConfig { out_dir: None, ..config(1) };
    refused(Trainer::new(layers(), data(), nowhere).report(None).fit(), "run report");
    assert!(!dir.exists() || std::fs::read_dir(&dir).unwrap().next().is_none(), "nothing written by a refused run");

    // Resuming: one real epoch first.
    Trainer::new(layers(), data(), config(1)).fit().unwrap();
    let last = dir.join("last.safetensors");
    let ck = || gpu_cnn::checkpoint::load(&last).unwrap();
    let other_dir = common::temp_dir("library-checks-resumed");
    let resume =
        |layers, config: TrainConfig, ck| Trainer::new(layers, data(), TrainConfig { out_dir: Some(other_dir.clone()), ..config }).resume(ck, &last).fit();
    // Another optimizer whose slots fit (AdamW's are Adam's): it would silently drop or add weight decay.
    let adamw = TrainConfig { optimizer: Optimizer::keras_default(OptimizerName::AdamW), ..config(2) };
    refused(resume(layers(), adamw, ck()), "cannot continue it");
    // The same tensor shapes, another model (an activation differs).
    let tanh = gpu_cnn::model::parse_arch("Conv2D(4, 3, activation=\"tanh\")\nFlatten()\nDense(3, activation=\"softmax\")").unwrap();
    refused(resume(tanh, config(2), ck()), "different architecture");
    // No epochs left: not an empty success.
    refused(resume(layers(), config(1), ck()), "has already done 1 epochs");
    // A checkpoint changed in memory: NaN weights, a tensor shorter than its shape.
    let mut nan = ck();
    nan.tensors[0].data[0] = f32::NAN;
    refused(resume(layers(), config(2), nan), "holds NaN");
    let mut short = ck();
    short.tensors[0].data.pop();
    refused(resume(layers(), config(2), short), "cannot be resumed");
    assert!(!other_dir.exists() || std::fs::read_dir(&other_dir).unwrap().next().is_none(), "nothing written by a refused resume");
    // The same holds for a classifier from memory (a short tensor panicked on the device thread).
    let mut short = ck();
    short.tensors[1].data.truncate(1);
    refused(Classifier::from_checkpoint(short, Device::Cpu, 8), "has 1 values, but its shape [4] needs 4");
    let mut nan = ck();
    nan.tensors[0].data[3] = f32::INFINITY;
    refused(Classifier::from_checkpoint(nan, Device::Cpu, 8), "holds inf");
    assert!(Classifier::from_checkpoint(ck(), Device::Cpu, 8).is_ok(), "the checkpoint itself is fine");

    // A plan with class weights that are not positive numbers.
    let planned = |weights: Vec<f32>| {
        let mut plan = gpu_cnn::trainer::RunPlan {
            options: gpu_cnn::train::TrainOptions::new(&gpu_cnn::model::format_arch(&layers()), 1, 8, 0),
            optimizer: Optimizer::default(),
            label_smoothing: 0.0,
            class_weights: Some(weights),
        };
        plan.options.out_dir = None;
        gpu_cnn::trainer::Trainer::planned(data(), plan, gpu_cnn::trainer::RunDir::Fresh).unwrap().fit_on(gpu_cnn::backend::cpu::CpuBackend::new())
    };
    refused(planned(vec![1.0, 0.0, 1.0]), "class weight 0");
    refused(planned(vec![1.0, f32::NAN, 1.0]), "class weight NaN");
    assert!(planned(vec![1.0, 2.0, 0.5]).is_ok());

    // The loop itself (public): batch size 0 is an error, not a division by zero.
    let model = gpu_cnn::model::Model::new(&layers(), (12, 12, 3)).unwrap();
    let mut net = gpu_cnn::network::Network::new(gpu_cnn::backend::cpu::CpuBackend::new(), model, 8, 0).unwrap();
    let zero = gpu_cnn::train::TrainOptions::new(&gpu_cnn::model::format_arch(&layers()), 1, 0, 0);
    refused(gpu_cnn::train::run_epochs(&mut net, &data(), &zero, Vec::new()), "batch size 0");
    let too_big = gpu_cnn::train::TrainOptions::new(&gpu_cnn::model::format_arch(&layers()), 1, 32, 0);
    refused(gpu_cnn::train::run_epochs(&mut net, &data(), &too_big, Vec::new()), "batch size 32 does not fit");
}

/// Adam's bias correction past 2^31 steps: both powers are 0, so alpha is the learning rate
/// (it wrapped to a negative exponent and gave NaN).
#[test]
fn adam_alpha_saturates_past_i32_steps() {
    use gpu_cnn::backend::{AdamConfig, AdamStep};
    let config = AdamConfig { learning_rate: 1e-3, beta1: 0.9, beta2: 0.999, epsilon: 1e-7 };
    for step in [1u64 << 31, (1 << 32) + 5, 1 << 48] {
        assert_eq!(AdamStep { config, step }.alpha(), 1e-3, "step {step}");
    }
    // Normal steps are unchanged: step 1 gives lr * sqrt(1 - beta2) / (1 - beta1).
    let (b1, b2) = (0.9f32 as f64, 0.999f32 as f64);
    assert_eq!(AdamStep { config, step: 1 }.alpha(), (1e-3f32 as f64 * (1.0 - b2).sqrt() / (1.0 - b1)) as f32);
}
