//! The one image pipeline: a file becomes the model's input (H, W, C) u8 here, and nowhere else.
//! The folder loader (training and `evaluate`), `predict`, `show` and the report all call
//! [`load_image`] / [`prepare`], and a checkpoint stores the [`Preprocessing`] it was trained
//! with, so an image is prepared the same way at training and at prediction time.
//!
//! Steps, in order:
//! 1. read the file (a regular file, at most [`MAX_FILE_BYTES`]) and decode it by content, not by
//!    name; more than `max_pixels` pixels is refused before any pixel is decoded. A file that
//!    ends early or that the decoder reports as corrupt is an error. Large JPEGs are decoded at
//!    1/2, 1/4 or 1/8 scale through the DCT (as libjpeg's `scale_denom`) when the result is
//!    still at least the model input in both dimensions.
//! 2. alpha: composited over the background (white or black), never dropped.
//! 3. colour: RGB, or grey by Rec. 709 luma (rounded), before resizing.
//! 4. aspect ratio: stretch (Keras's default), crop (centre crop to the input's aspect ratio,
//!    Keras's `crop_to_aspect_ratio`) or pad (fit inside, the rest filled with the background,
//!    Keras's `pad_to_aspect_ratio`).
//! 5. resize with `fast_image_resize` (SIMD convolution; antialiased when shrinking).
//!
//! The model scales the u8 values by 1/255 itself.

use anyhow::{anyhow, bail, Context, Result};
use fast_image_resize as fr;
use image::metadata::Orientation;
use image::{DynamicImage, ImageDecoder, ImageFormat};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::io::Read;
use std::path::Path;

/// File endings taken from folders (case-insensitive). A file named on `predict`'s command line
/// is tried whatever its name.
pub const IMAGE_EXTENSIONS: [&str; 7] = ["jpg", "jpeg", "jfif", "png", "webp", "bmp", "gif"];

/// Default limit on an image's pixel count (width x height): 64 megapixels, e.g. 8000x8000.
pub const DEFAULT_MAX_PIXELS: u64 = 64_000_000;

/// An image file larger than this is refused before it is read (no photo is this large).
pub const MAX_FILE_BYTES: u64 = 256 << 20;

/// Bumped whenever the pixels this pipeline produces change (keys the folder cache).
pub const PIPELINE_VERSION: u32 = 3; // 3: photos turned upright by their EXIF orientation

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ColorMode {
    Rgb,
    Grayscale,
}

impl ColorMode {
    pub fn channels(self) -> usize {
        match self {
            ColorMode::Rgb => 3,
            ColorMode::Grayscale => 1,
        }
    }
    pub fn from_channels(channels: usize) -> Result<ColorMode> {
        match channels {
            3 => Ok(ColorMode::Rgb),
            1 => Ok(ColorMode::Grayscale),
            c => bail!("images can be prepared as 1 (grey) or 3 (RGB) channels, not {c}"),
        }
    }
}

/// What transparent pixels are composited over.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Background {
    White,
    Black,
}

impl Background {
    fn value(self) -> u8 {
        match self {
            Background::White => 255,
            Background::Black => 0,
        }
    }
}

/// How an image whose aspect ratio differs from the model input's is fitted to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ResizeMode {
    /// Resize to the input, distorting the aspect ratio (Keras's default).
    Stretch,
    /// Take the largest centred region with the input's aspect ratio, then resize.
    Crop,
    /// Fit the whole image inside, filling the rest with the background.
    Pad,
}

/// The resize filter (Keras's `interpolation` names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Interpolation {
    Bilinear,
    Nearest,
    Bicubic,
    Lanczos3,
    Area,
}

