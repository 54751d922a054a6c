//! Models: the named inputs and outputs every model shares, and one file per architecture.

pub mod bert;
pub mod convnext;
pub mod distilbert;
pub mod hubert;
pub mod layoutlmv2;
pub mod layoutlmv3;
pub mod swin;
pub mod vit;
pub mod wav2vec2;

use candle_core::{DType, Tensor};

use crate::error::{Error, Result};

/// A named batch of tensors (transformers' `BatchEncoding` / `BatchFeature`): `input_ids`,
/// `attention_mask`, `token_type_ids`, `pixel_values`, ... in insertion order.
#[derive(Clone, Debug, Default)]
pub struct Batch {
    entries: Vec<(String, Tensor)>,
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces `name`.
    pub fn insert(&mut self, name: impl Into<String>, tensor: Tensor) {
        let name = name.into();
        match self.entries.iter_mut().find(|(n, _)| *n == name) {
            Some(entry) => entry.1 = tensor,
            None => self.entries.push((name, tensor)),
        }
    }

    /// The tensor called `name`, if present.
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.entries.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }

    /// The tensor called `name`, or an error naming it.
    pub fn require(&self, name: &str) -> Result<&Tensor> {
        self.get(name)
            .ok_or_else(|| Error::input(format!("the model needs `{name}` in its inputs")))
    }

    /// Every (name, tensor) pair in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Tensor)> {
        self.entries.iter().map(|(n, t)| (n.as_str(), t))
    }
}

/// Options of a forward pass (`output_hidden_states`, `output_attentions`).
#[derive(Clone, Copy, Debug, Default)]
pub struct ForwardOptions {
    /// Return the input of the first layer and the output of every layer.
    pub output_hidden_states: bool,
    /// Return every layer's attention probabilities.
    pub output_attentions: bool,
    /// Padding-free batching (BERT and DistilBERT): run only the real tokens of a padded batch,
    /// packed into one sequence with attention kept inside each text, so padding costs nothing.
    /// Outputs at real positions are those of the padded run (to float rounding); positions
    /// the attention mask hides come back as zeros instead of transformers' values there.
    /// Ignored when `output_attentions` is set.
    pub padding_free: bool,
}

/// Named model outputs (`logits`, `last_hidden_state`, `pooler_output`, `start_logits`, ...),
/// plus the optional `hidden_states` and `attentions`.
#[derive(Clone, Debug, Default)]
pub struct ModelOutput {
    entries: Vec<(String, Tensor)>,
    /// `hidden_states`: embeddings output, then each layer's output.
    pub hidden_states: Option<Vec<Tensor>>,
    /// `attentions`: each layer's attention probabilities `[B, heads, L, L]`.
    pub attentions: Option<Vec<Tensor>>,
    /// `feature_maps` of a backbone: one `[B, C, H, W]` map per selected stage, in stage order.
    pub feature_maps: Option<Vec<Tensor>>,
}

impl ModelOutput {
    /// Adds an output.
    pub fn insert(&mut self, name: impl Into<String>, tensor: Tensor) {
        self.entries.push((name.into(), tensor));
    }

