//! LayoutLMv2 (`models/layoutlmv2/configuration_layoutlmv2.py`): the config and the processor
//! mapping only. LayoutLMv2's model needs detectron2 in transformers; autoclass implements its
//! processor (tokenizer + OCR image processor) and the LayoutLMv3 model instead.

use std::any::Any;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::config::{parse_typed, Config, ModelConfig};
use crate::error::Result;
use crate::models::TaskModel;
use crate::registry::{unsupported_task, Architecture, Task};
use crate::weights::VarBuilder;

/// `LayoutLMv2Config`: the text-side fields (the visual backbone's detectron2 config is kept raw).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct LayoutLMv2Config {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Hidden size.
    pub hidden_size: usize,
    /// Number of layers.
    pub num_hidden_layers: usize,
    /// Number of attention heads.
    pub num_attention_heads: usize,
    /// Feed-forward inner size.
    pub intermediate_size: usize,
    /// Longest text input.
    pub max_position_embeddings: usize,
    /// Range of box coordinates.
    pub max_2d_position_embeddings: usize,
    /// Image side fed to the visual backbone.
    pub image_feature_pool_shape: Vec<usize>,
}

impl Default for LayoutLMv2Config {
    fn default() -> Self {
        LayoutLMv2Config {
            vocab_size: 30522,
            hidden_size: 768,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            intermediate_size: 3072,
            max_position_embeddings: 512,
            max_2d_position_embeddings: 1024,
            image_feature_pool_shape: vec![7, 7, 256],
        }
    }
}

impl ModelConfig for LayoutLMv2Config {
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// The registry entry for `model_type: "layoutlmv2"` (processor only).
pub struct LayoutLMv2;

impl Architecture for LayoutLMv2 {
    fn model_type(&self) -> &'static str {
        "layoutlmv2"
    }
    fn config_class(&self) -> &'static str {
        "LayoutLMv2Config"
    }
    fn base_model_prefix(&self) -> &'static str {
        "layoutlmv2"
    }
    fn tokenizer_class(&self) -> Option<&'static str> {
        Some("LayoutLMv2Tokenizer")
    }
    fn image_processor_class(&self) -> Option<&'static str> {
        Some("LayoutLMv2ImageProcessor")
    }
    fn processor_class(&self) -> Option<&'static str> {
        Some("LayoutLMv2Processor")
    }
    fn tasks(&self) -> &'static [(Task, &'static str)] {
        &[]
    }
    fn parse_config(&self, raw: &Map<String, Value>) -> Result<Arc<dyn ModelConfig>> {
        let cfg: LayoutLMv2Config = parse_typed(raw)?;
        Ok(Arc::new(cfg))
    }
    fn load(&self, task: Task, _config: &Config, _vb: &VarBuilder) -> Result<Box<dyn TaskModel>> {
        Err(unsupported_task(self, task))
    }
}
