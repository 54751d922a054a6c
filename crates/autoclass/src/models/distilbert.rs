//! DistilBERT, following transformers' `models/distilbert/modeling_distilbert.py`.

use std::any::Any;
use std::sync::Arc;

use candle_core::Tensor;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::config::{parse_typed, Config, ModelConfig};
use crate::error::{Error, Result};
use crate::models::{
    check_input_ids, encoder_mask, run_text_encoder, split_qa_logits, Batch, ForwardOptions,
    ModelOutput, RowsForward, TaskModel,
};
use crate::nn::{check_heads, Activation, Embedding, LayerNorm, Linear, MultiHeadAttention};
use crate::registry::{unsupported_task, Architecture, Task};
use crate::weights::{Init, VarBuilder};

/// DistilBERT's LayerNorm epsilon is hard-coded, whatever the config says.
const LAYER_NORM_EPS: f64 = 1e-12;

/// `DistilBertConfig`, with transformers' defaults for every field.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct DistilBertConfig {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Size of the position table: the longest input.
    pub max_position_embeddings: usize,
    /// Whether positions are sinusoidal (the values are in the checkpoint either way).
    pub sinusoidal_pos_embds: bool,
    /// Number of layers (`num_hidden_layers`).
    pub n_layers: usize,
    /// Number of heads (`num_attention_heads`).
    pub n_heads: usize,
    /// Hidden size (`hidden_size`).
    pub dim: usize,
    /// Feed-forward inner size.
    pub hidden_dim: usize,
    /// Dropout (identity at inference).
    pub dropout: f64,
    /// Attention dropout (identity at inference).
    pub attention_dropout: f64,
    /// Feed-forward activation.
    pub activation: Activation,
    /// Std of the normal init of missing weights.
    pub initializer_range: f64,
    /// QA head dropout.
    pub qa_dropout: f64,
    /// Sequence classification dropout.
    pub seq_classif_dropout: f64,
    /// Padding token id.
    pub pad_token_id: Option<i64>,
}

impl Default for DistilBertConfig {
    fn default() -> Self {
        DistilBertConfig {
            vocab_size: 30522,
            max_position_embeddings: 512,
            sinusoidal_pos_embds: false,
            n_layers: 6,
            n_heads: 12,
            dim: 768,
            hidden_dim: 3072,
            dropout: 0.1,
            attention_dropout: 0.1,
            activation: Activation::Gelu,
            initializer_range: 0.02,
            qa_dropout: 0.1,
            seq_classif_dropout: 0.2,
            pad_token_id: Some(0),
        }
    }
}

impl ModelConfig for DistilBertConfig {
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

struct Embeddings {
    word_embeddings: Embedding,
    position_embeddings: Embedding,
    layer_norm: LayerNorm,
    max_positions: usize,
}

impl Embeddings {
    fn load(cfg: &DistilBertConfig, vb: &VarBuilder) -> Result<Self> {
        let std = cfg.initializer_range;
        Ok(Embeddings {
            word_embeddings: Embedding::load(
                &vb.pp("word_embeddings"),
                cfg.vocab_size,
                cfg.dim,
                std,
                "word_embeddings (vocab_size)",
            )?,
            position_embeddings: Embedding::load(
                &vb.pp("position_embeddings"),
                cfg.max_position_embeddings,
                cfg.dim,
                std,
                "position_embeddings",
            )?,
            layer_norm: LayerNorm::load(&vb.pp("LayerNorm"), cfg.dim, LAYER_NORM_EPS)?,
            max_positions: cfg.max_position_embeddings,
        })
    }

    fn forward(&self, input_ids: &Tensor) -> Result<Tensor> {
        let (_, l) = check_input_ids(input_ids, self.max_positions)?;
        let words = self.word_embeddings.forward(input_ids)?;
        let positions = Tensor::arange(0u32, l as u32, input_ids.device())?.unsqueeze(0)?;
        let pos = self.position_embeddings.forward(&positions)?;
        self.layer_norm.forward(&words.broadcast_add(&pos)?)
    }
}

struct TransformerBlock {
    attention: MultiHeadAttention,
    out_lin: Linear,
    sa_layer_norm: LayerNorm,
    lin1: Linear,
    lin2: Linear,
    output_layer_norm: LayerNorm,
    act: Activation,
}

impl TransformerBlock {
    fn load(cfg: &DistilBertConfig, vb: &VarBuilder) -> Result<Self> {
        let d = cfg.dim;
        let std = cfg.initializer_range;
        let att = vb.pp("attention");
        Ok(TransformerBlock {
            attention: MultiHeadAttention::new(
                Linear::load(&att.pp("q_lin"), d, d, true, std)?,
                Linear::load(&att.pp("k_lin"), d, d, true, std)?,
                Linear::load(&att.pp("v_lin"), d, d, true, std)?,
                cfg.n_heads,
            ),
            out_lin: Linear::load(&att.pp("out_lin"), d, d, true, std)?,
            sa_layer_norm: LayerNorm::load(&vb.pp("sa_layer_norm"), d, LAYER_NORM_EPS)?,
            lin1: Linear::load(&vb.pp("ffn").pp("lin1"), d, cfg.hidden_dim, true, std)?,
            lin2: Linear::load(&vb.pp("ffn").pp("lin2"), cfg.hidden_dim, d, true, std)?,
            output_layer_norm: LayerNorm::load(&vb.pp("output_layer_norm"), d, LAYER_NORM_EPS)?,
            act: cfg.activation,
        })
    }

