//! The one image pipeline: the folder loader (training, evaluate) and predict's path give
//! bit-identical inputs for every colour type and format; alpha, aspect ratio, truncated files,
//! size limits, odd files and corrupt caches behave as documented.

mod common;
use common::{run_cli, temp_dir};
use gpu_cnn::data::folder::{self, FolderOptions};
use gpu_cnn::image_pipeline::{self, Background, ColorMode, Preprocessing, ResizeMode};
use image::{ImageBuffer, Luma, Rgb, RgbImage, Rgba, RgbaImage};
use std::io::Write;
use std::path::{Path, PathBuf};

/// A deterministic pattern with detail at every scale, so resize differences show.
fn pattern(w: u32, h: u32, seed: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| Rgb([((x * 7 + y * 3 + seed * 40) % 256) as u8, ((x * y + seed * 17) % 256) as u8, ((x ^ y) * 5 % 256) as u8]))
}

/// An 8-bit palette PNG (colour type 3), written by hand: the image crate writes none.
fn write_palette_png(path: &Path, w: u32, h: u32) {
    let chunk = |out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]| {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let mut crc = flate2::Crc::new();
        crc.update(kind);
        crc.update(data);
        out.extend_from_slice(kind);
        out.extend_from_slice(data);
        out.extend_from_slice(&crc.sum().to_be_bytes());
    };
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 3, 0, 0, 0]);
    chunk(&mut png, b"IHDR", &ihdr);
    let palette: Vec<u8> = (0..16u8).flat_map(|i| [i * 16, 255 - i * 16, (i * 40) % 255]).collect();
    chunk(&mut png, b"PLTE", &palette);
    // A tRNS chunk: the first two palette entries are (half) transparent.
    chunk(&mut png, b"tRNS", &[0, 128]);
    let raw: Vec<u8> = (0..h).flat_map(|y| std::iter::once(0u8).chain((0..w).map(move |x| ((x / 3 + y / 2) % 16) as u8))).collect();
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(&raw).unwrap();
    chunk(&mut png, b"IDAT", &z.finish().unwrap());
    chunk(&mut png, b"IEND", &[]);
    std::fs::write(path, png).unwrap();
}

/// One file of every kind the pipeline must treat alike; returns their paths.
fn write_every_kind(dir: &Path) -> Vec<PathBuf> {
    std::fs::create_dir_all(dir).unwrap();
    let p = |name: &str| dir.join(name);
    let rgb = pattern(60, 80, 1);
    RgbaImage::from_fn(60, 80, |x, y| {
        let Rgb([r, g, b]) = *rgb.get_pixel(x, y);
        Rgba([
            r,
            g,
            b,
            if (x as i32 - 30).pow(2) + (y as i32 - 40).pow(2) < 600 {
                255
            } else if x < 5 {
                100
            } else {
                0
            },
        ])
    })
    .save(p("a-rgba-cutout.png"))
    .unwrap();
    image::GrayImage::from_fn(33, 47, |x, y| Luma([((x * 9 + y * 4) % 256) as u8])).save(p("b-grey.png")).unwrap();
    ImageBuffer::<Rgba<u16>, Vec<u16>>::from_fn(40, 30, |x, y| Rgba([(x * 1500) as u16, (y * 2000) as u16, 40000, if x > 20 { 65535 } else { 20000 }]))
        .save(p("c-16bit-rgba.png"))
        .unwrap();
    ImageBuffer::<Luma<u16>, Vec<u16>>::from_fn(25, 25, |x, y| Luma([(x * 2600 + y * 7) as u16])).save(p("d-16bit-grey.png")).unwrap();
    write_palette_png(&p("e-palette.png"), 50, 20);
    pattern(90, 120, 2).save(p("f-photo.jpg")).unwrap();
    // Large enough that the JPEG is decoded DCT-scaled (1/4 here for a 16x16 input).
    pattern(400, 300, 3).save(p("g-large.jpeg")).unwrap();
    image::GrayImage::from_fn(64, 64, |x, y| Luma([((x + y) * 2) as u8])).save(p("h-grey.jpg")).unwrap();
    pattern(20, 20, 4).save(p("i-small.gif")).unwrap();
    RgbaImage::from_fn(30, 30, |x, y| Rgba([200, x as u8 * 8, y as u8 * 8, if x > y { 255 } else { 60 }])).save(p("j-lossless.webp")).unwrap();
    pattern(16, 16, 5).save(p("k-exact-size.bmp")).unwrap();
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    files
}