/// Everything that decides how a file becomes the model's input. Stored in checkpoints (all
/// but `max_pixels`, which is a safety limit, not a setting of the model).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Preprocessing {
    pub height: usize,
    pub width: usize,
    pub color: ColorMode,
    pub background: Background,
    pub resize: ResizeMode,
    pub interpolation: Interpolation,
    /// Turn photos upright by their EXIF orientation tag first (a phone stores a portrait photo
    /// sideways and says so in the tag; every photo viewer honours it). Checkpoints from before
    /// the setting lack it, and their images stay as stored.
    #[serde(default)]
    pub exif_upright: bool,
    #[serde(skip, default = "default_max_pixels")]
    pub max_pixels: u64,
}

fn default_max_pixels() -> u64 {
    DEFAULT_MAX_PIXELS
}

impl Preprocessing {
    /// Keras's defaults for an input of (h, w, c): stretch, bilinear, over white.
    pub fn new(input: (usize, usize, usize)) -> Result<Preprocessing> {
        Ok(Preprocessing {
            height: input.0,
            width: input.1,
            color: ColorMode::from_channels(input.2)?,
            background: Background::White,
            resize: ResizeMode::Stretch,
            interpolation: Interpolation::Bilinear,
            exif_upright: true,
            max_pixels: DEFAULT_MAX_PIXELS,
        })
    }
    /// What checkpoints from before the pipeline was stored used in `predict`: alpha over black.
    pub fn legacy(input: (usize, usize, usize)) -> Result<Preprocessing> {
        Ok(Preprocessing { background: Background::Black, exif_upright: false, ..Preprocessing::new(input)? })
    }
    pub fn channels(&self) -> usize {
        self.color.channels()
    }
    pub fn input_shape(&self) -> (usize, usize, usize) {
        (self.height, self.width, self.channels())
    }
    /// Bytes of one prepared image.
    pub fn image_len(&self) -> Result<usize> {
        self.height
            .checked_mul(self.width)
            .and_then(|n| n.checked_mul(self.channels()))
            .ok_or_else(|| anyhow!("image size {}x{} is too large", self.height, self.width))
    }
    /// One line for logs and reports: "32x32 rgb, stretch, bilinear, alpha over white".
    pub fn describe(&self) -> String {
        format!(
            "{}x{} {}, {}, {}, alpha over {}{}",
            self.height,
            self.width,
            word(self.color),
            word(self.resize),
            word(self.interpolation),
            word(self.background),
            if self.exif_upright { "" } else { ", EXIF orientation not applied" }
        )
    }
    fn check(&self) -> Result<()> {
        if self.height == 0 || self.width == 0 {
            bail!("the image size must be at least 1x1");
        }
        if self.height > MAX_INPUT_SIDE || self.width > MAX_INPUT_SIDE {
            bail!("image size {}x{} is over the {MAX_INPUT_SIDE}x{MAX_INPUT_SIDE} limit for a model input", self.height, self.width);
        }
        Ok(())
    }
}

/// The largest side of a model input the pipeline prepares (4096x4096x3 is 50 MB an image).
pub const MAX_INPUT_SIDE: usize = 4096;

/// The lowercase word the flags (and checkpoints) use for a setting.
pub fn word<T: clap::ValueEnum>(value: T) -> String {
    value.to_possible_value().map_or_else(String::new, |v| v.get_name().to_string())
}

/// Reads `path` when it is a regular file of at most `max_bytes` (a FIFO, a device or a folder
/// is refused before it is opened, so nothing blocks or reads without end).
pub fn read_file_capped(path: &Path, max_bytes: u64) -> Result<Vec<u8>> {
    let meta = std::fs::metadata(path).context("cannot read")?;
    if !meta.is_file() {
        bail!("not a regular file");
    }
    if meta.len() > max_bytes {
        bail!("{} bytes is over the {} MiB limit for one file", meta.len(), max_bytes >> 20);
    }
    let mut bytes = Vec::new();
    bytes.try_reserve_exact(meta.len() as usize).map_err(|_| anyhow!("out of memory reading {} bytes", meta.len()))?;
    std::fs::File::open(path).context("cannot open")?.take(max_bytes + 1).read_to_end(&mut bytes).context("cannot read")?;
    if bytes.len() as u64 > max_bytes {
        bail!("the file grew over the {} MiB limit for one file while being read", max_bytes >> 20);
    }
    Ok(bytes)
}

