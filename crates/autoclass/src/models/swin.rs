//! Swin Transformer, following transformers' `models/swin/modeling_swin.py`.
//!
//! Two code paths, as in transformers: `SwinModel` / `SwinForImageClassification` clamp the
//! window (no shift) when a stage's resolution is not larger than the window, while
//! `SwinBackbone` always partitions (`always_partition=True`), so their last stages differ.

use std::any::Any;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::backbone::StageSelection;
use crate::config::{parse_typed, Config, ModelConfig};
use crate::error::{Error, Result};
use crate::kernels::{self, attention, attention::AttentionShape};
use crate::models::{Batch, ForwardOptions, ModelOutput, TaskModel};
use crate::nn::{check_heads, Activation, Conv2d, Conv2dSpec, LayerNorm, Linear};
use crate::registry::{unsupported_task, Architecture, Task};
use crate::weights::{Init, VarBuilder};

/// nn.LayerNorm's default epsilon, used where transformers does not pass the config's.
const DEFAULT_EPS: f64 = 1e-5;
/// The value the shifted-window mask adds between different regions (transformers uses -100).
const SHIFT_MASK_VALUE: f32 = -100.0;

/// An int or a pair in config.json (`image_size`, `patch_size`).
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum IntOrPair {
    /// The same value for height and width.
    One(usize),
    /// (height, width).
    Pair([usize; 2]),
}

impl IntOrPair {
    /// (height, width).
    pub fn hw(self) -> (usize, usize) {
        match self {
            IntOrPair::One(v) => (v, v),
            IntOrPair::Pair([h, w]) => (h, w),
        }
    }
}

/// `SwinConfig`, with transformers' defaults for every field.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct SwinConfig {
    /// Training image size.
    pub image_size: IntOrPair,
    /// Patch size of the stem convolution.
    pub patch_size: IntOrPair,
    /// Input channels.
    pub num_channels: usize,
    /// Channels of the first stage.
    pub embed_dim: usize,
    /// Blocks per stage.
    pub depths: Vec<usize>,
    /// Attention heads per stage.
    pub num_heads: Vec<usize>,
    /// Attention window (tokens per side).
    pub window_size: usize,
    /// MLP hidden size as a multiple of the channels.
    pub mlp_ratio: f64,
    /// Whether q, k, v have biases.
    pub qkv_bias: bool,
    /// Dropout (identity at inference).
    pub hidden_dropout_prob: f64,
    /// Attention dropout (identity at inference).
    pub attention_probs_dropout_prob: f64,
    /// Stochastic depth (identity at inference).
    pub drop_path_rate: f64,
    /// MLP activation.
    pub hidden_act: Activation,
    /// Absolute position embeddings (not supported).
    pub use_absolute_embeddings: bool,
    /// Std of the normal init of missing weights.
    pub initializer_range: f64,
    /// Epsilon of the blocks' and the final LayerNorms.
    pub layer_norm_eps: f64,
    /// Stride of the masked-image-modeling decoder (unused here).
    pub encoder_stride: usize,
}

impl Default for SwinConfig {
    fn default() -> Self {
        SwinConfig {
            image_size: IntOrPair::One(224),
            patch_size: IntOrPair::One(4),
            num_channels: 3,
            embed_dim: 96,
            depths: vec![2, 2, 6, 2],
            num_heads: vec![3, 6, 12, 24],
            window_size: 7,
            mlp_ratio: 4.0,
            qkv_bias: true,
            hidden_dropout_prob: 0.0,
            attention_probs_dropout_prob: 0.0,
            drop_path_rate: 0.1,
            hidden_act: Activation::Gelu,
            use_absolute_embeddings: false,
            initializer_range: 0.02,
            layer_norm_eps: 1e-5,
            encoder_stride: 32,
        }
    }
}

impl ModelConfig for SwinConfig {
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

impl SwinConfig {
    fn validate(&self) -> Result<()> {
        if self.depths.is_empty() || self.depths.len() != self.num_heads.len() {
            return Err(Error::config(
                "depths",
                format!(
                    "depths ({:?}) and num_heads ({:?}) must be non-empty and of the same length",
                    self.depths, self.num_heads
                ),
            ));
        }
        if self.depths.len() > 16 || self.window_size == 0 || self.window_size > 1024 {
            return Err(Error::config(
                "window_size",
                "stages or window size out of range",
            ));
        }
        let (ph, pw) = self.patch_size.hw();
        if ph == 0 || pw == 0 {
            return Err(Error::config("patch_size", "must be positive"));
        }
        for (s, heads) in self.num_heads.iter().enumerate() {
            check_heads(self.stage_dim(s), *heads)?;
        }
        if self.use_absolute_embeddings {
            return Err(Error::config(
                "use_absolute_embeddings",
                "absolute position embeddings are not supported yet",
            ));
        }
        Ok(())
    }

