//! Shared layers: linear, layer norm, embeddings, activations and multi-head attention.
//! Model files call these; they do not copy them.

use std::sync::{Arc, OnceLock};

use candle_core::{DType, Tensor, D};
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::kernels::attention::{AttentionShape, Seq};
use crate::kernels::{self, amx::AmxLinear, gemm::Epilogue, gemm::PackedLinear, int8::QuantLinear};
use crate::weights::{Init, LazyTable, VarBuilder};

/// `nn.Linear`: `y = x Wᵀ + b`, with `W` stored `[out, in]`.
///
/// On CPUs with AVX-512, f32 weights are packed once at load for [`crate::kernels::gemm`] (or
/// [`crate::kernels::int8`], [`crate::kernels::amx`] when asked) and the original tensor is
/// dropped; elsewhere the layer runs through candle's matmul.
#[derive(Clone, Debug)]
pub struct Linear {
    weight: Option<Tensor>,
    bias: Option<Tensor>,
    packed: Option<Arc<PackedLinear>>,
    quant: Option<Arc<QuantLinear>>,
    amx: Option<Arc<AmxLinear>>,
    out_dim: usize,
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
        if vb.int8_linear() && kernels::int8::available() {
            if let Some(q) = quantize_linear(&weight, bias.as_ref()) {
                return Ok(Linear {
                    weight: None,
                    bias: None,
                    packed: None,
                    quant: Some(Arc::new(q)),
                    amx: None,
                    out_dim,
                });
            }
        }
        if vb.bf16_linear() && kernels::amx::available() {
            if let Some(a) = amx_linear(&weight, bias.as_ref()) {
                return Ok(Linear {
                    weight: None,
                    bias: None,
                    packed: None,
                    quant: None,
                    amx: Some(Arc::new(a)),
                    out_dim,
                });
            }
        }
        Ok(Self::from_tensors(weight, bias))
    }

    /// A linear layer from existing tensors (e.g. a tied decoder).
    pub fn from_tensors(weight: Tensor, bias: Option<Tensor>) -> Self {
        let out_dim = weight.dims().first().copied().unwrap_or(0);
        match pack_linear(&[(&weight, bias.as_ref())]) {
            Some(packed) => Linear {
                weight: None,
                bias: None,
                packed: Some(Arc::new(packed)),
                quant: None,
                amx: None,
                out_dim,
            },
            None => Linear {
                weight: Some(weight),
                bias,
                packed: None,
                quant: None,
                amx: None,
                out_dim,
            },
        }
    }

    /// Output features.
    pub fn out_features(&self) -> usize {
        self.out_dim
    }

    /// One layer computing `parts` side by side (their outputs concatenated), e.g. Q, K and V
    /// as one projection: `None` unless all are on the same fast path (packed f32, int8 or AMX
    /// bf16) with the same input size and output sizes that are multiples of 32.
    pub fn fuse(parts: &[&Linear]) -> Option<Linear> {
        let out_dim = parts.iter().map(|p| p.out_dim).sum();
        let empty = Linear {
            weight: None,
            bias: None,
            packed: None,
            quant: None,
            amx: None,
            out_dim,
        };
        let packed: Option<Vec<&PackedLinear>> =
            parts.iter().map(|p| p.packed.as_deref()).collect();
        if let Some(p) = packed.and_then(|p| PackedLinear::concat(&p)) {
            return Some(Linear {
                packed: Some(Arc::new(p)),
                ..empty
            });
        }
        let quant: Option<Vec<&QuantLinear>> = parts.iter().map(|p| p.quant.as_deref()).collect();
        if let Some(q) = quant.and_then(|q| QuantLinear::concat(&q)) {
            return Some(Linear {
                quant: Some(Arc::new(q)),
                ..empty
            });
        }
        let amx: Option<Vec<&AmxLinear>> = parts.iter().map(|p| p.amx.as_deref()).collect();
        let a = amx.and_then(|a| AmxLinear::concat(&a))?;
        Some(Linear {
            amx: Some(Arc::new(a)),
            ..empty
        })
    }

    /// Applies the layer to the last dimension of `x`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_act(x, None)
    }

    /// Applies the layer, then `act` (fused into the GEMM for exact GELU on the fast path).
    pub fn forward_act(&self, x: &Tensor, act: Option<Activation>) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let in_dim = *dims
            .last()
            .ok_or_else(|| Error::input("linear layer on a scalar"))?;
        let rows: usize = dims[..dims.len() - 1].iter().product();
        let out_dim = self.out_dim;
        let mut out_dims = dims;
        if let Some(last) = out_dims.last_mut() {
            *last = out_dim;
        }
        let fast = (self.amx.as_deref().map(Fast::Amx))
            .or(self.quant.as_deref().map(Fast::Quant))
            .or(self.packed.as_deref().map(Fast::Packed));
        if let Some(fast) = fast {
            if fast.in_features() != in_dim {
                return Err(Error::input(format!(
                    "linear layer expects {} input features, got {in_dim}",
                    fast.in_features()
                )));
            }
            let gelu = act == Some(Activation::Gelu);
            let dtype = x.dtype();
            let xf = kernels::contiguous(&x.to_dtype(DType::F32)?)?;
            let y = kernels::with_f32(&xf, |data| fast.forward(data, rows, gelu))
                .flatten()
                .ok_or_else(|| {
                    Error::input(format!(
                        "the {} linear layer needs a CPU tensor",
                        fast.name()
                    ))
                })?;
            let y = Tensor::from_vec(y, out_dims, x.device())?.to_dtype(dtype)?;
            return match act {
                Some(a) if !gelu => a.forward(&y),
                _ => Ok(y),
            };
        }
        let weight = self
            .weight
            .as_ref()
            .ok_or_else(|| Error::input("linear layer without weights"))?;
        let x2 = x.reshape((rows, in_dim))?;
        let mut y = x2.matmul(&weight.t()?)?;
        if let Some(b) = &self.bias {
            y = y.broadcast_add(b)?;
        }
        let y = y.reshape(out_dims)?;
        match act {
            Some(a) => a.forward(&y),
            None => Ok(y),
        }
    }
}