/// Reads, decodes and prepares one image file. Errors start with the file's path.
/// Files load on every core at once (folders, predict): a full-size decode waits for its share
/// of the process's decode budget (decode_budget.rs) and holds it until the image is prepared.
pub fn load_image(path: &Path, p: &Preprocessing) -> Result<Vec<u8>> {
    let run = || -> Result<Vec<u8>> {
        let bytes = read_file_capped(path, MAX_FILE_BYTES)?;
        let _reserved = crate::decode_budget::reserve(full_size_pixels(&bytes, p));
        prepare(&decode(&bytes, p)?, p)
    };
    run().with_context(|| path.display().to_string())
}

/// The pixels a decode of `bytes` holds at full size, from the header: 0 for JPEGs (decoded
/// DCT-scaled) and for headers that do not read (the decode then fails); at most `max_pixels`
/// (larger images are refused before decoding).
fn full_size_pixels(bytes: &[u8], p: &Preprocessing) -> u64 {
    match image::guess_format(bytes) {
        Ok(ImageFormat::Jpeg) | Err(_) => 0,
        Ok(format) => {
            image::ImageReader::with_format(std::io::Cursor::new(bytes), format).into_dimensions().map_or(0, |(w, h)| (w as u64 * h as u64).min(p.max_pixels))
        }
    }
}

/// "64.0 megapixels", or "12000 pixels" where megapixels would round to 0.0.
fn pixel_count(pixels: u64) -> String {
    if pixels >= 100_000 {
        format!("{:.1} megapixels", pixels as f64 / 1e6)
    } else {
        format!("{pixels} pixels")
    }
}

fn check_pixels(width: u64, height: u64, max_pixels: u64) -> Result<()> {
    if width == 0 || height == 0 {
        bail!("the image is {width}x{height}: it has no pixels");
    }
    if width * height > max_pixels {
        bail!("the image is {width}x{height} ({}), over the limit of {} (raise it with --max-pixels)", pixel_count(width * height), pixel_count(max_pixels));
    }
    Ok(())
}

/// Decodes an image file's bytes (format from the content). JPEGs larger than twice the model
/// input come out DCT-scaled (see the module doc); everything else at full size.
pub fn decode(bytes: &[u8], p: &Preprocessing) -> Result<DynamicImage> {
    decode_any(bytes, p).context("cannot decode the image")
}

fn decode_any(bytes: &[u8], p: &Preprocessing) -> Result<DynamicImage> {
    let format = image::guess_format(bytes).map_err(|_| anyhow!("not an image in a supported format (JPEG, PNG, WebP, BMP, GIF)"))?;
    if format == ImageFormat::Jpeg {
        // As text: jpeg-decoder's errors repeat their source in the chain.
        return decode_jpeg(bytes, p).map_err(|e| anyhow!("JPEG: {e}"));
    }
    check_complete(format, bytes)?;
    let mut reader = image::ImageReader::with_format(std::io::Cursor::new(bytes), format);
    let mut limits = image::Limits::default();
    // Room for the largest allowed image at 16 bits per channel with alpha.
    limits.max_alloc = Some(p.max_pixels.saturating_mul(8).max(512 << 20));
    reader.limits(limits);
    let mut decoder = reader.into_decoder().map_err(|e| anyhow!("{e}"))?;
    let (w, h) = decoder.dimensions();
    check_pixels(w as u64, h as u64, p.max_pixels)?;
    // An unreadable tag is no tag: the pixels are still the image.
    let orientation = if p.exif_upright { decoder.orientation().unwrap_or(Orientation::NoTransforms) } else { Orientation::NoTransforms };
    let mut img = DynamicImage::from_decoder(decoder).map_err(|e| anyhow!("{e}"))?;
    img.apply_orientation(orientation);
    Ok(img)
}

