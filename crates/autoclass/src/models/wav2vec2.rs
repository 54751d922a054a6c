//! Wav2Vec2, following transformers' `models/wav2vec2/modeling_wav2vec2.py`.
//!
//! The speech body (feature encoder, feature projection, positional convolution, the post-LN
//! "base" and pre-LN "stable" encoders) and the two heads live here and are shared with HuBERT
//! (`models/hubert.rs`), whose transformers modules inherit from these.

use std::any::Any;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::config::{parse_typed, Config, ModelConfig};
use crate::error::{Error, Result};
use crate::kernels;
use crate::models::{run_encoder, Batch, EncoderOutput, ForwardOptions, ModelOutput, TaskModel};
use crate::nn::{
    additive_mask, Activation, Conv1d, Conv1dSpec, GroupNorm, LayerNorm, Linear, MultiHeadAttention,
};
use crate::registry::{unsupported_task, Architecture, Task};
use crate::weights::{Init, VarBuilder};

/// Epsilon of the feature encoder's norms and of the attention adapter's LayerNorm (transformers
/// leaves torch's default there, not `layer_norm_eps`).
const TORCH_NORM_EPS: f64 = 1e-5;

/// `Wav2Vec2Config`, with transformers' defaults for every field.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct Wav2Vec2Config {
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
    /// Dropout after the feature projection (identity at inference).
    pub feat_proj_dropout: f64,
    /// Dropout before the quantizer (pre-training only).
    pub feat_quantizer_dropout: f64,
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
    /// Pre-LN encoder layers and a final LayerNorm (large / lv60 checkpoints).
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
    /// Codebook entries per group (pre-training only).
    pub num_codevectors_per_group: usize,
    /// Codebook groups (pre-training only).
    pub num_codevector_groups: usize,
    /// Contrastive loss temperature (pre-training only).
    pub contrastive_logits_temperature: f64,
    /// Negative samples (pre-training only).
    pub num_negatives: usize,
    /// Quantized vector size (pre-training only).
    pub codevector_dim: usize,
    /// Final projection size (pre-training only).
    pub proj_codevector_dim: usize,
    /// Diversity loss weight (pre-training only).
    pub diversity_loss_weight: f64,
    /// CTC loss reduction (training only).
    pub ctc_loss_reduction: String,
    /// Whether infinite CTC losses are zeroed (training only).
    pub ctc_zero_infinity: bool,
    /// Sequence classification on a learned softmax-weighted sum of all hidden states.
    pub use_weighted_layer_sum: bool,
    /// Width of the classification projector before mean pooling.
    pub classifier_proj_size: usize,
    /// X-vector TDNN channels (XVector head, not ported).
    pub tdnn_dim: Vec<usize>,
    /// X-vector TDNN kernels (XVector head, not ported).
    pub tdnn_kernel: Vec<usize>,
    /// X-vector TDNN dilations (XVector head, not ported).
    pub tdnn_dilation: Vec<usize>,
    /// X-vector embedding size (XVector head, not ported).
    pub xvector_output_dim: usize,
    /// Padding token id (the CTC blank).
    pub pad_token_id: Option<i64>,
    /// Beginning-of-sequence token id.
    pub bos_token_id: Option<i64>,
    /// End-of-sequence token id.
    pub eos_token_id: Option<i64>,
    /// A convolutional adapter on top of the encoder (not supported by this port).
    pub add_adapter: bool,
    /// Adapter kernel size.
    pub adapter_kernel_size: usize,
    /// Adapter stride.
    pub adapter_stride: usize,
    /// Adapter layers.
    pub num_adapter_layers: usize,
    /// Encoder output width with an adapter (`hidden_size` when unset).
    pub output_hidden_size: Option<usize>,
    /// Width of the per-layer attention adapters of stable-layer-norm layers (MMS), if any.
    pub adapter_attn_dim: Option<usize>,
}

impl Default for Wav2Vec2Config {
    fn default() -> Self {
        Wav2Vec2Config {
            vocab_size: Some(32),
            hidden_size: 768,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            intermediate_size: 3072,
            hidden_act: Activation::Gelu,
            hidden_dropout: 0.1,
            activation_dropout: 0.1,
            attention_dropout: 0.1,
            feat_proj_dropout: 0.0,
            feat_quantizer_dropout: 0.0,
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
            do_stable_layer_norm: false,
            apply_spec_augment: true,
            mask_time_prob: 0.05,
            mask_time_length: 10,
            mask_time_min_masks: 2,
            mask_feature_prob: 0.0,
            mask_feature_length: 10,
            mask_feature_min_masks: 0,
            num_codevectors_per_group: 320,
            num_codevector_groups: 2,
            contrastive_logits_temperature: 0.1,
            num_negatives: 100,
            codevector_dim: 256,
            proj_codevector_dim: 256,
            diversity_loss_weight: 0.1,
            ctc_loss_reduction: "sum".into(),
            ctc_zero_infinity: false,
            use_weighted_layer_sum: false,
            classifier_proj_size: 256,
            tdnn_dim: vec![512, 512, 512, 512, 1500],
            tdnn_kernel: vec![5, 3, 3, 1, 1],
            tdnn_dilation: vec![1, 2, 3, 1, 1],
            xvector_output_dim: 512,
            pad_token_id: Some(0),
            bos_token_id: Some(1),
            eos_token_id: Some(2),
            add_adapter: false,
            adapter_kernel_size: 3,
            adapter_stride: 2,
            num_adapter_layers: 3,
            output_hidden_size: None,
            adapter_attn_dim: None,
        }
    }
}

impl ModelConfig for Wav2Vec2Config {
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

impl Wav2Vec2Config {
    /// The checks of `Wav2Vec2Config.__init__`.
    fn validate(&self) -> Result<()> {
        check_conv_layers(&self.conv_dim, &self.conv_stride, &self.conv_kernel)
    }

