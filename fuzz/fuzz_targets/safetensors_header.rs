//! `SafetensorsStore::open` on arbitrary bytes written to a file, then every tensor loaded, and
//! for 2-d f32 tables the first, last and one-past-the-last rows read by `gather_f32_rows`.
#![no_main]

use autoclass::candle_core::{DType, Device};
use autoclass::weights::SafetensorsStore;
use libfuzzer_sys::fuzz_target;
use std::path::PathBuf;

fn scratch_file() -> PathBuf {
    std::env::temp_dir().join(format!(
        "autoclass-fuzz-safetensors-{}.safetensors",
        std::process::id()
    ))
}

fuzz_target!(|data: &[u8]| {
    let path = scratch_file();
    if std::fs::write(&path, data).is_err() {
        return;
    }
    if let Ok(store) = SafetensorsStore::open(&path) {
        let names: Vec<String> = store.names().map(str::to_string).collect();
        let _ = store.first_float_dtype();
        for name in &names {
            let _ = store.info(name);
            let _ = store.load(name, DType::F32, &Device::Cpu);
            if let Some((rows, _)) = store.f32_table(name) {
                let _ = store.gather_f32_rows(name, &[0, rows.saturating_sub(1), 0, rows]);
            }
        }
    }
    let _ = std::fs::remove_file(&path);
});
