//! The confusion matrix over a test split (rows: true class, columns: predicted), per-class
//! precision and recall, and their text, JSON and picture forms.

use super::draw::{self, Rgb, RgbImage, BLACK, WHITE};
use serde_json::json;

#[derive(Clone, Debug, PartialEq)]
pub struct Confusion {
    pub class_names: Vec<String>,
    /// counts[true][predicted]
    pub counts: Vec<Vec<usize>>,
}

impl Confusion {
    pub fn new(class_names: &[String], truth: &[usize], predicted: &[usize]) -> Self {
        let k = class_names.len();
        let mut counts = vec![vec![0; k]; k];
        for (&t, &p) in truth.iter().zip(predicted) {
            if t < k && p < k {
                counts[t][p] += 1;
            }
        }
        Confusion { class_names: class_names.to_vec(), counts }
    }

    pub fn total(&self) -> usize {
        self.counts.iter().flatten().sum()
    }

    pub fn correct(&self) -> usize {
        (0..self.counts.len()).map(|i| self.counts[i][i]).sum()
    }

    /// Of the images predicted as class `c`, the fraction that are `c` (None: none predicted).
    pub fn precision(&self, c: usize) -> Option<f64> {
        let predicted: usize = self.counts.iter().map(|row| row[c]).sum();
        (predicted > 0).then(|| self.counts[c][c] as f64 / predicted as f64)
    }

    /// Of the images of class `c`, the fraction predicted as `c` (None: no such images).
    pub fn recall(&self, c: usize) -> Option<f64> {
        let actual: usize = self.counts[c].iter().sum();
        (actual > 0).then(|| self.counts[c][c] as f64 / actual as f64)
    }

    /// The class names as the text tables show them: control characters as `?` (a newline in
    /// a folder name broke the table), at most 40 characters.
    fn table_names(&self) -> (Vec<String>, usize) {
        const WIDEST: usize = 40;
        let names: Vec<String> = self
            .class_names
            .iter()
            .map(|n| {
                let shown = crate::predict::printable(n);
                if shown.chars().count() > WIDEST {
                    shown.chars().take(WIDEST - 3).collect::<String>() + "..."
                } else {
                    shown
                }
            })
            .collect();
        let width = names.iter().map(|n| n.chars().count()).max().unwrap_or(0).max(10);
        (names, width)
    }

    /// The matrix as a text table, rows labelled with class names, columns with class numbers.
    pub fn matrix_text(&self) -> String {
        let k = self.class_names.len();
        let (names, name_w) = self.table_names();
        let cell_w = self.counts.iter().flatten().map(|c| c.to_string().len()).max().unwrap_or(1).max(k.to_string().len()) + 1;
        let mut s = format!("Confusion matrix (rows: true class, columns: predicted class number)\n{:>w$}", "", w = name_w + 4);
        for j in 0..k {
            s += &format!("{j:>cell_w$}");
        }
        s.push('\n');
        for (i, row) in self.counts.iter().enumerate() {
            s += &format!("{i:>2} {:<name_w$} ", names[i]);
            for c in row {
                s += &format!("{c:>cell_w$}");
            }
            s.push('\n');
        }
        s
    }

    /// Per-class precision, recall and support, as a table.
    pub fn per_class_text(&self) -> String {
        self.per_class_table(None, None)
    }

    /// The per-class table after training: also each class's training images and, with
    /// `--class-weight`, its loss weight.
    pub fn per_class_text_with_training(&self, train_counts: &[usize], weights: Option<&[f32]>) -> String {
        self.per_class_table(Some(train_counts), weights)
    }

    fn per_class_table(&self, train_counts: Option<&[usize]>, weights: Option<&[f32]>) -> String {
        let (names, name_w) = self.table_names();
        let fmt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.4}"));
        let mut s = format!("{:<name_w$}  {:>9}  {:>9}  {:>7}", "class", "precision", "recall", "images");
        if train_counts.is_some() {
            s += &format!("  {:>8}", "training");
        }
        if weights.is_some() {
            s += &format!("  {:>7}", "weight");
        }
        s += "\n";
        for (c, name) in names.iter().enumerate() {
            s += &format!("{name:<name_w$}  {:>9}  {:>9}  {:>7}", fmt(self.precision(c)), fmt(self.recall(c)), self.counts[c].iter().sum::<usize>());
            if let Some(t) = train_counts {
                s += &format!("  {:>8}", t.get(c).copied().unwrap_or(0));
            }
            if let Some(w) = weights {
                s += &format!("  {:>7.4}", w.get(c).copied().unwrap_or(f32::NAN));
            }
            s += "\n";
        }
        s
    }

    pub fn to_json(&self) -> serde_json::Value {
        let per_class: Vec<_> = (0..self.class_names.len())
            .map(|c| json!({"class": self.class_names[c], "precision": self.precision(c), "recall": self.recall(c), "images": self.counts[c].iter().sum::<usize>()}))
            .collect();
        json!({
            "class_names": self.class_names,
            "rows": "true class",
            "columns": "predicted class",
            "matrix": self.counts,
            "images": self.total(),
            "correct": self.correct(),
            "per_class": per_class,
        })
    }
}

