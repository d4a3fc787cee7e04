//! A shop's own photos: one sub-folder per class (as Keras's `image_dataset_from_directory` and
//! torchvision's `ImageFolder`), any size and colour type, prepared on all cores by the one image
//! pipeline (image_pipeline.rs, the same as `predict`'s) and cached as u8 so the next start reads
//! one file instead of decoding again.
//!
//! Layouts: `DIR/<class>/*` (split into train and validation by a seeded, stratified
//! `val_split`), or `DIR/train/<class>/*` with `DIR/test/<class>/*`.

use super::{Dataset, ImageSet};
use crate::image_pipeline::{self, Preprocessing};
use crate::report::plural;
use crate::rng::Rng;
use anyhow::{bail, Context, Result};
use md5::{Digest, Md5};
use rayon::prelude::*;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Bumped whenever the file layout changes, so old caches are not trusted (the pipeline's own
/// version and settings are part of the key too).
const CACHE_VERSION: &str = "gpu-cnn image folder cache v2";
const CACHE_MAGIC: &[u8; 8] = b"GPUCNNF1";
const PURPOSE_VAL_SPLIT: u64 = crate::rng::purpose::VAL_SPLIT;

#[derive(Clone, Debug)]
pub struct FolderOptions {
    /// How every file becomes a model input (size, colour, alpha, aspect ratio, filter).
    pub preprocessing: Preprocessing,
    /// Fraction of each class held out for validation when there is no train/test layout;
    /// 1 holds out every image (`evaluate` of a folder training never saw), and the training
    /// split is then one placeholder image (a `Dataset` has one).
    pub val_split: f32,
    pub seed: u64,
    /// Skip files that do not decode (each named in one warning) instead of stopping.
    pub skip_bad: bool,
    /// Folder for the decoded-image cache; None: decode every time.
    pub cache_dir: Option<PathBuf>,
}

/// One image file: where it is, its class, and whether it belongs to DIR/test.
#[derive(Clone, Debug)]
struct ImageFile {
    path: PathBuf,
    label: u8,
    test: bool,
}

#[derive(Debug)]
struct Listing {
    class_names: Vec<String>,
    files: Vec<ImageFile>,
    has_test_folder: bool,
}

/// One listing of a folder: its class-like sub-folders, the ones skipped as gpu-cnn's own
/// (runs, reports) and the files beside them, which belong to no class.
struct Listed {
    /// Sorted by name; hidden ones skipped.
    folders: Vec<(String, PathBuf)>,
    own: Vec<PathBuf>,
    loose: Unused,
}

fn list_folder(dir: &Path) -> Result<Listed> {
    let mut listed = Listed { folders: Vec::new(), own: Vec::new(), loose: Unused::default() };
    for entry in std::fs::read_dir(dir).with_context(|| format!("{}: cannot list the folder", dir.display()))? {
        let entry = entry?;
        let (raw, path) = (entry.file_name(), entry.path());
        let visible = !raw.to_string_lossy().starts_with('.');
        if !path.is_dir() {
            if visible {
                listed.loose.count(&path);
            }
            continue;
        }
        // A class name must survive the round trip through the checkpoint: two folders whose
        // non-UTF-8 names would print alike must not become one class.
        let Some(name) = raw.to_str().map(str::to_string) else {
            bail!("{}: the class folder name is not valid UTF-8; rename it", path.display());
        };
        if !visible {
            continue;
        }
        if holds_runs(&path) {
            listed.own.push(path);
        } else {
            listed.folders.push((name, path));
        }
    }
    listed.folders.sort();
    listed.own.sort();
    Ok(listed)
}

/// Sub-folders of `dir`, sorted by name (hidden ones and gpu-cnn's own skipped).
fn sub_folders(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    Ok(list_folder(dir)?.folders)
}

/// Whether `dir` is a training run's folder (`gpu-cnn train --out`), an `evaluate --out`
/// report, or holds only run folders (`runs/`, the default --out, when training ran inside the
/// data folder): its pictures are not images of a class. Reads `dir` only up to its first
/// entry that is not a run folder (a class folder's first image).
fn holds_runs(dir: &Path) -> bool {
    use crate::run_dir::is_run_folder;
    if is_run_folder(dir) || is_report_folder(dir) {
        return true;
    }
    let Ok(entries) = std::fs::read_dir(dir) else { return false };
    let mut any = false;
    for e in entries.flatten().filter(|e| !e.file_name().to_string_lossy().starts_with('.')) {
        let p = e.path();
        if !(p.is_dir() && is_run_folder(&p)) {
            return false;
        }
        any = true;
    }
    any
}

/// A folder split by hand: the training images' folder and the held-out one.
pub struct SplitFolders {
    pub train: PathBuf,
    /// Validation during training, and what `evaluate` scores.
    pub held_out: PathBuf,
    /// What the split leaves unused (a test folder beside a validation one, other folders).
    pub notes: Vec<String>,
}

/// What a top-level folder's name says it holds, in any case: `train`/`training`, or held-out
/// images: validation (`val`, `valid`, `validation`) or test (`test`, `testing`).
#[derive(Clone, Copy, PartialEq, Debug)]
enum Split {
    Train,
    Validation,
    Test,
}

fn split_name(name: &str) -> Option<Split> {
    match name.to_ascii_lowercase().as_str() {
        "train" | "training" => Some(Split::Train),
        "val" | "valid" | "validation" => Some(Split::Validation),
        "test" | "testing" => Some(Split::Test),
        _ => None,
    }
}

fn folder_names(folders: &[(String, PathBuf)]) -> String {
    folders.iter().map(|(n, _)| format!("{n}/")).collect::<Vec<_>>().join(", ")
}

/// `dir`'s split folders, when it has a training folder and a held-out one beside it (train/
/// with test/, val/ or validation/, in any case; they were taken for two classes named
/// "train" and "validation"). With both a validation and a test folder, training validates on
/// the validation one and says so: the test images stay unseen for `evaluate --data DIR/test`.
pub fn split_folders(dir: &Path) -> Result<Option<SplitFolders>> {
    split_of(dir, &sub_folders(dir)?)
}

/// `split_folders` of a folder already listed.
fn split_of(dir: &Path, folders: &[(String, PathBuf)]) -> Result<Option<SplitFolders>> {
    let named = |want: Split| -> Vec<&PathBuf> { folders.iter().filter(|(n, _)| split_name(n) == Some(want)).map(|(_, p)| p).collect() };
    let (train, val, test) = (named(Split::Train), named(Split::Validation), named(Split::Test));
    let split_named = train.len() + val.len() + test.len();
    if split_named == 0 {
        return Ok(None);
    }
    if train.len() > 1 || val.len() > 1 || test.len() > 1 {
        bail!("{}: holds more than one folder of a split (train, val, test; names compared in any case); keep one of each", dir.display());
    }
    if train.is_empty() && split_named == folders.len() {
        bail!("{}: holds split folders ({}) but no train/ folder beside them", dir.display(), folder_names(folders));
    }
    if train.is_empty() {
        // A class that happens to be called "test" among others.
        return Ok(None);
    }
    if val.is_empty() && test.is_empty() {
        if folders.len() == 1 {
            return Ok(None); // list() says where the held-out images go
        }
        bail!(
            "{}: holds a train/ folder but no test/ or val/ beside it ({}); put the held-out images in test/, or give --data {} to split train/ itself",
            dir.display(),
            folder_names(folders),
            train[0].display()
        );
    }
    let held_out = val.first().or(test.first()).map(|p| p.to_path_buf()).expect("one held-out folder");
    let mut notes = Vec::new();
    if let (Some(v), Some(t)) = (val.first(), test.first()) {
        notes.push(format!("{} is the held-out folder; {} is not used (score it with evaluate --data {})", v.display(), t.display(), t.display()));
    }
    for (name, path) in folders {
        if split_name(name).is_none() {
            notes.push(format!("{} is not a split folder (train, val, test) and is not used", path.display()));
        }
    }
    Ok(Some(SplitFolders { train: train[0].to_path_buf(), held_out, notes }))
}

/// Whether `dir` holds an `evaluate --out` report (report.html and confusion.json): its
/// pictures are not images of a class.
fn is_report_folder(dir: &Path) -> bool {
    dir.join("report.html").is_file() && dir.join("confusion.json").is_file()
}

/// How deep class folders are searched for images (a guard, not a layout anyone needs).
const MAX_FOLDER_DEPTH: usize = 16;

/// The image files of one class folder and its sub-folders (as Keras and torchvision find
/// them; hidden files and folders skipped, symlinked folders not followed), sorted by path;
/// an empty folder is an error. What is passed over (not hidden) is counted in `unused`.
fn class_files(dir: &Path, unused: &mut Unused) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut folders = vec![(dir.to_path_buf(), 0)];
    while let Some((folder, depth)) = folders.pop() {
        for entry in std::fs::read_dir(&folder).with_context(|| format!("{}: cannot list the folder", folder.display()))? {
            let entry = entry?;
            let path = entry.path();
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let real_dir = entry.file_type().is_ok_and(|t| t.is_dir()); // file_type: a symlink is not followed
            if real_dir && depth < MAX_FOLDER_DEPTH && !holds_runs(&path) {
                folders.push((path, depth + 1));
            } else if path.is_file() && image_pipeline::has_image_extension(&path) {
                files.push(path);
            } else if !real_dir {
                unused.count(&path);
            }
        }
    }
    if files.is_empty() {
        bail!("{}: the class folder holds no images ({})", dir.display(), image_pipeline::IMAGE_EXTENSIONS.join(", "));
    }
    files.sort();
    Ok(files)
}

