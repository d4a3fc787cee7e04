//! A layer call as the arch text wrote it, before any layer looked at it: the class name,
//! positional and keyword arguments (`Conv2D(32, (3, 3), padding="same")`, or the classic
//! `conv2d 32 3x3 relu padding=same`). Each layer struct reads its own arguments from it in
//! its `from_args`.

use anyhow::{anyhow, bail, Result};

/// One argument value: a bare word (a number, `relu`, `classes`, `3x3`), a quoted string, or a
/// tuple `(3, 3)` / `[3, 3]`.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Word(String),
    Text(String),
    Tuple(Vec<Value>),
}

impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::Word(w) => write!(f, "{w}"),
            Value::Text(t) => write!(f, "\"{t}\""),
            Value::Tuple(items) => write!(f, "({})", items.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(", ")),
        }
    }
}

impl Value {
    /// The text of a word or a quoted string.
    pub fn text(&self) -> Option<&str> {
        match self {
            Value::Word(w) | Value::Text(w) => Some(w),
            Value::Tuple(_) => None,
        }
    }

    /// A whole number of at least 1.
    pub fn positive(&self, what: &str) -> Result<usize> {
        match self {
            Value::Word(w) => w.parse::<usize>().ok().filter(|&v| v > 0).ok_or_else(|| anyhow!("{what} '{w}' is not a positive whole number")),
            _ => bail!("{what} {self} is not a positive whole number"),
        }
    }

    /// A size or stride: `3`, `3x5`, `(3, 5)` or `[3, 5]`.
    pub fn pair(&self, what: &str) -> Result<(usize, usize)> {
        let bad = || anyhow!("{what} {self} is not a positive whole number, NxM or (N, M)");
        match self {
            Value::Word(w) => {
                let nums: Vec<_> = w.split(['x', 'X']).map(|p| p.parse::<usize>().ok().filter(|&v| v > 0)).collect();
                match nums[..] {
                    [Some(a)] => Ok((a, a)),
                    [Some(a), Some(b)] => Ok((a, b)),
                    _ => Err(bad()),
                }
            }
            Value::Tuple(items) => match &items[..] {
                [a] => a.positive(what).map(|a| (a, a)),
                [a, b] => Ok((a.positive(what)?, b.positive(what)?)),
                _ => Err(bad()),
            },
            Value::Text(_) => Err(bad()),
        }
    }

    /// Python's `True` / `False` (any case), as in `use_bias=False`.
    pub fn boolean(&self, what: &str) -> Result<bool> {
        match self.text().map(|t| t.to_ascii_lowercase()).as_deref() {
            Some("true") => Ok(true),
            Some("false") => Ok(false),
            _ => bail!("{what} {self} is not True or False"),
        }
    }

    /// A finite number (a rate, a momentum).
    pub fn number(&self, what: &str) -> Result<f64> {
        self.text().and_then(|t| t.parse::<f64>().ok()).filter(|v| v.is_finite()).ok_or_else(|| anyhow!("{what} {self} is not a number"))
    }
}

/// A layer call: `Class(positional..., key=value...)`.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Args {
    pub class: String,
    pub positional: Vec<Value>,
    /// Keyword names as written; look them up with `keyword` (case-insensitive).
    pub keyword: Vec<(String, Value)>,
}

impl Args {
    /// Refuses keywords outside `allowed` (lower case) and keywords given twice.
    pub fn check_keywords(&self, allowed: &[&str]) -> Result<()> {
        for (i, (key, _)) in self.keyword.iter().enumerate() {
            let k = key.to_ascii_lowercase();
            if !allowed.contains(&k.as_str()) {
                let list = if allowed.is_empty() { "none".to_string() } else { allowed.join(", ") };
                bail!("{} has no argument '{key}' (it takes: {list})", self.class);
            }
            if self.keyword[..i].iter().any(|(other, _)| other.eq_ignore_ascii_case(key)) {
                bail!("{}: argument '{key}' is given twice", self.class);
            }
        }
        Ok(())
    }

    /// The value of the first of `names` given as a keyword (case-insensitive).
    pub fn keyword(&self, names: &[&str]) -> Option<&Value> {
        self.keyword.iter().find(|(k, _)| names.iter().any(|n| k.eq_ignore_ascii_case(n))).map(|(_, v)| v)
    }

    /// Refuses more than `max` positional arguments; `usage` shows the call.
    pub fn check_positional(&self, max: usize, usage: &str) -> Result<()> {
        if self.positional.len() > max {
            bail!("{} takes at most {max} positional argument(s): {usage}", self.class);
        }
        Ok(())
    }

    /// The `index`-th positional argument or the keyword `name`, not both.
    pub fn get(&self, index: usize, names: &[&str]) -> Result<Option<&Value>> {
        match (self.positional.get(index), self.keyword(names)) {
            (Some(_), Some(_)) => bail!("{}: '{}' is given both by position and as a keyword", self.class, names[0]),
            (p, k) => Ok(p.or(k)),
        }
    }
}
