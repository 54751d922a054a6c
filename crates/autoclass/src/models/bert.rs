//! BERT, following transformers' `models/bert/modeling_bert.py`.

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
use crate::weights::VarBuilder;

/// `BertConfig`, with transformers' defaults for every field.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct BertConfig {
    /// Vocabulary size.
    pub vocab_size: usize,
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
    /// Dropout after embeddings and sublayers (identity at inference).
    pub hidden_dropout_prob: f64,
    /// Dropout on attention probabilities (identity at inference).
    pub attention_probs_dropout_prob: f64,
    /// Size of the position table: the longest input.
    pub max_position_embeddings: usize,
    /// Number of token types (segments).
    pub type_vocab_size: usize,
    /// Std of the normal init of missing weights.
    pub initializer_range: f64,
    /// LayerNorm epsilon.
    pub layer_norm_eps: f64,
    /// Padding token id.
    pub pad_token_id: Option<i64>,
    /// Classifier dropout (falls back to `hidden_dropout_prob`).
    pub classifier_dropout: Option<f64>,
    /// Only "absolute" is supported (transformers 5 removed the others).
    pub position_embedding_type: String,
    /// Decoder mode (not supported by this port).
    pub is_decoder: bool,
}

impl Default for BertConfig {
    fn default() -> Self {
        BertConfig {
            vocab_size: 30522,
            hidden_size: 768,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            intermediate_size: 3072,
            hidden_act: Activation::Gelu,
            hidden_dropout_prob: 0.1,
            attention_probs_dropout_prob: 0.1,
            max_position_embeddings: 512,
            type_vocab_size: 2,
            initializer_range: 0.02,
            layer_norm_eps: 1e-12,
            pad_token_id: Some(0),
            classifier_dropout: None,
            position_embedding_type: "absolute".into(),
            is_decoder: false,
        }
    }
}

impl ModelConfig for BertConfig {
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

impl BertConfig {
    fn validate(&self) -> Result<()> {
        check_heads(self.hidden_size, self.num_attention_heads)?;
        if self.position_embedding_type != "absolute" {
            return Err(Error::config(
                "position_embedding_type",
                format!(
                    "`{}` is not supported; only \"absolute\"",
                    self.position_embedding_type
                ),
            ));
        }
        if self.is_decoder {
            return Err(Error::config("is_decoder", "decoder BERT is not supported"));
        }
        Ok(())
    }
}

struct BertEmbeddings {
    word_embeddings: Embedding,
    position_embeddings: Embedding,
    token_type_embeddings: Embedding,
    layer_norm: LayerNorm,
    max_positions: usize,
}

impl BertEmbeddings {
    fn load(cfg: &BertConfig, vb: &VarBuilder) -> Result<Self> {
        let d = cfg.hidden_size;
        let std = cfg.initializer_range;
        Ok(BertEmbeddings {
            word_embeddings: Embedding::load(
                &vb.pp("word_embeddings"),
                cfg.vocab_size,
                d,
                std,
                "word_embeddings (vocab_size)",
            )?,
            position_embeddings: Embedding::load(
                &vb.pp("position_embeddings"),
                cfg.max_position_embeddings,
                d,
                std,
                "position_embeddings",
            )?,
            token_type_embeddings: Embedding::load(
                &vb.pp("token_type_embeddings"),
                cfg.type_vocab_size,
                d,
                std,
                "token_type_embeddings (type_vocab_size)",
            )?,
            layer_norm: LayerNorm::load(&vb.pp("LayerNorm"), d, cfg.layer_norm_eps)?,
            max_positions: cfg.max_position_embeddings,
        })
    }

