//! A checkpoint: safetensors header, metadata (architecture, input, history, ...) and tensors.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = gpu_cnn::checkpoint::load_bytes(data, std::path::Path::new("fuzz.safetensors"));
});