/// Whether an orientation turns the image a quarter, swapping its width and height.
fn swaps_sides(o: Orientation) -> bool {
    matches!(o, Orientation::Rotate90 | Orientation::Rotate270 | Orientation::Rotate90FlipH | Orientation::Rotate270FlipH)
}

/// Decoders stop once they have the pixels, so a file cut in its last bytes would pass: check
/// the end marker each format must have (JPEG's decoder itself fails on a missing end).
fn check_complete(format: ImageFormat, bytes: &[u8]) -> Result<()> {
    let complete = match format {
        // The whole IEND chunk, CRC included.
        ImageFormat::Png => bytes.windows(8).any(|w| w == b"IEND\xAE\x42\x60\x82"),
        // The trailer byte.
        ImageFormat::Gif => bytes.last() == Some(&0x3B),
        // The RIFF size covers the rest of the file.
        ImageFormat::WebP => bytes.get(4..8).is_some_and(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]) as u64 + 8 <= bytes.len() as u64),
        // The file size in the header.
        ImageFormat::Bmp => bytes.get(2..6).is_some_and(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]) as u64 <= bytes.len() as u64),
        _ => true,
    };
    if !complete {
        bail!("the file ends early (truncated: its {} end marker is missing)", format!("{format:?}").to_uppercase());
    }
    Ok(())
}

/// ceil(len * eighths / 8): a JPEG side decoded at eighths/8 scale.
fn dct_scaled(len: u16, eighths: u32) -> u32 {
    (len as u32 * eighths).div_ceil(8)
}

fn decode_jpeg(bytes: &[u8], p: &Preprocessing) -> Result<DynamicImage, String> {
    decode_jpeg_inner(bytes, p).map_err(|e| format!("{e}"))
}

fn decode_jpeg_inner(bytes: &[u8], p: &Preprocessing) -> Result<DynamicImage> {
    let mut d = jpeg_decoder::Decoder::new(bytes);
    d.read_info()?;
    let info = d.info().context("no frame header")?;
    check_pixels(info.width as u64, info.height as u64, p.max_pixels)?;
    d.set_max_decoding_buffer_size(usize::try_from(p.max_pixels.saturating_mul(4)).unwrap_or(usize::MAX));
    let orientation = match d.exif_data() {
        Some(exif) if p.exif_upright => Orientation::from_exif_chunk(exif).unwrap_or(Orientation::NoTransforms),
        _ => Orientation::NoTransforms,
    };
    // The smallest DCT scale whose output still covers the model input in both dimensions
    // (as stored: a photo turned a quarter covers the input's height with its width).
    let (tw, th) = if swaps_sides(orientation) { (p.height as u32, p.width as u32) } else { (p.width as u32, p.height as u32) };
    if let Some(eighths) = [1u32, 2, 4].into_iter().find(|&e| dct_scaled(info.width, e) >= tw && dct_scaled(info.height, e) >= th) {
        // jpeg-decoder picks the smallest scale covering width OR height: ask for this width
        // and an unreachable height, then check the result covers both.
        let (w, h) = d.scale(dct_scaled(info.width, eighths) as u16, u16::MAX)?;
        if (w as u32) < tw || (h as u32) < th {
            d.scale(u16::MAX, u16::MAX)?;
        }
    }
    let pixels = d.decode()?;
    let info = d.info().context("no frame header")?;
    let (w, h) = (info.width as u32, info.height as u32);
    let img = match info.pixel_format {
        jpeg_decoder::PixelFormat::L8 => image::GrayImage::from_raw(w, h, pixels).map(DynamicImage::ImageLuma8),
        jpeg_decoder::PixelFormat::L16 => {
            let wide: Vec<u16> = pixels.chunks_exact(2).map(|b| u16::from_be_bytes([b[0], b[1]])).collect();
            image::ImageBuffer::from_raw(w, h, wide).map(DynamicImage::ImageLuma16)
        }
        jpeg_decoder::PixelFormat::RGB24 => image::RgbImage::from_raw(w, h, pixels).map(DynamicImage::ImageRgb8),
        jpeg_decoder::PixelFormat::CMYK32 => {
            let rgb = pixels.chunks_exact(4).flat_map(|q| {
                let k = 255 - q[3] as u32;
                [0, 1, 2].map(|i| ((255 - q[i] as u32) * k / 255) as u8)
            });
            image::RgbImage::from_raw(w, h, rgb.collect()).map(DynamicImage::ImageRgb8)
        }
    };
    let mut img = img.context("the decoder returned fewer pixels than the image has")?;
    img.apply_orientation(orientation);
    Ok(img)
}

