//! ConvNeXT, following transformers' `models/convnext/modeling_convnext.py`.

use std::any::Any;
use std::sync::Arc;

use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::backbone::StageSelection;
use crate::config::{parse_typed, Config, ModelConfig};
use crate::error::{Error, Result};
use crate::models::{run_encoder, Batch, ForwardOptions, ModelOutput, TaskModel};
use crate::nn::{Activation, Conv2d, Conv2dSpec, LayerNorm, Linear};
use crate::registry::{unsupported_task, Architecture, Task};
use crate::weights::{Init, VarBuilder};

/// `ConvNextLayerNorm`'s default epsilon: the stem, the downsampling layers, every block and the
/// backbone's `hidden_states_norms` use it whatever the config says.
const CONVNEXT_LAYER_NORM_EPS: f64 = 1e-6;

/// `ConvNextConfig`, with transformers' defaults for every field.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct ConvNextConfig {
    /// Input channels.
    pub num_channels: usize,
    /// Kernel and stride of the patchify stem.
    pub patch_size: usize,
    /// Number of stages the encoder builds.
    pub num_stages: usize,
    /// Channels of each stage.
    pub hidden_sizes: Vec<usize>,
    /// Blocks in each stage.
    pub depths: Vec<usize>,
    /// Block activation.
    pub hidden_act: Activation,
    /// Std of the normal init of missing weights.
    pub initializer_range: f64,
    /// Epsilon of the final LayerNorm (on the pooled output); the others use 1e-6.
    pub layer_norm_eps: f64,
    /// Initial value of the per-block layer scale; `<= 0` means the blocks have none.
    pub layer_scale_init_value: f64,
    /// Stochastic depth rate (identity at inference).
    pub drop_path_rate: f64,
    /// Nominal input size (informational: any size runs).
    pub image_size: usize,
    /// `["stem", "stage1", ...]`, one per entry of `depths` (computed, as transformers does).
    #[serde(skip_deserializing)]
    pub stage_names: Vec<String>,
    /// The backbone's stages, aligned from config.json's `out_features` / `out_indices`.
    #[serde(skip_deserializing)]
    pub out_features: Vec<String>,
    /// The backbone's stage indices, aligned like `out_features`.
    #[serde(skip_deserializing)]
    pub out_indices: Vec<i64>,
}

impl Default for ConvNextConfig {
    fn default() -> Self {
        ConvNextConfig {
            num_channels: 3,
            patch_size: 4,
            num_stages: 4,
            hidden_sizes: vec![96, 192, 384, 768],
            depths: vec![3, 3, 9, 3],
            hidden_act: Activation::Gelu,
            initializer_range: 0.02,
            layer_norm_eps: 1e-12,
            layer_scale_init_value: 1e-6,
            drop_path_rate: 0.0,
            image_size: 224,
            stage_names: Vec::new(),
            out_features: Vec::new(),
            out_indices: Vec::new(),
        }
    }
}

impl ModelConfig for ConvNextConfig {
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

impl ConvNextConfig {
    /// transformers' `stage_names`: `"stem"`, then `"stage{i}"` for each entry of `depths`.
    pub fn compute_stage_names(&self) -> Vec<String> {
        std::iter::once("stem".to_string())
            .chain((1..=self.depths.len()).map(|i| format!("stage{i}")))
            .collect()
    }

    fn validate(&self) -> Result<()> {
        if self.num_stages == 0 {
            return Err(Error::config("num_stages", "must be at least 1"));
        }
        for (field, len) in [
            ("hidden_sizes", self.hidden_sizes.len()),
            ("depths", self.depths.len()),
        ] {
            if len < self.num_stages {
                return Err(Error::config(
                    field,
                    format!("has {len} entries but num_stages is {}", self.num_stages),
                ));
            }
        }
        if self.hidden_sizes.contains(&0) {
            return Err(Error::config(
                "hidden_sizes",
                "every size must be at least 1",
            ));
        }
        if self.patch_size == 0 || self.num_channels == 0 {
            return Err(Error::config(
                "patch_size",
                "patch_size and num_channels must be at least 1",
            ));
        }
        Ok(())
    }

