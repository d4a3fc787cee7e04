//! A CIFAR-10 batch file's bytes.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut set = gpu_cnn::data::ImageSet { height: 32, width: 32, channels: 3, ..Default::default() };
    let _ = gpu_cnn::data::cifar::parse_batch(data, std::path::Path::new("fuzz-batch.bin"), 10, &mut set);
});