    fn forward(
        &self,
        h: &Tensor,
        mask: Option<&Tensor>,
        want_probs: bool,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let (ctx, probs) = self.attention.forward(h, mask, want_probs)?;
        Ok((self.after_attention(&ctx, h)?, probs))
    }

    /// [`Self::forward`] keeping only the positions `rows` selects (see
    /// [`crate::models::RowsForward`]).
    fn forward_rows(&self, h: &Tensor, mask: Option<&Tensor>, rows: &Tensor) -> Result<Tensor> {
        let (ctx, _) = self.attention.forward(h, mask, false)?;
        self.after_attention(&ctx.index_select(rows, 1)?, &h.index_select(rows, 1)?)
    }

    /// Output projection, residual LayerNorm and feed-forward on the attention context `ctx`
    /// of the input `h`.
    fn after_attention(&self, ctx: &Tensor, h: &Tensor) -> Result<Tensor> {
        let h = self
            .sa_layer_norm
            .forward_residual(&self.out_lin.forward(ctx)?, h)?;
        let f = self
            .lin2
            .forward(&self.lin1.forward_act(&h, Some(self.act))?)?;
        self.output_layer_norm.forward_residual(&f, &h)
    }
}

/// `DistilBertModel`: embeddings and transformer; no pooler, no token types.
pub struct DistilBertModel {
    embeddings: Embeddings,
    layers: Vec<TransformerBlock>,
}

impl DistilBertModel {
    /// Loads the body from `vb` (the root of a base checkpoint, or `distilbert.` inside a head).
    pub fn load(cfg: &DistilBertConfig, vb: &VarBuilder) -> Result<Self> {
        check_heads(cfg.dim, cfg.n_heads)?;
        let layers = (0..cfg.n_layers)
            .map(|i| TransformerBlock::load(cfg, &vb.pp("transformer").pp("layer").pp(i)))
            .collect::<Result<Vec<_>>>()?;
        Ok(DistilBertModel {
            embeddings: Embeddings::load(cfg, &vb.pp("embeddings"))?,
            layers,
        })
    }

    /// The body's outputs; with `first_only` (a head that reads only position 0),
    /// `last_hidden_state` may hold only position 0 (see [`run_text_encoder`]).
    fn body(
        &self,
        batch: &Batch,
        options: &ForwardOptions,
        first_only: bool,
    ) -> Result<ModelOutput> {
        let input_ids = batch.require("input_ids")?;
        let h = self.embeddings.forward(input_ids)?;
        let mask = encoder_mask(batch, input_ids, h.dtype())?;
        let rows: Option<RowsForward<'_, TransformerBlock>> =
            first_only.then_some(&TransformerBlock::forward_rows);
        let forward = TransformerBlock::forward;
        let enc = run_text_encoder(
            &self.layers,
            h,
            mask.as_ref(),
            batch,
            options,
            forward,
            rows,
        )?;
        let mut out = ModelOutput {
            hidden_states: enc.hidden_states,
            attentions: enc.attentions,
            ..Default::default()
        };
        out.insert("last_hidden_state", enc.last_hidden_state);
        Ok(out)
    }
}

impl TaskModel for DistilBertModel {
    fn class_name(&self) -> &'static str {
        "DistilBertModel"
    }
    fn forward(&self, batch: &Batch, options: &ForwardOptions) -> Result<ModelOutput> {
        self.body(batch, options, false)
    }
}

enum Head {
    Sequence {
        pre_classifier: Linear,
        classifier: Linear,
    },
    Token(Linear),
    QuestionAnswering(Linear),
    MaskedLm {
        vocab_transform: Linear,
        act: Activation,
        vocab_layer_norm: LayerNorm,
        vocab_projector: Linear,
    },
}

/// DistilBERT with a task head: `DistilBertForSequenceClassification`,
/// `DistilBertForTokenClassification`, `DistilBertForQuestionAnswering` or `DistilBertForMaskedLM`.
pub struct DistilBertWithHead {
    distilbert: DistilBertModel,
    head: Head,
    class_name: &'static str,
}