/// One of [`Linear`]'s fast paths.
#[derive(Clone, Copy)]
enum Fast<'a> {
    Packed(&'a PackedLinear),
    Quant(&'a QuantLinear),
    Amx(&'a AmxLinear),
}

impl Fast<'_> {
    fn in_features(self) -> usize {
        match self {
            Fast::Packed(p) => p.in_features(),
            Fast::Quant(q) => q.in_features(),
            Fast::Amx(a) => a.in_features(),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Fast::Packed(_) => "packed",
            Fast::Quant(_) => "int8",
            Fast::Amx(_) => "bf16",
        }
    }

    /// `x Wᵀ + b` for `rows` rows, followed by exact GELU when `gelu` (fused into the GEMM's
    /// epilogue where the kernel has one).
    fn forward(self, x: &[f32], rows: usize, gelu: bool) -> Option<Vec<f32>> {
        let epilogue = if gelu {
            Epilogue::GeluErf
        } else {
            Epilogue::None
        };
        match self {
            Fast::Packed(p) => p.forward(x, rows, epilogue),
            Fast::Amx(a) => a.forward(x, rows, epilogue),
            Fast::Quant(q) => {
                let mut y = q.forward(x, rows)?;
                if gelu {
                    kernels::elementwise::gelu_erf_par(&mut y);
                }
                Some(y)
            }
        }
    }
}

/// Runs `f` on the f32 values of an `[out, in]` CPU weight (widened if needed), `out`, `in`
/// and the bias's values.
fn with_weight<R>(
    weight: &Tensor,
    bias: Option<&Tensor>,
    f: impl FnOnce(&[f32], usize, usize, Option<&[f32]>) -> Option<R>,
) -> Option<R> {
    let (o, i) = weight.dims2().ok()?;
    let wc = weight.to_dtype(DType::F32).ok()?.contiguous().ok()?;
    let b = match bias {
        Some(b) => Some(kernels::with_f32(
            &b.to_dtype(DType::F32).ok()?.contiguous().ok()?,
            <[f32]>::to_vec,
        )?),
        None => None,
    };
    kernels::with_f32(&wc, |w| f(w, o, i, b.as_deref())).flatten()
}

/// Rounds an `[out, in]` weight to bf16 and packs it for AMX (bias kept f32), if it is a CPU
/// tensor.
fn amx_linear(weight: &Tensor, bias: Option<&Tensor>) -> Option<AmxLinear> {
    with_weight(weight, bias, AmxLinear::pack)
}

/// Quantizes an `[out, in]` weight (and bias) to int8, if it is a CPU tensor.
fn quantize_linear(weight: &Tensor, bias: Option<&Tensor>) -> Option<QuantLinear> {
    with_weight(weight, bias, QuantLinear::quantize)
}

/// Packs one or more `[out, in]` weights (stacked along `out`) with their biases, if the fast
/// path applies: AVX-512, f32, CPU, matching `in`.
fn pack_linear(parts: &[(&Tensor, Option<&Tensor>)]) -> Option<PackedLinear> {
    if !kernels::avx512() {
        return None;
    }
    let mut weights = Vec::new();
    let mut biases = Vec::new();
    let mut in_dim = None;
    let mut out_total = 0usize;
    for (w, b) in parts {
        let (o, i) = w.dims2().ok()?;
        if *in_dim.get_or_insert(i) != i {
            return None;
        }
        let wc = w.contiguous().ok()?;
        kernels::with_f32(&wc, |d| weights.extend_from_slice(d))?;
        match b {
            Some(b) => {
                let bc = b.contiguous().ok()?;
                if bc.dims() != [o] {
                    return None;
                }
                kernels::with_f32(&bc, |d| biases.extend_from_slice(d))?;
            }
            None => biases.extend(std::iter::repeat_n(0f32, o)),
        }
        out_total += o;
    }
    PackedLinear::pack(&weights, out_total, in_dim?, Some(&biases))
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

    /// `LayerNorm(x + residual)`, fused on the fast path.
    pub fn forward_residual(&self, x: &Tensor, residual: &Tensor) -> Result<Tensor> {
        if x.dims() == residual.dims() {
            if let Some(out) = self.forward_fast(x, Some(residual))? {
                return Ok(out);
            }
        }
        self.forward(&(x + residual)?)
    }

    /// The weight, bias and eps as f32 (f32 CPU weights only), for the fused kernels.
    pub fn params(&self) -> Option<(Vec<f32>, Vec<f32>, f32)> {
        let w = kernels::with_f32(&self.weight, <[f32]>::to_vec)?;
        let b = kernels::with_f32(&self.bias, <[f32]>::to_vec)?;
        Some((w, b, self.eps as f32))
    }

    /// The fused kernel on f32 CPU tensors whose last dimension is the normalised one; `None`
    /// when it does not apply.
    fn forward_fast(&self, x: &Tensor, residual: Option<&Tensor>) -> Result<Option<Tensor>> {
        let d = self.weight.elem_count();
        if !kernels::avx512() || x.dims().last() != Some(&d) {
            return Ok(None);
        }
        let xc = kernels::contiguous(x)?;
        let rc = residual.map(kernels::contiguous).transpose()?;
        let Some((w, b, eps)) = self.params() else {
            return Ok(None);
        };
        let out = kernels::with_f32(&xc, |xd| match &rc {
            Some(rc) => kernels::with_f32(rc, |rd| {
                kernels::elementwise::add_layer_norm(xd, Some(rd), &w, &b, eps)
            })
            .flatten(),
            None => kernels::elementwise::add_layer_norm(xd, None, &w, &b, eps),
        })
        .flatten();
        Ok(match out {
            Some(out) => Some(Tensor::from_vec(out, x.dims(), x.device())?),
            None => None,
        })
    }

    /// Normalises the last dimension of `x` (two-pass mean and variance, in f32).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if let Some(out) = self.forward_fast(x, None)? {
            return Ok(out);
        }
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
///
/// A float32 table in a safetensors checkpoint stays in the file ([`LazyTable`]): a lookup
/// reads only the rows it needs, so start-up does no work proportional to the vocabulary and
/// unused rows take no memory. [`Self::weight`] reads the whole table the first time it is
/// asked for (a tied decoder).
#[derive(Clone, Debug)]
pub struct Embedding {
    weight: OnceLock<Tensor>,
    lazy: Option<LazyTable>,
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
        if let Some(lazy) = vb.get_lazy_table(count, dim, "weight") {
            return Ok(Embedding {
                weight: OnceLock::new(),
                lazy: Some(lazy),
                name,
            });
        }
        Ok(Embedding {
            weight: OnceLock::from(vb.get(&[count, dim], "weight", Init::Normal(init_std))?),
            lazy: None,
            name,
        })
    }

    /// The table `[count, dim]` (read from the checkpoint now if it was left there).
    pub fn weight(&self) -> Result<&Tensor> {
        if let (None, Some(lazy)) = (self.weight.get(), &self.lazy) {
            let _ = self.weight.set(lazy.load()?);
        }
        self.weight
            .get()
            .ok_or_else(|| Error::input(format!("{} has no weight", self.name)))
    }

    /// Looks up integer `ids` of any shape; out-of-range ids are an error, not a panic.
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        let (count, dim) = match &self.lazy {
            Some(lazy) => (lazy.rows(), lazy.cols()),
            None => self.weight()?.dims2()?,
        };
        let flat = ids.flatten_all()?.to_dtype(DType::I64)?;
        let values = flat.to_vec1::<i64>()?;
        if let Some(bad) = values.iter().find(|&&v| v < 0 || v as usize >= count) {
            return Err(Error::input(format!(
                "index {bad} is out of range for {} of size {count}",
                self.name
            )));
        }
        let out = match &self.lazy {
            Some(lazy) => lazy.gather(&values.iter().map(|&v| v as usize).collect::<Vec<_>>())?,
            None => self
                .weight()?
                .index_select(&flat.to_dtype(DType::U32)?, 0)?,
        };
        let mut dims = ids.dims().to_vec();
        dims.push(dim);
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
        if self == Activation::Gelu && kernels::avx512() {
            let xc = kernels::contiguous(x)?;
            if let Some(y) = kernels::with_f32(&xc, kernels::elementwise::gelu_erf).flatten() {
                return Ok(Tensor::from_vec(y, x.dims(), x.device())?);
            }
        }
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
///
/// On the fast path the three projections are fused into one packed GEMM and the attention
/// itself runs in [`crate::kernels::attention`]; asking for the probabilities takes candle's path.
#[derive(Clone, Debug)]
pub struct MultiHeadAttention {
    proj: QkvProjection,
    num_heads: usize,
}

#[derive(Clone, Debug)]
enum QkvProjection {
    Separate {
        query: Linear,
        key: Linear,
        value: Linear,
    },
    /// Q, K and V stacked along the output dimension (each `dim` wide).
    Fused { qkv: Linear, dim: usize },
}

impl MultiHeadAttention {
    /// Wraps the three projections; `num_heads` must divide the hidden size.
    pub fn new(query: Linear, key: Linear, value: Linear, num_heads: usize) -> Self {
        let dim = query.out_features();
        let proj = match Linear::fuse(&[&query, &key, &value]) {
            Some(qkv) if key.out_dim == dim && value.out_dim == dim => {
                QkvProjection::Fused { qkv, dim }
            }
            _ => QkvProjection::Separate { query, key, value },
        };
        MultiHeadAttention { proj, num_heads }
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
        let scale = 1.0 / (hd as f64).sqrt();
        let (q, k, v) = match &self.proj {
            QkvProjection::Separate { query, key, value } => {
                (query.forward(x)?, key.forward(x)?, value.forward(x)?)
            }
            QkvProjection::Fused { qkv, dim } => {
                let y = qkv.forward(x)?;
                if !want_probs && *dim == d && y.dtype() == DType::F32 {
                    if let Some(ctx) = fused_attention(&y, mask, b, l, d, self.num_heads, scale)? {
                        return Ok((ctx, None));
                    }
                }
                (
                    y.narrow(2, 0, *dim)?,
                    y.narrow(2, *dim, *dim)?,
                    y.narrow(2, 2 * *dim, *dim)?,
                )
            }
        };
        let q = self.split_heads(&q)?;
        let k = self.split_heads(&k)?;
        let v = self.split_heads(&v)?;
        let mut scores = (q.matmul(&k.t()?)? * scale)?;
        if let Some(m) = mask {
            if m.dtype() == DType::U32 {
                // Packed padding-free batch: a block-diagonal mask keeps each text to itself.
                let mut blocks = vec![f32::MIN; l * l];
                for s in varlen_seqs(m, l)? {
                    for i in s.start..s.start + s.len {
                        blocks[i * l + s.start..i * l + s.start + s.len].fill(0.0);
                    }
                }
                let m =
                    Tensor::from_vec(blocks, (1, 1, l, l), x.device())?.to_dtype(scores.dtype())?;
                scores = scores.broadcast_add(&m)?;
            } else {
                scores = scores.broadcast_add(m)?;
            }
        }
        let dtype = scores.dtype();
        let probs =
            candle_nn::ops::softmax_last_dim(&scores.to_dtype(DType::F32)?)?.to_dtype(dtype)?;
        let ctx = probs.matmul(&v)?;
        let ctx = ctx.transpose(1, 2)?.reshape((b, l, d))?;
        Ok((ctx, want_probs.then_some(probs)))
    }
}

/// The fused attention kernel on `qkv` `[B, L, 3D]`. `mask` is either transformers' additive
/// `[B, 1, 1, L]` mask or, for a packed padding-free batch (`B = 1`), a U32 tensor of cumulative
/// sequence lengths `[n + 1]` (see [`crate::models::ForwardOptions::padding_free`]). `None` for
/// other masks (the caller then takes candle's path).
fn fused_attention(
    qkv: &Tensor,
    mask: Option<&Tensor>,
    b: usize,
    l: usize,
    d: usize,
    heads: usize,
    scale: f64,
) -> Result<Option<Tensor>> {
    let mut seqs: Vec<Seq> = (0..b)
        .map(|i| Seq {
            start: i * l,
            len: l,
        })
        .collect();
    let mask = match mask {
        Some(m) if m.dims() == [b, 1, 1, l] && m.dtype() == DType::F32 => {
            Some(m.flatten_all()?.to_vec1::<f32>()?)
        }
        Some(m) if m.dtype() == DType::U32 && m.rank() == 1 && b == 1 => {
            seqs = varlen_seqs(m, l)?;
            None
        }
        Some(_) => return Ok(None),
        None => None,
    };
    let shape = AttentionShape { dim: d, heads };
    let qkv = kernels::contiguous(qkv)?;
    let ctx = kernels::with_f32(&qkv, |data| {
        kernels::attention::attention(data, shape, &seqs, mask.as_deref(), scale as f32)
    })
    .flatten();
    Ok(match ctx {
        Some(ctx) => Some(Tensor::from_vec(ctx, (b, l, d), qkv.device())?),
        None => None,
    })
}

/// The sequences of a packed batch from its cumulative lengths (`[0, l1, l1+l2, ..., total]`).
pub(crate) fn varlen_seqs(cu: &Tensor, total: usize) -> Result<Vec<Seq>> {
    let cu = cu.to_vec1::<u32>()?;
    let mut seqs = Vec::new();
    for w in cu.windows(2) {
        let (a, b) = (w[0] as usize, w[1] as usize);
        if b < a || b > total {
            return Err(Error::input("bad cumulative sequence lengths"));
        }
        seqs.push(Seq {
            start: a,
            len: b - a,
        });
    }
    Ok(seqs)
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
    /// Per group, its weight as an `[out/groups, k·in/groups]` packed GEMM operand,
    /// kernel-major (row `o` holds `W[o, :, 0], W[o, :, 1], ...`), for channels-last input
    /// (fast path; empty when it does not apply).
    packed: Vec<Arc<PackedLinear>>,
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
        Self::from_tensors(weight, bias, spec)
    }

    /// A convolution from existing tensors (e.g. a weight-normalised kernel computed at load).
    pub fn from_tensors(weight: Tensor, bias: Option<Tensor>, spec: Conv1dSpec) -> Result<Self> {
        spec.check()?;
        let og = spec.out_channels / spec.groups;
        let mut packed = Vec::with_capacity(spec.groups);
        // Narrow groups (depthwise) would waste most of each 32-column panel: candle's then.
        let groups = if spec.groups == 1 || og >= 32 {
            spec.groups
        } else {
            0
        };
        for g in 0..groups {
            let w = weight.narrow(0, g * og, og)?;
            let flat = w.transpose(1, 2)?.contiguous()?.flatten_from(1)?;
            let b = bias.as_ref().map(|b| b.narrow(0, g * og, og)).transpose()?;
            match pack_linear(&[(&flat, b.as_ref())]) {
                Some(p) => packed.push(Arc::new(p)),
                None => {
                    packed.clear();
                    break;
                }
            }
        }
        Ok(Conv1d {
            weight,
            bias,
            stride: spec.stride,
            padding: spec.padding,
            groups: spec.groups,
            packed,
        })
    }

    /// The packed GEMM on `[B, C, L]` f32 CPU input, transposed to channels-last first; returns
    /// `[B, O, T]` (a transposed view of `[B, T, O]`). `None` when the fast path does not apply.
    fn forward_packed(&self, x: &Tensor) -> Result<Option<Tensor>> {
        if self.packed.is_empty() || x.dtype() != DType::F32 || !x.device().is_cpu() {
            return Ok(None);
        }
        let (b, c, l) = x.dims3()?;
        let xt = kernels::contiguous(&x.transpose(1, 2)?)?;
        let out = kernels::with_f32(&xt, |xd| -> Option<(Vec<f32>, usize)> {
            let mut out = Vec::new();
            let mut t_out = 0;
            for bi in 0..b {
                let (y, t) =
                    self.forward_channels_last(xd.get(bi * l * c..(bi + 1) * l * c)?, c)?;
                out.extend_from_slice(&y);
                t_out = t;
            }
            Some((out, t_out))
        })
        .flatten();
        Ok(match out {
            Some((out, t)) => Some(
                Tensor::from_vec(out, (b, t, self.out_channels()), x.device())?.transpose(1, 2)?,
            ),
            None => None,
        })
    }

    /// Output channels.
    pub fn out_channels(&self) -> usize {
        self.weight.dims().first().copied().unwrap_or(0)
    }

    /// The convolution of one channels-last item `x` `[L, c]` (f32), through the packed GEMM
    /// with no im2col: output position `t` is the row `x[t·stride·c ..][..k·c]` (zero-padded
    /// ends copied once when `padding > 0`). Returns `[T, out]` and `T`; `None` when the fast
    /// path does not apply or the input is shorter than the kernel.
    pub fn forward_channels_last(&self, x: &[f32], c: usize) -> Option<(Vec<f32>, usize)> {
        let k = self.weight.dims().last().copied().unwrap_or(1);
        let groups = self.packed.len();
        if c == 0 || x.len() % c != 0 || groups != self.groups || c % groups != 0 {
            return None;
        }
        let cg = c / groups;
        let l = x.len() / c;
        let t_out = self.output_len(l)?;
        let pad = self.padding;
        if groups == 1 {
            let packed = self.packed.first()?;
            if packed.in_features() != c * k {
                return None;
            }
            let padded;
            let xs = if pad > 0 {
                let mut v = vec![0f32; (l + 2 * pad) * c];
                v.get_mut(pad * c..(pad + l) * c)?.copy_from_slice(x);
                padded = v;
                &padded[..]
            } else {
                x
            };
            let y = packed.forward_strided(xs, self.stride * c, t_out, Epilogue::None)?;
            return Some((y, t_out));
        }
        // Grouped: each group's channels copied out (zero-padded) and convolved on their own.
        let o = self.out_channels();
        let og = o / groups;
        let mut y = vec![0f32; t_out * o];
        let mut xg = vec![0f32; (l + 2 * pad) * cg];
        for (g, packed) in self.packed.iter().enumerate() {
            if packed.in_features() != cg * k || packed.out_features() != og {
                return None;
            }
            for (dst, src) in xg[pad * cg..(pad + l) * cg]
                .chunks_exact_mut(cg)
                .zip(x.chunks_exact(c))
            {
                dst.copy_from_slice(src.get(g * cg..(g + 1) * cg)?);
            }
            let yg = packed.forward_strided(&xg, self.stride * cg, t_out, Epilogue::None)?;
            for (dst, src) in y.chunks_exact_mut(o).zip(yg.chunks_exact(og)) {
                dst.get_mut(g * og..(g + 1) * og)?.copy_from_slice(src);
            }
        }
        Some((y, t_out))
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
        if let Some(y) = self.forward_packed(x)? {
            return Ok(y);
        }
        let x = &x.contiguous()?;
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
    /// For one group per channel on f32 CPU weights: the weight, bias and eps, for
    /// [`crate::kernels::elementwise::channel_norm`] on channels-last data.
    pub fn per_channel_params(&self) -> Option<(Vec<f32>, Vec<f32>, f32)> {
        if self.num_groups != self.weight.elem_count() {
            return None;
        }
        let w = kernels::with_f32(&self.weight, <[f32]>::to_vec)?;
        let b = kernels::with_f32(&self.bias, <[f32]>::to_vec)?;
        Some((w, b, self.eps as f32))
    }

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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// The channels-last GEMM path of `Conv1d` (plain and grouped, strided, padded) against
    /// candle's own convolution.
    #[test]
    fn conv1d_fast_path_matches_candle() {
        if !kernels::avx512() {
            return;
        }
        for (c, o, k, stride, padding, groups) in [
            (3, 40, 5, 2, 0, 1),
            (64, 64, 8, 1, 4, 2),
            (96, 96, 3, 3, 1, 3),
        ] {
            let n = o * (c / groups) * k;
            let w: Vec<f32> = (0..n)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 500.0)
                .collect();
            let weight = Tensor::from_vec(w, (o, c / groups, k), &Device::Cpu).unwrap();
            let bias = Tensor::from_vec(
                (0..o).map(|i| i as f32 / 100.0).collect::<Vec<_>>(),
                o,
                &Device::Cpu,
            )
            .unwrap();
            let spec = Conv1dSpec {
                in_channels: c,
                out_channels: o,
                kernel: k,
                stride,
                padding,
                groups,
                bias: true,
            };
            let conv = Conv1d::from_tensors(weight.clone(), Some(bias.clone()), spec).unwrap();
            assert_eq!(conv.packed.len(), groups);
            let l = 57;
            let x: Vec<f32> = (0..2 * c * l)
                .map(|i| ((i * 13 % 71) as f32 - 35.0) / 30.0)
                .collect();
            let x = Tensor::from_vec(x, (2, c, l), &Device::Cpu).unwrap();
            let got = conv.forward(&x).unwrap();
            let want = x
                .conv1d(&weight, padding, stride, 1, groups)
                .unwrap()
                .broadcast_add(&bias.reshape((1, o, 1)).unwrap())
                .unwrap();
            assert_eq!(got.dims(), want.dims());
            let diff = (got - want)
                .unwrap()
                .abs()
                .unwrap()
                .flatten_all()
                .unwrap()
                .max(0)
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(diff < 1e-5, "c={c} o={o} k={k} groups={groups}: {diff}");
        }
    }
}
