//! LayoutLMv3, following transformers' `models/layoutlmv3/modeling_layoutlmv3.py`.
//!
//! Text tokens (word + RoBERTa positions + token type + 2-D layout embeddings) and image patches
//! (a patch convolution, `[CLS]`, absolute positions) share one post-LN encoder whose attention
//! adds a 1-D relative position bias and a 2-D spatial bias, normalised with CogView's
//! PB-Relax softmax.

use std::any::Any;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor, D};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::config::{parse_typed, Config, ModelConfig};
use crate::error::{Error, Result};
use crate::models::{
    check_input_ids, run_encoder, split_qa_logits, Batch, ForwardOptions, ModelOutput, TaskModel,
};
use crate::nn::{
    additive_mask, check_heads, Activation, Conv2d, Conv2dSpec, Embedding, LayerNorm, Linear,
};
use crate::registry::{unsupported_task, Architecture, Task};
use crate::weights::{Init, VarBuilder};

/// The `alpha` of transformers' `cogview_attention`.
const COGVIEW_ALPHA: f64 = 32.0;
/// `max_len` of `init_visual_bbox`: patch boxes are on a 0-1000 grid.
const VISUAL_BBOX_MAX: i64 = 1000;
/// transformers clips box heights and widths to this before the h/w lookups.
const SHAPE_CLIP: i64 = 1023;

/// `LayoutLMv3Config`, with transformers' defaults for every field.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct LayoutLMv3Config {
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
    /// Size of the (RoBERTa-style, offset by `pad_token_id + 1`) position table.
    pub max_position_embeddings: usize,
    /// Number of token types (segments).
    pub type_vocab_size: usize,
    /// Std of the normal init of missing weights.
    pub initializer_range: f64,
    /// LayerNorm epsilon.
    pub layer_norm_eps: f64,
    /// Padding token id (also the padding index of the position table).
    pub pad_token_id: Option<i64>,
    /// Beginning-of-sequence token id.
    pub bos_token_id: Option<i64>,
    /// End-of-sequence token id(s).
    pub eos_token_id: Option<Value>,
    /// Size of the x/y/h/w layout tables: box coordinates must be below it.
    pub max_2d_position_embeddings: usize,
    /// Width of each of the x0/y0/x1/y1 embeddings.
    pub coordinate_size: usize,
    /// Width of each of the height/width embeddings.
    pub shape_size: usize,
    /// Whether attention adds the 1-D relative position bias.
    pub has_relative_attention_bias: bool,
    /// Buckets of the 1-D relative position bias.
    pub rel_pos_bins: usize,
    /// Largest distinguished 1-D distance.
    pub max_rel_pos: usize,
    /// Buckets of the 2-D (x and y) relative position biases.
    pub rel_2d_pos_bins: usize,
    /// Largest distinguished 2-D distance.
    pub max_rel_2d_pos: usize,
    /// Whether the encoder has the 2-D spatial bias (used only with the 1-D bias, as in
    /// transformers).
    pub has_spatial_attention_bias: bool,
    /// Whether the model has text embeddings.
    pub text_embed: bool,
    /// Whether the model has patch embeddings.
    pub visual_embed: bool,
    /// Image height and width; images must have exactly this size.
    pub input_size: usize,
    /// Input channels.
    pub num_channels: usize,
    /// Patch height and width (the patch convolution's kernel and stride).
    pub patch_size: usize,
    /// Classifier dropout (falls back to `hidden_dropout_prob`; identity at inference).
    pub classifier_dropout: Option<f64>,
}

impl Default for LayoutLMv3Config {
    fn default() -> Self {
        LayoutLMv3Config {
            vocab_size: 50265,
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
            layer_norm_eps: 1e-5,
            pad_token_id: Some(1),
            bos_token_id: Some(0),
            eos_token_id: Some(Value::from(2)),
            max_2d_position_embeddings: 1024,
            coordinate_size: 128,
            shape_size: 128,
            has_relative_attention_bias: true,
            rel_pos_bins: 32,
            max_rel_pos: 128,
            rel_2d_pos_bins: 64,
            max_rel_2d_pos: 256,
            has_spatial_attention_bias: true,
            text_embed: true,
            visual_embed: true,
            input_size: 224,
            num_channels: 3,
            patch_size: 16,
            classifier_dropout: None,
        }
    }
}

