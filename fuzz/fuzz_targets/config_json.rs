//! `Config::from_json` (default overrides) on arbitrary bytes that parse as a JSON object.
#![no_main]

use autoclass::{Config, ConfigOverrides};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = serde_json::from_slice::<Map<String, Value>>(data) else {
        return;
    };
    if let Ok(config) = Config::from_json(raw, &ConfigOverrides::default()) {
        let _ = format!("{config:?}");
    }
});
