//! gpu-cnn: train small convolutional image classifiers on any GPU (through wgpu) or the CPU.

pub mod augment;
pub mod backend;
pub mod bench;
pub mod checkpoint;
pub mod commands;
pub mod data;
pub mod device;
pub mod image_pipeline;
pub mod model;
pub mod network;
pub mod predict;
pub mod report;
pub mod review;
pub mod rng;
pub mod train;
