//! A shop's own photos: one sub-folder per class (as Keras's `image_dataset_from_directory` and
//! torchvision's `ImageFolder`), any size and colour type, decoded on all cores, resized to the
//! model input and cached as u8 so the next start reads one file instead of decoding again.
//!
//! Layouts: `DIR/<class>/*` (split into train and validation by a seeded, stratified
//! `val_split`), or `DIR/train/<class>/*` with `DIR/test/<class>/*`.

use super::{Dataset, ImageSet};
use crate::rng::Rng;
use anyhow::{bail, Context, Result};
use image::imageops::FilterType;
use md5::{Digest, Md5};
use rayon::prelude::*;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// File endings taken as images (case-insensitive); anything else in a class folder is ignored.
pub const IMAGE_EXTENSIONS: [&str; 6] = ["jpg", "jpeg", "png", "webp", "bmp", "gif"];

/// Bilinear (a triangle filter widened by the scale factor when shrinking, so it averages
/// every source pixel instead of aliasing): Keras's default `interpolation="bilinear"`.
pub const RESIZE_FILTER: FilterType = FilterType::Triangle;
pub const RESIZE_FILTER_NAME: &str = "bilinear (triangle, antialiased)";

/// Bumped whenever the decoding or the file layout changes, so old caches are not trusted.
const CACHE_VERSION: &str = "gpu-cnn image folder cache v1";
const CACHE_MAGIC: &[u8; 8] = b"GPUCNNF1";
const PURPOSE_VAL_SPLIT: u64 = 0x5A11_7E57;

