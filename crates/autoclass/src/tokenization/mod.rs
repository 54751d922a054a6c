//! AutoTokenizer over Hugging Face's `tokenizers` crate.
//!
//! Follows transformers 5 (`tokenization_utils_base.py`, `tokenization_utils_tokenizers.py`,
//! `models/bert/tokenization_bert.py`): the class comes from `tokenizer_config.json`
//! (`tokenizer_class`), else config.json, else the registry's mapping for `model_type`. BERT-family
//! classes rebuild their pipeline from the vocabulary and `do_lower_case` & co. (they ignore
//! tokenizer.json's normalizer, as transformers does), and can be built from `vocab.txt` alone.

pub mod ctc;
pub mod layout;
mod wordpiece;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use candle_core::{Device, Tensor};
use serde_json::{Map, Value};
use tokenizers::utils::padding::{pad_encodings, PaddingDirection, PaddingParams, PaddingStrategy};
use tokenizers::utils::truncation::{
    truncate_encodings, TruncationDirection, TruncationParams, TruncationStrategy,
};
use tokenizers::PostProcessor;

use crate::config::read_json_object;
use crate::error::{Error, Result};
use crate::hub::{Checkpoint, HubOptions};
use crate::models::Batch;

/// transformers' `VERY_LARGE_INTEGER` threshold: a `model_max_length` above it means "no limit".
const LARGE_LIMIT: f64 = 1e20;

/// How to pad a batch (`padding=`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Padding {
    /// `padding=False`.
    #[default]
    None,
    /// `padding=True` / `"longest"`: to the longest sequence in the batch.
    Longest,
    /// `padding="max_length"`: to `max_length` (or `model_max_length`).
    MaxLength,
}

/// How to truncate (`truncation=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Truncation {
    /// `truncation=False`.
    DoNotTruncate,
    /// `truncation=True` / `"longest_first"`.
    LongestFirst,
    /// `"only_first"`.
    OnlyFirst,
    /// `"only_second"`.
    OnlySecond,
}

impl std::str::FromStr for Truncation {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "true" | "True" | "longest_first" => Ok(Truncation::LongestFirst),
            "only_first" => Ok(Truncation::OnlyFirst),
            "only_second" => Ok(Truncation::OnlySecond),
            "false" | "False" | "do_not_truncate" => Ok(Truncation::DoNotTruncate),
            other => Err(Error::input(format!(
                "unknown truncation strategy `{other}`; use longest_first, only_first, only_second or do_not_truncate"
            ))),
        }
    }
}

impl std::str::FromStr for Padding {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "true" | "True" | "longest" => Ok(Padding::Longest),
            "max_length" => Ok(Padding::MaxLength),
            "false" | "False" | "do_not_pad" => Ok(Padding::None),
            other => Err(Error::input(format!(
                "unknown padding strategy `{other}`; use longest, max_length or do_not_pad"
            ))),
        }
    }
}

/// The keyword arguments of `tokenizer(...)`.
#[derive(Clone, Debug)]
pub struct EncodeOptions {
    /// `padding=`.
    pub padding: Padding,
    /// `truncation=`; `None` means unspecified (transformers then truncates only if `max_length` is given).
    pub truncation: Option<Truncation>,
    /// `max_length=`.
    pub max_length: Option<usize>,
    /// `pad_to_multiple_of=`.
    pub pad_to_multiple_of: Option<usize>,
    /// `add_special_tokens=` (default true).
    pub add_special_tokens: bool,
    /// `return_offsets_mapping=`.
    pub return_offsets_mapping: bool,
}

impl Default for EncodeOptions {
    fn default() -> Self {
        EncodeOptions {
            padding: Padding::None,
            truncation: None,
            max_length: None,
            pad_to_multiple_of: None,
            add_special_tokens: true,
            return_offsets_mapping: false,
        }
    }
}

