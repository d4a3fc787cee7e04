//! The training loop: shuffle each epoch, step through the batches (keeping the last partial
//! one), validate on the test split, print Keras-like progress, save history and checkpoints.

use crate::augment::Augmentation;
use crate::backend::Backend;
use crate::callbacks::{EarlyStop, Recipe, ReduceLrOnPlateau};
use crate::checkpoint::{self, CheckpointMeta};
use crate::data::Dataset;
use crate::history::{write_history, EpochRecord};
use crate::network::{Metrics, Network};
use crate::rng::Rng;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub struct TrainOptions {
    /// Total epochs: a resumed run continues until this many are done (Keras's `epochs` with
    /// `initial_epoch`).
    pub epochs: usize,
    pub batch_size: usize,
    pub seed: u64,
    /// Run directory for history.json and checkpoints; None writes nothing.
    pub out_dir: Option<PathBuf>,
    /// The architecture text stored in checkpoints.
    pub arch_text: String,
    /// Show the live progress bar (when stderr is a terminal).
    pub progress: bool,
    /// Random flips, crops, rotations, zooms, contrast and brightness of the training batches
    /// (never of the test set).
    pub augment: Augmentation,
    /// Stored in checkpoints: how files become inputs, and where folder data came from.
    pub preprocessing: Option<crate::image_pipeline::Preprocessing>,
    pub data_source: Option<checkpoint::DataSource>,
    /// The base learning rate (`--learning-rate`); the recipe sets each step's from it.
    pub learning_rate: f32,
    /// The schedule and the callbacks' states at the start (a resumed run: the checkpoint's).
    pub recipe: Recipe,
}

/// What a run did: its whole history and the recipe's state at its end.
#[derive(Clone, Debug)]
pub struct Fitted {
    pub history: Vec<EpochRecord>,
    pub recipe: Recipe,
}

/// What salts the shuffle generator, so each epoch's order depends only on (seed, epoch).
const SHUFFLE_PURPOSE: u64 = crate::rng::purpose::SHUFFLE;

/// The training order of one epoch.
pub fn epoch_order(len: usize, seed: u64, epoch: usize) -> Vec<u32> {
    let mut order: Vec<u32> = (0..len as u32).collect();
    Rng::derive(seed, SHUFFLE_PURPOSE, epoch as u64).shuffle(&mut order);
    order
}

fn format_metrics(m: &Metrics) -> String {
    format!("accuracy: {:.4} - loss: {:.4}", m.accuracy, m.loss)
}

impl TrainOptions {
    /// A run of `epochs` epochs of `arch_text` at `batch_size` with `seed`, and the defaults for
    /// the rest: Adam's rate 1e-3, constant, no callbacks, no augmentation, nothing written.
    pub fn new(arch_text: &str, epochs: usize, batch_size: usize, seed: u64) -> TrainOptions {
        TrainOptions {
            epochs,
            batch_size,
            seed,
            out_dir: None,
            arch_text: arch_text.to_string(),
            progress: false,
            augment: Augmentation::NONE,
            preprocessing: None,
            data_source: None,
            learning_rate: 1e-3,
            recipe: Recipe::default(),
        }
    }

    /// The checkpoint metadata of `net` after the epochs in `history`, with `recipe`'s state.
    pub fn checkpoint_meta<B: Backend>(&self, net: &Network<B>, ds: &Dataset, history: &[EpochRecord], recipe: &Recipe) -> CheckpointMeta {
        CheckpointMeta {
            arch: self.arch_text.clone(),
            input: net.model.input,
            class_names: ds.class_names.clone(),
            dataset: ds.name.clone(),
            epoch: history.len(),
            step: net.step,
            seed: self.seed,
            batch_size: self.batch_size,
            learning_rate: self.learning_rate,
            optimizer: net.optimizer(),
            label_smoothing: net.label_smoothing,
            augment: self.augment,
            history: history.to_vec(),
            preprocessing: self.preprocessing,
            data_source: self.data_source.clone(),
            class_weights: net.class_weights().map(<[f32]>::to_vec),
            recipe: recipe.clone(),
        }
    }

