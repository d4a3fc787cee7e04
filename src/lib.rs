//! gpu-cnn: train small convolutional image classifiers on any GPU (through wgpu) or the CPU.

pub mod atomic_file;
pub mod augment;
pub mod backend;
pub mod bench;
pub mod checkpoint;
pub mod class_weight;
pub mod commands;
pub mod data;
pub mod device;
pub mod fallible;
pub mod history;
pub mod image_pipeline;
pub mod model;
pub mod network;
pub mod predict;
pub mod report;
pub mod review;
pub mod rng;
pub mod run_dir;
pub mod system_info;
pub mod train;