const CELL: u32 = 44;
const MARGIN: u32 = 16;

/// Pixel size of the confusion picture for these class names.
pub fn picture_size(class_names: &[String]) -> (u32, u32) {
    let label = label_width(class_names);
    let side = CELL * class_names.len() as u32;
    (MARGIN + 24 + label + side + MARGIN, MARGIN + 28 + side + label + 24 + MARGIN)
}

fn label_width(class_names: &[String]) -> u32 {
    class_names.iter().map(|n| draw::text_width(n, 1)).max().unwrap_or(0) + 8
}

/// A heat map like scikit-learn's ConfusionMatrixDisplay: each cell shaded by its share of the
/// row (the true class) and labelled with its count; class names on both axes.
pub fn picture(conf: &Confusion) -> RgbImage {
    let names = &conf.class_names;
    let (w, h) = picture_size(names);
    let mut img = draw::canvas(w, h);
    let label = label_width(names) as i64;
    let (gx, gy) = ((MARGIN + 24) as i64 + label, (MARGIN + 28) as i64);
    let k = names.len() as i64;
    let cell = CELL as i64;
    draw::text_centered(&mut img, gx + k * cell / 2, MARGIN as i64, "Confusion matrix", 2, BLACK);
    for (i, row) in conf.counts.iter().enumerate() {
        let row_total: usize = row.iter().sum();
        for (j, &count) in row.iter().enumerate() {
            let share = if row_total > 0 { count as f64 / row_total as f64 } else { 0.0 };
            let (x, y) = (gx + j as i64 * cell, gy + i as i64 * cell);
            draw::fill_rect(&mut img, x, y, cell, cell, shade(share));
            let text = count.to_string();
            let ink = if share > 0.5 { WHITE } else { BLACK };
            draw::text_centered(&mut img, x + cell / 2, y + cell / 2 - 4, &text, 1, ink);
        }
    }
    draw::outline_rect(&mut img, gx, gy, k * cell + 1, k * cell + 1, BLACK);
    for (i, name) in names.iter().enumerate() {
        let y = gy + i as i64 * cell + cell / 2 - 4;
        draw::text(&mut img, gx - 6 - draw::text_width(name, 1) as i64, y, name, 1, BLACK);
        let x = gx + i as i64 * cell + cell / 2 - 4;
        draw::text_vertical(&mut img, x, gy + k * cell + 6 + draw::text_width(name, 1) as i64, name, 1, BLACK);
    }
    draw::text_vertical(&mut img, MARGIN as i64, gy + k * cell / 2 + draw::text_width("true", 2) as i64 / 2, "true", 2, BLACK);
    draw::text_centered(&mut img, gx + k * cell / 2, gy + k * cell + label + 8, "predicted", 2, BLACK);
    img
}

/// White to matplotlib's "Blues" dark end as `share` goes 0 to 1.
fn shade(share: f64) -> Rgb<u8> {
    let (r, g, b) = (8.0, 48.0, 107.0);
    let mix = |dark: f64| (255.0 + (dark - 255.0) * share.clamp(0.0, 1.0)).round() as u8;
    Rgb([mix(r), mix(g), mix(b)])
}

#[cfg(test)]
mod tests {
    use super::Confusion;

    #[test]
    fn text_tables_show_odd_class_names_on_one_line() {
        // A folder named with a newline split the table's row; a 250-character one widened it.
        let names = ["Ba\ng".to_string(), "x".repeat(250), "Dress".to_string()];
        let c = Confusion::new(&names, &[0, 1, 2], &[0, 1, 1]);
        for table in [c.per_class_text(), c.matrix_text()] {
            assert!(table.contains("Ba?g") && table.contains(&format!("{}...", "x".repeat(37))), "{table}");
            assert!(table.lines().all(|l| l.chars().count() < 80), "{table}");
        }
    }
}