impl ModelConfig for LayoutLMv3Config {
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

impl LayoutLMv3Config {
    fn validate(&self) -> Result<()> {
        check_heads(self.hidden_size, self.num_attention_heads)?;
        if self.text_embed {
            let spatial = 4 * self.coordinate_size + 2 * self.shape_size;
            if spatial != self.hidden_size {
                return Err(Error::config(
                    "coordinate_size",
                    format!(
                        "4 * coordinate_size + 2 * shape_size ({spatial}) must equal hidden_size ({})",
                        self.hidden_size
                    ),
                ));
            }
            self.padding_idx()?;
        }
        if self.visual_embed {
            if self.patch_size == 0 || self.patch_size > self.input_size {
                return Err(Error::config(
                    "patch_size",
                    format!(
                        "{} must be between 1 and input_size ({})",
                        self.patch_size, self.input_size
                    ),
                ));
            }
            if self.num_channels == 0 {
                return Err(Error::config("num_channels", "must be at least 1"));
            }
        }
        if !self.text_embed && !self.visual_embed {
            return Err(Error::config(
                "text_embed",
                "at least one of text_embed and visual_embed must be true",
            ));
        }
        for (field, bins, max) in [
            ("rel_pos_bins", self.rel_pos_bins, self.max_rel_pos),
            ("rel_2d_pos_bins", self.rel_2d_pos_bins, self.max_rel_2d_pos),
        ] {
            // relative_position_bucket needs max_exact = bins // 4 > 0 and max > max_exact.
            if bins < 4 || max <= bins / 4 {
                return Err(Error::config(
                    field,
                    format!(
                        "{bins} buckets with a maximum distance of {max} cannot be bucketed (need at least 4 buckets and a distance above buckets / 4)"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// `pad_token_id`, the padding index of the word and position tables.
    fn padding_idx(&self) -> Result<i64> {
        match self.pad_token_id {
            Some(p) if p >= 0 && (p as usize) < self.max_position_embeddings => Ok(p),
            other => Err(Error::config(
                "pad_token_id",
                format!(
                    "LayoutLMv3 derives position ids from pad_token_id, which must be in [0, max_position_embeddings ({})); got {other:?}",
                    self.max_position_embeddings
                ),
            )),
        }
    }

    /// Patches per side: `int(input_size / patch_size)`.
    fn grid(&self) -> usize {
        self.input_size / self.patch_size
    }
}

/// transformers' `relative_position_bucket` (bidirectional) for one relative position, computed
/// in f32 as torch does.
fn relative_position_bucket(
    relative_position: i64,
    num_buckets: usize,
    max_distance: usize,
) -> u32 {
    let half = (num_buckets / 2) as i64;
    let mut ret = if relative_position > 0 { half } else { 0 };
    let n = relative_position.abs();
    let max_exact = half / 2;
    if n < max_exact {
        ret += n;
    } else {
        let ratio = (n as f32 / max_exact as f32).ln();
        let denom = (max_distance as f64 / max_exact as f64).ln() as f32;
        let large = max_exact + ((ratio / denom) * (half - max_exact) as f32) as i64;
        ret += large.min(half - 1);
    }
    ret as u32
}

/// `weight.t()[buckets].permute(0, 3, 1, 2)`: the per-head bias `[B, heads, T, T]` for buckets
/// laid out `[B, T, T]`.
fn gather_bias(weight: &Tensor, buckets: Vec<u32>, b: usize, t: usize) -> Result<Tensor> {
    let heads = weight.dim(0)?;
    let index = Tensor::from_vec(buckets, b * t * t, weight.device())?;
    let table = weight.t()?.contiguous()?;
    Ok(table
        .index_select(&index, 0)?
        .reshape((b, t, t, heads))?
        .permute((0, 3, 1, 2))?
        .contiguous()?)
}

/// Buckets `[B, T, T]` of `pos[b][j] - pos[b][i]` for rows of positions.
fn bucket_matrix(pos: &[Vec<i64>], num_buckets: usize, max_distance: usize) -> Vec<u32> {
    let mut out = Vec::new();
    for row in pos {
        for &pi in row {
            for &pj in row {
                out.push(relative_position_bucket(pj - pi, num_buckets, max_distance));
            }
        }
    }
    out
}

struct TextEmbeddings {
    word_embeddings: Embedding,
    token_type_embeddings: Embedding,
    layer_norm: LayerNorm,
    position_embeddings: Embedding,
    x_position_embeddings: Embedding,
    y_position_embeddings: Embedding,
    h_position_embeddings: Embedding,
    w_position_embeddings: Embedding,
    padding_idx: i64,
    max_positions: usize,
    max_2d: usize,
}

impl TextEmbeddings {
    fn load(cfg: &LayoutLMv3Config, vb: &VarBuilder) -> Result<Self> {
        let d = cfg.hidden_size;
        let std = cfg.initializer_range;
        let table = |name: &str, count: usize, dim: usize, label: &'static str| {
            Embedding::load(&vb.pp(name), count, dim, std, label)
        };
        let m2d = cfg.max_2d_position_embeddings;
        Ok(TextEmbeddings {
            word_embeddings: table(
                "word_embeddings",
                cfg.vocab_size,
                d,
                "word_embeddings (vocab_size)",
            )?,
            token_type_embeddings: table(
                "token_type_embeddings",
                cfg.type_vocab_size,
                d,
                "token_type_embeddings (type_vocab_size)",
            )?,
            layer_norm: LayerNorm::load(&vb.pp("LayerNorm"), d, cfg.layer_norm_eps)?,
            position_embeddings: table(
                "position_embeddings",
                cfg.max_position_embeddings,
                d,
                "position_embeddings",
            )?,
            x_position_embeddings: table(
                "x_position_embeddings",
                m2d,
                cfg.coordinate_size,
                "x_position_embeddings (max_2d_position_embeddings)",
            )?,
            y_position_embeddings: table(
                "y_position_embeddings",
                m2d,
                cfg.coordinate_size,
                "y_position_embeddings (max_2d_position_embeddings)",
            )?,
            h_position_embeddings: table(
                "h_position_embeddings",
                m2d,
                cfg.shape_size,
                "h_position_embeddings (max_2d_position_embeddings)",
            )?,
            w_position_embeddings: table(
                "w_position_embeddings",
                m2d,
                cfg.shape_size,
                "w_position_embeddings (max_2d_position_embeddings)",
            )?,
            padding_idx: cfg.padding_idx()?,
            max_positions: cfg.max_position_embeddings,
            max_2d: m2d,
        })
    }

    /// The longest text input: positions run from `padding_idx + 1` to `padding_idx + L`.
    fn max_len(&self) -> usize {
        self.max_positions
            .saturating_sub(self.padding_idx as usize + 1)
    }

    /// `create_position_ids_from_input_ids`: non-padding tokens count up from `padding_idx + 1`,
    /// padding tokens get `padding_idx`.
    fn position_ids(&self, ids: &[i64], b: usize, l: usize, device: &Device) -> Result<Tensor> {
        let mut out = Vec::with_capacity(b * l);
        for row in ids.chunks(l) {
            let mut count = 0i64;
            for &id in row {
                if id != self.padding_idx {
                    count += 1;
                    out.push(count + self.padding_idx);
                } else {
                    out.push(self.padding_idx);
                }
            }
        }
        Ok(Tensor::from_vec(out, (b, l), device)?)
    }

    /// `calculate_spatial_position_embeddings`: x0, y0, x1, y1, height and width, concatenated.
    fn spatial(&self, boxes: &[i64], b: usize, l: usize, device: &Device) -> Result<Tensor> {
        if let Some(bad) = boxes.iter().find(|&&v| v < 0 || v as usize >= self.max_2d) {
            return Err(Error::input(format!(
                "The `bbox` coordinate values should be within 0-1000 range. (got {bad}; every coordinate must be in [0, max_2d_position_embeddings = {}))",
                self.max_2d
            )));
        }
        let column = |f: &dyn Fn(&[i64]) -> i64| -> Result<Tensor> {
            let v: Vec<i64> = boxes.chunks(4).map(f).collect();
            Ok(Tensor::from_vec(v, (b, l), device)?)
        };
        let left = self.x_position_embeddings.forward(&column(&|c| c[0])?)?;
        let upper = self.y_position_embeddings.forward(&column(&|c| c[1])?)?;
        let right = self.x_position_embeddings.forward(&column(&|c| c[2])?)?;
        let lower = self.y_position_embeddings.forward(&column(&|c| c[3])?)?;
        let h = self
            .h_position_embeddings
            .forward(&column(&|c| (c[3] - c[1]).clamp(0, SHAPE_CLIP))?)?;
        let w = self
            .w_position_embeddings
            .forward(&column(&|c| (c[2] - c[0]).clamp(0, SHAPE_CLIP))?)?;
        Ok(Tensor::cat(
            &[&left, &upper, &right, &lower, &h, &w],
            D::Minus1,
        )?)
    }

    /// words + token types + positions + layout, then LayerNorm.
    fn forward(
        &self,
        input_ids: &Tensor,
        ids: &[i64],
        boxes: &[i64],
        token_type_ids: Option<&Tensor>,
    ) -> Result<Tensor> {
        let (b, l) = input_ids.dims2()?;
        let device = input_ids.device();
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
            None => {
                self.token_type_embeddings
                    .forward(&Tensor::zeros((b, l), DType::I64, device)?)?
            }
        };
        let positions = self
            .position_embeddings
            .forward(&self.position_ids(ids, b, l, device)?)?;
        let x = ((words + types)? + positions)?;
        let x = (x + self.spatial(boxes, b, l, device)?)?;
        self.layer_norm.forward(&x)
    }
}

struct VisualEmbeddings {
    proj: Conv2d,
    cls_token: Tensor,
    pos_embed: Tensor,
    norm: LayerNorm,
    num_channels: usize,
    input_size: usize,
    patch_size: usize,
    dtype: DType,
}

impl VisualEmbeddings {
    fn load(cfg: &LayoutLMv3Config, vb: &VarBuilder) -> Result<Self> {
        let d = cfg.hidden_size;
        let std = cfg.initializer_range;
        let grid = cfg.grid();
        let spec = Conv2dSpec {
            in_channels: cfg.num_channels,
            out_channels: d,
            kernel: cfg.patch_size,
            stride: cfg.patch_size,
            padding: 0,
            groups: 1,
            bias: true,
        };
        Ok(VisualEmbeddings {
            proj: Conv2d::load(&vb.pp("patch_embed").pp("proj"), spec, std)?,
            cls_token: vb.get(&[1, 1, d], "cls_token", Init::Const(0.0))?,
            pos_embed: vb.get(&[1, grid * grid + 1, d], "pos_embed", Init::Const(0.0))?,
            norm: LayerNorm::load(&vb.pp("norm"), d, 1e-6)?,
            num_channels: cfg.num_channels,
            input_size: cfg.input_size,
            patch_size: cfg.patch_size,
            dtype: vb.dtype(),
        })
    }

    /// `forward_image`: patches, `[CLS]`, absolute positions, then `norm`.
    fn forward(&self, pixel_values: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = pixel_values.dims4().map_err(|_| {
            Error::input(format!(
                "pixel_values must be [batch, channels, height, width], got {:?}",
                pixel_values.dims()
            ))
        })?;
        if c != self.num_channels {
            return Err(Error::input(format!(
                "pixel_values has {c} channels but the model expects num_channels = {}",
                self.num_channels
            )));
        }
        if h < self.patch_size || w < self.patch_size {
            return Err(Error::input(format!(
                "Input image size ({h}*{w}) is smaller than the patch size ({0}*{0}).",
                self.patch_size
            )));
        }
        if b == 0 {
            return Err(Error::input("pixel_values is empty"));
        }
        // forward_image adds the fixed pos_embed without interpolation: the patch count must
        // match it (an input_size x input_size image, or any size with as many patches).
        let tokens = (h / self.patch_size) * (w / self.patch_size) + 1;
        let rows = self.pos_embed.dim(1)?;
        if tokens != rows {
            return Err(Error::input(format!(
                "Input image size ({h}*{w}) doesn't match model ({0}*{0}): The size of tensor a ({tokens}) must match the size of tensor b ({rows}) at non-singleton dimension 1",
                self.input_size
            )));
        }
        let patches = self
            .proj
            .forward(&pixel_values.to_dtype(self.dtype)?)?
            .flatten_from(2)?
            .transpose(1, 2)?;
        let d = patches.dim(2)?;
        let cls = self.cls_token.expand((b, 1, d))?;
        let x = Tensor::cat(&[&cls, &patches], 1)?.broadcast_add(&self.pos_embed)?;
        self.norm.forward(&x)
    }
}

struct LayoutLMv3Layer {
    query: Linear,
    key: Linear,
    value: Linear,
    num_heads: usize,
    attention_output: Linear,
    attention_norm: LayerNorm,
    intermediate: Linear,
    output: Linear,
    output_norm: LayerNorm,
    act: Activation,
}

impl LayoutLMv3Layer {
    fn load(cfg: &LayoutLMv3Config, vb: &VarBuilder) -> Result<Self> {
        let d = cfg.hidden_size;
        let std = cfg.initializer_range;
        let att = vb.pp("attention");
        let sa = att.pp("self");
        Ok(LayoutLMv3Layer {
            query: Linear::load(&sa.pp("query"), d, d, true, std)?,
            key: Linear::load(&sa.pp("key"), d, d, true, std)?,
            value: Linear::load(&sa.pp("value"), d, d, true, std)?,
            num_heads: cfg.num_attention_heads,
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

    fn split_heads(&self, x: &Tensor) -> Result<Tensor> {
        let (b, l, d) = x.dims3()?;
        Ok(x.reshape((b, l, self.num_heads, d / self.num_heads))?
            .transpose(1, 2)?
            .contiguous()?)
    }

    /// `LayoutLMv3SelfAttention`: `softmax_cogview((Q/√hd)Kᵀ + bias/√hd + mask) V`, where `bias`
    /// is the (already summed) relative position bias `[B, heads, T, T]`.
    fn attention(
        &self,
        x: &Tensor,
        mask: Option<&Tensor>,
        bias: Option<&Tensor>,
        want_probs: bool,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let (b, l, d) = x.dims3()?;
        let scale = 1.0 / ((d / self.num_heads) as f64).sqrt();
        let q = self.split_heads(&self.query.forward(x)?)?;
        let k = self.split_heads(&self.key.forward(x)?)?;
        let v = self.split_heads(&self.value.forward(x)?)?;
        let mut scores = (q * scale)?.matmul(&k.t()?)?;
        if let Some(bias) = bias {
            scores = (scores + (bias * scale)?)?;
        }
        if let Some(m) = mask {
            scores = scores.broadcast_add(m)?;
        }
        // cogview_attention: softmax((s / α - max(s / α)) · α).
        let dtype = scores.dtype();
        let scaled = (scores.to_dtype(DType::F32)? / COGVIEW_ALPHA)?;
        let max = scaled.max_keepdim(D::Minus1)?;
        let shifted = (scaled.broadcast_sub(&max)? * COGVIEW_ALPHA)?;
        let probs = candle_nn::ops::softmax_last_dim(&shifted)?.to_dtype(dtype)?;
        let ctx = probs.matmul(&v)?.transpose(1, 2)?.reshape((b, l, d))?;
        Ok((ctx, want_probs.then_some(probs)))
    }

    /// Post-LN block: `LN(h + o(attn(h)))`, then `LN(h + fc2(act(fc1(h))))`.
    fn forward(
        &self,
        h: &Tensor,
        mask: Option<&Tensor>,
        bias: Option<&Tensor>,
        want_probs: bool,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let (ctx, probs) = self.attention(h, mask, bias, want_probs)?;
        let h = self
            .attention_norm
            .forward(&(self.attention_output.forward(&ctx)? + h)?)?;
        let f = self.act.forward(&self.intermediate.forward(&h)?)?;
        let h = self
            .output_norm
            .forward(&(self.output.forward(&f)? + &h)?)?;
        Ok((h, probs))
    }
}

/// The encoder's relative position tables (`rel_pos_bias`, `rel_pos_x_bias`, `rel_pos_y_bias`),
/// each `[heads, bins]`.
struct RelativeBias {
    rel_pos: Option<(Tensor, usize, usize)>,
    rel_2d: Option<(Tensor, Tensor, usize, usize)>,
}

impl RelativeBias {
    fn load(cfg: &LayoutLMv3Config, vb: &VarBuilder) -> Result<Self> {
        let heads = cfg.num_attention_heads;
        let std = cfg.initializer_range;
        let rel_pos = if cfg.has_relative_attention_bias {
            Some((
                vb.get(
                    &[heads, cfg.rel_pos_bins],
                    "rel_pos_bias.weight",
                    Init::Normal(std),
                )?,
                cfg.rel_pos_bins,
                cfg.max_rel_pos,
            ))
        } else {
            None
        };
        let rel_2d = if cfg.has_spatial_attention_bias {
            Some((
                vb.get(
                    &[heads, cfg.rel_2d_pos_bins],
                    "rel_pos_x_bias.weight",
                    Init::Normal(std),
                )?,
                vb.get(
                    &[heads, cfg.rel_2d_pos_bins],
                    "rel_pos_y_bias.weight",
                    Init::Normal(std),
                )?,
                cfg.rel_2d_pos_bins,
                cfg.max_rel_2d_pos,
            ))
        } else {
            None
        };
        Ok(RelativeBias { rel_pos, rel_2d })
    }

    /// The bias every layer adds (before the `1/√hd` scale): `rel_pos + rel_2d_pos` when both
    /// are enabled, `rel_pos` alone when only the 1-D one is, none otherwise (transformers ignores
    /// a spatial bias without the 1-D one). `positions` are `[B][T]`, `boxes` `[B][T][4]` flat.
    fn compute(&self, positions: &[Vec<i64>], boxes: &[Vec<i64>]) -> Result<Option<Tensor>> {
        let Some((w1, bins, max)) = &self.rel_pos else {
            return Ok(None);
        };
        let b = positions.len();
        let t = positions.first().map_or(0, Vec::len);
        let rel_pos = gather_bias(w1, bucket_matrix(positions, *bins, *max), b, t)?;
        let Some((wx, wy, bins2, max2)) = &self.rel_2d else {
            return Ok(Some(rel_pos));
        };
        let coord = |k: usize| -> Vec<Vec<i64>> {
            boxes
                .iter()
                .map(|row| {
                    row.chunks(4)
                        .map(|c| c.get(k).copied().unwrap_or(0))
                        .collect()
                })
                .collect()
        };
        let x = gather_bias(wx, bucket_matrix(&coord(0), *bins2, *max2), b, t)?;
        let y = gather_bias(wy, bucket_matrix(&coord(3), *bins2, *max2), b, t)?;
        Ok(Some((rel_pos + (x + y)?)?))
    }
}

/// `init_visual_bbox`: the `[CLS]` box `[1, 1, 999, 999]`, then one box per patch in row-major
/// order on a 0-1000 grid, flattened (4 values per token).
fn visual_bbox(grid: usize) -> Vec<i64> {
    let g = grid as i64;
    let edge = |i: i64| i * VISUAL_BBOX_MAX / g;
    let mut out = vec![1, 1, VISUAL_BBOX_MAX - 1, VISUAL_BBOX_MAX - 1];
    for r in 0..g {
        for c in 0..g {
            out.extend([edge(c), edge(r), edge(c + 1), edge(r + 1)]);
        }
    }
    out
}

/// What the LayoutLMv3 body returns.
struct BodyOutput {
    last_hidden_state: Tensor,
    /// Number of text tokens at the start of the sequence.
    text_len: usize,
    hidden_states: Option<Vec<Tensor>>,
    attentions: Option<Vec<Tensor>>,
}

/// `LayoutLMv3Model`: text and patch embeddings, one encoder over both, no pooler.
pub struct LayoutLMv3Model {
    embeddings: Option<TextEmbeddings>,
    /// The patch embeddings and the `LayerNorm` applied to the joint embeddings.
    visual: Option<(VisualEmbeddings, LayerNorm)>,
    layers: Vec<LayoutLMv3Layer>,
    bias: RelativeBias,
    grid: usize,
}

impl LayoutLMv3Model {
    /// Loads the body from `vb` (the root of a LayoutLMv3Model checkpoint, or `layoutlmv3.`
    /// inside a head).
    pub fn load(cfg: &LayoutLMv3Config, vb: &VarBuilder) -> Result<Self> {
        cfg.validate()?;
        let embeddings = if cfg.text_embed {
            Some(TextEmbeddings::load(cfg, &vb.pp("embeddings"))?)
        } else {
            None
        };
        let visual = if cfg.visual_embed {
            Some((
                VisualEmbeddings::load(cfg, vb)?,
                LayerNorm::load(&vb.pp("LayerNorm"), cfg.hidden_size, cfg.layer_norm_eps)?,
            ))
        } else {
            None
        };
        let encoder = vb.pp("encoder");
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| LayoutLMv3Layer::load(cfg, &encoder.pp("layer").pp(i)))
            .collect::<Result<Vec<_>>>()?;
        Ok(LayoutLMv3Model {
            embeddings,
            visual,
            layers,
            bias: RelativeBias::load(cfg, &encoder)?,
            grid: if cfg.visual_embed { cfg.grid() } else { 0 },
        })
    }

    /// Reads and checks `bbox` `[B, L, 4]` (zeros when absent).
    fn boxes(batch: &Batch, b: usize, l: usize) -> Result<Vec<i64>> {
        match batch.get("bbox") {
            Some(bbox) => {
                if bbox.dims() != [b, l, 4] {
                    return Err(Error::input(format!(
                        "bbox must be [batch, length, 4] = [{b}, {l}, 4] to match input_ids, got {:?}",
                        bbox.dims()
                    )));
                }
                if bbox.dtype().is_float() {
                    return Err(Error::input(format!(
                        "bbox must hold integer coordinates, got {:?}",
                        bbox.dtype()
                    )));
                }
                Ok(bbox.flatten_all()?.to_dtype(DType::I64)?.to_vec1::<i64>()?)
            }
            None => Ok(vec![0; b * l * 4]),
        }
    }

    fn body(&self, batch: &Batch, options: &ForwardOptions) -> Result<BodyOutput> {
        let input_ids = batch.get("input_ids");
        let pixel_values = batch.get("pixel_values");
        if input_ids.is_none() && pixel_values.is_none() {
            return Err(Error::input(
                "You have to specify either input_ids or inputs_embeds or pixel_values",
            ));
        }
        // Text: embeddings, mask, positions 0..L and boxes.
        let mut parts: Vec<Tensor> = Vec::new();
        let mut masks: Vec<Tensor> = Vec::new();
        let mut positions: Vec<Vec<i64>> = Vec::new();
        let mut boxes: Vec<Vec<i64>> = Vec::new();
        let mut text_len = 0;
        if let Some(input_ids) = input_ids {
            let embeddings = self.embeddings.as_ref().ok_or_else(|| {
                Error::input("this LayoutLMv3 has no text embeddings (text_embed is false)")
            })?;
            let (b, l) = check_input_ids(input_ids, embeddings.max_len())?;
            let ids = input_ids
                .flatten_all()?
                .to_dtype(DType::I64)?
                .to_vec1::<i64>()?;
            let flat_boxes = Self::boxes(batch, b, l)?;
            parts.push(embeddings.forward(
                input_ids,
                &ids,
                &flat_boxes,
                batch.get("token_type_ids"),
            )?);
            masks.push(match batch.get("attention_mask") {
                Some(m) => {
                    if m.dims() != input_ids.dims() {
                        return Err(Error::input(format!(
                            "attention_mask has shape {:?} but input_ids has {:?}",
                            m.dims(),
                            input_ids.dims()
                        )));
                    }
                    m.to_dtype(DType::F32)?
                }
                None => Tensor::ones((b, l), DType::F32, input_ids.device())?,
            });
            positions = vec![(0..l as i64).collect(); b];
            boxes = flat_boxes.chunks(l * 4).map(<[i64]>::to_vec).collect();
            text_len = l;
        } else {
            for name in ["bbox", "attention_mask", "token_type_ids"] {
                if batch.get(name).is_some() {
                    return Err(Error::input(format!(
                        "`{name}` was given without input_ids"
                    )));
                }
            }
        }
        // Image: patch tokens (all attended), positions 0..V and the patch grid's boxes.
        if let Some(pixel_values) = pixel_values {
            let (visual, joint_norm) = self.visual.as_ref().ok_or_else(|| {
                Error::input("this LayoutLMv3 has no patch embeddings (visual_embed is false)")
            })?;
            let v = visual.forward(pixel_values)?;
            let (b, n, _) = v.dims3()?;
            if let Some(text) = parts.first() {
                if text.dim(0)? != b {
                    return Err(Error::input(format!(
                        "pixel_values has batch size {b} but input_ids has {}",
                        text.dim(0)?
                    )));
                }
            } else {
                positions = vec![Vec::new(); b];
                boxes = vec![Vec::new(); b];
            }
            masks.push(Tensor::ones((b, n), DType::F32, v.device())?);
            let vbox = visual_bbox(self.grid);
            for (p, bx) in positions.iter_mut().zip(boxes.iter_mut()) {
                p.extend(0..n as i64);
                bx.extend_from_slice(&vbox);
            }
            parts.push(v);
            let joined = Tensor::cat(&parts, 1)?;
            parts = vec![joint_norm.forward(&joined)?];
        }
        let h = Tensor::cat(&parts, 1)?;
        let mask = additive_mask(&Tensor::cat(&masks, 1)?, h.dtype())?;
        let bias = self
            .bias
            .compute(&positions, &boxes)?
            .map(|t| t.to_dtype(h.dtype()))
            .transpose()?;
        let enc = run_encoder(
            &self.layers,
            h,
            Some(&mask),
            options,
            |layer, h, mask, want| layer.forward(h, mask, bias.as_ref(), want),
        )?;
        Ok(BodyOutput {
            last_hidden_state: enc.last_hidden_state,
            text_len,
            hidden_states: enc.hidden_states,
            attentions: enc.attentions,
        })
    }
}

impl TaskModel for LayoutLMv3Model {
    fn class_name(&self) -> &'static str {
        "LayoutLMv3Model"
    }
    fn forward(&self, batch: &Batch, options: &ForwardOptions) -> Result<ModelOutput> {
        let body = self.body(batch, options)?;
        let mut out = ModelOutput {
            hidden_states: body.hidden_states,
            attentions: body.attentions,
            ..Default::default()
        };
        out.insert("last_hidden_state", body.last_hidden_state);
        Ok(out)
    }
}

/// `LayoutLMv3ClassificationHead` (without pooled features): dense → tanh → out_proj.
struct ClassificationHead {
    dense: Linear,
    out_proj: Linear,
}

impl ClassificationHead {
    fn load(cfg: &LayoutLMv3Config, vb: &VarBuilder, num_labels: usize) -> Result<Self> {
        let d = cfg.hidden_size;
        let std = cfg.initializer_range;
        Ok(ClassificationHead {
            dense: Linear::load(&vb.pp("dense"), d, d, true, std)?,
            out_proj: Linear::load(&vb.pp("out_proj"), d, num_labels, true, std)?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.out_proj.forward(&self.dense.forward(x)?.tanh()?)
    }
}

/// `LayoutLMv3ForTokenClassification.classifier`: a Linear when `num_labels < 10`, else a
/// classification head.
enum TokenClassifier {
    Linear(Linear),
    Head(ClassificationHead),
}

/// Which head sits on the LayoutLMv3 body.
enum Head {
    /// Text tokens → `classifier`.
    Token(TokenClassifier),
    /// The first token → `classifier` (a classification head).
    Sequence(ClassificationHead),
    /// Every token (text and patches) → `qa_outputs` (a classification head with 2 outputs).
    QuestionAnswering(ClassificationHead),
}

/// LayoutLMv3 with a task head: `LayoutLMv3ForTokenClassification`,
/// `LayoutLMv3ForSequenceClassification` or `LayoutLMv3ForQuestionAnswering`.
pub struct LayoutLMv3WithHead {
    layoutlmv3: LayoutLMv3Model,
    head: Head,
    class_name: &'static str,
}

impl LayoutLMv3WithHead {
    /// Loads `layoutlmv3.*` and the head for `task`.
    pub fn load(task: Task, config: &Config, vb: &VarBuilder) -> Result<Self> {
        let cfg: &LayoutLMv3Config = config.model_config()?;
        let n = config.num_labels();
        let (head, class_name) = match task {
            Task::TokenClassification => {
                let classifier = if n < 10 {
                    TokenClassifier::Linear(Linear::load(
                        &vb.pp("classifier"),
                        cfg.hidden_size,
                        n,
                        true,
                        cfg.initializer_range,
                    )?)
                } else {
                    TokenClassifier::Head(ClassificationHead::load(cfg, &vb.pp("classifier"), n)?)
                };
                (Head::Token(classifier), "LayoutLMv3ForTokenClassification")
            }
            Task::SequenceClassification => (
                Head::Sequence(ClassificationHead::load(cfg, &vb.pp("classifier"), n)?),
                "LayoutLMv3ForSequenceClassification",
            ),
            Task::QuestionAnswering => {
                if n != 2 {
                    return Err(Error::config(
                        "num_labels",
                        format!("config.num_labels should be 2, but it is {n}"),
                    ));
                }
                (
                    Head::QuestionAnswering(ClassificationHead::load(
                        cfg,
                        &vb.pp("qa_outputs"),
                        n,
                    )?),
                    "LayoutLMv3ForQuestionAnswering",
                )
            }
            other => return Err(unsupported_task(&LayoutLMv3, other)),
        };
        let layoutlmv3 = LayoutLMv3Model::load(cfg, &vb.pp("layoutlmv3"))?;
        Ok(LayoutLMv3WithHead {
            layoutlmv3,
            head,
            class_name,
        })
    }
}

impl TaskModel for LayoutLMv3WithHead {
    fn class_name(&self) -> &'static str {
        self.class_name
    }

    fn forward(&self, batch: &Batch, options: &ForwardOptions) -> Result<ModelOutput> {
        let body = self.layoutlmv3.body(batch, options)?;
        let mut out = ModelOutput {
            hidden_states: body.hidden_states,
            attentions: body.attentions,
            ..Default::default()
        };
        let h = &body.last_hidden_state;
        match &self.head {
            Head::Token(classifier) => {
                if body.text_len == 0 {
                    return Err(Error::input(
                        "LayoutLMv3ForTokenClassification needs input_ids",
                    ));
                }
                let text = h.narrow(1, 0, body.text_len)?;
                let logits = match classifier {
                    TokenClassifier::Linear(linear) => linear.forward(&text)?,
                    TokenClassifier::Head(head) => head.forward(&text)?,
                };
                out.insert("logits", logits);
            }
            Head::Sequence(classifier) => {
                let first = h.narrow(1, 0, 1)?.squeeze(1)?;
                out.insert("logits", classifier.forward(&first)?);
            }
            Head::QuestionAnswering(qa) => split_qa_logits(&qa.forward(h)?, &mut out)?,
        }
        Ok(out)
    }
}

/// The registry entry for `model_type: "layoutlmv3"`.
pub struct LayoutLMv3;

impl Architecture for LayoutLMv3 {
    fn model_type(&self) -> &'static str {
        "layoutlmv3"
    }
    fn config_class(&self) -> &'static str {
        "LayoutLMv3Config"
    }
    fn base_model_prefix(&self) -> &'static str {
        "layoutlmv3"
    }
    fn tokenizer_class(&self) -> Option<&'static str> {
        Some("LayoutLMv3Tokenizer")
    }
    fn image_processor_class(&self) -> Option<&'static str> {
        Some("LayoutLMv3ImageProcessor")
    }
    fn processor_class(&self) -> Option<&'static str> {
        Some("LayoutLMv3Processor")
    }
    fn tasks(&self) -> &'static [(Task, &'static str)] {
        &[
            (Task::Base, "LayoutLMv3Model"),
            (
                Task::TokenClassification,
                "LayoutLMv3ForTokenClassification",
            ),
            (
                Task::SequenceClassification,
                "LayoutLMv3ForSequenceClassification",
            ),
            (Task::QuestionAnswering, "LayoutLMv3ForQuestionAnswering"),
        ]
    }
    fn parse_config(&self, raw: &Map<String, Value>) -> Result<Arc<dyn ModelConfig>> {
        let cfg: LayoutLMv3Config = parse_typed(raw)?;
        cfg.validate()?;
        Ok(Arc::new(cfg))
    }
    fn load(&self, task: Task, config: &Config, vb: &VarBuilder) -> Result<Box<dyn TaskModel>> {
        match task {
            Task::Base => Ok(Box::new(LayoutLMv3Model::load(config.model_config()?, vb)?)),
            _ => Ok(Box::new(LayoutLMv3WithHead::load(task, config, vb)?)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_match_transformers() {
        // transformers' relative_position_bucket(num_buckets=32, max_distance=128), by hand:
        // 16 buckets per sign, exact below 8, logarithmic up to 128.
        let b = |r| relative_position_bucket(r, 32, 128);
        assert_eq!(b(0), 0);
        assert_eq!(b(1), 17);
        assert_eq!(b(-1), 1);
        assert_eq!(b(7), 23);
        assert_eq!(b(8), 24);
        assert_eq!(b(-8), 8);
        assert_eq!(b(16), 26);
        assert_eq!(b(127), 31);
        assert_eq!(b(-1000), 15);
    }

    #[test]
    fn visual_boxes_follow_init_visual_bbox() {
        let v = visual_bbox(2);
        assert_eq!(
            v,
            vec![
                1, 1, 999, 999, 0, 0, 500, 500, 500, 0, 1000, 500, 0, 500, 500, 1000, 500, 500,
                1000, 1000
            ]
        );
    }
}
