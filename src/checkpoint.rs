//! Checkpoints as safetensors: every layer's tensors (its ParamSpecs, trainable or not) named
//! `<layer>.<suffix>` (`conv2d.kernel`, `dense.bias`) in Keras layouts (conv HWIO, dense (in,
//! out)), the optimizer's state of the trainable ones as `<param>.<slot>` (Adam/AdamW `adam_m` /
//! `adam_v`, SGD `momentum`, RMSprop `velocity`), and the run's facts (architecture text, input
//! shape, class names, epoch, step, seed, optimizer, augmentation, history) as string metadata.
//! Written to a temporary file and renamed, so a crash never leaves half a file.

use crate::augment::Augmentation;
use crate::callbacks::Recipe;
use crate::history::EpochRecord;
use crate::image_pipeline::Preprocessing;
use crate::model::{parse_arch, parse_input_shape, Model};
use crate::network::HostTensor;
use crate::optimizer::{check_label_smoothing, Optimizer};
use crate::schedule::LrSchedule;
use anyhow::{anyhow, bail, Context, Result};
use safetensors::{tensor::TensorView, Dtype, SafeTensors};
use std::collections::HashMap;
use std::path::Path;

pub const FORMAT: &str = "gpu-cnn/1";

/// The suffix of EarlyStopping's best weights in a checkpoint (`dense.kernel.best_weights`).
pub const BEST_WEIGHTS: &str = ".best_weights";

#[derive(Clone, Debug, PartialEq)]
pub struct CheckpointMeta {
    pub arch: String,
    pub input: (usize, usize, usize),
    pub class_names: Vec<String>,
    pub dataset: String,
    /// Epochs completed.
    pub epoch: usize,
    /// Optimizer steps taken.
    pub step: u64,
    pub seed: u64,
    pub batch_size: usize,
    pub learning_rate: f32,
    /// The optimizer and its hyper-parameters (metadata `optimizer`, JSON; Adam with Keras's
    /// defaults in checkpoints from before it was stored).
    pub optimizer: Optimizer,
    /// The loss's label smoothing (metadata `label_smoothing`; 0 when absent).
    pub label_smoothing: f32,
    /// The training run's augmentation ("none" in checkpoints from before it existed).
    pub augment: Augmentation,
    pub history: Vec<EpochRecord>,
    /// How image files become the model's input; None in checkpoints from before it was
    /// stored (then `Preprocessing::legacy`).
    pub preprocessing: Option<Preprocessing>,
    /// Where the training data came from when it was a folder (`--data`), so `evaluate` can
    /// score exactly the split training held out.
    pub data_source: Option<DataSource>,
    /// `--class-weight balanced`'s per-class loss weights; None (also in checkpoints from
    /// before it existed) for an unweighted loss.
    pub class_weights: Option<Vec<f32>>,
    /// The learning-rate schedule and the callbacks' states (metadata `lr_schedule`,
    /// `early_stopping`, `reduce_lr_on_plateau`; EarlyStopping's best weights as
    /// `<weight>.best_weights` tensors). Absent keys: constant rate, no callbacks.
    pub recipe: Recipe,
}

/// A folder data set as training read it.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DataSource {
    /// The folder (absolute when training could resolve it).
    pub folder: std::path::PathBuf,
    /// The held-out fraction (unused when the folder has train/ and test/).
    pub val_split: f32,
    /// The seed of the split.
    pub seed: u64,
    pub skip_bad: bool,
    /// The held-out split's size and digest (`data::folder::held_out_fingerprint`) when
    /// training read it; absent in checkpoints from before they were stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_out_images: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_out: Option<String>,
    /// The epochs done when a resume found the folder changed (its split reshuffled): the
    /// epochs up to it trained on a split that gave some of today's held-out images to training.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reshuffled_after: Option<usize>,
}

pub struct Checkpoint {
    pub meta: CheckpointMeta,
    pub tensors: Vec<HostTensor>,
}

