//! What each CLI subcommand does, given its already-parsed options. main.rs only parses.

use crate::augment::Augmentation;
use crate::backend::Backend;
use crate::checkpoint::{self, Checkpoint};
use crate::data::{self, Dataset, DatasetKind};
use crate::model::{format_arch, parse_arch, summary_table, Model, SEED_ARCH};
use crate::network::Network;
use crate::report;
use crate::train::{self, TrainOptions};
use crate::with_backend;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// Reads an architecture file, or the seed model when none is given.
pub fn read_arch(path: Option<&Path>) -> Result<String> {
    let text = match path {
        Some(p) => std::fs::read_to_string(p).with_context(|| format!("{}: cannot read the architecture file", p.display()))?,
        None => SEED_ARCH.to_string(),
    };
    let layers = parse_arch(&text).with_context(|| format!("{}: invalid architecture", path.map_or("seed model".into(), |p| p.display().to_string())))?;
    Ok(format_arch(&layers))
}

pub fn summary(arch: Option<&Path>, input: (usize, usize, usize)) -> Result<String> {
    let text = read_arch(arch)?;
    let model = Model::new(&parse_arch(&text)?, input)?;
    Ok(summary_table(&model))
}

/// Where the data comes from and how much of it to use.
#[derive(Clone, Debug)]
pub struct DataOptions {
    pub dataset: DatasetKind,
    pub data_dir: Option<PathBuf>,
    /// Use only the first N training / test images (quick runs, smoke tests).
    pub limit_train: Option<usize>,
    pub limit_test: Option<usize>,
    /// Never download: a data set missing from the cache is an error.
    pub offline: bool,
    /// Images in one sub-folder per class (`--data`); replaces `dataset` when set.
    pub images: Option<ImageFolderArgs>,
}

/// `--data DIR` and how its images become model inputs.
#[derive(Clone, Debug)]
pub struct ImageFolderArgs {
    pub dir: PathBuf,
    /// Side of the square model input [default: the checkpoint's, else 32].
    pub image_size: Option<usize>,
    /// 1 (grey) or 3 (RGB) [default: the checkpoint's, else 3].
    pub channels: Option<usize>,
    pub val_split: f32,
    pub skip_bad: bool,
}

pub fn load_data(opts: &DataOptions, seed: u64) -> Result<Dataset> {
    load_data_for(opts, seed, None)
}

/// As `load_data`; `input` (a checkpoint's (H, W, C)) is the default shape for folder images.
pub fn load_data_for(opts: &DataOptions, seed: u64, input: Option<(usize, usize, usize)>) -> Result<Dataset> {
    let mut ds = match &opts.images {
        Some(images) => {
            let side = images.image_size.map(|s| (s, s));
            let (height, width) = side.or(input.map(|i| (i.0, i.1))).unwrap_or((32, 32));
            let channels = images.channels.or(input.map(|i| i.2)).unwrap_or(3);
            let cache_dir = data::download::cache_root().ok().map(|r| r.join("folders"));
            let folder_opts = data::folder::FolderOptions { height, width, channels, val_split: images.val_split, seed, skip_bad: images.skip_bad, cache_dir };
            data::folder::load(&images.dir, &folder_opts)?
        }
        None => data::load_with(opts.dataset, opts.data_dir.as_deref(), seed, opts.offline)?,
    };
    if let Some(n) = opts.limit_train {
        ds.train.truncate(n);
    }
    if let Some(n) = opts.limit_test {
        ds.test.truncate(n);
    }
    if ds.train.is_empty() || ds.test.is_empty() {
        bail!("{}: the training or test split is empty", ds.name);
    }
    Ok(ds)
}

pub fn dataset_kind_by_name(name: &str) -> Option<DatasetKind> {
    use clap::ValueEnum;
    DatasetKind::from_str(name, true).ok()
}

/// Checks the model's input and class count against the data set's.
fn check_model_fits_data(model: &Model, ds: &Dataset, what: &str) -> Result<()> {
    if model.input != ds.input_shape() {
        let (a, b) = (model.input, ds.input_shape());
        bail!("{what} takes {}x{}x{} images but {} has {}x{}x{}", a.0, a.1, a.2, ds.name, b.0, b.1, b.2);
    }
    if model.classes() != ds.class_names.len() {
        bail!("{what} ends in {} class scores but {} has {} classes", model.classes(), ds.name, ds.class_names.len());
    }
    Ok(())
}

