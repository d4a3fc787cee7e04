//! Parses and validates WGSL with naga. Shared by build.rs (a bad shader fails the build) and the
//! library (a test feeds it a broken shader), so both report the same file:line:col message.

use std::fmt;

/// Where a shader is wrong and why (the whole `source()` chain of naga's error, joined).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShaderError {
    /// 1-based; 0 when naga gives no location.
    pub line: u32,
    pub column: u32,
    pub message: String,
}

impl fmt::Display for ShaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.line, self.column, self.message)
    }
}

/// An error with its whole `source()` chain, each cause once: naga's top error says little
/// ("Entry point main is invalid") and wgpu's Display gives only the outer message.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let s = c.to_string();
        if !text.contains(&s) {
            text.push_str(": ");
            text.push_str(&s);
        }
        cause = c.source();
    }
    text
}

/// Ok when `source` parses and validates as a WGSL module.
pub fn check_wgsl(source: &str) -> Result<(), ShaderError> {
    let module = naga::front::wgsl::parse_str(source).map_err(|e| {
        let at = e.location(source);
        ShaderError { line: at.map_or(0, |l| l.line_number), column: at.map_or(0, |l| l.line_position), message: error_chain(&e) }
    })?;
    let mut validator = naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::empty());
    validator.validate(&module).map_err(|e| {
        let at = e.location(source);
        let mut message = error_chain(e.as_inner());
        for (_, context) in e.spans() {
            if !context.is_empty() {
                message.push_str(&format!(" [{context}]"));
            }
        }
        ShaderError { line: at.map_or(0, |l| l.line_number), column: at.map_or(0, |l| l.line_position), message }
    })?;
    Ok(())
}