    /// Channels of each entry of `stage_names`: `[hidden_sizes[0]] + hidden_sizes`.
    fn num_features(&self) -> Vec<usize> {
        self.hidden_sizes
            .first()
            .copied()
            .into_iter()
            .chain(self.hidden_sizes.iter().copied())
            .collect()
    }
}

/// `ConvNextLayerNorm(data_format="channels_first")`: LayerNorm over C of `[B, C, H, W]`.
fn channels_first_norm(norm: &LayerNorm, x: &Tensor) -> Result<Tensor> {
    let y = norm.forward(&x.permute((0, 2, 3, 1))?)?;
    Ok(y.permute((0, 3, 1, 2))?)
}

/// Checks that a `[B, C, H, W]` map is at least `k` × `k`, the kernel about to run over it.
fn check_spatial(x: &Tensor, k: usize) -> Result<()> {
    let (_, _, h, w) = x.dims4()?;
    if h < k || w < k {
        return Err(Error::input(format!(
            "Calculated padded input size per channel: ({h} x {w}). Kernel size: ({k} x {k}). Kernel size can't be greater than actual input size"
        )));
    }
    Ok(())
}

struct ConvNextEmbeddings {
    patch_embeddings: Conv2d,
    layernorm: LayerNorm,
    num_channels: usize,
    patch_size: usize,
    dtype: DType,
}

impl ConvNextEmbeddings {
    fn load(cfg: &ConvNextConfig, vb: &VarBuilder) -> Result<Self> {
        let d = cfg.hidden_sizes[0];
        let spec = Conv2dSpec {
            in_channels: cfg.num_channels,
            out_channels: d,
            kernel: cfg.patch_size,
            stride: cfg.patch_size,
            padding: 0,
            groups: 1,
            bias: true,
        };
        Ok(ConvNextEmbeddings {
            patch_embeddings: Conv2d::load(
                &vb.pp("patch_embeddings"),
                spec,
                cfg.initializer_range,
            )?,
            layernorm: LayerNorm::load(&vb.pp("layernorm"), d, CONVNEXT_LAYER_NORM_EPS)?,
            num_channels: cfg.num_channels,
            patch_size: cfg.patch_size,
            dtype: vb.dtype(),
        })
    }

    fn forward(&self, pixel_values: &Tensor) -> Result<Tensor> {
        let (b, c, _, _) = pixel_values.dims4().map_err(|_| {
            Error::input(format!(
                "pixel_values must be [batch, channels, height, width], got {:?}",
                pixel_values.dims()
            ))
        })?;
        if c != self.num_channels {
            return Err(Error::input(
                "Make sure that the channel dimension of the pixel values match with the one set in the configuration.",
            ));
        }
        if b == 0 {
            return Err(Error::input("pixel_values is empty"));
        }
        check_spatial(pixel_values, self.patch_size)?;
        let x = self
            .patch_embeddings
            .forward(&pixel_values.to_dtype(self.dtype)?)?;
        channels_first_norm(&self.layernorm, &x)
    }
}

/// One block: depthwise 7×7 conv, LayerNorm, pointwise MLP, layer scale, residual.
struct ConvNextLayer {
    dwconv: Conv2d,
    layernorm: LayerNorm,
    pwconv1: Linear,
    pwconv2: Linear,
    act: Activation,
    layer_scale_parameter: Option<Tensor>,
}

impl ConvNextLayer {
    fn load(cfg: &ConvNextConfig, dim: usize, vb: &VarBuilder) -> Result<Self> {
        let std = cfg.initializer_range;
        let spec = Conv2dSpec {
            in_channels: dim,
            out_channels: dim,
            kernel: 7,
            stride: 1,
            padding: 3,
            groups: dim,
            bias: true,
        };
        let layer_scale_parameter = if cfg.layer_scale_init_value > 0.0 {
            Some(vb.get(
                &[dim],
                "layer_scale_parameter",
                Init::Const(cfg.layer_scale_init_value),
            )?)
        } else {
            None
        };
        Ok(ConvNextLayer {
            dwconv: Conv2d::load(&vb.pp("dwconv"), spec, std)?,
            layernorm: LayerNorm::load(&vb.pp("layernorm"), dim, CONVNEXT_LAYER_NORM_EPS)?,
            pwconv1: Linear::load(&vb.pp("pwconv1"), dim, 4 * dim, true, std)?,
            pwconv2: Linear::load(&vb.pp("pwconv2"), 4 * dim, dim, true, std)?,
            act: cfg.hidden_act,
            layer_scale_parameter,
        })
    }

