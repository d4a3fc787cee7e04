//! Classify image files with a checkpoint from Rust code: the library's `Classifier`.
//!
//! cargo run --release --example classify -- runs/fashion-mnist/best.safetensors photo.jpg ...

use gpu_cnn::{Classifier, Device};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let Some(checkpoint) = args.next() else {
        anyhow::bail!("usage: classify CHECKPOINT IMAGE...");
    };
    let classifier = Classifier::load(&checkpoint, Device::Auto)?;
    eprintln!("{} classes, input {:?}, on {}", classifier.classes(), classifier.input_shape(), classifier.device());
    for path in args {
        match classifier.classify_path(&path) {
            Ok(top) => {
                let line: Vec<String> = top.iter().take(3).map(|p| format!("{} {:.4}", p.class, p.probability)).collect();
                println!("{path}: {}", line.join(", "));
            }
            Err(e) => eprintln!("error: {e:#}"),
        }
    }
    Ok(())
}
