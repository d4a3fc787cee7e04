//! What each CLI subcommand does, given its already-parsed options. main.rs only parses.

use crate::backend::gpu::DeviceRequest;
use crate::backend::Backend;
use crate::checkpoint::{self, Checkpoint, CheckpointMeta};
use crate::data::{self, Dataset, DatasetKind};
use crate::image_pipeline::{Background, ColorMode, Interpolation, Preprocessing, ResizeMode};
use crate::model::{format_arch, parse_arch, summary_table, with_classes, Model, SEED_ARCH};
use crate::report;
use crate::report::plural;
use crate::trainer::{RunDir, Trainer};
use crate::with_backend;
use anyhow::{bail, Context, Result};
use std::io::Write;
use std::path::{Path, PathBuf};
use train_settings::TrainSettings;

pub mod train_settings;

/// The largest architecture file read (1 MiB: tens of thousands of layers).
pub const MAX_ARCH_BYTES: u64 = 1 << 20;

/// The largest `--image-size`: the image pipeline's limit.
pub const MAX_IMAGE_SIZE: usize = crate::image_pipeline::MAX_INPUT_SIDE;

/// Reads an architecture file, or the seed model when none is given.
pub fn read_arch(path: Option<&Path>) -> Result<String> {
    let text = match path {
        Some(p) => {
            let bytes = crate::fallible::read_capped(p, MAX_ARCH_BYTES, "an architecture file")?;
            let text = String::from_utf8(bytes).map_err(|_| anyhow::anyhow!("{}: the architecture file is not UTF-8 text", p.display()))?;
            // Some editors start UTF-8 files with a byte-order mark; it is not part of a name.
            text.strip_prefix('\u{feff}').map(str::to_string).unwrap_or(text)
        }
        None => SEED_ARCH.to_string(),
    };
    let layers = parse_arch(&text).with_context(|| format!("{}: invalid architecture", path.map_or("seed model".into(), |p| p.display().to_string())))?;
    Ok(format_arch(&layers))
}

/// `summary`: `classes` fills in a last layer of `dense classes` (default 10); given, it must
/// also match an explicit count.
pub fn summary(arch: Option<&Path>, input: (usize, usize, usize), classes: Option<usize>) -> Result<String> {
    let specs = parse_arch(&read_arch(arch)?)?;
    let specs = match classes {
        Some(n) => with_classes(&specs, n)?,
        None => crate::model::fill_classes(&specs, 10)?,
    };
    let name = arch.map_or("the seed model".into(), |p| p.display().to_string());
    let model = Model::new(&specs, input).with_context(|| format!("{name}: does not fit an input of {}x{}x{}", input.0, input.1, input.2))?;
    Ok(summary_table(&model))
}

/// Prints a command's result on stdout; a full disk or a closed output is an error, not the
/// panic of `println!`.
pub fn print_out(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes()).and_then(|_| out.flush()).context("cannot write the output")
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
    /// [default: the checkpoint's, else rgb] (and so for the settings below).
    pub color: Option<ColorMode>,
    pub background: Option<Background>,
    pub resize: Option<ResizeMode>,
    pub interpolation: Option<Interpolation>,
    /// Largest image accepted, in pixels [default: image_pipeline::DEFAULT_MAX_PIXELS].
    pub max_pixels: Option<u64>,
    /// [default: the checkpoint's, else 0.2]
    pub val_split: Option<f32>,
    pub skip_bad: bool,
}

/// The default held-out fraction of a folder without train/ and test/ (Keras's examples' 0.2).
pub const DEFAULT_VAL_SPLIT: f32 = 0.2;

/// The pipeline settings for a folder: the flags given, else `base`'s (a checkpoint's), else
/// the defaults (32x32 RGB, stretch, bilinear, alpha over white).
pub fn folder_preprocessing(images: &ImageFolderArgs, base: Option<&Preprocessing>) -> Result<Preprocessing> {
    let mut p = match base {
        Some(b) => *b,
        None => Preprocessing::new((32, 32, 3))?,
    };
    if let Some(side) = images.image_size {
        (p.height, p.width) = (side, side);
    }
    p.color = images.color.unwrap_or(p.color);
    p.background = images.background.unwrap_or(p.background);
    p.resize = images.resize.unwrap_or(p.resize);
    p.interpolation = images.interpolation.unwrap_or(p.interpolation);
    p.max_pixels = images.max_pixels.unwrap_or(p.max_pixels);
    Ok(p)
}

