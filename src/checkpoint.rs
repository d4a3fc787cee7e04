//! Checkpoints as safetensors: weights named `<layer>.kernel` / `<layer>.bias` in Keras layouts
//! (conv HWIO, dense (in, out)), Adam's moments as `<param>.adam_m` / `.adam_v`, and the run's
//! facts (architecture text, input shape, class names, epoch, step, seed, augmentation, history)
//! as string metadata. Written to a temporary file and renamed, so a crash never leaves half a file.

use crate::augment::Augmentation;
use crate::image_pipeline::Preprocessing;
use crate::model::{parse_arch, parse_input_shape, Model};
use crate::network::HostTensor;
use crate::train::EpochRecord;
use anyhow::{anyhow, bail, Context, Result};
use safetensors::{tensor::TensorView, Dtype, SafeTensors};
use std::collections::HashMap;
use std::path::Path;

pub const FORMAT: &str = "gpu-cnn/1";

#[derive(Clone, Debug, PartialEq)]
pub struct CheckpointMeta {
    pub arch: String,
    pub input: (usize, usize, usize),
    pub class_names: Vec<String>,
    pub dataset: String,
    /// Epochs completed.
    pub epoch: usize,
    /// Adam steps taken.
    pub step: u64,
    pub seed: u64,
    pub batch_size: usize,
    pub learning_rate: f32,
    /// The training run's augmentation ("none" in checkpoints from before it existed).
    pub augment: Augmentation,
    pub history: Vec<EpochRecord>,
    /// How image files become the model's input; None in checkpoints from before it was
    /// stored (then `Preprocessing::legacy`).
    pub preprocessing: Option<Preprocessing>,
    /// Where the training data came from when it was a folder (`--data`), so `evaluate` can
    /// score exactly the split training held out.
    pub data_source: Option<DataSource>,
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
    pub fn has_optimizer_state(&self) -> bool {
        self.tensors.iter().any(|t| t.name.ends_with(".adam_m"))
    }
}

/// Writes weights (and optimizer state, when given) atomically: `path.tmp`, fsync, rename.
pub fn save(path: &Path, meta: &CheckpointMeta, tensors: &[HostTensor]) -> Result<()> {
    let bytes: Vec<Vec<u8>> = tensors.iter().map(|t| bytemuck::cast_slice(&t.data).to_vec()).collect();
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .zip(&bytes)
        .map(|(t, b)| Ok((t.name.clone(), TensorView::new(Dtype::F32, t.dims.clone(), b).map_err(|e| anyhow!("{}: {e:?}", t.name))?)))
        .collect::<Result<_>>()?;
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
    info.insert("augment".to_string(), meta.augment.name());
    info.insert("history".to_string(), serde_json::to_string(&meta.history)?);
    if let Some(p) = &meta.preprocessing {
        info.insert("preprocessing".to_string(), serde_json::to_string(p)?);
    }
    if let Some(d) = &meta.data_source {
        info.insert("data_source".to_string(), serde_json::to_string(d)?);
    }
    let data = safetensors::serialize(views, &Some(info)).map_err(|e| anyhow!("serialising checkpoint: {e:?}"))?;
    write_atomically(path, &data)
}

/// Writes `data` to `path` through a temporary file in the same folder and a rename.
pub fn write_atomically(path: &Path, data: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!("{}.tmp", path.extension().and_then(|e| e.to_str()).unwrap_or("")));
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp).with_context(|| format!("{}: cannot create", tmp.display()))?;
        f.write_all(data).with_context(|| format!("{}: cannot write", tmp.display()))?;
        f.sync_all().ok();
    }
    std::fs::rename(&tmp, path).with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))
}

pub fn load(path: &Path) -> Result<Checkpoint> {
    let bytes = std::fs::read(path).with_context(|| format!("{}: cannot read checkpoint", path.display()))?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| anyhow!("{}: not a valid safetensors file ({e:?})", path.display()))?;
    let (_, header) = SafeTensors::read_metadata(&bytes).map_err(|e| anyhow!("{}: {e:?}", path.display()))?;
    let info = header.metadata().clone().unwrap_or_default();
    let get = |key: &str| -> Result<&String> { info.get(key).ok_or_else(|| anyhow!("{}: metadata '{key}' is missing (not a gpu-cnn checkpoint?)", path.display())) };
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
        learning_rate: get("learning_rate")?.parse().map_err(|_| anyhow!("{}: metadata learning_rate", path.display()))?,
        augment: match info.get("augment") {
            Some(text) => Augmentation::parse(text).with_context(|| format!("{}: metadata augment", path.display()))?,
            None => Augmentation::NONE,
        },
        history: serde_json::from_str(get("history")?).with_context(|| format!("{}: metadata history", path.display()))?,
        preprocessing: info.get("preprocessing").map(|t| serde_json::from_str(t)).transpose().with_context(|| format!("{}: metadata preprocessing", path.display()))?,
        data_source: info.get("data_source").map(|t| serde_json::from_str(t)).transpose().with_context(|| format!("{}: metadata data_source", path.display()))?,
    };
    let mut tensors = Vec::new();
    for (name, view) in st.tensors() {
        if view.dtype() != Dtype::F32 {
            bail!("{}: tensor '{name}' is {:?}, expected F32", path.display(), view.dtype());
        }
        let data: Vec<f32> = view.data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
        tensors.push(HostTensor { name, dims: view.shape().to_vec(), data });
    }
    Ok(Checkpoint { meta, tensors })
}
