//! ViT, following transformers' `models/vit/modeling_vit.py`.

use std::any::Any;
use std::sync::Arc;

use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::config::{parse_typed, Config, ModelConfig};
use crate::error::{Error, Result};
use crate::models::{
    run_encoder_first, Batch, ForwardOptions, ModelOutput, RowsForward, TaskModel,
};
use crate::nn::{
    check_heads, Activation, Conv2d, Conv2dSpec, LayerNorm, Linear, MultiHeadAttention,
};
use crate::registry::{unsupported_task, Architecture, Task};
use crate::weights::{Init, VarBuilder};

/// `ViTConfig`, with transformers' defaults for every field.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct ViTConfig {
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
    /// Std of the (truncated) normal init of missing weights.
    pub initializer_range: f64,
    /// LayerNorm epsilon.
    pub layer_norm_eps: f64,
    /// Input height and width; inputs must have exactly this size.
    pub image_size: usize,
    /// Patch height and width (the patch convolution's kernel and stride).
    pub patch_size: usize,
    /// Input channels.
    pub num_channels: usize,
    /// Whether the query, key and value projections have a bias.
    pub qkv_bias: bool,
    /// Stride of the masked-image-modeling decoder (unused here).
    pub encoder_stride: usize,
    /// Width of the pooler output (`hidden_size` when unset or 0).
    pub pooler_output_size: Option<usize>,
    /// Activation of the pooler.
    pub pooler_act: Activation,
}

impl Default for ViTConfig {
    fn default() -> Self {
        ViTConfig {
            hidden_size: 768,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            intermediate_size: 3072,
            hidden_act: Activation::Gelu,
            hidden_dropout_prob: 0.0,
            attention_probs_dropout_prob: 0.0,
            initializer_range: 0.02,
            layer_norm_eps: 1e-12,
            image_size: 224,
            patch_size: 16,
            num_channels: 3,
            qkv_bias: true,
            encoder_stride: 16,
            pooler_output_size: None,
            pooler_act: Activation::Tanh,
        }
    }
}

impl ModelConfig for ViTConfig {
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

impl ViTConfig {
    fn validate(&self) -> Result<()> {
        check_heads(self.hidden_size, self.num_attention_heads)?;
        if self.patch_size == 0 || self.patch_size > self.image_size {
            return Err(Error::config(
                "patch_size",
                format!(
                    "{} must be between 1 and image_size ({})",
                    self.patch_size, self.image_size
                ),
            ));
        }
        if self.num_channels == 0 {
            return Err(Error::config("num_channels", "must be at least 1"));
        }
        Ok(())
    }

    /// Patches per side: `image_size // patch_size`.
    fn grid(&self) -> usize {
        self.image_size / self.patch_size
    }
}

struct ViTEmbeddings {
    cls_token: Tensor,
    position_embeddings: Tensor,
    projection: Conv2d,
    num_channels: usize,
    image_size: usize,
    dtype: DType,
}

impl ViTEmbeddings {
    fn load(cfg: &ViTConfig, vb: &VarBuilder) -> Result<Self> {
        let d = cfg.hidden_size;
        let std = cfg.initializer_range;
        let num_patches = cfg.grid() * cfg.grid();
        let spec = Conv2dSpec {
            in_channels: cfg.num_channels,
            out_channels: d,
            kernel: cfg.patch_size,
            stride: cfg.patch_size,
            padding: 0,
            groups: 1,
            bias: true,
        };
        Ok(ViTEmbeddings {
            cls_token: vb.get(&[1, 1, d], "cls_token", Init::Normal(std))?,
            position_embeddings: vb.get(
                &[1, num_patches + 1, d],
                "position_embeddings",
                Init::Normal(std),
            )?,
            projection: Conv2d::load(&vb.pp("patch_embeddings").pp("projection"), spec, std)?,
            num_channels: cfg.num_channels,
            image_size: cfg.image_size,
            dtype: vb.dtype(),
        })
    }