/// How `--data` and its flags (else `base`'s settings) load a folder.
pub fn folder_options(images: &ImageFolderArgs, seed: u64, base: Option<&Preprocessing>) -> Result<data::folder::FolderOptions> {
    Ok(data::folder::FolderOptions {
        preprocessing: folder_preprocessing(images, base)?,
        val_split: images.val_split.unwrap_or(DEFAULT_VAL_SPLIT),
        seed,
        skip_bad: images.skip_bad,
        cache_dir: data::download::cache_root().ok().map(|r| r.join("folders")),
    })
}

/// What a run trained on the built-in data sets stores: their images' shape, and alpha over
/// black for MNIST-like sets (light objects on black), over white otherwise.
pub fn dataset_preprocessing(ds: &Dataset) -> Result<Preprocessing> {
    let mut p = Preprocessing::new(ds.input_shape())?;
    if ds.name.contains("mnist") {
        p.background = Background::Black;
    }
    Ok(p)
}

pub fn load_data(opts: &DataOptions, seed: u64) -> Result<Dataset> {
    load_data_for(opts, seed, None)
}

/// As `load_data`; `base` (a checkpoint's pipeline) gives the folder settings not given as flags.
pub fn load_data_for(opts: &DataOptions, seed: u64, base: Option<&Preprocessing>) -> Result<Dataset> {
    Ok(load_data_with_files(opts, seed, base)?.0)
}

/// A folder's held-out split as loaded: the file of each test image (cut to `--limit-test`
/// with the images), and the size and digest of the whole split (`held_out_fingerprint`).
pub struct HeldOutFiles {
    pub files: Vec<PathBuf>,
    pub images: usize,
    pub fingerprint: String,
}

impl HeldOutFiles {
    /// A note when this split is not the one `source` (a checkpoint's training folder) held
    /// out; None when it is, or when the checkpoint predates the digest.
    pub fn changed_since(&self, source: &checkpoint::DataSource, dir: &Path) -> Option<String> {
        let (then, digest) = (source.held_out_images?, source.held_out.as_deref()?);
        (digest != self.fingerprint).then(|| {
            format!(
                "the held-out images of {} are not the ones training held out ({} now, {then} then: images were added, removed or \
                 renamed, or the split's settings differ); training images may be among them, so their accuracy may read higher than it is",
                dir.display(),
                self.images,
            )
        })
    }
}

/// As `load_data_for`, with the held-out files of a folder data set (the report's top losses
/// name them; checkpoints store their digest).
pub fn load_data_with_files(opts: &DataOptions, seed: u64, base: Option<&Preprocessing>) -> Result<(Dataset, Option<HeldOutFiles>)> {
    let (mut ds, mut held_out) = match &opts.images {
        Some(images) => {
            if let Some(s) = images.image_size.filter(|&s| s == 0 || s > MAX_IMAGE_SIZE) {
                bail!("--image-size {s} is out of range: 1 to {MAX_IMAGE_SIZE}");
            }
            let folder = data::folder::load_with_files(&images.dir, &folder_options(images, seed, base)?)?;
            let held_out = HeldOutFiles { images: folder.test_files.len(), files: folder.test_files, fingerprint: folder.held_out };
            (folder.dataset, Some(held_out))
        }
        None => (data::load_with(opts.dataset, opts.data_dir.as_deref(), seed, opts.offline)?, None),
    };
    if let Some(n) = opts.limit_train {
        ds.train.truncate(n);
    }
    if let Some(n) = opts.limit_test {
        ds.test.truncate(n);
    }
    if let Some(h) = &mut held_out {
        h.files.truncate(ds.test.len());
    }
    ds.check()?;
    Ok((ds, held_out))
}

pub fn dataset_kind_by_name(name: &str) -> Option<DatasetKind> {
    use clap::ValueEnum;
    DatasetKind::from_str(name, true).ok()
}

/// Checks the model's input and class count against the data set's.
pub(crate) fn check_model_fits_data(model: &Model, ds: &Dataset, what: &str) -> Result<()> {
    if model.input != ds.input_shape() {
        let (a, b) = (model.input, ds.input_shape());
        bail!("{what} takes {}x{}x{} images but {} has {}x{}x{}", a.0, a.1, a.2, ds.name, b.0, b.1, b.2);
    }
    if model.classes() != ds.class_names.len() {
        bail!("{what} ends in {} class scores but {} has {}", model.classes(), ds.name, plural(ds.class_names.len(), "class"));
    }
    Ok(())
}