/// The result of tokenizing (transformers' `BatchEncoding`): one row per input text.
#[derive(Clone, Debug, PartialEq)]
pub struct Encoding {
    /// `input_ids`.
    pub input_ids: Vec<Vec<i64>>,
    /// `token_type_ids`, when the tokenizer's `model_input_names` has them.
    pub token_type_ids: Option<Vec<Vec<i64>>>,
    /// `attention_mask`, when the tokenizer's `model_input_names` has it.
    pub attention_mask: Option<Vec<Vec<i64>>>,
    /// `offset_mapping` (character offsets), when asked for.
    pub offset_mapping: Option<Vec<Vec<(usize, usize)>>>,
    /// Which input sequence each token comes from (0, 1, or `None` for special tokens).
    pub sequence_ids: Vec<Vec<Option<usize>>>,
    /// Whether a single text was given (then JSON output is flat, like Python's).
    pub single: bool,
}

impl Encoding {
    /// The fields as (name, rows) in transformers' order.
    fn fields(&self) -> Vec<(&'static str, &Vec<Vec<i64>>)> {
        let mut out = vec![("input_ids", &self.input_ids)];
        if let Some(t) = &self.token_type_ids {
            out.push(("token_type_ids", t));
        }
        if let Some(m) = &self.attention_mask {
            out.push(("attention_mask", m));
        }
        out
    }

    /// The encoding as transformers prints it: flat lists for a single text, nested otherwise.
    pub fn to_json(&self) -> Value {
        let mut map = Map::new();
        for (name, rows) in self.fields() {
            map.insert(
                name.to_string(),
                rows_json(rows, self.single, |v| Value::from(*v)),
            );
        }
        if let Some(offsets) = &self.offset_mapping {
            map.insert(
                "offset_mapping".into(),
                rows_json(offsets, self.single, |(a, b)| Value::from(vec![*a, *b])),
            );
        }
        Value::Object(map)
    }

    /// The encoding as int64 tensors `[B, L]` (`return_tensors="pt"`); ragged rows are an error.
    pub fn to_batch(&self, device: &Device) -> Result<Batch> {
        let mut batch = Batch::new();
        for (name, rows) in self.fields() {
            let b = rows.len();
            let l = rows.first().map_or(0, Vec::len);
            if rows.iter().any(|r| r.len() != l) {
                return Err(Error::input(
                    "Unable to create tensor, you should probably activate truncation and/or padding with 'padding=True' 'truncation=True' to have batched tensors with the same length.",
                ));
            }
            let flat: Vec<i64> = rows.iter().flatten().copied().collect();
            batch.insert(name, Tensor::from_vec(flat, (b, l), device)?);
        }
        Ok(batch)
    }
}

fn rows_json<T>(rows: &[Vec<T>], single: bool, f: impl Fn(&T) -> Value + Copy) -> Value {
    let row = |r: &Vec<T>| Value::Array(r.iter().map(f).collect());
    match (single, rows.first()) {
        (true, Some(first)) => row(first),
        _ => Value::Array(rows.iter().map(row).collect()),
    }
}

/// Text direction for padding and truncation (`padding_side`, `truncation_side`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// `"left"`.
    Left,
    /// `"right"` (the default).
    Right,
}

/// A loaded tokenizer: the `tokenizers` pipeline plus transformers' settings around it.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    /// The same pipeline without its post-processor: one sequence, no special tokens, no
    /// sequence ids of its own, so the post-processor can number a pair correctly.
    plain: tokenizers::Tokenizer,
    class_name: String,
    model_max_length: Option<usize>,
    padding_side: Side,
    truncation_side: Side,
    model_input_names: Vec<String>,
    pad_token: Option<String>,
    mask_token: Option<String>,
    special_ids: std::collections::HashSet<u32>,
    source: Option<PathBuf>,
    warned_too_long: AtomicBool,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("class_name", &self.class_name)
            .field("model_max_length", &self.model_max_length)
            .field("model_input_names", &self.model_input_names)
            .finish()
    }
}

/// `AutoTokenizer`: picks and builds the right tokenizer for a checkpoint.
pub struct AutoTokenizer;

impl AutoTokenizer {
    /// `AutoTokenizer.from_pretrained(name_or_path)`.
    pub fn from_pretrained(name_or_path: &str) -> Result<Tokenizer> {
        Self::from_pretrained_with(name_or_path, &HubOptions::default())
    }

