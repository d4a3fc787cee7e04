//! Exporting a trained checkpoint for other runtimes (`gpu-cnn export`).

pub mod onnx;
pub mod onnx_proto;
