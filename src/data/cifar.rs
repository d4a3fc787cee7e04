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

/// Reads one batch file, converting planar CHW to NHWC and checking labels < classes. Records
/// stream through a small buffer straight into `into`: the file is never held whole (a 30 MB
/// buffer per file would stay in the allocator's heap after the load).
pub fn read_batch(path: &Path, classes: usize, into: &mut ImageSet) -> Result<()> {
    let (file, records) = open_batch(path)?;
    reserve_records(into, records).with_context(|| format!("{}: out of memory for {records} records", path.display()))?;
    read_records(file, records, path, classes, into)
}

/// Streams `records` records of an opened batch file into `into` (room already reserved).
fn read_records(file: std::fs::File, records: usize, path: &Path, classes: usize, into: &mut ImageSet) -> Result<()> {
    use std::io::Read;
    let mut reader = std::io::BufReader::with_capacity(1 << 16, file);
    let mut record = [0u8; RECORD];
    for i in 0..records {
        reader.read_exact(&mut record).with_context(|| format!("{}: cannot read record {i} (the file shrank while being read?)", path.display()))?;
        push_record(&record, i, path, classes, into)?;
    }
    Ok(())
}

/// Opens a batch file and counts its records: a regular file of whole records within the cap.
fn open_batch(path: &Path) -> Result<(std::fs::File, usize)> {
    let file = crate::fallible::open_regular_file(path, "a CIFAR-10 batch")?;
    let info = file.metadata().with_context(|| format!("{}: cannot read a CIFAR-10 batch", path.display()))?;
    let len = info.len();
    if len > MAX_BATCH_BYTES {
        bail!("{}: {len} bytes is larger than the limit for a CIFAR-10 batch ({MAX_BATCH_BYTES} bytes)", path.display());
    }
    if len == 0 || !len.is_multiple_of(RECORD as u64) {
        bail!("{}: {len} bytes is not a whole number of {RECORD}-byte CIFAR-10 records (truncated?)", path.display());
    }
    Ok((file, (len / RECORD as u64) as usize))
}

/// Room for `records` more images in `set`, reserved exactly: the set grows once, not by
/// doubling (which could leave up to twice the data set's size allocated).
fn reserve_records(set: &mut ImageSet, records: usize) -> Result<()> {
    let bytes = records.checked_mul(3 * PLANE).context("too many records")?;
    set.labels.try_reserve_exact(records)?;
    std::sync::Arc::make_mut(&mut set.images).try_reserve_exact(bytes)?;
    Ok(())
}

/// Parses one batch file's bytes (`path` names it in errors).
pub fn parse_batch(bytes: &[u8], path: &Path, classes: usize, into: &mut ImageSet) -> Result<()> {
    if bytes.is_empty() || !bytes.len().is_multiple_of(RECORD) {
        bail!("{}: {} bytes is not a whole number of {RECORD}-byte CIFAR-10 records (truncated?)", path.display(), bytes.len());
    }
    reserve_records(into, bytes.len() / RECORD).with_context(|| format!("{}: out of memory reading its records", path.display()))?;
    for (i, rec) in bytes.chunks(RECORD).enumerate() {
        push_record(rec, i, path, classes, into)?;
    }
    Ok(())
}

/// Appends record `i` (label byte, then the red, green and blue planes) as an NHWC image.
fn push_record(rec: &[u8], i: usize, path: &Path, classes: usize, into: &mut ImageSet) -> Result<()> {
    let label = rec[0];
    if label as usize >= classes {
        bail!("{}: record {i} has label {label}, not below the number of classes ({classes})", path.display());
    }
    into.labels.push(label);
    let images = std::sync::Arc::make_mut(&mut into.images);
    let planes = &rec[1..];
    for p in 0..PLANE {
        images.extend_from_slice(&[planes[p], planes[PLANE + p], planes[2 * PLANE + p]]);
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
    let paths: Vec<_> = (1..=5).map(|i| dir.join(format!("data_batch_{i}.bin"))).collect();
    let mut opened = Vec::with_capacity(paths.len());
    for path in &paths {
        if !path.exists() {
            bail!("{}: missing (CIFAR-10 has data_batch_1.bin .. data_batch_5.bin and test_batch.bin)", path.display());
        }
        opened.push(open_batch(path)?);
    }
    // The whole training set at once: one allocation of its exact size.
    let records = opened.iter().fold(0usize, |sum, (_, n)| sum.saturating_add(*n));
    reserve_records(&mut train, records).with_context(|| format!("{}: out of memory for {records} training images", dir.display()))?;
    for (path, (file, n)) in paths.iter().zip(opened) {
        read_records(file, n, path, class_names.len(), &mut train)?;
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
