//! Data sets: images stay u8 (N, H, W, C) in memory; backends scale them by 1/255 per batch.

pub mod cifar;
pub mod download;
pub mod folder;
pub mod idx;
pub mod synthetic;

use anyhow::{bail, Result};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Images (N, H, W, C) as u8 and one u8 label each. The pixels are shared (Arc) so that a
/// backend whose device memory is the host's keeps this copy instead of making a second one.
#[derive(Clone, Debug, Default)]
pub struct ImageSet {
    pub images: Arc<Vec<u8>>,
    pub labels: Vec<u8>,
    pub height: usize,
    pub width: usize,
    pub channels: usize,
}

impl ImageSet {
    pub fn len(&self) -> usize {
        self.labels.len()
    }
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
    /// Values per image. Every loader checks its sizes, so this product cannot overflow.
    pub fn image_len(&self) -> usize {
        self.height * self.width * self.channels
    }
    pub fn image(&self, i: usize) -> &[u8] {
        &self.images[i * self.image_len()..][..self.image_len()]
    }
    /// Keeps the first `n` images (for quick runs).
    pub fn truncate(&mut self, n: usize) {
        if n < self.len() {
            self.labels.truncate(n);
            let len = n * self.image_len();
            Arc::make_mut(&mut self.images).truncate(len);
        }
    }
}

#[derive(Clone, Debug)]
pub struct Dataset {
    pub name: String,
    pub class_names: Vec<String>,
    pub train: ImageSet,
    pub test: ImageSet,
}

impl Dataset {
    pub fn input_shape(&self) -> (usize, usize, usize) {
        (self.train.height, self.train.width, self.train.channels)
    }

    /// What training needs of a data set, checked before it starts (the loaders make sets
    /// that pass; a set built in code may not): both splits hold images, of one shape, with
    /// as many pixels as images, and every label names a class.
    pub fn check(&self) -> Result<()> {
        let name = &self.name;
        if self.class_names.is_empty() {
            bail!("{name}: the data set has no classes");
        }
        for (split, set) in [("training", &self.train), ("test", &self.test)] {
            if set.is_empty() {
                bail!("{name}: the {split} split is empty");
            }
            let shape = (set.height, set.width, set.channels);
            if shape != self.input_shape() {
                let (a, b) = (shape, self.input_shape());
                bail!("{name}: the {split} images are {}x{}x{} but the training images are {}x{}x{}", a.0, a.1, a.2, b.0, b.1, b.2);
            }
            let bytes = set.height.checked_mul(set.width).and_then(|p| p.checked_mul(set.channels)).and_then(|l| l.checked_mul(set.len()));
            if bytes != Some(set.images.len()) {
                bail!("{name}: the {split} split has {} labels but {} bytes of {}x{}x{} pixels", set.len(), set.images.len(), shape.0, shape.1, shape.2);
            }
            if let Some((i, &label)) = set.labels.iter().enumerate().find(|(_, &l)| l as usize >= self.class_names.len()) {
                bail!(
                    "{name}: {split} image {i} has label {label}, but there are {} classes (labels 0 to {})",
                    self.class_names.len(),
                    self.class_names.len() - 1
                );
            }
        }
        Ok(())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DatasetKind {
    Cifar10,
    FashionMnist,
    Mnist,
    Synthetic,
}

pub const FASHION_MNIST_SYSTEM_DIR: &str = "/usr/share/datasets/fashion-mnist";

pub const FASHION_MNIST_CLASSES: [&str; 10] = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"];

/// Loads a data set. `data_dir` is where its files are; without it, the usual places are tried,
/// then the download cache (downloading into it when the files are missing).
pub fn load(kind: DatasetKind, data_dir: Option<&Path>, seed: u64) -> Result<Dataset> {
    load_with(kind, data_dir, seed, false)
}

/// As `load`; with `offline`, a data set missing from the cache is an error, never a download.
pub fn load_with(kind: DatasetKind, data_dir: Option<&Path>, seed: u64, offline: bool) -> Result<Dataset> {
    match kind {
        DatasetKind::Synthetic => Ok(synthetic::generate(&synthetic::SyntheticSpec::default(), seed)),
        DatasetKind::Cifar10 => {
            let candidates = match data_dir {
                Some(d) => vec![d.join("cifar-10-batches-bin"), d.to_path_buf()],
                None => vec![PathBuf::from("data/cifar-10-batches-bin"), PathBuf::from("cifar-10-batches-bin")],
            };
            match candidates.iter().find(|d| d.join("data_batch_1.bin").exists()) {
                Some(dir) => cifar::load(dir),
                None if data_dir.is_none() => cifar::load(&download::ensure_cached(&download::cifar10(), offline)?.join("cifar-10-batches-bin")),
                None => bail!(
                    "CIFAR-10 not found: looked for data_batch_1.bin in {}.\n\
                     Get the binary version (cifar-10-binary.tar.gz, 162 MB) from https://www.cs.toronto.edu/~kriz/cifar.html, \
                     unpack it (tar xzf cifar-10-binary.tar.gz) and pass --data-dir to the folder holding cifar-10-batches-bin/.",
                    candidates.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
                ),
            }
        }
        DatasetKind::FashionMnist | DatasetKind::Mnist => {
            let (name, default_dir, classes): (&str, Option<&str>, Vec<String>) = if kind == DatasetKind::FashionMnist {
                ("fashion-mnist", Some(FASHION_MNIST_SYSTEM_DIR), FASHION_MNIST_CLASSES.iter().map(|s| s.to_string()).collect())
            } else {
                ("mnist", None, (0..10).map(|d| d.to_string()).collect())
            };
            let dir = match (data_dir, default_dir) {
                (Some(d), _) => d.to_path_buf(),
                (None, Some(d)) if Path::new(d).exists() => PathBuf::from(d),
                (None, _) if kind == DatasetKind::FashionMnist => download::ensure_cached(&download::fashion_mnist(), offline)
                    .map_err(|e| anyhow::anyhow!("{e:#}\n(On Debian, apt-get install dataset-fashion-mnist puts the files in {FASHION_MNIST_SYSTEM_DIR}.)"))?,
                (None, _) => download::ensure_cached(&download::mnist(), offline)?,
            };
            idx::load_dir(&dir, name, classes)
        }
    }
}
