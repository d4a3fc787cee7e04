//! [`Trainer`]: training from Rust code, and what `gpu-cnn train` runs once it has resolved its
//! flags: the network, resuming, the run directory's lock, the loop (`train::run`) with the
//! optimizers, schedules and callbacks, and the run report.

use crate::augment::Augmentation;
use crate::backend::Backend;
use crate::callbacks::{EarlyStopping, Recipe, ReduceLrOnPlateau};
use crate::checkpoint::Checkpoint;
use crate::classifier::{Classifier, Device};
use crate::commands::callbacks_text;
use crate::data::Dataset;
use crate::history::EpochRecord;
use crate::model::{format_arch, parse_arch, LayerSpec, Model};
use crate::network::{HostTensor, Network};
use crate::optimizer::{check_label_smoothing, Optimizer};
use crate::report::{self, confusion::Confusion};
use crate::schedule::LrSchedule;
use crate::train::{self, TrainOptions};
use anyhow::{bail, Context, Result};
use std::path::PathBuf;

/// How to train (Keras's defaults, as `gpu-cnn train`).
#[derive(Clone, Debug)]
pub struct TrainConfig {
    pub epochs: usize,
    pub batch_size: usize,
    pub learning_rate: f32,
    /// The optimizer (Keras's Adam by default; give SGD its own learning rate, Keras's 0.01).
    pub optimizer: Optimizer,
    /// Keras's CategoricalCrossentropy(label_smoothing): 0 trains on one-hot targets.
    pub label_smoothing: f32,
    /// Seeds the initial weights, the shuffles and the augmentation.
    pub seed: u64,
    pub augment: Augmentation,
    pub device: Device,
    /// Where to write `last.safetensors`, `best.safetensors` and `history.json`; None: nowhere.
    pub out_dir: Option<PathBuf>,
    /// Show the live progress bar on stderr.
    pub progress_bar: bool,
    /// The learning-rate schedule (`LrSchedule::new(kind, warmup_epochs, step_epochs,
    /// epochs)`; the default is a constant rate).
    pub schedule: LrSchedule,
    /// Keras's EarlyStopping(monitor="val_loss", restore_best_weights=True) with this patience.
    pub early_stopping: Option<usize>,
    /// Keras's ReduceLROnPlateau(monitor="val_loss", factor=0.1) with this patience.
    pub reduce_lr_on_plateau: Option<usize>,
    /// Replace an earlier run's checkpoints and history in `out_dir` (as `--overwrite`);
    /// without it a folder holding files is refused.
    pub overwrite: bool,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            epochs: 10,
            batch_size: 32,
            learning_rate: 1e-3,
            optimizer: Optimizer::default(),
            label_smoothing: 0.0,
            seed: 0,
            augment: Augmentation::NONE,
            device: Device::Auto,
            out_dir: None,
            progress_bar: false,
            schedule: LrSchedule::default(),
            early_stopping: None,
            reduce_lr_on_plateau: None,
            overwrite: false,
        }
    }
}

/// Called after each epoch with its record (loss, accuracy, val_loss, val_accuracy, seconds).
pub type EpochCallback = Box<dyn FnMut(&EpochRecord)>;

/// A run resolved down to what the training loop reads: built from a [`TrainConfig`], or by
/// `gpu-cnn train` from its flags merged with the checkpoint it resumes.
#[derive(Clone, Debug)]
pub struct RunPlan {
    /// Epochs, batch size, seed, architecture text, augmentation, base learning rate, the
    /// schedule and callbacks with their state, the pipeline and data source stored in
    /// checkpoints, the run directory.
    pub options: TrainOptions,
    pub optimizer: Optimizer,
    /// Keras's CategoricalCrossentropy label_smoothing (0: none).
    pub label_smoothing: f32,
    /// Per-class loss weights (`--class-weight balanced`); None: unweighted.
    pub class_weights: Option<Vec<f32>>,
}

