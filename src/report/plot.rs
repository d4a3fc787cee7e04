//! curves.png: loss and accuracy per epoch, train and validation, side by side, as the Keras
//! tutorial plots `history.history` (blue: train, orange: validation).

use super::draw::{self, Rgb, RgbImage, BLACK, BLUE, GREY, LIGHT_GREY, ORANGE};
use crate::history::EpochRecord;

const PANEL_W: u32 = 520;
const PANEL_H: u32 = 380;
const LEFT: u32 = 64;
const RIGHT: u32 = 16;
/// Room above the plot for the title and, under it, the legend (outside the data).
const TOP: u32 = 54;
const BOTTOM: u32 = 48;
pub const CURVES_SIZE: (u32, u32) = (2 * PANEL_W, PANEL_H);

/// How a panel's y axis maps values: linear from 0, or log10 over whole decades.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Axis {
    Linear {
        hi: f64,
    },
    /// 10^lo to 10^hi.
    Log {
        lo: i32,
        hi: i32,
    },
}

impl Axis {
    /// Where `v` sits on the axis, 0 (bottom) to 1 (top), clamped.
    fn fraction(self, v: f64) -> f64 {
        match self {
            Axis::Linear { hi } => v.clamp(0.0, hi) / hi,
            Axis::Log { lo, hi } => {
                let v = if v > 0.0 { v.log10() } else { lo as f64 };
                (v.clamp(lo as f64, hi as f64) - lo as f64) / (hi - lo) as f64
            }
        }
    }

    /// Tick values and their labels, bottom to top.
    fn ticks(self) -> Vec<(f64, String)> {
        match self {
            Axis::Linear { hi } => (0..=5).map(|i| hi * i as f64 / 5.0).map(|v| (v, format!("{v:.2}"))).collect(),
            Axis::Log { lo, hi } => {
                let step = ((hi - lo) as usize).div_ceil(6).max(1);
                (lo..=hi).step_by(step).map(|k| (10f64.powi(k), format!("1e{k}"))).collect()
            }
        }
    }
}

/// The loss panel's axis: log when the finite positive values span more than 100x (a diverged
/// run's first epochs would otherwise flatten every later one into the bottom pixel row),
/// else linear from 0.
pub fn loss_axis(values: &[f64]) -> Axis {
    let finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    let top = finite.iter().copied().fold(0.0f64, f64::max);
    let smallest = finite.iter().copied().filter(|&v| v > 0.0).fold(f64::INFINITY, f64::min);
    if smallest.is_finite() && top / smallest > 100.0 {
        Axis::Log { lo: smallest.log10().floor() as i32, hi: top.log10().ceil() as i32 }
    } else {
        Axis::Linear { hi: nice_ceiling(top) }
    }
}

/// The plotted rectangle (x, y, width, height) of the panel starting at x0; nothing but data
/// and grid lines is drawn inside it.
pub fn plot_rect(x0: u32) -> (u32, u32, u32, u32) {
    (x0 + LEFT, TOP, PANEL_W - LEFT - RIGHT, PANEL_H - TOP - BOTTOM)
}

/// The two panels in one image.
pub fn curves(history: &[EpochRecord]) -> RgbImage {
    let mut img = draw::canvas(CURVES_SIZE.0, CURVES_SIZE.1);
    let epochs: Vec<f64> = history.iter().map(|r| r.epoch as f64).collect();
    let loss = [("loss", history.iter().map(|r| r.loss).collect::<Vec<_>>(), BLUE), ("val_loss", history.iter().map(|r| r.val_loss).collect(), ORANGE)];
    let all: Vec<f64> = loss.iter().flat_map(|s| s.1.iter().copied()).collect();
    let axis = loss_axis(&all);
    let title = if matches!(axis, Axis::Log { .. }) { "Loss (log scale)" } else { "Loss" };
    panel(&mut img, 0, title, &epochs, &loss, axis);
    let acc = [
        ("accuracy", history.iter().map(|r| r.accuracy).collect::<Vec<_>>(), BLUE),
        ("val_accuracy", history.iter().map(|r| r.val_accuracy).collect(), ORANGE),
    ];
    panel(&mut img, PANEL_W, "Accuracy", &epochs, &acc, Axis::Linear { hi: 1.0 });
    img
}

/// A round number at or above `v` (1, 2 or 5 times a power of ten), so ticks read well.
fn nice_ceiling(v: f64) -> f64 {
    // Also NaN, which compares false.
    if v.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater) {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0].iter().map(|m| m * p).find(|&c| c >= v).unwrap_or(10.0 * p)
}

fn panel(img: &mut RgbImage, x0: u32, title: &str, epochs: &[f64], series: &[(&str, Vec<f64>, Rgb<u8>)], axis: Axis) {
    let (px, py) = ((x0 + LEFT) as f64, TOP as f64);
    let (pw, ph) = ((PANEL_W - LEFT - RIGHT) as f64, (PANEL_H - TOP - BOTTOM) as f64);
    let last_epoch = epochs.last().copied().unwrap_or(1.0);
    let first_epoch = epochs.first().copied().unwrap_or(1.0);
    // One epoch still gets an axis one unit wide, with its point in the middle.
    let (xmin, xmax) = if last_epoch > first_epoch { (first_epoch, last_epoch) } else { (first_epoch - 0.5, first_epoch + 0.5) };
    let to_x = |e: f64| px + (e - xmin) / (xmax - xmin) * pw;
    let to_y = |v: f64| py + ph - axis.fraction(v) * ph;
    draw::text_centered(img, (x0 + LEFT) as i64 + pw as i64 / 2, 10, title, 2, BLACK);
    // Horizontal grid lines and y tick labels.
    for (v, label) in axis.ticks() {
        let y = to_y(v).round() as i64;
        draw::fill_rect(img, px as i64, y, pw as i64, 1, LIGHT_GREY);
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
    // Legend in one row between the title and the plot, right-aligned: outside the data.
    let entry_w = |name: &str| draw::text_width(name, 1) as i64 + 36;
    let mut lx = px as i64 + pw as i64 - series.iter().map(|s| entry_w(s.0)).sum::<i64>();
    let ly = py as i64 - 14;
    for (name, _, color) in series {
        draw::fill_rect(img, lx + 6, ly + 3, 20, 3, *color);
        draw::text(img, lx + 30, ly, name, 1, BLACK);
        lx += entry_w(name);
    }
}
