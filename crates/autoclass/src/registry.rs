//! THE one list of architectures. Every string from a config file that names a model type is
//! matched here, and nowhere else.

use std::sync::Arc;

use serde_json::{Map, Value};

use crate::config::{Config, ModelConfig};
use crate::error::{Error, Result};
use crate::models::{
    bert, convnext, distilbert, hubert, layoutlmv2, layoutlmv3, swin, vit, wav2vec2, TaskModel,
};
use crate::weights::VarBuilder;

/// What a model is loaded for: the head on top of the base model (transformers' Auto classes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Task {
    /// The bare model (`AutoModel`).
    Base,
    /// `AutoModelForSequenceClassification`.
    SequenceClassification,
    /// `AutoModelForTokenClassification`.
    TokenClassification,
    /// `AutoModelForMaskedLM`.
    MaskedLm,
    /// `AutoModelForQuestionAnswering`.
    QuestionAnswering,
    /// `AutoModelForImageClassification`.
    ImageClassification,
    /// `AutoBackbone`: feature maps of chosen stages.
    Backbone,
    /// `AutoModelForAudioClassification`.
    AudioClassification,
    /// `AutoModelForCTC`: per-frame token logits for speech recognition.
    Ctc,
}

impl Task {
    /// Every task, in CLI order.
    pub const ALL: &'static [Task] = &[
        Task::Base,
        Task::SequenceClassification,
        Task::TokenClassification,
        Task::MaskedLm,
        Task::QuestionAnswering,
        Task::ImageClassification,
        Task::Backbone,
        Task::AudioClassification,
        Task::Ctc,
    ];

    /// The CLI name (`sequence-classification`).
    pub fn as_str(self) -> &'static str {
        match self {
            Task::Base => "base",
            Task::SequenceClassification => "sequence-classification",
            Task::TokenClassification => "token-classification",
            Task::MaskedLm => "masked-lm",
            Task::QuestionAnswering => "question-answering",
            Task::ImageClassification => "image-classification",
            Task::Backbone => "backbone",
            Task::AudioClassification => "audio-classification",
            Task::Ctc => "ctc",
        }
    }

    /// The transformers Auto class for this task.
    pub fn auto_class(self) -> &'static str {
        match self {
            Task::Base => "AutoModel",
            Task::SequenceClassification => "AutoModelForSequenceClassification",
            Task::TokenClassification => "AutoModelForTokenClassification",
            Task::MaskedLm => "AutoModelForMaskedLM",
            Task::QuestionAnswering => "AutoModelForQuestionAnswering",
            Task::ImageClassification => "AutoModelForImageClassification",
            Task::Backbone => "AutoBackbone",
            Task::AudioClassification => "AutoModelForAudioClassification",
            Task::Ctc => "AutoModelForCTC",
        }
    }
}

impl std::fmt::Display for Task {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Task {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Task::ALL
            .iter()
            .copied()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| {
                Error::input(format!(
                    "unknown task `{s}`; known tasks: {}",
                    Task::ALL
                        .iter()
                        .map(|t| t.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })
    }
}

/// One architecture: its model type, config class, tasks and how to build each task's model.
pub trait Architecture: Sync {
    /// `model_type` in config.json.
    fn model_type(&self) -> &'static str;
    /// transformers' config class name (`BertConfig`).
    fn config_class(&self) -> &'static str;
    /// transformers' `base_model_prefix` (`bert`): the name of the base model inside head models.
    fn base_model_prefix(&self) -> &'static str;
    /// transformers' `attribute_map`: (alias, canonical config.json name).
    fn attribute_map(&self) -> &'static [(&'static str, &'static str)] {
        &[]
    }
    /// The tokenizer class transformers maps this model type to (`TOKENIZER_MAPPING`), if any.
    fn tokenizer_class(&self) -> Option<&'static str> {
        None
    }
    /// The image processor class transformers maps this model type to (`IMAGE_PROCESSOR_MAPPING`), if any.
    fn image_processor_class(&self) -> Option<&'static str> {
        None
    }
    /// The feature extractor class transformers maps this model type to (`FEATURE_EXTRACTOR_MAPPING`), if any.
    fn feature_extractor_class(&self) -> Option<&'static str> {
        None
    }
    /// The processor class transformers maps this model type to (`PROCESSOR_MAPPING`), if any.
    fn processor_class(&self) -> Option<&'static str> {
        None
    }
    /// The tasks this architecture supports, with the transformers class for each.
    fn tasks(&self) -> &'static [(Task, &'static str)];
    /// Parses the typed model-specific config.
    fn parse_config(&self, raw: &Map<String, Value>) -> Result<Arc<dyn ModelConfig>>;
    /// Builds the model for `task`, reading weights through `vb`.
    fn load(&self, task: Task, config: &Config, vb: &VarBuilder) -> Result<Box<dyn TaskModel>>;

    /// The transformers class name for `task`, if supported.
    fn class_name(&self, task: Task) -> Option<&'static str> {
        self.tasks()
            .iter()
            .find(|(t, _)| *t == task)
            .map(|(_, c)| *c)
    }
}