/// What happens to the run directory (`options.out_dir`) before the first epoch. Whatever the
/// choice, the directory is locked for the run: two runs never write one folder.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum RunDir {
    /// A fresh run: refused if the folder holds an earlier run's files.
    #[default]
    Fresh,
    /// A fresh run that may replace an earlier run's files (`--overwrite`).
    Overwrite,
    /// The run continues the folder it resumes from (its `last.safetensors`).
    Continue,
}

/// Trains a model on a data set: `Trainer::new(layers, data, config).fit()`.
pub struct Trainer {
    layers: Vec<LayerSpec>,
    data: Dataset,
    plan: RunPlan,
    run_dir: RunDir,
    resume: Option<(Checkpoint, PathBuf)>,
    verbose: bool,
    report: Option<ReportRequest>,
    on_epoch: Option<EpochCallback>,
    /// Where `fit` trains (`fit_on` takes a backend instead).
    device: Device,
}

/// The run report (`report.html`, pictures) written into the run directory after training.
struct ReportRequest {
    /// The test images' files (a folder data set), shown in the report's pictures.
    test_files: Option<Vec<PathBuf>>,
}

/// What training produced: the history and the final weights (a checkpoint in memory).
pub struct TrainedModel {
    pub history: Vec<EpochRecord>,
    /// The final weights and optimizer state with their metadata, as `last.safetensors`.
    pub checkpoint: Checkpoint,
    /// The device it trained on, in words.
    pub device: String,
    /// The test split's confusion matrix, when a report was asked for ([`Trainer::report`]).
    pub confusion: Option<Confusion>,
}

impl TrainedModel {
    /// Writes the checkpoint as a safetensors file (atomically), loadable by `Classifier::load`,
    /// `gpu-cnn predict` and `--resume`.
    pub fn save(&self, path: impl AsRef<std::path::Path>) -> Result<()> {
        crate::checkpoint::save(path.as_ref(), &self.checkpoint.meta, &self.checkpoint.tensors)
    }

    /// A classifier with the trained weights, on `device`.
    pub fn classifier(&self, device: Device) -> Result<Classifier> {
        let ck = Checkpoint { meta: self.checkpoint.meta.clone(), tensors: self.checkpoint.tensors.clone() };
        Classifier::from_checkpoint(ck, device, crate::classifier::DEFAULT_MAX_BATCH)
    }
}

impl Trainer {
    /// `layers`: e.g. `model::seed_layers()` or `model::parse_arch(text)?`.
    pub fn new(layers: Vec<LayerSpec>, data: Dataset, config: TrainConfig) -> Trainer {
        let c = config;
        let recipe = Recipe {
            schedule: c.schedule,
            early_stopping: c.early_stopping.map(EarlyStopping::new),
            reduce_lr: c.reduce_lr_on_plateau.map(ReduceLrOnPlateau::new),
        };
        let options = TrainOptions {
            epochs: c.epochs,
            batch_size: c.batch_size,
            seed: c.seed,
            out_dir: c.out_dir,
            arch_text: format_arch(&layers),
            progress: c.progress_bar,
            augment: c.augment,
            preprocessing: None,
            data_source: None,
            learning_rate: c.learning_rate,
            recipe,
        };
        let plan = RunPlan { options, optimizer: c.optimizer, label_smoothing: c.label_smoothing, class_weights: None };
        let run_dir = if c.overwrite { RunDir::Overwrite } else { RunDir::Fresh };
        Trainer { layers, data, plan, run_dir, resume: None, verbose: false, report: None, on_epoch: None, device: c.device }
    }

    /// A run planned in full (what `gpu-cnn train` resolves from its flags); the layers are
    /// the plan's architecture text.
    pub fn planned(data: Dataset, plan: RunPlan, run_dir: RunDir) -> Result<Trainer> {
        let layers = parse_arch(&plan.options.arch_text)?;
        Ok(Trainer { layers, data, plan, run_dir, resume: None, verbose: false, report: None, on_epoch: None, device: Device::Auto })
    }

