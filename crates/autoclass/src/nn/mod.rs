//! Shared layers: linear, layer norm, embeddings, activations and multi-head attention.
//! Model files call these; they do not copy them.

use candle_core::{DType, Tensor, D};
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::weights::{Init, VarBuilder};

/// `nn.Linear`: `y = x Wᵀ + b`, with `W` stored `[out, in]`.
#[derive(Clone, Debug)]
pub struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Linear {
    /// Loads `weight` `[out, in]` and, if `bias`, `bias` `[out]`. Missing weights are
    /// initialised like transformers' `_init_weights`: N(0, `init_std`) and zero bias.
    pub fn load(
        vb: &VarBuilder,
        in_dim: usize,
        out_dim: usize,
        bias: bool,
        init_std: f64,
    ) -> Result<Self> {
        let weight = vb.get(&[out_dim, in_dim], "weight", Init::Normal(init_std))?;
        let bias = if bias {
            Some(vb.get(&[out_dim], "bias", Init::Const(0.0))?)
        } else {
            None
        };
        Ok(Linear { weight, bias })
    }

    /// A linear layer from existing tensors (e.g. a tied decoder).
    pub fn from_tensors(weight: Tensor, bias: Option<Tensor>) -> Self {
        Linear { weight, bias }
    }

    /// Applies the layer to the last dimension of `x`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let in_dim = *dims
            .last()
            .ok_or_else(|| Error::input("linear layer on a scalar"))?;
        let rows: usize = dims[..dims.len() - 1].iter().product();
        let out_dim = self.weight.dim(0)?;
        let x2 = x.reshape((rows, in_dim))?;
        let mut y = x2.matmul(&self.weight.t()?)?;
        if let Some(b) = &self.bias {
            y = y.broadcast_add(b)?;
        }
        let mut out_dims = dims;
        if let Some(last) = out_dims.last_mut() {
            *last = out_dim;
        }
        Ok(y.reshape(out_dims)?)
    }
}

/// `nn.LayerNorm` over the last dimension (biased variance).
#[derive(Clone, Debug)]
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    /// Loads `weight` and `bias` of size `dim`; missing ones are ones and zeros.
    pub fn load(vb: &VarBuilder, dim: usize, eps: f64) -> Result<Self> {
        Ok(LayerNorm {
            weight: vb.get(&[dim], "weight", Init::Const(1.0))?,
            bias: vb.get(&[dim], "bias", Init::Const(0.0))?,
            eps,
        })
    }

    /// Normalises the last dimension of `x` (two-pass mean and variance, in f32).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dtype = x.dtype();
        let xf = x.to_dtype(DType::F32)?;
        let mean = xf.mean_keepdim(D::Minus1)?;
        let centered = xf.broadcast_sub(&mean)?;
        let var = centered.sqr()?.mean_keepdim(D::Minus1)?;
        let normed = centered.broadcast_div(&(var + self.eps)?.sqrt()?)?;
        Ok(normed
            .to_dtype(dtype)?
            .broadcast_mul(&self.weight)?
            .broadcast_add(&self.bias)?)
    }
}

/// `nn.Embedding`: a lookup table with a bounds check that names the table.
#[derive(Clone, Debug)]
pub struct Embedding {
    weight: Tensor,
    name: &'static str,
}

impl Embedding {
    /// Loads `weight` `[count, dim]`.
    pub fn load(
        vb: &VarBuilder,
        count: usize,
        dim: usize,
        init_std: f64,
        name: &'static str,
    ) -> Result<Self> {
        Ok(Embedding {
            weight: vb.get(&[count, dim], "weight", Init::Normal(init_std))?,
            name,
        })
    }

    /// The table `[count, dim]`.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// Looks up integer `ids` of any shape; out-of-range ids are an error, not a panic.
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        let count = self.weight.dim(0)?;
        let flat = ids.flatten_all()?.to_dtype(DType::I64)?;
        let values = flat.to_vec1::<i64>()?;
        if let Some(bad) = values.iter().find(|&&v| v < 0 || v as usize >= count) {
            return Err(Error::input(format!(
                "index {bad} is out of range for {} of size {count}",
                self.name
            )));
        }
        let flat = flat.to_dtype(DType::U32)?;
        let out = self.weight.index_select(&flat, 0)?;
        let mut dims = ids.dims().to_vec();
        dims.push(self.weight.dim(1)?);
        Ok(out.reshape(dims)?)
    }
}