/// Every architecture autoclass implements.
pub const ARCHITECTURES: &[&dyn Architecture] = &[
    &bert::Bert,
    &distilbert::DistilBert,
    &vit::Vit,
    &swin::Swin,
    &convnext::ConvNext,
    &wav2vec2::Wav2Vec2,
    &hubert::Hubert,
    &layoutlmv2::LayoutLMv2,
    &layoutlmv3::LayoutLMv3,
];

/// Every known model type.
pub fn model_types() -> Vec<&'static str> {
    ARCHITECTURES.iter().map(|a| a.model_type()).collect()
}

/// The architecture for `model_type`, or an error listing the known ones.
pub fn architecture(model_type: &str) -> Result<&'static dyn Architecture> {
    ARCHITECTURES
        .iter()
        .copied()
        .find(|a| a.model_type() == model_type)
        .ok_or_else(|| Error::UnknownModelType {
            found: model_type.to_string(),
            known: model_types(),
        })
}

/// Which preprocessor class a checkpoint's config.json implies, for preprocessor tables keyed by
/// class name: config.json's own `type_key` (e.g. `image_processor_type`), else the class the
/// registry maps its `model_type` to. On a miss, the error lists the model types that have one.
pub(crate) fn preprocessor_class_from_config(
    checkpoint: &crate::hub::Checkpoint,
    type_key: &str,
    kind: &str,
    mapping: fn(&dyn Architecture) -> Option<&'static str>,
    dict_path: &std::path::Path,
) -> Result<String> {
    let mut model_type = None;
    if let Some(config_path) = checkpoint.get("config.json")? {
        let config = crate::config::read_json_object(&config_path)?;
        if let Some(name) = config.get(type_key).and_then(Value::as_str) {
            return Ok(name.to_string());
        }
        model_type = config
            .get("model_type")
            .and_then(Value::as_str)
            .map(str::to_string);
        if let Some(class) = model_type
            .as_deref()
            .and_then(|t| architecture(t).ok())
            .and_then(mapping)
        {
            return Ok(class.to_string());
        }
    }
    let supported: Vec<&str> = ARCHITECTURES
        .iter()
        .filter(|a| mapping(**a).is_some())
        .map(|a| a.model_type())
        .collect();
    Err(Error::InvalidConfig {
        path: Some(dict_path.to_path_buf()),
        field: type_key.into(),
        reason: format!(
            "Unrecognized {kind} in {}. Should have a `{type_key}` key in its \
             preprocessor_config.json of config.json, or one of the following `model_type` keys \
             in its config.json: {}{}",
            checkpoint.name(),
            supported.join(", "),
            model_type
                .map(|t| format!(" (found model_type `{t}`)"))
                .unwrap_or_default()
        ),
    })
}

/// The error for an architecture that lacks `task`.
pub fn unsupported_task(arch: &dyn Architecture, task: Task) -> Error {
    Error::UnsupportedTask {
        model_type: arch.model_type().to_string(),
        config_class: arch.config_class().to_string(),
        auto_class: task.auto_class().to_string(),
        supported: arch.tasks().iter().map(|(t, _)| t.as_str()).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_types_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for arch in ARCHITECTURES {
            assert!(
                seen.insert(arch.model_type()),
                "duplicate {}",
                arch.model_type()
            );
            // Only processor-only entries (LayoutLMv2) may have no model.
            assert!(!arch.tasks().is_empty() || arch.processor_class().is_some());
        }
    }

    #[test]
    fn tasks_round_trip() {
        for task in Task::ALL {
            assert_eq!(task.as_str().parse::<Task>().ok(), Some(*task));
        }
        assert!("nope".parse::<Task>().is_err());
    }
}