    fn forward(&self, input_ids: &Tensor, token_type_ids: Option<&Tensor>) -> Result<Tensor> {
        let (_, l) = check_input_ids(input_ids, self.max_positions)?;
        let words = self.word_embeddings.forward(input_ids)?;
        let types = match token_type_ids {
            Some(t) => {
                if t.dims() != input_ids.dims() {
                    return Err(Error::input(format!(
                        "token_type_ids has shape {:?} but input_ids has {:?}",
                        t.dims(),
                        input_ids.dims()
                    )));
                }
                self.token_type_embeddings.forward(t)?
            }
            None => self
                .token_type_embeddings
                .forward(&input_ids.zeros_like()?)?,
        };
        let positions = Tensor::arange(0u32, l as u32, input_ids.device())?.unsqueeze(0)?;
        let pos = self.position_embeddings.forward(&positions)?;
        let x = words.add(&types)?.broadcast_add(&pos)?;
        self.layer_norm.forward(&x)
    }
}

struct BertLayer {
    attention: MultiHeadAttention,
    attention_output: Linear,
    attention_norm: LayerNorm,
    intermediate: Linear,
    output: Linear,
    output_norm: LayerNorm,
    act: Activation,
}

impl BertLayer {
    fn load(cfg: &BertConfig, vb: &VarBuilder) -> Result<Self> {
        let d = cfg.hidden_size;
        let std = cfg.initializer_range;
        let att = vb.pp("attention");
        let sa = att.pp("self");
        Ok(BertLayer {
            attention: MultiHeadAttention::new(
                Linear::load(&sa.pp("query"), d, d, true, std)?,
                Linear::load(&sa.pp("key"), d, d, true, std)?,
                Linear::load(&sa.pp("value"), d, d, true, std)?,
                cfg.num_attention_heads,
            ),
            attention_output: Linear::load(&att.pp("output").pp("dense"), d, d, true, std)?,
            attention_norm: LayerNorm::load(
                &att.pp("output").pp("LayerNorm"),
                d,
                cfg.layer_norm_eps,
            )?,
            intermediate: Linear::load(
                &vb.pp("intermediate").pp("dense"),
                d,
                cfg.intermediate_size,
                true,
                std,
            )?,
            output: Linear::load(
                &vb.pp("output").pp("dense"),
                cfg.intermediate_size,
                d,
                true,
                std,
            )?,
            output_norm: LayerNorm::load(&vb.pp("output").pp("LayerNorm"), d, cfg.layer_norm_eps)?,
            act: cfg.hidden_act,
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
            .attention_norm
            .forward_residual(&self.attention_output.forward(ctx)?, h)?;
        let f = self.intermediate.forward_act(&h, Some(self.act))?;
        self.output_norm
            .forward_residual(&self.output.forward(&f)?, &h)
    }
}

/// `BertModel`: embeddings, encoder and (optionally) the pooler.
pub struct BertModel {
    embeddings: BertEmbeddings,
    layers: Vec<BertLayer>,
    pooler: Option<Linear>,
}

/// What the BERT body returns.
struct BodyOutput {
    last_hidden_state: Tensor,
    pooler_output: Option<Tensor>,
    hidden_states: Option<Vec<Tensor>>,
    attentions: Option<Vec<Tensor>>,
}

impl BertModel {
    /// Loads the body from `vb` (the root of a BertModel checkpoint, or `bert.` inside a head).
    pub fn load(cfg: &BertConfig, vb: &VarBuilder, add_pooling_layer: bool) -> Result<Self> {
        cfg.validate()?;
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| BertLayer::load(cfg, &vb.pp("encoder").pp("layer").pp(i)))
            .collect::<Result<Vec<_>>>()?;
        let pooler = if add_pooling_layer {
            Some(Linear::load(
                &vb.pp("pooler").pp("dense"),
                cfg.hidden_size,
                cfg.hidden_size,
                true,
                cfg.initializer_range,
            )?)
        } else {
            None
        };
        Ok(BertModel {
            embeddings: BertEmbeddings::load(cfg, &vb.pp("embeddings"))?,
            layers,
            pooler,
        })
    }

    /// The body's outputs; with `first_only` (a head that reads only `[CLS]`: the pooler),
    /// `last_hidden_state` may hold only position 0 (see [`run_text_encoder`]).
    fn body(
        &self,
        batch: &Batch,
        options: &ForwardOptions,
        first_only: bool,
    ) -> Result<BodyOutput> {
        let input_ids = batch.require("input_ids")?;
        let h = self
            .embeddings
            .forward(input_ids, batch.get("token_type_ids"))?;
        let mask = encoder_mask(batch, input_ids, h.dtype())?;
        let rows: Option<RowsForward<'_, BertLayer>> =
            first_only.then_some(&BertLayer::forward_rows);
        let enc = run_text_encoder(
            &self.layers,
            h,
            mask.as_ref(),
            batch,
            options,
            BertLayer::forward,
            rows,
        )?;
        let h = enc.last_hidden_state;
        let pooler_output = match &self.pooler {
            Some(dense) => {
                let first = h.narrow(1, 0, 1)?.squeeze(1)?;
                Some(dense.forward(&first)?.tanh()?)
            }
            None => None,
        };
        Ok(BodyOutput {
            last_hidden_state: h,
            pooler_output,
            hidden_states: enc.hidden_states,
            attentions: enc.attentions,
        })
    }

    fn word_embeddings(&self) -> Result<&Tensor> {
        self.embeddings.word_embeddings.weight()
    }
}

impl TaskModel for BertModel {
    fn class_name(&self) -> &'static str {
        "BertModel"
    }
    fn forward(&self, batch: &Batch, options: &ForwardOptions) -> Result<ModelOutput> {
        let body = self.body(batch, options, false)?;
        let mut out = ModelOutput {
            hidden_states: body.hidden_states,
            attentions: body.attentions,
            ..Default::default()
        };
        out.insert("last_hidden_state", body.last_hidden_state);
        if let Some(p) = body.pooler_output {
            out.insert("pooler_output", p);
        }
        Ok(out)
    }
}

/// Which head sits on the BERT body.
enum Head {
    /// Pooled output → classifier.
    Sequence(Linear),
    /// Every token → classifier.
    Token(Linear),
    /// Every token → qa_outputs (2) → start/end.
    QuestionAnswering(Linear),
    /// transform.dense → act → transform.LayerNorm → decoder (tied) + bias.
    MaskedLm {
        dense: Linear,
        act: Activation,
        norm: LayerNorm,
        decoder: Linear,
    },
}

/// BERT with a task head: `BertForSequenceClassification`, `BertForTokenClassification`,
/// `BertForQuestionAnswering` or `BertForMaskedLM`.
pub struct BertWithHead {
    bert: BertModel,
    head: Head,
    class_name: &'static str,
}

impl BertWithHead {
    /// Loads `bert.*` and the head for `task`.
    pub fn load(task: Task, config: &Config, vb: &VarBuilder) -> Result<Self> {
        let cfg: &BertConfig = config.model_config()?;
        let d = cfg.hidden_size;
        let std = cfg.initializer_range;
        let n = config.num_labels();
        let with_pooler = task == Task::SequenceClassification;
        let bert = BertModel::load(cfg, &vb.pp("bert"), with_pooler)?;
        let (head, class_name) = match task {
            Task::SequenceClassification => (
                Head::Sequence(Linear::load(&vb.pp("classifier"), d, n, true, std)?),
                "BertForSequenceClassification",
            ),
            Task::TokenClassification => (
                Head::Token(Linear::load(&vb.pp("classifier"), d, n, true, std)?),
                "BertForTokenClassification",
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
                    "BertForQuestionAnswering",
                )
            }
            Task::MaskedLm => {
                let pred = vb.pp("cls").pp("predictions");
                let transform = pred.pp("transform");
                let decoder_vb = pred.pp("decoder");
                let weight = if config.tie_word_embeddings {
                    decoder_vb.get_or_tied(
                        &[cfg.vocab_size, d],
                        "weight",
                        bert.word_embeddings()?,
                    )?
                } else {
                    decoder_vb.get(
                        &[cfg.vocab_size, d],
                        "weight",
                        crate::weights::Init::Normal(std),
                    )?
                };
                let bias = if pred.contains("bias") || !decoder_vb.contains("bias") {
                    let b =
                        pred.get(&[cfg.vocab_size], "bias", crate::weights::Init::Const(0.0))?;
                    if decoder_vb.contains("bias") {
                        // Both spellings present: the tied pair; consume the alias.
                        decoder_vb.get(
                            &[cfg.vocab_size],
                            "bias",
                            crate::weights::Init::Const(0.0),
                        )?;
                    }
                    b
                } else {
                    decoder_vb.get(&[cfg.vocab_size], "bias", crate::weights::Init::Const(0.0))?
                };
                (
                    Head::MaskedLm {
                        dense: Linear::load(&transform.pp("dense"), d, d, true, std)?,
                        act: cfg.hidden_act,
                        norm: LayerNorm::load(&transform.pp("LayerNorm"), d, cfg.layer_norm_eps)?,
                        decoder: Linear::from_tensors(weight, Some(bias)),
                    },
                    "BertForMaskedLM",
                )
            }
            other => return Err(unsupported_task(&Bert, other)),
        };
        Ok(BertWithHead {
            bert,
            head,
            class_name,
        })
    }
}

