//! HuBERT, following transformers' `models/hubert/modular_hubert.py` (`modeling_hubert.py`).
//!
//! HuBERT's modules inherit from Wav2Vec2's, so the body and heads are the shared ones in
//! `models/wav2vec2.rs`. The differences are config switches: the feature projection's LayerNorm
//! is optional (`feat_proj_layer_norm`), the positional convolution may batch-norm its input
//! instead of weight-normalising its kernel (`conv_pos_batch_norm`), `HubertModel` returns no
//! `extract_features`, and there is no adapter.

use std::any::Any;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::config::{parse_typed, Config, ModelConfig};
use crate::error::Result;
use crate::models::wav2vec2::{
    check_conv_layers, ClassificationHead, CtcHead, SpeechBody, SpeechConfig,
};
use crate::models::{Batch, ForwardOptions, ModelOutput, TaskModel};
use crate::nn::Activation;
use crate::registry::{unsupported_task, Architecture, Task};
use crate::weights::VarBuilder;

/// `HubertConfig`, with transformers' defaults for every field.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct HubertConfig {
    /// CTC vocabulary size (`None` only for checkpoints without a CTC head).
    pub vocab_size: Option<usize>,
    /// Hidden size D.
    pub hidden_size: usize,
    /// Number of encoder layers.
    pub num_hidden_layers: usize,
    /// Number of attention heads.
    pub num_attention_heads: usize,
    /// Feed-forward inner size.
    pub intermediate_size: usize,
    /// Feed-forward activation.
    pub hidden_act: Activation,
    /// Dropout after sublayers (identity at inference).
    pub hidden_dropout: f64,
    /// Dropout after the feed-forward activation (identity at inference).
    pub activation_dropout: f64,
    /// Dropout on attention probabilities (identity at inference).
    pub attention_dropout: f64,
    /// Whether the feature projection starts with a LayerNorm.
    pub feat_proj_layer_norm: bool,
    /// Dropout after the feature projection (identity at inference).
    pub feat_proj_dropout: f64,
    /// Dropout before the CTC head (identity at inference).
    pub final_dropout: f64,
    /// LayerDrop probability (training only).
    pub layerdrop: f64,
    /// Std of the normal init of missing weights.
    pub initializer_range: f64,
    /// Epsilon of the encoder's and the feature projection's LayerNorms.
    pub layer_norm_eps: f64,
    /// Feature-encoder norm: `"group"` (GroupNorm on layer 0) or `"layer"` (LayerNorm everywhere).
    pub feat_extract_norm: String,
    /// Activation of the feature encoder and the positional convolution.
    pub feat_extract_activation: Activation,
    /// Output channels of each feature-encoder convolution.
    pub conv_dim: Vec<usize>,
    /// Stride of each feature-encoder convolution.
    pub conv_stride: Vec<usize>,
    /// Kernel size of each feature-encoder convolution.
    pub conv_kernel: Vec<usize>,
    /// Whether the feature-encoder convolutions have biases.
    pub conv_bias: bool,
    /// Kernel size of the positional convolution.
    pub num_conv_pos_embeddings: usize,
    /// Channel groups of the positional convolution.
    pub num_conv_pos_embedding_groups: usize,
    /// BatchNorm before the positional convolution instead of weight norm on its kernel.
    pub conv_pos_batch_norm: bool,
    /// Pre-LN encoder layers and a final LayerNorm (large checkpoints).
    pub do_stable_layer_norm: bool,
    /// SpecAugment switch (training only).
    pub apply_spec_augment: bool,
    /// SpecAugment time-mask probability; above 0 the model has `masked_spec_embed`.
    pub mask_time_prob: f64,
    /// SpecAugment time-mask span.
    pub mask_time_length: usize,
    /// Minimum number of time masks.
    pub mask_time_min_masks: usize,
    /// SpecAugment feature-mask probability; above 0 the model has `masked_spec_embed`.
    pub mask_feature_prob: f64,
    /// SpecAugment feature-mask span.
    pub mask_feature_length: usize,
    /// Minimum number of feature masks.
    pub mask_feature_min_masks: usize,
    /// CTC loss reduction (training only).
    pub ctc_loss_reduction: String,
    /// Whether infinite CTC losses are zeroed (training only).
    pub ctc_zero_infinity: bool,
    /// Sequence classification on a learned softmax-weighted sum of all hidden states.
    pub use_weighted_layer_sum: bool,
    /// Width of the classification projector before mean pooling.
    pub classifier_proj_size: usize,
    /// Padding token id (the CTC blank).
    pub pad_token_id: Option<i64>,
    /// Beginning-of-sequence token id.
    pub bos_token_id: Option<i64>,
    /// End-of-sequence token id.
    pub eos_token_id: Option<i64>,
}