fn folder_options(p: Preprocessing) -> FolderOptions {
    FolderOptions { preprocessing: p, val_split: 0.2, seed: 0, skip_bad: false, cache_dir: None }
}

#[test]
fn folder_loader_and_predict_path_give_bit_identical_inputs_for_every_kind_of_file() {
    let dir = temp_dir("pipeline-identical");
    // DIR/train/<class> and DIR/test/<class>: the test set is the test files in name order.
    let files = write_every_kind(&dir.join("test").join("things"));
    write_every_kind(&dir.join("test").join("other"));
    write_every_kind(&dir.join("train").join("things"));
    write_every_kind(&dir.join("train").join("other"));
    let other: Vec<PathBuf> = files.iter().map(|f| dir.join("test").join("other").join(f.file_name().unwrap())).collect();
    let base = Preprocessing::new((16, 16, 3)).unwrap();
    let mut settings = Vec::new();
    for color in [ColorMode::Rgb, ColorMode::Grayscale] {
        for resize in [ResizeMode::Stretch, ResizeMode::Crop, ResizeMode::Pad] {
            for background in [Background::White, Background::Black] {
                settings.push(Preprocessing { color, resize, background, ..base });
            }
        }
    }
    settings.push(Preprocessing { height: 12, width: 20, interpolation: image_pipeline::Interpolation::Lanczos3, ..base });
    for p in settings {
        let ds = folder::load(&dir, &folder_options(p)).unwrap();
        assert_eq!(ds.input_shape(), p.input_shape());
        assert_eq!(ds.test.len(), 2 * files.len());
        // Classes sort as "other", "things": the test set holds other/* then things/*.
        for (i, f) in other.iter().chain(&files).enumerate() {
            let direct = image_pipeline::load_image(f, &p).unwrap();
            assert!(direct == ds.test.image(i), "{} differs between the folder loader and load_image under {p:?}", f.display());
            // What predict does per file: read, decode, prepare.
            let bytes = std::fs::read(f).unwrap();
            let img = image_pipeline::decode(&bytes, &p).unwrap();
            assert!(image_pipeline::prepare(&img, &p).unwrap() == direct, "{}", f.display());
        }
    }
}

#[test]
fn transparent_pixels_take_the_background_and_opaque_ones_keep_their_colour() {
    let dir = temp_dir("pipeline-alpha");
    let file = dir.join("half.png");
    // Left half opaque red, right half fully transparent green.
    RgbaImage::from_fn(8, 4, |x, _| if x < 4 { Rgba([255, 0, 0, 255]) } else { Rgba([0, 255, 0, 0]) }).save(&file).unwrap();
    let p = Preprocessing { interpolation: image_pipeline::Interpolation::Nearest, ..Preprocessing::new((4, 8, 3)).unwrap() };
    let white = image_pipeline::load_image(&file, &p).unwrap();
    let black = image_pipeline::load_image(&file, &Preprocessing { background: Background::Black, ..p }).unwrap();
    // Same size: no resampling, so every pixel is exact.
    for y in 0..4 {
        for x in 0..8 {
            let at = (y * 8 + x) * 3;
            let (w, b) = (&white[at..at + 3], &black[at..at + 3]);
            if x < 4 {
                assert_eq!((w, b), (&[255u8, 0, 0][..], &[255u8, 0, 0][..]));
            } else {
                assert_eq!((w, b), (&[255u8, 255, 255][..], &[0u8, 0, 0][..]), "transparent green must not show");
            }
        }
    }
}

