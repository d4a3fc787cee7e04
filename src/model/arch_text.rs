//! The architecture text: Keras layer calls, one or more a line, or the classic one-layer-a-line
//! words.
//!
//! ```text
//! # comments and blank lines are ignored; class names are case-insensitive
//! Conv2D(32, (3, 3), padding="same", activation="relu") MaxPooling2D(2)
//! Conv2D(64, 3, strides=2) Flatten
//! Dense(64, "relu") Dense(classes, activation="softmax")   # classes: the data's class count
//! conv2d 32 3x3 relu stride=2 padding=same                  # the classic form: one layer a line
//! maxpool 2
//! dense classes softmax
//! ```
//! A line is in the classic form when it has no parenthesis and its second word is an argument
//! (a number, `classes` or `key=value`); otherwise it is a sequence of calls `Name` or
//! `Name(args)`. Either way each call becomes an [`Args`] that the layer's struct reads in its
//! own `from_args`, so both forms take the same arguments. `format_arch` writes Keras calls, one
//! layer a line, and `parse_arch` reads them back equal.

use super::LayerSpec;
use crate::layers::{Args, Value};
use anyhow::{anyhow, bail, Result};

/// Parses the text format; errors say the line number and what is wrong.
pub fn parse_arch(text: &str) -> Result<Vec<LayerSpec>> {
    let mut layers = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let at = |e: anyhow::Error| anyhow!("line {}: {e}: '{}'", i + 1, raw.trim());
        for call in parse_line(line).map_err(at)? {
            layers.push(LayerSpec::from_args(&call).map_err(at)?);
        }
    }
    if layers.is_empty() {
        bail!("no layers found");
    }
    Ok(layers)
}

/// Writes layers back as Keras calls, one a line (stored in checkpoints); parse_arch reads it
/// back equal.
pub fn format_arch(layers: &[LayerSpec]) -> String {
    layers.iter().map(|l| l.to_call() + "\n").collect()
}

fn is_argument_word(word: &str) -> bool {
    word.contains('=') || word.eq_ignore_ascii_case("classes") || word.starts_with(|c: char| c.is_ascii_digit() || c == '-' || c == '+')
}

fn parse_line(line: &str) -> Result<Vec<Args>> {
    let words: Vec<&str> = line.split_whitespace().collect();
    if !line.contains(['(', ')', '[', ']', ',', '"', '\'']) && words.get(1).is_some_and(|w| is_argument_word(w)) {
        return Ok(vec![classic_call(&words)]);
    }
    Calls { text: line.as_bytes(), pos: 0 }.all()
}

/// `conv2d 32 3x3 relu stride=2`: the first word is the class, then positional words and
/// `key=value` words.
fn classic_call(words: &[&str]) -> Args {
    let mut args = Args { class: words[0].to_string(), ..Default::default() };
    for word in &words[1..] {
        match word.split_once('=') {
            Some((key, value)) => args.keyword.push((key.to_string(), Value::Word(value.to_string()))),
            None => args.positional.push(Value::Word(word.to_string())),
        }
    }
    args
}

/// A cursor over one line of Keras calls.
struct Calls<'a> {
    text: &'a [u8],
    pos: usize,
}

impl Calls<'_> {
    fn skip_space(&mut self) {
        while self.text.get(self.pos).is_some_and(u8::is_ascii_whitespace) {
            self.pos += 1;
        }
    }
    fn peek(&mut self) -> Option<u8> {
        self.skip_space();
        self.text.get(self.pos).copied()
    }
    fn expect(&mut self, ch: u8) -> Result<()> {
        match self.peek() {
            Some(c) if c == ch => {
                self.pos += 1;
                Ok(())
            }
            Some(c) => bail!("expected '{}' at column {}, found '{}'", ch as char, self.pos + 1, c as char),
            None => bail!("expected '{}' at the end of the line", ch as char),
        }
    }
    /// A run of characters that are not separators: a name, a number, `3x3`.
    fn word(&mut self) -> Result<String> {
        self.skip_space();
        let start = self.pos;
        while self.text.get(self.pos).is_some_and(|c| !c.is_ascii_whitespace() && !b"(),=[]\"'".contains(c)) {
            self.pos += 1;
        }
        if start == self.pos {
            match self.text.get(self.pos) {
                Some(&c) => bail!("unexpected '{}' at column {}", c as char, self.pos + 1),
                None => bail!("a value is missing at the end of the line"),
            }
        }
        Ok(String::from_utf8_lossy(&self.text[start..self.pos]).into_owned())
    }
    fn all(mut self) -> Result<Vec<Args>> {
        let mut calls = Vec::new();
        while self.peek().is_some() {
            let class = self.word()?;
            if !class.starts_with(|c: char| c.is_ascii_alphabetic()) {
                bail!("'{class}' is not a layer name");
            }
            let mut args = Args { class, ..Default::default() };
            if self.peek() == Some(b'(') {
                self.pos += 1;
                self.arguments(&mut args)?;
            }
            calls.push(args);
        }
        Ok(calls)
    }
    /// `a, b, key=value)` after the opening parenthesis.
    fn arguments(&mut self, args: &mut Args) -> Result<()> {
        loop {
            if self.peek() == Some(b')') {
                self.pos += 1;
                return Ok(());
            }
            let value = self.value(0)?;
            if self.peek() == Some(b'=') {
                self.pos += 1;
                let Value::Word(key) = value else { bail!("{}: {value} cannot name an argument", args.class) };
                let v = self.value(0)?;
                args.keyword.push((key, v));
            } else if !args.keyword.is_empty() {
                bail!("{}: positional argument {value} after a keyword argument", args.class);
            } else {
                args.positional.push(value);
            }
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b')') => {}
                Some(c) => bail!("{}: expected ',' or ')' at column {}, found '{}'", args.class, self.pos + 1, c as char),
                None => bail!("{}: ')' is missing", args.class),
            }
        }
    }
    /// A value; tuples nest at most `MAX_NESTING` deep (a hostile line cannot exhaust the stack).
    fn value(&mut self, depth: usize) -> Result<Value> {
        const MAX_NESTING: usize = 4;
        match self.peek() {
            Some(q @ (b'"' | b'\'')) => {
                self.pos += 1;
                let start = self.pos;
                while self.text.get(self.pos).is_some_and(|&c| c != q) {
                    self.pos += 1;
                }
                let text = String::from_utf8_lossy(&self.text[start..self.pos]).into_owned();
                self.expect(q)?;
                Ok(Value::Text(text))
            }
            Some(open @ (b'(' | b'[')) => {
                if depth >= MAX_NESTING {
                    bail!("tuples nested more than {MAX_NESTING} deep at column {}", self.pos + 1);
                }
                self.pos += 1;
                let close = if open == b'(' { b')' } else { b']' };
                let mut items = Vec::new();
                loop {
                    if self.peek() == Some(close) {
                        self.pos += 1;
                        return Ok(Value::Tuple(items));
                    }
                    items.push(self.value(depth + 1)?);
                    match self.peek() {
                        Some(b',') => self.pos += 1,
                        Some(c) if c == close => {}
                        _ => bail!("expected ',' or '{}' in a tuple at column {}", close as char, self.pos + 1),
                    }
                }
            }
            _ => Ok(Value::Word(self.word()?)),
        }
    }
}