impl Default for HubertConfig {
    fn default() -> Self {
        HubertConfig {
            vocab_size: Some(32),
            hidden_size: 768,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            intermediate_size: 3072,
            hidden_act: Activation::Gelu,
            hidden_dropout: 0.1,
            activation_dropout: 0.1,
            attention_dropout: 0.1,
            feat_proj_layer_norm: true,
            feat_proj_dropout: 0.0,
            final_dropout: 0.1,
            layerdrop: 0.1,
            initializer_range: 0.02,
            layer_norm_eps: 1e-5,
            feat_extract_norm: "group".into(),
            feat_extract_activation: Activation::Gelu,
            conv_dim: vec![512; 7],
            conv_stride: vec![5, 2, 2, 2, 2, 2, 2],
            conv_kernel: vec![10, 3, 3, 3, 3, 2, 2],
            conv_bias: false,
            num_conv_pos_embeddings: 128,
            num_conv_pos_embedding_groups: 16,
            conv_pos_batch_norm: false,
            do_stable_layer_norm: false,
            apply_spec_augment: true,
            mask_time_prob: 0.05,
            mask_time_length: 10,
            mask_time_min_masks: 2,
            mask_feature_prob: 0.0,
            mask_feature_length: 10,
            mask_feature_min_masks: 0,
            ctc_loss_reduction: "sum".into(),
            ctc_zero_infinity: false,
            use_weighted_layer_sum: false,
            classifier_proj_size: 256,
            pad_token_id: Some(0),
            bos_token_id: Some(1),
            eos_token_id: Some(2),
        }
    }
}

impl ModelConfig for HubertConfig {
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

impl HubertConfig {
    /// The checks of `HubertConfig.__init__`.
    fn validate(&self) -> Result<()> {
        check_conv_layers(&self.conv_dim, &self.conv_stride, &self.conv_kernel)
    }

    /// What the shared speech body needs.
    fn speech(&self) -> SpeechConfig {
        SpeechConfig {
            hidden_size: self.hidden_size,
            num_hidden_layers: self.num_hidden_layers,
            num_attention_heads: self.num_attention_heads,
            intermediate_size: self.intermediate_size,
            hidden_act: self.hidden_act,
            initializer_range: self.initializer_range,
            layer_norm_eps: self.layer_norm_eps,
            feat_extract_norm: self.feat_extract_norm.clone(),
            feat_extract_activation: self.feat_extract_activation,
            conv_dim: self.conv_dim.clone(),
            conv_stride: self.conv_stride.clone(),
            conv_kernel: self.conv_kernel.clone(),
            conv_bias: self.conv_bias,
            num_conv_pos_embeddings: self.num_conv_pos_embeddings,
            num_conv_pos_embedding_groups: self.num_conv_pos_embedding_groups,
            conv_pos_batch_norm: self.conv_pos_batch_norm,
            do_stable_layer_norm: self.do_stable_layer_norm,
            feat_proj_layer_norm: self.feat_proj_layer_norm,
            adapter_attn_dim: None,
            masked_spec_embed: self.mask_time_prob > 0.0 || self.mask_feature_prob > 0.0,
            use_weighted_layer_sum: self.use_weighted_layer_sum,
            classifier_proj_size: self.classifier_proj_size,
            vocab_size: self.vocab_size,
        }
    }
}

/// `HubertModel`: `last_hidden_state` only (no `extract_features`).
pub struct HubertModel {
    body: SpeechBody,
}

impl HubertModel {
    /// Loads the body from `vb` (the root of a HubertModel checkpoint, or `hubert.` inside a head).
    pub fn load(cfg: &HubertConfig, vb: &VarBuilder) -> Result<Self> {
        Ok(HubertModel {
            body: SpeechBody::load(&cfg.speech(), vb)?,
        })
    }
}

impl TaskModel for HubertModel {
    fn class_name(&self) -> &'static str {
        "HubertModel"
    }
    fn forward(&self, batch: &Batch, options: &ForwardOptions) -> Result<ModelOutput> {
        let body = self.body.forward(batch, options)?;
        let mut out = ModelOutput {
            hidden_states: body.hidden_states,
            attentions: body.attentions,
            ..Default::default()
        };
        out.insert("last_hidden_state", body.last_hidden_state);
        Ok(out)
    }
}

