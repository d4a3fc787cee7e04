//! The Keras-style `model.summary()` table.

use super::Model;

fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

pub fn summary_table(model: &Model) -> String {
    let rows: Vec<[String; 3]> = model
        .layers
        .iter()
        .map(|l| {
            let kind = l.spec.class();
            let dims: Vec<String> = l.output.iter().map(|d| d.to_string()).collect();
            [format!("{} ({kind})", l.name), format!("(None, {})", dims.join(", ")), thousands(l.param_count())]
        })
        .collect();
    let headers = ["Layer (type)", "Output Shape", "Param #"];
    let width: Vec<usize> = (0..3).map(|c| rows.iter().map(|r| r[c].len()).chain([headers[c].len()]).max().unwrap_or(0) + 4).collect();
    let total: usize = width.iter().sum();
    let line = |ch: &str| ch.repeat(total) + "\n";
    let (h, w, c) = model.input;
    let mut out = format!("Model: \"sequential\"  (input {h}x{w}x{c})\n");
    out += &line("━");
    out += &format!("{:<a$}{:<b$}{:>c$}\n", headers[0], headers[1], headers[2], a = width[0], b = width[1], c = width[2]);
    out += &line("━");
    for (i, r) in rows.iter().enumerate() {
        out += &format!("{:<a$}{:<b$}{:>c$}\n", r[0], r[1], r[2], a = width[0], b = width[1], c = width[2]);
        if i + 1 < rows.len() {
            out += &line("─");
        }
    }
    out += &line("━");
    let (total, trainable) = (model.param_count(), model.trainable_count());
    for (what, count) in [("Total", total), ("Trainable", trainable), ("Non-trainable", total - trainable)] {
        out += &format!(" {what} params: {} ({})\n", thousands(count), human_bytes(count * 4));
    }
    out
}

fn human_bytes(bytes: usize) -> String {
    if bytes >= 1 << 20 {
        format!("{:.2} MB", bytes as f64 / (1u64 << 20) as f64)
    } else if bytes >= 1 << 10 {
        format!("{:.2} KB", bytes as f64 / 1024.0)
    } else {
        format!("{:.2} B", bytes as f64)
    }
}