/// Entries of a folder tree that are not used, by kind (".heic", "link to a folder"): named in
/// one note, so photos in a format we do not read do not vanish without a word.
#[derive(Default)]
struct Unused(std::collections::BTreeMap<String, usize>);

impl Unused {
    fn count(&mut self, path: &Path) {
        let kind = if path.is_dir() {
            "link to a folder".to_string()
        } else if !path.exists() {
            "broken link".to_string()
        } else {
            match path.extension() {
                Some(e) => format!(".{}", e.to_string_lossy().to_lowercase()),
                None => "file without an extension".to_string(),
            }
        };
        *self.0.entry(kind).or_default() += 1;
    }

    fn note(&self, what: &str) -> Option<String> {
        let kinds: Vec<String> = self.0.iter().map(|(kind, n)| format!("{n} {kind}")).collect();
        (!kinds.is_empty()).then(|| format!("not used {what}: {}", kinds.join(", ")))
    }
}

fn list(dir: &Path, hold_out_all: bool) -> Result<Listing> {
    if !dir.is_dir() {
        let what = if dir.exists() { "not a folder" } else { "no such folder" };
        bail!("{}: {what} (--data takes a folder with one sub-folder of images per class)", dir.display());
    }
    let top = list_folder(dir)?;
    let split = split_of(dir, &top.folders)?;
    for own in &top.own {
        crate::stderr_line!("Skipping {}: it holds gpu-cnn runs or reports, not a class", own.display());
    }
    for note in split.iter().flat_map(|s| &s.notes) {
        crate::stderr_line!("note: {note}");
    }
    let has_test_folder = split.is_some();
    let class_root = split.as_ref().map_or(dir.to_path_buf(), |s| s.train.clone());
    // Files beside the class folders belong to no class.
    let Listed { folders: classes, loose, .. } = match &split {
        Some(s) => list_folder(&s.train)?,
        None => top,
    };
    match classes.len() {
        0 => bail!("{}: no class sub-folders (put the images of each class in a sub-folder named after it)", class_root.display()),
        1 if split.is_none() && split_name(&classes[0].0).is_some() => bail!(
            "{}: holds only a '{}' folder; put the held-out images beside it in test/ (or val/), or give --data {} to hold out --val-split of it",
            dir.display(),
            classes[0].0,
            classes[0].1.display()
        ),
        // Scoring a folder of one class's photos is fine; training on one class is not.
        1 if hold_out_all && split.is_none() => {}
        1 => bail!("{}: only one class folder ({}); a classifier needs at least two", class_root.display(), classes[0].0),
        n if n > 256 => bail!("{}: {n} class folders; at most 256 are supported", class_root.display()),
        _ => {}
    }
    let class_names: Vec<String> = classes.iter().map(|(n, _)| n.clone()).collect();
    let mut files = Vec::new();
    let mut unused = Unused::default();
    for (label, (_, path)) in classes.iter().enumerate() {
        files.extend(class_files(path, &mut unused)?.into_iter().map(|path| ImageFile { path, label: label as u8, test: false }));
    }
    if let Some(split) = &split {
        let mut missing = class_names.clone();
        for (name, path) in sub_folders(&split.held_out)? {
            let label = class_names
                .iter()
                .position(|c| *c == name)
                .with_context(|| format!("{}: class '{name}' is not among the training classes in {}", path.display(), split.train.display()))?;
            files.extend(class_files(&path, &mut unused)?.into_iter().map(|path| ImageFile { path, label: label as u8, test: true }));
            missing.retain(|c| *c != name);
        }
        if !missing.is_empty() {
            crate::stderr_line!("note: {} has no folder for {missing:?}; those classes have no held-out images", split.held_out.display());
        }
    }
    let reads = image_pipeline::IMAGE_EXTENSIONS.join(", ");
    if let Some(note) = unused.note("in the class folders") {
        crate::stderr_line!("note: {note} (images are read from {reads} files)");
    }
    if let Some(note) = loose.note(&format!("beside the class folders of {}", class_root.display())) {
        crate::stderr_line!("note: {note} (a class's images go in its folder)");
    }
    Ok(Listing { class_names, files, has_test_folder })
}

