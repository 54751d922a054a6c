//! The HDF5 reader and the Keras weights reader (`tf::from_bytes`) on arbitrary bytes, then every
//! tensor loaded.
#![no_main]

use autoclass::candle_core::{DType, Device};
use autoclass::weights::{hdf5, tf};
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    if let Ok(file) = hdf5::File::parse(data) {
        let root = file.root();
        let _ = file.string_attribute(root, "layer_names");
        if let Ok(Some(addr)) = file.lookup("dense/model/dense/kernel:0") {
            let _ = file.dataset(addr);
        }
    }
    if let Ok(store) = tf::from_bytes(Path::new("fuzz.h5"), data) {
        let names: Vec<String> = store.names().map(str::to_string).collect();
        let _ = store.first_float_dtype();
        for name in &names {
            let _ = store.info(name);
            let _ = store.load(name, DType::F32, &Device::Cpu);
        }
    }
});