    /// `ViTPatchEmbeddings` checks, patch projection, `[CLS]` and positions.
    fn forward(&self, pixel_values: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = pixel_values.dims4().map_err(|_| {
            Error::input(format!(
                "pixel_values must be [batch, channels, height, width], got {:?}",
                pixel_values.dims()
            ))
        })?;
        if c != self.num_channels {
            return Err(Error::input(format!(
                "Make sure that the channel dimension of the pixel values match with the one set in the configuration. Expected {} but got {c}.",
                self.num_channels
            )));
        }
        if h != self.image_size || w != self.image_size {
            return Err(Error::input(format!(
                "Input image size ({h}*{w}) doesn't match model ({0}*{0}).",
                self.image_size
            )));
        }
        if b == 0 {
            return Err(Error::input("pixel_values is empty"));
        }
        let x = pixel_values.to_dtype(self.dtype)?;
        // [B, D, h, w] → [B, N, D], patches in row-major order.
        let patches = self
            .projection
            .forward(&x)?
            .flatten_from(2)?
            .transpose(1, 2)?;
        let d = patches.dim(2)?;
        let cls = self.cls_token.expand((b, 1, d))?;
        let h = Tensor::cat(&[&cls, &patches], 1)?;
        Ok(h.broadcast_add(&self.position_embeddings)?)
    }
}

struct ViTLayer {
    layernorm_before: LayerNorm,
    attention: MultiHeadAttention,
    attention_output: Linear,
    layernorm_after: LayerNorm,
    intermediate: Linear,
    output: Linear,
    act: Activation,
}

impl ViTLayer {
    fn load(cfg: &ViTConfig, vb: &VarBuilder) -> Result<Self> {
        let d = cfg.hidden_size;
        let std = cfg.initializer_range;
        let att = vb.pp("attention");
        let sa = att.pp("attention");
        Ok(ViTLayer {
            layernorm_before: LayerNorm::load(&vb.pp("layernorm_before"), d, cfg.layer_norm_eps)?,
            attention: MultiHeadAttention::new(
                Linear::load(&sa.pp("query"), d, d, cfg.qkv_bias, std)?,
                Linear::load(&sa.pp("key"), d, d, cfg.qkv_bias, std)?,
                Linear::load(&sa.pp("value"), d, d, cfg.qkv_bias, std)?,
                cfg.num_attention_heads,
            ),
            attention_output: Linear::load(&att.pp("output").pp("dense"), d, d, true, std)?,
            layernorm_after: LayerNorm::load(&vb.pp("layernorm_after"), d, cfg.layer_norm_eps)?,
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
            act: cfg.hidden_act,
        })
    }

    /// Pre-LN block: `h + o(attn(LN(h)))`, then `h + fc2(act(fc1(LN(h))))`.
    fn forward(
        &self,
        h: &Tensor,
        mask: Option<&Tensor>,
        want_probs: bool,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let (ctx, probs) =
            self.attention
                .forward(&self.layernorm_before.forward(h)?, mask, want_probs)?;
        Ok((self.after_attention(&ctx, h)?, probs))
    }

    /// [`Self::forward`] keeping only the positions `rows` selects (see
    /// [`crate::models::RowsForward`]).
    fn forward_rows(&self, h: &Tensor, mask: Option<&Tensor>, rows: &Tensor) -> Result<Tensor> {
        let (ctx, _) = self
            .attention
            .forward(&self.layernorm_before.forward(h)?, mask, false)?;
        self.after_attention(&ctx.index_select(rows, 1)?, &h.index_select(rows, 1)?)
    }

    /// Output projection, residual and feed-forward block on the attention context `ctx` of
    /// the input `h`.
    fn after_attention(&self, ctx: &Tensor, h: &Tensor) -> Result<Tensor> {
        let h = (self.attention_output.forward(ctx)? + h)?;
        let f = self
            .intermediate
            .forward_act(&self.layernorm_after.forward(&h)?, Some(self.act))?;
        Ok((self.output.forward(&f)? + &h)?)
    }
}

/// What the ViT body returns.
struct BodyOutput {
    last_hidden_state: Tensor,
    pooler_output: Option<Tensor>,
    hidden_states: Option<Vec<Tensor>>,
    attentions: Option<Vec<Tensor>>,
}

/// `ViTModel`: patch embeddings, pre-LN encoder, final LayerNorm and (optionally) the pooler.
pub struct ViTModel {
    embeddings: ViTEmbeddings,
    layers: Vec<ViTLayer>,
    layernorm: LayerNorm,
    pooler: Option<(Linear, Activation)>,
}

impl ViTModel {
    /// Loads the body from `vb` (the root of a ViTModel checkpoint, or `vit.` inside a head).
    pub fn load(cfg: &ViTConfig, vb: &VarBuilder, add_pooling_layer: bool) -> Result<Self> {
        cfg.validate()?;
        let embeddings = ViTEmbeddings::load(cfg, &vb.pp("embeddings"))?;
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| ViTLayer::load(cfg, &vb.pp("encoder").pp("layer").pp(i)))
            .collect::<Result<Vec<_>>>()?;
        let layernorm = LayerNorm::load(&vb.pp("layernorm"), cfg.hidden_size, cfg.layer_norm_eps)?;
        let pooler = if add_pooling_layer {
            Some((
                Linear::load(
                    &vb.pp("pooler").pp("dense"),
                    cfg.hidden_size,
                    cfg.pooler_output_size
                        .filter(|&n| n > 0)
                        .unwrap_or(cfg.hidden_size),
                    true,
                    cfg.initializer_range,
                )?,
                cfg.pooler_act,
            ))
        } else {
            None
        };
        Ok(ViTModel {
            embeddings,
            layers,
            layernorm,
            pooler,
        })
    }

