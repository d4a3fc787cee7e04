//! curves.png: loss and accuracy per epoch, train and validation, side by side, as the Keras
//! tutorial plots `history.history` (blue: train, orange: validation).

use super::draw::{self, Rgb, RgbImage, BLACK, BLUE, GREY, LIGHT_GREY, ORANGE};
use crate::history::EpochRecord;

const PANEL_W: u32 = 520;
const PANEL_H: u32 = 380;
const LEFT: u32 = 64;
const RIGHT: u32 = 16;
const TOP: u32 = 36;
const BOTTOM: u32 = 48;
pub const CURVES_SIZE: (u32, u32) = (2 * PANEL_W, PANEL_H);

/// The two panels in one image.
pub fn curves(history: &[EpochRecord]) -> RgbImage {
    let mut img = draw::canvas(CURVES_SIZE.0, CURVES_SIZE.1);
    let epochs: Vec<f64> = history.iter().map(|r| r.epoch as f64).collect();
    let loss = [("loss", history.iter().map(|r| r.loss).collect::<Vec<_>>(), BLUE), ("val_loss", history.iter().map(|r| r.val_loss).collect(), ORANGE)];
    let top = loss.iter().flat_map(|s| s.1.iter().copied()).filter(|v| v.is_finite()).fold(0.0f64, f64::max);
    panel(&mut img, 0, "Loss", &epochs, &loss, (0.0, nice_ceiling(top)));
    let acc = [("accuracy", history.iter().map(|r| r.accuracy).collect::<Vec<_>>(), BLUE), ("val_accuracy", history.iter().map(|r| r.val_accuracy).collect(), ORANGE)];
    panel(&mut img, PANEL_W, "Accuracy", &epochs, &acc, (0.0, 1.0));
    img
}

/// A round number at or above `v` (1, 2 or 5 times a power of ten), so ticks read well.
fn nice_ceiling(v: f64) -> f64 {
    if !(v > 0.0) {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0].iter().map(|m| m * p).find(|&c| c >= v).unwrap_or(10.0 * p)
}

fn panel(img: &mut RgbImage, x0: u32, title: &str, epochs: &[f64], series: &[(&str, Vec<f64>, Rgb<u8>)], (lo, hi): (f64, f64)) {
    let (px, py) = ((x0 + LEFT) as f64, TOP as f64);
    let (pw, ph) = ((PANEL_W - LEFT - RIGHT) as f64, (PANEL_H - TOP - BOTTOM) as f64);
    let last_epoch = epochs.last().copied().unwrap_or(1.0);
    let first_epoch = epochs.first().copied().unwrap_or(1.0);
    // One epoch still gets an axis one unit wide, with its point in the middle.
    let (xmin, xmax) = if last_epoch > first_epoch { (first_epoch, last_epoch) } else { (first_epoch - 0.5, first_epoch + 0.5) };
    let to_x = |e: f64| px + (e - xmin) / (xmax - xmin) * pw;
    let to_y = |v: f64| py + ph - (v.clamp(lo, hi) - lo) / (hi - lo) * ph;
    draw::text_centered(img, (x0 + LEFT) as i64 + pw as i64 / 2, 10, title, 2, BLACK);
    // Horizontal grid lines and y tick labels.
    for i in 0..=5 {
        let v = lo + (hi - lo) * i as f64 / 5.0;
        let y = to_y(v).round() as i64;
        draw::fill_rect(img, px as i64, y, pw as i64, 1, LIGHT_GREY);
        let label = format!("{v:.2}");
        draw::text(img, px as i64 - 6 - draw::text_width(&label, 1) as i64, y - 4, &label, 1, BLACK);
    }
    // x ticks at whole epochs, at most about ten of them.
    let span = (xmax - xmin).max(1.0);
    let step = (span / 10.0).ceil().max(1.0);
    let mut e = first_epoch;
    while e <= last_epoch + 1e-9 {
        let x = to_x(e).round() as i64;
        draw::fill_rect(img, x, (py + ph) as i64, 1, 5, BLACK);
        draw::text_centered(img, x, (py + ph) as i64 + 8, &format!("{e}"), 1, BLACK);
        e += step;
    }
    draw::text_centered(img, px as i64 + pw as i64 / 2, (py + ph) as i64 + 26, "epoch", 2, GREY);
    draw::outline_rect(img, px as i64, py as i64, pw as i64 + 1, ph as i64 + 1, BLACK);
    for (_, values, color) in series {
        let points: Vec<(f64, f64)> = epochs.iter().zip(values).filter(|(_, v)| v.is_finite()).map(|(&e, &v)| (to_x(e), to_y(v))).collect();
        for pair in points.windows(2) {
            draw::line(img, pair[0], pair[1], 2, *color);
        }
        for &(x, y) in &points {
            draw::fill_rect(img, x.round() as i64 - 3, y.round() as i64 - 3, 7, 7, *color);
        }
    }
    // Legend, top right inside the plot.
    let legend_w = series.iter().map(|s| draw::text_width(s.0, 1)).max().unwrap_or(0) as i64 + 36;
    let (lx, ly) = (px as i64 + pw as i64 - legend_w - 8, py as i64 + 8);
    draw::fill_rect(img, lx, ly, legend_w, 14 * series.len() as i64 + 8, draw::WHITE);
    draw::outline_rect(img, lx, ly, legend_w, 14 * series.len() as i64 + 8, LIGHT_GREY);
    for (i, (name, _, color)) in series.iter().enumerate() {
        let y = ly + 6 + 14 * i as i64;
        draw::fill_rect(img, lx + 6, y + 3, 20, 3, *color);
        draw::text(img, lx + 30, y, name, 1, BLACK);
    }
}