#[test]
fn crop_and_pad_keep_the_aspect_ratio() {
    let dir = temp_dir("pipeline-aspect");
    let file = dir.join("wide.png");
    // 40x10: left quarter red, middle half green, right quarter blue.
    RgbImage::from_fn(40, 10, |x, _| {
        if x < 10 {
            Rgb([255, 0, 0])
        } else if x < 30 {
            Rgb([0, 255, 0])
        } else {
            Rgb([0, 0, 255])
        }
    })
    .save(&file)
    .unwrap();
    let p = Preprocessing { interpolation: image_pipeline::Interpolation::Nearest, ..Preprocessing::new((10, 10, 3)).unwrap() };
    let px = |v: &[u8], x: usize, y: usize| v[(y * 10 + x) * 3..][..3].to_vec();
    // Crop: the centred 10x10 is all green.
    let crop = image_pipeline::load_image(&file, &Preprocessing { resize: ResizeMode::Crop, ..p }).unwrap();
    assert!(crop.chunks(3).all(|c| c == [0, 255, 0]), "{crop:?}");
    // Pad: the image becomes 10x3 (rounded 2.5), centred between background rows.
    let pad = image_pipeline::load_image(&file, &Preprocessing { resize: ResizeMode::Pad, background: Background::Black, ..p }).unwrap();
    assert_eq!(px(&pad, 5, 0), [0, 0, 0]);
    assert_eq!(px(&pad, 5, 9), [0, 0, 0]);
    assert_eq!(px(&pad, 0, 4), [255, 0, 0]);
    assert_eq!(px(&pad, 5, 4), [0, 255, 0]);
    assert_eq!(px(&pad, 9, 4), [0, 0, 255]);
    // Stretch: all three colours across the full height.
    let stretch = image_pipeline::load_image(&file, &p).unwrap();
    assert_eq!((px(&stretch, 0, 0), px(&stretch, 5, 9), px(&stretch, 9, 5)), (vec![255, 0, 0], vec![0, 255, 0], vec![0, 0, 255]));
}

#[test]
fn large_jpegs_decoded_at_reduced_scale_match_a_full_decode() {
    let dir = temp_dir("pipeline-dct");
    let file = dir.join("big.jpg");
    // A smooth photo-like gradient: DCT scaling then resizing differs from a full decode then
    // resizing only by rounding and the filters' slightly different footprints.
    RgbImage::from_fn(1600, 1200, |x, y| Rgb([(x / 7) as u8, (y / 5) as u8, ((x + y) / 11) as u8])).save(&file).unwrap();
    let p = Preprocessing::new((32, 32, 3)).unwrap();
    let scaled = image_pipeline::load_image(&file, &p).unwrap();
    let full = image::open(&file).unwrap();
    let reference = image::imageops::resize(&full.to_rgb8(), 32, 32, image::imageops::FilterType::Triangle).into_raw();
    let mean_abs = scaled.iter().zip(&reference).map(|(&a, &b)| (a as f64 - b as f64).abs()).sum::<f64>() / scaled.len() as f64;
    // Tolerance 2 grey levels on average (measured about 0.5): the same picture, not the same bits.
    assert!(mean_abs < 2.0, "mean |difference| {mean_abs}");
}

/// Every prefix of `bytes` cut at these lengths must fail to decode.
fn assert_cuts_fail(name: &str, bytes: &[u8], dir: &Path) {
    let p = Preprocessing::new((16, 16, 3)).unwrap();
    let n = bytes.len();
    for cut in [8, 30, 300, n / 3, n / 2, n * 3 / 4, n - 20, n - 2] {
        if cut >= n {
            continue;
        }
        let file = dir.join(format!("cut-{cut}-{name}"));
        std::fs::write(&file, &bytes[..cut]).unwrap();
        let err = image_pipeline::load_image(&file, &p).err().unwrap_or_else(|| panic!("{name} cut at {cut} of {n} bytes decoded without an error"));
        let text = format!("{err:#}");
        assert!(text.contains(&file.display().to_string()), "the error names the file: {text}");
    }
}