#[derive(Clone, Debug)]
pub struct FolderOptions {
    /// The model input every image is resized to.
    pub height: usize,
    pub width: usize,
    /// 3: RGB (alpha dropped), 1: grey (luma).
    pub channels: usize,
    /// Fraction of each class held out for validation when there is no train/test layout.
    pub val_split: f32,
    pub seed: u64,
    /// Skip files that do not decode (counted in one warning) instead of stopping.
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

/// Sub-folders of `dir`, sorted by name (hidden ones skipped).
fn sub_folders(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("{}: cannot list the folder", dir.display()))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with('.') && entry.path().is_dir() {
            out.push((name, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

fn is_image_name(path: &Path) -> bool {
    path.extension().and_then(|e| e.to_str()).is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

/// The image files of one class folder, sorted by name; an empty folder is an error.
fn class_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("{}: cannot list the folder", dir.display()))? {
        let path = entry?.path();
        if path.is_file() && is_image_name(&path) {
            files.push(path);
        }
    }
    if files.is_empty() {
        bail!("{}: the class folder holds no images ({})", dir.display(), IMAGE_EXTENSIONS.join(", "));
    }
    files.sort();
    Ok(files)
}

fn list(dir: &Path) -> Result<Listing> {
    if !dir.is_dir() {
        bail!("{}: not a folder (--data takes a folder with one sub-folder of images per class)", dir.display());
    }
    let (train_dir, test_dir) = (dir.join("train"), dir.join("test"));
    let has_test_folder = train_dir.is_dir() && test_dir.is_dir();
    let class_root = if has_test_folder { train_dir.clone() } else { dir.to_path_buf() };
    let classes = sub_folders(&class_root)?;
    match classes.len() {
        0 => bail!("{}: no class sub-folders (put the images of each class in a sub-folder named after it)", class_root.display()),
        1 => bail!("{}: only one class folder ({}); a classifier needs at least two", class_root.display(), classes[0].0),
        n if n > 256 => bail!("{}: {n} class folders; at most 256 are supported", class_root.display()),
        _ => {}
    }
    let class_names: Vec<String> = classes.iter().map(|(n, _)| n.clone()).collect();
    let mut files = Vec::new();
    for (label, (_, path)) in classes.iter().enumerate() {
        files.extend(class_files(path)?.into_iter().map(|path| ImageFile { path, label: label as u8, test: false }));
    }
    if has_test_folder {
        for (name, path) in sub_folders(&test_dir)? {
            let label = class_names
                .iter()
                .position(|c| *c == name)
                .with_context(|| format!("{}: class '{name}' is not among the training classes in {}", path.display(), train_dir.display()))?;
            files.extend(class_files(&path)?.into_iter().map(|path| ImageFile { path, label: label as u8, test: true }));
        }
    }
    Ok(Listing { class_names, files, has_test_folder })
}

/// What the cache is keyed by: the decoding settings and every file's path, size and mtime.
fn cache_key(dir: &Path, listing: &Listing, opts: &FolderOptions) -> Result<String> {
    let mut h = Md5::new();
    h.update(format!("{CACHE_VERSION}\n{}x{}x{}\n{RESIZE_FILTER_NAME}\n", opts.height, opts.width, opts.channels));
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

/// Reads any supported image (format from the content, not the name), converts it to RGB or
/// grey and resizes it to the model input.
pub fn decode_and_resize(path: &Path, height: usize, width: usize, channels: usize) -> Result<Vec<u8>, String> {
    let img = image::ImageReader::open(path)
        .map_err(|e| e.to_string())?
        .with_guessed_format()
        .map_err(|e| e.to_string())?
        .decode()
        .map_err(|e| e.to_string())?;
    let (w, h) = (width as u32, height as u32);
    let same = img.width() == w && img.height() == h;
    Ok(if channels == 1 {
        let grey = img.into_luma8();
        if same { grey.into_raw() } else { image::imageops::resize(&grey, w, h, RESIZE_FILTER).into_raw() }
    } else {
        let rgb = img.into_rgb8();
        if same { rgb.into_raw() } else { image::imageops::resize(&rgb, w, h, RESIZE_FILTER).into_raw() }
    })
}

fn decode_all(listing: &Listing, opts: &FolderOptions) -> Decoded {
    let bar = indicatif::ProgressBar::new(listing.files.len() as u64);
    bar.set_style(indicatif::ProgressStyle::with_template("Decoding {pos}/{len} [{bar:30}] {per_sec} eta {eta}").unwrap().progress_chars("=> "));
    let results: Vec<Result<Vec<u8>, String>> = listing
        .files
        .par_iter()
        .map(|f| {
            let r = decode_and_resize(&f.path, opts.height, opts.width, opts.channels);
            bar.inc(1);
            r
        })
        .collect();
    bar.finish_and_clear();
    let mut out = Decoded { pixels: Vec::with_capacity(listing.files.len() * opts.height * opts.width * opts.channels), ..Default::default() };
    for (i, r) in results.into_iter().enumerate() {
        match r {
            Ok(px) => {
                out.kept.push(i as u32);
                out.pixels.extend_from_slice(&px);
            }
            Err(e) => out.bad.push((i as u32, e)),
        }
    }
    out
}

/// The cache file for this folder and input shape; one per pair, replaced when the key changes.
fn cache_file(cache_dir: &Path, dir: &Path, opts: &FolderOptions) -> PathBuf {
    let canonical = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let mut h = Md5::new();
    h.update(format!("{}\n{}x{}x{}", canonical.display(), opts.height, opts.width, opts.channels));
    cache_dir.join(format!("{:x}.u8", h.finalize()))
}

/// The cached decode when the file exists and its key matches; None otherwise.
fn read_cache(path: &Path, key: &str, image_len: usize) -> Option<Decoded> {
    let bytes = std::fs::read(path).ok()?;
    if bytes.len() < 16 || &bytes[..8] != CACHE_MAGIC {
        return None;
    }
    let header_len = u64::from_le_bytes(bytes[8..16].try_into().ok()?) as usize;
    let header = bytes.get(16..16 + header_len)?;
    let (stored_key, mut decoded): (String, Decoded) = serde_json::from_slice(header).ok()?;
    let pixels = &bytes[16 + header_len..];
    if stored_key != key || pixels.len() != decoded.kept.len() * image_len {
        return None;
    }
    decoded.pixels = pixels.to_vec();
    Some(decoded)
}

/// Writes the cache under a temporary name and renames it, so a crash never leaves half a file.
fn write_cache(path: &Path, key: &str, decoded: &Decoded) -> Result<()> {
    std::fs::create_dir_all(path.parent().unwrap())?;
    let header = serde_json::to_vec(&(key, decoded))?;
    let tmp = path.with_extension(format!("u8.tmp-{}", std::process::id()));
    let mut f = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
    f.write_all(CACHE_MAGIC)?;
    f.write_all(&(header.len() as u64).to_le_bytes())?;
    f.write_all(&header)?;
    f.write_all(&decoded.pixels)?;
    f.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// Loads the folder as a data set: train and test (the validation split) ImageSets, class
/// names from the folder names.
pub fn load(dir: &Path, opts: &FolderOptions) -> Result<Dataset> {
    if opts.channels != 1 && opts.channels != 3 {
        bail!("images can be loaded as 1 (grey) or 3 (RGB) channels, not {}", opts.channels);
    }
    if opts.height == 0 || opts.width == 0 {
        bail!("the image size must be at least 1x1");
    }
    // The times printed include listing and stat-ing the folder: what a start costs.
    let start = Instant::now();
    let listing = list(dir)?;
    let image_len = opts.height * opts.width * opts.channels;
    let key = cache_key(dir, &listing, opts)?;
    let cache_path = opts.cache_dir.as_deref().map(|c| cache_file(c, dir, opts));
    let cached = cache_path.as_deref().and_then(|p| read_cache(p, &key, image_len));
    let decoded = match cached {
        Some(d) => {
            eprintln!(
                "Loaded {} images of {}x{}x{} from the cache {} in {:.2} s",
                d.kept.len(),
                opts.height,
                opts.width,
                opts.channels,
                cache_path.as_ref().unwrap().display(),
                start.elapsed().as_secs_f64()
            );
            d
        }
        None => {
            let d = decode_all(&listing, opts);
            let secs = start.elapsed().as_secs_f64();
            eprintln!(
                "Decoded {} images to {}x{}x{} ({RESIZE_FILTER_NAME} resize) in {secs:.2} s: {:.0} images/s on {} threads",
                listing.files.len(),
                opts.height,
                opts.width,
                opts.channels,
                listing.files.len() as f64 / secs.max(1e-9),
                rayon::current_num_threads()
            );
            if let Some(p) = &cache_path {
                match write_cache(p, &key, &d) {
                    Ok(()) => eprintln!("Cached the decoded images in {}", p.display()),
                    Err(e) => eprintln!("warning: cannot write the image cache {}: {e:#}", p.display()),
                }
            }
            d
        }
    };
    if let Some((i, reason)) = decoded.bad.first() {
        let path = &listing.files[*i as usize].path;
        if !opts.skip_bad {
            let more = if decoded.bad.len() > 1 { format!(" ({} more files do not decode either)", decoded.bad.len() - 1) } else { String::new() };
            bail!("{}: cannot decode the image: {reason}{more}. Fix or remove it, or pass --skip-bad to skip such files", path.display());
        }
        eprintln!("warning: skipped {} files that do not decode (--skip-bad); the first: {}: {reason}", decoded.bad.len(), path.display());
    }
    split(dir, listing, decoded, opts)
}

/// Builds train and test sets from the decoded images: DIR/test when there is one, else a
/// stratified, seeded hold-out of `val_split` of every class.
fn split(dir: &Path, listing: Listing, decoded: Decoded, opts: &FolderOptions) -> Result<Dataset> {
    let classes = listing.class_names.len();
    let image_len = opts.height * opts.width * opts.channels;
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
    if let Some(c) = by_class.iter().position(|v| v.is_empty()) {
        bail!("{}: class '{}' has no training images that decode", dir.display(), listing.class_names[c]);
    }
    let mut train_positions = Vec::new();
    if listing.has_test_folder {
        by_class.iter().for_each(|v| train_positions.extend_from_slice(v));
    } else {
        if !(opts.val_split > 0.0 && opts.val_split < 1.0) {
            bail!("--val-split must be between 0 and 1 (exclusive), not {}", opts.val_split);
        }
        for (c, positions) in by_class.iter_mut().enumerate() {
            Rng::derive(opts.seed, PURPOSE_VAL_SPLIT, c as u64).shuffle(positions);
            let held_out = ((positions.len() as f64 * opts.val_split as f64).round() as usize).min(positions.len() - 1);
            test_positions.extend_from_slice(&positions[..held_out]);
            train_positions.extend_from_slice(&positions[held_out..]);
        }
        train_positions.sort_unstable();
        test_positions.sort_unstable();
    }
    if test_positions.is_empty() {
        bail!("{}: the validation split is empty (too few images for --val-split {}, or an empty test folder)", dir.display(), opts.val_split);
    }
    let gather = |positions: &[usize]| {
        let mut set = ImageSet { height: opts.height, width: opts.width, channels: opts.channels, ..Default::default() };
        let images = std::sync::Arc::make_mut(&mut set.images);
        images.reserve(positions.len() * image_len);
        for &p in positions {
            images.extend_from_slice(&decoded.pixels[p * image_len..][..image_len]);
            set.labels.push(listing.files[decoded.kept[p] as usize].label);
        }
        set
    };
    let name = dir.canonicalize().ok().and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned())).unwrap_or_else(|| "images".into());
    Ok(Dataset { name, class_names: listing.class_names, train: gather(&train_positions), test: gather(&test_positions) })
}