    /// What the shared speech body needs.
    pub(crate) fn speech(&self) -> SpeechConfig {
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
            conv_pos_batch_norm: false,
            do_stable_layer_norm: self.do_stable_layer_norm,
            feat_proj_layer_norm: true,
            adapter_attn_dim: self.adapter_attn_dim,
            masked_spec_embed: self.mask_time_prob > 0.0 || self.mask_feature_prob > 0.0,
            use_weighted_layer_sum: self.use_weighted_layer_sum,
            classifier_proj_size: self.classifier_proj_size,
            vocab_size: self.vocab_size,
        }
    }

    /// Refuses `add_adapter` (the convolutional adapter is not ported), with transformers'
    /// message where it has one.
    fn check_adapter(&self, task: Task) -> Result<()> {
        if !self.add_adapter {
            return Ok(());
        }
        let reason = match task {
            Task::AudioClassification => "Sequence classification does not support the use of Wav2Vec2 adapters (config.add_adapter=True)",
            _ => "is true: the convolutional adapter (Wav2Vec2Adapter) is not supported by autoclass",
        };
        Err(Error::config("add_adapter", reason))
    }
}

/// `len(conv_dim) == len(conv_stride) == len(conv_kernel)`, as the config constructors check,
/// plus positive kernels and strides (a zero would crash torch later).
pub(crate) fn check_conv_layers(dim: &[usize], stride: &[usize], kernel: &[usize]) -> Result<()> {
    if stride.len() != dim.len() || kernel.len() != dim.len() {
        return Err(Error::config(
            "conv_dim",
            format!(
                "Configuration for convolutional layers is incorrect. It is required that `len(config.conv_dim)` == `len(config.conv_stride)` == `len(config.conv_kernel)`, but is `len(config.conv_dim) = {}`, `len(config.conv_stride) = {}`, `len(config.conv_kernel) = {}`.",
                dim.len(),
                stride.len(),
                kernel.len()
            ),
        ));
    }
    if dim.is_empty() {
        return Err(Error::config("conv_dim", "must list at least one layer"));
    }
    if dim.contains(&0) || stride.contains(&0) || kernel.contains(&0) {
        return Err(Error::config(
            "conv_dim",
            format!(
                "channels, strides and kernels must be positive, got conv_dim {dim:?}, conv_stride {stride:?}, conv_kernel {kernel:?}"
            ),
        ));
    }
    Ok(())
}

/// The config fields the shared speech body and heads read, from a `Wav2Vec2Config` or a
/// `HubertConfig`.
#[derive(Clone, Debug)]
pub(crate) struct SpeechConfig {
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub hidden_act: Activation,
    pub initializer_range: f64,
    pub layer_norm_eps: f64,
    pub feat_extract_norm: String,
    pub feat_extract_activation: Activation,
    pub conv_dim: Vec<usize>,
    pub conv_stride: Vec<usize>,
    pub conv_kernel: Vec<usize>,
    pub conv_bias: bool,
    pub num_conv_pos_embeddings: usize,
    pub num_conv_pos_embedding_groups: usize,
    /// HuBERT's BatchNorm-before-conv variant (no weight norm).
    pub conv_pos_batch_norm: bool,
    pub do_stable_layer_norm: bool,
    /// Whether the feature projection starts with a LayerNorm (always for Wav2Vec2).
    pub feat_proj_layer_norm: bool,
    pub adapter_attn_dim: Option<usize>,
    /// Whether the model has the (training-only) `masked_spec_embed` parameter.
    pub masked_spec_embed: bool,
    pub use_weighted_layer_sum: bool,
    pub classifier_proj_size: usize,
    pub vocab_size: Option<usize>,
}

impl SpeechConfig {
    /// The checks transformers' module constructors make.
    fn check_model(&self) -> Result<()> {
        check_conv_layers(&self.conv_dim, &self.conv_stride, &self.conv_kernel)?;
        if self.feat_extract_norm != "group" && self.feat_extract_norm != "layer" {
            return Err(Error::config(
                "feat_extract_norm",
                format!(
                    "`config.feat_extract_norm` is {}, but has to be one of ['group', 'layer']",
                    self.feat_extract_norm
                ),
            ));
        }
        let (d, heads) = (self.hidden_size, self.num_attention_heads);
        if heads == 0 || d % heads != 0 {
            return Err(Error::config(
                "num_attention_heads",
                format!(
                    "embed_dim must be divisible by num_heads (got `embed_dim`: {d} and `num_heads`: {heads})."
                ),
            ));
        }
        if self.num_conv_pos_embeddings == 0 {
            return Err(Error::config("num_conv_pos_embeddings", "must be positive"));
        }
        Ok(())
    }

    /// `_get_feat_extract_output_lengths` on one length, with Python's floor division (so a
    /// too-short length goes negative, as in transformers).
    fn output_length(&self, mut len: i64) -> i64 {
        for (&k, &s) in self.conv_kernel.iter().zip(&self.conv_stride) {
            len = (len - k as i64).div_euclid(s as i64) + 1;
        }
        len
    }

    /// The fewest samples that give one frame.
    fn receptive_field(&self) -> usize {
        self.conv_kernel
            .iter()
            .zip(&self.conv_stride)
            .rev()
            .fold(1usize, |r, (&k, &s)| {
                (r - 1).saturating_mul(s).saturating_add(k)
            })
    }
}

/// The norm after a feature-encoder convolution.
enum ConvNorm {
    None,
    /// GroupNorm(num_groups = channels): each channel normalised over time.
    Group(GroupNorm),
    /// LayerNorm over the channels of each frame.
    Layer(LayerNorm),
}