pub use train_settings::TrainArgs;

pub fn train(args: &TrainArgs, device: DeviceRequest) -> Result<()> {
    with_backend!(device, backend => train_on(backend, args))
}

/// `train`: resolves the settings (flags + the resumed checkpoint + the data), then runs them.
pub fn train_on<B: Backend>(backend: B, args: &TrainArgs) -> Result<()> {
    // Before the folder is decoded (minutes for a large one); 1 means "score every image" to
    // evaluate, which would leave training one image.
    if let Some(v) = args.data.images.as_ref().and_then(|i| i.val_split).filter(|v| !(*v > 0.0 && *v < 1.0)) {
        bail!("--val-split must be between 0 and 1 (exclusive) for training, not {v}");
    }
    let resume: Option<Checkpoint> = args.resume.as_deref().map(checkpoint::load).transpose()?;
    let flags = train_settings::resolve_flags(args, resume.as_ref())?;
    let base = resume.as_ref().map(Checkpoint::preprocessing).transpose()?;
    check_arch_before_decoding(args, base.as_ref())?;
    let (ds, held_out) = load_data_with_files(&args.data, flags.seed, base.as_ref())?;
    let mut settings = train_settings::resolve(args, resume.as_ref(), &ds, held_out.as_ref(), flags)?;
    // A resumed run that validates on other images than its first epochs did: say so, and
    // remember it in the checkpoints (the new split's digest alone would hide it from evaluate).
    let trained_on = resume.as_ref().map(|ck| (ck.meta.epoch, ck.meta.data_source.as_ref()));
    if let (Some((epochs_done, Some(then))), Some(now), Some(split)) = (trained_on, settings.plan.options.data_source.as_mut(), &held_out) {
        if then.folder == now.folder {
            let note = split.changed_since(then, &now.folder);
            if let Some(note) = &note {
                crate::stderr_line!("note: {note}");
            }
            now.reshuffled_after = then.reshuffled_after.or(note.map(|_| epochs_done));
        }
    }
    let resume = match (resume, args.resume.as_deref()) {
        (Some(ck), Some(path)) => Some((ck, path)),
        _ => None,
    };
    let result = run_training(backend, &settings, ds, held_out.map(|h| h.files), resume);
    if result.is_err() && settings.out_is_new {
        // Removes only empty folders: one holding a saved epoch stays, and so does runs/ with
        // other runs in it (an empty runs/ inside a photo folder would read as a class).
        if std::fs::remove_dir(&settings.out).is_ok() {
            let _ = settings.out.parent().map(std::fs::remove_dir);
        }
    }
    result
}

/// An architecture file that is missing, invalid, or too deep for a folder's image size fails
/// before the folder is decoded (minutes for a large one), not after. The class count is not
/// known yet; it does not change whether the layers fit.
fn check_arch_before_decoding(args: &TrainArgs, base: Option<&Preprocessing>) -> Result<()> {
    let Some(path) = &args.arch else { return Ok(()) };
    let layers = crate::model::fill_classes(&parse_arch(&read_arch(Some(path))?)?, 2)?;
    if let Some(images) = &args.data.images {
        let input = folder_preprocessing(images, base)?.input_shape();
        Model::new(&layers, input).with_context(|| format!("{}: the architecture does not fit {}x{}x{} images", path.display(), input.0, input.1, input.2))?;
    }
    Ok(())
}