    /// Continues the run `checkpoint` (read from `path`) saved: its weights, optimizer state,
    /// step and history (the plan's recipe should carry the checkpoint's callback states). When
    /// `path` is the run directory's own last.safetensors, the run continues that folder.
    pub fn resume(mut self, checkpoint: Checkpoint, path: impl Into<PathBuf>) -> Trainer {
        let path = path.into();
        if self.plan.options.out_dir.as_deref().is_some_and(|out| crate::run_dir::continues_run(&path, out)) {
            self.run_dir = RunDir::Continue;
        }
        self.resume = Some((checkpoint, path));
        self
    }

    /// Prints what the run will do (device, data, optimizer, recipe) before the first epoch,
    /// as `gpu-cnn train` does.
    pub fn verbose(mut self) -> Trainer {
        self.verbose = true;
        self
    }

    /// After training, writes the run report (report.html, predictions.png, curves.png,
    /// confusion.png) into the run directory and returns the test split's confusion matrix.
    pub fn report(mut self, test_files: Option<Vec<PathBuf>>) -> Trainer {
        self.report = Some(ReportRequest { test_files });
        self
    }

    /// Calls `f` after every epoch (progress reporting, early stopping decisions, logging).
    pub fn on_epoch(mut self, f: impl FnMut(&EpochRecord) + 'static) -> Trainer {
        self.on_epoch = Some(Box::new(f));
        self
    }

    /// Trains for `config.epochs` epochs on the device the config names.
    pub fn fit(self) -> Result<TrainedModel> {
        let request = self.device.request()?;
        crate::with_backend!(request, backend => self.fit_on(backend))
    }

