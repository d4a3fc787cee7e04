//! IDX image and label files, raw: any bytes give Ok or an error, never a panic or a huge allocation.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let path = std::path::Path::new("fuzz-idx");
    let _ = gpu_cnn::data::idx::read_images_from(data, path);
    let _ = gpu_cnn::data::idx::read_labels_from(data, path, 10);
});