#[derive(Clone, Debug)]
pub struct TrainArgs {
    pub data: DataOptions,
    pub arch: Option<PathBuf>,
    pub epochs: usize,
    pub batch_size: Option<usize>,
    pub learning_rate: Option<f32>,
    pub seed: Option<u64>,
    pub out: Option<PathBuf>,
    pub resume: Option<PathBuf>,
    pub progress: bool,
    /// None: the checkpoint's when resuming, else no augmentation.
    pub augment: Option<Augmentation>,
}

/// A fresh run directory: runs/<dataset>, then runs/<dataset>-2, -3, ... so nothing saved
/// by an earlier run is overwritten.
fn fresh_run_dir(dataset: &str) -> PathBuf {
    let base = PathBuf::from("runs");
    (1..).map(|i| if i == 1 { base.join(dataset) } else { base.join(format!("{dataset}-{i}")) }).find(|p| !p.exists()).unwrap()
}

pub fn train(args: &TrainArgs, device: &str) -> Result<()> {
    with_backend!(device, backend => train_on(backend, args))
}

pub fn train_on<B: Backend>(backend: B, args: &TrainArgs) -> Result<()> {
    let resume: Option<Checkpoint> = args.resume.as_deref().map(checkpoint::load).transpose()?;
    let arch_text = match (&resume, &args.arch) {
        (Some(ck), Some(path)) => {
            let given = read_arch(Some(path))?;
            if given != ck.meta.arch {
                bail!("{} was trained with a different architecture than {}:\n{}", args.resume.as_ref().unwrap().display(), path.display(), ck.meta.arch);
            }
            given
        }
        (Some(ck), None) => ck.meta.arch.clone(),
        (None, arch) => read_arch(arch.as_deref())?,
    };
    let seed = args.seed.or(resume.as_ref().map(|c| c.meta.seed)).unwrap_or(0);
    let batch_size = args.batch_size.or(resume.as_ref().map(|c| c.meta.batch_size)).unwrap_or(32);
    let learning_rate = args.learning_rate.or(resume.as_ref().map(|c| c.meta.learning_rate)).unwrap_or(1e-3);
    let augment = args.augment.or(resume.as_ref().map(|c| c.meta.augment)).unwrap_or(Augmentation::NONE);
    if batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    if !(learning_rate > 0.0 && learning_rate.is_finite()) {
        bail!("--learning-rate must be a positive number");
    }
    let ds = load_data_for(&args.data, seed, resume.as_ref().map(|c| c.meta.input))?;
    let model = Model::new(&parse_arch(&arch_text)?, ds.input_shape()).context("the architecture does not fit the data")?;
    check_model_fits_data(&model, &ds, "the model")?;
    eprintln!("Device: {}", backend.describe());
    eprintln!("Data: {} ({} training, {} test images of {}x{}x{}, {} classes)", ds.name, ds.train.len(), ds.test.len(), model.input.0, model.input.1, model.input.2, ds.class_names.len());
    let mut net = Network::new(backend, model, batch_size, seed).with_context(|| format!("batch size {batch_size} does not fit the device"))?;
    net.adam.learning_rate = learning_rate;
    let mut history = Vec::new();
    if let Some(ck) = &resume {
        let path = args.resume.as_ref().unwrap();
        if ck.meta.input != ds.input_shape() || ck.meta.class_names.len() != ds.class_names.len() {
            bail!("{}: trained on {} ({} classes), which does not match {}", path.display(), ck.meta.dataset, ck.meta.class_names.len(), ds.name);
        }
        net.load_state(&ck.tensors, true).with_context(|| format!("{}: does not match the model", path.display()))?;
        net.step = ck.meta.step;
        history = ck.meta.history.clone();
        if history.len() >= args.epochs {
            bail!("{} has already done {} epochs; ask for more with --epochs (the total)", path.display(), history.len());
        }
        eprintln!("Resuming from {} after epoch {} (step {})", path.display(), ck.meta.epoch, ck.meta.step);
    }
    let out = match (&args.out, &args.resume) {
        (Some(o), _) => o.clone(),
        (None, Some(r)) => r.parent().map(Path::to_path_buf).unwrap_or_default(),
        (None, None) => fresh_run_dir(&ds.name),
    };
    eprintln!("Run directory: {}", out.display());
    if !augment.is_none() {
        eprintln!("Augmentation: {} (training batches only)", augment.name());
    }
    let opts = TrainOptions { epochs: args.epochs, batch_size, seed, out_dir: Some(out.clone()), arch_text: arch_text.clone(), progress: args.progress, augment };
    let history = train::fit(&mut net, &ds, &opts, history)?;
    let settings = report_settings(&ds.name, &arch_text, net.model.input, &history, batch_size, learning_rate, seed, augment, &net.backend.describe());
    let title = format!("gpu-cnn training run: {}", ds.name);
    let conf = report::report_network(&mut net, &ds.test, &ds.class_names, &history, title, settings, &out)?;
    eprint!("\n{}\n{}\n", conf.per_class_text(), conf.matrix_text());
    eprintln!("Pictures: predictions.png, curves.png, confusion.png; everything in {}", out.join("report.html").display());
    if let Some(last) = history.last() {
        eprintln!(
            "Done: {} epochs, test accuracy {:.4}, test loss {:.4}; peak memory {:.0} MB; checkpoints in {}",
            history.len(),
            last.val_accuracy,
            last.val_loss,
            train::peak_rss_bytes() as f64 / 1e6,
            out.display()
        );
    }
    Ok(())
}