    /// Trains on `backend` (the CLI opens the device itself, to say which it took).
    pub fn fit_on<B: Backend>(mut self, backend: B) -> Result<TrainedModel> {
        if self.plan.options.preprocessing.is_none() {
            // A data set handed over in memory has no files: the pipeline is the one `predict`
            // should use on photos for it (the built-in data sets' rule), and no folder source.
            self.plan.options.preprocessing = Some(crate::commands::dataset_preprocessing(&self.data)?);
        }
        let plan = &self.plan;
        let opts = &plan.options;
        if opts.batch_size == 0 || opts.epochs == 0 {
            bail!("epochs and batch size must be at least 1");
        }
        if !(opts.learning_rate > 0.0 && opts.learning_rate.is_finite()) {
            bail!("the learning rate must be a positive number");
        }
        if self.report.is_some() && opts.out_dir.is_none() {
            bail!("a run report is written into the run directory: set TrainConfig::out_dir (or leave out .report())");
        }
        let ds = &self.data;
        ds.check()?;
        plan.optimizer.check()?;
        check_label_smoothing(plan.label_smoothing)?;
        opts.recipe.validate()?;
        opts.augment.check()?;
        check_layers(&self.layers)?;
        let model = Model::new(&self.layers, ds.input_shape()).context("the architecture does not fit the data")?;
        crate::commands::check_model_fits_data(&model, ds, "the model")?;
        if let Some((ck, path)) = &self.resume {
            check_resume(ck, path, &self.layers, plan, ds)?;
        }
        if self.verbose {
            crate::stderr_line!("Device: {}", backend.describe());
            let (h, w, c) = model.input;
            crate::stderr_line!(
                "Data: {} ({} training, {} test images of {h}x{w}x{c}, {} classes)",
                ds.name,
                ds.train.len(),
                ds.test.len(),
                ds.class_names.len()
            );
        }
        // No pass ever holds more images than the larger split (Keras takes a batch larger than
        // the data as one batch of all of it), so buffers for more would only waste memory.
        let batch_size = opts.batch_size.min(ds.train.len().max(ds.test.len())).max(1);
        let batch_text = match opts.batch_size {
            asked if asked == batch_size => format!("batch size {asked}"),
            asked => format!("batch size {asked} ({batch_size} images: all the data)"),
        };
        let mut net = Network::new(backend, model, batch_size, opts.seed).with_context(|| match batch_size {
            1 => "the model does not fit the device, even at batch size 1".to_string(),
            _ => format!("{batch_text} does not fit the device"),
        })?;
        net.set_optimizer(plan.optimizer)?;
        net.label_smoothing = plan.label_smoothing;
        net.set_class_weights(plan.class_weights.as_deref())?;
        let mut history = Vec::new();
        if let Some((ck, path)) = &self.resume {
            net.load_state(&ck.tensors, true).with_context(|| format!("{}: does not match the model", path.display()))?;
            net.step = ck.meta.step;
            history = ck.meta.history.clone();
            if self.verbose {
                crate::stderr_line!("Resuming from {} after epoch {} (step {})", path.display(), ck.meta.epoch, ck.meta.step);
            }
        }
        // Dropped in reverse order: the replaced files are settled while the lock is held.
        let (_lock, mut replaced) = match &opts.out_dir {
            Some(dir) => {
                let lock = crate::run_dir::lock(dir)?;
                let replaced = match self.run_dir {
                    RunDir::Continue => None,
                    _ => crate::run_dir::prepare_fresh(dir, self.run_dir == RunDir::Overwrite)?,
                };
                if self.verbose {
                    crate::stderr_line!("Run directory: {}", dir.display());
                }
                (Some(lock), replaced)
            }
            None => (None, None),
        };
        if self.verbose {
            print_recipe(plan, &ds.class_names);
        }
        let on_epoch = &mut self.on_epoch;
        // A Ctrl-C from here on stops the loop between steps (when the CLI installed the handler).
        let armed = crate::interrupt::armed();
        let fitted = train::run_with(&mut net, ds, opts, history, &mut |record| {
            // The epoch is saved (checkpoints and history): --overwrite's old files can go.
            if let Some(r) = replaced.as_mut() {
                r.settle();
            }
            if let Some(callback) = on_epoch.as_mut() {
                callback(record);
            }
        })?;
        drop(armed);
        let meta = opts.checkpoint_meta(&net, ds, &fitted.history, &fitted.recipe);
        let confusion = match (&self.report, &opts.out_dir) {
            (Some(request), Some(dir)) => {
                let settings = crate::commands::report_settings(&meta, &net.backend.describe());
                let title = format!("gpu-cnn training run: {}", ds.name);
                let test_files = request.test_files.as_deref();
                Some(report::report_network(&mut net, &ds.test, test_files, &ds.class_names, &fitted.history, title, settings, dir)?)
            }
            _ => None,
        };
        // As last.safetensors holds them: the weights, then the optimizer's state (so the
        // model can be saved and resumed from memory too).
        let mut tensors: Vec<HostTensor> = net.weights()?;
        tensors.extend(net.optimizer_state()?);
        Ok(TrainedModel { history: fitted.history, checkpoint: Checkpoint { meta, tensors }, device: net.backend.describe(), confusion })
    }
}

/// Layers built in code must be ones an architecture file could give: the checkpoints store
/// them as text, and a value `parse_arch` refuses (a dropout rate of 1, a BatchNormalization
/// epsilon of 0) would make every file the run saves unloadable.
fn check_layers(layers: &[LayerSpec]) -> Result<()> {
    let text = format_arch(layers);
    let parsed = parse_arch(&text).context("the model's layers")?;
    if parsed != layers {
        bail!("the model's layers do not read back from their architecture text (a value that is not a number?):\n{text}");
    }
    Ok(())
}

/// A resumed checkpoint must be intact (its fields may have been set in code), of this
/// model, trained on data of this shape and class count, with epochs left to do, and with
/// the optimizer whose state it holds.
fn check_resume(ck: &Checkpoint, path: &std::path::Path, layers: &[LayerSpec], plan: &RunPlan, ds: &Dataset) -> Result<()> {
    ck.check().with_context(|| format!("{}: cannot be resumed", path.display()))?;
    // Compared as layers: older checkpoints store the classic text form.
    if parse_arch(&ck.meta.arch)? != layers {
        bail!("{} was trained with a different architecture:\n{}", path.display(), ck.meta.arch);
    }
    check_resume_fits_data(ck, path, ds, plan.options.epochs)?;
    let (then, now) = (&ck.meta.optimizer, &plan.optimizer);
    if then.name() != now.name() || then.slot_names() != now.slot_names() {
        bail!("{} was trained with {} and holds its state; {} cannot continue it", path.display(), then.describe(), now.describe());
    }
    Ok(())
}

