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
    for path in paths {
        println!("cargo::rerun-if-changed={}", path.display());
        let source = std::fs::read_to_string(&path).expect("read shader");
        if let Err(e) = shader_check::check_wgsl(&source) {
            // One line per error; cargo prints it as an error and fails the build after the script.
            let message = e.message.replace('\n', " ");
            println!("cargo::error={}:{}:{}: {}", path.display(), e.line, e.column, message);
        }
    }
}
