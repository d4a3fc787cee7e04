//! Architecture text, resolved for an input taken from the first bytes, then summarised.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let input = (data[0] as usize + 1, data[1] as usize + 1, data[2] as usize % 4 + 1);
    let Ok(text) = std::str::from_utf8(&data[3..]) else { return };
    if let Ok(layers) = gpu_cnn::model::parse_arch(text) {
        if let Ok(model) = gpu_cnn::model::Model::new(&layers, input) {
            let _ = gpu_cnn::model::summary_table(&model);
            let _ = model.memory_bytes(1 << 20);
        }
    }
});
