//! [`Trainer`]: training from Rust code, a thin layer over `train::run` (the loop the CLI runs),
//! with the same optimizers, schedules and callbacks.

use crate::augment::Augmentation;
use crate::backend::Backend;
use crate::callbacks::{EarlyStopping, Recipe, ReduceLrOnPlateau};
use crate::checkpoint::Checkpoint;
use crate::classifier::{Classifier, Device};
use crate::data::Dataset;
use crate::history::EpochRecord;
use crate::model::{format_arch, LayerSpec, Model};
use crate::network::{HostTensor, Network};
use crate::optimizer::{check_label_smoothing, Optimizer};
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
        }
    }
}

/// Called after each epoch with its record (loss, accuracy, val_loss, val_accuracy, seconds).
pub type EpochCallback = Box<dyn FnMut(&EpochRecord)>;

/// Trains a model on a data set: `Trainer::new(layers, data, config).fit()`.
pub struct Trainer {
    layers: Vec<LayerSpec>,
    data: Dataset,
    config: TrainConfig,
    on_epoch: Option<EpochCallback>,
}

/// What training produced: the history and the final weights (a checkpoint in memory).
pub struct TrainedModel {
    pub history: Vec<EpochRecord>,
    pub checkpoint: Checkpoint,
    /// The device it trained on, in words.
    pub device: String,
}

impl TrainedModel {
    /// A classifier with the trained weights, on `device`.
    pub fn classifier(&self, device: Device) -> Result<Classifier> {
        let ck = Checkpoint { meta: self.checkpoint.meta.clone(), tensors: self.checkpoint.tensors.clone() };
        Classifier::from_checkpoint(ck, device, crate::classifier::DEFAULT_MAX_BATCH)
    }
}

impl Trainer {
    /// `layers`: e.g. `model::seed_layers()` or `model::parse_arch(text)?`.
    pub fn new(layers: Vec<LayerSpec>, data: Dataset, config: TrainConfig) -> Trainer {
        Trainer { layers, data, config, on_epoch: None }
    }

    /// Calls `f` after every epoch (progress reporting, early stopping decisions, logging).
    pub fn on_epoch(mut self, f: impl FnMut(&EpochRecord) + 'static) -> Trainer {
        self.on_epoch = Some(Box::new(f));
        self
    }

    /// Trains for `config.epochs` epochs.
    pub fn fit(self) -> Result<TrainedModel> {
        let request = self.config.device.request()?;
        crate::with_backend!(request, backend => self.fit_on(backend))
    }

    fn fit_on<B: Backend>(mut self, backend: B) -> Result<TrainedModel> {
        let c = &self.config;
        if c.batch_size == 0 || c.epochs == 0 {
            bail!("epochs and batch size must be at least 1");
        }
        if !(c.learning_rate > 0.0 && c.learning_rate.is_finite()) {
            bail!("the learning rate must be a positive number");
        }
        let ds = &self.data;
        if ds.train.is_empty() || ds.test.is_empty() {
            bail!("{}: the training or test split is empty", ds.name);
        }
        let model = Model::new(&self.layers, ds.input_shape()).context("the architecture does not fit the data")?;
        if model.classes() != ds.class_names.len() {
            bail!("the model ends in {} class scores but {} has {} classes", model.classes(), ds.name, ds.class_names.len());
        }
        let mut net = Network::new(backend, model, c.batch_size, c.seed)?;
        c.optimizer.check()?;
        check_label_smoothing(c.label_smoothing)?;
        net.set_optimizer(c.optimizer)?;
        net.label_smoothing = c.label_smoothing;
        // A data set handed over in memory has no files: the pipeline is the one `predict`
        // should use on photos for it (the built-in data sets' rule), and no folder source.
        c.schedule.validate()?;
        let recipe = Recipe {
            schedule: c.schedule,
            early_stopping: c.early_stopping.map(EarlyStopping::new),
            reduce_lr: c.reduce_lr_on_plateau.map(ReduceLrOnPlateau::new),
        };
        let opts = TrainOptions {
            epochs: c.epochs,
            batch_size: c.batch_size,
            seed: c.seed,
            out_dir: c.out_dir.clone(),
            arch_text: format_arch(&self.layers),
            progress: c.progress_bar,
            augment: c.augment,
            preprocessing: Some(crate::commands::dataset_preprocessing(ds)?),
            data_source: None,
            learning_rate: c.learning_rate,
            recipe,
        };
        let fitted = match self.on_epoch.as_mut() {
            None => train::run(&mut net, ds, &opts, Vec::new())?,
            Some(callback) => train::run_with(&mut net, ds, &opts, Vec::new(), &mut |record| callback(record))?,
        };
        let meta = opts.checkpoint_meta(&net, ds, &fitted.history, &fitted.recipe);
        let history = fitted.history;
        let tensors: Vec<HostTensor> = net.weights()?;
        Ok(TrainedModel { history, checkpoint: Checkpoint { meta, tensors }, device: net.backend.describe() })
    }
}