impl Checkpoint {
    /// How to prepare image files for this model: the stored pipeline, or for older
    /// checkpoints what `predict` did then (alpha over black, stretch, bilinear).
    pub fn preprocessing(&self) -> Result<Preprocessing> {
        match self.meta.preprocessing {
            Some(p) if p.input_shape() == self.meta.input => Ok(p),
            Some(p) => bail!("metadata preprocessing is for {:?} images but the input is {:?}", p.input_shape(), self.meta.input),
            None => Preprocessing::legacy(self.meta.input),
        }
    }
    /// The model the checkpoint was trained as.
    pub fn model(&self) -> Result<Model> {
        Model::new(&parse_arch(&self.meta.arch)?, self.meta.input)
    }
    /// Holds a checkpoint built or changed in memory (its fields are public) to what `load`
    /// holds a file to, by writing it to bytes and reading them back: tensor sizes, names and
    /// shapes against the architecture, finite values, the metadata's ranges.
    pub fn check(&self) -> Result<()> {
        load_bytes(&to_bytes(&self.meta, &self.tensors)?, Path::new("the checkpoint")).map(drop)
    }

    pub fn has_optimizer_state(&self) -> bool {
        self.tensors.iter().any(|t| state_tensor_weight(&t.name, &self.meta.optimizer).is_some())
    }
}

/// Writes weights (and optimizer state, when given) atomically (see atomic_file.rs), streamed
/// from the tensors to the file: no copy of the model in memory while it is written.
pub fn save(path: &Path, meta: &CheckpointMeta, tensors: &[HostTensor]) -> Result<()> {
    let (views, info) = file_contents(meta, tensors)?;
    crate::atomic_file::write_atomically_with(path, |tmp| {
        safetensors::serialize_to_file(views, &Some(info), tmp).map_err(|e| match e {
            // "No space left on device", "File too large": as any write says it.
            safetensors::SafeTensorError::IoError(io) => anyhow::Error::from(io),
            e => anyhow!("serialising checkpoint: {e:?}"),
        })
    })
}

/// The safetensors file `save` writes, in memory (for `Checkpoint::check`).
fn to_bytes(meta: &CheckpointMeta, tensors: &[HostTensor]) -> Result<Vec<u8>> {
    let (views, info) = file_contents(meta, tensors)?;
    safetensors::serialize(views, &Some(info)).map_err(|e| anyhow!("serialising checkpoint: {e:?}"))
}

// The tensors are written as their f32s' bytes; checkpoints are little-endian.
const _: () = assert!(cfg!(target_endian = "little"), "checkpoints store the f32s' in-memory bytes, which must be little-endian");

/// What a checkpoint file holds: named views of tensor data, and the string metadata.
type FileContents<'a> = (Vec<(String, TensorView<'a>)>, HashMap<String, String>);