/// What the cache is keyed by: the decoding settings and every file's path, size and mtime.
fn cache_key(dir: &Path, listing: &Listing, opts: &FolderOptions) -> Result<String> {
    let mut h = Md5::new();
    let p = &opts.preprocessing;
    h.update(format!("{CACHE_VERSION}\npipeline v{}\n{}\n", image_pipeline::PIPELINE_VERSION, serde_json::to_string(p)?));
    // Not in the pipeline's JSON (a safety limit, not a setting of the model), but it decides
    // which files are refused, and the cache keeps the refusals.
    h.update(format!("max_pixels {}\n", p.max_pixels));
    for f in &listing.files {
        let meta = std::fs::metadata(&f.path).with_context(|| format!("{}: cannot read", f.path.display()))?;
        let mtime = meta.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map_or(0, |d| d.as_nanos());
        let rel = f.path.strip_prefix(dir).unwrap_or(&f.path);
        h.update(format!("{}\t{}\t{}\t{}\n", rel.display(), f.label, meta.len(), mtime));
    }
    Ok(format!("{:x}", h.finalize()))
}

/// Decoded pixels of the files that decoded, and the reasons for those that did not.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct Decoded {
    /// Indices into the listing, in order; `pixels` holds one image each.
    kept: Vec<u32>,
    bad: Vec<(u32, String)>,
    #[serde(skip)]
    pixels: Vec<u8>,
}