    fn forward(&self, h: &Tensor) -> Result<Tensor> {
        let x = self.dwconv.forward(h)?.permute((0, 2, 3, 1))?;
        let x = self.layernorm.forward(&x)?;
        let x = self
            .pwconv2
            .forward(&self.pwconv1.forward_act(&x, Some(self.act))?)?;
        let x = match &self.layer_scale_parameter {
            Some(gamma) => x.broadcast_mul(gamma)?,
            None => x,
        };
        Ok((h + x.permute((0, 3, 1, 2))?)?)
    }
}

/// A stage: optional downsampling (channels-first LayerNorm, 2×2 stride-2 conv), then blocks.
struct ConvNextStage {
    downsampling_layer: Option<(LayerNorm, Conv2d)>,
    layers: Vec<ConvNextLayer>,
}

impl ConvNextStage {
    fn load(
        cfg: &ConvNextConfig,
        in_channels: usize,
        out_channels: usize,
        stride: usize,
        depth: usize,
        vb: &VarBuilder,
    ) -> Result<Self> {
        let downsampling_layer = if in_channels != out_channels || stride > 1 {
            let ds = vb.pp("downsampling_layer");
            let spec = Conv2dSpec {
                in_channels,
                out_channels,
                kernel: 2,
                stride,
                padding: 0,
                groups: 1,
                bias: true,
            };
            Some((
                LayerNorm::load(&ds.pp(0), in_channels, CONVNEXT_LAYER_NORM_EPS)?,
                Conv2d::load(&ds.pp(1), spec, cfg.initializer_range)?,
            ))
        } else {
            None
        };
        let layers = (0..depth)
            .map(|j| ConvNextLayer::load(cfg, out_channels, &vb.pp("layers").pp(j)))
            .collect::<Result<Vec<_>>>()?;
        Ok(ConvNextStage {
            downsampling_layer,
            layers,
        })
    }

    fn forward(&self, h: &Tensor) -> Result<Tensor> {
        let mut h = match &self.downsampling_layer {
            Some((norm, conv)) => {
                check_spatial(h, 2)?;
                conv.forward(&channels_first_norm(norm, h)?)?
            }
            None => h.clone(),
        };
        for layer in &self.layers {
            h = layer.forward(&h)?;
        }
        Ok(h)
    }

    /// The stage as an encoder layer for [`run_encoder`] (no mask, no attentions).
    fn forward_layer(
        &self,
        h: &Tensor,
        _mask: Option<&Tensor>,
        _want_probs: bool,
    ) -> Result<(Tensor, Option<Tensor>)> {
        Ok((self.forward(h)?, None))
    }
}

/// `ConvNextEmbeddings` + `ConvNextEncoder`: what the model, the classifier and the backbone share.
struct ConvNextBody {
    embeddings: ConvNextEmbeddings,
    stages: Vec<ConvNextStage>,
}

impl ConvNextBody {
    /// Loads `embeddings.*` and `encoder.stages.*` under `vb`.
    fn load(cfg: &ConvNextConfig, vb: &VarBuilder) -> Result<Self> {
        cfg.validate()?;
        let embeddings = ConvNextEmbeddings::load(cfg, &vb.pp("embeddings"))?;
        let mut prev = cfg.hidden_sizes[0];
        let mut stages = Vec::with_capacity(cfg.num_stages);
        for i in 0..cfg.num_stages {
            let out = cfg.hidden_sizes[i];
            stages.push(ConvNextStage::load(
                cfg,
                prev,
                out,
                if i > 0 { 2 } else { 1 },
                cfg.depths[i],
                &vb.pp("encoder").pp("stages").pp(i),
            )?);
            prev = out;
        }
        Ok(ConvNextBody { embeddings, stages })
    }

