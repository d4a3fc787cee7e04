//! Composes every shader (its own file + the common files shader_sources.rs lists), validates it
//! with naga and writes it to `$OUT_DIR/shaders/` for pipelines.rs to embed. A bad shader fails
//! the build with file:line:col and naga's message instead of failing at run time on some adapter.

#[path = "src/backend/gpu/shader_check.rs"]
mod shader_check;
#[path = "src/backend/gpu/shader_sources.rs"]
mod shader_sources;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn main() {
    println!("cargo::rerun-if-changed=shaders");
    println!("cargo::rerun-if-changed=src/backend/gpu/shader_check.rs");
    println!("cargo::rerun-if-changed=src/backend/gpu/shader_sources.rs");
    let shader_dir = Path::new("shaders");
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("shaders");
    std::fs::create_dir_all(&out_dir).expect("create $OUT_DIR/shaders");
    // A shader file the list forgets would never be validated or embedded: refuse it.
    for entry in std::fs::read_dir(shader_dir).expect("shaders/ directory") {
        let path = entry.expect("dir entry").path();
        println!("cargo::rerun-if-changed={}", path.display());
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if path.extension().is_some_and(|x| x == "wgsl") && !shader_sources::SHADERS.iter().any(|(s, _)| *s == name) {
            println!("cargo::error={}: not listed in src/backend/gpu/shader_sources.rs SHADERS", path.display());
        }
    }
    // The embedded list: (file name, composed source), one entry per shader.
    let mut list = String::from("/// Every shader as composed and validated by build.rs: (file name, WGSL source).\n");
    writeln!(list, "pub const ALL_SHADERS: [(&str, &str); {}] = [", shader_sources::SHADERS.len()).unwrap();
    for (name, includes) in shader_sources::SHADERS {
        for file in *includes {
            println!("cargo::rerun-if-changed={}", shader_dir.join(file).display());
        }
        let composed = match shader_sources::compose(shader_dir, name, includes) {
            Ok(c) => c,
            Err(e) => {
                println!("cargo::error={e}");
                continue;
            }
        };
        if let Err(e) = shader_check::check_wgsl(&composed.text) {
            let (file, line) = composed.locate(e.line);
            // One line per error; cargo prints it as an error and fails the build after the script.
            let message = e.message.replace('\n', " ");
            println!("cargo::error={}:{}:{}: {}", shader_dir.join(file).display(), line, e.column, message);
        }
        let out = out_dir.join(name);
        std::fs::write(&out, &composed.text).expect("write a composed shader");
        writeln!(list, "    ({name:?}, include_str!({:?})),", out.display().to_string()).unwrap();
    }
    list.push_str("];\n");
    std::fs::write(out_dir.join("all_shaders.rs"), list).expect("write the shader list");
}