/// `Wav2Vec2{NoLayerNorm,LayerNorm,GroupNorm}ConvLayer`.
struct FeatureEncoderLayer {
    conv: Conv1d,
    norm: ConvNorm,
}

/// `Wav2Vec2FeatureEncoder`: strided convolutions from samples to frames.
struct FeatureEncoder {
    layers: Vec<FeatureEncoderLayer>,
    act: Activation,
}

impl FeatureEncoder {
    fn load(cfg: &SpeechConfig, vb: &VarBuilder) -> Result<Self> {
        let mut layers = Vec::with_capacity(cfg.conv_dim.len());
        let mut in_channels = 1;
        for (i, ((&out, &kernel), &stride)) in cfg
            .conv_dim
            .iter()
            .zip(&cfg.conv_kernel)
            .zip(&cfg.conv_stride)
            .enumerate()
        {
            let layer_vb = vb.pp("conv_layers").pp(i);
            let spec = Conv1dSpec {
                in_channels,
                out_channels: out,
                kernel,
                stride,
                padding: 0,
                groups: 1,
                bias: cfg.conv_bias,
            };
            // Missing kernels: kaiming_normal_ (std √(2 / fan_in)).
            let std = (2.0 / (in_channels * kernel) as f64).sqrt();
            let conv = Conv1d::load(&layer_vb.pp("conv"), spec, std)?;
            let norm = match (cfg.feat_extract_norm.as_str(), i) {
                ("group", 0) => ConvNorm::Group(GroupNorm::load(
                    &layer_vb.pp("layer_norm"),
                    out,
                    out,
                    TORCH_NORM_EPS,
                )?),
                ("layer", _) => ConvNorm::Layer(LayerNorm::load(
                    &layer_vb.pp("layer_norm"),
                    out,
                    TORCH_NORM_EPS,
                )?),
                _ => ConvNorm::None,
            };
            layers.push(FeatureEncoderLayer { conv, norm });
            in_channels = out;
        }
        Ok(FeatureEncoder {
            layers,
            act: cfg.feat_extract_activation,
        })
    }

    /// `[B, T]` samples → `[B, C, frames]`.
    fn forward(&self, input_values: &Tensor) -> Result<Tensor> {
        if let Some(h) = self.forward_channels_last(input_values)? {
            return Ok(h);
        }
        let mut h = input_values.unsqueeze(1)?;
        for layer in &self.layers {
            h = layer.conv.forward(&h)?;
            h = match &layer.norm {
                ConvNorm::None => h,
                ConvNorm::Group(norm) => norm.forward(&h)?,
                ConvNorm::Layer(norm) => norm.forward(&h.transpose(1, 2)?)?.transpose(1, 2)?,
            };
            h = self.act.forward(&h)?;
        }
        Ok(h)
    }
}

impl FeatureEncoder {
    /// The fast path on f32 CPU samples: every layer channels-last (`[frames, C]`), the
    /// convolutions as packed GEMMs over overlapping rows (no im2col), the norms and exact GELU
    /// in place. Returns `[B, C, frames]` as a transposed view of `[B, frames, C]`; `None` when
    /// a layer is not on the fast path.
    fn forward_channels_last(&self, input_values: &Tensor) -> Result<Option<Tensor>> {
        if input_values.dtype() != DType::F32
            || !input_values.device().is_cpu()
            || self.act != Activation::Gelu
        {
            return Ok(None);
        }
        let (b, l) = input_values.dims2()?;
        let x = input_values.contiguous()?;
        let run = |xd: &[f32]| -> Option<(Vec<f32>, usize)> {
            let mut out = Vec::new();
            let mut frames = 0;
            for bi in 0..b {
                let mut h = xd.get(bi * l..(bi + 1) * l)?.to_vec();
                let mut c = 1;
                for layer in &self.layers {
                    let (mut y, t) = layer.conv.forward_channels_last(&h, c)?;
                    c = layer.conv.out_channels();
                    match &layer.norm {
                        ConvNorm::None => {}
                        ConvNorm::Group(norm) => {
                            let (w, bias, eps) = norm.per_channel_params()?;
                            kernels::elementwise::channel_norm(&mut y, &w, &bias, eps)?;
                        }
                        ConvNorm::Layer(norm) => {
                            let (w, bias, eps) = norm.params()?;
                            y = kernels::elementwise::add_layer_norm(&y, None, &w, &bias, eps)?;
                        }
                    }
                    kernels::elementwise::gelu_erf_par(&mut y);
                    h = y;
                    frames = t;
                }
                out.extend_from_slice(&h);
            }
            Some((out, frames))
        };
        let c = self.layers.last().map_or(1, |l| l.conv.out_channels());
        Ok(match kernels::with_f32(&x, run).flatten() {
            Some((out, frames)) => Some(
                Tensor::from_vec(out, (b, frames, c), input_values.device())?.transpose(1, 2)?,
            ),
            None => None,
        })
    }
}

/// `Wav2Vec2FeatureProjection` / `HubertFeatureProjection`: (LayerNorm →) Linear.
struct FeatureProjection {
    layer_norm: Option<LayerNorm>,
    projection: Linear,
}

impl FeatureProjection {
    fn load(cfg: &SpeechConfig, vb: &VarBuilder) -> Result<Self> {
        let c = cfg.conv_dim.last().copied().unwrap_or(0);
        let layer_norm = if cfg.feat_proj_layer_norm {
            Some(LayerNorm::load(
                &vb.pp("layer_norm"),
                c,
                cfg.layer_norm_eps,
            )?)
        } else {
            None
        };
        Ok(FeatureProjection {
            layer_norm,
            projection: Linear::load(
                &vb.pp("projection"),
                c,
                cfg.hidden_size,
                true,
                cfg.initializer_range,
            )?,
        })
    }