/// Runs resolved settings through the library's [`Trainer`] (from the checkpoint when
/// resuming), then prints the per-class scores and where everything went.
fn run_training<B: Backend>(
    backend: B,
    settings: &TrainSettings,
    ds: Dataset,
    test_files: Option<Vec<PathBuf>>,
    resume: Option<(Checkpoint, &Path)>,
) -> Result<()> {
    // A resume from the run folder's own last.safetensors continues it (Trainer::resume).
    let run_dir = if settings.overwrite { RunDir::Overwrite } else { RunDir::Fresh };
    let mut trainer = Trainer::planned(ds, settings.plan.clone(), run_dir)?.verbose().report(test_files);
    if let Some((ck, path)) = resume {
        trainer = trainer.resume(ck, path);
    }
    let trained = trainer.fit_on(backend)?;
    let out = &settings.out;
    if let Some(conf) = &trained.confusion {
        crate::stderr_line!("\n{}\n{}", conf.per_class_text_with_training(&settings.train_counts, settings.plan.class_weights.as_deref()), conf.matrix_text());
        crate::stderr_line!("Pictures: predictions.png, curves.png, confusion.png; everything in {}", out.join("report.html").display());
    }
    let history = &trained.history;
    if let Some(last) = history.last() {
        // What best.safetensors really holds (ties keep the first epoch; a resumed run's best
        // may be in another folder), read back rather than worked out again.
        let best = crate::checkpoint::load_meta(&out.join("best.safetensors"))
            .ok()
            .and_then(|m| m.history.last().map(|r| format!(" (best.safetensors: epoch {}, val_accuracy {:.4})", r.epoch, r.val_accuracy)))
            .unwrap_or_default();
        crate::stderr_line!(
            "Done: {}, val_accuracy {:.4}, val_loss {:.4}{best}; peak memory {:.0} MB; checkpoints in {}",
            plural(history.len(), "epoch"),
            last.val_accuracy,
            last.val_loss,
            crate::system_info::peak_rss_bytes() as f64 / 1e6,
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

pub fn evaluate(args: &EvaluateArgs, device: DeviceRequest) -> Result<String> {
    with_backend!(device, backend => evaluate_on(backend, args))
}

/// The folder a checkpoint was trained on, split as training split it (the pipeline settings
/// come from the checkpoint too); what `evaluate`, `review` and `train --resume` read when no
/// data flags are given.
pub fn trained_folder(src: &checkpoint::DataSource) -> ImageFolderArgs {
    ImageFolderArgs {
        dir: src.folder.clone(),
        image_size: None,
        color: None,
        background: None,
        resize: None,
        interpolation: None,
        max_pixels: None,
        val_split: Some(src.val_split),
        skip_bad: src.skip_bad,
    }
}

/// With no data flags, the folder a checkpoint was trained on must still be where it was.
pub fn check_trained_folder(src: &checkpoint::DataSource, checkpoint: &Path) -> Result<()> {
    if !src.folder.is_dir() {
        bail!(
            "{}: was trained on the folder {}, which is not there any more; give the folder's new place with --data DIR",
            checkpoint.display(),
            src.folder.display()
        );
    }
    Ok(())
}

/// Pipeline flags other than training's (`--background black`) score images that predict and
/// serve, which prepare them as training did, never see: evaluate and review say so (and
/// refuse another input shape before decoding anything).
pub fn note_other_pipeline(images: &ImageFolderArgs, trained: &Preprocessing) -> Result<()> {
    let given = folder_preprocessing(images, Some(trained))?;
    // Another input shape cannot be scored at all: say so before the folder is decoded.
    let (a, b) = (trained.input_shape(), given.input_shape());
    if a != b {
        bail!("the model takes {}x{}x{} images, but --image-size/--color-mode ask for {}x{}x{}", a.0, a.1, a.2, b.0, b.1, b.2);
    }
    if (Preprocessing { max_pixels: trained.max_pixels, ..given }) != *trained {
        crate::stderr_line!(
            "note: the images are prepared otherwise than in training ({}; training: {}), so these results are not what predict and serve, which prepare them as training did, will give",
            given.describe(),
            trained.describe()
        );
    }
    Ok(())
}

/// A folder scored by a checkpoint must have its classes: the same list, or (a test set
/// without images of some classes) some of them, whose labels are then the checkpoint's.
pub fn match_classes(ds: &mut Dataset, trained: &[String], checkpoint: &Path) -> Result<()> {
    if ds.class_names == trained {
        return Ok(());
    }
    let Some(to_trained) = ds.class_names.iter().map(|c| trained.iter().position(|t| t == c)).collect::<Option<Vec<usize>>>() else {
        bail!("{}: trained on the classes {:?} but {} has {:?}", checkpoint.display(), trained, ds.name, ds.class_names);
    };
    let missing: Vec<&String> = trained.iter().filter(|t| !ds.class_names.contains(t)).collect();
    crate::stderr_line!("note: {} has no folder for {:?}; it is scored on the other classes", ds.name, missing);
    for set in [&mut ds.train, &mut ds.test] {
        set.labels.iter_mut().for_each(|l| *l = to_trained[*l as usize] as u8);
    }
    ds.class_names = trained.to_vec();
    Ok(())
}

/// The folder `evaluate` scores and the split it takes: the flags given, filled in from the
/// checkpoint's data source (same folder, `--val-split`, seed and `--skip-bad` as training).
pub fn evaluation_folder(args: &EvaluateArgs, ck: &Checkpoint) -> Option<(ImageFolderArgs, u64)> {
    let source = ck.meta.data_source.as_ref();
    let mut images = match (&args.images, source) {
        (Some(given), _) => given.clone(),
        (None, Some(src)) if args.dataset.is_none() && args.data_dir.is_none() => trained_folder(src),
        _ => return None,
    };
    let same_folder = source.is_some_and(|src| images.dir.canonicalize().ok().as_ref() == Some(&src.folder));
    if same_folder {
        let src = source.unwrap();
        images.val_split = images.val_split.or(Some(src.val_split));
        images.skip_bad |= src.skip_bad;
    } else if images.val_split.is_none() && !matches!(crate::data::folder::split_folders(&images.dir), Ok(Some(_))) {
        // A folder training never saw (a separate test set): every image is scored, as
        // Keras's evaluate scores the whole data set it is given.
        images.val_split = Some(1.0);
    }
    Some((images, source.filter(|_| same_folder).map_or(ck.meta.seed, |s| s.seed)))
}

pub fn evaluate_on<B: Backend>(backend: B, args: &EvaluateArgs) -> Result<String> {
    if let Some(out) = args.out.as_deref().filter(|o| crate::run_dir::is_run_folder(o)) {
        bail!("{}: is a training run's folder, whose report and pictures evaluate would replace; choose another --out", out.display());
    }
    let ck = checkpoint::load(&args.checkpoint)?;
    let base = ck.preprocessing()?;
    let folder = evaluation_folder(args, &ck);
    if let Some((images, _)) = &folder {
        note_other_pipeline(images, &base)?;
    }
    if let (None, None, None, Some(src)) = (&args.images, args.dataset, &args.data_dir, &ck.meta.data_source) {
        check_trained_folder(src, &args.checkpoint)?;
    }
    let kind = match args.dataset.or_else(|| dataset_kind_by_name(&ck.meta.dataset)) {
        Some(k) => k,
        // Not used: the folder replaces the data set.
        None if folder.is_some() => DatasetKind::Synthetic,
        None => bail!(
            "{}: trained on '{}'; say which data set to evaluate on with --dataset, or --data DIR for a folder of images",
            args.checkpoint.display(),
            ck.meta.dataset
        ),
    };
    let seed = folder.as_ref().map_or(ck.meta.seed, |f| f.1);
    // The checkpoint's training folder, when this is it, split as training split it.
    let same_split = match &folder {
        Some((images, seed)) => ck.meta.data_source.as_ref().filter(|t| {
            t.folder == images.dir.canonicalize().unwrap_or_default() && t.val_split == images.val_split.unwrap_or(DEFAULT_VAL_SPLIT) && t.seed == *seed
        }),
        None => None,
    };
    let split_name = match &folder {
        Some((images, _)) => {
            let split = images.val_split.unwrap_or(DEFAULT_VAL_SPLIT);
            if let Some(split) = crate::data::folder::split_folders(&images.dir)? {
                crate::stderr_line!("Evaluating on {}", split.held_out.display());
                "test"
            } else if split == 1.0 {
                let trained_here = ck.meta.data_source.as_ref().is_some_and(|t| Some(&t.folder) == images.dir.canonicalize().ok().as_ref());
                let warning = if trained_here { " (the folder training used: its training images are among them)" } else { "" };
                crate::stderr_line!("Evaluating on every image of {}{warning}", images.dir.display());
                "all"
            } else {
                match (same_split, ck.meta.data_source.as_ref()) {
                    (Some(_), _) => {
                        crate::stderr_line!(
                            "Evaluating on the validation split training held out: {} of each class of {} (seed {seed})",
                            percent(split),
                            images.dir.display()
                        )
                    }
                    (None, Some(t)) => crate::stderr_line!(
                        "note: evaluating on a {} split of {} (seed {seed}); training held out {} of {} (seed {}), so these images may include training images",
                        percent(split),
                        images.dir.display(),
                        percent(t.val_split),
                        t.folder.display(),
                        t.seed
                    ),
                    (None, None) => crate::stderr_line!("Evaluating on a {} validation split of {} (seed {seed})", percent(split), images.dir.display()),
                }
                "validation"
            }
        }
        None => "test",
    };
    let data = DataOptions {
        dataset: kind,
        data_dir: args.data_dir.clone(),
        limit_train: Some(1),
        limit_test: args.limit_test,
        offline: args.offline,
        images: folder.as_ref().map(|f| f.0.clone()),
    };
    let (ds, held_out) = load_data_with_files(&data, seed, Some(&base))?;
    let mut ds = ds;
    if folder.is_some() {
        match_classes(&mut ds, &ck.meta.class_names, &args.checkpoint)?;
    }
    // The same folder split the same way, but not the same files: the folder changed.
    let changed = match (same_split, &held_out, &folder) {
        (Some(trained), Some(split), Some((f, _))) => split.changed_since(trained, &f.dir).or_else(|| {
            trained.reshuffled_after.map(|e| {
                format!(
                    "training was resumed after epoch {e} on a changed {}, so the epochs up to {e} trained on some of these held-out images; their accuracy may read higher than it is",
                    f.dir.display()
                )
            })
        }),
        _ => None,
    };
    if let Some(note) = &changed {
        crate::stderr_line!("note: {note}");
    }
    let test_files = held_out.map(|h| h.files);
    let model = ck.model().with_context(|| format!("{}: its architecture", args.checkpoint.display()))?;
    check_model_fits_data(&model, &ds, &format!("{}", args.checkpoint.display()))?;
    let device = backend.describe();
    // Reports the loss as training reported val_loss (Keras's compiled loss, smoothing included).
    // Never buffers for more images than there are (a big model's default batch of 256 may not
    // fit a small device when 12 images would).
    let batch = args.batch_size.clamp(1, ds.test.len().max(1));
    let mut net = crate::inference::inference_network(backend, &ck, batch).with_context(|| format!("{}: at batch size {batch}", args.checkpoint.display()))?;
    let test = net.backend.upload_image_set(&ds.test)?;
    let m = net.evaluate(&test, ds.test.len())?;
    // Metrics first: a report that cannot be written must not hide them.
    let which = if split_name == "all" { String::new() } else { format!("{split_name} ") };
    let headline = format!("{} {which}images of {}: loss: {:.4} - accuracy: {:.4}", m.count, ds.name, m.loss, m.accuracy);
    if args.json {
        crate::stderr_line!("{headline}");
    } else {
        print_out(&format!("{headline}\n"))?;
    }
    // Its own folder: never the training run's report.html and pictures.
    let out = args.out.clone().unwrap_or_else(|| args.checkpoint.parent().map(Path::to_path_buf).unwrap_or_default().join("evaluate"));
    let settings = report_settings(&ck.meta, &device);
    let title = format!("gpu-cnn evaluation: {} on {}", args.checkpoint.display(), ds.name);
    let conf = report::report_network(&mut net, &ds.test, test_files.as_deref(), &ds.class_names, &ck.meta.history, title, settings, &out)?;
    Ok(if args.json {
        serde_json::to_string_pretty(&serde_json::json!({
            "checkpoint": args.checkpoint.display().to_string(),
            "dataset": ds.name,
            "split": split_name,
            "images": m.count,
            "held_out_changed": changed.is_some(),
            "loss": m.loss,
            "accuracy": m.accuracy,
            "device": device,
            "confusion": conf.to_json(),
            "report": out.join("report.html").display().to_string(),
        }))?
    } else {
        format!("\n{}\n{}\nPictures and report.html in {}", conf.per_class_text(), conf.matrix_text(), out.display())
    })
}

#[derive(Clone, Debug)]
pub struct BenchArgs {
    /// Devices to measure; empty: every device there is.
    pub devices: Vec<DeviceRequest>,
    pub quick: bool,
    /// Batch sizes for the kernel table (replaces the defaults).
    pub batches: Vec<usize>,
    pub json: Option<PathBuf>,
}

/// Every device `bench` measures when none is named: the CPU backend and each adapter.
fn all_devices() -> Vec<DeviceRequest> {
    let mut devices = vec![DeviceRequest::Cpu];
    devices.extend(crate::backend::gpu::list_adapters().iter().map(|a| DeviceRequest::Index(a.index)));
    devices
}

pub fn bench(args: &BenchArgs) -> Result<()> {
    use crate::bench::{bench_device, format_table, BenchOptions};
    let devices = if args.devices.is_empty() { all_devices() } else { args.devices.clone() };
    let mut reports = Vec::new();
    for &device in &devices {
        let per_submit = if device == DeviceRequest::Cpu { 1 } else { 10 };
        let mut opts = if args.quick { BenchOptions::quick(per_submit) } else { BenchOptions::full(per_submit) };
        if !args.batches.is_empty() {
            opts.kernel_batches = args.batches.clone();
            opts.train_batches = args.batches.clone();
        }
        crate::stderr_line!("benchmarking {device} ...");
        let report = match crate::device::open(device)? {
            crate::device::Device::Cpu(_) => bench_device(&|| Ok(crate::backend::cpu::CpuBackend::new()), &opts)?,
            crate::device::Device::Gpu(_) => bench_device(
                &|| match crate::device::open(device)? {
                    crate::device::Device::Gpu(g) => Ok(*g),
                    crate::device::Device::Cpu(_) => bail!("device {device} went away"),
                },
                &opts,
            )?,
        };
        print_out(&format!("{}\n", format_table(&report)))?;
        reports.push(report);
    }
    if let Some(path) = &args.json {
        let json = serde_json::json!({ "devices": reports, "machine": crate::system_info::machine_name() });
        crate::atomic_file::write_atomically(path, serde_json::to_string_pretty(&json)?.as_bytes())?;
    }
    Ok(())
}

/// ", early stopping (patience 3), ReduceLROnPlateau (patience 2)" for the callbacks in use.
pub(crate) fn callbacks_text(recipe: &crate::callbacks::Recipe) -> String {
    let mut text = String::new();
    if let Some(e) = &recipe.early_stopping {
        text += &format!(", early stopping (patience {}", e.patience);
        text += &match (e.stopped_epoch, e.best_epoch) {
            (0, _) => ")".to_string(),
            (stopped, best) => format!(": stopped at epoch {stopped}, weights of epoch {best})"),
        };
    }
    if let Some(r) = &recipe.reduce_lr {
        text += &format!(", ReduceLROnPlateau (patience {}, {} so far)", r.patience, plural(r.reductions as usize, "reduction"));
    }
    text
}

/// The settings a run's report shows first, from its checkpoint metadata.
pub(crate) fn report_settings(meta: &CheckpointMeta, device: &str) -> Vec<(String, String)> {
    let (h, w, c) = meta.input;
    [
        ("data set", meta.dataset.clone()),
        ("input", format!("{h}x{w}x{c}")),
        ("architecture", meta.arch.trim_end().to_string()),
        ("epochs done", meta.history.len().to_string()),
        ("batch size", meta.batch_size.to_string()),
        ("learning rate", format!("{}, {}{}", meta.learning_rate, meta.recipe.schedule.describe(), callbacks_text(&meta.recipe))),
        ("seed", meta.seed.to_string()),
        ("augmentation", meta.augment.name()),
        ("device", device.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// `gpu-cnn predict`: see predict.rs.
pub fn predict(
    args: &crate::predict::PredictArgs,
    device: DeviceRequest,
    out: &mut dyn std::io::Write,
    err: &mut dyn std::io::Write,
) -> Result<crate::predict::PredictSummary> {
    crate::predict::predict_on(device, args, out, err)
}

/// `gpu-cnn show`: 25 training images (a sample seeded by `seed`, spread over the classes)
/// named by class in a 5x5 grid, saved as PNG.
pub fn show(data: &DataOptions, out: &Path, seed: u64) -> Result<()> {
    let ds = load_data(data, 0)?;
    let grid = report::grid::sample_grid(&ds.train, &ds.class_names, report::GRID_IMAGES, report::GRID_COLUMNS, seed);
    let format = image::ImageFormat::from_path(out).with_context(|| format!("{}: cannot tell the image format from the name (use .png)", out.display()))?;
    let mut bytes = std::io::Cursor::new(Vec::new());
    grid.write_to(&mut bytes, format).with_context(|| format!("{}: cannot encode", out.display()))?;
    crate::atomic_file::write_atomically(out, &bytes.into_inner())
}

/// 0.2 -> "20%".
fn percent(fraction: f32) -> String {
    format!("{}%", (fraction as f64 * 100.0 * 1000.0).round() / 1000.0)
}

/// `gpu-cnn review`: see review.rs.
pub fn review(args: &crate::review::ReviewArgs, device: DeviceRequest) -> Result<String> {
    with_backend!(device, backend => crate::review::review_on(backend, args))
}