#[test]
fn truncated_images_are_errors_at_every_cut_length() {
    let dir = temp_dir("pipeline-truncated");
    let encode = |img: &RgbImage, format: image::ImageFormat| {
        let mut buf = std::io::Cursor::new(Vec::new());
        image::DynamicImage::ImageRgb8(img.clone()).write_to(&mut buf, format).unwrap();
        buf.into_inner()
    };
    let img = pattern(120, 90, 7);
    assert_cuts_fail("photo.jpg", &encode(&img, image::ImageFormat::Jpeg), &dir);
    assert_cuts_fail("photo.png", &encode(&img, image::ImageFormat::Png), &dir);
    assert_cuts_fail("photo.gif", &encode(&img, image::ImageFormat::Gif), &dir);
    assert_cuts_fail("photo.webp", &encode(&img, image::ImageFormat::WebP), &dir);
    assert_cuts_fail("photo.bmp", &encode(&img, image::ImageFormat::Bmp), &dir);
    // In a class folder the cut file stops the load, naming it; --skip-bad skips and counts it.
    let data = temp_dir("pipeline-truncated-folder");
    for class in ["a", "b"] {
        std::fs::create_dir_all(data.join(class)).unwrap();
        for i in 0..3 {
            pattern(40, 40, i).save(data.join(class).join(format!("{i}.jpg"))).unwrap();
        }
    }
    let jpeg = encode(&img, image::ImageFormat::Jpeg);
    std::fs::write(data.join("a").join("cut.jpg"), &jpeg[..300]).unwrap();
    let opts = FolderOptions { val_split: 0.34, ..folder_options(Preprocessing::new((8, 8, 3)).unwrap()) };
    let err = format!("{:#}", folder::load(&data, &opts).unwrap_err());
    assert!(err.contains("cut.jpg") && err.contains("--skip-bad"), "{err}");
    let ds = folder::load(&data, &FolderOptions { skip_bad: true, ..opts }).unwrap();
    assert_eq!(ds.train.len() + ds.test.len(), 6);
}

#[test]
fn images_over_the_pixel_limit_are_refused_before_decoding() {
    let dir = temp_dir("pipeline-pixels");
    let file = dir.join("big.png");
    image::GrayImage::new(200, 100).save(&file).unwrap();
    let jpeg = dir.join("big.jpg");
    image::GrayImage::new(200, 100).save(&jpeg).unwrap();
    let p = Preprocessing::new((8, 8, 1)).unwrap();
    for f in [&file, &jpeg] {
        let err = format!("{:#}", image_pipeline::load_image(f, &Preprocessing { max_pixels: 19_999, ..p }).unwrap_err());
        assert!(err.contains("200x100 (20000 pixels), over the limit of 19999 pixels") && err.contains("--max-pixels"), "{err}");
        assert!(image_pipeline::load_image(f, &Preprocessing { max_pixels: 20_000, ..p }).is_ok());
    }
}

