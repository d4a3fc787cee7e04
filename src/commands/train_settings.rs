//! What `gpu-cnn train` will do, resolved once from its flags and the checkpoint it resumes:
//! a plain [`TrainSettings`] the library's Trainer (through commands::train_on) only reads. Each
//! flag not given takes the checkpoint's value when resuming, else its default.

use super::{dataset_preprocessing, folder_preprocessing, read_arch, DataOptions, HeldOutFiles, DEFAULT_VAL_SPLIT};
use crate::augment::Augmentation;
use crate::callbacks::{EarlyStopping, Recipe, ReduceLrOnPlateau};
use crate::checkpoint::{self, Checkpoint};
use crate::class_weight::{balanced_weights, class_counts, ClassWeight};
use crate::data::Dataset;
use crate::model::{format_arch, parse_arch, with_classes};
use crate::optimizer::{check_label_smoothing, Optimizer, OptimizerFlags};
use crate::run_dir::{continues_run, folder_of};
use crate::schedule::{LrSchedule, ScheduleKind};
use crate::train::TrainOptions;
use crate::trainer::RunPlan;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// `gpu-cnn train`'s flags as given (None: not given).
#[derive(Clone, Debug)]
pub struct TrainArgs {
    pub data: DataOptions,
    pub arch: Option<PathBuf>,
    pub epochs: usize,
    pub batch_size: Option<usize>,
    pub learning_rate: Option<f32>,
    /// --optimizer and its hyper-parameters (None: the checkpoint's when resuming, else
    /// Keras's defaults).
    pub optimizer: OptimizerFlags,
    /// None: the checkpoint's when resuming, else 0.
    pub label_smoothing: Option<f32>,
    pub seed: Option<u64>,
    pub out: Option<PathBuf>,
    pub resume: Option<PathBuf>,
    pub progress: bool,
    /// None: the checkpoint's when resuming, else no augmentation.
    pub augment: Option<Augmentation>,
    /// None: the checkpoint's when resuming, else unweighted.
    pub class_weight: Option<ClassWeight>,
    /// Replace the files of an earlier run in the run directory.
    pub overwrite: bool,
    /// `--lr-schedule`, `--warmup-epochs`, `--lr-step-epochs`: None (all three) keeps the
    /// checkpoint's schedule when resuming, else constant.
    pub lr_schedule: Option<ScheduleKind>,
    pub warmup_epochs: Option<usize>,
    pub lr_step_epochs: Option<usize>,
    /// `--early-stopping PATIENCE`, `--reduce-lr-on-plateau PATIENCE`: None keeps the
    /// checkpoint's callback (and its state) when resuming, else none.
    pub early_stopping: Option<usize>,
    pub reduce_lr_on_plateau: Option<usize>,
}

/// Everything a training run will do, resolved before any device work.
#[derive(Clone, Debug)]
pub struct TrainSettings {
    /// What the library's Trainer runs: the loop's options (the recipe with the checkpoint's
    /// callback states when resuming), the optimizer (the checkpoint's when resuming), label
    /// smoothing and `--class-weight balanced`'s weights.
    pub plan: RunPlan,
    /// Training images per class (the report shows them beside the per-class scores).
    pub train_counts: Vec<usize>,
    /// The run directory.
    pub out: PathBuf,
    /// `out` was made for this run (no `--out`): a run that fails before saving anything
    /// removes it again, so failed attempts do not leave empty `runs/<dataset>-N` behind.
    pub out_is_new: bool,
    /// `--overwrite`: a fresh run may replace an earlier run's files in `out`.
    pub overwrite: bool,
}

/// The settings that need no data, checked before any is loaded (the seed also seeds a
/// folder's validation split).
#[derive(Clone, Debug)]
pub struct FlagSettings {
    pub seed: u64,
    pub batch_size: usize,
    pub optimizer: Optimizer,
    pub learning_rate: f32,
    pub label_smoothing: f32,
    pub augment: Augmentation,
    pub recipe: Recipe,
}