fn decode_all(listing: &Listing, opts: &FolderOptions) -> Result<Decoded> {
    let bar = if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        indicatif::ProgressBar::new(listing.files.len() as u64)
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.set_style(indicatif::ProgressStyle::with_template("Decoding {pos}/{len} [{bar:30}] {per_sec} eta {eta}").unwrap().progress_chars("=> "));
    // Each file decodes straight into its own slot of one buffer, and the slots of files that
    // failed are closed up after: the images cost their own size in memory, not twice that.
    let image_len = opts.preprocessing.image_len()?;
    let total = listing.files.len().checked_mul(image_len).context("the decoded images do not fit in memory")?;
    let mut pixels = crate::fallible::zeroed_vec::<u8>(total).with_context(|| format!("the decoded images ({} MB) do not fit in memory", total >> 20))?;
    let results: Vec<Result<(), String>> = listing
        .files
        .par_iter()
        .zip(pixels.par_chunks_mut(image_len.max(1)))
        .map(|(f, slot)| {
            let r = match image_pipeline::load_image(&f.path, &opts.preprocessing) {
                Ok(px) if px.len() == slot.len() => {
                    slot.copy_from_slice(&px);
                    Ok(())
                }
                Ok(px) => Err(format!("{}: prepared to {} bytes, not {}", f.path.display(), px.len(), slot.len())),
                Err(e) => Err(format!("{e:#}")),
            };
            bar.inc(1);
            r
        })
        .collect();
    bar.finish_and_clear();
    let mut out = Decoded::default();
    for (i, r) in results.into_iter().enumerate() {
        match r {
            Ok(()) => {
                let k = out.kept.len();
                pixels.copy_within(i * image_len..(i + 1) * image_len, k * image_len);
                out.kept.push(i as u32);
            }
            Err(e) => out.bad.push((i as u32, e)),
        }
    }
    pixels.truncate(out.kept.len() * image_len);
    out.pixels = pixels;
    Ok(out)
}