    /// Channels of stage `s` (0-based): `embed_dim * 2^s`.
    fn stage_dim(&self, s: usize) -> usize {
        self.embed_dim << s
    }

    /// `["stem", "stage1", ...]`.
    pub fn stage_names(&self) -> Vec<String> {
        std::iter::once("stem".to_string())
            .chain((1..=self.depths.len()).map(|i| format!("stage{i}")))
            .collect()
    }

    /// Channels of each entry of [`stage_names`](Self::stage_names).
    fn num_features(&self) -> Vec<usize> {
        std::iter::once(self.embed_dim)
            .chain((0..self.depths.len()).map(|s| self.stage_dim(s)))
            .collect()
    }
}

/// Patch embedding: pad to a multiple of the patch, Conv2d(k=s=patch), flatten, LayerNorm.
struct SwinEmbeddings {
    projection: Conv2d,
    norm: LayerNorm,
    patch: (usize, usize),
    num_channels: usize,
}

impl SwinEmbeddings {
    fn load(cfg: &SwinConfig, vb: &VarBuilder) -> Result<Self> {
        let (ph, pw) = cfg.patch_size.hw();
        if ph != pw {
            return Err(Error::config(
                "patch_size",
                "non-square patches are not supported",
            ));
        }
        let projection = Conv2d::load(
            &vb.pp("patch_embeddings").pp("projection"),
            Conv2dSpec {
                in_channels: cfg.num_channels,
                out_channels: cfg.embed_dim,
                kernel: ph,
                stride: ph,
                padding: 0,
                groups: 1,
                bias: true,
            },
            cfg.initializer_range,
        )?;
        Ok(SwinEmbeddings {
            projection,
            norm: LayerNorm::load(&vb.pp("norm"), cfg.embed_dim, DEFAULT_EPS)?,
            patch: (ph, pw),
            num_channels: cfg.num_channels,
        })
    }