    /// The output called `name`.
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.entries.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }

    /// The output called `name`, or an error.
    pub fn require(&self, name: &str) -> Result<&Tensor> {
        self.get(name)
            .ok_or_else(|| Error::input(format!("the model returned no `{name}`")))
    }

    /// The main outputs in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Tensor)> {
        self.entries.iter().map(|(n, t)| (n.as_str(), t))
    }

    /// The same outputs with every float tensor cast to `dtype` (integer outputs kept).
    pub fn to_float_dtype(self, dtype: DType) -> Result<Self> {
        let cast = |t: Tensor| -> Result<Tensor> {
            Ok(if t.dtype().is_float() {
                t.to_dtype(dtype)?
            } else {
                t
            })
        };
        let cast_all = |list: Option<Vec<Tensor>>| -> Result<Option<Vec<Tensor>>> {
            list.map(|l| l.into_iter().map(cast).collect()).transpose()
        };
        Ok(ModelOutput {
            entries: self
                .entries
                .into_iter()
                .map(|(n, t)| Ok((n, cast(t)?)))
                .collect::<Result<_>>()?,
            hidden_states: cast_all(self.hidden_states)?,
            attentions: cast_all(self.attentions)?,
            feature_maps: cast_all(self.feature_maps)?,
        })
    }

    /// Every output flattened under transformers' names: the main outputs, then
    /// `feature_maps.{i}`, `hidden_states.{i}` and `attentions.{i}`.
    pub fn named_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out: Vec<(String, Tensor)> = self.entries.clone();
        for (group, list) in [
            ("feature_maps", &self.feature_maps),
            ("hidden_states", &self.hidden_states),
            ("attentions", &self.attentions),
        ] {
            if let Some(list) = list {
                for (i, t) in list.iter().enumerate() {
                    out.push((format!("{group}.{i}"), t.clone()));
                }
            }
        }
        out
    }
}

/// A loaded model for one task. Implemented by every (architecture, task) pair.
pub trait TaskModel: Send + Sync {
    /// transformers' class name (`BertForSequenceClassification`).
    fn class_name(&self) -> &'static str;
    /// `model(**batch)`.
    fn forward(&self, batch: &Batch, options: &ForwardOptions) -> Result<ModelOutput>;
}

/// Splits QA logits `[B, L, 2]` into `start_logits` and `end_logits` `[B, L]`.
pub(crate) fn split_qa_logits(logits: &Tensor, out: &mut ModelOutput) -> Result<()> {
    let start = logits.narrow(2, 0, 1)?.squeeze(2)?.contiguous()?;
    let end = logits.narrow(2, 1, 1)?.squeeze(2)?.contiguous()?;
    out.insert("start_logits", start);
    out.insert("end_logits", end);
    Ok(())
}

/// Checks `input_ids` `[B, L]` against the model's position table and returns (B, L).
pub(crate) fn check_input_ids(input_ids: &Tensor, max_positions: usize) -> Result<(usize, usize)> {
    let (b, l) = input_ids.dims2().map_err(|_| {
        Error::input(format!(
            "input_ids must be [batch, length], got {:?}",
            input_ids.dims()
        ))
    })?;
    if l == 0 || b == 0 {
        return Err(Error::input("input_ids is empty"));
    }
    if l > max_positions {
        return Err(Error::SequenceTooLong {
            length: l,
            max: max_positions,
        });
    }
    Ok((b, l))
}

/// The additive mask for `batch`'s `attention_mask` (if any), checked against `input_ids`.
pub(crate) fn encoder_mask(
    batch: &Batch,
    input_ids: &Tensor,
    dtype: candle_core::DType,
) -> Result<Option<Tensor>> {
    match batch.get("attention_mask") {
        Some(m) => {
            if m.dims() != input_ids.dims() {
                return Err(Error::input(format!(
                    "attention_mask has shape {:?} but input_ids has {:?}",
                    m.dims(),
                    input_ids.dims()
                )));
            }
            Ok(Some(crate::nn::additive_mask(m, dtype)?))
        }
        None => Ok(None),
    }
}

/// A text encoder's stack: padding-free ([`run_encoder_padding_free`]) when `options` ask for
/// it and the batch's `attention_mask` hides some positions, else [`run_encoder_first`] with the
/// additive `mask`. `first` as in [`run_encoder_first`].
pub(crate) fn run_text_encoder<L>(
    layers: &[L],
    h: Tensor,
    mask: Option<&Tensor>,
    batch: &Batch,
    options: &ForwardOptions,
    forward: impl Fn(&L, &Tensor, Option<&Tensor>, bool) -> Result<(Tensor, Option<Tensor>)>,
    first: Option<RowsForward<'_, L>>,
) -> Result<EncoderOutput> {
    if let (true, Some(am)) = (options.padding_free, batch.get("attention_mask")) {
        if let Some(enc) = run_encoder_padding_free(layers, &h, am, options, &forward, first)? {
            return Ok(enc);
        }
    }
    run_encoder_first(layers, h, mask, options, forward, first)
}

