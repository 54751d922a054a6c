//! `image::decode::decode` on arbitrary bytes; a decoded image goes through a default
//! `ViTImageProcessor` (resize to 224x224, rescale, normalize).
#![no_main]

use autoclass::image::{decode, ImageProcessor};
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
        let Ok(img) = decode::decode(data, "fuzz") else {
            return;
        };
        let _ = decode::to_rgb(&img);
        let _ = decode::to_rgb_for_processor(&img);
        if let Ok(processor) = ImageProcessor::from_config("ViTImageProcessor", &serde_json::Map::new())
        {
            let _ = processor.preprocess(&[img]);
        }
    }
);