/// Resolves the flags that need no data against the checkpoint being resumed (if any).
pub fn resolve_flags(args: &TrainArgs, resume: Option<&Checkpoint>) -> Result<FlagSettings> {
    if args.epochs == 0 {
        bail!("--epochs 0 would train nothing; give the total number of epochs (at least 1)");
    }
    let resume_path = args.resume.as_deref().unwrap_or(Path::new("checkpoint"));
    let seed = args.seed.or(resume.map(|c| c.meta.seed)).unwrap_or(0);
    let batch_size = args.batch_size.or(resume.map(|c| c.meta.batch_size)).unwrap_or(32);
    let optimizer = Optimizer::from_flags(&args.optimizer, resume.map(|c| c.meta.optimizer))?;
    let learning_rate = args.learning_rate.or(resume.map(|c| c.meta.learning_rate)).unwrap_or(optimizer.name().default_learning_rate());
    let label_smoothing = args.label_smoothing.or(resume.map(|c| c.meta.label_smoothing)).unwrap_or(0.0);
    check_label_smoothing(label_smoothing).context("--label-smoothing")?;
    let augment = args.augment.or(resume.map(|c| c.meta.augment)).unwrap_or(Augmentation::NONE);
    if batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    if !(learning_rate > 0.0 && learning_rate.is_finite()) {
        match (&args.learning_rate, resume) {
            (None, Some(_)) => bail!(
                "{}: its learning rate {learning_rate} is not a positive number (a damaged checkpoint?); give --learning-rate to resume",
                resume_path.display()
            ),
            _ => bail!("--learning-rate must be a positive number"),
        }
    }
    let recipe = resolve_recipe(args, resume, resume_path)?;
    Ok(FlagSettings { seed, batch_size, optimizer, learning_rate, label_smoothing, augment, recipe })
}

/// Resolves everything else against the loaded data set; every inconsistency is an error
/// naming the flag or the file.
/// `held_out`: the folder's held-out split as loaded (its digest goes into the checkpoints).
pub fn resolve(args: &TrainArgs, resume: Option<&Checkpoint>, ds: &Dataset, held_out: Option<&HeldOutFiles>, flags: FlagSettings) -> Result<TrainSettings> {
    let resume_path = args.resume.as_deref().unwrap_or(Path::new("checkpoint"));
    let FlagSettings { seed, batch_size, optimizer, learning_rate, label_smoothing, augment, recipe } = flags;
    let given_arch = match (resume, &args.arch) {
        (Some(ck), None) => ck.meta.arch.clone(),
        (_, arch) => read_arch(arch.as_deref())?,
    };
    if let Some(ck) = resume {
        crate::trainer::check_resume_fits_data(ck, resume_path, ds, args.epochs)?;
    }
    // `Dense(classes)` takes its units from the data; the checkpoint stores the resolved text.
    let arch_text = format_arch(&with_classes(&parse_arch(&given_arch)?, ds.class_names.len())?);
    if let (Some(ck), Some(path)) = (resume, &args.arch) {
        // Compared as layers: older checkpoints store the classic text form.
        if parse_arch(&arch_text)? != parse_arch(&ck.meta.arch)? {
            bail!("{} was trained with a different architecture than {}:\n{}", resume_path.display(), path.display(), ck.meta.arch);
        }
    }
    let base = resume.map(Checkpoint::preprocessing).transpose()?;
    let (preprocessing, data_source) = match &args.data.images {
        Some(images) => {
            let source = checkpoint::DataSource {
                folder: images.dir.canonicalize().unwrap_or_else(|_| images.dir.clone()),
                val_split: images.val_split.unwrap_or(DEFAULT_VAL_SPLIT),
                seed,
                skip_bad: images.skip_bad,
                held_out_images: held_out.map(|h| h.images),
                held_out: held_out.map(|h| h.fingerprint.clone()),
                reshuffled_after: None,
            };
            (folder_preprocessing(images, base.as_ref())?, Some(source))
        }
        None => (dataset_preprocessing(ds)?, None),
    };
    let class_weight = args.class_weight.unwrap_or(match resume.and_then(|c| c.meta.class_weights.as_ref()) {
        Some(_) => ClassWeight::Balanced,
        None => ClassWeight::None,
    });
    let train_counts = class_counts(&ds.train.labels, ds.class_names.len());
    let class_weights = match class_weight {
        ClassWeight::Balanced => Some(balanced_weights(&train_counts, &ds.class_names)?),
        ClassWeight::None => None,
    };
    // A resume continues its folder only from that folder's last.safetensors; from any other
    // checkpoint (best.safetensors) it would replace a later last, so it gets a new folder.
    let (out, out_is_new) = match (&args.out, &args.resume) {
        (Some(o), _) => (o.clone(), false),
        (None, Some(r)) if continues_run(r, &folder_of(r)) => (folder_of(r), false),
        (None, _) => (fresh_run_dir(&ds.name)?, true),
    };
    let options = TrainOptions {
        epochs: args.epochs,
        batch_size,
        seed,
        out_dir: Some(out.clone()),
        arch_text,
        progress: args.progress,
        augment,
        preprocessing: Some(preprocessing),
        data_source,
        learning_rate,
        recipe,
    };
    Ok(TrainSettings { plan: RunPlan { options, optimizer, label_smoothing, class_weights }, train_counts, out, out_is_new, overwrite: args.overwrite })
}