    /// Frames `[B, F, C]` → (projected `[B, F, D]`, the normed frames when there is a LayerNorm).
    fn forward(&self, frames: &Tensor) -> Result<(Tensor, Option<Tensor>)> {
        match &self.layer_norm {
            Some(norm) => {
                let normed = norm.forward(frames)?;
                Ok((self.projection.forward(&normed)?, Some(normed)))
            }
            None => Ok((self.projection.forward(frames)?, None)),
        }
    }
}

/// `nn.BatchNorm1d` in eval mode (running statistics), over `[B, C, L]`.
struct BatchNorm1d {
    scale: Tensor,
    shift: Tensor,
}

impl BatchNorm1d {
    fn load(vb: &VarBuilder, channels: usize) -> Result<Self> {
        let weight = vb.get(&[channels], "weight", Init::Const(1.0))?;
        let bias = vb.get(&[channels], "bias", Init::Const(0.0))?;
        let mean = vb.get(&[channels], "running_mean", Init::Const(0.0))?;
        let var = vb.get(&[channels], "running_var", Init::Const(1.0))?;
        // A buffer of the module: transformers loads it, so it is not unexpected.
        vb.ignore("num_batches_tracked");
        // y = (x - mean) / √(var + eps) · w + b = x · scale + shift.
        let dtype = weight.dtype();
        let f = |t: &Tensor| t.to_dtype(DType::F32);
        let scale = f(&weight)?.div(&(f(&var)? + TORCH_NORM_EPS)?.sqrt()?)?;
        let shift = (f(&bias)? - f(&mean)?.mul(&scale)?)?;
        Ok(BatchNorm1d {
            scale: scale.to_dtype(dtype)?.reshape((1, channels, 1))?,
            shift: shift.to_dtype(dtype)?.reshape((1, channels, 1))?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.broadcast_mul(&self.scale)?.broadcast_add(&self.shift)?)
    }
}

/// `Wav2Vec2PositionalConvEmbedding` (and HuBERT's, which may batch-norm instead of weight-norm):
/// a wide grouped convolution over the frames, SamePad, activation.
struct PositionalConvEmbedding {
    batch_norm: Option<BatchNorm1d>,
    conv: Conv1d,
    /// SamePad: an even kernel gives one frame too many.
    drop_last: bool,
    act: Activation,
}

impl PositionalConvEmbedding {
    fn load(cfg: &SpeechConfig, vb: &VarBuilder) -> Result<Self> {
        let d = cfg.hidden_size;
        let k = cfg.num_conv_pos_embeddings;
        let groups = cfg.num_conv_pos_embedding_groups;
        let spec = Conv1dSpec {
            in_channels: d,
            out_channels: d,
            kernel: k,
            stride: 1,
            padding: k / 2,
            groups,
            bias: true,
        };
        spec.check().map_err(|_| {
            Error::config(
                "num_conv_pos_embedding_groups",
                format!("{groups} does not divide hidden_size ({d})"),
            )
        })?;
        let conv_vb = vb.pp("conv");
        // transformers' _init_weights: N(0, 2·√(1 / (K·D))).
        let std = 2.0 * (1.0 / (k * d) as f64).sqrt();
        let (batch_norm, conv) = if cfg.conv_pos_batch_norm {
            (
                Some(BatchNorm1d::load(&vb.pp("batch_norm"), d)?),
                Conv1d::load(&conv_vb, spec, std)?,
            )
        } else {
            let weight = weight_norm_kernel(&conv_vb, d, d / groups, k, std)?;
            let bias = conv_vb.get(&[d], "bias", Init::Const(0.0))?;
            (None, Conv1d::from_tensors(weight, Some(bias), spec)?)
        };
        Ok(PositionalConvEmbedding {
            batch_norm,
            conv,
            drop_last: k % 2 == 0,
            act: cfg.feat_extract_activation,
        })
    }

    /// `[B, F, D]` → the positional embedding `[B, F, D]`.
    fn forward(&self, h: &Tensor) -> Result<Tensor> {
        // A view: the convolution's fast path wants channels-last anyway.
        let mut x = h.transpose(1, 2)?;
        if let Some(bn) = &self.batch_norm {
            x = bn.forward(&x)?;
        }
        let mut y = self.conv.forward(&x)?;
        if self.drop_last {
            let len = y.dim(2)?;
            y = y.narrow(2, 0, len.saturating_sub(1))?;
        }
        Ok(self.act.forward(&y)?.transpose(1, 2)?)
    }
}

/// The positional convolution's kernel from its weight-norm parametrisation
/// (`weight_norm(conv, dim=2)`): `w = g · v / ‖v‖`, the norm taken over dims (0, 1) for each
/// kernel tap. Reads `parametrizations.weight.original0/1` (v5 files) or the legacy
/// `weight_g` / `weight_v`.
fn weight_norm_kernel(
    vb: &VarBuilder,
    out: usize,
    in_per_group: usize,
    k: usize,
    std: f64,
) -> Result<Tensor> {
    let (g_name, v_name) =
        if !vb.contains("parametrizations.weight.original0") && vb.contains("weight_g") {
            ("weight_g", "weight_v")
        } else {
            (
                "parametrizations.weight.original0",
                "parametrizations.weight.original1",
            )
        };
    let g = vb.get(&[1, 1, k], g_name, Init::Const(1.0))?;
    let v = vb.get(&[out, in_per_group, k], v_name, Init::Normal(std))?;
    let dtype = v.dtype();
    let vf = v.to_dtype(DType::F32)?;
    let norm = vf.sqr()?.sum_keepdim(0)?.sum_keepdim(1)?.sqrt()?;
    let w = vf.broadcast_mul(&g.to_dtype(DType::F32)?.broadcast_div(&norm)?)?;
    Ok(w.to_dtype(dtype)?)
}

/// `Wav2Vec2AttnAdapterLayer` (MMS): LayerNorm → Linear → ReLU → Linear, added to the output of
/// each stable-layer-norm layer.
struct AttnAdapter {
    norm: LayerNorm,
    linear_1: Linear,
    linear_2: Linear,
}

impl AttnAdapter {
    fn load(d: usize, dim: usize, std: f64, vb: &VarBuilder) -> Result<Self> {
        Ok(AttnAdapter {
            norm: LayerNorm::load(&vb.pp("norm"), d, TORCH_NORM_EPS)?,
            linear_1: Linear::load(&vb.pp("linear_1"), d, dim, true, std)?,
            linear_2: Linear::load(&vb.pp("linear_2"), dim, d, true, std)?,
        })
    }