#[derive(Clone, Debug)]
pub struct EvaluateArgs {
    pub checkpoint: PathBuf,
    /// None: the data set the checkpoint was trained on.
    pub dataset: Option<DatasetKind>,
    pub data_dir: Option<PathBuf>,
    pub limit_test: Option<usize>,
    pub batch_size: usize,
    pub json: bool,
    /// Where to write the pictures and report.html; None: the checkpoint's folder.
    pub out: Option<PathBuf>,
    pub offline: bool,
    /// Evaluate on a folder of images (its test/ folder, or the validation split).
    pub images: Option<ImageFolderArgs>,
}

pub fn evaluate(args: &EvaluateArgs, device: &str) -> Result<String> {
    with_backend!(device, backend => evaluate_on(backend, args))
}

pub fn evaluate_on<B: Backend>(backend: B, args: &EvaluateArgs) -> Result<String> {
    let ck = checkpoint::load(&args.checkpoint)?;
    let kind = match args.dataset.or_else(|| dataset_kind_by_name(&ck.meta.dataset)) {
        Some(k) => k,
        // Not used: the folder replaces the data set.
        None if args.images.is_some() => DatasetKind::Synthetic,
        None => bail!("{}: trained on '{}'; say which data set to evaluate on with --dataset, or --data DIR for a folder of images", args.checkpoint.display(), ck.meta.dataset),
    };
    let data = DataOptions { dataset: kind, data_dir: args.data_dir.clone(), limit_train: Some(1), limit_test: args.limit_test, offline: args.offline, images: args.images.clone() };
    let ds = load_data_for(&data, ck.meta.seed, Some(ck.meta.input))?;
    if args.images.is_some() && ds.class_names != ck.meta.class_names {
        bail!("{}: trained on the classes {:?} but {} has {:?}", args.checkpoint.display(), ck.meta.class_names, ds.name, ds.class_names);
    }
    let model = ck.model().with_context(|| format!("{}: its architecture", args.checkpoint.display()))?;
    check_model_fits_data(&model, &ds, &format!("{}", args.checkpoint.display()))?;
    let device = backend.describe();
    let mut net = Network::new(backend, model, args.batch_size.max(1), 0)?;
    net.load_state(&ck.tensors, false).with_context(|| format!("{}: does not match its architecture", args.checkpoint.display()))?;
    let test = net.backend.upload_image_set(&ds.test)?;
    let m = net.evaluate(&test, ds.test.len())?;
    let out = args.out.clone().unwrap_or_else(|| args.checkpoint.parent().map(Path::to_path_buf).unwrap_or_default());
    let settings = report_settings(&ds.name, &ck.meta.arch, ck.meta.input, &ck.meta.history, ck.meta.batch_size, ck.meta.learning_rate, ck.meta.seed, ck.meta.augment, &device);
    let title = format!("gpu-cnn evaluation: {} on {}", args.checkpoint.display(), ds.name);
    let conf = report::report_network(&mut net, &ds.test, &ds.class_names, &ck.meta.history, title, settings, &out)?;
    Ok(if args.json {
        serde_json::to_string_pretty(&serde_json::json!({
            "checkpoint": args.checkpoint.display().to_string(),
            "dataset": ds.name,
            "images": m.count,
            "loss": m.loss,
            "accuracy": m.accuracy,
            "device": device,
            "confusion": conf.to_json(),
            "report": out.join("report.html").display().to_string(),
        }))?
    } else {
        format!(
            "{} test images of {}: loss: {:.4} - accuracy: {:.4}\n\n{}\n{}\nPictures and report.html in {}",
            m.count, ds.name, m.loss, m.accuracy, conf.per_class_text(), conf.matrix_text(), out.display()
        )
    })
}