    /// The last stage's output and, if asked, the embeddings output and every stage's output.
    fn forward(
        &self,
        batch: &Batch,
        output_hidden_states: bool,
    ) -> Result<(Tensor, Option<Vec<Tensor>>)> {
        let h = self.embeddings.forward(batch.require("pixel_values")?)?;
        let options = ForwardOptions {
            output_hidden_states,
            output_attentions: false,
            ..Default::default()
        };
        let enc = run_encoder(
            &self.stages,
            h,
            None,
            &options,
            ConvNextStage::forward_layer,
        )?;
        Ok((enc.last_hidden_state, enc.hidden_states))
    }
}

/// `ConvNextModel`: stem, stages, and the pooler (global average pool → LayerNorm).
pub struct ConvNextModel {
    body: ConvNextBody,
    layernorm: LayerNorm,
}

impl ConvNextModel {
    /// Loads the model from `vb` (the root of a ConvNextModel checkpoint, or `convnext.` inside a head).
    pub fn load(cfg: &ConvNextConfig, vb: &VarBuilder) -> Result<Self> {
        let body = ConvNextBody::load(cfg, vb)?;
        let last = cfg.hidden_sizes[cfg.hidden_sizes.len() - 1];
        Ok(ConvNextModel {
            body,
            layernorm: LayerNorm::load(&vb.pp("layernorm"), last, cfg.layer_norm_eps)?,
        })
    }

    /// (`last_hidden_state` `[B, C, H, W]`, `pooler_output` `[B, C]`, `hidden_states`).
    fn run(
        &self,
        batch: &Batch,
        options: &ForwardOptions,
    ) -> Result<(Tensor, Tensor, Option<Vec<Tensor>>)> {
        let (h, hidden_states) = self.body.forward(batch, options.output_hidden_states)?;
        let pooled = self.layernorm.forward(&h.mean((2, 3))?)?;
        Ok((h, pooled, hidden_states))
    }
}

impl TaskModel for ConvNextModel {
    fn class_name(&self) -> &'static str {
        "ConvNextModel"
    }
    fn forward(&self, batch: &Batch, options: &ForwardOptions) -> Result<ModelOutput> {
        let (h, pooled, hidden_states) = self.run(batch, options)?;
        let mut out = ModelOutput {
            hidden_states,
            ..Default::default()
        };
        out.insert("last_hidden_state", h);
        out.insert("pooler_output", pooled);
        Ok(out)
    }
}

/// `ConvNextForImageClassification`: a linear classifier on the pooled output.
pub struct ConvNextForImageClassification {
    convnext: ConvNextModel,
    /// `None` when `num_labels == 0` (transformers' `nn.Identity`).
    classifier: Option<Linear>,
}

impl ConvNextForImageClassification {
    /// Loads `convnext.*` and `classifier`.
    pub fn load(config: &Config, vb: &VarBuilder) -> Result<Self> {
        let cfg: &ConvNextConfig = config.model_config()?;
        let convnext = ConvNextModel::load(cfg, &vb.pp("convnext"))?;
        let n = config.num_labels();
        let classifier = if n > 0 {
            let last = cfg.hidden_sizes[cfg.hidden_sizes.len() - 1];
            Some(Linear::load(
                &vb.pp("classifier"),
                last,
                n,
                true,
                cfg.initializer_range,
            )?)
        } else {
            None
        };
        Ok(ConvNextForImageClassification {
            convnext,
            classifier,
        })
    }
}

impl TaskModel for ConvNextForImageClassification {
    fn class_name(&self) -> &'static str {
        "ConvNextForImageClassification"
    }
    fn forward(&self, batch: &Batch, options: &ForwardOptions) -> Result<ModelOutput> {
        let (_, pooled, hidden_states) = self.convnext.run(batch, options)?;
        let mut out = ModelOutput {
            hidden_states,
            ..Default::default()
        };
        let logits = match &self.classifier {
            Some(classifier) => classifier.forward(&pooled)?,
            None => pooled,
        };
        out.insert("logits", logits);
        Ok(out)
    }
}