    fn forward(&self, h: &Tensor) -> Result<Tensor> {
        let x = self.linear_1.forward(&self.norm.forward(h)?)?.relu()?;
        self.linear_2.forward(&x)
    }
}

/// `Wav2Vec2EncoderLayer` (post-LN) or `Wav2Vec2EncoderLayerStableLayerNorm` (pre-LN).
struct EncoderLayer {
    attention: MultiHeadAttention,
    out_proj: Linear,
    layer_norm: LayerNorm,
    intermediate_dense: Linear,
    output_dense: Linear,
    final_layer_norm: LayerNorm,
    act: Activation,
    stable: bool,
    adapter: Option<AttnAdapter>,
}

impl EncoderLayer {
    fn load(cfg: &SpeechConfig, vb: &VarBuilder) -> Result<Self> {
        let d = cfg.hidden_size;
        let std = cfg.initializer_range;
        let att = vb.pp("attention");
        let ff = vb.pp("feed_forward");
        let adapter = match (cfg.do_stable_layer_norm, cfg.adapter_attn_dim) {
            (true, Some(dim)) => Some(AttnAdapter::load(d, dim, std, &vb.pp("adapter_layer"))?),
            _ => None,
        };
        Ok(EncoderLayer {
            attention: MultiHeadAttention::new(
                Linear::load(&att.pp("q_proj"), d, d, true, std)?,
                Linear::load(&att.pp("k_proj"), d, d, true, std)?,
                Linear::load(&att.pp("v_proj"), d, d, true, std)?,
                cfg.num_attention_heads,
            ),
            out_proj: Linear::load(&att.pp("out_proj"), d, d, true, std)?,
            layer_norm: LayerNorm::load(&vb.pp("layer_norm"), d, cfg.layer_norm_eps)?,
            intermediate_dense: Linear::load(
                &ff.pp("intermediate_dense"),
                d,
                cfg.intermediate_size,
                true,
                std,
            )?,
            output_dense: Linear::load(
                &ff.pp("output_dense"),
                cfg.intermediate_size,
                d,
                true,
                std,
            )?,
            final_layer_norm: LayerNorm::load(&vb.pp("final_layer_norm"), d, cfg.layer_norm_eps)?,
            act: cfg.hidden_act,
            stable: cfg.do_stable_layer_norm,
            adapter,
        })
    }

    fn feed_forward(&self, h: &Tensor) -> Result<Tensor> {
        let x = self.intermediate_dense.forward_act(h, Some(self.act))?;
        self.output_dense.forward(&x)
    }

    /// Post-LN: `h = LN(h + attn(h))`, `h = final_LN(h + FF(h))`. Stable (pre-LN):
    /// `h = h + attn(LN(h))`, `h = h + FF(final_LN(h))` [+ adapter(h)].
    fn forward(
        &self,
        h: &Tensor,
        mask: Option<&Tensor>,
        want_probs: bool,
    ) -> Result<(Tensor, Option<Tensor>)> {
        if self.stable {
            let (ctx, probs) =
                self.attention
                    .forward(&self.layer_norm.forward(h)?, mask, want_probs)?;
            let h = (h + self.out_proj.forward(&ctx)?)?;
            let mut h = (&h + self.feed_forward(&self.final_layer_norm.forward(&h)?)?)?;
            if let Some(adapter) = &self.adapter {
                h = (&h + adapter.forward(&h)?)?;
            }
            Ok((h, probs))
        } else {
            let (ctx, probs) = self.attention.forward(h, mask, want_probs)?;
            let h = self
                .layer_norm
                .forward_residual(&self.out_proj.forward(&ctx)?, h)?;
            let h = self
                .final_layer_norm
                .forward_residual(&self.feed_forward(&h)?, &h)?;
            Ok((h, probs))
        }
    }
}

/// `Wav2Vec2Encoder` / `Wav2Vec2EncoderStableLayerNorm`.
struct Encoder {
    pos_conv_embed: PositionalConvEmbedding,
    layer_norm: LayerNorm,
    layers: Vec<EncoderLayer>,
    stable: bool,
}

impl Encoder {
    fn load(cfg: &SpeechConfig, vb: &VarBuilder) -> Result<Self> {
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| EncoderLayer::load(cfg, &vb.pp("layers").pp(i)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Encoder {
            pos_conv_embed: PositionalConvEmbedding::load(cfg, &vb.pp("pos_conv_embed"))?,
            layer_norm: LayerNorm::load(&vb.pp("layer_norm"), cfg.hidden_size, cfg.layer_norm_eps)?,
            layers,
            stable: cfg.do_stable_layer_norm,
        })
    }

