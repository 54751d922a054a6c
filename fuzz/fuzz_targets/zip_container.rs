//! The zip central-directory reader (`weights::zip::read_index`) on arbitrary bytes; the entries
//! it returns must lie inside the input and be readable.
#![no_main]

use autoclass::weights::zip;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = zip::is_zip(data);
    if let Ok(index) = zip::read_index(data) {
        for name in &index.names {
            if let Some(entry) = index.entries.get(name) {
                if let Some(bytes) = data.get(entry.data.clone()) {
                    let _ = zip::crc32(bytes) == entry.crc32;
                }
            }
        }
    }
});