    fn steps_per_epoch(&self, ds: &Dataset) -> usize {
        ds.train.len().div_ceil(self.batch_size)
    }
}

/// Trains `net` on `ds` until `opts.epochs` epochs are done; `history` holds the epochs
/// already done (a resumed run). Returns the whole history.
pub fn fit<B: Backend>(net: &mut Network<B>, ds: &Dataset, opts: &TrainOptions, history: Vec<EpochRecord>) -> Result<Vec<EpochRecord>> {
    Ok(run(net, ds, opts, history)?.history)
}

/// `fit`, returning the recipe's final state too: the epochs, then the end of training
/// (EarlyStopping restores its best weights).
pub fn run<B: Backend>(net: &mut Network<B>, ds: &Dataset, opts: &TrainOptions, history: Vec<EpochRecord>) -> Result<Fitted> {
    run_with(net, ds, opts, history, &mut |_| {})
}

/// `run`, calling `on_epoch` with each epoch's record once it is saved (the library's
/// `Trainer::on_epoch`).
pub fn run_with<B: Backend>(
    net: &mut Network<B>,
    ds: &Dataset,
    opts: &TrainOptions,
    history: Vec<EpochRecord>,
    on_epoch: &mut dyn FnMut(&EpochRecord),
) -> Result<Fitted> {
    let fitted = epochs(net, ds, opts, history, on_epoch)?;
    finish(net, ds, opts, fitted)
}

/// The epochs alone, each saved as it ends: what an interrupted run has done when it stops.
pub fn run_epochs<B: Backend>(net: &mut Network<B>, ds: &Dataset, opts: &TrainOptions, history: Vec<EpochRecord>) -> Result<Fitted> {
    epochs(net, ds, opts, history, &mut |_| {})
}

fn epochs<B: Backend>(
    net: &mut Network<B>,
    ds: &Dataset,
    opts: &TrainOptions,
    mut history: Vec<EpochRecord>,
    on_epoch: &mut dyn FnMut(&EpochRecord),
) -> Result<Fitted> {
    // `Trainer::fit_on` checks all this first; these loops are public too.
    ds.check()?;
    crate::commands::check_model_fits_data(&net.model, ds, "the model")?;
    let largest = opts.batch_size.min(ds.train.len().max(ds.test.len()));
    if largest == 0 || largest > net.max_batch {
        bail!("batch size {} does not fit the network's batches of at most {}", opts.batch_size, net.max_batch);
    }
    opts.augment.check()?;
    opts.augment.check_input(net.model.input)?;
    let train = net.backend.upload_image_set(&ds.train).context("putting the training set on the device")?;
    let test = net.backend.upload_image_set(&ds.test).context("putting the test set on the device")?;
    if let Some(dir) = &opts.out_dir {
        std::fs::create_dir_all(dir).with_context(|| format!("{}: cannot create the run directory", dir.display()))?;
    }
    let mut best = history.iter().map(|r| r.val_accuracy).fold(f64::NEG_INFINITY, f64::max);
    if let Some(dir) = &opts.out_dir {
        best = best.max(existing_best(dir)?);
    }
    let mut recipe = opts.recipe.clone();
    let steps = opts.steps_per_epoch(ds);
    for epoch in history.len()..opts.epochs {
        crate::stderr_line!("Epoch {}/{}", epoch + 1, opts.epochs);
        let started = Instant::now();
        let train_metrics = train_epoch(net, &train, ds, opts, &recipe, epoch, started)?;
        let train_seconds = started.elapsed().as_secs_f64();
        let val = crate::inference::evaluate_folded(net, &test, ds.test.len())?;
        let seconds = started.elapsed().as_secs_f64();
        // The rate of the epoch's last step, which Keras's History records.
        let rate = recipe.rate(opts.learning_rate, net.step.saturating_sub(1), steps);
        crate::stderr_line!(
            "{steps}/{steps} - {:.0}s {:.0}ms/step - {} - val_accuracy: {:.4} - val_loss: {:.4} - learning_rate: {rate:.4e} ({:.0} images/s)",
            seconds,
            train_seconds * 1000.0 / steps as f64,
            format_metrics(&train_metrics),
            val.accuracy,
            val.loss,
            ds.train.len() as f64 / train_seconds
        );
        check_finite(&train_metrics, &val, epoch, opts.out_dir.as_deref())?;
        history.push(EpochRecord {
            epoch: epoch + 1,
            loss: train_metrics.loss,
            accuracy: train_metrics.accuracy,
            val_loss: val.loss,
            val_accuracy: val.accuracy,
            seconds,
            learning_rate: Some(rate as f64),
        });
        let stop = end_of_epoch_callbacks(net, &mut recipe, epoch + 1, val.loss, rate)?;
        if let Some(dir) = &opts.out_dir {
            let improved = val.accuracy > best;
            best = best.max(val.accuracy);
            save_epoch(net, ds, opts, &history, &recipe, dir, improved)?;
        }
        on_epoch(history.last().expect("an epoch was recorded"));
        // A signal during the validation or the save (the last epoch's too) stops here, saved.
        crate::interrupt::check()?;
        if stop {
            break;
        }
    }
    Ok(Fitted { history, recipe })
}