    /// Zeroes padded frames (when a frame mask is given), adds the positional convolution, and
    /// runs the layers with the additive key mask. The stable layout's final LayerNorm applies
    /// to `last_hidden_state` only: transformers 5 records `hidden_states` as the layers' inputs
    /// and outputs, so the last entry is the un-normed output of the last layer.
    fn forward(
        &self,
        h: Tensor,
        frame_mask: Option<&Tensor>,
        options: &ForwardOptions,
    ) -> Result<EncoderOutput> {
        let (h, mask) = match frame_mask {
            Some(m) => {
                let keep = m.to_dtype(h.dtype())?.unsqueeze(2)?;
                (h.broadcast_mul(&keep)?, Some(additive_mask(m, h.dtype())?))
            }
            None => (h, None),
        };
        let h = (&h + self.pos_conv_embed.forward(&h)?)?;
        let h = if self.stable {
            h
        } else {
            self.layer_norm.forward(&h)?
        };
        let mut out = run_encoder(
            &self.layers,
            h,
            mask.as_ref(),
            options,
            EncoderLayer::forward,
        )?;
        if self.stable {
            out.last_hidden_state = self.layer_norm.forward(&out.last_hidden_state)?;
        }
        Ok(out)
    }
}

/// What the speech body returns.
pub(crate) struct SpeechOutput {
    /// The encoder output `[B, F, D]`.
    pub last_hidden_state: Tensor,
    /// The feature projection's normed frames `[B, F, C]` (when it has a LayerNorm).
    pub extract_features: Option<Tensor>,
    /// 1 for valid frames, 0 for padding `[B, F]`, when an attention_mask was given.
    pub frame_mask: Option<Tensor>,
    /// The input of each layer and the final output.
    pub hidden_states: Option<Vec<Tensor>>,
    /// Each layer's attention probabilities.
    pub attentions: Option<Vec<Tensor>>,
}

/// `Wav2Vec2Model` / `HubertModel` without their output conventions: feature encoder, feature
/// projection and encoder.
pub(crate) struct SpeechBody {
    feature_extractor: FeatureEncoder,
    feature_projection: FeatureProjection,
    encoder: Encoder,
    cfg: SpeechConfig,
    dtype: DType,
}

impl SpeechBody {
    /// Loads the body from `vb` (the checkpoint root, or `wav2vec2.` / `hubert.` in a head).
    pub(crate) fn load(cfg: &SpeechConfig, vb: &VarBuilder) -> Result<Self> {
        cfg.check_model()?;
        let feature_extractor = FeatureEncoder::load(cfg, &vb.pp("feature_extractor"))?;
        let feature_projection = FeatureProjection::load(cfg, &vb.pp("feature_projection"))?;
        if cfg.masked_spec_embed {
            // A parameter of the model (SpecAugment, training only): loaded so the load report
            // matches transformers', never used at inference.
            vb.get(
                &[cfg.hidden_size],
                "masked_spec_embed",
                Init::Normal(cfg.initializer_range),
            )?;
        }
        let encoder = Encoder::load(cfg, &vb.pp("encoder"))?;
        Ok(SpeechBody {
            feature_extractor,
            feature_projection,
            encoder,
            cfg: cfg.clone(),
            dtype: vb.dtype(),
        })
    }

    /// Checks `input_values` `[B, T]` and returns (B, T).
    fn check_input(&self, input_values: &Tensor) -> Result<(usize, usize)> {
        let (b, t) = input_values.dims2().map_err(|_| {
            Error::input(format!(
                "input_values must be [batch, samples], got {:?}",
                input_values.dims()
            ))
        })?;
        if b == 0 {
            return Err(Error::input("input_values is empty"));
        }
        let field = self.cfg.receptive_field();
        if t < field {
            return Err(Error::input(format!(
                "input_values has {t} samples per example, fewer than the {field} the feature encoder needs for one frame (conv_kernel {:?}, conv_stride {:?})",
                self.cfg.conv_kernel, self.cfg.conv_stride
            )));
        }
        Ok((b, t))
    }

    /// `_get_feature_vector_attention_mask`: the frame mask `[B, frames]` (1 = valid) from the
    /// sample-level attention_mask. As transformers, marks frames `0..=len-1` where `len` is the
    /// output length of the row's sample count, with Python's wrap-around for a negative index.
    fn frame_mask(
        &self,
        attention_mask: &Tensor,
        frames: usize,
        device: &Device,
    ) -> Result<Tensor> {
        let rows = attention_mask
            .to_device(&Device::Cpu)?
            .to_dtype(DType::F64)?
            .to_vec2::<f64>()?;
        let mut values = Vec::with_capacity(rows.len() * frames);
        for row in &rows {
            let samples = row.iter().sum::<f64>().round() as i64;
            let last = self.cfg.output_length(samples) - 1;
            let last = if last < 0 { last + frames as i64 } else { last };
            if last < 0 || last >= frames as i64 {
                return Err(Error::input(format!(
                    "attention_mask sums to {samples} samples, which gives no valid frame index among {frames} frames"
                )));
            }
            values.extend((0..frames as i64).map(|f| if f <= last { 1f32 } else { 0f32 }));
        }
        Ok(Tensor::from_vec(values, (rows.len(), frames), device)?)
    }