impl TaskModel for BertWithHead {
    fn class_name(&self) -> &'static str {
        self.class_name
    }

    fn forward(&self, batch: &Batch, options: &ForwardOptions) -> Result<ModelOutput> {
        let first_only = matches!(self.head, Head::Sequence(_));
        let body = self.bert.body(batch, options, first_only)?;
        let mut out = ModelOutput {
            hidden_states: body.hidden_states,
            attentions: body.attentions,
            ..Default::default()
        };
        let h = &body.last_hidden_state;
        match &self.head {
            Head::Sequence(classifier) => {
                let pooled = body
                    .pooler_output
                    .ok_or_else(|| Error::input("BertForSequenceClassification has no pooler"))?;
                out.insert("logits", classifier.forward(&pooled)?);
            }
            Head::Token(classifier) => out.insert("logits", classifier.forward(h)?),
            Head::QuestionAnswering(qa) => split_qa_logits(&qa.forward(h)?, &mut out)?,
            Head::MaskedLm {
                dense,
                act,
                norm,
                decoder,
            } => {
                let x = norm.forward(&act.forward(&dense.forward(h)?)?)?;
                out.insert("logits", decoder.forward(&x)?);
            }
        }
        Ok(out)
    }
}

/// The registry entry for `model_type: "bert"`.
pub struct Bert;

