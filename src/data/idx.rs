//! The IDX format of MNIST and Fashion-MNIST (raw or .gz): big-endian magic 0x00000803 for
//! images (count, rows, cols) and 0x00000801 for labels (count), then the u8 payload.

use super::{Dataset, ImageSet};
use anyhow::{bail, Context, Result};
use std::io::Read;
use std::path::{Path, PathBuf};

/// The largest IDX payload read: 1 GiB (MNIST's training images are 47 MB).
pub const MAX_IDX_BYTES: u64 = 1 << 30;

/// The file's bytes as a stream: un-gzipped (every gzip member) when its name ends in .gz.
fn open(path: &Path) -> Result<Box<dyn Read>> {
    let file = crate::fallible::open_regular_file(path, "an IDX file")?;
    let reader = std::io::BufReader::new(file);
    Ok(if is_gz(path) { Box::new(flate2::bufread::MultiGzDecoder::new(reader)) } else { Box::new(reader) })
}

fn is_gz(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "gz")
}

fn read_error(path: &Path, e: std::io::Error) -> anyhow::Error {
    if is_gz(path) {
        anyhow::anyhow!("{}: not a valid gzip file (truncated or corrupt?): {e}", path.display())
    } else {
        anyhow::anyhow!("{}: cannot read: {e}", path.display())
    }
}

/// Reads an IDX file with `dims` dimensions from any byte stream (`path` names it in errors;
/// .gz means gzip errors): the dimensions, then exactly the payload they declare. The size is
/// checked before anything is allocated, and no more than it is ever decompressed (a gzip bomb
/// stops at the declared size).
fn read_idx_from(mut reader: impl Read, path: &Path, magic: u32, dims: usize) -> Result<(Vec<usize>, Vec<u8>)> {
    let mut head = vec![0u8; 4 + 4 * dims];
    let mut got = 0;
    while got < head.len() {
        match reader.read(&mut head[got..]) {
            Ok(0) => bail!("{}: too short for an IDX header ({got} bytes)", path.display()),
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(read_error(path, e)),
        }
    }
    let word = |i: usize| u32::from_be_bytes(head[4 * i..4 * i + 4].try_into().unwrap());
    if word(0) != magic {
        bail!("{}: wrong magic number 0x{:08x}, expected 0x{magic:08x} (is this the right IDX file?)", path.display(), word(0));
    }
    let sizes: Vec<usize> = (1..=dims).map(|i| word(i) as usize).collect();
    let shape = sizes.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("x");
    let expected = sizes.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d as u64)).filter(|&n| n <= MAX_IDX_BYTES);
    let Some(expected) = expected else {
        bail!("{}: header declares {shape} values, more than the limit of {MAX_IDX_BYTES} bytes (corrupt header?)", path.display());
    };
    let mut payload = crate::fallible::with_capacity(expected as usize).with_context(|| format!("{}: {shape} values", path.display()))?;
    reader.take(expected + 1).read_to_end(&mut payload).map_err(|e| read_error(path, e))?;
    if payload.len() as u64 != expected {
        let what = if (payload.len() as u64) < expected { "truncated" } else { "padded" };
        let follow = if what == "padded" { "more".to_string() } else { payload.len().to_string() };
        bail!("{}: {what}: header says {shape} ({expected} bytes) but {follow} bytes follow", path.display());
    }
    Ok((sizes, payload))
}

/// Reads an IDX image file: (count, rows, cols, pixels).
pub fn read_images(path: &Path) -> Result<(usize, usize, usize, Vec<u8>)> {
    read_images_from(open(path)?, path)
}

/// Parses IDX images from a byte stream (already un-gzipped): (count, rows, cols, pixels).
pub fn read_images_from(reader: impl Read, path: &Path) -> Result<(usize, usize, usize, Vec<u8>)> {
    let (dims, pixels) = read_idx_from(reader, path, 0x0000_0803, 3)?;
    if dims[1] == 0 || dims[2] == 0 {
        bail!("{}: header declares images of {}x{} pixels; an image needs at least one", path.display(), dims[1], dims[2]);
    }
    Ok((dims[0], dims[1], dims[2], pixels))
}

/// Reads an IDX label file, checking every label is below `classes`.
pub fn read_labels(path: &Path, classes: usize) -> Result<Vec<u8>> {
    read_labels_from(open(path)?, path, classes)
}

/// Parses IDX labels from a byte stream (already un-gzipped), checking each is below `classes`.
pub fn read_labels_from(reader: impl Read, path: &Path, classes: usize) -> Result<Vec<u8>> {
    let (_, labels) = read_idx_from(reader, path, 0x0000_0801, 1)?;
    if let Some((i, &l)) = labels.iter().enumerate().find(|(_, &l)| l as usize >= classes) {
        bail!("{}: label {l} at index {i} is not below the number of classes ({classes})", path.display());
    }
    Ok(labels)
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