    /// `model(input_values, attention_mask)`.
    pub(crate) fn forward(&self, batch: &Batch, options: &ForwardOptions) -> Result<SpeechOutput> {
        let input_values = batch.require("input_values")?;
        self.check_input(input_values)?;
        let attention_mask = batch.get("attention_mask");
        if let Some(m) = attention_mask {
            if m.dims() != input_values.dims() {
                return Err(Error::input(format!(
                    "attention_mask has shape {:?} but input_values has {:?}",
                    m.dims(),
                    input_values.dims()
                )));
            }
        }
        let x = input_values.to_dtype(self.dtype)?;
        let frames = self.feature_extractor.forward(&x)?.transpose(1, 2)?;
        let frame_mask = match attention_mask {
            Some(m) => Some(self.frame_mask(m, frames.dim(1)?, frames.device())?),
            None => None,
        };
        let (h, extract_features) = self.feature_projection.forward(&frames)?;
        let enc = self.encoder.forward(h, frame_mask.as_ref(), options)?;
        Ok(SpeechOutput {
            last_hidden_state: enc.last_hidden_state,
            extract_features,
            frame_mask,
            hidden_states: enc.hidden_states,
            attentions: enc.attentions,
        })
    }
}

/// The `{Wav2Vec2,Hubert}ForSequenceClassification` head: optional weighted layer sum,
/// projector, mean pooling over the valid frames, classifier.
pub(crate) struct ClassificationHead {
    layer_weights: Option<Tensor>,
    projector: Linear,
    classifier: Linear,
}

impl ClassificationHead {
    /// Loads `layer_weights` (if `use_weighted_layer_sum`), `projector` and `classifier` from the
    /// checkpoint root.
    pub(crate) fn load(cfg: &SpeechConfig, num_labels: usize, vb: &VarBuilder) -> Result<Self> {
        let layers = cfg.num_hidden_layers + 1;
        let layer_weights = if cfg.use_weighted_layer_sum {
            Some(vb.get(&[layers], "layer_weights", Init::Const(1.0 / layers as f64))?)
        } else {
            None
        };
        let std = cfg.initializer_range;
        Ok(ClassificationHead {
            layer_weights,
            projector: Linear::load(
                &vb.pp("projector"),
                cfg.hidden_size,
                cfg.classifier_proj_size,
                true,
                std,
            )?,
            classifier: Linear::load(
                &vb.pp("classifier"),
                cfg.classifier_proj_size,
                num_labels,
                true,
                std,
            )?,
        })
    }

    /// Runs `body` and the head: `logits` `[B, num_labels]`, plus hidden states / attentions
    /// when asked (the weighted sum collects hidden states even when not asked, and does not
    /// return them then).
    pub(crate) fn forward(
        &self,
        body: &SpeechBody,
        batch: &Batch,
        options: &ForwardOptions,
    ) -> Result<ModelOutput> {
        let body_options = ForwardOptions {
            output_hidden_states: options.output_hidden_states || self.layer_weights.is_some(),
            ..*options
        };
        let out = body.forward(batch, &body_options)?;
        let h = match (&self.layer_weights, &out.hidden_states) {
            (Some(w), Some(hs)) => {
                let stacked = Tensor::stack(hs, 0)?;
                let norm = candle_nn::ops::softmax_last_dim(&w.to_dtype(DType::F32)?)?
                    .to_dtype(stacked.dtype())?
                    .reshape((hs.len(), 1, 1, 1))?;
                stacked.broadcast_mul(&norm)?.sum(0)?
            }
            _ => out.last_hidden_state.clone(),
        };
        let h = self.projector.forward(&h)?;
        let pooled = match &out.frame_mask {
            None => h.mean(1)?,
            Some(m) => {
                let keep = m.to_dtype(h.dtype())?;
                let summed = h.broadcast_mul(&keep.unsqueeze(2)?)?.sum(1)?;
                summed.broadcast_div(&keep.sum_keepdim(1)?)?
            }
        };
        let mut result = ModelOutput {
            hidden_states: if options.output_hidden_states {
                out.hidden_states
            } else {
                None
            },
            attentions: out.attentions,
            ..Default::default()
        };
        result.insert("logits", self.classifier.forward(&pooled)?);
        Ok(result)
    }
}

/// The `{Wav2Vec2,Hubert}ForCTC` head: `lm_head` on every frame.
pub(crate) struct CtcHead {
    lm_head: Linear,
}

impl CtcHead {
    /// Loads `lm_head`; `class_path` names the Python class in transformers' error when the
    /// config has no `vocab_size`.
    pub(crate) fn load(cfg: &SpeechConfig, class_path: &str, vb: &VarBuilder) -> Result<Self> {
        let vocab_size = cfg.vocab_size.ok_or_else(|| {
            let class = class_path.rsplit('.').next().unwrap_or(class_path);
            Error::config(
                "vocab_size",
                format!(
                    "You are trying to instantiate <class '{class_path}'> with a configuration that does not define the vocabulary size of the language model head. Please instantiate the model as follows: `{class}.from_pretrained(..., vocab_size=vocab_size)`. or define `vocab_size` of your model's configuration."
                ),
            )
        })?;
        Ok(CtcHead {
            lm_head: Linear::load(
                &vb.pp("lm_head"),
                cfg.hidden_size,
                vocab_size,
                true,
                cfg.initializer_range,
            )?,
        })
    }

    /// Runs `body` and the head: `logits` `[B, frames, vocab_size]`.
    pub(crate) fn forward(
        &self,
        body: &SpeechBody,
        batch: &Batch,
        options: &ForwardOptions,
    ) -> Result<ModelOutput> {
        let out = body.forward(batch, options)?;
        let mut result = ModelOutput {
            hidden_states: out.hidden_states,
            attentions: out.attentions,
            ..Default::default()
        };
        result.insert("logits", self.lm_head.forward(&out.last_hidden_state)?);
        Ok(result)
    }
}

/// `Wav2Vec2Model`: `last_hidden_state` and `extract_features` (the feature projection's
/// LayerNorm output).
pub struct Wav2Vec2Model {
    body: SpeechBody,
}

impl Wav2Vec2Model {
    /// Loads the body from `vb` (the root of a Wav2Vec2Model checkpoint, or `wav2vec2.` inside a
    /// head).
    pub fn load(cfg: &Wav2Vec2Config, vb: &VarBuilder) -> Result<Self> {
        cfg.check_adapter(Task::Base)?;
        Ok(Wav2Vec2Model {
            body: SpeechBody::load(&cfg.speech(), vb)?,
        })
    }
}

impl TaskModel for Wav2Vec2Model {
    fn class_name(&self) -> &'static str {
        "Wav2Vec2Model"
    }
    fn forward(&self, batch: &Batch, options: &ForwardOptions) -> Result<ModelOutput> {
        let body = self.body.forward(batch, options)?;
        let mut out = ModelOutput {
            hidden_states: body.hidden_states,
            attentions: body.attentions,
            ..Default::default()
        };
        out.insert("last_hidden_state", body.last_hidden_state);
        if let Some(features) = body.extract_features {
            out.insert("extract_features", features);
        }
        Ok(out)
    }
}