/// The cache file for this folder and input shape; one per pair, replaced when the key changes.
fn cache_file(cache_dir: &Path, dir: &Path, opts: &FolderOptions) -> PathBuf {
    let canonical = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let mut h = Md5::new();
    let (height, width, channels) = opts.preprocessing.input_shape();
    h.update(format!("{}\n{height}x{width}x{channels}", canonical.display()));
    cache_dir.join(format!("{:x}.u8", h.finalize()))
}

/// The cached decode when the file exists, its key matches and it is consistent with the
/// listing of `files` files; None otherwise (a corrupt cache is a miss and gets rebuilt).
fn read_cache(path: &Path, key: &str, image_len: usize, files: usize) -> Option<Decoded> {
    use std::io::Read;
    // Read in two parts, the pixels straight into a buffer of their size (fallibly: a cache
    // too big for memory is a miss, and the decode then says so), never the file twice.
    let mut file = crate::fallible::open_regular_file(path, "the image cache").ok()?;
    let total = file.metadata().ok()?.len();
    let mut head = [0u8; 16];
    file.read_exact(&mut head).ok()?;
    if &head[..8] != CACHE_MAGIC {
        return None;
    }
    let header_len = u64::from_le_bytes(head[8..16].try_into().ok()?);
    let pixels_len = total.checked_sub(16)?.checked_sub(header_len)?;
    let mut header = crate::fallible::with_capacity(usize::try_from(header_len).ok()?).ok()?;
    (&mut file).take(header_len).read_to_end(&mut header).ok()?;
    let (stored_key, mut decoded): (String, Decoded) = serde_json::from_slice(&header).ok()?;
    if stored_key != key || pixels_len != (decoded.kept.len() as u64).checked_mul(image_len as u64)? {
        return None;
    }
    // Every file is either kept or bad, once, in listing order.
    let mut seen: Vec<u32> = decoded.kept.iter().copied().chain(decoded.bad.iter().map(|b| b.0)).collect();
    seen.sort_unstable();
    if seen.len() != files || seen.iter().enumerate().any(|(i, &s)| s as usize != i) || !decoded.kept.is_sorted() {
        return None;
    }
    let mut pixels = crate::fallible::with_capacity(usize::try_from(pixels_len).ok()?).ok()?;
    file.take(pixels_len).read_to_end(&mut pixels).ok()?;
    if pixels.len() as u64 != pixels_len {
        return None;
    }
    decoded.pixels = pixels;
    Some(decoded)
}

/// Writes the cache atomically (atomic_file.rs: a temporary file, removed if the write fails,
/// fsync, rename), streamed rather than built in memory: the pixels are the whole data set.
/// Temporary files left by a writer that was killed are removed first.
fn write_cache(path: &Path, key: &str, decoded: &Decoded) -> Result<()> {
    let dir = path.parent().unwrap();
    std::fs::create_dir_all(dir)?;
    remove_abandoned_cache_writes(dir);
    let header = serde_json::to_vec(&(key, decoded))?;
    crate::atomic_file::write_atomically_with(path, |tmp| {
        let mut f = std::io::BufWriter::new(std::fs::OpenOptions::new().write(true).open(tmp)?);
        f.write_all(CACHE_MAGIC)?;
        f.write_all(&(header.len() as u64).to_le_bytes())?;
        f.write_all(&header)?;
        f.write_all(&decoded.pixels)?;
        f.flush()?;
        Ok(())
    })
}

/// Removes the temporary cache files of writers that are gone (killed mid-write).
fn remove_abandoned_cache_writes(dir: &Path) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let pid = crate::atomic_file::temp_file_pid(&entry.file_name().to_string_lossy());
        if pid.is_some_and(|pid| !crate::run_dir::process_alive(pid)) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// A folder data set and the file each image came from.
