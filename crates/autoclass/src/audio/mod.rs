//! Audio: decoding, resampling and the feature extractors.
//!
//! * [`decode`]: WAV, FLAC and MP3 files to float32 samples as soundfile reads them
//!   ([`decode::open`]), [`decode::to_mono`] to get the one channel the extractors take.
//! * [`mod@resample`]: a windowed-sinc resampler for audio at another rate than the model's.
//! * [`spectrogram`]: transformers' `audio_utils` (mel filter banks, Hann window, log-mel
//!   spectrogram).
//! * [`feature_extractors`]: [`AutoFeatureExtractor`] and the extractors
//!   (`Wav2Vec2FeatureExtractor` → `input_values`, `WhisperFeatureExtractor` →
//!   `input_features`).

pub mod decode;
pub mod feature_extractors;
mod numerics;
pub mod resample;
pub mod spectrogram;

pub use decode::{open, to_mono, Audio};
pub use feature_extractors::{
    AudioOptions, AutoFeatureExtractor, FeatureExtractor, FeatureExtractorSettings, PaddingSide,
};
pub use resample::resample;