/// A checkpoint file's tensors (views of `tensors`' own data, and of EarlyStopping's best
/// weights when they are not this checkpoint's) and its metadata.
fn file_contents<'a>(meta: &'a CheckpointMeta, tensors: &'a [HostTensor]) -> Result<FileContents<'a>> {
    let best_weights = match &meta.recipe.early_stopping {
        // The best epoch's weights when they are not this checkpoint's own.
        Some(e) if e.best_epoch != meta.epoch => e.best_weights.as_deref().unwrap_or_default(),
        _ => &[],
    };
    let named = tensors.iter().map(|t| (t.name.clone(), t)).chain(best_weights.iter().map(|t| (format!("{}{BEST_WEIGHTS}", t.name), t)));
    let mut views = Vec::new();
    for (name, t) in named {
        let needs = t.dims.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
        if needs != Some(t.data.len()) {
            bail!(
                "tensor '{name}' has {} values, but its shape {:?} needs {}",
                t.data.len(),
                t.dims,
                needs.map_or("more than fit in memory".into(), |n| n.to_string())
            );
        }
        let view = TensorView::new(Dtype::F32, t.dims.clone(), bytemuck::cast_slice(&t.data)).map_err(|e| anyhow!("{name}: {e:?}"))?;
        views.push((name, view));
    }
    let (h, w, c) = meta.input;
    let mut info = HashMap::new();
    info.insert("format".to_string(), FORMAT.to_string());
    info.insert("arch".to_string(), meta.arch.clone());
    info.insert("input_shape".to_string(), format!("{h}x{w}x{c}"));
    info.insert("class_names".to_string(), serde_json::to_string(&meta.class_names)?);
    info.insert("dataset".to_string(), meta.dataset.clone());
    info.insert("epoch".to_string(), meta.epoch.to_string());
    info.insert("step".to_string(), meta.step.to_string());
    info.insert("seed".to_string(), meta.seed.to_string());
    info.insert("batch_size".to_string(), meta.batch_size.to_string());
    info.insert("learning_rate".to_string(), meta.learning_rate.to_string());
    info.insert("optimizer".to_string(), meta.optimizer.to_json());
    info.insert("label_smoothing".to_string(), meta.label_smoothing.to_string());
    info.insert("augment".to_string(), meta.augment.name());
    info.insert("history".to_string(), serde_json::to_string(&meta.history)?);
    if let Some(p) = &meta.preprocessing {
        info.insert("preprocessing".to_string(), serde_json::to_string(p)?);
    }
    if let Some(d) = &meta.data_source {
        info.insert("data_source".to_string(), serde_json::to_string(d)?);
    }
    if let Some(w) = &meta.class_weights {
        info.insert("class_weights".to_string(), serde_json::to_string(w)?);
    }
    if meta.recipe.schedule != LrSchedule::default() {
        info.insert("lr_schedule".to_string(), serde_json::to_string(&meta.recipe.schedule)?);
    }
    if let Some(e) = &meta.recipe.early_stopping {
        info.insert("early_stopping".to_string(), serde_json::to_string(e)?);
    }
    if let Some(r) = &meta.recipe.reduce_lr {
        info.insert("reduce_lr_on_plateau".to_string(), serde_json::to_string(r)?);
    }
    Ok((views, info))
}

/// The weight a state tensor `<param>.<slot>` of `optimizer` belongs to (None: not one).
fn state_tensor_weight<'a>(name: &'a str, optimizer: &Optimizer) -> Option<&'a str> {
    optimizer.slot_names().iter().find_map(|slot| name.strip_suffix(slot)?.strip_suffix('.'))
}

/// The largest checkpoint read (2 GiB: 500 million parameters with Adam's moments); a file
/// past it, or one that is not a regular file (/dev/zero, a FIFO), is refused before reading.
pub const MAX_CHECKPOINT_BYTES: u64 = 2 << 30;

/// Optimizer steps above this are not a real run's (2^48 steps at a million steps a second take
/// nine years) and would lose their bias correction to rounding or wrap around.
pub const MAX_STEP: u64 = 1 << 48;

