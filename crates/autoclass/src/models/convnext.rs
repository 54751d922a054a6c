//! ConvNext (placeholder: being implemented).

use std::sync::Arc;

use serde_json::{Map, Value};

use crate::config::{Config, ModelConfig};
use crate::error::{Error, Result};
use crate::models::TaskModel;
use crate::registry::{Architecture, Task};
use crate::weights::VarBuilder;

/// The registry entry for `model_type: "convnext"`.
pub struct ConvNext;

impl Architecture for ConvNext {
    fn model_type(&self) -> &'static str {
        "convnext"
    }
    fn config_class(&self) -> &'static str {
        "ConvNextConfig"
    }
    fn base_model_prefix(&self) -> &'static str {
        "convnext"
    }
    fn image_processor_class(&self) -> Option<&'static str> {
        Some("ConvNextImageProcessor")
    }
    fn tasks(&self) -> &'static [(Task, &'static str)] {
        &[(Task::Base, "ConvNextModel"), (Task::ImageClassification, "ConvNextForImageClassification"), (Task::Backbone, "ConvNextBackbone")]
    }
    fn parse_config(&self, _raw: &Map<String, Value>) -> Result<Arc<dyn ModelConfig>> {
        Err(Error::config("model_type", "convnext is not implemented yet"))
    }
    fn load(&self, _task: Task, _config: &Config, _vb: &VarBuilder) -> Result<Box<dyn TaskModel>> {
        Err(Error::config("model_type", "convnext is not implemented yet"))
    }
}