    /// `AutoTokenizer.from_pretrained(name_or_path, revision=..., subfolder=...)`.
    pub fn from_pretrained_with(name_or_path: &str, hub: &HubOptions) -> Result<Tokenizer> {
        let checkpoint = Checkpoint::resolve(name_or_path, hub)?;
        Tokenizer::from_checkpoint(&checkpoint)
    }
}

/// A special token value in tokenizer_config.json: a string or an AddedToken dict.
fn token_content(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Object(m) => m.get("content").and_then(Value::as_str).map(str::to_string),
        _ => None,
    }
}

/// The tokenizer classes built from a WordPiece vocabulary, with their `model_input_names`.
const WORDPIECE_CLASSES: &[(&str, &[&str])] = &[
    (
        "BertTokenizer",
        &["input_ids", "token_type_ids", "attention_mask"],
    ),
    ("DistilBertTokenizer", &["input_ids", "attention_mask"]),
    (
        "LayoutLMv2Tokenizer",
        &["input_ids", "attention_mask", "token_type_ids"],
    ),
];

impl Tokenizer {
    /// Builds the tokenizer of a resolved checkpoint.
    pub fn from_checkpoint(checkpoint: &Checkpoint) -> Result<Self> {
        let config_path = checkpoint.get("tokenizer_config.json")?;
        let mut init = match &config_path {
            Some(p) => read_json_object(p)?,
            None => Map::new(),
        };
        // Legacy special_tokens_map.json overrides tokenizer_config.json when there is no
        // added_tokens_decoder (transformers' `_from_pretrained`).
        if !init.contains_key("added_tokens_decoder") {
            if let Some(p) = checkpoint.get("special_tokens_map.json")? {
                for (k, v) in read_json_object(&p)? {
                    init.insert(k, v);
                }
            }
        }
        let class_name = match init.get("tokenizer_class").and_then(Value::as_str) {
            Some(c) => Some(c.trim_end_matches("Fast").to_string()),
            None => class_from_model_config(checkpoint)?,
        };
        let tokenizer_json = checkpoint.get("tokenizer.json")?;
        let wordpiece_class = class_name
            .as_deref()
            .and_then(|c| WORDPIECE_CLASSES.iter().find(|(n, _)| *n == c));
        let (inner, default_names, class_name) = match wordpiece_class {
            Some((name, names)) => {
                let vocab_txt = checkpoint.get("vocab.txt")?;
                let inner = wordpiece::build(
                    &init,
                    tokenizer_json.as_deref(),
                    vocab_txt.as_deref(),
                    checkpoint,
                )?;
                (inner, *names, name.to_string())
            }
            None if class_name.as_deref() == Some("Wav2Vec2CTCTokenizer") => {
                return Err(Error::Tokenizer {
                    path: config_path,
                    reason:
                        "Wav2Vec2CTCTokenizer only decodes CTC output: load it with AutoProcessor \
                             (Wav2Vec2Processor) or tokenization::ctc::Wav2Vec2CtcTokenizer"
                            .into(),
                });
            }
            None => {
                let path = tokenizer_json.ok_or_else(|| Error::MissingFile {
                    name: checkpoint.name().to_string(),
                    filename: "tokenizer.json".to_string(),
                    revision: checkpoint.revision().to_string(),
                })?;
                let text = crate::util::read_text(&path)?;
                // Guarded: tokenizers' `Decoder` deserializer panics (`expect("Helper")`) on
                // some malformed `decoder` values instead of returning an error (found by fuzzing).
                let inner = guarded(|| text.parse::<tokenizers::Tokenizer>()).map_err(|e| {
                    Error::Tokenizer {
                        path: Some(path.clone()),
                        reason: match e {
                            Error::Tokenizer { reason, .. } => reason,
                            other => other.to_string(),
                        },
                    }
                })?;
                let name = class_name.unwrap_or_else(|| "TokenizersBackend".to_string());
                (
                    inner,
                    &["input_ids", "token_type_ids", "attention_mask"][..],
                    name,
                )
            }
        };
        let model_max_length = max_length_setting(&init, None);
        let side = |key: &str| side_setting(&init, key, config_path.as_deref());
        let model_input_names = input_names_setting(&init, default_names);
        let pad_token = init
            .get("pad_token")
            .and_then(token_content)
            .or_else(|| wordpiece_class.map(|_| "[PAD]".to_string()));
        let mask_token = init
            .get("mask_token")
            .and_then(token_content)
            .or_else(|| wordpiece_class.map(|_| "[MASK]".to_string()));
        let special_ids = inner
            .get_added_tokens_decoder()
            .into_iter()
            .filter(|(_, t)| t.special)
            .map(|(id, _)| id)
            .collect();
        let mut plain = inner.clone();
        plain.with_post_processor(None::<tokenizers::PostProcessorWrapper>);
        Ok(Tokenizer {
            inner,
            plain,
            mask_token,
            special_ids,
            class_name,
            model_max_length,
            padding_side: side("padding_side")?,
            truncation_side: side("truncation_side")?,
            model_input_names,
            pad_token,
            source: checkpoint.dir(),
            warned_too_long: AtomicBool::new(false),
        })
    }

