//! The one list of shaders and the common files each one includes. WGSL has no includes: a
//! shader is its own file followed by its common files. build.rs composes every shader with this
//! module, validates it with naga and writes it to `$OUT_DIR/shaders/`; pipelines.rs embeds those
//! composed files, so what runs is exactly what was validated.

use std::path::Path;

/// Every shader file (under shaders/) with the common files appended to it, in order.
pub const SHADERS: &[(&str, &[&str])] = &[
    ("conv.wgsl", &["common/linear_index.wgsl", "common/gemm_tile.wgsl"]),
    ("matmul.wgsl", &["common/linear_index.wgsl", "common/gemm_tile.wgsl"]),
    ("depthwise.wgsl", &["common/linear_index.wgsl"]),
    ("pool.wgsl", &["common/linear_index.wgsl"]),
    ("elementwise.wgsl", &["common/linear_index.wgsl"]),
    ("activation.wgsl", &["common/linear_index.wgsl"]),
    ("loss.wgsl", &["common/linear_index.wgsl"]),
    ("adam.wgsl", &["common/linear_index.wgsl"]),
    ("adamw.wgsl", &["common/linear_index.wgsl"]),
    ("sgd.wgsl", &["common/linear_index.wgsl"]),
    ("rmsprop.wgsl", &["common/linear_index.wgsl"]),
    ("data.wgsl", &["common/linear_index.wgsl"]),
    ("batchnorm.wgsl", &["common/linear_index.wgsl"]),
    ("dropout.wgsl", &["common/linear_index.wgsl"]),
];

/// A composed shader: its text and, for mapping a line back, the file each run of lines came from.
pub struct Composed {
    pub text: String,
    /// (file under shaders/, number of lines), in the order they were joined.
    pub parts: Vec<(String, u32)>,
}

impl Composed {
    /// The file and 1-based line that line `line` of the composed text came from.
    pub fn locate(&self, line: u32) -> (&str, u32) {
        let mut first = 1;
        for (file, lines) in &self.parts {
            if line < first + lines {
                return (file, line - first + 1);
            }
            first += lines;
        }
        let (file, _) = self.parts.last().expect("a shader has at least its own file");
        (file, line)
    }
}

/// `name` from `shader_dir` followed by its common files; Err names a file that cannot be read.
pub fn compose(shader_dir: &Path, name: &str, includes: &[&str]) -> Result<Composed, String> {
    let mut text = String::new();
    let mut parts = Vec::new();
    for file in std::iter::once(&name).chain(includes) {
        let path = shader_dir.join(file);
        let mut own = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        if !own.ends_with('\n') {
            own.push('\n');
        }
        parts.push((file.to_string(), own.lines().count() as u32));
        text.push_str(&own);
    }
    Ok(Composed { text, parts })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locate_maps_composed_lines_back_to_their_files() {
        let composed = Composed { text: String::new(), parts: vec![("conv.wgsl".into(), 10), ("common/a.wgsl".into(), 5), ("common/b.wgsl".into(), 3)] };
        assert_eq!(composed.locate(1), ("conv.wgsl", 1));
        assert_eq!(composed.locate(10), ("conv.wgsl", 10));
        assert_eq!(composed.locate(11), ("common/a.wgsl", 1));
        assert_eq!(composed.locate(16), ("common/b.wgsl", 1));
        assert_eq!(composed.locate(18), ("common/b.wgsl", 3));
    }

    #[test]
    fn every_shader_composes_with_its_own_file_first() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders");
        for (name, includes) in SHADERS {
            let composed = compose(&dir, name, includes).unwrap();
            let own = std::fs::read_to_string(dir.join(name)).unwrap();
            assert!(composed.text.starts_with(&own), "{name}");
            assert_eq!(composed.parts.len(), 1 + includes.len());
            let total: u32 = composed.parts.iter().map(|(_, lines)| lines).sum();
            assert_eq!(total as usize, composed.text.lines().count(), "{name}");
        }
    }
}