/// Reads a checkpoint's facts from its metadata, checking each.
fn read_meta(info: &HashMap<String, String>, path: &Path) -> Result<CheckpointMeta> {
    let get =
        |key: &str| -> Result<&String> { info.get(key).ok_or_else(|| anyhow!("{}: metadata '{key}' is missing (not a gpu-cnn checkpoint?)", path.display())) };
    if get("format")? != FORMAT {
        bail!("{}: checkpoint format '{}' is not {FORMAT}", path.display(), get("format")?);
    }
    let num = |key: &str| -> Result<u64> { get(key)?.parse().map_err(|_| anyhow!("{}: metadata '{key}' is not a number", path.display())) };
    let meta = CheckpointMeta {
        arch: get("arch")?.clone(),
        input: parse_input_shape(get("input_shape")?).with_context(|| path.display().to_string())?,
        class_names: serde_json::from_str(get("class_names")?).with_context(|| format!("{}: metadata class_names", path.display()))?,
        dataset: get("dataset")?.clone(),
        epoch: num("epoch")? as usize,
        step: num("step")?,
        seed: num("seed")?,
        batch_size: num("batch_size")? as usize,
        learning_rate: get("learning_rate")?.parse().map_err(|_| anyhow!("{}: metadata learning_rate is not a number", path.display()))?,
        optimizer: match info.get("optimizer") {
            Some(text) => Optimizer::from_json(text).with_context(|| format!("{}: metadata optimizer", path.display()))?,
            None => Optimizer::default(),
        },
        label_smoothing: match info.get("label_smoothing") {
            Some(text) => {
                let f: f32 = text.parse().map_err(|_| anyhow!("{}: metadata label_smoothing is not a number", path.display()))?;
                check_label_smoothing(f).with_context(|| format!("{}: metadata label_smoothing", path.display()))?;
                f
            }
            None => 0.0,
        },
        augment: match info.get("augment") {
            Some(text) => Augmentation::parse(text).with_context(|| format!("{}: metadata augment", path.display()))?,
            None => Augmentation::NONE,
        },
        history: serde_json::from_str(get("history")?).with_context(|| format!("{}: metadata history", path.display()))?,
        preprocessing: info
            .get("preprocessing")
            .map(|t| serde_json::from_str(t))
            .transpose()
            .with_context(|| format!("{}: metadata preprocessing", path.display()))?,
        data_source: info
            .get("data_source")
            .map(|t| serde_json::from_str(t))
            .transpose()
            .with_context(|| format!("{}: metadata data_source", path.display()))?,
        class_weights: info
            .get("class_weights")
            .map(|t| serde_json::from_str(t))
            .transpose()
            .with_context(|| format!("{}: metadata class_weights", path.display()))?,
        recipe: Recipe {
            schedule: info
                .get("lr_schedule")
                .map(|t| serde_json::from_str(t))
                .transpose()
                .with_context(|| format!("{}: metadata lr_schedule", path.display()))?
                .unwrap_or_default(),
            early_stopping: info
                .get("early_stopping")
                .map(|t| serde_json::from_str(t))
                .transpose()
                .with_context(|| format!("{}: metadata early_stopping", path.display()))?,
            reduce_lr: info
                .get("reduce_lr_on_plateau")
                .map(|t| serde_json::from_str(t))
                .transpose()
                .with_context(|| format!("{}: metadata reduce_lr_on_plateau", path.display()))?,
        },
    };
    meta.recipe.validate().with_context(|| format!("{}: metadata; the checkpoint is damaged", path.display()))?;
    // Epochs recorded before the rate was: their rate was the constant one stored.
    let mut meta = meta;
    for r in meta.history.iter_mut().filter(|r| r.learning_rate.is_none()) {
        r.learning_rate = Some(meta.learning_rate as f64);
    }
    if let Some(w) = &meta.class_weights {
        if w.len() != meta.class_names.len() || !w.iter().all(|v| v.is_finite() && *v > 0.0) {
            bail!("{}: metadata class_weights must be {} positive numbers, one per class; the checkpoint is damaged", path.display(), meta.class_names.len());
        }
    }
    // A resume continues from the history's length, and the report plots it: its records are
    // epochs 1, 2, ... in order, one per epoch done, with accuracies that are fractions.
    if meta.history.len() != meta.epoch {
        bail!("{}: metadata epoch is {} but the history holds {} epochs; the checkpoint is damaged", path.display(), meta.epoch, meta.history.len());
    }
    for (i, r) in meta.history.iter().enumerate() {
        if r.epoch != i + 1 {
            bail!("{}: metadata history holds epoch {} where epoch {} belongs; the checkpoint is damaged", path.display(), r.epoch, i + 1);
        }
        if let Some((name, v)) =
            [("accuracy", r.accuracy), ("val_accuracy", r.val_accuracy)].into_iter().find(|(_, v)| v.is_finite() && !(0.0..=1.0).contains(v))
        {
            bail!("{}: metadata history gives epoch {} {name} {v}, not a fraction; the checkpoint is damaged", path.display(), r.epoch);
        }
    }
    if meta.step > MAX_STEP {
        bail!("{}: metadata step {} is not a plausible Adam step count (over 2^48); the checkpoint is damaged", path.display(), meta.step);
    }
    if meta.batch_size == 0 {
        bail!("{}: metadata batch_size is 0; the checkpoint is damaged", path.display());
    }
    Ok(meta)
}

