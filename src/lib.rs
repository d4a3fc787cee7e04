//! gpu-cnn: train small convolutional image classifiers on any GPU (through wgpu) or the CPU.

pub mod backend;
pub mod model;