pub struct FolderData {
    pub dataset: Dataset,
    /// The file of each image of `dataset.train` / `dataset.test`, in the same order.
    pub train_files: Vec<PathBuf>,
    pub test_files: Vec<PathBuf>,
    /// Which files the held-out split holds, as a digest (see `held_out_fingerprint`).
    pub held_out: String,
}

/// A digest of the held-out files' paths (relative to the folder) and labels: the same digest,
/// the same split. Checkpoints store it, so `evaluate` and `--resume` can tell when images were
/// added, removed or renamed since training, which reshuffles the split (training images may
/// then be scored as held out).
pub fn held_out_fingerprint(dir: &Path, files: &[PathBuf], labels: &[u8]) -> String {
    let mut h = Md5::new();
    for (path, label) in files.iter().zip(labels) {
        h.update(path.strip_prefix(dir).unwrap_or(path).as_os_str().as_encoded_bytes());
        h.update(format!("\t{label}\n"));
    }
    format!("{:x}", h.finalize())
}

/// Loads the folder as a data set: train and test (the validation split) ImageSets, class
/// names from the folder names.
pub fn load(dir: &Path, opts: &FolderOptions) -> Result<Dataset> {
    Ok(load_with_files(dir, opts)?.dataset)
}

/// As `load`, also naming each image's file (for `review`).
pub fn load_with_files(dir: &Path, opts: &FolderOptions) -> Result<FolderData> {
    let p = &opts.preprocessing;
    let (height, width, channels) = p.input_shape();
    if height == 0 || width == 0 {
        bail!("the image size must be at least 1x1");
    }
    // The times printed include listing and stat-ing the folder: what a start costs.
    let start = Instant::now();
    let listing = list(dir, opts.val_split == 1.0)?;
    let image_len = p.image_len()?;
    let key = cache_key(dir, &listing, opts)?;
    let cache_path = opts.cache_dir.as_deref().map(|c| cache_file(c, dir, opts));
    let cached = cache_path.as_deref().and_then(|c| read_cache(c, &key, image_len, listing.files.len()));
    let decoded = match cached {
        Some(d) => {
            crate::stderr_line!(
                "Loaded {} of {height}x{width}x{channels} from the cache {} in {:.2} s",
                plural(d.kept.len(), "image"),
                cache_path.as_ref().unwrap().display(),
                start.elapsed().as_secs_f64()
            );
            d
        }
        None => {
            let d = decode_all(&listing, opts)?;
            let secs = start.elapsed().as_secs_f64();
            crate::stderr_line!(
                "Decoded {} to {} in {secs:.2} s: {:.0} images/s on {} threads",
                plural(listing.files.len(), "image"),
                p.describe(),
                listing.files.len() as f64 / secs.max(1e-9),
                rayon::current_num_threads()
            );
            if let Some(p) = &cache_path {
                match write_cache(p, &key, &d) {
                    Ok(()) => crate::stderr_line!("Cached the decoded images in {}", p.display()),
                    Err(e) => crate::stderr_line!("warning: cannot write the image cache {}: {e:#}", p.display()),
                }
            }
            d
        }
    };
    if let Some((_, reason)) = decoded.bad.first() {
        if !opts.skip_bad {
            let more = match decoded.bad.len() {
                1 => String::new(),
                n => format!(" ({} did not decode either)", plural(n - 1, "more file")),
            };
            bail!("{reason}{more}. Fix or remove it, or pass --skip-bad to skip such files");
        }
        // Every one named (up to a screenful), so they can be fixed or removed in one go.
        const LISTED: usize = 50;
        crate::stderr_line!("warning: skipped {} that did not decode (--skip-bad):", plural(decoded.bad.len(), "file"));
        for (_, reason) in decoded.bad.iter().take(LISTED) {
            crate::stderr_line!("  {reason}");
        }
        if decoded.bad.len() > LISTED {
            crate::stderr_line!("  ... and {} more", decoded.bad.len() - LISTED);
        }
    }
    split(dir, listing, decoded, opts)
}

/// The images at `positions` of `pixels` (each `image_len` bytes), copied into a new buffer; an
/// error when it cannot be had.
fn gather(pixels: &[u8], positions: &[usize], image_len: usize) -> Result<Vec<u8>> {
    let mut images = crate::fallible::with_capacity(positions.len() * image_len).context("the decoded images do not fit in memory")?;
    for &p in positions {
        images.extend_from_slice(&pixels[p * image_len..][..image_len]);
    }
    Ok(images)
}

