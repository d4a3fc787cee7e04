//! report.html: one self-contained page (pictures embedded as base64 data URLs, no scripts,
//! no outside links) with a run's settings, device, curves, confusion matrix, prediction grid,
//! per-class precision/recall and the history table.

use super::confusion::Confusion;
use crate::history::EpochRecord;

/// Standard base64 with padding (RFC 4648), for data URLs.
pub fn base64(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// What the page shows; pictures are PNG bytes.
pub struct Page<'a> {
    pub title: &'a str,
    pub settings: &'a [(String, String)],
    pub history: &'a [EpochRecord],
    pub confusion: &'a Confusion,
    pub curves_png: &'a [u8],
    pub confusion_png: &'a [u8],
    pub predictions_png: &'a [u8],
    /// Folder data sets only: the images with the highest loss, named by file.
    pub top_losses_png: Option<&'a [u8]>,
}

fn img(alt: &str, png: &[u8]) -> String {
    format!("<img alt=\"{}\" src=\"data:image/png;base64,{}\">", escape(alt), base64(png))
}

pub fn render(p: &Page) -> String {
    let mut h = String::new();
    h += "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n";
    h += &format!("<title>{}</title>\n", escape(p.title));
    h += "<style>body{font-family:sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse;margin:1em 0}\
          td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f3f3f3}td.l,th.l{text-align:left}\
          img{max-width:100%;border:1px solid #eee}pre{background:#f7f7f7;padding:1em;overflow-x:auto}</style>\n</head>\n<body>\n";
    h += &format!("<h1>{}</h1>\n", escape(p.title));
    h += "<h2>Settings</h2>\n<table id=\"settings\">\n";
    for (k, v) in p.settings {
        h += &format!("<tr><th class=\"l\">{}</th><td class=\"l\">{}</td></tr>\n", escape(k), escape(v).replace('\n', "<br>"));
    }
    let c = p.confusion;
    let accuracy = if c.total() > 0 { c.correct() as f64 / c.total() as f64 } else { 0.0 };
    h += &format!("</table>\n<p>Test accuracy of these weights: <b>{accuracy:.4}</b> ({} of {} images).</p>\n", c.correct(), c.total());
    h += &format!("<h2>Loss and accuracy per epoch</h2>\n{}\n", img("loss and accuracy curves", p.curves_png));
    h += &format!("<h2>Confusion matrix</h2>\n{}\n", img("confusion matrix", p.confusion_png));
    h += "<table id=\"per-class\">\n<tr><th class=\"l\">class</th><th>precision</th><th>recall</th><th>images</th></tr>\n";
    let fmt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.4}"));
    for (i, name) in c.class_names.iter().enumerate() {
        h += &format!(
            "<tr><td class=\"l\">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
            escape(name),
            fmt(c.precision(i)),
            fmt(c.recall(i)),
            c.counts[i].iter().sum::<usize>()
        );
    }
    h += &format!("</table>\n<pre>{}</pre>\n", escape(&c.matrix_text()));
    h += &format!(
        "<h2>Predictions on the first test images</h2>\n<p>Green: right; red: wrong, with the true class.</p>\n{}\n",
        img("prediction grid", p.predictions_png)
    );
    if let Some(png) = p.top_losses_png {
        h += &format!(
            "<h2 id=\"top-losses\">Top losses</h2>\n<p>The validation images the model disagrees with most (highest loss first): file name, then predicted class, its probability / true class. Mislabelled photos show up here first; <code>gpu-cnn review</code> lists them all.</p>\n{}\n",
            img("top losses", png)
        );
    }
    h += "<h2>History</h2>\n<table id=\"history\">\n<tr><th>epoch</th><th>loss</th><th>accuracy</th><th>val_loss</th><th>val_accuracy</th><th>seconds</th></tr>\n";
    for r in p.history {
        h += &format!(
            "<tr><td>{}</td><td>{:.4}</td><td>{:.4}</td><td>{:.4}</td><td>{:.4}</td><td>{:.1}</td></tr>\n",
            r.epoch, r.loss, r.accuracy, r.val_loss, r.val_accuracy, r.seconds
        );
    }
    h += "</table>\n<p>Written by gpu-cnn.</p>\n</body>\n</html>\n";
    h
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_matches_rfc4648_examples() {
        for (plain, coded) in [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foob", "Zm9vYg=="), ("fooba", "Zm9vYmE="), ("foobar", "Zm9vYmFy")] {
            assert_eq!(super::base64(plain.as_bytes()), coded);
        }
    }
}
