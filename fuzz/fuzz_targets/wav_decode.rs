//! `audio::decode::decode` on arbitrary bytes (no extension hint: symphonia probes WAV, FLAC, MP3), then
//! `to_mono` with and without mixing.
#![no_main]

use autoclass::audio::decode;
use libfuzzer_sys::fuzz_target;

fuzz_target!(
    init: {
        // libfuzzer-sys's panic hook aborts on every panic, even one the library catches: the
        // library wraps third-party decoders in `catch_unwind` and turns their panics into
        // errors by design. Restore the default hook so only panics that escape the library
        // (libfuzzer-sys aborts on those after the unwind) count as crashes.
        let _ = std::panic::take_hook();
    },
    |data: &[u8]| {
        let Ok(audio) = decode::decode(data, "fuzz") else {
            return;
        };
        let _ = audio.frames();
        let _ = audio.duration_seconds();
        let _ = decode::to_mono(&audio, false);
        let _ = decode::to_mono(&audio, true);
    }
);