/// Rec. 709 luma, rounded: what the grey colour mode sees of an RGB pixel.
fn luma(r: u8, g: u8, b: u8) -> u8 {
    ((2126 * r as u32 + 7152 * g as u32 + 722 * b as u32 + 5000) / 10000) as u8
}

/// `value` with coverage `alpha` over `background`, rounded.
fn over(value: u8, alpha: u8, background: u8) -> u8 {
    ((value as u32 * alpha as u32 + background as u32 * (255 - alpha as u32) + 127) / 255) as u8
}

/// The image as u8 pixels with alpha composited: 1 channel (grey source or grey mode) or 3.
/// Borrows the decoded buffer when nothing needs changing.
fn flatten<'a>(img: &'a DynamicImage, p: &Preprocessing) -> (Cow<'a, [u8]>, usize) {
    let bg = p.background.value();
    let grey = p.color == ColorMode::Grayscale;
    match img {
        DynamicImage::ImageLuma8(g) => (Cow::Borrowed(g.as_raw().as_slice()), 1),
        DynamicImage::ImageRgb8(rgb) if !grey => (Cow::Borrowed(rgb.as_raw().as_slice()), 3),
        DynamicImage::ImageRgb8(rgb) => (Cow::Owned(rgb.as_raw().chunks_exact(3).map(|q| luma(q[0], q[1], q[2])).collect()), 1),
        DynamicImage::ImageLumaA8(la) => (Cow::Owned(la.as_raw().chunks_exact(2).map(|q| over(q[0], q[1], bg)).collect()), 1),
        DynamicImage::ImageRgba8(rgba) => (Cow::Owned(composite_rgba(rgba.as_raw(), bg, grey)), if grey { 1 } else { 3 }),
        other if other.color().has_alpha() => (Cow::Owned(composite_rgba(other.to_rgba8().as_raw(), bg, grey)), if grey { 1 } else { 3 }),
        other if other.color().channel_count() == 1 => (Cow::Owned(other.to_luma8().into_raw()), 1),
        other => {
            let rgb = other.to_rgb8().into_raw();
            if grey {
                (Cow::Owned(rgb.chunks_exact(3).map(|q| luma(q[0], q[1], q[2])).collect()), 1)
            } else {
                (Cow::Owned(rgb), 3)
            }
        }
    }
}

fn composite_rgba(rgba: &[u8], bg: u8, grey: bool) -> Vec<u8> {
    if grey {
        rgba.chunks_exact(4).map(|q| over(luma(q[0], q[1], q[2]), q[3], bg)).collect()
    } else {
        rgba.chunks_exact(4).flat_map(|q| [over(q[0], q[3], bg), over(q[1], q[3], bg), over(q[2], q[3], bg)]).collect()
    }
}

fn algorithm(i: Interpolation) -> fr::ResizeAlg {
    use fr::FilterType as F;
    match i {
        Interpolation::Nearest => fr::ResizeAlg::Nearest,
        Interpolation::Bilinear => fr::ResizeAlg::Convolution(F::Bilinear),
        Interpolation::Bicubic => fr::ResizeAlg::Convolution(F::CatmullRom),
        Interpolation::Lanczos3 => fr::ResizeAlg::Convolution(F::Lanczos3),
        Interpolation::Area => fr::ResizeAlg::Convolution(F::Box),
    }
}

