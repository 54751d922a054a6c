//! The restricted unpickler (`pickle::load` / `state_dict`) and `TorchStore::from_bytes` (zip or
//! legacy torch checkpoints) on arbitrary bytes; every tensor of a parsed store is loaded.
#![no_main]

use autoclass::candle_core::{DType, Device};
use autoclass::weights::pickle;
use autoclass::weights::TorchStore;
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    if let Ok((value, _used)) = pickle::load(data) {
        let _ = pickle::state_dict(value);
    }
    let _ = pickle::load_state_dict(data);
    if let Ok(store) = TorchStore::from_bytes(Path::new("fuzz.bin"), data.to_vec()) {
        let names: Vec<String> = store.names().map(str::to_string).collect();
        let _ = store.first_float_dtype();
        for name in &names {
            let _ = store.info(name);
            let _ = store.native_dtype(name);
            let _ = store.load(name, DType::F32, &Device::Cpu);
        }
    }
});