    /// The transformers class this tokenizer stands for (`BertTokenizer`).
    pub fn class_name(&self) -> &str {
        &self.class_name
    }

    /// `model_max_length`; `None` when unlimited.
    pub fn model_max_length(&self) -> Option<usize> {
        self.model_max_length
    }

    /// `model_input_names`.
    pub fn model_input_names(&self) -> &[String] {
        &self.model_input_names
    }

    /// The underlying `tokenizers` pipeline.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    /// The id of `token`, if in the vocabulary.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The token string of `id`, if in the vocabulary.
    pub fn id_to_token(&self, id: i64) -> Option<String> {
        u32::try_from(id)
            .ok()
            .and_then(|id| self.inner.id_to_token(id))
    }

    /// Whether `id` is a special token (`[CLS]`, `[SEP]`, `[PAD]`, ...).
    pub fn is_special_id(&self, id: i64) -> bool {
        u32::try_from(id).is_ok_and(|id| self.special_ids.contains(&id))
    }

    /// The id of the mask token (`[MASK]`), if the tokenizer has one.
    pub fn mask_token_id(&self) -> Option<i64> {
        self.mask_token
            .as_deref()
            .and_then(|t| self.inner.token_to_id(t))
            .map(i64::from)
    }

    /// `tokenizer(text)`.
    pub fn encode(&self, text: &str, options: &EncodeOptions) -> Result<Encoding> {
        let mut e = self.encode_batch(&[text], None, options)?;
        e.single = true;
        Ok(e)
    }

    /// `tokenizer(text, text_pair)`.
    pub fn encode_pair(&self, text: &str, pair: &str, options: &EncodeOptions) -> Result<Encoding> {
        let mut e = self.encode_batch(&[text], Some(&[pair]), options)?;
        e.single = true;
        Ok(e)
    }