/// `Wav2Vec2ForSequenceClassification`: projector, mean pooling (over valid frames with an
/// attention_mask) and classifier → `logits` `[B, num_labels]`.
pub struct Wav2Vec2ForSequenceClassification {
    wav2vec2: SpeechBody,
    head: ClassificationHead,
}

impl Wav2Vec2ForSequenceClassification {
    /// Loads `wav2vec2.*`, `projector`, `classifier` and (with `use_weighted_layer_sum`)
    /// `layer_weights`.
    pub fn load(config: &Config, vb: &VarBuilder) -> Result<Self> {
        let cfg: &Wav2Vec2Config = config.model_config()?;
        cfg.check_adapter(Task::AudioClassification)?;
        let speech = cfg.speech();
        Ok(Wav2Vec2ForSequenceClassification {
            wav2vec2: SpeechBody::load(&speech, &vb.pp("wav2vec2"))?,
            head: ClassificationHead::load(&speech, config.num_labels(), vb)?,
        })
    }
}

impl TaskModel for Wav2Vec2ForSequenceClassification {
    fn class_name(&self) -> &'static str {
        "Wav2Vec2ForSequenceClassification"
    }
    fn forward(&self, batch: &Batch, options: &ForwardOptions) -> Result<ModelOutput> {
        self.head.forward(&self.wav2vec2, batch, options)
    }
}

/// `Wav2Vec2ForCTC`: `lm_head` on every frame → `logits` `[B, frames, vocab_size]`.
pub struct Wav2Vec2ForCTC {
    wav2vec2: SpeechBody,
    head: CtcHead,
}

impl Wav2Vec2ForCTC {
    /// Loads `wav2vec2.*` and `lm_head`; a config without `vocab_size` fails as in transformers.
    pub fn load(config: &Config, vb: &VarBuilder) -> Result<Self> {
        let cfg: &Wav2Vec2Config = config.model_config()?;
        cfg.check_adapter(Task::Ctc)?;
        let speech = cfg.speech();
        let head = CtcHead::load(
            &speech,
            "transformers.models.wav2vec2.modeling_wav2vec2.Wav2Vec2ForCTC",
            vb,
        )?;
        Ok(Wav2Vec2ForCTC {
            wav2vec2: SpeechBody::load(&speech, &vb.pp("wav2vec2"))?,
            head,
        })
    }
}

impl TaskModel for Wav2Vec2ForCTC {
    fn class_name(&self) -> &'static str {
        "Wav2Vec2ForCTC"
    }
    fn forward(&self, batch: &Batch, options: &ForwardOptions) -> Result<ModelOutput> {
        self.head.forward(&self.wav2vec2, batch, options)
    }
}

/// The registry entry for `model_type: "wav2vec2"`.
pub struct Wav2Vec2;

impl Architecture for Wav2Vec2 {
    fn model_type(&self) -> &'static str {
        "wav2vec2"
    }
    fn config_class(&self) -> &'static str {
        "Wav2Vec2Config"
    }
    fn base_model_prefix(&self) -> &'static str {
        "wav2vec2"
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
            (Task::Base, "Wav2Vec2Model"),
            (
                Task::AudioClassification,
                "Wav2Vec2ForSequenceClassification",
            ),
            (Task::Ctc, "Wav2Vec2ForCTC"),
        ]
    }
    fn parse_config(&self, raw: &Map<String, Value>) -> Result<Arc<dyn ModelConfig>> {
        let mut cfg: Wav2Vec2Config = parse_typed(raw)?;
        cfg.validate()?;
        // As Wav2Vec2Config's constructor: `output_hidden_size or hidden_size`.
        if cfg.output_hidden_size.is_none_or(|n| n == 0) {
            cfg.output_hidden_size = Some(cfg.hidden_size);
        }
        Ok(Arc::new(cfg))
    }
    fn load(&self, task: Task, config: &Config, vb: &VarBuilder) -> Result<Box<dyn TaskModel>> {
        match task {
            Task::Base => Ok(Box::new(Wav2Vec2Model::load(config.model_config()?, vb)?)),
            Task::AudioClassification => Ok(Box::new(Wav2Vec2ForSequenceClassification::load(
                config, vb,
            )?)),
            Task::Ctc => Ok(Box::new(Wav2Vec2ForCTC::load(config, vb)?)),
            other => Err(unsupported_task(self, other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_lengths_follow_transformers() {
        let cfg = Wav2Vec2Config::default().speech();
        // 16 kHz base: one second → 49 frames (20 ms frames).
        assert_eq!(cfg.output_length(16000), 49);
        assert_eq!(cfg.receptive_field(), 400);
        assert_eq!(cfg.output_length(400), 1);
        assert_eq!(cfg.output_length(399), 0);
        // Python floor division keeps going negative.
        assert!(cfg.output_length(0) < 0);
    }

    #[test]
    fn conv_layer_lengths_must_agree() {
        let err = check_conv_layers(&[1, 2], &[1], &[1, 1]).err();
        assert!(err.is_some_and(|e| e.to_string().contains("len(config.conv_stride) = 1")));
    }
}