/// `ConvNextBackbone`: the feature maps of the selected stages, each through its own
/// channels-first LayerNorm (`hidden_states_norms.{stage}`).
pub struct ConvNextBackbone {
    body: ConvNextBody,
    stage_names: Vec<String>,
    /// (stage name, norm) for every stage in `out_features`, in stage order.
    hidden_states_norms: Vec<(String, LayerNorm)>,
}

impl ConvNextBackbone {
    /// Loads `embeddings.*`, `encoder.*` and `hidden_states_norms.*` (a backbone checkpoint has
    /// no `convnext.` prefix; a classification checkpoint's prefixed names are found too).
    pub fn load(config: &Config, vb: &VarBuilder) -> Result<Self> {
        let cfg: &ConvNextConfig = config.model_config()?;
        let stage_names = cfg.compute_stage_names();
        let selection = StageSelection::from_config(config.raw(), &stage_names)?;
        let body = ConvNextBody::load(cfg, vb)?;
        let num_features = cfg.num_features();
        let norms = vb.pp("hidden_states_norms");
        let hidden_states_norms = selection
            .positions(&stage_names)
            .into_iter()
            .map(|k| {
                let channels = *num_features.get(k).ok_or_else(|| {
                    Error::config(
                        "out_features",
                        format!(
                            "stage `{}` has no channel count in hidden_sizes",
                            stage_names[k]
                        ),
                    )
                })?;
                let name = stage_names[k].clone();
                let norm = LayerNorm::load(&norms.pp(&name), channels, CONVNEXT_LAYER_NORM_EPS)?;
                Ok((name, norm))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(ConvNextBackbone {
            body,
            stage_names,
            hidden_states_norms,
        })
    }
}

impl TaskModel for ConvNextBackbone {
    fn class_name(&self) -> &'static str {
        "ConvNextBackbone"
    }
    fn forward(&self, batch: &Batch, options: &ForwardOptions) -> Result<ModelOutput> {
        let (_, hidden_states) = self.body.forward(batch, true)?;
        let hidden_states = hidden_states.unwrap_or_default();
        let mut feature_maps = Vec::with_capacity(self.hidden_states_norms.len());
        // zip(stage_names, hidden_states): stages the encoder did not build are skipped.
        for (stage, state) in self.stage_names.iter().zip(&hidden_states) {
            if let Some((_, norm)) = self.hidden_states_norms.iter().find(|(s, _)| s == stage) {
                feature_maps.push(channels_first_norm(norm, state)?);
            }
        }
        Ok(ModelOutput {
            feature_maps: Some(feature_maps),
            hidden_states: options.output_hidden_states.then_some(hidden_states),
            ..Default::default()
        })
    }
}

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
        &[
            (Task::Base, "ConvNextModel"),
            (Task::ImageClassification, "ConvNextForImageClassification"),
            (Task::Backbone, "ConvNextBackbone"),
        ]
    }
    fn parse_config(&self, raw: &Map<String, Value>) -> Result<Arc<dyn ModelConfig>> {
        let mut cfg: ConvNextConfig = parse_typed(raw)?;
        cfg.validate()?;
        // As ConvNextConfig's constructor: stage names from depths, then the aligned selection.
        cfg.stage_names = cfg.compute_stage_names();
        let selection = StageSelection::from_config(raw, &cfg.stage_names)?;
        cfg.out_features = selection.out_features;
        cfg.out_indices = selection.out_indices;
        Ok(Arc::new(cfg))
    }
    fn load(&self, task: Task, config: &Config, vb: &VarBuilder) -> Result<Box<dyn TaskModel>> {
        match task {
            Task::Base => Ok(Box::new(ConvNextModel::load(config.model_config()?, vb)?)),
            Task::ImageClassification => {
                Ok(Box::new(ConvNextForImageClassification::load(config, vb)?))
            }
            Task::Backbone => Ok(Box::new(ConvNextBackbone::load(config, vb)?)),
            other => Err(unsupported_task(self, other)),
        }
    }
}