#[derive(Clone, Debug)]
pub struct BenchArgs {
    /// Devices to measure; empty: every device there is.
    pub devices: Vec<String>,
    pub quick: bool,
    /// Batch sizes for the kernel table (replaces the defaults).
    pub batches: Vec<usize>,
    pub json: Option<PathBuf>,
}

/// Every device `bench` measures when none is named: the CPU backend and each adapter.
fn all_devices() -> Vec<String> {
    let mut devices = vec!["cpu".to_string()];
    devices.extend(crate::backend::gpu::list_adapters().iter().map(|a| a.index.to_string()));
    devices
}

pub fn bench(args: &BenchArgs) -> Result<()> {
    use crate::bench::{bench_device, format_table, BenchOptions};
    let devices = if args.devices.is_empty() { all_devices() } else { args.devices.clone() };
    let mut reports = Vec::new();
    for device in &devices {
        let per_submit = if device == "cpu" { 1 } else { 10 };
        let mut opts = if args.quick { BenchOptions::quick(per_submit) } else { BenchOptions::full(per_submit) };
        if !args.batches.is_empty() {
            opts.kernel_batches = args.batches.clone();
        }
        eprintln!("benchmarking {device} ...");
        let report = match crate::device::open(device)? {
            crate::device::Device::Cpu(_) => bench_device(&|| Ok(crate::backend::cpu::CpuBackend::new()), &opts)?,
            crate::device::Device::Gpu(_) => bench_device(&|| match crate::device::open(device)? {
                crate::device::Device::Gpu(g) => Ok(*g),
                crate::device::Device::Cpu(_) => bail!("device {device} went away"),
            }, &opts)?,
        };
        println!("{}", format_table(&report));
        reports.push(report);
    }
    if let Some(path) = &args.json {
        let json = serde_json::json!({ "devices": reports, "machine": machine_name() });
        std::fs::write(path, serde_json::to_string_pretty(&json)?).with_context(|| format!("{}: cannot write", path.display()))?;
    }
    Ok(())
}

/// The CPU model and core count, for naming the machine next to figures.
pub fn machine_name() -> String {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("model name")).and_then(|l| l.split(':').nth(1)).map(|s| s.trim().to_string()))
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    format!("{model}, {} cores", std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// The settings a run's report shows first.
#[allow(clippy::too_many_arguments)]
fn report_settings(dataset: &str, arch: &str, input: (usize, usize, usize), history: &[train::EpochRecord], batch_size: usize, learning_rate: f32, seed: u64, augment: Augmentation, device: &str) -> Vec<(String, String)> {
    [
        ("data set", dataset.to_string()),
        ("input", format!("{}x{}x{}", input.0, input.1, input.2)),
        ("architecture", arch.trim_end().to_string()),
        ("epochs done", history.len().to_string()),
        ("batch size", batch_size.to_string()),
        ("learning rate", learning_rate.to_string()),
        ("seed", seed.to_string()),
        ("augmentation", augment.name()),
        ("device", device.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// `gpu-cnn predict`: see predict.rs.
pub fn predict(args: &crate::predict::PredictArgs, device: &str) -> Result<crate::predict::PredictOutput> {
    with_backend!(device, backend => crate::predict::predict_on(backend, args))
}

/// `gpu-cnn show`: the first 25 training images named by class in a 5x5 grid, saved as PNG.
pub fn show(data: &DataOptions, out: &Path) -> Result<()> {
    let ds = load_data(data, 0)?;
    let grid = report::grid::sample_grid(&ds.train, &ds.class_names, report::GRID_IMAGES, report::GRID_COLUMNS);
    grid.save(out).with_context(|| format!("{}: cannot write", out.display()))
}
