//! Drawing primitives on an RGB image: rectangles, thick lines and text in an 8x8 bitmap font
//! (font8x8: public-domain glyphs, MIT crate), drawn at an integer scale so it stays crisp.
//! Glyphs outside ASCII, Latin-1, Greek and Hiragana are drawn as '?'.

pub use image::{Rgb, RgbImage};

pub const WHITE: Rgb<u8> = Rgb([255, 255, 255]);
pub const BLACK: Rgb<u8> = Rgb([0, 0, 0]);
pub const GREY: Rgb<u8> = Rgb([120, 120, 120]);
pub const LIGHT_GREY: Rgb<u8> = Rgb([225, 225, 225]);
/// matplotlib's default first two line colours, so the curves look as a notebook's would.
pub const BLUE: Rgb<u8> = Rgb([31, 119, 180]);
pub const ORANGE: Rgb<u8> = Rgb([255, 127, 14]);
pub const GREEN: Rgb<u8> = Rgb([0, 128, 0]);
pub const RED: Rgb<u8> = Rgb([200, 0, 0]);

/// Pixel side of one glyph at scale 1.
pub const GLYPH: u32 = 8;

/// A white canvas.
pub fn canvas(width: u32, height: u32) -> RgbImage {
    RgbImage::from_pixel(width, height, WHITE)
}

/// Sets a pixel, ignoring coordinates outside the image.
pub fn put(img: &mut RgbImage, x: i64, y: i64, color: Rgb<u8>) {
    if x >= 0 && y >= 0 && (x as u32) < img.width() && (y as u32) < img.height() {
        img.put_pixel(x as u32, y as u32, color);
    }
}

pub fn fill_rect(img: &mut RgbImage, x: i64, y: i64, w: i64, h: i64, color: Rgb<u8>) {
    for yy in y..y + h {
        for xx in x..x + w {
            put(img, xx, yy, color);
        }
    }
}

pub fn outline_rect(img: &mut RgbImage, x: i64, y: i64, w: i64, h: i64, color: Rgb<u8>) {
    fill_rect(img, x, y, w, 1, color);
    fill_rect(img, x, y + h - 1, w, 1, color);
    fill_rect(img, x, y, 1, h, color);
    fill_rect(img, x + w - 1, y, 1, h, color);
}

/// A line `thickness` pixels wide (a square brush stepped along the longer axis).
pub fn line(img: &mut RgbImage, (x0, y0): (f64, f64), (x1, y1): (f64, f64), thickness: i64, color: Rgb<u8>) {
    let steps = (x1 - x0).abs().max((y1 - y0).abs()).ceil().max(1.0) as i64;
    let half = thickness / 2;
    for i in 0..=steps {
        let t = i as f64 / steps as f64;
        let (x, y) = ((x0 + (x1 - x0) * t).round() as i64, (y0 + (y1 - y0) * t).round() as i64);
        fill_rect(img, x - half, y - half, thickness, thickness, color);
    }
}

/// The 8x8 glyph of `c`: ASCII, Latin-1 (é, ü, ß, ñ, ø: most European catalogue names),
/// Greek and Hiragana as font8x8 draws them; '?' for anything else.
fn glyph(c: char) -> [u8; 8] {
    use font8x8::legacy::{BASIC_LEGACY, GREEK_LEGACY, HIRAGANA_LEGACY, LATIN_LEGACY};
    let code = c as usize;
    match code {
        0x20..=0x7E => BASIC_LEGACY[code],
        0xA0..=0xFF => LATIN_LEGACY[code - 0xA0],
        0x390..=0x3C9 => GREEK_LEGACY[code - 0x390],
        0x3040..=0x309F => HIRAGANA_LEGACY[code - 0x3040],
        _ => BASIC_LEGACY['?' as usize],
    }
}

/// Width in pixels of `text` drawn at `scale`.
pub fn text_width(text: &str, scale: u32) -> u32 {
    text.chars().count() as u32 * GLYPH * scale
}

/// Draws `text` with its top-left corner at (x, y). In font8x8 bit i of row r is column i.
pub fn text(img: &mut RgbImage, x: i64, y: i64, text: &str, scale: u32, color: Rgb<u8>) {
    let s = scale as i64;
    for (i, c) in text.chars().enumerate() {
        let gx = x + i as i64 * GLYPH as i64 * s;
        for (row, bits) in glyph(c).iter().enumerate() {
            for col in 0..8 {
                if bits >> col & 1 == 1 {
                    fill_rect(img, gx + col * s, y + row as i64 * s, s, s, color);
                }
            }
        }
    }
}

/// Draws `text` centred horizontally on `cx`.
pub fn text_centered(img: &mut RgbImage, cx: i64, y: i64, s: &str, scale: u32, color: Rgb<u8>) {
    text(img, cx - text_width(s, scale) as i64 / 2, y, s, scale, color);
}

/// Draws `text` reading bottom to top (rotated 90 degrees left), its first letter's bottom-left
/// corner at (x, y): for axis labels and the confusion matrix's column names.
pub fn text_vertical(img: &mut RgbImage, x: i64, y: i64, text: &str, scale: u32, color: Rgb<u8>) {
    let s = scale as i64;
    for (i, c) in text.chars().enumerate() {
        let gy = y - i as i64 * GLYPH as i64 * s;
        for (row, bits) in glyph(c).iter().enumerate() {
            for col in 0..8 {
                if bits >> col & 1 == 1 {
                    // Glyph (col, row) goes to (row, -col): the top of the letter faces left.
                    fill_rect(img, x + row as i64 * s, gy - (col + 1) * s, s, s, color);
                }
            }
        }
    }
}

/// The largest scale (up to `max_scale`, at least 1) at which `text` fits in `width` pixels.
pub fn fitting_scale(text: &str, width: u32, max_scale: u32) -> u32 {
    (1..=max_scale).rev().find(|&s| text_width(text, s) <= width).unwrap_or(1)
}

/// Shortens `text` with a trailing '~' so it fits in `width` pixels at `scale`.
pub fn clip_text(text: &str, width: u32, scale: u32) -> String {
    let max = (width / (GLYPH * scale)) as usize;
    if text.chars().count() <= max {
        text.to_string()
    } else {
        let mut s: String = text.chars().take(max.saturating_sub(1)).collect();
        s.push('~');
        s
    }
}

#[cfg(test)]
mod tests {
    use super::glyph;

    #[test]
    fn european_greek_and_hiragana_names_get_their_own_glyphs_and_the_rest_a_question_mark() {
        let question = glyph('?');
        for c in ['é', 'ü', 'ß', 'ñ', 'ø', 'Å', 'Ω', 'λ', 'あ'] {
            assert_ne!(glyph(c), question, "{c}");
            assert_ne!(glyph(c), [0; 8], "{c} draws something");
        }
        assert_ne!(glyph('é'), glyph('e'));
        for c in ['中', 'ł', '\u{202E}', '\u{7}', '\u{85}'] {
            assert_eq!(glyph(c), question, "{c:?}");
        }
    }
}
