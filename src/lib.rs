//! gpu-cnn: train small convolutional image classifiers on any GPU (through wgpu) or the CPU,
//! and use them from Rust code, over HTTP (`gpu-cnn serve`) or from any ONNX runtime
//! (`gpu-cnn export`).
//!
//! Train a model from code, then classify images with it:
//!
//! ```
//! use gpu_cnn::data::synthetic::{generate, SyntheticSpec};
//! use gpu_cnn::{Classifier, Device, TrainConfig, Trainer};
//!
//! # fn main() -> anyhow::Result<()> {
//! // A small built-in data set (coloured squares on noise); or data::load(...) / a folder.
//! let data = generate(&SyntheticSpec { train: 256, test: 64, ..Default::default() }, 0);
//! let dir = std::env::temp_dir().join(format!("gpu-cnn-doc-{}", std::process::id()));
//! let config = TrainConfig { epochs: 1, device: Device::Cpu, out_dir: Some(dir.clone()), ..Default::default() };
//! let trained = Trainer::new(gpu_cnn::model::seed_layers(), data, config)
//!     .on_epoch(|e| println!("epoch {}: val_accuracy {:.3}", e.epoch, e.val_accuracy))
//!     .fit()?;
//! assert_eq!(trained.history.len(), 1);
//!
//! // Later, in the program that uses the model: load the checkpoint training wrote.
//! let classifier = Classifier::load(dir.join("last.safetensors"), Device::Cpu)?;
//! let image = gpu_cnn::image::DynamicImage::new_rgb8(64, 48); // or image::open("photo.jpg")?
//! let top = classifier.classify(&image)?;
//! println!("{} ({:.1}%)", top[0].class, top[0].probability * 100.0);
//! assert!(top.windows(2).all(|w| w[0].probability >= w[1].probability));
//! # std::fs::remove_dir_all(&dir).ok();
//! # Ok(())
//! # }
//! ```
//!
//! [`Classifier`] is `Send + Sync` (share it in an `Arc`); images are preprocessed exactly as
//! `gpu-cnn predict` does. [`Trainer`] runs the same training loop as `gpu-cnn train`.

/// `eprintln!` that never panics: a progress line, note or warning that cannot be written
/// (stderr closed, `2>/dev/full`) is dropped and the command goes on; its results are in files
/// and on stdout, whose writes are checked.
#[macro_export]
macro_rules! stderr_line {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

pub mod atomic_file;
pub mod augment;
pub mod backend;
pub mod batchnorm_fold;
pub mod bench;
pub mod callbacks;
pub mod checkpoint;
pub mod class_weight;
pub mod classifier;
pub mod commands;
pub mod data;
pub mod decode_budget;
pub mod device;
pub mod export;
pub mod fallible;
pub mod history;
pub mod image_pipeline;
pub mod inference;
pub mod interrupt;
pub mod layers;
pub mod model;
pub mod network;
pub mod optimizer;
pub mod predict;
pub mod report;
pub mod review;
pub mod rng;
pub mod run_dir;
pub mod schedule;
pub mod serve;
pub mod system_info;
pub mod train;
pub mod trainer;

pub use classifier::{Classifier, Device, Prediction};
/// The `image` crate gpu-cnn decodes with, so callers build `DynamicImage`s of the same version.
pub use image;
pub use trainer::{RunDir, RunPlan, TrainConfig, TrainedModel, Trainer};