    /// `[B, C, H, W]` → (`[B, Hp·Wp, D]`, (Hp, Wp)).
    fn forward(&self, pixel_values: &Tensor) -> Result<(Tensor, (usize, usize))> {
        let (_, c, h, w) = pixel_values.dims4().map_err(|_| {
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
        if h == 0 || w == 0 {
            return Err(Error::input("pixel_values has an empty spatial dimension"));
        }
        let (ph, pw) = self.patch;
        let mut x = pixel_values.clone();
        if w % pw != 0 {
            x = x.pad_with_zeros(3, 0, pw - w % pw)?;
        }
        if h % ph != 0 {
            x = x.pad_with_zeros(2, 0, ph - h % ph)?;
        }
        let x = self.projection.forward(&x)?;
        let (b, d, hp, wp) = x.dims4()?;
        let x = kernels::contiguous(&x.reshape((b, d, hp * wp))?.transpose(1, 2)?)?;
        Ok((self.norm.forward(&x)?, (hp, wp)))
    }
}

/// Relative position index for a `ws × ws` window: `((pi-qi)+ws-1)·(2ws-1) + (pj-qj)+ws-1`.
fn relative_position_index(ws: usize) -> Vec<u32> {
    let n = ws * ws;
    let mut index = Vec::with_capacity(n * n);
    for p in 0..n {
        let (pi, pj) = (p / ws, p % ws);
        for q in 0..n {
            let (qi, qj) = (q / ws, q % ws);
            let di = pi + ws - 1 - qi;
            let dj = pj + ws - 1 - qj;
            index.push((di * (2 * ws - 1) + dj) as u32);
        }
    }
    index
}

/// The shifted-window mask `[nW, ws², ws²]` for a padded `hp × wp` map (transformers' `get_attn_mask`).
fn shift_mask(hp: usize, wp: usize, ws: usize, shift: usize, device: &Device) -> Result<Tensor> {
    let region = |x: usize, size: usize| -> usize {
        if x < size - ws {
            0
        } else if x < size - shift {
            1
        } else {
            2
        }
    };
    let (nh, nw) = (hp / ws, wp / ws);
    let n = ws * ws;
    let mut mask = vec![0f32; nh * nw * n * n];
    let mut labels = vec![0usize; n];
    for wh in 0..nh {
        for ww in 0..nw {
            for (t, label) in labels.iter_mut().enumerate() {
                let (i, j) = (wh * ws + t / ws, ww * ws + t % ws);
                *label = 3 * region(i, hp) + region(j, wp);
            }
            let base = (wh * nw + ww) * n * n;
            for a in 0..n {
                for b in 0..n {
                    if labels[a] != labels[b] {
                        mask[base + a * n + b] = SHIFT_MASK_VALUE;
                    }
                }
            }
        }
    }
    Ok(Tensor::from_vec(mask, (nh * nw, n, n), device)?)
}

struct SwinBlock {
    layernorm_before: LayerNorm,
    query: Linear,
    key: Linear,
    value: Linear,
    /// `[heads, ws², ws²]`.
    relative_position_bias: Tensor,
    /// Q, K and V as one projection, with the bias's f32 values, for the fused window
    /// attention kernel (when the layers are on a fast path).
    fused: Option<(Linear, Vec<f32>)>,
    output: Linear,
    layernorm_after: LayerNorm,
    intermediate: Linear,
    mlp_output: Linear,
    act: Activation,
    num_heads: usize,
    window_size: usize,
    shift_size: usize,
}

impl SwinBlock {
    fn load(
        cfg: &SwinConfig,
        vb: &VarBuilder,
        dim: usize,
        num_heads: usize,
        shift_size: usize,
    ) -> Result<Self> {
        let std = cfg.initializer_range;
        let ws = cfg.window_size;
        let att = vb.pp("attention");
        let sa = att.pp("self");
        let table = sa.get(
            &[(2 * ws - 1) * (2 * ws - 1), num_heads],
            "relative_position_bias_table",
            Init::Normal(std),
        )?;
        // Old checkpoints carry the (recomputed) index buffer.
        sa.ignore("relative_position_index");
        let index = Tensor::from_vec(relative_position_index(ws), ws * ws * ws * ws, vb.device())?;
        let relative_position_bias = table
            .index_select(&index, 0)?
            .reshape((ws * ws, ws * ws, num_heads))?
            .permute((2, 0, 1))?
            .contiguous()?;
        let hidden = (cfg.mlp_ratio * dim as f64) as usize;
        let query = Linear::load(&sa.pp("query"), dim, dim, cfg.qkv_bias, std)?;
        let key = Linear::load(&sa.pp("key"), dim, dim, cfg.qkv_bias, std)?;
        let value = Linear::load(&sa.pp("value"), dim, dim, cfg.qkv_bias, std)?;
        let fused = match Linear::fuse(&[&query, &key, &value]) {
            Some(qkv) => {
                let bias = relative_position_bias.to_dtype(DType::F32)?.flatten_all()?;
                Some((qkv, bias.to_vec1::<f32>()?))
            }
            None => None,
        };
        Ok(SwinBlock {
            layernorm_before: LayerNorm::load(&vb.pp("layernorm_before"), dim, cfg.layer_norm_eps)?,
            query,
            key,
            value,
            relative_position_bias,
            fused,
            output: Linear::load(&att.pp("output").pp("dense"), dim, dim, true, std)?,
            layernorm_after: LayerNorm::load(&vb.pp("layernorm_after"), dim, cfg.layer_norm_eps)?,
            intermediate: Linear::load(&vb.pp("intermediate").pp("dense"), dim, hidden, true, std)?,
            mlp_output: Linear::load(&vb.pp("output").pp("dense"), hidden, dim, true, std)?,
            act: cfg.hidden_act,
            num_heads,
            window_size: ws,
            shift_size,
        })
    }

    /// Windowed attention over `windows` `[B·nW, ws², C]` with an optional per-window mask.
    fn attention(&self, windows: &Tensor, mask: Option<&Tensor>, batch: usize) -> Result<Tensor> {
        let (bw, n, c) = windows.dims3()?;
        let heads = self.num_heads;
        let hd = c / heads;
        if let Some((qkv, bias)) = &self.fused {
            if windows.dtype() == DType::F32 {
                let y = qkv.forward(windows)?;
                let mask_values = match mask {
                    Some(m) => Some((
                        m.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?,
                        m.dim(0)?,
                    )),
                    None => None,
                };
                let shape = AttentionShape { dim: c, heads };
                let scale = (1.0 / (hd as f64).sqrt()) as f32;
                let ctx = kernels::with_f32(&y, |data| {
                    let mask = mask_values.as_ref().map(|(m, nw)| (m.as_slice(), *nw));
                    attention::window_attention(data, shape, n, bias, mask, scale)
                })
                .flatten();
                if let Some(ctx) = ctx {
                    let ctx = Tensor::from_vec(ctx, (bw, n, c), windows.device())?;
                    return self.output.forward(&ctx);
                }
            }
        }
        let split = |t: Tensor| -> Result<Tensor> {
            Ok(t.reshape((bw, n, heads, hd))?
                .transpose(1, 2)?
                .contiguous()?)
        };
        let q = split(self.query.forward(windows)?)?;
        let k = split(self.key.forward(windows)?)?;
        let v = split(self.value.forward(windows)?)?;
        let mut scores = (q.matmul(&k.t()?)? * (1.0 / (hd as f64).sqrt()))?;
        scores = scores.broadcast_add(
            &self
                .relative_position_bias
                .unsqueeze(0)?
                .to_dtype(scores.dtype())?,
        )?;
        if let Some(mask) = mask {
            let nw = mask.dim(0)?;
            scores = scores
                .reshape((batch, nw, heads, n, n))?
                .broadcast_add(&mask.unsqueeze(1)?.unsqueeze(0)?.to_dtype(scores.dtype())?)?
                .reshape((bw, heads, n, n))?;
        }
        let dtype = scores.dtype();
        let probs =
            candle_nn::ops::softmax_last_dim(&scores.to_dtype(DType::F32)?)?.to_dtype(dtype)?;
        let ctx = probs.matmul(&v)?.transpose(1, 2)?.reshape((bw, n, c))?;
        self.output.forward(&ctx)
    }

    /// One block on `x` `[B, H·W, C]`; `clamp` is SwinModel's window/shift adjustment.
    fn forward(&self, x: &Tensor, (h, w): (usize, usize), clamp: bool) -> Result<Tensor> {
        let (mut ws, mut shift) = (self.window_size, self.shift_size);
        if clamp && h.min(w) <= ws {
            if h.min(w) < ws {
                // transformers shrinks the window here and then fails on the bias table.
                return Err(Error::input(format!(
                    "a Swin stage of {h}x{w} tokens is smaller than window_size {ws}; transformers cannot run this input size either (use a larger image)"
                )));
            }
            shift = 0;
            ws = h.min(w);
        }
        let (b, _, c) = x.dims3()?;
        let shortcut = x;
        let normed = self.layernorm_before.forward(x)?;
        let mask = |hp: usize, wp: usize| -> Result<Option<Tensor>> {
            if shift > 0 {
                Ok(Some(shift_mask(hp, wp, ws, shift, x.device())?))
            } else {
                Ok(None)
            }
        };
        // Fast path (contiguous f32 on the CPU): the pad, roll and window partition as one
        // gather of rows, their inverse and the residual add as one pass.
        let map = WindowMap::new(b, h, w, ws, shift);
        let windows = kernels::with_f32(&normed, |data| map.gather(data, c)).flatten();
        if let Some(windows) = windows {
            let windows =
                Tensor::from_vec(windows, (map.len() / (ws * ws), ws * ws, c), x.device())?;
            let attended = self.attention(&windows, mask(map.hp, map.wp)?.as_ref(), b)?;
            let hs = kernels::with_f32(&attended, |a| {
                kernels::with_f32(x, |short| map.scatter_add(short, a, c)).flatten()
            })
            .flatten();
            if let Some(hs) = hs {
                let hs = Tensor::from_vec(hs, (b, h * w, c), x.device())?;
                return self.feed_forward(hs);
            }
        }
        let mut hs = normed.reshape((b, h, w, c))?;
        let pad_r = (ws - w % ws) % ws;
        let pad_b = (ws - h % ws) % ws;
        if pad_r > 0 {
            hs = hs.pad_with_zeros(2, 0, pad_r)?;
        }
        if pad_b > 0 {
            hs = hs.pad_with_zeros(1, 0, pad_b)?;
        }
        let (hp, wp) = (h + pad_b, w + pad_r);
        if shift > 0 {
            hs = hs.roll(-(shift as i32), 1)?.roll(-(shift as i32), 2)?;
        }
        let (nh, nw) = (hp / ws, wp / ws);
        let windows = hs
            .reshape((b, nh, ws, nw, ws, c))?
            .permute((0, 1, 3, 2, 4, 5))?
            .contiguous()?
            .reshape((b * nh * nw, ws * ws, c))?;
        let attended = self.attention(&windows, mask(hp, wp)?.as_ref(), b)?;
        let mut hs = attended
            .reshape((b, nh, nw, ws, ws, c))?
            .permute((0, 1, 3, 2, 4, 5))?
            .contiguous()?
            .reshape((b, hp, wp, c))?;
        if shift > 0 {
            hs = hs.roll(shift as i32, 1)?.roll(shift as i32, 2)?;
        }
        if pad_r > 0 || pad_b > 0 {
            hs = hs.narrow(1, 0, h)?.narrow(2, 0, w)?;
        }
        let hs = (shortcut + hs.contiguous()?.reshape((b, h * w, c))?)?;
        self.feed_forward(hs)
    }

    /// The second half of the block: `hs + fc2(act(fc1(LN(hs))))`.
    fn feed_forward(&self, hs: Tensor) -> Result<Tensor> {
        let f = self.mlp_output.forward(
            &self
                .intermediate
                .forward_act(&self.layernorm_after.forward(&hs)?, Some(self.act))?,
        )?;
        Ok((hs + f)?)
    }
}

/// Rows per parallel task in [`WindowMap`]'s gather and scatter.
const TASK_ROWS: usize = 256;

/// Swin's padded, rolled window partition as a map of rows: entry `j` (window-major, then
/// row-major inside the window, the order of transformers' `window_partition` on the grid
/// padded to whole windows and rolled by `-shift`) is the row of the `[B·H·W]` input it holds,
/// or `None` for padding. Rolling back by `+shift` and unpadding sends entry `j` to the same
/// row, so one map serves both directions.
struct WindowMap {
    rows: Vec<Option<usize>>,
    /// For each input row, its entry in `rows`.
    inverse: Vec<usize>,
    hp: usize,
    wp: usize,
}

impl WindowMap {
    fn new(b: usize, h: usize, w: usize, ws: usize, shift: usize) -> Self {
        let (hp, wp) = (h.div_ceil(ws) * ws, w.div_ceil(ws) * ws);
        let mut rows = Vec::with_capacity(b * hp * wp);
        let mut inverse = vec![0; b * h * w];
        for bi in 0..b {
            for wy in 0..hp / ws {
                for wx in 0..wp / ws {
                    for r in 0..ws {
                        for s in 0..ws {
                            let y = (wy * ws + r + shift) % hp;
                            let x = (wx * ws + s + shift) % wp;
                            let row = (y < h && x < w).then_some((bi * h + y) * w + x);
                            if let Some(i) = row {
                                inverse[i] = rows.len();
                            }
                            rows.push(row);
                        }
                    }
                }
            }
        }
        WindowMap {
            rows,
            inverse,
            hp,
            wp,
        }
    }

    /// Rows in the partition (windows × ws²).
    fn len(&self) -> usize {
        self.rows.len()
    }

    /// The windows of `x` (`[B·H·W, c]`): `[len, c]`, zeros at padding. `None` if `x` is not
    /// `B·H·W` rows of `c`.
    fn gather(&self, x: &[f32], c: usize) -> Option<Vec<f32>> {
        if c == 0 || x.len() != self.inverse.len() * c {
            return None;
        }
        // Zeros at padding.
        let per = TASK_ROWS;
        kernels::par_filled(self.rows.len() * c, per * c, |i, dst| {
            for (dst, row) in dst.chunks_exact_mut(c).zip(&self.rows[i * per..]) {
                if let Some(src) = row.and_then(|r| x.get(r * c..(r + 1) * c)) {
                    dst.copy_from_slice(src);
                }
            }
        })
    }

    /// `shortcut + windows` put back in place: `[B·H·W, c]`. `None` on a size mismatch.
    fn scatter_add(&self, shortcut: &[f32], windows: &[f32], c: usize) -> Option<Vec<f32>> {
        if c == 0
            || shortcut.len() != self.inverse.len() * c
            || windows.len() != self.rows.len() * c
        {
            return None;
        }
        let per = TASK_ROWS;
        kernels::par_filled(shortcut.len(), per * c, |i, dst| {
            let rows = dst
                .chunks_exact_mut(c)
                .zip(shortcut[i * per * c..].chunks(c))
                .zip(&self.inverse[i * per..]);
            for ((dst, short), &j) in rows {
                if let Some(win) = windows.get(j * c..(j + 1) * c) {
                    for ((d, a), b) in dst.iter_mut().zip(short).zip(win) {
                        *d = a + b;
                    }
                }
            }
        })
    }
}

/// Patch merging: 2×2 neighbours concatenated (order (0,0), (1,0), (0,1), (1,1)), LayerNorm, Linear(4C → 2C).
struct PatchMerging {
    norm: LayerNorm,
    reduction: Linear,
}

impl PatchMerging {
    fn load(cfg: &SwinConfig, vb: &VarBuilder, dim: usize) -> Result<Self> {
        Ok(PatchMerging {
            norm: LayerNorm::load(&vb.pp("norm"), 4 * dim, DEFAULT_EPS)?,
            reduction: Linear::load(
                &vb.pp("reduction"),
                4 * dim,
                2 * dim,
                false,
                cfg.initializer_range,
            )?,
        })
    }

    fn forward(&self, x: &Tensor, (h, w): (usize, usize)) -> Result<Tensor> {
        let (b, _, c) = x.dims3()?;
        let mut x = x.reshape((b, h, w, c))?;
        if w % 2 == 1 {
            x = x.pad_with_zeros(2, 0, 1)?;
        }
        if h % 2 == 1 {
            x = x.pad_with_zeros(1, 0, 1)?;
        }
        let (h2, w2) = (h.div_ceil(2), w.div_ceil(2));
        // [B, H2, 2(h), W2, 2(w), C] → [B, H2, W2, 2(w), 2(h), C]: channel blocks (h,w) = (0,0), (1,0), (0,1), (1,1).
        let x = kernels::contiguous(
            &x.reshape((b, h2, 2, w2, 2, c))?
                .permute((0, 1, 3, 4, 2, 5))?,
        )?
        .reshape((b, h2 * w2, 4 * c))?;
        self.reduction.forward(&self.norm.forward(&x)?)
    }
}

struct SwinStage {
    blocks: Vec<SwinBlock>,
    downsample: Option<PatchMerging>,
}

/// What the encoder returns: the last state, and every stage's output before and after merging.
struct EncoderOutput {
    last: Tensor,
    last_dims: (usize, usize),
    /// (state before patch merging, its (H, W)) for each stage.
    before_downsampling: Vec<(Tensor, (usize, usize))>,
    /// (state after patch merging, its (H, W)) for each stage.
    after_downsampling: Vec<(Tensor, (usize, usize))>,
}

struct SwinEncoder {
    stages: Vec<SwinStage>,
}

impl SwinEncoder {
    fn load(cfg: &SwinConfig, vb: &VarBuilder) -> Result<Self> {
        let n = cfg.depths.len();
        let mut stages = Vec::with_capacity(n);
        for (s, (&depth, &heads)) in cfg.depths.iter().zip(&cfg.num_heads).enumerate() {
            let svb = vb.pp("layers").pp(s);
            let dim = cfg.stage_dim(s);
            let blocks = (0..depth)
                .map(|j| {
                    let shift = if j % 2 == 0 { 0 } else { cfg.window_size / 2 };
                    SwinBlock::load(cfg, &svb.pp("blocks").pp(j), dim, heads, shift)
                })
                .collect::<Result<Vec<_>>>()?;
            let downsample = if s + 1 < n {
                Some(PatchMerging::load(cfg, &svb.pp("downsample"), dim)?)
            } else {
                None
            };
            stages.push(SwinStage { blocks, downsample });
        }
        Ok(SwinEncoder { stages })
    }

    fn forward(
        &self,
        mut x: Tensor,
        mut dims: (usize, usize),
        always_partition: bool,
    ) -> Result<EncoderOutput> {
        let mut before = Vec::with_capacity(self.stages.len());
        let mut after = Vec::with_capacity(self.stages.len());
        for stage in &self.stages {
            for block in &stage.blocks {
                x = block.forward(&x, dims, !always_partition)?;
            }
            before.push((x.clone(), dims));
            if let Some(merge) = &stage.downsample {
                x = merge.forward(&x, dims)?;
                dims = (dims.0.div_ceil(2), dims.1.div_ceil(2));
            }
            after.push((x.clone(), dims));
        }
        Ok(EncoderOutput {
            last: x,
            last_dims: dims,
            before_downsampling: before,
            after_downsampling: after,
        })
    }
}

/// `[B, H·W, C]` → `[B, C, H, W]`.
fn to_spatial(x: &Tensor, (h, w): (usize, usize)) -> Result<Tensor> {
    let (b, _, c) = x.dims3()?;
    Ok(kernels::contiguous(
        &x.reshape((b, h, w, c))?.permute((0, 3, 1, 2))?,
    )?)
}

/// `SwinModel`: embeddings, encoder, final LayerNorm and mean pooling.
pub struct SwinModel {
    embeddings: SwinEmbeddings,
    encoder: SwinEncoder,
    layernorm: LayerNorm,
}

impl SwinModel {
    /// Loads the model from `vb` (the root of a SwinModel checkpoint, or `swin.` inside a head).
    pub fn load(cfg: &SwinConfig, vb: &VarBuilder) -> Result<Self> {
        cfg.validate()?;
        let num_features = cfg.stage_dim(cfg.depths.len() - 1);
        Ok(SwinModel {
            embeddings: SwinEmbeddings::load(cfg, &vb.pp("embeddings"))?,
            encoder: SwinEncoder::load(cfg, &vb.pp("encoder"))?,
            layernorm: LayerNorm::load(&vb.pp("layernorm"), num_features, cfg.layer_norm_eps)?,
        })
    }

    fn run(
        &self,
        batch: &Batch,
        options: &ForwardOptions,
    ) -> Result<(Tensor, Tensor, Option<Vec<Tensor>>)> {
        let pixel_values = pixel_values(batch, self.embeddings.projection.dtype())?;
        let (x, dims) = self.embeddings.forward(&pixel_values)?;
        let enc = self.encoder.forward(x.clone(), dims, false)?;
        let hidden_states = options.output_hidden_states.then(|| {
            std::iter::once(x)
                .chain(enc.after_downsampling.iter().map(|(t, _)| t.clone()))
                .collect()
        });
        let _ = enc.last_dims;
        let last = self.layernorm.forward(&enc.last)?;
        let pooled = last.mean(1)?;
        Ok((last, pooled, hidden_states))
    }
}

fn pixel_values(batch: &Batch, dtype: DType) -> Result<Tensor> {
    Ok(batch.require("pixel_values")?.to_dtype(dtype)?)
}

impl TaskModel for SwinModel {
    fn class_name(&self) -> &'static str {
        "SwinModel"
    }
    fn forward(&self, batch: &Batch, options: &ForwardOptions) -> Result<ModelOutput> {
        let (last, pooled, hidden_states) = self.run(batch, options)?;
        let mut out = ModelOutput {
            hidden_states,
            ..Default::default()
        };
        out.insert("last_hidden_state", last);
        out.insert("pooler_output", pooled);
        Ok(out)
    }
}

/// `SwinForImageClassification`: `classifier` on the pooled output.
pub struct SwinForImageClassification {
    swin: SwinModel,
    classifier: Linear,
}

impl TaskModel for SwinForImageClassification {
    fn class_name(&self) -> &'static str {
        "SwinForImageClassification"
    }
    fn forward(&self, batch: &Batch, options: &ForwardOptions) -> Result<ModelOutput> {
        let (_, pooled, hidden_states) = self.swin.run(batch, options)?;
        let mut out = ModelOutput {
            hidden_states,
            ..Default::default()
        };
        out.insert("logits", self.classifier.forward(&pooled)?);
        Ok(out)
    }
}

/// `SwinBackbone`: feature maps `[B, C, H, W]` of the stages in `out_features`, each through its
/// own LayerNorm (`hidden_states_norms`).
pub struct SwinBackbone {
    embeddings: SwinEmbeddings,
    encoder: SwinEncoder,
    /// (position in stage_names, norm) for each selected stage, in stage order.
    norms: Vec<(usize, LayerNorm)>,
}

impl SwinBackbone {
    /// Loads the backbone; `config.raw()` holds `out_features` / `out_indices`.
    pub fn load(config: &Config, vb: &VarBuilder) -> Result<Self> {
        let cfg: &SwinConfig = config.model_config()?;
        cfg.validate()?;
        let stage_names = cfg.stage_names();
        let selection = StageSelection::from_config(config.raw(), &stage_names)?;
        let features = cfg.num_features();
        let norms = selection
            .positions(&stage_names)
            .into_iter()
            .map(|p| {
                Ok((
                    p,
                    LayerNorm::load(
                        &vb.pp("hidden_states_norms").pp(&stage_names[p]),
                        features[p],
                        DEFAULT_EPS,
                    )?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        // SwinBackbone never uses the final LayerNorm of a classification checkpoint.
        vb.pp("layernorm").ignore("weight");
        vb.pp("layernorm").ignore("bias");
        Ok(SwinBackbone {
            embeddings: SwinEmbeddings::load(cfg, &vb.pp("embeddings"))?,
            encoder: SwinEncoder::load(cfg, &vb.pp("encoder"))?,
            norms,
        })
    }
}

impl TaskModel for SwinBackbone {
    fn class_name(&self) -> &'static str {
        "SwinBackbone"
    }
    fn forward(&self, batch: &Batch, options: &ForwardOptions) -> Result<ModelOutput> {
        let pixel_values = pixel_values(batch, self.embeddings.projection.dtype())?;
        let (x, dims) = self.embeddings.forward(&pixel_values)?;
        let enc = self.encoder.forward(x.clone(), dims, true)?;
        let spatial: Vec<Tensor> = std::iter::once(to_spatial(&x, dims))
            .chain(
                enc.before_downsampling
                    .iter()
                    .map(|(t, d)| to_spatial(t, *d)),
            )
            .collect::<Result<_>>()?;
        let mut maps = Vec::with_capacity(self.norms.len());
        for (p, norm) in &self.norms {
            let state = spatial
                .get(*p)
                .ok_or_else(|| Error::input("stage index out of range"))?;
            let normed = kernels::contiguous(
                &norm
                    .forward(&state.permute((0, 2, 3, 1))?)?
                    .permute((0, 3, 1, 2))?,
            )?;
            maps.push(normed);
        }
        Ok(ModelOutput {
            feature_maps: Some(maps),
            hidden_states: options.output_hidden_states.then_some(spatial),
            ..Default::default()
        })
    }
}

/// The registry entry for `model_type: "swin"`.
pub struct Swin;

impl Architecture for Swin {
    fn model_type(&self) -> &'static str {
        "swin"
    }
    fn config_class(&self) -> &'static str {
        "SwinConfig"
    }
    fn base_model_prefix(&self) -> &'static str {
        "swin"
    }
    fn image_processor_class(&self) -> Option<&'static str> {
        Some("ViTImageProcessor")
    }
    fn tasks(&self) -> &'static [(Task, &'static str)] {
        &[
            (Task::Base, "SwinModel"),
            (Task::ImageClassification, "SwinForImageClassification"),
            (Task::Backbone, "SwinBackbone"),
        ]
    }
    fn parse_config(&self, raw: &Map<String, Value>) -> Result<Arc<dyn ModelConfig>> {
        let cfg: SwinConfig = parse_typed(raw)?;
        cfg.validate()?;
        // A bad out_features / out_indices fails when the config is read, as in transformers.
        StageSelection::from_config(raw, &cfg.stage_names())?;
        Ok(Arc::new(cfg))
    }
    fn load(&self, task: Task, config: &Config, vb: &VarBuilder) -> Result<Box<dyn TaskModel>> {
        let cfg: &SwinConfig = config.model_config()?;
        match task {
            Task::Base => Ok(Box::new(SwinModel::load(cfg, vb)?)),
            Task::ImageClassification => {
                let swin = SwinModel::load(cfg, &vb.pp("swin"))?;
                let num_features = cfg.stage_dim(cfg.depths.len() - 1);
                let classifier = Linear::load(
                    &vb.pp("classifier"),
                    num_features,
                    config.num_labels(),
                    true,
                    cfg.initializer_range,
                )?;
                Ok(Box::new(SwinForImageClassification { swin, classifier }))
            }
            Task::Backbone => Ok(Box::new(SwinBackbone::load(config, vb)?)),
            other => Err(unsupported_task(self, other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_index_matches_transformers_formula() {
        let idx = relative_position_index(2);
        // window 2: tokens (0,0),(0,1),(1,0),(1,1); index of (p=0, q=3) = (0-1+1)*3 + (0-1+1) = 0
        assert_eq!(idx[3], 0);
        // (p=3, q=0): (1+1)*3 + (1+1) = 8
        assert_eq!(idx[12], 8);
        assert_eq!(idx.len(), 16);
    }

    #[test]
    fn shift_mask_regions() -> Result<()> {
        let m = shift_mask(4, 4, 2, 1, &Device::Cpu)?;
        assert_eq!(m.dims(), &[4, 4, 4]);
        // The first window lies in region (0,0) only: no masking.
        let first: Vec<f32> = m.get(0)?.flatten_all()?.to_vec1()?;
        assert!(first.iter().all(|v| *v == 0.0));
        // The last window mixes regions: some masking.
        let last: Vec<f32> = m.get(3)?.flatten_all()?.to_vec1()?;
        assert!(last.contains(&SHIFT_MASK_VALUE));
        Ok(())
    }
}