/// transformers' activation names (`activations.py` ACT2CLS).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
pub enum Activation {
    /// Exact GELU, `0.5x(1+erf(x/√2))`.
    #[serde(rename = "gelu", alias = "gelu_python")]
    Gelu,
    /// tanh-approximated GELU.
    #[serde(rename = "gelu_new", alias = "gelu_pytorch_tanh", alias = "gelu_fast")]
    GeluTanh,
    /// `x·σ(1.702x)`.
    #[serde(rename = "quick_gelu")]
    QuickGelu,
    /// ReLU.
    #[serde(rename = "relu")]
    Relu,
    /// SiLU / swish.
    #[serde(rename = "silu", alias = "swish")]
    Silu,
    /// tanh.
    #[serde(rename = "tanh")]
    Tanh,
}

impl Activation {
    /// Applies the activation.
    pub fn forward(self, x: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Activation::Gelu => x.gelu_erf()?,
            Activation::GeluTanh => x.gelu()?,
            Activation::QuickGelu => (x * candle_nn::ops::sigmoid(&(x * 1.702)?)?)?,
            Activation::Relu => x.relu()?,
            Activation::Silu => x.silu()?,
            Activation::Tanh => x.tanh()?,
        })
    }
}

/// The additive attention mask `[B, 1, 1, L]`: 0 where `attention_mask` is 1, the dtype's
/// minimum where it is 0 (transformers' `create_bidirectional_mask`, eager path).
pub fn additive_mask(attention_mask: &Tensor, dtype: DType) -> Result<Tensor> {
    let (b, l) = attention_mask.dims2()?;
    let min = match dtype {
        DType::F16 => f64::from(half::f16::MIN),
        DType::BF16 => f64::from(half::bf16::MIN),
        DType::F64 => f64::MIN,
        _ => f64::from(f32::MIN),
    };
    let keep = attention_mask.to_dtype(DType::F32)?;
    // (1 - mask) * min
    let mask = ((keep.ones_like()? - keep)? * min)?;
    Ok(mask.reshape((b, 1, 1, l))?.to_dtype(dtype)?)
}

/// Multi-head scaled dot-product attention over already projected q, k and v.
#[derive(Clone, Debug)]
pub struct MultiHeadAttention {
    query: Linear,
    key: Linear,
    value: Linear,
    num_heads: usize,
}

impl MultiHeadAttention {
    /// Wraps the three projections; `num_heads` must divide the hidden size.
    pub fn new(query: Linear, key: Linear, value: Linear, num_heads: usize) -> Self {
        MultiHeadAttention {
            query,
            key,
            value,
            num_heads,
        }
    }

    fn split_heads(&self, x: &Tensor) -> Result<Tensor> {
        let (b, l, d) = x.dims3()?;
        let hd = d / self.num_heads;
        Ok(x.reshape((b, l, self.num_heads, hd))?
            .transpose(1, 2)?
            .contiguous()?)
    }

    /// `softmax(QKᵀ/√hd + mask) V` for `x` `[B, L, D]`, returning the merged context `[B, L, D]`
    /// and, if `want_probs`, the attention probabilities `[B, heads, L, L]`.
    pub fn forward(
        &self,
        x: &Tensor,
        mask: Option<&Tensor>,
        want_probs: bool,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let (b, l, d) = x.dims3()?;
        let hd = d / self.num_heads;
        let q = self.split_heads(&self.query.forward(x)?)?;
        let k = self.split_heads(&self.key.forward(x)?)?;
        let v = self.split_heads(&self.value.forward(x)?)?;
        let scale = 1.0 / (hd as f64).sqrt();
        let mut scores = (q.matmul(&k.t()?)? * scale)?;
        if let Some(m) = mask {
            scores = scores.broadcast_add(m)?;
        }
        let dtype = scores.dtype();
        let probs =
            candle_nn::ops::softmax_last_dim(&scores.to_dtype(DType::F32)?)?.to_dtype(dtype)?;
        let ctx = probs.matmul(&v)?;
        let ctx = ctx.transpose(1, 2)?.reshape((b, l, d))?;
        Ok((ctx, want_probs.then_some(probs)))
    }
}

/// Checks that `hidden` is divisible by `heads`, as transformers' attention constructors do.
pub fn check_heads(hidden: usize, heads: usize) -> Result<()> {
    if heads == 0 || hidden % heads != 0 {
        return Err(Error::config(
            "num_attention_heads",
            format!(
                "The hidden size ({hidden}) is not a multiple of the number of attention heads ({heads})"
            ),
        ));
    }
    Ok(())
}