#[cfg(unix)]
#[test]
fn predict_walks_only_real_folders_and_reads_only_regular_files() {
    use std::os::unix::fs::symlink;
    let dir = temp_dir("pipeline-odd-files");
    let photos = dir.join("photos");
    std::fs::create_dir_all(photos.join("sub")).unwrap();
    pattern(10, 10, 1).save(photos.join("sub").join("ok.png")).unwrap();
    // Two links that loop, a FIFO named like an image, and a link to a real image.
    symlink(&photos, photos.join("sub").join("loop")).unwrap();
    symlink(photos.join("sub"), photos.join("loop2")).unwrap();
    let fifo = photos.join("pipe.jpg");
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    symlink(photos.join("sub").join("ok.png"), photos.join("link.png")).unwrap();
    // Hidden files and folders, as training skips them: a Mac's `._ok.png` is not an image.
    std::fs::write(photos.join("sub").join("._ok.png"), b"\0\x05\x16\x07 AppleDouble").unwrap();
    std::fs::create_dir_all(photos.join(".thumbnails")).unwrap();
    pattern(10, 10, 1).save(photos.join(".thumbnails").join("t.png")).unwrap();
    let found = gpu_cnn::predict::collect_inputs(std::slice::from_ref(&photos));
    assert_eq!(found, [photos.join("link.png"), photos.join("sub").join("ok.png")]);
    // Named on the command line, a FIFO or a device is refused without being opened.
    let p = Preprocessing::new((8, 8, 3)).unwrap();
    for odd in [fifo.as_path(), Path::new("/dev/zero"), dir.as_path()] {
        let err = format!("{:#}", image_pipeline::load_image(odd, &p).unwrap_err());
        assert!(err.contains("not a regular file"), "{err}");
    }
    // A file over the size cap is refused before it is read (a sparse file: no disk used).
    let huge = dir.join("huge.jpg");
    std::fs::File::create(&huge).unwrap().set_len(image_pipeline::MAX_FILE_BYTES + 1).unwrap();
    let err = format!("{:#}", image_pipeline::load_image(&huge, &p).unwrap_err());
    assert!(err.contains("limit"), "{err}");
}