/// Builds train and test sets from the decoded images: DIR/test when there is one, else a
/// stratified, seeded hold-out of `val_split` of every class.
fn split(dir: &Path, listing: Listing, decoded: Decoded, opts: &FolderOptions) -> Result<FolderData> {
    let classes = listing.class_names.len();
    let (height, width, channels) = opts.preprocessing.input_shape();
    let image_len = opts.preprocessing.image_len()?;
    // Positions in `decoded` of each class's training candidates (and test images).
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); classes];
    let mut test_positions = Vec::new();
    for (pos, &i) in decoded.kept.iter().enumerate() {
        let f = &listing.files[i as usize];
        if f.test {
            test_positions.push(pos);
        } else {
            by_class[f.label as usize].push(pos);
        }
    }
    let hold_out_all = opts.val_split == 1.0 && !listing.has_test_folder;
    if let Some(c) = by_class.iter().position(|v| v.is_empty()).filter(|_| !hold_out_all) {
        bail!("{}: class '{}' has no training images that decode", dir.display(), listing.class_names[c]);
    }
    let mut train_positions = Vec::new();
    if hold_out_all {
        test_positions = (0..decoded.kept.len()).collect();
        train_positions.extend(test_positions.first());
    } else if listing.has_test_folder {
        by_class.iter().for_each(|v| train_positions.extend_from_slice(v));
    } else {
        if !(opts.val_split > 0.0 && opts.val_split < 1.0) {
            bail!("--val-split must be between 0 and 1 (exclusive; evaluate and review: 1 scores every image), not {}", opts.val_split);
        }
        let mut too_few = Vec::new();
        for (c, positions) in by_class.iter_mut().enumerate() {
            Rng::derive(opts.seed, PURPOSE_VAL_SPLIT, c as u64).shuffle(positions);
            let held_out = ((positions.len() as f64 * opts.val_split as f64).round() as usize).min(positions.len() - 1);
            if held_out == 0 {
                too_few.push(listing.class_names[c].as_str());
            }
            test_positions.extend_from_slice(&positions[..held_out]);
            train_positions.extend_from_slice(&positions[held_out..]);
        }
        if !too_few.is_empty() {
            crate::stderr_line!("note: {too_few:?} have too few images for --val-split {} to hold any out: they are not validated", opts.val_split);
        }
        train_positions.sort_unstable();
        test_positions.sort_unstable();
    }
    if test_positions.is_empty() {
        bail!("{}: the validation split is empty (too few images for --val-split {}, or an empty test folder)", dir.display(), opts.val_split);
    }
    let labels = |positions: &[usize]| -> Vec<u8> { positions.iter().map(|&p| listing.files[decoded.kept[p] as usize].label).collect() };
    let set = |images: Vec<u8>, labels: Vec<u8>| ImageSet { images: images.into(), labels, height, width, channels };
    let name = dir.canonicalize().ok().and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned())).unwrap_or_else(|| "images".into());
    let files = |positions: &[usize]| positions.iter().map(|&p| listing.files[decoded.kept[p] as usize].path.clone()).collect::<Vec<PathBuf>>();
    let (train_files, test_files) = (files(&train_positions), files(&test_positions));
    let (train_labels, test_labels) = (labels(&train_positions), labels(&test_positions));
    let held_out = held_out_fingerprint(dir, &test_files, &test_labels);
    let test = set(gather(&decoded.pixels, &test_positions, image_len)?, test_labels);
    // The training images (most of them) move down within the decoded buffer instead of being
    // copied out of it: the data set then costs its own size in memory, not twice that.
    let train_images = if train_positions.is_sorted() {
        let mut pixels = decoded.pixels;
        for (k, &p) in train_positions.iter().enumerate() {
            pixels.copy_within(p * image_len..(p + 1) * image_len, k * image_len);
        }
        pixels.truncate(train_positions.len() * image_len);
        pixels
    } else {
        gather(&decoded.pixels, &train_positions, image_len)?
    };
    let dataset = Dataset { name, class_names: listing.class_names, train: set(train_images, train_labels), test };
    Ok(FolderData { dataset, train_files, test_files, held_out })
}