    /// `tokenizer(texts, text_pairs)` for a batch.
    pub fn encode_batch(
        &self,
        texts: &[&str],
        pairs: Option<&[&str]>,
        options: &EncodeOptions,
    ) -> Result<Encoding> {
        if texts.is_empty() {
            return Err(Error::input(
                "You need to give at least one text to tokenize",
            ));
        }
        if let Some(p) = pairs {
            if p.len() != texts.len() {
                return Err(Error::input(format!(
                    "got {} texts but {} text pairs; they must match",
                    texts.len(),
                    p.len()
                )));
            }
        }
        let (truncation, padding) = self.strategies(options)?;
        let processor = self.inner.get_post_processor();
        let mut encodings = Vec::with_capacity(texts.len());
        for (i, text) in texts.iter().enumerate() {
            let first = self.encode_plain(text)?;
            let second = match pairs {
                Some(p) => Some(self.encode_plain(p[i])?),
                None => None,
            };
            let is_pair = second.is_some();
            let (first, second) = match &truncation {
                Some(params) => {
                    let added = if options.add_special_tokens {
                        processor.map_or(0, |p| p.added_tokens(is_pair))
                    } else {
                        0
                    };
                    let max_length = params.max_length.checked_sub(added).ok_or_else(|| {
                        Error::input(format!(
                            "max_length {} is smaller than the {added} special tokens the tokenizer adds",
                            params.max_length
                        ))
                    })?;
                    let params = TruncationParams {
                        max_length,
                        ..params.clone()
                    };
                    truncate_encodings(first, second, &params).map_err(|e| Error::Tokenizer {
                        path: None,
                        reason: e.to_string(),
                    })?
                }
                None => (first, second),
            };
            // Guarded: a TemplateProcessing naming a special token it does not define panics
            // in tokenizers (found by fuzzing).
            let encoding = guarded(|| match processor {
                Some(p) => p.process(first, second, options.add_special_tokens),
                None => <dyn PostProcessor>::default_process(
                    std::iter::once(first).chain(second).collect(),
                    options.add_special_tokens,
                )
                .map(|v| {
                    let mut parts = v.into_iter();
                    let mut out = parts.next().unwrap_or_default();
                    for other in parts {
                        out.merge_with(other, false);
                    }
                    out
                }),
            })?;
            encodings.push(encoding);
        }
        if let Some(params) = &padding {
            pad_encodings(&mut encodings, params).map_err(|e| Error::Tokenizer {
                path: None,
                reason: e.to_string(),
            })?;
        }
        if truncation.is_none() && options.max_length.is_none() {
            self.warn_if_too_long(encodings.iter().map(|e| e.len()).max().unwrap_or(0));
        }
        let wants = |name: &str| self.model_input_names.iter().any(|n| n == name);
        let to_i64 = |v: &[u32]| v.iter().map(|&x| i64::from(x)).collect::<Vec<_>>();
        Ok(Encoding {
            input_ids: encodings.iter().map(|e| to_i64(e.get_ids())).collect(),
            token_type_ids: wants("token_type_ids")
                .then(|| encodings.iter().map(|e| to_i64(e.get_type_ids())).collect()),
            attention_mask: wants("attention_mask").then(|| {
                encodings
                    .iter()
                    .map(|e| to_i64(e.get_attention_mask()))
                    .collect()
            }),
            offset_mapping: options
                .return_offsets_mapping
                .then(|| encodings.iter().map(|e| e.get_offsets().to_vec()).collect()),
            sequence_ids: encodings.iter().map(|e| e.get_sequence_ids()).collect(),
            single: false,
        })
    }

    /// Encodes one sequence without special tokens, truncation or padding (character offsets).
    fn encode_plain(&self, text: &str) -> Result<tokenizers::Encoding> {
        guarded(|| self.plain.encode_char_offsets(text, false))
    }