/// `nn.Conv2d` with square kernels: weight `[out, in / groups, k, k]`, optional bias.
#[derive(Clone, Debug)]
pub struct Conv2d {
    weight: Tensor,
    bias: Option<Tensor>,
    stride: usize,
    padding: usize,
    groups: usize,
}

/// The shape parameters of a [`Conv2d`].
#[derive(Clone, Copy, Debug)]
pub struct Conv2dSpec {
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Kernel size (square).
    pub kernel: usize,
    /// Stride.
    pub stride: usize,
    /// Zero padding on every side.
    pub padding: usize,
    /// Channel groups (`in_channels` for a depthwise convolution).
    pub groups: usize,
    /// Whether there is a bias.
    pub bias: bool,
}

impl Conv2d {
    /// Loads `weight` and (if `spec.bias`) `bias`; missing ones are initialised like transformers.
    pub fn load(vb: &VarBuilder, spec: Conv2dSpec, init_std: f64) -> Result<Self> {
        if spec.groups == 0
            || spec.in_channels % spec.groups != 0
            || spec.out_channels % spec.groups != 0
        {
            return Err(Error::config(
                "groups",
                format!(
                    "{} does not divide the channels ({} in, {} out)",
                    spec.groups, spec.in_channels, spec.out_channels
                ),
            ));
        }
        let weight = vb.get(
            &[
                spec.out_channels,
                spec.in_channels / spec.groups,
                spec.kernel,
                spec.kernel,
            ],
            "weight",
            Init::Normal(init_std),
        )?;
        let bias = if spec.bias {
            Some(vb.get(&[spec.out_channels], "bias", Init::Const(0.0))?)
        } else {
            None
        };
        Ok(Conv2d {
            weight,
            bias,
            stride: spec.stride,
            padding: spec.padding,
            groups: spec.groups,
        })
    }

    /// The dtype of the weights.
    pub fn dtype(&self) -> DType {
        self.weight.dtype()
    }

    /// Applies the convolution to `x` `[B, C, H, W]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        // candle's CPU convolution has no bf16 kernel: widen to f32 and narrow the result.
        let y = if self.weight.dtype() == DType::BF16 && self.weight.device().is_cpu() {
            x.to_dtype(DType::F32)?
                .conv2d(
                    &self.weight.to_dtype(DType::F32)?,
                    self.padding,
                    self.stride,
                    1,
                    self.groups,
                )?
                .to_dtype(DType::BF16)?
        } else {
            x.conv2d(&self.weight, self.padding, self.stride, 1, self.groups)?
        };
        Ok(match &self.bias {
            Some(b) => y.broadcast_add(&b.reshape((1, b.dim(0)?, 1, 1))?)?,
            None => y,
        })
    }
}

/// `nn.Conv1d`: weight `[out, in / groups, k]`, optional bias.
#[derive(Clone, Debug)]
pub struct Conv1d {
    weight: Tensor,
    bias: Option<Tensor>,
    stride: usize,
    padding: usize,
    groups: usize,
}

/// The shape parameters of a [`Conv1d`].
#[derive(Clone, Copy, Debug)]
pub struct Conv1dSpec {
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Kernel size.
    pub kernel: usize,
    /// Stride.
    pub stride: usize,
    /// Zero padding on both ends.
    pub padding: usize,
    /// Channel groups.
    pub groups: usize,
    /// Whether there is a bias.
    pub bias: bool,
}

impl Conv1dSpec {
    /// Checks that the groups divide the channels and that kernel and stride are positive.
    pub fn check(&self) -> Result<()> {
        if self.groups == 0
            || self.in_channels % self.groups != 0
            || self.out_channels % self.groups != 0
        {
            return Err(Error::config(
                "groups",
                format!(
                    "{} does not divide the channels ({} in, {} out)",
                    self.groups, self.in_channels, self.out_channels
                ),
            ));
        }
        if self.kernel == 0 || self.stride == 0 {
            return Err(Error::config(
                "kernel",
                format!(
                    "kernel size ({}) and stride ({}) must be positive",
                    self.kernel, self.stride
                ),
            ));
        }
        Ok(())
    }
}

impl Conv1d {
    /// Loads `weight` and (if `spec.bias`) `bias`; missing ones are N(0, `init_std`) and zeros.
    pub fn load(vb: &VarBuilder, spec: Conv1dSpec, init_std: f64) -> Result<Self> {
        spec.check()?;
        let weight = vb.get(
            &[
                spec.out_channels,
                spec.in_channels / spec.groups,
                spec.kernel,
            ],
            "weight",
            Init::Normal(init_std),
        )?;
        let bias = if spec.bias {
            Some(vb.get(&[spec.out_channels], "bias", Init::Const(0.0))?)
        } else {
            None
        };
        Ok(Conv1d {
            weight,
            bias,
            stride: spec.stride,
            padding: spec.padding,
            groups: spec.groups,
        })
    }

