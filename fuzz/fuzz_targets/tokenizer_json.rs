//! `AutoTokenizer::from_pretrained` on a folder holding only the bytes as tokenizer.json, then
//! encoding a fixed string and a string taken from the input's tail.
#![no_main]

use autoclass::{AutoTokenizer, EncodeOptions};
use libfuzzer_sys::fuzz_target;
use std::path::PathBuf;

fn scratch_dir() -> PathBuf {
    std::env::temp_dir().join(format!("autoclass-fuzz-tokenizer-{}", std::process::id()))
}

fuzz_target!(
    init: {
        // libfuzzer-sys's panic hook aborts on every panic, even one the library catches: the
        // library wraps third-party decoders in `catch_unwind` and turns their panics into
        // errors by design. Restore the default hook so only panics that escape the library
        // (libfuzzer-sys aborts on those after the unwind) count as crashes.
        let _ = std::panic::take_hook();
    },
    |data: &[u8]| {
        let dir = scratch_dir();
        if std::fs::create_dir_all(&dir).is_err() {
            return;
        }
        if std::fs::write(dir.join("tokenizer.json"), data).is_err() {
            return;
        }
        let Some(dir_str) = dir.to_str() else { return };
        let Ok(tokenizer) = AutoTokenizer::from_pretrained(dir_str) else {
            return;
        };
        let options = EncodeOptions::default();
        let _ = tokenizer.encode("Hello, world! héllo 123", &options);
        let tail_start = data.len().saturating_sub(64);
        let tail = String::from_utf8_lossy(&data[tail_start..]);
        let _ = tokenizer.encode(&tail, &options);
        let _ = tokenizer.encode_pair("a b", &tail, &options);
    }
);
