//! The IDX format of MNIST and Fashion-MNIST (raw or .gz): big-endian magic 0x00000803 for
//! images (count, rows, cols) and 0x00000801 for labels (count), then the u8 payload.

use super::{Dataset, ImageSet};
use anyhow::{bail, Context, Result};
use std::io::Read;
use std::path::{Path, PathBuf};

/// Reads a whole file, un-gzipping it when its name ends in .gz.
fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
    if path.extension().is_some_and(|e| e == "gz") {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .with_context(|| format!("{}: not a valid gzip file (truncated or corrupt?)", path.display()))?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

fn header(bytes: &[u8], path: &Path, magic: u32, dims: usize) -> Result<Vec<usize>> {
    let need = 4 + 4 * dims;
    if bytes.len() < need {
        bail!("{}: too short for an IDX header ({} bytes)", path.display(), bytes.len());
    }
    let word = |i: usize| u32::from_be_bytes(bytes[4 * i..4 * i + 4].try_into().unwrap());
    if word(0) != magic {
        bail!("{}: wrong magic number 0x{:08x}, expected 0x{magic:08x} (is this the right IDX file?)", path.display(), word(0));
    }
    Ok((1..=dims).map(|i| word(i) as usize).collect())
}

/// Reads an IDX image file: (count, rows, cols, pixels).
pub fn read_images(path: &Path) -> Result<(usize, usize, usize, Vec<u8>)> {
    let bytes = read_maybe_gz(path)?;
    let dims = header(&bytes, path, 0x0000_0803, 3)?;
    let (n, rows, cols) = (dims[0], dims[1], dims[2]);
    let expected = n * rows * cols;
    if bytes.len() - 16 != expected {
        bail!("{}: truncated or padded: header says {n} images of {rows}x{cols} ({expected} bytes) but {} bytes follow", path.display(), bytes.len() - 16);
    }
    Ok((n, rows, cols, bytes[16..].to_vec()))
}

/// Reads an IDX label file, checking every label is below `classes`.
pub fn read_labels(path: &Path, classes: usize) -> Result<Vec<u8>> {
    let bytes = read_maybe_gz(path)?;
    let n = header(&bytes, path, 0x0000_0801, 1)?[0];
    if bytes.len() - 8 != n {
        bail!("{}: truncated or padded: header says {n} labels but {} bytes follow", path.display(), bytes.len() - 8);
    }
    if let Some((i, &l)) = bytes[8..].iter().enumerate().find(|(_, &l)| l as usize >= classes) {
        bail!("{}: label {l} at index {i} is not below the number of classes ({classes})", path.display());
    }
    Ok(bytes[8..].to_vec())
}

/// Finds `stem` or `stem.gz` in dir.
fn find(dir: &Path, stem: &str) -> Result<PathBuf> {
    for name in [format!("{stem}.gz"), stem.to_string()] {
        let p = dir.join(&name);
        if p.exists() {
            return Ok(p);
        }
    }
    bail!("{}: missing file {stem}(.gz)", dir.display())
}

fn load_split(dir: &Path, prefix: &str, classes: usize) -> Result<ImageSet> {
    let image_path = find(dir, &format!("{prefix}-images-idx3-ubyte"))?;
    let label_path = find(dir, &format!("{prefix}-labels-idx1-ubyte"))?;
    let (n, rows, cols, images) = read_images(&image_path)?;
    let labels = read_labels(&label_path, classes)?;
    if labels.len() != n {
        bail!("{} has {n} images but {} has {} labels", image_path.display(), label_path.display(), labels.len());
    }
    Ok(ImageSet { images: images.into(), labels, height: rows, width: cols, channels: 1 })
}

/// Loads train-* and t10k-* from a folder.
pub fn load_dir(dir: &Path, name: &str, class_names: Vec<String>) -> Result<Dataset> {
    let train = load_split(dir, "train", class_names.len())?;
    let test = load_split(dir, "t10k", class_names.len())?;
    if (train.height, train.width) != (test.height, test.width) {
        bail!("{}: train images are {}x{} but test images are {}x{}", dir.display(), train.height, train.width, test.height, test.width);
    }
    Ok(Dataset { name: name.to_string(), class_names, train, test })
}

/// Writes an IDX pair (for tests and for exporting): images (n, rows, cols) and labels.
pub fn write_idx(images_path: &Path, labels_path: &Path, rows: usize, cols: usize, images: &[u8], labels: &[u8]) -> Result<()> {
    let mut img = Vec::with_capacity(16 + images.len());
    for w in [0x0803u32, labels.len() as u32, rows as u32, cols as u32] {
        img.extend_from_slice(&w.to_be_bytes());
    }
    img.extend_from_slice(images);
    let mut lab = Vec::with_capacity(8 + labels.len());
    for w in [0x0801u32, labels.len() as u32] {
        lab.extend_from_slice(&w.to_be_bytes());
    }
    lab.extend_from_slice(labels);
    std::fs::write(images_path, img)?;
    std::fs::write(labels_path, lab)?;
    Ok(())
}