/// Keras's callbacks at an epoch's end, in the order given to fit: EarlyStopping (keeping a
/// new best's weights), then ReduceLROnPlateau. True when training should stop.
fn end_of_epoch_callbacks<B: Backend>(net: &Network<B>, recipe: &mut Recipe, epoch: usize, val_loss: f64, rate: f32) -> Result<bool> {
    let mut stop = false;
    if let Some(e) = &mut recipe.early_stopping {
        match e.on_epoch_end(epoch, val_loss) {
            EarlyStop::Improved => e.best_weights = Some(net.weights()?),
            EarlyStop::Stop => {
                crate::stderr_line!("Epoch {epoch}: early stopping (val_loss has not improved for {} epochs)", e.wait);
                stop = true;
            }
            EarlyStop::Continue => {}
        }
    }
    if let Some(r) = &mut recipe.reduce_lr {
        if r.on_epoch_end(val_loss, rate as f64) {
            crate::stderr_line!("Epoch {epoch}: ReduceLROnPlateau reducing the learning rate to {:.4e}.", rate as f64 * ReduceLrOnPlateau::FACTOR);
        }
    }
    Ok(stop)
}

/// The end of training: EarlyStopping puts back the weights of its best epoch (Keras's
/// restore_best_weights), and last.safetensors and history.json say so.
pub fn finish<B: Backend>(net: &mut Network<B>, ds: &Dataset, opts: &TrainOptions, fitted: Fitted) -> Result<Fitted> {
    let Some(e) = &fitted.recipe.early_stopping else { return Ok(fitted) };
    let Some(best) = &e.best_weights else { return Ok(fitted) };
    if e.best_epoch != fitted.history.len() {
        crate::stderr_line!("Restoring model weights from the end of the best epoch: {}.", e.best_epoch);
        net.load_state(best, false).context("restoring the best epoch's weights")?;
        if let Some(dir) = &opts.out_dir {
            save_epoch(net, ds, opts, &fitted.history, &fitted.recipe, dir, false)?;
        }
    }
    Ok(fitted)
}