/// A resumed checkpoint must have been trained on data of this shape and class count, and
/// have epochs left to do.
pub(crate) fn check_resume_fits_data(ck: &Checkpoint, path: &std::path::Path, ds: &Dataset, epochs: usize) -> Result<()> {
    if ck.meta.input != ds.input_shape() {
        let (a, b) = (ck.meta.input, ds.input_shape());
        bail!(
            "{}: trained on {}x{}x{} images in {} classes ({}), but the data here are {}x{}x{} images in {} classes ({})",
            path.display(),
            a.0,
            a.1,
            a.2,
            ck.meta.class_names.len(),
            ck.meta.dataset,
            b.0,
            b.1,
            b.2,
            ds.class_names.len(),
            ds.name
        );
    }
    // Labels are indices into the class list: another list (a class folder renamed, added or
    // removed) would train each image towards another class's output.
    if ck.meta.class_names != ds.class_names {
        bail!(
            "{}: trained on the classes {:?}, but {} has {}; a resume needs the same classes in the same order (their positions are the labels): start a new run, or name the folders as before",
            path.display(),
            ck.meta.class_names,
            ds.name,
            class_changes(&ck.meta.class_names, &ds.class_names)
        );
    }
    if ck.meta.history.len() >= epochs {
        bail!("{} has already done {} epochs; ask for more with --epochs (the total)", path.display(), ck.meta.history.len());
    }
    Ok(())
}

/// How the class list `now` differs from `then`, in words.
fn class_changes(then: &[String], now: &[String]) -> String {
    let new: Vec<&String> = now.iter().filter(|c| !then.contains(c)).collect();
    let gone: Vec<&String> = then.iter().filter(|c| !now.contains(c)).collect();
    match (new.is_empty(), gone.is_empty()) {
        (true, true) => format!("them in another order: {now:?}"),
        (false, true) => format!("{} more: {new:?}", now.len() - then.len()),
        (true, false) => format!("no {gone:?}"),
        (false, false) => format!("{new:?} and no {gone:?}"),
    }
}

/// The optimizer, loss and recipe lines `gpu-cnn train` prints before the first epoch.
fn print_recipe(plan: &RunPlan, class_names: &[String]) {
    let opts = &plan.options;
    crate::stderr_line!("Optimizer: {}, learning rate {}", plan.optimizer.describe(), opts.learning_rate);
    if plan.label_smoothing != 0.0 {
        crate::stderr_line!("Label smoothing: {} (training and validation loss)", plan.label_smoothing);
    }
    if !opts.augment.is_none() {
        crate::stderr_line!("Augmentation: {} (training batches only)", opts.augment.name());
    }
    if let Some(w) = &plan.class_weights {
        let list: Vec<String> = class_names.iter().zip(w).map(|(n, w)| format!("{n} {w:.4}")).collect();
        crate::stderr_line!("Class weights (balanced, training loss only): {}", list.join(", "));
    }
    let recipe = &opts.recipe;
    if !recipe.schedule.is_constant() || recipe.early_stopping.is_some() || recipe.reduce_lr.is_some() {
        crate::stderr_line!("Learning rate: {}, {}{}", opts.learning_rate, recipe.schedule.describe(), callbacks_text(recipe));
        if !recipe.schedule.is_constant() && recipe.schedule.epochs != opts.epochs {
            crate::stderr_line!(
                "note: the schedule keeps the {} epochs it was planned over (give --lr-schedule to plan it over {})",
                recipe.schedule.epochs,
                opts.epochs
            );
        }
    }
}
