//! Vit (placeholder: being implemented).

use std::sync::Arc;

use serde_json::{Map, Value};

use crate::config::{Config, ModelConfig};
use crate::error::{Error, Result};
use crate::models::TaskModel;
use crate::registry::{Architecture, Task};
use crate::weights::VarBuilder;

/// The registry entry for `model_type: "vit"`.
pub struct Vit;

impl Architecture for Vit {
    fn model_type(&self) -> &'static str {
        "vit"
    }
    fn config_class(&self) -> &'static str {
        "ViTConfig"
    }
    fn base_model_prefix(&self) -> &'static str {
        "vit"
    }
    fn image_processor_class(&self) -> Option<&'static str> {
        Some("ViTImageProcessor")
    }
    fn tasks(&self) -> &'static [(Task, &'static str)] {
        &[(Task::Base, "ViTModel"), (Task::ImageClassification, "ViTForImageClassification")]
    }
    fn parse_config(&self, _raw: &Map<String, Value>) -> Result<Arc<dyn ModelConfig>> {
        Err(Error::config("model_type", "vit is not implemented yet"))
    }
    fn load(&self, _task: Task, _config: &Config, _vb: &VarBuilder) -> Result<Box<dyn TaskModel>> {
        Err(Error::config("model_type", "vit is not implemented yet"))
    }
}