#[test]
fn a_corrupt_folder_cache_is_a_miss_and_is_rebuilt() {
    let dir = temp_dir("pipeline-cache");
    let data = dir.join("data");
    for class in ["a", "b"] {
        std::fs::create_dir_all(data.join(class)).unwrap();
        for i in 0..3 {
            pattern(12, 12, i).save(data.join(class).join(format!("{i}.png"))).unwrap();
        }
    }
    let cache = dir.join("cache");
    let opts = FolderOptions { cache_dir: Some(cache.clone()), val_split: 0.34, ..folder_options(Preprocessing::new((8, 8, 3)).unwrap()) };
    let good = folder::load(&data, &opts).unwrap();
    let file = std::fs::read_dir(&cache).unwrap().next().unwrap().unwrap().path();
    let bytes = std::fs::read(&file).unwrap();
    let header_len = u64::from_le_bytes(bytes[8..16].try_into().unwrap()) as usize;
    let header = String::from_utf8(bytes[16..16 + header_len].to_vec()).unwrap();
    // Indices past the listing, a huge header length, garbage, a truncated file: all misses.
    let wrong_index = header.replacen("\"kept\":[0,", "\"kept\":[4000000000,", 1);
    assert_ne!(wrong_index, header);
    let mut bad_index = bytes[..8].to_vec();
    bad_index.extend_from_slice(&(wrong_index.len() as u64).to_le_bytes());
    bad_index.extend_from_slice(wrong_index.as_bytes());
    bad_index.extend_from_slice(&bytes[16 + header_len..]);
    let mut huge_header = bytes.clone();
    huge_header[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
    for corrupt in [bad_index, huge_header, b"GPUCNNF1garbage".to_vec(), bytes[..bytes.len() - 5].to_vec()] {
        std::fs::write(&file, &corrupt).unwrap();
        let again = folder::load(&data, &opts).unwrap();
        assert_eq!((&again.train.images, &again.test.images), (&good.train.images, &good.test.images));
        assert_eq!(std::fs::read(&file).unwrap(), bytes, "the cache is rebuilt");
    }
}

#[cfg(unix)]
#[test]
fn class_folders_with_non_utf8_names_are_refused_not_merged() {
    use std::os::unix::ffi::OsStrExt;
    let dir = temp_dir("pipeline-names");
    for name in [&b"caf\xe9"[..], &b"caf\xe8"[..]] {
        let class = dir.join(std::ffi::OsStr::from_bytes(name));
        std::fs::create_dir_all(&class).unwrap();
        pattern(8, 8, 0).save(class.join("x.png")).unwrap();
    }
    let err = format!("{:#}", folder::load(&dir, &folder_options(Preprocessing::new((8, 8, 3)).unwrap())).unwrap_err());
    assert!(err.contains("not valid UTF-8"), "{err}");
}

#[test]
fn predict_help_names_the_pipeline_flags() {
    let (ok, out, _) = run_cli(&["predict", "--help"]);
    for needle in ["--threshold", "--max-pixels", "JSON Lines", "stored in the"] {
        assert!(ok && out.contains(needle), "predict --help lacks {needle}: {out}");
    }
    let (ok, out, _) = run_cli(&["train", "--help"]);
    for needle in ["--background", "--resize", "--interpolation", "--max-pixels", "--color-mode"] {
        assert!(ok && out.contains(needle), "train --help lacks {needle}: {out}");
    }
}

/// `jpeg` with an EXIF APP1 segment whose orientation tag is `orientation` (a little-endian
/// TIFF header and one IFD entry), put right after the start-of-image marker.
fn with_exif_orientation(jpeg: &[u8], orientation: u16) -> Vec<u8> {
    let mut tiff = b"II*\0\x08\0\0\0".to_vec();
    tiff.extend_from_slice(&1u16.to_le_bytes()); // one entry
    tiff.extend_from_slice(&0x0112u16.to_le_bytes()); // Orientation
    tiff.extend_from_slice(&3u16.to_le_bytes()); // SHORT
    tiff.extend_from_slice(&1u32.to_le_bytes()); // one value
    tiff.extend_from_slice(&orientation.to_le_bytes());
    tiff.extend_from_slice(&[0, 0, 0, 0, 0, 0]); // value padding, no next IFD
    let mut app1 = b"Exif\0\0".to_vec();
    app1.extend_from_slice(&tiff);
    let mut out = jpeg[..2].to_vec();
    out.extend_from_slice(&[0xFF, 0xE1]);
    out.extend_from_slice(&((app1.len() + 2) as u16).to_be_bytes());
    out.extend_from_slice(&app1);
    out.extend_from_slice(&jpeg[2..]);
    out
}

#[test]
fn photos_are_turned_upright_by_their_exif_orientation() {
    // A phone stores a portrait photo sideways with orientation 6 ("turn 90 degrees clockwise");
    // it was classified sideways. Stored: 64x32, red left half, blue right half; upright it is
    // 32x64 with red on top.
    let dir = temp_dir("pipeline-exif");
    let stored = RgbImage::from_fn(64, 32, |x, _| if x < 32 { Rgb([220, 20, 20]) } else { Rgb([20, 20, 220]) });
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 95).encode_image(&stored).unwrap();
    let file = dir.join("portrait.jpg");
    std::fs::write(&file, with_exif_orientation(&jpeg, 6)).unwrap();
    // Large enough to decode at full size, and 4x4 (DCT-scaled; the quarter turn swaps which
    // side must cover the input's height).
    for side in [32, 4] {
        let p = Preprocessing::new((side, side, 3)).unwrap();
        let px = image_pipeline::load_image(&file, &p).unwrap();
        let at = |y: usize, x: usize| &px[(y * side + x) * 3..][..3];
        let (top, bottom, left, right) = (at(0, side / 2), at(side - 1, side / 2), at(side / 2, 0), at(side / 2, side - 1));
        assert!(top[0] > 150 && top[2] < 100 && bottom[2] > 150 && bottom[0] < 100, "{side}: top {top:?} bottom {bottom:?}");
        // A checkpoint from before the setting keeps its images as stored.
        let old = Preprocessing { exif_upright: false, ..p };
        let px = image_pipeline::load_image(&file, &old).unwrap();
        let at = |y: usize, x: usize| &px[(y * side + x) * 3..][..3];
        assert!(at(side / 2, 0)[0] > 150 && at(side / 2, side - 1)[2] > 150, "{side}: stored left {left:?} right {right:?}");
    }
}