/// Resizes `src` ((w, h), `channels` of u8) to `(dw, dh)`, optionally from a centred crop.
fn resize(src: &[u8], (w, h): (u32, u32), channels: usize, (dw, dh): (u32, u32), p: &Preprocessing, crop: bool) -> Result<Vec<u8>> {
    if (w, h) == (dw, dh) {
        return Ok(src.to_vec());
    }
    let len = (dw as usize).checked_mul(dh as usize).and_then(|n| n.checked_mul(channels));
    let mut dst = crate::fallible::zeroed_vec(len.ok_or_else(|| anyhow!("resize: {dw}x{dh} is too large"))?)?;
    // Typed by pixel, not fr::Resizer::resize's runtime PixelType: that one links all 13 pixel
    // types' SIMD kernels (the stripped binary was 2.2 MB larger), and runs the same ones for ours.
    if channels == 1 {
        resize_pixels::<fr::pixels::U8>(src, (w, h), &mut dst, (dw, dh), p, crop)?;
    } else {
        resize_pixels::<fr::pixels::U8x3>(src, (w, h), &mut dst, (dw, dh), p, crop)?;
    }
    Ok(dst)
}

fn resize_pixels<P: fr::PixelTrait>(src: &[u8], (w, h): (u32, u32), dst: &mut [u8], (dw, dh): (u32, u32), p: &Preprocessing, crop: bool) -> Result<()> {
    let src = fr::images::TypedImageRef::<P>::from_buffer(w, h, src).map_err(|e| anyhow!("resize: {e}"))?;
    let mut dst = fr::images::TypedImage::<P>::from_buffer(dw, dh, dst).map_err(|e| anyhow!("resize: {e}"))?;
    let mut options = fr::ResizeOptions::new().resize_alg(algorithm(p.interpolation));
    if crop {
        options = options.fit_into_destination(Some((0.5, 0.5)));
    }
    fr::Resizer::new().resize_typed(&src, &mut dst, &options).map_err(|e| anyhow!("resize: {e}"))
}

/// A decoded image as the model takes it: (height, width, channels) u8, channels last.
pub fn prepare(img: &DynamicImage, p: &Preprocessing) -> Result<Vec<u8>> {
    p.check()?;
    let (w, h) = (img.width(), img.height());
    check_pixels(w as u64, h as u64, u64::MAX)?;
    let (tw, th) = (p.width as u32, p.height as u32);
    let (plane, channels) = flatten(img, p);
    let sized = match p.resize {
        ResizeMode::Stretch => resize(&plane, (w, h), channels, (tw, th), p, false)?,
        ResizeMode::Crop => resize(&plane, (w, h), channels, (tw, th), p, true)?,
        ResizeMode::Pad => {
            // The largest (fw, fh) with the image's aspect ratio that fits in (tw, th).
            let (fw, fh) = if w as u64 * th as u64 >= h as u64 * tw as u64 {
                (tw, ((h as u64 * tw as u64 + w as u64 / 2) / w as u64).clamp(1, th as u64) as u32)
            } else {
                (((w as u64 * th as u64 + h as u64 / 2) / h as u64).clamp(1, tw as u64) as u32, th)
            };
            let fitted = resize(&plane, (w, h), channels, (fw, fh), p, false)?;
            let mut canvas = vec![p.background.value(); tw as usize * th as usize * channels];
            let (x0, y0) = (((tw - fw) / 2) as usize, ((th - fh) / 2) as usize);
            let row = fw as usize * channels;
            for (y, src_row) in fitted.chunks_exact(row).enumerate() {
                let at = ((y0 + y) * tw as usize + x0) * channels;
                canvas[at..at + row].copy_from_slice(src_row);
            }
            canvas
        }
    };
    Ok(if channels == 1 && p.color == ColorMode::Rgb { sized.iter().flat_map(|&v| [v, v, v]).collect() } else { sized })
}

/// True when `path`'s ending is one of [`IMAGE_EXTENSIONS`].
pub fn has_image_extension(path: &Path) -> bool {
    path.extension().and_then(|e| e.to_str()).is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
}
