//! The architecture text format: one layer a line, Keras-like words.
//!
//! ```text
//! # comments and blank lines are ignored
//! conv2d 32 3 relu                 # filters, kernel (3 or 3x5), activation relu|none
//! conv2d 16 3x3 stride=2 padding=same
//! maxpool 2                        # pool size (2 or 2x2); stride defaults to the size
//! maxpool 3 stride=2
//! flatten
//! dense 64 relu                    # units, activation relu|softmax|none
//! dense classes softmax            # as many units as the data set has classes
//! ```
//! Layer words are case-insensitive and Keras's class names work too (Conv2D, MaxPooling2D,
//! Flatten, Dense). Options: `stride=`, `padding=valid|same`, `activation=`.

use super::{Activation, LayerSpec, Padding, UNITS_FROM_CLASSES};
use anyhow::{anyhow, bail, Result};

fn parse_pair(text: &str, what: &str) -> Result<(usize, usize)> {
    let nums: Vec<_> = text.split(['x', 'X']).map(str::parse::<usize>).collect();
    match nums[..] {
        [Ok(a)] => Ok((a, a)),
        [Ok(a), Ok(b)] => Ok((a, b)),
        _ => bail!("{what} '{text}' is not a positive whole number or NxM"),
    }
}

fn parse_activation(text: &str) -> Result<Activation> {
    match text.to_ascii_lowercase().as_str() {
        "relu" => Ok(Activation::Relu),
        "softmax" => Ok(Activation::Softmax),
        "none" | "linear" => Ok(Activation::None),
        _ => bail!("unknown activation '{text}' (relu, softmax or none)"),
    }
}

fn parse_line(line: &str) -> Result<LayerSpec> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let kind = words[0].to_ascii_lowercase();
    let mut numbers = Vec::new();
    let mut activation = None;
    let mut stride = None;
    let mut padding = Padding::Valid;
    for word in &words[1..] {
        if let Some((key, value)) = word.split_once('=') {
            match key.to_ascii_lowercase().as_str() {
                "stride" | "strides" => stride = Some(parse_pair(value, "stride")?),
                "padding" => {
                    padding = match value.to_ascii_lowercase().as_str() {
                        "valid" => Padding::Valid,
                        "same" => Padding::Same,
                        _ => bail!("padding '{value}' is not valid or same"),
                    }
                }
                "activation" => activation = Some(parse_activation(value)?),
                _ => bail!("unknown option '{key}' (stride, padding, activation)"),
            }
        } else if word.trim_start_matches(['-', '+']).chars().next().is_some_and(|c| c.is_ascii_digit()) || word.eq_ignore_ascii_case("classes") {
            // A signed number is still a number (and refused below as not positive).
            numbers.push(*word);
        } else {
            activation = Some(parse_activation(word)?);
        }
    }
    let need = |count: usize, usage: &str| -> Result<()> {
        if numbers.len() != count {
            bail!("'{}' takes {count} number(s): {usage}", words[0]);
        }
        Ok(())
    };
    let positive = |text: &str, what: &str| -> Result<usize> {
        text.parse::<usize>().ok().filter(|&v| v > 0).ok_or_else(|| anyhow!("{what} '{text}' is not a positive whole number"))
    };
    Ok(match kind.as_str() {
        "conv2d" | "conv" => {
            need(2, "conv2d FILTERS KERNEL [relu|none] [stride=S] [padding=valid|same]")?;
            LayerSpec::Conv2D {
                filters: positive(numbers[0], "filters")?,
                kernel: parse_pair(numbers[1], "kernel size")?,
                stride: stride.unwrap_or((1, 1)),
                padding,
                activation: activation.unwrap_or(Activation::None),
            }
        }
        "maxpool" | "maxpool2d" | "maxpooling2d" | "max_pooling2d" => {
            need(1, "maxpool SIZE [stride=S]")?;
            if activation.is_some() || padding != Padding::Valid {
                bail!("maxpool takes only a size and stride=");
            }
            let size = parse_pair(numbers[0], "pool size")?;
            LayerSpec::MaxPool2D { size, stride: stride.unwrap_or(size) }
        }
        "flatten" => {
            need(0, "flatten")?;
            LayerSpec::Flatten
        }
        "dense" => {
            need(1, "dense UNITS|classes [relu|softmax|none]")?;
            if stride.is_some() || padding != Padding::Valid {
                bail!("dense takes no stride or padding");
            }
            let units = if numbers[0].eq_ignore_ascii_case("classes") { UNITS_FROM_CLASSES } else { positive(numbers[0], "units")? };
            LayerSpec::Dense { units, activation: activation.unwrap_or(Activation::None) }
        }
        _ => bail!("unknown layer '{}' (conv2d, maxpool, flatten, dense)", words[0]),
    })
}

/// Parses the text format; errors say the line number and what is wrong.
pub fn parse_arch(text: &str) -> Result<Vec<LayerSpec>> {
    let mut layers = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        layers.push(parse_line(line).map_err(|e| anyhow!("line {}: {e}: '{}'", i + 1, raw.trim()))?);
    }
    if layers.is_empty() {
        bail!("no layers found");
    }
    Ok(layers)
}

fn pair(p: (usize, usize)) -> String {
    if p.0 == p.1 {
        p.0.to_string()
    } else {
        format!("{}x{}", p.0, p.1)
    }
}

pub(super) fn activation_word(a: Activation) -> &'static str {
    match a {
        Activation::None => "none",
        Activation::Relu => "relu",
        Activation::Softmax => "softmax",
    }
}

/// Writes layers back in the text format (stored in checkpoints); parse_arch reads it back equal.
pub fn format_arch(layers: &[LayerSpec]) -> String {
    let mut out = String::new();
    for layer in layers {
        let line = match layer {
            LayerSpec::Conv2D { filters, kernel, stride, padding, activation } => {
                let mut l = format!("conv2d {filters} {} {}", pair(*kernel), activation_word(*activation));
                if *stride != (1, 1) {
                    l += &format!(" stride={}", pair(*stride));
                }
                if *padding == Padding::Same {
                    l += " padding=same";
                }
                l
            }
            LayerSpec::MaxPool2D { size, stride } => {
                let mut l = format!("maxpool {}", pair(*size));
                if stride != size {
                    l += &format!(" stride={}", pair(*stride));
                }
                l
            }
            LayerSpec::Flatten => "flatten".to_string(),
            LayerSpec::Dense { units: UNITS_FROM_CLASSES, activation } => format!("dense classes {}", activation_word(*activation)),
            LayerSpec::Dense { units, activation } => format!("dense {units} {}", activation_word(*activation)),
        };
        out += &line;
        out.push('\n');
    }
    out
}