/// `HubertForSequenceClassification`: Wav2Vec2's classification head on the HuBERT body.
pub struct HubertForSequenceClassification {
    hubert: SpeechBody,
    head: ClassificationHead,
}

impl HubertForSequenceClassification {
    /// Loads `hubert.*`, `projector`, `classifier` and (with `use_weighted_layer_sum`)
    /// `layer_weights`.
    pub fn load(config: &Config, vb: &VarBuilder) -> Result<Self> {
        let speech = config.model_config::<HubertConfig>()?.speech();
        Ok(HubertForSequenceClassification {
            hubert: SpeechBody::load(&speech, &vb.pp("hubert"))?,
            head: ClassificationHead::load(&speech, config.num_labels(), vb)?,
        })
    }
}

impl TaskModel for HubertForSequenceClassification {
    fn class_name(&self) -> &'static str {
        "HubertForSequenceClassification"
    }
    fn forward(&self, batch: &Batch, options: &ForwardOptions) -> Result<ModelOutput> {
        self.head.forward(&self.hubert, batch, options)
    }
}

/// `HubertForCTC`: Wav2Vec2's CTC head on the HuBERT body.
pub struct HubertForCTC {
    hubert: SpeechBody,
    head: CtcHead,
}

impl HubertForCTC {
    /// Loads `hubert.*` and `lm_head`; a config without `vocab_size` fails as in transformers.
    pub fn load(config: &Config, vb: &VarBuilder) -> Result<Self> {
        let speech = config.model_config::<HubertConfig>()?.speech();
        let head = CtcHead::load(
            &speech,
            "transformers.models.hubert.modeling_hubert.HubertForCTC",
            vb,
        )?;
        Ok(HubertForCTC {
            hubert: SpeechBody::load(&speech, &vb.pp("hubert"))?,
            head,
        })
    }
}

impl TaskModel for HubertForCTC {
    fn class_name(&self) -> &'static str {
        "HubertForCTC"
    }
    fn forward(&self, batch: &Batch, options: &ForwardOptions) -> Result<ModelOutput> {
        self.head.forward(&self.hubert, batch, options)
    }
}

/// The registry entry for `model_type: "hubert"`.
pub struct Hubert;

impl Architecture for Hubert {
    fn model_type(&self) -> &'static str {
        "hubert"
    }
    fn config_class(&self) -> &'static str {
        "HubertConfig"
    }
    fn base_model_prefix(&self) -> &'static str {
        "hubert"
    }
    fn tokenizer_class(&self) -> Option<&'static str> {
        Some("Wav2Vec2CTCTokenizer")
    }
    fn feature_extractor_class(&self) -> Option<&'static str> {
        Some("Wav2Vec2FeatureExtractor")
    }
    fn processor_class(&self) -> Option<&'static str> {
        Some("Wav2Vec2Processor")
    }
    fn tasks(&self) -> &'static [(Task, &'static str)] {
        &[
            (Task::Base, "HubertModel"),
            (Task::AudioClassification, "HubertForSequenceClassification"),
            (Task::Ctc, "HubertForCTC"),
        ]
    }
    fn parse_config(&self, raw: &Map<String, Value>) -> Result<Arc<dyn ModelConfig>> {
        let cfg: HubertConfig = parse_typed(raw)?;
        cfg.validate()?;
        Ok(Arc::new(cfg))
    }
    fn load(&self, task: Task, config: &Config, vb: &VarBuilder) -> Result<Box<dyn TaskModel>> {
        match task {
            Task::Base => Ok(Box::new(HubertModel::load(config.model_config()?, vb)?)),
            Task::AudioClassification => {
                Ok(Box::new(HubertForSequenceClassification::load(config, vb)?))
            }
            Task::Ctc => Ok(Box::new(HubertForCTC::load(config, vb)?)),
            other => Err(unsupported_task(self, other)),
        }
    }
}
