//! Validates every shaders/*.wgsl with naga before the crate compiles: a bad shader fails the
//! build with file:line:col and naga's message instead of failing at run time on some adapter.

#[path = "src/backend/gpu/shader_check.rs"]
mod shader_check;

fn main() {
    println!("cargo::rerun-if-changed=shaders");
    println!("cargo::rerun-if-changed=src/backend/gpu/shader_check.rs");
    let mut paths: Vec<_> = std::fs::read_dir("shaders")
        .expect("shaders/ directory")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "wgsl"))
        .collect();
    paths.sort();
    // conv.wgsl and matmul.wgsl get shaders/common/gemm_tile.wgsl appended, as pipelines.rs
    // embeds them; an error past the shader's own lines is reported in the common file.
    let common_path = std::path::Path::new("shaders/common/gemm_tile.wgsl");
    println!("cargo::rerun-if-changed={}", common_path.display());
    let common = std::fs::read_to_string(common_path).expect("read the common GEMM tile");
    for path in paths {
        println!("cargo::rerun-if-changed={}", path.display());
        let own = std::fs::read_to_string(&path).expect("read shader");
        let appends_common = ["conv.wgsl", "matmul.wgsl"].iter().any(|name| path.ends_with(name));
        let source = if appends_common { format!("{own}{common}") } else { own.clone() };
        if let Err(e) = shader_check::check_wgsl(&source) {
            let own_lines = own.lines().count() as u32;
            let (file, line) = if e.line > own_lines { (common_path, e.line - own_lines) } else { (path.as_path(), e.line) };
            // One line per error; cargo prints it as an error and fails the build after the script.
            let message = e.message.replace('\n', " ");
            println!("cargo::error={}:{}:{}: {}", file.display(), line, e.column, message);
        }
    }
}