impl Architecture for Bert {
    fn model_type(&self) -> &'static str {
        "bert"
    }
    fn config_class(&self) -> &'static str {
        "BertConfig"
    }
    fn base_model_prefix(&self) -> &'static str {
        "bert"
    }
    fn tokenizer_class(&self) -> Option<&'static str> {
        Some("BertTokenizer")
    }
    fn tasks(&self) -> &'static [(Task, &'static str)] {
        &[
            (Task::Base, "BertModel"),
            (
                Task::SequenceClassification,
                "BertForSequenceClassification",
            ),
            (Task::TokenClassification, "BertForTokenClassification"),
            (Task::MaskedLm, "BertForMaskedLM"),
            (Task::QuestionAnswering, "BertForQuestionAnswering"),
        ]
    }
    fn parse_config(&self, raw: &Map<String, Value>) -> Result<Arc<dyn ModelConfig>> {
        let cfg: BertConfig = parse_typed(raw)?;
        cfg.validate()?;
        Ok(Arc::new(cfg))
    }
    fn load(&self, task: Task, config: &Config, vb: &VarBuilder) -> Result<Box<dyn TaskModel>> {
        match task {
            Task::Base => Ok(Box::new(BertModel::load(config.model_config()?, vb, true)?)),
            _ => Ok(Box::new(BertWithHead::load(task, config, vb)?)),
        }
    }
}
