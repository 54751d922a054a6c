//! # autoclass
//!
//! Hugging Face Transformers' AutoClass system in Rust: give it a checkpoint (a local folder,
//! or a Hub id found in the Hugging Face cache) and it reads the config files and builds the
//! right tokenizer and model by itself, with the same numbers as Python transformers.
//!
//! ```no_run
//! use autoclass::{AutoModelForSequenceClassification, AutoTokenizer, EncodeOptions};
//!
//! let tokenizer = AutoTokenizer::from_pretrained("distilbert/distilbert-base-uncased")?;
//! let encoding = tokenizer.encode("In a hole in the ground there lived a hobbit.", &EncodeOptions::default())?;
//! let model = AutoModelForSequenceClassification::from_pretrained("distilbert/distilbert-base-uncased")?;
//! let outputs = model.forward(&encoding.to_batch(model.device())?)?;
//! println!("{}", outputs.require("logits")?);
//! # Ok::<(), autoclass::Error>(())
//! ```
#![deny(unsafe_code)]

pub mod audio;
pub mod auto;
pub mod backbone;
pub mod config;
pub mod error;
pub mod hub;
pub mod image;
pub mod kernels;
pub mod models;
pub mod nn;
pub mod processing;
pub mod registry;
pub mod tokenization;
mod util;
pub mod weights;

pub use auto::{
    AutoBackbone, AutoModel, AutoModelForAudioClassification, AutoModelForCTC,
    AutoModelForImageClassification, AutoModelForMaskedLM, AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification, AutoModelForTokenClassification, LoadOptions, Model,
};
pub use config::{AutoConfig, Config, ConfigOverrides};
pub use error::{Error, Result};
pub use hub::{Checkpoint, Downloader, HttpDownloader, HubOptions};
pub use models::{Batch, ForwardOptions, ModelOutput};
pub use registry::{Architecture, Task, ARCHITECTURES};
pub use tokenization::{AutoTokenizer, EncodeOptions, Encoding, Padding, Tokenizer, Truncation};
pub use weights::{DTypeChoice, LoadReport};

/// Re-exported so callers can build tensors and pick devices without naming candle themselves.
pub use candle_core;

/// Prints the library's warnings (load reports, over-long inputs; transformers' `logger.warning`)
/// on stderr as `warning: ...`. Call once at start-up; a no-op if a logger is already installed.
pub fn log_warnings_to_stderr() {
    struct StderrLogger;
    impl log::Log for StderrLogger {
        fn enabled(&self, metadata: &log::Metadata) -> bool {
            metadata.level() <= log::Level::Warn
        }
        fn log(&self, record: &log::Record) {
            if self.enabled(record.metadata()) {
                eprintln!("warning: {}", record.args());
            }
        }
        fn flush(&self) {}
    }
    static LOGGER: StderrLogger = StderrLogger;
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(log::LevelFilter::Warn);
    }
}

/// The README's Rust examples, compiled as doctests so they stay true.
#[doc = include_str!("../../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

pub use crate::audio::{AudioOptions, AutoFeatureExtractor, FeatureExtractor};
pub use crate::image::{AutoImageProcessor, ImageProcessor};
pub use crate::processing::{AutoProcessor, Processor};
