//! The bounded MessagePack parser and the Flax reader (`flax::from_bytes`) on arbitrary bytes,
//! then every tensor loaded.
#![no_main]

use autoclass::candle_core::{DType, Device};
use autoclass::weights::{flax, msgpack};
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let _ = msgpack::parse(data);
    if let Ok(store) = flax::from_bytes(Path::new("fuzz.msgpack"), data) {
        let names: Vec<String> = store.names().map(str::to_string).collect();
        let _ = store.first_float_dtype();
        for name in &names {
            let _ = store.info(name);
            let _ = store.load(name, DType::F32, &Device::Cpu);
        }
    }
});