impl DistilBertWithHead {
    /// Loads `distilbert.*` and the head for `task`.
    pub fn load(task: Task, config: &Config, vb: &VarBuilder) -> Result<Self> {
        let cfg: &DistilBertConfig = config.model_config()?;
        let d = cfg.dim;
        let std = cfg.initializer_range;
        let n = config.num_labels();
        let distilbert = DistilBertModel::load(cfg, &vb.pp("distilbert"))?;
        let (head, class_name) = match task {
            Task::SequenceClassification => (
                Head::Sequence {
                    pre_classifier: Linear::load(&vb.pp("pre_classifier"), d, d, true, std)?,
                    classifier: Linear::load(&vb.pp("classifier"), d, n, true, std)?,
                },
                "DistilBertForSequenceClassification",
            ),
            Task::TokenClassification => (
                Head::Token(Linear::load(&vb.pp("classifier"), d, n, true, std)?),
                "DistilBertForTokenClassification",
            ),
            Task::QuestionAnswering => {
                if n != 2 {
                    return Err(Error::config(
                        "num_labels",
                        format!("config.num_labels should be 2, but it is {n}"),
                    ));
                }
                (
                    Head::QuestionAnswering(Linear::load(&vb.pp("qa_outputs"), d, n, true, std)?),
                    "DistilBertForQuestionAnswering",
                )
            }
            Task::MaskedLm => {
                let proj = vb.pp("vocab_projector");
                let words = distilbert.embeddings.word_embeddings.weight()?;
                let weight = if config.tie_word_embeddings {
                    proj.get_or_tied(&[cfg.vocab_size, d], "weight", words)?
                } else {
                    proj.get(&[cfg.vocab_size, d], "weight", Init::Normal(std))?
                };
                let bias = proj.get(&[cfg.vocab_size], "bias", Init::Const(0.0))?;
                (
                    Head::MaskedLm {
                        vocab_transform: Linear::load(&vb.pp("vocab_transform"), d, d, true, std)?,
                        act: cfg.activation,
                        vocab_layer_norm: LayerNorm::load(
                            &vb.pp("vocab_layer_norm"),
                            d,
                            LAYER_NORM_EPS,
                        )?,
                        vocab_projector: Linear::from_tensors(weight, Some(bias)),
                    },
                    "DistilBertForMaskedLM",
                )
            }
            other => return Err(unsupported_task(&DistilBert, other)),
        };
        Ok(DistilBertWithHead {
            distilbert,
            head,
            class_name,
        })
    }
}

impl TaskModel for DistilBertWithHead {
    fn class_name(&self) -> &'static str {
        self.class_name
    }

    fn forward(&self, batch: &Batch, options: &ForwardOptions) -> Result<ModelOutput> {
        let first_only = matches!(self.head, Head::Sequence { .. });
        let body = self.distilbert.body(batch, options, first_only)?;
        let h = body.require("last_hidden_state")?.clone();
        let mut out = ModelOutput {
            hidden_states: body.hidden_states,
            attentions: body.attentions,
            ..Default::default()
        };
        match &self.head {
            Head::Sequence {
                pre_classifier,
                classifier,
            } => {
                let first = h.narrow(1, 0, 1)?.squeeze(1)?;
                let x = pre_classifier.forward(&first)?.relu()?;
                out.insert("logits", classifier.forward(&x)?);
            }
            Head::Token(classifier) => out.insert("logits", classifier.forward(&h)?),
            Head::QuestionAnswering(qa) => split_qa_logits(&qa.forward(&h)?, &mut out)?,
            Head::MaskedLm {
                vocab_transform,
                act,
                vocab_layer_norm,
                vocab_projector,
            } => {
                let x = vocab_layer_norm.forward(&act.forward(&vocab_transform.forward(&h)?)?)?;
                out.insert("logits", vocab_projector.forward(&x)?);
            }
        }
        Ok(out)
    }
}

/// The registry entry for `model_type: "distilbert"`.
pub struct DistilBert;

impl Architecture for DistilBert {
    fn model_type(&self) -> &'static str {
        "distilbert"
    }
    fn config_class(&self) -> &'static str {
        "DistilBertConfig"
    }
    fn base_model_prefix(&self) -> &'static str {
        "distilbert"
    }
    fn attribute_map(&self) -> &'static [(&'static str, &'static str)] {
        &[
            ("hidden_size", "dim"),
            ("num_attention_heads", "n_heads"),
            ("num_hidden_layers", "n_layers"),
        ]
    }
    fn tokenizer_class(&self) -> Option<&'static str> {
        // transformers 5 maps distilbert to BertTokenizer (4.x used DistilBertTokenizer).
        Some("BertTokenizer")
    }
    fn tasks(&self) -> &'static [(Task, &'static str)] {
        &[
            (Task::Base, "DistilBertModel"),
            (
                Task::SequenceClassification,
                "DistilBertForSequenceClassification",
            ),
            (
                Task::TokenClassification,
                "DistilBertForTokenClassification",
            ),
            (Task::MaskedLm, "DistilBertForMaskedLM"),
            (Task::QuestionAnswering, "DistilBertForQuestionAnswering"),
        ]
    }
    fn parse_config(&self, raw: &Map<String, Value>) -> Result<Arc<dyn ModelConfig>> {
        let cfg: DistilBertConfig = parse_typed(raw)?;
        check_heads(cfg.dim, cfg.n_heads)?;
        Ok(Arc::new(cfg))
    }
    fn load(&self, task: Task, config: &Config, vb: &VarBuilder) -> Result<Box<dyn TaskModel>> {
        match task {
            Task::Base => Ok(Box::new(DistilBertModel::load(config.model_config()?, vb)?)),
            _ => Ok(Box::new(DistilBertWithHead::load(task, config, vb)?)),
        }
    }
}