/// [`run_encoder`] on only the positions `attention_mask` keeps: they are packed into one
/// sequence `[1, T, D]`, attention stays inside each text (the mask handed to the layers is the
/// U32 cumulative lengths `[B + 1]` that [`crate::nn::MultiHeadAttention`] understands), and the
/// outputs are scattered back to `[B, L, D]` with zeros at hidden positions. Returns `None` when
/// nothing would be saved (no padding) or the mask is not `[B, L]`.
///
/// With `first`, the stack runs as [`run_encoder_first`] does and `last_hidden_state` is each
/// text's first position, `[B, 1, D]` (unless hidden states are asked for, or a text is empty).
fn run_encoder_padding_free<L>(
    layers: &[L],
    h: &Tensor,
    attention_mask: &Tensor,
    options: &ForwardOptions,
    forward: impl Fn(&L, &Tensor, Option<&Tensor>, bool) -> Result<(Tensor, Option<Tensor>)>,
    first: Option<RowsForward<'_, L>>,
) -> Result<Option<EncoderOutput>> {
    let (b, l, d) = h.dims3()?;
    if options.output_attentions || attention_mask.dims() != [b, l] {
        return Ok(None);
    }
    let keep = attention_mask
        .to_dtype(candle_core::DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let mut idx: Vec<u32> = Vec::with_capacity(b * l);
    let mut cu: Vec<u32> = Vec::with_capacity(b + 1);
    cu.push(0);
    for (i, &k) in keep.iter().enumerate() {
        if k != 0.0 {
            idx.push(u32::try_from(i).map_err(|_| Error::input("batch too large"))?);
        }
        if (i + 1) % l == 0 {
            cu.push(u32::try_from(idx.len()).map_err(|_| Error::input("batch too large"))?);
        }
    }
    let t = idx.len();
    if t == b * l || t == 0 {
        return Ok(None);
    }
    let device = h.device();
    // Each text's first row in the packed sequence (only when no text is empty).
    let starts: Option<Vec<u32>> = cu
        .windows(2)
        .map(|w| (w[1] > w[0]).then_some(w[0]))
        .collect();
    let idx = Tensor::from_vec(idx, t, device)?;
    let cu = Tensor::from_vec(cu, b + 1, device)?;
    let packed = h.reshape((b * l, d))?.index_select(&idx, 0)?.unsqueeze(0)?;
    let last = match (first, starts) {
        (Some(f), Some(s)) if keeps_rows(layers, options) => {
            Some((f, Tensor::from_vec(s, b, device)?))
        }
        _ => None,
    };
    let kept_rows = last.is_some();
    let enc = run_encoder_rows(layers, packed, Some(&cu), options, forward, last)?;
    if kept_rows {
        return Ok(Some(EncoderOutput {
            last_hidden_state: enc.last_hidden_state.reshape((b, 1, d))?,
            ..enc
        }));
    }
    let unpack = |x: &Tensor| -> Result<Tensor> {
        let zeros = Tensor::zeros((b * l, d), x.dtype(), device)?;
        Ok(zeros
            .index_add(&idx, &x.reshape((t, d))?, 0)?
            .reshape((b, l, d))?)
    };
    Ok(Some(EncoderOutput {
        last_hidden_state: unpack(&enc.last_hidden_state)?,
        hidden_states: match enc.hidden_states {
            Some(list) => Some(list.iter().map(unpack).collect::<Result<Vec<_>>>()?),
            None => None,
        },
        attentions: None,
    }))
}

/// What an encoder stack returns: the last hidden state and, if asked, every layer's input and
/// output and attention probabilities.
pub(crate) struct EncoderOutput {
    pub last_hidden_state: Tensor,
    pub hidden_states: Option<Vec<Tensor>>,
    pub attentions: Option<Vec<Tensor>>,
}

/// A layer's forward pass that keeps only some rows of its output: `(layer, h, mask, rows)`
/// computes attention over every position of `h` `[B, L, D]` but the sublayers after it only
/// on the positions `rows` (U32) selects along dim 1, returning `[B, rows, D]`.
pub(crate) type RowsForward<'a, L> =
    &'a dyn Fn(&L, &Tensor, Option<&Tensor>, &Tensor) -> Result<Tensor>;

/// [`run_encoder`] for heads that read only the first position (sequence classification on
/// `[CLS]`, ViT's image classification): with `last`, the last layer runs through it on
/// position 0, so `last_hidden_state` is `[B, 1, D]`, with the values the full stack gives
/// there, and its output projection and feed-forward cost `B` rows instead of `B·L`. The full
/// stack runs without `last`, or when hidden states or attentions are asked for (they need
/// every position).
pub(crate) fn run_encoder_first<L>(
    layers: &[L],
    h: Tensor,
    mask: Option<&Tensor>,
    options: &ForwardOptions,
    forward: impl Fn(&L, &Tensor, Option<&Tensor>, bool) -> Result<(Tensor, Option<Tensor>)>,
    last: Option<RowsForward<'_, L>>,
) -> Result<EncoderOutput> {
    let last = match last {
        Some(f) if keeps_rows(layers, options) => {
            Some((f, Tensor::zeros(1, candle_core::DType::U32, h.device())?))
        }
        _ => None,
    };
    run_encoder_rows(layers, h, mask, options, forward, last)
}

/// Whether the last layer may keep only some rows: there is one, and neither hidden states
/// nor attentions (which need every position) are asked for.
fn keeps_rows<L>(layers: &[L], options: &ForwardOptions) -> bool {
    !layers.is_empty() && !options.output_hidden_states && !options.output_attentions
}

/// [`run_encoder`], with `last` = `(forward, rows)`: the last layer through `forward`,
/// keeping the positions `rows` (callers check [`keeps_rows`] first).
fn run_encoder_rows<L>(
    layers: &[L],
    h: Tensor,
    mask: Option<&Tensor>,
    options: &ForwardOptions,
    forward: impl Fn(&L, &Tensor, Option<&Tensor>, bool) -> Result<(Tensor, Option<Tensor>)>,
    last: Option<(RowsForward<'_, L>, Tensor)>,
) -> Result<EncoderOutput> {
    match (last, layers.split_last()) {
        (Some((last, rows)), Some((tail, body))) => {
            let enc = run_encoder(body, h, mask, options, forward)?;
            Ok(EncoderOutput {
                last_hidden_state: last(tail, &enc.last_hidden_state, mask, &rows)?,
                ..enc
            })
        }
        _ => run_encoder(layers, h, mask, options, forward),
    }
}

/// Runs `layers` in order, collecting `hidden_states` and `attentions` as transformers does.
pub(crate) fn run_encoder<L>(
    layers: &[L],
    mut h: Tensor,
    mask: Option<&Tensor>,
    options: &ForwardOptions,
    forward: impl Fn(&L, &Tensor, Option<&Tensor>, bool) -> Result<(Tensor, Option<Tensor>)>,
) -> Result<EncoderOutput> {
    let mut hidden_states = options.output_hidden_states.then(Vec::new);
    let mut attentions = options.output_attentions.then(Vec::new);
    for layer in layers {
        if let Some(hs) = hidden_states.as_mut() {
            hs.push(h.clone());
        }
        let (next, probs) = forward(layer, &h, mask, options.output_attentions)?;
        h = next;
        if let (Some(list), Some(p)) = (attentions.as_mut(), probs) {
            list.push(p);
        }
    }
    if let Some(hs) = hidden_states.as_mut() {
        hs.push(h.clone());
    }
    Ok(EncoderOutput {
        last_hidden_state: h,
        hidden_states,
        attentions,
    })
}
