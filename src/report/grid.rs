//! Grids of images with a caption of one or two lines under each: the notebook's first figure
//! (training images named by class) and the prediction grid (green when right, red when wrong).

use super::draw::{self, Rgb, BLACK, GREEN, RED};
use crate::data::ImageSet;
use image::{imageops, RgbImage};

/// Images are enlarged (nearest neighbour, so pixels stay visible) to this side.
pub const TILE: u32 = 160;
/// Space above and below each tile.
const PAD: u32 = 8;
/// Space either side: wide enough that 11-letter names ("T-shirt/top") fit at scale 2.
const SIDE: u32 = 16;
/// Caption lines are drawn at scale 2 (16 px) when they fit, else scale 1.
const LINE_HEIGHT: u32 = 20;
const CAPTION_LINES: u32 = 2;
pub const CELL_WIDTH: u32 = TILE + 2 * SIDE;
pub const CELL_HEIGHT: u32 = PAD + TILE + 4 + CAPTION_LINES * LINE_HEIGHT + PAD;

/// Pixel size of a grid of `count` cells in `cols` columns.
pub fn grid_size(count: usize, cols: usize) -> (u32, u32) {
    let rows = count.div_ceil(cols.max(1)) as u32;
    (CELL_WIDTH * cols.min(count).max(1) as u32, CELL_HEIGHT * rows.max(1))
}

/// Image `i` of `set` as RGB (grey images repeated over the channels).
pub fn to_rgb(set: &ImageSet, i: usize) -> RgbImage {
    let px = set.image(i);
    let c = set.channels;
    RgbImage::from_fn(set.width as u32, set.height as u32, |x, y| {
        let p = &px[(y as usize * set.width + x as usize) * c..][..c];
        if c >= 3 {
            image::Rgb([p[0], p[1], p[2]])
        } else {
            image::Rgb([p[0], p[0], p[0]])
        }
    })
}

/// One cell: an image and its caption lines with their colours.
pub struct Cell {
    pub image: RgbImage,
    pub caption: Vec<(String, Rgb<u8>)>,
}

/// Lays `cells` out in rows of `cols`.
pub fn captioned_grid(cells: &[Cell], cols: usize) -> RgbImage {
    let (w, h) = grid_size(cells.len(), cols);
    let mut img = draw::canvas(w, h);
    let scale = caption_scale(cells);
    for (i, cell) in cells.iter().enumerate() {
        let (x0, y0) = ((i % cols) as u32 * CELL_WIDTH, (i / cols) as u32 * CELL_HEIGHT);
        let tile = imageops::resize(&cell.image, TILE, TILE, imageops::FilterType::Nearest);
        imageops::replace(&mut img, &tile, (x0 + SIDE) as i64, (y0 + PAD) as i64);
        for (line, (text, color)) in cell.caption.iter().take(CAPTION_LINES as usize).enumerate() {
            let text = draw::clip_text(text, CELL_WIDTH - 4, scale);
            let y = y0 + PAD + TILE + 4 + line as u32 * LINE_HEIGHT + (2 - scale) * 4;
            draw::text_centered(&mut img, (x0 + CELL_WIDTH / 2) as i64, y as i64, &text, scale, *color);
        }
    }
    img
}

/// The one text scale of every caption in the grid: 2 when every line fits at 2, else 1
/// (longer names are clipped), so no label looks more important than another.
pub fn caption_scale(cells: &[Cell]) -> u32 {
    cells.iter().flat_map(|c| c.caption.iter().take(CAPTION_LINES as usize)).map(|(t, _)| draw::fitting_scale(t, CELL_WIDTH - 4, 2)).min().unwrap_or(2)
}

/// What salts the preview sample, so it depends only on the seed.
const PREVIEW_PURPOSE: u64 = 0x009E_71E3;

/// `count` image indices of `labels` spread over the classes: each class's images in a seeded
/// random order, taken round-robin (class 0, 1, ..., then again), so a folder sorted by class
/// still shows every class instead of the first 25 files of the first one.
pub fn preview_indices(labels: &[u8], count: usize, seed: u64) -> Vec<usize> {
    let classes = labels.iter().map(|&l| l as usize + 1).max().unwrap_or(0);
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); classes];
    for (i, &l) in labels.iter().enumerate() {
        by_class[l as usize].push(i);
    }
    for (c, v) in by_class.iter_mut().enumerate() {
        crate::rng::Rng::derive(seed, PREVIEW_PURPOSE, c as u64).shuffle(v);
    }
    let mut out = Vec::with_capacity(count.min(labels.len()));
    for round in 0.. {
        if out.len() >= count.min(labels.len()) {
            break;
        }
        for v in &by_class {
            if let Some(&i) = v.get(round) {
                if out.len() < count {
                    out.push(i);
                }
            }
        }
    }
    out
}

/// A seeded sample of `count` images of `set` spread over the classes, each named by its class
/// (Keras tutorial's first figure).
pub fn sample_grid(set: &ImageSet, class_names: &[String], count: usize, cols: usize, seed: u64) -> RgbImage {
    let cells: Vec<Cell> = preview_indices(&set.labels, count, seed)
        .into_iter()
        .map(|i| Cell { image: to_rgb(set, i), caption: vec![(class_name(class_names, set.labels[i] as usize), BLACK)] })
        .collect();
    captioned_grid(&cells, cols)
}

/// A seeded sample of `count` images of `set` spread over the classes, captioned with the
/// predicted class: green when right; red when wrong, with the true class on a second line.
pub fn prediction_grid(set: &ImageSet, class_names: &[String], predicted: &[usize], count: usize, cols: usize, seed: u64) -> RgbImage {
    let labels = &set.labels[..set.len().min(predicted.len())];
    let cells: Vec<Cell> = preview_indices(labels, count, seed)
        .into_iter()
        .map(|i| {
            let (p, t) = (predicted[i], set.labels[i] as usize);
            let caption = if p == t {
                vec![(class_name(class_names, p), GREEN)]
            } else {
                vec![(class_name(class_names, p), RED), (format!("true: {}", class_name(class_names, t)), RED)]
            };
            Cell { image: to_rgb(set, i), caption }
        })
        .collect();
    captioned_grid(&cells, cols)
}

pub fn class_name(names: &[String], i: usize) -> String {
    names.get(i).cloned().unwrap_or_else(|| format!("class {i}"))
}