/// The names, shapes and trainability of the tensors a checkpoint of `model` holds (every
/// layer's ParamSpecs, non-trainable ones included); trainable ones may also have moments.
fn expected_tensors(model: &Model) -> Vec<(String, Vec<usize>, bool)> {
    let mut out = Vec::new();
    for layer in &model.layers {
        for spec in layer.params() {
            out.push((crate::network::param_name(layer, &spec), spec.dims, spec.trainable));
        }
    }
    out
}

/// Loads a checkpoint: the file is size-checked before it is read, its metadata and every
/// tensor's name, dtype and shape are checked against its architecture before any tensor is
/// copied, so a hostile file cannot make the loader allocate more than the file's own size.
pub fn load(path: &Path) -> Result<Checkpoint> {
    let bytes = crate::fallible::read_capped(path, MAX_CHECKPOINT_BYTES, "a checkpoint").map_err(|e| with_replaced_hint(e, path))?;
    load_bytes(&bytes, path)
}

/// A checkpoint missing because an `--overwrite` run was killed before it saved an epoch: the
/// previous run's copy waits in the folder aside, which the next `train` there puts back.
fn with_replaced_hint(e: anyhow::Error, path: &Path) -> anyhow::Error {
    let folder = crate::run_dir::folder_of(path);
    let aside = path.file_name().map(|name| folder.join(crate::run_dir::REPLACED_FOLDER).join(name));
    match aside.filter(|a| !path.exists() && a.is_file()) {
        Some(a) => e.context(format!(
            "the previous run's copy is {} (an --overwrite run stopped before it saved an epoch); the next `gpu-cnn train --out {}` puts it back",
            a.display(),
            folder.display()
        )),
        None => e,
    }
}

