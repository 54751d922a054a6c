//! AutoProcessor: a processor class when the checkpoint names one (or its model type maps to
//! one), else the tokenizer, image processor or feature extractor alone — transformers'
//! `models/auto/processing_auto.py` order.

pub mod layout;

use serde_json::Value;

use crate::audio::FeatureExtractor;
use crate::config::read_json_object;
use crate::error::{Error, Result};
use crate::hub::{Checkpoint, HubOptions};
use crate::image::ImageProcessor;
use crate::tokenization::ctc::Wav2Vec2CtcTokenizer;
use crate::tokenization::Tokenizer;
use layout::{LayoutLMv2Processor, LayoutLMv3Processor};

/// `Wav2Vec2Processor`: a feature extractor for the audio and a CTC tokenizer for the transcript.
#[derive(Debug)]
pub struct Wav2Vec2Processor {
    /// The feature extractor (`Wav2Vec2FeatureExtractor`).
    pub feature_extractor: FeatureExtractor,
    /// The CTC tokenizer (`Wav2Vec2CTCTokenizer`).
    pub tokenizer: Wav2Vec2CtcTokenizer,
}

/// What `AutoProcessor.from_pretrained` returns.
#[derive(Debug)]
#[non_exhaustive]
pub enum Processor {
    /// A `Wav2Vec2Processor`.
    Wav2Vec2(Box<Wav2Vec2Processor>),
    /// A `LayoutLMv2Processor`.
    LayoutLMv2(Box<LayoutLMv2Processor>),
    /// A `LayoutLMv3Processor`.
    LayoutLMv3(Box<LayoutLMv3Processor>),
    /// No processor class: the tokenizer alone.
    Tokenizer(Box<Tokenizer>),
    /// No processor class: the image processor alone.
    ImageProcessor(Box<ImageProcessor>),
    /// No processor class: the feature extractor alone.
    FeatureExtractor(Box<FeatureExtractor>),
}

impl Processor {
    /// The transformers class this stands for (`Wav2Vec2Processor`, or the component's class).
    pub fn class_name(&self) -> &str {
        match self {
            Processor::Wav2Vec2(_) => "Wav2Vec2Processor",
            Processor::LayoutLMv2(_) => "LayoutLMv2Processor",
            Processor::LayoutLMv3(_) => "LayoutLMv3Processor",
            Processor::Tokenizer(t) => t.class_name(),
            Processor::ImageProcessor(p) => p.class_name(),
            Processor::FeatureExtractor(f) => f.class_name(),
        }
    }

    /// Builds the processor of a resolved checkpoint.
    pub fn from_checkpoint(checkpoint: &Checkpoint) -> Result<Self> {
        if let Some(class) = processor_class(checkpoint)? {
            return match class.as_str() {
                "Wav2Vec2Processor" => Ok(Processor::Wav2Vec2(Box::new(Wav2Vec2Processor {
                    feature_extractor: FeatureExtractor::from_checkpoint(checkpoint)?,
                    tokenizer: Wav2Vec2CtcTokenizer::from_checkpoint(checkpoint)?,
                }))),
                "LayoutLMv2Processor" => Ok(Processor::LayoutLMv2(Box::new(
                    LayoutLMv2Processor::from_checkpoint(checkpoint)?,
                ))),
                "LayoutLMv3Processor" => Ok(Processor::LayoutLMv3(Box::new(
                    LayoutLMv3Processor::from_checkpoint(checkpoint)?,
                ))),
                other => Err(Error::input(format!(
                    "{}: processor class `{other}` is not supported yet; known processors: {}",
                    checkpoint.name(),
                    KNOWN_PROCESSORS.join(", ")
                ))),
            };
        }
        // No processor: the first component that loads, in transformers' order.
        if let Ok(t) = Tokenizer::from_checkpoint(checkpoint) {
            return Ok(Processor::Tokenizer(Box::new(t)));
        }
        if let Ok(p) = ImageProcessor::from_checkpoint(checkpoint) {
            return Ok(Processor::ImageProcessor(Box::new(p)));
        }
        if let Ok(f) = FeatureExtractor::from_checkpoint(checkpoint) {
            return Ok(Processor::FeatureExtractor(Box::new(f)));
        }
        Err(Error::input(format!(
            "Unrecognized processing class in {}. Can't instantiate a processor, a tokenizer, an image processor or a feature extractor for this model.",
            checkpoint.name()
        )))
    }
}

/// Processor classes autoclass implements.
const KNOWN_PROCESSORS: &[&str] = &[
    "Wav2Vec2Processor",
    "LayoutLMv2Processor",
    "LayoutLMv3Processor",
];

/// `processor_class` from processor_config.json, preprocessor_config.json, tokenizer_config.json
/// or config.json, in that order, else the registry's mapping for the model type.
fn processor_class(checkpoint: &Checkpoint) -> Result<Option<String>> {
    for file in [
        "processor_config.json",
        "preprocessor_config.json",
        "tokenizer_config.json",
        "config.json",
    ] {
        if let Some(path) = checkpoint.get(file)? {
            let raw = read_json_object(&path)?;
            if let Some(Value::String(class)) = raw.get("processor_class") {
                return Ok(Some(class.trim_end_matches("Fast").to_string()));
            }
        }
    }
    let Some(path) = checkpoint.get("config.json")? else {
        return Ok(None);
    };
    let raw = read_json_object(&path)?;
    Ok(raw
        .get("model_type")
        .and_then(Value::as_str)
        .and_then(|t| crate::registry::architecture(t).ok())
        .and_then(|a| a.processor_class())
        .map(str::to_string))
}

/// `AutoProcessor`.
pub struct AutoProcessor;

impl AutoProcessor {
    /// `AutoProcessor.from_pretrained(name_or_path)`.
    pub fn from_pretrained(name_or_path: &str) -> Result<Processor> {
        Self::from_pretrained_with(name_or_path, &HubOptions::default())
    }

    /// `AutoProcessor.from_pretrained(name_or_path, revision=..., subfolder=...)`.
    pub fn from_pretrained_with(name_or_path: &str, hub: &HubOptions) -> Result<Processor> {
        Processor::from_checkpoint(&Checkpoint::resolve(name_or_path, hub)?)
    }
}