    /// transformers' `_get_padding_truncation_strategies`.
    fn strategies(
        &self,
        options: &EncodeOptions,
    ) -> Result<(Option<TruncationParams>, Option<PaddingParams>)> {
        let truncation = match (options.truncation, options.max_length, options.padding) {
            (Some(t), _, _) => t,
            // max_length without truncation or padding means longest_first.
            (None, Some(_), Padding::None) => Truncation::LongestFirst,
            (None, _, _) => Truncation::DoNotTruncate,
        };
        if options.max_length.is_some()
            && options.padding == Padding::Longest
            && truncation == Truncation::DoNotTruncate
        {
            log::warn!("`max_length` is ignored when `padding`=`True` and there is no truncation strategy. To pad to max length, use `padding='max_length'`.");
        }
        let trunc_len = match truncation {
            Truncation::DoNotTruncate => None,
            _ => options.max_length.or(self.model_max_length),
        };
        let truncation_params = match (truncation, trunc_len) {
            (Truncation::DoNotTruncate, _) | (_, None) => None,
            (t, Some(max_length)) => Some(TruncationParams {
                direction: match self.truncation_side {
                    Side::Left => TruncationDirection::Left,
                    Side::Right => TruncationDirection::Right,
                },
                max_length,
                strategy: match t {
                    Truncation::OnlyFirst => TruncationStrategy::OnlyFirst,
                    Truncation::OnlySecond => TruncationStrategy::OnlySecond,
                    _ => TruncationStrategy::LongestFirst,
                },
                stride: 0,
            }),
        };
        let strategy = match options.padding {
            Padding::None => None,
            Padding::Longest => Some(PaddingStrategy::BatchLongest),
            Padding::MaxLength => options
                .max_length
                .or(self.model_max_length)
                .map(PaddingStrategy::Fixed),
        };
        if let (Some(m), Some(PaddingStrategy::Fixed(n))) = (options.pad_to_multiple_of, &strategy)
        {
            if truncation_params.is_some() && m > 0 && n % m != 0 {
                return Err(Error::input(format!(
                    "Truncation and padding are both activated but truncation length ({n}) is not a multiple of pad_to_multiple_of ({m})."
                )));
            }
        }
        let padding_params = match strategy {
            None => None,
            Some(strategy) => {
                let pad_token = self.pad_token.clone().ok_or_else(|| {
                    Error::input("Asking to pad but the tokenizer does not have a padding token. Please select a token to use as `pad_token` or add a new pad token.")
                })?;
                let pad_id =
                    self.inner
                        .token_to_id(&pad_token)
                        .ok_or_else(|| Error::Tokenizer {
                            path: self.source.clone(),
                            reason: format!("the pad token {pad_token:?} is not in the vocabulary"),
                        })?;
                Some(PaddingParams {
                    strategy,
                    direction: match self.padding_side {
                        Side::Left => PaddingDirection::Left,
                        Side::Right => PaddingDirection::Right,
                    },
                    pad_to_multiple_of: options.pad_to_multiple_of,
                    pad_id,
                    pad_type_id: 0,
                    pad_token,
                })
            }
        };
        Ok((truncation_params, padding_params))
    }

    fn warn_if_too_long(&self, longest: usize) {
        if let Some(max) = self.model_max_length {
            if longest > max && !self.warned_too_long.swap(true, Ordering::Relaxed) {
                log::warn!(
                    "Token indices sequence length is longer than the specified maximum sequence length for this model ({longest} > {max}). Running this sequence through the model will result in indexing errors"
                );
            }
        }
    }

    /// `tokenizer.decode(ids, skip_special_tokens=...)`.
    pub fn decode(&self, ids: &[i64], skip_special_tokens: bool) -> Result<String> {
        let ids = ids
            .iter()
            .map(|&i| {
                u32::try_from(i).map_err(|_| Error::input(format!("token id {i} is out of range")))
            })
            .collect::<Result<Vec<_>>>()?;
        self.inner
            .decode(&ids, skip_special_tokens)
            .map_err(|e| Error::Tokenizer {
                path: None,
                reason: e.to_string(),
            })
    }

    /// `tokenizer.batch_decode(rows, skip_special_tokens=...)`.
    pub fn batch_decode(
        &self,
        rows: &[Vec<i64>],
        skip_special_tokens: bool,
    ) -> Result<Vec<String>> {
        rows.iter()
            .map(|r| self.decode(r, skip_special_tokens))
            .collect()
    }
}

/// Runs a `tokenizers` call, turning its errors into ours and a panic inside it into an error.
/// The regex engine behind `Split` / `Regex` patterns (onig) panics when a pathological pattern
/// from a tokenizer.json exceeds its backtracking limit; no input may crash the caller.
pub(crate) fn guarded<T>(f: impl FnOnce() -> tokenizers::Result<T>) -> Result<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(Error::Tokenizer {
            path: None,
            reason: e.to_string(),
        }),
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown failure".into());
            Err(Error::Tokenizer {
                path: None,
                reason: format!("the tokenizer failed on this input ({what}); a pattern in tokenizer.json may be pathological"),
            })
        }
    }
}

/// `model_max_length` from tokenizer_config.json: `None` when over transformers'
/// `VERY_LARGE_INTEGER` threshold or not a number, `default` when absent.
fn max_length_setting(init: &Map<String, Value>, default: Option<usize>) -> Option<usize> {
    match init.get("model_max_length") {
        Some(Value::Number(n)) => n
            .as_f64()
            .filter(|v| *v < LARGE_LIMIT && *v >= 0.0)
            .map(|v| v as usize),
        Some(_) => None,
        None => default,
    }
}