/// As `load`, from the file's bytes (`path` names it in errors).
pub fn load_bytes(bytes: &[u8], path: &Path) -> Result<Checkpoint> {
    let header = parse_header(header_of(bytes, path)?, path)?;
    let meta = read_meta(&header.metadata, path)?;
    let model = Model::new(&parse_arch(&meta.arch).with_context(|| format!("{}: metadata arch", path.display()))?, meta.input)
        .with_context(|| format!("{}: its architecture does not fit its input {}x{}x{}", path.display(), meta.input.0, meta.input.1, meta.input.2))?;
    if meta.class_names.len() != model.classes() {
        bail!(
            "{}: metadata class_names has {} names but the model outputs {} classes; the checkpoint is damaged",
            path.display(),
            meta.class_names.len(),
            model.classes()
        );
    }
    let expected = expected_tensors(&model);
    // Each weight, its optimizer slots and EarlyStopping's copy: anything more is not ours.
    let most = expected.len() * (meta.optimizer.slot_names().len() + 2);
    if header.tensors > most {
        bail!(
            "{}: the header lists {} tensors, more than its architecture's {} weights can have ({most}); the checkpoint is damaged",
            path.display(),
            header.tensors,
            expected.len()
        );
    }
    let st = SafeTensors::deserialize(bytes).map_err(|e| anyhow!("{}: not a valid safetensors file ({e:?})", path.display()))?;
    let mut names: Vec<String> = st.names().into_iter().cloned().collect();
    names.sort();
    for name in &names {
        let view = st.tensor(name).map_err(|e| anyhow!("{}: tensor '{name}': {e:?}", path.display()))?;
        if view.dtype() != Dtype::F32 {
            bail!("{}: tensor '{name}' is {:?}, expected F32", path.display(), view.dtype());
        }
        let state_of = state_tensor_weight(name, &meta.optimizer);
        let weight = state_of.or_else(|| name.strip_suffix(BEST_WEIGHTS)).unwrap_or(name);
        match expected.iter().find(|(n, _, _)| n == weight) {
            Some((_, _, false)) if state_of.is_some() => {
                bail!("{}: tensor '{name}' is optimizer state of '{weight}', which is not trainable", path.display())
            }
            Some((_, dims, _)) if dims.as_slice() == view.shape() => {}
            Some((_, dims, _)) => bail!("{}: tensor '{name}' has shape {:?}, but its architecture needs {dims:?}", path.display(), view.shape()),
            None => bail!("{}: tensor '{name}' is not a weight of its architecture", path.display()),
        }
    }
    if let Some((missing, _, _)) = expected.iter().find(|(n, _, _)| names.binary_search(n).is_err()) {
        bail!("{}: tensor '{missing}' is missing (its architecture has {} weight tensors)", path.display(), expected.len());
    }
    let mut tensors = Vec::new();
    for name in names {
        let view = st.tensor(&name).map_err(|e| anyhow!("{}: tensor '{name}': {e:?}", path.display()))?;
        let mut data = crate::fallible::with_capacity(view.data().len() / 4).with_context(|| format!("{}: tensor '{name}'", path.display()))?;
        data.extend(view.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])));
        // Training stops before it saves a NaN or an infinity, so one here means damage.
        if let Some(i) = data.iter().position(|v: &f32| !v.is_finite()) {
            bail!("{}: tensor '{name}' holds {} at index {i}; training never saves non-finite values, so the checkpoint is damaged", path.display(), data[i]);
        }
        tensors.push(HostTensor { name, dims: view.shape().to_vec(), data });
    }
    let mut meta = meta;
    if let Some(e) = &mut meta.recipe.early_stopping {
        e.best_weights = Some(early_stopping_weights(&tensors, &expected, e.best_epoch == meta.epoch, path)?);
    }
    Ok(Checkpoint { meta, tensors })
}

/// EarlyStopping's best weights: the checkpoint's own weights when its epoch is the best one,
/// else its `.best_weights` tensors (all of them, or it is damaged).
fn early_stopping_weights(tensors: &[HostTensor], expected: &[(String, Vec<usize>, bool)], own: bool, path: &Path) -> Result<Vec<HostTensor>> {
    let suffix = if own { "" } else { BEST_WEIGHTS };
    expected
        .iter()
        .map(|(name, _, _)| {
            let stored = format!("{name}{suffix}");
            match tensors.iter().find(|t| t.name == stored) {
                Some(t) => Ok(HostTensor { name: name.clone(), ..t.clone() }),
                None => bail!("{}: tensor '{stored}' is missing (early stopping's best weights)", path.display()),
            }
        })
        .collect()
}

/// A checkpoint's metadata alone, read from its header (for comparing a run's best).
pub fn load_meta(path: &Path) -> Result<CheckpointMeta> {
    use std::io::Read;
    let mut file = crate::fallible::open_regular_file(path, "a checkpoint")?;
    let mut len = [0u8; 8];
    file.read_exact(&mut len).with_context(|| format!("{}: not a valid safetensors file (too short)", path.display()))?;
    let len = checked_header_len(len, path)? as u64;
    let mut header = Vec::new();
    file.take(len).read_to_end(&mut header).with_context(|| format!("{}: cannot read checkpoint", path.display()))?;
    read_meta(&parse_header(&header, path)?.metadata, path)
}

