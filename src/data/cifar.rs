//! CIFAR-10's binary format (cifar-10-batches-bin/): data_batch_1..5.bin and test_batch.bin,
//! 10,000 records each of 1 label byte + 3,072 pixel bytes (1,024 red, then green, then blue,
//! row-major 32x32), and batches.meta.txt with one class name a line.

use super::{Dataset, ImageSet};
use anyhow::{bail, Context, Result};
use std::path::Path;

pub const SIDE: usize = 32;
const PLANE: usize = SIDE * SIDE;
pub const RECORD: usize = 1 + 3 * PLANE;
/// The largest batch file read: 256 MiB (a real one is 30.7 MB: 10,000 records).
pub const MAX_BATCH_BYTES: u64 = 256 << 20;
/// The largest batches.meta.txt read (the real one is 61 bytes).
const MAX_META_BYTES: u64 = 64 << 10;

/// Reads one batch file, converting planar CHW to NHWC and checking labels < classes.
pub fn read_batch(path: &Path, classes: usize, into: &mut ImageSet) -> Result<()> {
    let bytes = crate::fallible::read_capped(path, MAX_BATCH_BYTES, "a CIFAR-10 batch")?;
    parse_batch(&bytes, path, classes, into)
}

/// Parses one batch file's bytes (`path` names it in errors).
pub fn parse_batch(bytes: &[u8], path: &Path, classes: usize, into: &mut ImageSet) -> Result<()> {
    if bytes.is_empty() || !bytes.len().is_multiple_of(RECORD) {
        bail!("{}: {} bytes is not a whole number of {RECORD}-byte CIFAR-10 records (truncated?)", path.display(), bytes.len());
    }
    for (i, rec) in bytes.chunks(RECORD).enumerate() {
        let label = rec[0];
        if label as usize >= classes {
            bail!("{}: record {i} has label {label}, not below the number of classes ({classes})", path.display());
        }
        let images = std::sync::Arc::make_mut(&mut into.images);
        into.labels
            .try_reserve(1)
            .and_then(|_| images.try_reserve(3 * PLANE))
            .map_err(|_| anyhow::anyhow!("{}: out of memory reading record {i}", path.display()))?;
        into.labels.push(label);
        let planes = &rec[1..];
        for p in 0..PLANE {
            images.extend_from_slice(&[planes[p], planes[PLANE + p], planes[2 * PLANE + p]]);
        }
    }
    Ok(())
}

/// Reads batches.meta.txt: one class name a line (blank lines dropped).
pub fn read_class_names(dir: &Path) -> Result<Vec<String>> {
    let path = dir.join("batches.meta.txt");
    let bytes = crate::fallible::read_capped(&path, MAX_META_BYTES, "the class names")?;
    let text = String::from_utf8(bytes).map_err(|_| anyhow::anyhow!("{}: the class names are not UTF-8 text", path.display()))?;
    let names: Vec<String> = text.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect();
    if names.is_empty() || names.len() > 256 {
        bail!("{}: expected one class name a line, found {}", path.display(), names.len());
    }
    Ok(names)
}

pub fn load(dir: &Path) -> Result<Dataset> {
    let class_names = read_class_names(dir)?;
    let empty = || ImageSet { height: SIDE, width: SIDE, channels: 3, ..Default::default() };
    let mut train = empty();
    for i in 1..=5 {
        let path = dir.join(format!("data_batch_{i}.bin"));
        if !path.exists() {
            bail!("{}: missing (CIFAR-10 has data_batch_1.bin .. data_batch_5.bin and test_batch.bin)", path.display());
        }
        read_batch(&path, class_names.len(), &mut train)?;
    }
    let mut test = empty();
    read_batch(&dir.join("test_batch.bin"), class_names.len(), &mut test)?;
    Ok(Dataset { name: "cifar10".into(), class_names, train, test })
}

/// Writes one batch file in the real format (for tests): NHWC images in, planar records out.
pub fn write_batch(path: &Path, images: &[u8], labels: &[u8]) -> Result<()> {
    let mut out = Vec::with_capacity(labels.len() * RECORD);
    for (i, &label) in labels.iter().enumerate() {
        out.push(label);
        let img = &images[i * 3 * PLANE..][..3 * PLANE];
        for c in 0..3 {
            out.extend((0..PLANE).map(|p| img[p * 3 + c]));
        }
    }
    std::fs::write(path, out).with_context(|| format!("{}: cannot write", path.display()))
}