/// `padding_side` / `truncation_side` from tokenizer_config.json (default right).
fn side_setting(
    init: &Map<String, Value>,
    key: &str,
    path: Option<&std::path::Path>,
) -> Result<Side> {
    match init.get(key).and_then(Value::as_str) {
        None | Some("right") => Ok(Side::Right),
        Some("left") => Ok(Side::Left),
        Some(other) => Err(Error::Tokenizer {
            path: path.map(std::path::Path::to_path_buf),
            reason: format!("{key} should be 'right' or 'left', got {other:?}"),
        }),
    }
}

/// `model_input_names` from tokenizer_config.json, else the class's defaults.
fn input_names_setting(init: &Map<String, Value>, defaults: &[&str]) -> Vec<String> {
    match init.get("model_input_names") {
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        _ => defaults.iter().map(|s| s.to_string()).collect(),
    }
}

/// The tokenizer class implied by config.json (`tokenizer_class`, else the registry's mapping
/// for `model_type`), or `None` when there is no usable config.
fn class_from_model_config(checkpoint: &Checkpoint) -> Result<Option<String>> {
    let Some(path) = checkpoint.get("config.json")? else {
        return Ok(None);
    };
    let raw = read_json_object(&path)?;
    if let Some(c) = raw.get("tokenizer_class").and_then(Value::as_str) {
        return Ok(Some(c.trim_end_matches("Fast").to_string()));
    }
    Ok(raw
        .get("model_type")
        .and_then(Value::as_str)
        .and_then(|t| crate::registry::architecture(t).ok())
        .and_then(|a| a.tokenizer_class())
        .map(str::to_string))
}

#[cfg(test)]
mod fuzz_regressions {
    use super::*;

    /// fuzz/corpus/tokenizer_json/crash-f48d25...: a malformed `decoder` value made tokenizers'
    /// deserializer panic (`expect("Helper")`) through `AutoTokenizer::from_pretrained`.
    #[test]
    fn malformed_decoder_is_an_error_not_a_panic() -> Result<()> {
        let dir = std::env::temp_dir().join(format!(
            "autoclass-malformed-decoder-{}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        for decoder in [r#"{"type": "WordPiece", "cleanup": t#ue}"#, "5"] {
            let json = format!(r#"{{"version": "1.0", "decoder": {decoder}, "model": {{}}}}"#);
            let file = dir.join("tokenizer.json");
            std::fs::write(&file, json).map_err(|e| Error::io(&file, e))?;
            let result = AutoTokenizer::from_pretrained(&dir.to_string_lossy());
            assert!(matches!(result, Err(Error::Tokenizer { .. })), "{result:?}");
        }
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    }

    /// fuzz/corpus/tokenizer_json/crash-f86b3a...: a TemplateProcessing whose template names a
    /// special token missing from its `special_tokens` made tokenizers panic in `encode`.
    #[test]
    fn template_with_undefined_special_token_is_an_error_not_a_panic() -> Result<()> {
        let fixture =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bert_base");
        let src = fixture.join("tokenizer.json");
        let text = std::fs::read_to_string(&src).map_err(|e| Error::io(&src, e))?;
        let mut doc: Value =
            serde_json::from_str(&text).map_err(|e| Error::input(e.to_string()))?;
        if let Some(tokens) = doc
            .pointer_mut("/post_processor/special_tokens")
            .and_then(Value::as_object_mut)
        {
            tokens.remove("[SEP]");
        }
        let dir = std::env::temp_dir().join(format!(
            "autoclass-undefined-special-{}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let file = dir.join("tokenizer.json");
        std::fs::write(&file, doc.to_string()).map_err(|e| Error::io(&file, e))?;
        let tokenizer = AutoTokenizer::from_pretrained(&dir.to_string_lossy())?;
        let result = tokenizer.encode("hello world", &EncodeOptions::default());
        assert!(matches!(result, Err(Error::Tokenizer { .. })), "{result:?}");
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    }
}