/// safetensors' own limit on the header.
const MAX_HEADER_BYTES: u64 = 100_000_000;

/// What the loader takes from a safetensors header before the safetensors crate parses it:
/// the metadata, and how many tensors it lists (counted, not kept: the crate's index costs
/// about 1 KB per entry, so a header of a million empty entries must be refused first).
struct HeaderSummary {
    metadata: HashMap<String, String>,
    tensors: usize,
}

impl<'de> serde::Deserialize<'de> for HeaderSummary {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = HeaderSummary;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a safetensors header (a JSON object)")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> std::result::Result<HeaderSummary, A::Error> {
                let mut summary = HeaderSummary { metadata: HashMap::new(), tensors: 0 };
                while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    if key == "__metadata__" {
                        summary.metadata = map.next_value::<KnownMetadata>()?.0;
                    } else {
                        map.next_value::<serde::de::IgnoredAny>()?;
                        summary.tensors += 1;
                    }
                }
                Ok(summary)
            }
        }
        deserializer.deserialize_map(Visitor)
    }
}

/// Every metadata key `save` writes; `read_meta` reads no other.
const METADATA_KEYS: [&str; 20] = [
    "format",
    "arch",
    "input_shape",
    "class_names",
    "dataset",
    "epoch",
    "step",
    "seed",
    "batch_size",
    "learning_rate",
    "optimizer",
    "label_smoothing",
    "augment",
    "history",
    "preprocessing",
    "data_source",
    "class_weights",
    "lr_schedule",
    "early_stopping",
    "reduce_lr_on_plateau",
];

/// The metadata entries `read_meta` reads; others are skipped unkept, and more entries than a
/// checkpoint could have are refused (the safetensors crate would keep them all).
struct KnownMetadata(HashMap<String, String>);

impl<'de> serde::Deserialize<'de> for KnownMetadata {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = KnownMetadata;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("string metadata (a JSON object of strings)")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> std::result::Result<KnownMetadata, A::Error> {
                let mut known = HashMap::new();
                let mut entries = 0usize;
                while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    entries += 1;
                    if entries > 4 * METADATA_KEYS.len() {
                        return Err(serde::de::Error::custom(format!("more than {} metadata entries", 4 * METADATA_KEYS.len())));
                    }
                    if METADATA_KEYS.contains(&key.as_ref()) {
                        known.insert(key.into_owned(), map.next_value::<String>()?);
                    } else {
                        map.next_value::<serde::de::IgnoredAny>()?;
                    }
                }
                Ok(KnownMetadata(known))
            }
        }
        deserializer.deserialize_map(Visitor)
    }
}

/// Parses the header's JSON (without its 8-byte length).
fn parse_header(header: &[u8], path: &Path) -> Result<HeaderSummary> {
    serde_json::from_slice(header).with_context(|| format!("{}: not a valid safetensors file (its header)", path.display()))
}

/// The header's length from the file's first 8 bytes, within safetensors' own limit.
fn checked_header_len(first: [u8; 8], path: &Path) -> Result<usize> {
    let len = u64::from_le_bytes(first);
    if len > MAX_HEADER_BYTES {
        bail!("{}: not a valid safetensors file (a header of {len} bytes is over the limit of {MAX_HEADER_BYTES})", path.display());
    }
    Ok(len as usize)
}

/// The header of a whole safetensors file in memory.
fn header_of<'a>(bytes: &'a [u8], path: &Path) -> Result<&'a [u8]> {
    let first = bytes.get(..8).ok_or_else(|| anyhow!("{}: not a valid safetensors file (too short)", path.display()))?;
    let len = checked_header_len(first.try_into().expect("8 bytes"), path)?;
    bytes.get(8..8 + len).ok_or_else(|| anyhow!("{}: not a valid safetensors file (its {len}-byte header runs past the end: truncated?)", path.display()))
}