/// The schedule and callbacks: the flags given, else the checkpoint's (with their state), else
/// a constant rate and none. A schedule given anew is planned over `--epochs`; a resumed one
/// keeps the epochs it was planned over, so an interrupted run continues exactly.
fn resolve_recipe(args: &TrainArgs, resume: Option<&Checkpoint>, resume_path: &Path) -> Result<Recipe> {
    let stored = resume.map(|c| c.meta.recipe.clone()).unwrap_or_default();
    if let Some(e) = stored.early_stopping.as_ref().filter(|e| e.stopped_epoch > 0) {
        bail!(
            "{}: early stopping ended this run at epoch {} (val_loss had not improved since epoch {}, whose weights it holds); there is nothing to resume",
            resume_path.display(),
            e.stopped_epoch,
            e.best_epoch
        );
    }
    let schedule = if args.lr_schedule.is_none() && args.warmup_epochs.is_none() && args.lr_step_epochs.is_none() && resume.is_some() {
        stored.schedule
    } else {
        let kind = args.lr_schedule.unwrap_or(stored.schedule.kind);
        LrSchedule::new(kind, args.warmup_epochs.unwrap_or(0), args.lr_step_epochs, args.epochs)?
    };
    // A patience given on resume replaces the stored one; the callback's state carries on.
    let early_stopping = match (args.early_stopping, stored.early_stopping) {
        (Some(p), Some(state)) => Some(EarlyStopping { patience: p, ..state }),
        (Some(p), None) => Some(EarlyStopping::new(p)),
        (None, state) => state,
    };
    let reduce_lr = match (args.reduce_lr_on_plateau, stored.reduce_lr) {
        (Some(p), Some(state)) => Some(ReduceLrOnPlateau { patience: p, ..state }),
        (Some(p), None) => Some(ReduceLrOnPlateau::new(p)),
        (None, state) => state,
    };
    Ok(Recipe { schedule, early_stopping, reduce_lr })
}

/// A fresh run directory: runs/<dataset>, then runs/<dataset>-2, -3, ... so nothing saved
/// by an earlier run is overwritten. Each is claimed by creating it (which only one process
/// can do), so runs started together take different folders instead of one refusing the other.
fn fresh_run_dir(dataset: &str) -> Result<PathBuf> {
    let base = PathBuf::from("runs");
    std::fs::create_dir_all(&base).with_context(|| format!("{}: cannot create", base.display()))?;
    for i in 1..100_000 {
        let dir = if i == 1 { base.join(dataset) } else { base.join(format!("{dataset}-{i}")) };
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).with_context(|| format!("{}: cannot create the run directory", dir.display())),
        }
    }
    bail!("{}: no free run folder name for {dataset} (give --out)", base.display())
}