/// One epoch's training steps in the seeded order, each at the recipe's rate, with the live
/// progress bar; returns the epoch's training metrics.
fn train_epoch<B: Backend>(
    net: &mut Network<B>,
    train: &B::Images,
    ds: &Dataset,
    opts: &TrainOptions,
    recipe: &Recipe,
    epoch: usize,
    started: Instant,
) -> Result<Metrics> {
    let steps = opts.steps_per_epoch(ds);
    let order = epoch_order(ds.train.len(), opts.seed, epoch);
    net.reset_metrics();
    let bar = progress_bar(steps, opts.progress);
    let mut last_update = Instant::now();
    for (step, batch) in order.chunks(opts.batch_size).enumerate() {
        // A Ctrl-C or SIGTERM stops the run here, between steps, never inside a save.
        crate::interrupt::check()?;
        net.learning_rate = recipe.rate(opts.learning_rate, net.step, steps);
        let transforms = (!opts.augment.is_none()).then(|| opts.augment.step_transforms(&ds.train, batch, opts.seed, epoch, step));
        net.train_step_augmented(train, batch, transforms.as_deref()).with_context(|| format!("epoch {} step {}", epoch + 1, step + 1))?;
        if last_update.elapsed() > Duration::from_millis(250) || step + 1 == steps {
            last_update = Instant::now();
            if !bar.is_hidden() {
                let m = net.read_metrics()?;
                let ms = started.elapsed().as_secs_f64() * 1000.0 / (step + 1) as f64;
                bar.set_position(step as u64 + 1);
                bar.set_message(format!("{ms:.0}ms/step - {}", format_metrics(&m)));
            }
        }
    }
    let metrics = net.read_metrics()?;
    bar.finish_and_clear();
    Ok(metrics)
}

/// A non-finite loss stops the run before anything is saved over the last good epoch.
fn check_finite(train: &Metrics, val: &Metrics, epoch: usize, out_dir: Option<&Path>) -> Result<()> {
    if train.loss.is_finite() && val.loss.is_finite() {
        return Ok(());
    }
    let kept = match out_dir {
        // Only when that file is there and is that epoch (a resume into a new folder has none).
        Some(dir) if epoch > 0 && crate::checkpoint::load_meta(&dir.join("last.safetensors")).is_ok_and(|m| m.epoch == epoch) => {
            format!("; {} still holds epoch {epoch}", dir.join("last.safetensors").display())
        }
        _ => String::new(),
    };
    bail!(
        "epoch {}: the loss became {} (training loss {}, validation loss {}): training diverged and was stopped before saving{kept}; try a smaller --learning-rate",
        epoch + 1,
        if train.loss.is_nan() || val.loss.is_nan() { "NaN" } else { "infinite" },
        train.loss,
        val.loss
    );
}

/// Writes last.safetensors (and best.safetensors when `improved`) and history.json.
fn save_epoch<B: Backend>(
    net: &Network<B>,
    ds: &Dataset,
    opts: &TrainOptions,
    history: &[EpochRecord],
    recipe: &Recipe,
    dir: &Path,
    improved: bool,
) -> Result<()> {
    let meta = opts.checkpoint_meta(net, ds, history, recipe);
    let mut tensors = net.weights()?;
    tensors.extend(net.optimizer_state()?);
    checkpoint::save(&dir.join("last.safetensors"), &meta, &tensors)?;
    if improved {
        checkpoint::save(&dir.join("best.safetensors"), &meta, &tensors)?;
    }
    let early_stopping = recipe.early_stopping.as_ref().map(|e| (e.stopped_epoch, e.best_epoch));
    write_history(dir, history, &net.backend.describe(), &ds.name, early_stopping)
}

/// The validation accuracy of the run directory's best.safetensors (its last epoch), so a run
/// continuing in that folder replaces it only with a better one; minus infinity when none.
fn existing_best(dir: &Path) -> Result<f64> {
    let path = dir.join("best.safetensors");
    if !path.exists() {
        return Ok(f64::NEG_INFINITY);
    }
    let meta = checkpoint::load_meta(&path).with_context(|| format!("{}: cannot compare the new run's best with it", path.display()))?;
    Ok(meta.history.last().map_or(f64::NEG_INFINITY, |r| if r.val_accuracy.is_nan() { f64::NEG_INFINITY } else { r.val_accuracy }))
}

fn progress_bar(steps: usize, show: bool) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(steps as u64);
    bar.set_style(indicatif::ProgressStyle::with_template("{pos:>5}/{len} {bar:20.green/dim} {elapsed} {msg}").expect("valid template").progress_chars("━━━"));
    bar
}