    /// The body's outputs; with `first_only` (a head that reads only the `[CLS]` position),
    /// `last_hidden_state` may hold only position 0 (see [`run_encoder_first`]).
    fn body(
        &self,
        batch: &Batch,
        options: &ForwardOptions,
        first_only: bool,
    ) -> Result<BodyOutput> {
        let h = self.embeddings.forward(batch.require("pixel_values")?)?;
        let last: Option<RowsForward<'_, ViTLayer>> = first_only.then_some(&ViTLayer::forward_rows);
        let enc = run_encoder_first(&self.layers, h, None, options, ViTLayer::forward, last)?;
        let h = self.layernorm.forward(&enc.last_hidden_state)?;
        let pooler_output = match &self.pooler {
            Some((dense, act)) => {
                let first = h.narrow(1, 0, 1)?.squeeze(1)?;
                Some(act.forward(&dense.forward(&first)?)?)
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
}

impl TaskModel for ViTModel {
    fn class_name(&self) -> &'static str {
        "ViTModel"
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

/// `ViTForImageClassification`: a linear classifier on the final `[CLS]` token (no pooler).
pub struct ViTForImageClassification {
    vit: ViTModel,
    /// `None` when `num_labels == 0` (transformers' `nn.Identity`).
    classifier: Option<Linear>,
}

impl ViTForImageClassification {
    /// Loads `vit.*` (without the pooler) and `classifier`.
    pub fn load(config: &Config, vb: &VarBuilder) -> Result<Self> {
        let cfg: &ViTConfig = config.model_config()?;
        let vit = ViTModel::load(cfg, &vb.pp("vit"), false)?;
        let n = config.num_labels();
        let classifier = if n > 0 {
            Some(Linear::load(
                &vb.pp("classifier"),
                cfg.hidden_size,
                n,
                true,
                cfg.initializer_range,
            )?)
        } else {
            None
        };
        Ok(ViTForImageClassification { vit, classifier })
    }
}

impl TaskModel for ViTForImageClassification {
    fn class_name(&self) -> &'static str {
        "ViTForImageClassification"
    }
    fn forward(&self, batch: &Batch, options: &ForwardOptions) -> Result<ModelOutput> {
        let body = self.vit.body(batch, options, true)?;
        let mut out = ModelOutput {
            hidden_states: body.hidden_states,
            attentions: body.attentions,
            ..Default::default()
        };
        let cls = body.last_hidden_state.narrow(1, 0, 1)?.squeeze(1)?;
        let logits = match &self.classifier {
            Some(classifier) => classifier.forward(&cls)?,
            None => cls,
        };
        out.insert("logits", logits);
        Ok(out)
    }
}

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
        &[
            (Task::Base, "ViTModel"),
            (Task::ImageClassification, "ViTForImageClassification"),
        ]
    }
    fn parse_config(&self, raw: &Map<String, Value>) -> Result<Arc<dyn ModelConfig>> {
        let mut cfg: ViTConfig = parse_typed(raw)?;
        cfg.validate()?;
        // As ViTConfig's constructor: an unset (or 0) pooler width means hidden_size.
        if cfg.pooler_output_size.is_none_or(|n| n == 0) {
            cfg.pooler_output_size = Some(cfg.hidden_size);
        }
        Ok(Arc::new(cfg))
    }
    fn load(&self, task: Task, config: &Config, vb: &VarBuilder) -> Result<Box<dyn TaskModel>> {
        match task {
            Task::Base => Ok(Box::new(ViTModel::load(config.model_config()?, vb, true)?)),
            Task::ImageClassification => Ok(Box::new(ViTForImageClassification::load(config, vb)?)),
            other => Err(unsupported_task(self, other)),
        }
    }
}