    /// A convolution from existing tensors (e.g. a weight-normalised kernel computed at load).
    pub fn from_tensors(weight: Tensor, bias: Option<Tensor>, spec: Conv1dSpec) -> Result<Self> {
        spec.check()?;
        Ok(Conv1d {
            weight,
            bias,
            stride: spec.stride,
            padding: spec.padding,
            groups: spec.groups,
        })
    }

    /// The output length for an input of `len` steps, or `None` if the input is shorter than
    /// the kernel (after padding).
    pub fn output_len(&self, len: usize) -> Option<usize> {
        let k = self.weight.dims().last().copied().unwrap_or(1);
        let padded = len + 2 * self.padding;
        (padded >= k).then(|| (padded - k) / self.stride + 1)
    }

    /// Applies the convolution to `x` `[B, C, L]`; an input shorter than the kernel is an error
    /// with torch's message, not a panic.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (_, _, l) = x.dims3().map_err(|_| {
            Error::input(format!(
                "a 1-d convolution needs [batch, channels, length], got {:?}",
                x.dims()
            ))
        })?;
        if self.output_len(l).is_none() {
            let k = self.weight.dims().last().copied().unwrap_or(1);
            return Err(Error::input(format!(
                "Calculated padded input size per channel: ({}). Kernel size: ({k}). Kernel size can't be greater than actual input size",
                l + 2 * self.padding
            )));
        }
        // candle's CPU convolution has no bf16 kernel: widen to f32 and narrow the result.
        let y = if self.weight.dtype() == DType::BF16 && self.weight.device().is_cpu() {
            x.to_dtype(DType::F32)?
                .conv1d(
                    &self.weight.to_dtype(DType::F32)?,
                    self.padding,
                    self.stride,
                    1,
                    self.groups,
                )?
                .to_dtype(DType::BF16)?
        } else {
            x.conv1d(&self.weight, self.padding, self.stride, 1, self.groups)?
        };
        Ok(match &self.bias {
            Some(b) => y.broadcast_add(&b.reshape((1, b.dim(0)?, 1))?)?,
            None => y,
        })
    }
}

/// `nn.GroupNorm` over `[B, C, *]`: statistics per (sample, group of channels) over the group's
/// channels and all trailing positions (biased variance, in f32), then a per-channel affine.
#[derive(Clone, Debug)]
pub struct GroupNorm {
    weight: Tensor,
    bias: Tensor,
    num_groups: usize,
    eps: f64,
}

impl GroupNorm {
    /// Loads `weight` and `bias` of size `num_channels`; missing ones are ones and zeros.
    pub fn load(vb: &VarBuilder, num_groups: usize, num_channels: usize, eps: f64) -> Result<Self> {
        if num_groups == 0 || num_channels % num_groups != 0 {
            return Err(Error::config(
                "num_groups",
                format!(
                    "num_channels ({num_channels}) must be divisible by num_groups ({num_groups})"
                ),
            ));
        }
        Ok(GroupNorm {
            weight: vb.get(&[num_channels], "weight", Init::Const(1.0))?,
            bias: vb.get(&[num_channels], "bias", Init::Const(0.0))?,
            num_groups,
            eps,
        })
    }

    /// Normalises `x` `[B, C, ...]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        if dims.len() < 2 {
            return Err(Error::input(format!(
                "group norm needs [batch, channels, ...], got {dims:?}"
            )));
        }
        let (b, c) = (dims[0], dims[1]);
        let dtype = x.dtype();
        let xf = x.to_dtype(DType::F32)?.reshape((b, self.num_groups, ()))?;
        let mean = xf.mean_keepdim(D::Minus1)?;
        let centered = xf.broadcast_sub(&mean)?;
        let var = centered.sqr()?.mean_keepdim(D::Minus1)?;
        let normed = centered
            .broadcast_div(&(var + self.eps)?.sqrt()?)?
            .reshape(dims.as_slice())?
            .to_dtype(dtype)?;
        let mut affine_shape = vec![1usize; dims.len()];
        affine_shape[1] = c;
        Ok(normed
            .broadcast_mul(&self.weight.reshape(affine_shape.as_slice())?)?
            .broadcast_add(&self.bias.reshape(affine_shape.as_slice())?)?)
    }
}
