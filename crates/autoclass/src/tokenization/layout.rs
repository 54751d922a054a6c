//! Words-and-boxes tokenizers of the LayoutLM family: transformers' `LayoutLMv2Tokenizer`
//! (`models/layoutlmv2/tokenization_layoutlmv2.py`, WordPiece) and `LayoutLMv3Tokenizer`
//! (`models/layoutlmv3/tokenization_layoutlmv3.py`, byte-level BPE).
//!
//! Both take pre-tokenized words (each word is encoded on its own, so sub-tokens never cross a
//! word boundary), one normalised box per word and optional word labels, and return token-level
//! `input_ids`, `bbox` (every sub-token gets its word's box; special tokens get the class's
//! `cls_token_box` / `sep_token_box` / `pad_token_box`), `attention_mask`, `token_type_ids`
//! (v2 only) and `labels`. Truncation and padding run through the `tokenizers` crate exactly as
//! transformers' fast path does, so boxes and labels stay aligned with the tokens.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use candle_core::{Device, Tensor};
use serde_json::{json, Map, Value};
use tokenizers::utils::padding::pad_encodings;
use tokenizers::utils::truncation::truncate_encodings;
use tokenizers::{InputSequence, PostProcessor};

use super::{
    class_from_model_config, token_content, wordpiece, EncodeOptions, Padding, Side, Tokenizer,
    Truncation,
};
use crate::config::read_json_object;
use crate::error::{Error, Result};
use crate::hub::{Checkpoint, HubOptions};
use crate::models::Batch;

/// Which LayoutLM tokenizer class a [`LayoutTokenizer`] stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayoutFamily {
    /// `LayoutLMv2Tokenizer`: BERT WordPiece, `[CLS] A [SEP] B [SEP]`, token type ids.
    V2,
    /// `LayoutLMv3Tokenizer`: RoBERTa byte-level BPE, `<s> A </s></s> B </s>`, no token type ids.
    V3,
}

impl LayoutFamily {
    /// The transformers class name (`LayoutLMv2Tokenizer` / `LayoutLMv3Tokenizer`).
    pub fn class_name(self) -> &'static str {
        match self {
            LayoutFamily::V2 => "LayoutLMv2Tokenizer",
            LayoutFamily::V3 => "LayoutLMv3Tokenizer",
        }
    }

    /// The family of a transformers tokenizer class name (a trailing `Fast` is ignored).
    pub fn from_class_name(name: &str) -> Option<Self> {
        match name.trim_end_matches("Fast") {
            "LayoutLMv2Tokenizer" => Some(LayoutFamily::V2),
            "LayoutLMv3Tokenizer" => Some(LayoutFamily::V3),
            _ => None,
        }
    }
}

/// One example: the words of a document with their boxes, optionally a question (which then
/// becomes the first sequence) and word labels.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WordsInput {
    /// A question (`text` when `text_pair` holds the words); split on whitespace into words whose
    /// tokens all get `pad_token_box`.
    pub question: Option<String>,
    /// The words (pre-tokenized: each is encoded on its own).
    pub words: Vec<String>,
    /// One `[x0, y0, x1, y1]` box per word, normalised to the 0-1000 scale.
    pub boxes: Vec<[i64; 4]>,
    /// Optional word-level labels (token classification).
    pub word_labels: Option<Vec<i64>>,
}

/// The keyword arguments of `tokenizer(words, boxes=..., ...)` / `processor(...)`.
#[derive(Clone, Debug)]
pub struct LayoutEncodeOptions {
    /// `padding=`.
    pub padding: Padding,
    /// `truncation=`; `None` means unspecified (truncates only when `max_length` is given).
    pub truncation: Option<Truncation>,
    /// `max_length=`.
    pub max_length: Option<usize>,
    /// `stride=` (overlap of overflowing windows).
    pub stride: usize,
    /// `pad_to_multiple_of=`.
    pub pad_to_multiple_of: Option<usize>,
    /// `add_special_tokens=` (default true).
    pub add_special_tokens: bool,
    /// `return_token_type_ids=`; `None` follows `model_input_names`.
    pub return_token_type_ids: Option<bool>,
    /// `return_attention_mask=`; `None` follows `model_input_names`.
    pub return_attention_mask: Option<bool>,
    /// `return_overflowing_tokens=`: every overflowing window becomes a row, with
    /// `overflow_to_sample_mapping`.
    pub return_overflowing_tokens: bool,
    /// `return_special_tokens_mask=`.
    pub return_special_tokens_mask: bool,
    /// `return_offsets_mapping=`.
    pub return_offsets_mapping: bool,
    /// `return_length=`.
    pub return_length: bool,
}

impl Default for LayoutEncodeOptions {
    fn default() -> Self {
        LayoutEncodeOptions {
            padding: Padding::None,
            truncation: None,
            max_length: None,
            stride: 0,
            pad_to_multiple_of: None,
            add_special_tokens: true,
            return_token_type_ids: None,
            return_attention_mask: None,
            return_overflowing_tokens: false,
            return_special_tokens_mask: false,
            return_offsets_mapping: false,
            return_length: false,
        }
    }
}

/// The result of a words+boxes call: one row per example (per window with overflow).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayoutEncoding {
    /// `input_ids`.
    pub input_ids: Vec<Vec<i64>>,
    /// `bbox`: one box per token.
    pub bbox: Vec<Vec<[i64; 4]>>,
    /// `token_type_ids` (LayoutLMv2 by default; not LayoutLMv3).
    pub token_type_ids: Option<Vec<Vec<i64>>>,
    /// `attention_mask`.
    pub attention_mask: Option<Vec<Vec<i64>>>,
    /// `labels`, when word labels were given.
    pub labels: Option<Vec<Vec<i64>>>,
    /// `special_tokens_mask`, when asked for.
    pub special_tokens_mask: Option<Vec<Vec<i64>>>,
    /// `offset_mapping` (character offsets inside each word), when asked for.
    pub offset_mapping: Option<Vec<Vec<(usize, usize)>>>,
    /// `length` of each row, when asked for.
    pub length: Option<Vec<usize>>,
    /// `overflow_to_sample_mapping` (row -> example), with `return_overflowing_tokens`.
    pub overflow_to_sample_mapping: Option<Vec<usize>>,
    /// Whether a single, unbatched example was given (JSON output is then flat, like Python's).
    pub single: bool,
}

fn int_rows(rows: &[Vec<i64>], device: &Device) -> Result<Tensor> {
    let b = rows.len();
    let l = rows.first().map_or(0, Vec::len);
    if rows.iter().any(|r| r.len() != l) {
        return Err(ragged());
    }
    let flat: Vec<i64> = rows.iter().flatten().copied().collect();
    Ok(Tensor::from_vec(flat, (b, l), device)?)
}

fn ragged() -> Error {
    Error::input(
        "Unable to create tensor, you should probably activate truncation and/or padding with 'padding=True' 'truncation=True' to have batched tensors with the same length.",
    )
}

fn usize_to_i64(v: usize) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl LayoutEncoding {
    /// Number of rows (examples, or windows with overflow).
    pub fn len(&self) -> usize {
        self.input_ids.len()
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.input_ids.is_empty()
    }

    /// The encoding as int64 tensors (`return_tensors="pt"`): `input_ids` `[B, L]`, `bbox`
    /// `[B, L, 4]`, `token_type_ids`, `attention_mask`, `labels`, and the optional outputs
    /// (`special_tokens_mask`, `offset_mapping` `[B, L, 2]`, `length` `[B]`,
    /// `overflow_to_sample_mapping` `[B]`). Ragged rows are an error, as in transformers.
    pub fn to_batch(&self, device: &Device) -> Result<Batch> {
        let mut batch = Batch::new();
        batch.insert("input_ids", int_rows(&self.input_ids, device)?);
        let b = self.bbox.len();
        let l = self.bbox.first().map_or(0, Vec::len);
        if self.bbox.iter().any(|r| r.len() != l) {
            return Err(ragged());
        }
        let flat: Vec<i64> = self.bbox.iter().flatten().flatten().copied().collect();
        batch.insert("bbox", Tensor::from_vec(flat, (b, l, 4), device)?);
        if let Some(t) = &self.token_type_ids {
            batch.insert("token_type_ids", int_rows(t, device)?);
        }
        if let Some(m) = &self.attention_mask {
            batch.insert("attention_mask", int_rows(m, device)?);
        }
        if let Some(labels) = &self.labels {
            batch.insert("labels", int_rows(labels, device)?);
        }
        if let Some(m) = &self.special_tokens_mask {
            batch.insert("special_tokens_mask", int_rows(m, device)?);
        }
        if let Some(offsets) = &self.offset_mapping {
            let l = offsets.first().map_or(0, Vec::len);
            if offsets.iter().any(|r| r.len() != l) {
                return Err(ragged());
            }
            let flat: Vec<i64> = offsets
                .iter()
                .flatten()
                .flat_map(|(a, b)| [usize_to_i64(*a), usize_to_i64(*b)])
                .collect();
            batch.insert(
                "offset_mapping",
                Tensor::from_vec(flat, (offsets.len(), l, 2), device)?,
            );
        }
        for (name, values) in [
            ("length", &self.length),
            (
                "overflow_to_sample_mapping",
                &self.overflow_to_sample_mapping,
            ),
        ] {
            if let Some(v) = values {
                let flat: Vec<i64> = v.iter().map(|x| usize_to_i64(*x)).collect();
                batch.insert(name, Tensor::from_vec(flat, v.len(), device)?);
            }
        }
        Ok(batch)
    }

    /// The encoding as transformers prints it without `return_tensors`: flat lists for a single
    /// example (unless overflowing windows were asked for), nested lists otherwise.
    pub fn to_json(&self) -> Value {
        let flat = self.single && self.overflow_to_sample_mapping.is_none();
        let rows = |rows: Vec<Value>| -> Value {
            match (flat, rows.first()) {
                (true, Some(first)) => first.clone(),
                _ => Value::Array(rows),
            }
        };
        let ints = |r: &Vec<i64>| Value::from(r.clone());
        let mut map = Map::new();
        map.insert(
            "input_ids".into(),
            rows(self.input_ids.iter().map(ints).collect()),
        );
        if let Some(t) = &self.token_type_ids {
            map.insert("token_type_ids".into(), rows(t.iter().map(ints).collect()));
        }
        if let Some(m) = &self.attention_mask {
            map.insert("attention_mask".into(), rows(m.iter().map(ints).collect()));
        }
        if let Some(m) = &self.special_tokens_mask {
            map.insert(
                "special_tokens_mask".into(),
                rows(m.iter().map(ints).collect()),
            );
        }
        if let Some(o) = &self.offset_mapping {
            map.insert(
                "offset_mapping".into(),
                rows(
                    o.iter()
                        .map(|r| {
                            Value::from(r.iter().map(|(a, b)| json!([a, b])).collect::<Vec<_>>())
                        })
                        .collect(),
                ),
            );
        }
        if let Some(l) = &self.length {
            map.insert("length".into(), Value::from(l.clone()));
        }
        if let Some(m) = &self.overflow_to_sample_mapping {
            map.insert("overflow_to_sample_mapping".into(), Value::from(m.clone()));
        }
        map.insert(
            "bbox".into(),
            rows(
                self.bbox
                    .iter()
                    .map(|r| {
                        Value::from(
                            r.iter()
                                .map(|b| Value::from(b.to_vec()))
                                .collect::<Vec<_>>(),
                        )
                    })
                    .collect(),
            ),
        );
        if let Some(labels) = &self.labels {
            map.insert("labels".into(), rows(labels.iter().map(ints).collect()));
        }
        Value::Object(map)
    }
}

/// A LayoutLMv2 / LayoutLMv3 tokenizer: words + boxes (+ labels) in, token-level inputs out.
pub struct LayoutTokenizer {
    tokenizer: Tokenizer,
    /// The same pipeline without a post-processor: encodes each sequence on its own. (With one,
    /// `encode(.., add_special_tokens=false)` still marks the tokens as sequence 0, which then
    /// sticks to the second sequence of a pair.)
    raw: tokenizers::Tokenizer,
    family: LayoutFamily,
    cls_token_box: [i64; 4],
    sep_token_box: [i64; 4],
    pad_token_box: [i64; 4],
    pad_token_label: i64,
    only_label_first_subword: bool,
    cls_id: Option<u32>,
    sep_id: Option<u32>,
    pad_id: Option<u32>,
}

impl std::fmt::Debug for LayoutTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LayoutTokenizer")
            .field("family", &self.family)
            .field("model_max_length", &self.tokenizer.model_max_length)
            .field("cls_token_box", &self.cls_token_box)
            .field("sep_token_box", &self.sep_token_box)
            .field("pad_token_box", &self.pad_token_box)
            .field("pad_token_label", &self.pad_token_label)
            .field("only_label_first_subword", &self.only_label_first_subword)
            .finish()
    }
}

/// tokenizer_config.json merged with a legacy special_tokens_map.json (transformers'
/// `_from_pretrained`), and the config's path.
fn read_init(checkpoint: &Checkpoint) -> Result<(Map<String, Value>, Option<PathBuf>)> {
    let config_path = checkpoint.get("tokenizer_config.json")?;
    let mut init = match &config_path {
        Some(p) => read_json_object(p)?,
        None => Map::new(),
    };
    if !init.contains_key("added_tokens_decoder") {
        if let Some(p) = checkpoint.get("special_tokens_map.json")? {
            for (k, v) in read_json_object(&p)? {
                init.insert(k, v);
            }
        }
    }
    Ok((init, config_path))
}

fn box_setting(
    init: &Map<String, Value>,
    key: &str,
    default: [i64; 4],
    path: &Option<PathBuf>,
) -> Result<[i64; 4]> {
    match init.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Array(a)) if a.len() == 4 => {
            let mut out = [0i64; 4];
            for (o, v) in out.iter_mut().zip(a) {
                *o = v.as_i64().ok_or_else(|| Error::Tokenizer {
                    path: path.clone(),
                    reason: format!("{key} must hold 4 integers, got {v}"),
                })?;
            }
            Ok(out)
        }
        Some(other) => Err(Error::Tokenizer {
            path: path.clone(),
            reason: format!("{key} must be a list of 4 integers, got {other}"),
        }),
    }
}

impl LayoutTokenizer {
    /// `AutoTokenizer.from_pretrained(name_or_path)` for a LayoutLMv2/v3 checkpoint.
    pub fn from_pretrained(name_or_path: &str) -> Result<Self> {
        Self::from_checkpoint(&Checkpoint::resolve(name_or_path, &HubOptions::default())?)
    }

    /// Builds the tokenizer of a resolved checkpoint; the class comes from tokenizer_config.json
    /// (`tokenizer_class`), else config.json (`tokenizer_class`, else the model type's mapping).
    pub fn from_checkpoint(checkpoint: &Checkpoint) -> Result<Self> {
        let (init, path) = read_init(checkpoint)?;
        let class = match init.get("tokenizer_class").and_then(Value::as_str) {
            Some(c) => Some(c.to_string()),
            None => class_from_model_config(checkpoint)?,
        };
        let family = class
            .as_deref()
            .and_then(LayoutFamily::from_class_name)
            .ok_or_else(|| Error::Tokenizer {
                path,
                reason: format!(
                    "{} is not a LayoutLMv2Tokenizer or LayoutLMv3Tokenizer checkpoint (tokenizer class {})",
                    checkpoint.name(),
                    class.as_deref().unwrap_or("unknown")
                ),
            })?;
        Self::from_checkpoint_as(checkpoint, family)
    }

    /// Builds the tokenizer of a resolved checkpoint as the given class (what a processor does:
    /// `LayoutLMv2Processor` always builds a `LayoutLMv2Tokenizer`).
    pub fn from_checkpoint_as(checkpoint: &Checkpoint, family: LayoutFamily) -> Result<Self> {
        let (init, config_path) = read_init(checkpoint)?;
        let tokenizer_json = checkpoint.get("tokenizer.json")?;
        let (inner, names, default_max, pad_default, mask_default) = match family {
            LayoutFamily::V2 => {
                let vocab_txt = checkpoint.get("vocab.txt")?;
                let inner = wordpiece::build(
                    &init,
                    tokenizer_json.as_deref(),
                    vocab_txt.as_deref(),
                    checkpoint,
                )?;
                (
                    inner,
                    &["input_ids", "attention_mask", "token_type_ids"][..],
                    Some(512),
                    "[PAD]",
                    "[MASK]",
                )
            }
            LayoutFamily::V3 => (
                build_byte_level_bpe(&init, tokenizer_json, checkpoint)?,
                &["input_ids", "attention_mask", "bbox"][..],
                None,
                "<pad>",
                "<mask>",
            ),
        };
        let model_max_length = super::max_length_setting(&init, default_max);
        let side = |key: &str| super::side_setting(&init, key, config_path.as_deref());
        let model_input_names = super::input_names_setting(&init, names);
        let special = |key: &str, default: &str| {
            init.get(key)
                .and_then(token_content)
                .unwrap_or_else(|| default.to_string())
        };
        let (cls_default, sep_default) = match family {
            LayoutFamily::V2 => ("[CLS]", "[SEP]"),
            LayoutFamily::V3 => ("<s>", "</s>"),
        };
        let pad_token = special("pad_token", pad_default);
        let cls_id = inner.token_to_id(&special("cls_token", cls_default));
        let sep_id = inner.token_to_id(&special("sep_token", sep_default));
        let pad_id = inner.token_to_id(&pad_token);
        let mut raw = inner.clone();
        raw.with_post_processor(None::<tokenizers::PostProcessorWrapper>);
        let special_ids = inner
            .get_added_tokens_decoder()
            .into_iter()
            .filter(|(_, t)| t.special)
            .map(|(id, _)| id)
            .collect();
        let sep_box_default = match family {
            LayoutFamily::V2 => [1000; 4],
            LayoutFamily::V3 => [0; 4],
        };
        let plain = raw.clone();
        Ok(LayoutTokenizer {
            cls_token_box: box_setting(&init, "cls_token_box", [0; 4], &config_path)?,
            sep_token_box: box_setting(&init, "sep_token_box", sep_box_default, &config_path)?,
            pad_token_box: box_setting(&init, "pad_token_box", [0; 4], &config_path)?,
            pad_token_label: init
                .get("pad_token_label")
                .and_then(Value::as_i64)
                .unwrap_or(-100),
            only_label_first_subword: init
                .get("only_label_first_subword")
                .and_then(Value::as_bool)
                .unwrap_or(true),
            cls_id,
            sep_id,
            pad_id,
            family,
            raw,
            tokenizer: Tokenizer {
                inner,
                plain,
                class_name: family.class_name().to_string(),
                model_max_length,
                padding_side: side("padding_side")?,
                truncation_side: side("truncation_side")?,
                model_input_names,
                pad_token: Some(pad_token),
                mask_token: Some(special("mask_token", mask_default)),
                special_ids,
                source: checkpoint.dir(),
                warned_too_long: AtomicBool::new(false),
            },
        })
    }

    /// Which class this is.
    pub fn family(&self) -> LayoutFamily {
        self.family
    }

    /// The transformers class this tokenizer stands for.
    pub fn class_name(&self) -> &str {
        self.family.class_name()
    }

    /// The plain-text tokenizer underneath (decode, vocabulary look-ups).
    pub fn text_tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// `model_max_length`; `None` when unlimited.
    pub fn model_max_length(&self) -> Option<usize> {
        self.tokenizer.model_max_length
    }

    /// `model_input_names`.
    pub fn model_input_names(&self) -> &[String] {
        &self.tokenizer.model_input_names
    }

    /// `cls_token_box`, `sep_token_box`, `pad_token_box`.
    pub fn special_boxes(&self) -> ([i64; 4], [i64; 4], [i64; 4]) {
        (self.cls_token_box, self.sep_token_box, self.pad_token_box)
    }

    /// `pad_token_label` (default -100).
    pub fn pad_token_label(&self) -> i64 {
        self.pad_token_label
    }

    /// `only_label_first_subword`.
    pub fn only_label_first_subword(&self) -> bool {
        self.only_label_first_subword
    }

    /// Sets `only_label_first_subword` (`tokenizer.only_label_first_subword = ...`).
    pub fn set_only_label_first_subword(&mut self, value: bool) {
        self.only_label_first_subword = value;
    }

    /// Sets `padding_side` (`tokenizer.padding_side = "left"`).
    pub fn set_padding_side(&mut self, side: Side) {
        self.tokenizer.padding_side = side;
    }

    /// Sets `truncation_side`.
    pub fn set_truncation_side(&mut self, side: Side) {
        self.tokenizer.truncation_side = side;
    }

    /// `tokenizer.convert_ids_to_tokens(ids)` (`None` for an id outside the vocabulary).
    pub fn convert_ids_to_tokens(&self, ids: &[i64]) -> Vec<Option<String>> {
        ids.iter().map(|&i| self.tokenizer.id_to_token(i)).collect()
    }

    /// `tokenizer(words, boxes=..., word_labels=...)` for one example (flat JSON output).
    pub fn encode_one(
        &self,
        input: &WordsInput,
        options: &LayoutEncodeOptions,
    ) -> Result<LayoutEncoding> {
        let mut e = self.encode_words(std::slice::from_ref(input), options)?;
        e.single = true;
        Ok(e)
    }

    /// `tokenizer(batch_of_words, boxes=..., word_labels=...)` (or `tokenizer(questions,
    /// batch_of_words, boxes=...)` when the examples carry questions): transformers'
    /// `_batch_encode_plus` of LayoutLMv2Tokenizer / LayoutLMv3Tokenizer.
    pub fn encode_words(
        &self,
        batch: &[WordsInput],
        options: &LayoutEncodeOptions,
    ) -> Result<LayoutEncoding> {
        if batch.is_empty() {
            return Err(Error::input(
                "You need to give at least one example to tokenize",
            ));
        }
        let is_pair = batch[0].question.is_some();
        if batch.iter().any(|b| b.question.is_some() != is_pair) {
            return Err(Error::input(
                "either every example or none must have a question (text) besides its words (text_pair)",
            ));
        }
        let has_labels = batch[0].word_labels.is_some();
        if batch.iter().any(|b| b.word_labels.is_some() != has_labels) {
            return Err(Error::input(
                "either every example or none must have word_labels",
            ));
        }
        for (b, example) in batch.iter().enumerate() {
            validate_example(b, example)?;
        }
        let encode_opts = EncodeOptions {
            padding: options.padding,
            truncation: options.truncation,
            max_length: options.max_length,
            pad_to_multiple_of: options.pad_to_multiple_of,
            add_special_tokens: options.add_special_tokens,
            return_offsets_mapping: options.return_offsets_mapping,
        };
        let (truncation, padding) = self.tokenizer.strategies(&encode_opts)?;
        let truncation = truncation.map(|mut t| {
            t.stride = options.stride;
            t
        });
        let processor = self.tokenizer.inner.get_post_processor();
        let mut encodings = Vec::with_capacity(batch.len());
        for example in batch {
            let words: Vec<&str> = example.words.iter().map(String::as_str).collect();
            let (first, second) = match &example.question {
                Some(q) => (
                    self.encode_pretokenized(python_split(q))?,
                    Some(self.encode_pretokenized(words)?),
                ),
                None => (self.encode_pretokenized(words)?, None),
            };
            let pair = second.is_some();
            let (first, second) = match &truncation {
                Some(params) => {
                    let added = if options.add_special_tokens {
                        processor.map_or(0, |p| p.added_tokens(pair))
                    } else {
                        0
                    };
                    let max_length = params.max_length.checked_sub(added).ok_or_else(|| {
                        Error::input(format!(
                            "max_length {} is smaller than the {added} special tokens the tokenizer adds",
                            params.max_length
                        ))
                    })?;
                    let params = tokenizers::utils::truncation::TruncationParams {
                        max_length,
                        ..params.clone()
                    };
                    truncate_encodings(first, second, &params).map_err(tok_err)?
                }
                None => (first, second),
            };
            let encoding = match processor {
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
            }
            .map_err(tok_err)?;
            encodings.push(encoding);
        }
        if let Some(params) = &padding {
            pad_encodings(&mut encodings, params).map_err(tok_err)?;
        }

        // Flatten the overflowing windows (transformers' `_convert_encoding`).
        let mut rows: Vec<(usize, tokenizers::Encoding)> = Vec::new();
        for (i, mut e) in encodings.into_iter().enumerate() {
            let overflow = if options.return_overflowing_tokens {
                std::mem::take(e.get_overflowing_mut())
            } else {
                Vec::new()
            };
            rows.push((i, e));
            rows.extend(overflow.into_iter().map(|o| (i, o)));
        }
        if truncation.is_none() && options.max_length.is_none() {
            self.tokenizer
                .warn_if_too_long(rows.iter().map(|(_, e)| e.len()).max().unwrap_or(0));
        }

        let mut bbox = Vec::with_capacity(rows.len());
        let mut labels = has_labels.then(|| Vec::with_capacity(rows.len()));
        for (original, e) in &rows {
            let example = &batch[*original];
            bbox.push(self.token_boxes(e, example, is_pair)?);
            if let (Some(labels), Some(word_labels)) = (labels.as_mut(), &example.word_labels) {
                labels.push(self.token_labels(e, word_labels)?);
            }
        }
        let wants = |name: &str, asked: Option<bool>| {
            asked.unwrap_or_else(|| self.tokenizer.model_input_names.iter().any(|n| n == name))
        };
        let to_i64 = |v: &[u32]| v.iter().map(|&x| i64::from(x)).collect::<Vec<_>>();
        Ok(LayoutEncoding {
            input_ids: rows.iter().map(|(_, e)| to_i64(e.get_ids())).collect(),
            bbox,
            token_type_ids: wants("token_type_ids", options.return_token_type_ids)
                .then(|| rows.iter().map(|(_, e)| to_i64(e.get_type_ids())).collect()),
            attention_mask: wants("attention_mask", options.return_attention_mask).then(|| {
                rows.iter()
                    .map(|(_, e)| to_i64(e.get_attention_mask()))
                    .collect()
            }),
            labels,
            special_tokens_mask: options.return_special_tokens_mask.then(|| {
                rows.iter()
                    .map(|(_, e)| to_i64(e.get_special_tokens_mask()))
                    .collect()
            }),
            offset_mapping: options
                .return_offsets_mapping
                .then(|| rows.iter().map(|(_, e)| e.get_offsets().to_vec()).collect()),
            length: options
                .return_length
                .then(|| rows.iter().map(|(_, e)| e.len()).collect()),
            overflow_to_sample_mapping: options
                .return_overflowing_tokens
                .then(|| rows.iter().map(|(i, _)| *i).collect()),
            single: false,
        })
    }

    /// Encodes pre-tokenized words without special tokens (character offsets inside each word).
    fn encode_pretokenized(&self, words: Vec<&str>) -> Result<tokenizers::Encoding> {
        super::guarded(|| {
            self.raw
                .encode_char_offsets(InputSequence::from(words), false)
        })
    }

    /// The box of every token (`_batch_encode_plus`' "create the token boxes").
    fn token_boxes(
        &self,
        e: &tokenizers::Encoding,
        example: &WordsInput,
        is_pair: bool,
    ) -> Result<Vec<[i64; 4]>> {
        let sequence_ids = e.get_sequence_ids();
        e.get_ids()
            .iter()
            .zip(e.get_word_ids())
            .zip(sequence_ids)
            .map(|((&id, word), sequence)| match word {
                Some(_) if is_pair && sequence == Some(0) => Ok(self.pad_token_box),
                Some(w) => example
                    .boxes
                    .get(*w as usize)
                    .copied()
                    .ok_or_else(|| Error::input("list index out of range")),
                None if Some(id) == self.cls_id => Ok(self.cls_token_box),
                None if Some(id) == self.sep_id => Ok(self.sep_token_box),
                None if Some(id) == self.pad_id => Ok(self.pad_token_box),
                None => match self.family {
                    LayoutFamily::V2 => Err(Error::input("Id not recognized")),
                    // "For RoBERTa, there might be additional sep tokens".
                    LayoutFamily::V3 => Ok(self.sep_token_box),
                },
            })
            .collect()
    }

    /// The label of every token. LayoutLMv2 labels a token when its offset starts at 0 inside
    /// its word; LayoutLMv3 when its word id differs from the previous token's. As in
    /// transformers, a question's tokens (pair input) are labelled by *their* word index.
    fn token_labels(&self, e: &tokenizers::Encoding, word_labels: &[i64]) -> Result<Vec<i64>> {
        let label = |w: u32| {
            word_labels.get(w as usize).copied().ok_or_else(|| {
                Error::input(format!(
                    "list index out of range: word {w} has no label (word_labels has {} entries; \
                     give one label per word)",
                    word_labels.len()
                ))
            })
        };
        let mut previous: Option<u32> = None;
        let mut out = Vec::with_capacity(e.len());
        for (word, offset) in e.get_word_ids().iter().zip(e.get_offsets()) {
            let value = match word {
                None => self.pad_token_label,
                Some(w) if !self.only_label_first_subword => label(*w)?,
                Some(w) => {
                    let first = match self.family {
                        LayoutFamily::V2 => offset.0 == 0,
                        LayoutFamily::V3 => previous != Some(*w),
                    };
                    if first {
                        label(*w)?
                    } else {
                        self.pad_token_label
                    }
                }
            };
            previous = *word;
            out.push(value);
        }
        Ok(out)
    }
}

/// Input checks, with transformers' wording where it has one.
fn validate_example(b: usize, example: &WordsInput) -> Result<()> {
    if example.words.len() != example.boxes.len() {
        return Err(Error::input(
            "You must provide as many words as there are bounding boxes",
        ));
    }
    for (i, bx) in example.boxes.iter().enumerate() {
        if bx.iter().any(|c| !(0..=1000).contains(c)) {
            return Err(Error::input(format!(
                "bounding box {bx:?} of word {i} ({:?}) in example {b} is outside the 0-1000 range: \
                 boxes must be normalized to a 0-1000 scale (int(1000 * x / width), \
                 int(1000 * y / height))",
                example.words[i]
            )));
        }
    }
    if let Some(labels) = &example.word_labels {
        if labels.len() < example.words.len() {
            return Err(Error::input(format!(
                "list index out of range: example {b} has {} words but only {} word labels; \
                 give one label per word",
                example.words.len(),
                labels.len()
            )));
        }
    }
    Ok(())
}

/// Python's `str.split()`: runs of whitespace separate words, no empty words.
fn python_split(text: &str) -> Vec<&str> {
    text.split(|c: char| c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c))
        .filter(|s| !s.is_empty())
        .collect()
}

fn tok_err(e: impl std::fmt::Display) -> Error {
    Error::Tokenizer {
        path: None,
        reason: e.to_string(),
    }
}

/// Builds LayoutLMv3Tokenizer's pipeline: byte-level BPE (vocabulary and merges from
/// tokenizer.json's model, else vocab.json + merges.txt), `ByteLevel(add_prefix_space)`
/// pre-tokenizer and RoBERTa post-processing.
fn build_byte_level_bpe(
    init: &Map<String, Value>,
    tokenizer_json: Option<PathBuf>,
    checkpoint: &Checkpoint,
) -> Result<tokenizers::Tokenizer> {
    let missing = |filename: &str| Error::MissingFile {
        name: checkpoint.name().to_string(),
        filename: filename.to_string(),
        revision: checkpoint.revision().to_string(),
    };
    let mut file_added: Vec<Value> = Vec::new();
    let (vocab, merges, source) = match &tokenizer_json {
        Some(path) => {
            let raw = read_json_object(path)?;
            let model = raw.get("model").and_then(Value::as_object);
            let bpe = model.and_then(|m| m.get("type")).and_then(Value::as_str) == Some("BPE");
            match (bpe, model) {
                (true, Some(m)) => {
                    if let Some(Value::Array(a)) = raw.get("added_tokens") {
                        file_added = a.clone();
                    }
                    (
                        m.get("vocab").cloned().unwrap_or_else(|| json!({})),
                        m.get("merges").cloned().unwrap_or_else(|| json!([])),
                        path.clone(),
                    )
                }
                _ => {
                    return Err(Error::Tokenizer {
                        path: Some(path.clone()),
                        reason: "LayoutLMv3Tokenizer needs a BPE model in tokenizer.json".into(),
                    })
                }
            }
        }
        None => {
            let vocab_path = checkpoint
                .get("vocab.json")?
                .ok_or_else(|| missing("vocab.json"))?;
            let merges_path = checkpoint
                .get("merges.txt")?
                .ok_or_else(|| missing("merges.txt"))?;
            for p in [&vocab_path, &merges_path] {
                let meta = std::fs::metadata(p).map_err(|e| Error::io(p, e))?;
                if meta.len() > crate::util::MAX_TEXT_FILE {
                    return Err(Error::Tokenizer {
                        path: Some(p.clone()),
                        reason: "the file is too large".into(),
                    });
                }
            }
            let as_str = |p: &PathBuf| -> Result<String> {
                p.to_str()
                    .map(str::to_string)
                    .ok_or_else(|| Error::Tokenizer {
                        path: Some(p.clone()),
                        reason: "the path is not valid UTF-8".into(),
                    })
            };
            let (vocab, merges) = tokenizers::models::bpe::BPE::read_file(
                &as_str(&vocab_path)?,
                &as_str(&merges_path)?,
            )
            .map_err(|e| Error::Tokenizer {
                path: Some(merges_path.clone()),
                reason: e.to_string(),
            })?;
            let vocab: Map<String, Value> = vocab
                .into_iter()
                .map(|(k, v)| (k, Value::from(v)))
                .collect();
            let merges: Vec<Value> = merges.into_iter().map(|(a, b)| json!([a, b])).collect();
            (Value::Object(vocab), Value::Array(merges), vocab_path)
        }
    };
    let vocab_id = |token: &str| vocab.get(token).and_then(Value::as_u64);
    let mut next_id = vocab
        .as_object()
        .map(|m| {
            m.values()
                .filter_map(Value::as_u64)
                .max()
                .map_or(0, |m| m + 1)
        })
        .unwrap_or(0);

    // Added tokens: tokenizer.json's, then tokenizer_config's added_tokens_decoder, then the
    // named special tokens.
    let mut added: std::collections::BTreeMap<u64, Value> = std::collections::BTreeMap::new();
    for tok in &file_added {
        if let Some(id) = tok.get("id").and_then(Value::as_u64) {
            added.insert(id, tok.clone());
        }
    }
    if let Some(Value::Object(decoder)) = init.get("added_tokens_decoder") {
        for (id, tok) in decoder {
            let id: u64 = id.parse().map_err(|_| Error::Tokenizer {
                path: None,
                reason: format!("added_tokens_decoder has a key {id:?} that is not an id"),
            })?;
            let Some(content) = token_content(tok) else {
                continue;
            };
            let flag = |k: &str, d: bool| tok.get(k).and_then(Value::as_bool).unwrap_or(d);
            added.insert(
                id,
                json!({"id": id, "content": content, "single_word": flag("single_word", false),
                       "lstrip": flag("lstrip", false), "rstrip": flag("rstrip", false),
                       "normalized": flag("normalized", false), "special": flag("special", true)}),
            );
        }
    }
    let special = |key: &str, default: &str| {
        init.get(key)
            .and_then(token_content)
            .unwrap_or_else(|| default.to_string())
    };
    let names = [
        special("bos_token", "<s>"),
        special("eos_token", "</s>"),
        special("unk_token", "<unk>"),
        special("sep_token", "</s>"),
        special("pad_token", "<pad>"),
        special("cls_token", "<s>"),
        special("mask_token", "<mask>"),
    ];
    let mut ids = std::collections::HashMap::new();
    for token in &names {
        let existing = added
            .iter()
            .find(|(_, v)| v.get("content").and_then(Value::as_str) == Some(token.as_str()))
            .map(|(id, _)| *id);
        let id = match existing.or_else(|| vocab_id(token)) {
            Some(id) => id,
            None => {
                let id = next_id;
                next_id += 1;
                id
            }
        };
        ids.insert(token.clone(), id);
        added.entry(id).or_insert_with(|| {
            json!({"id": id, "content": token, "single_word": false, "lstrip": false,
                   "rstrip": false, "normalized": false, "special": true})
        });
    }
    let sep = &names[3];
    let cls = &names[5];
    let add_prefix_space = init
        .get("add_prefix_space")
        .and_then(Value::as_bool)
        .unwrap_or(true);
    let doc = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added.into_values().collect::<Vec<_>>(),
        "normalizer": null,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": add_prefix_space,
                          "trim_offsets": true, "use_regex": true},
        "post_processor": {"type": "RobertaProcessing",
                           "sep": [sep, ids.get(sep).copied().unwrap_or(0)],
                           "cls": [cls, ids.get(cls).copied().unwrap_or(0)],
                           "trim_offsets": true, "add_prefix_space": add_prefix_space},
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true,
                    "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null,
                  "continuing_subword_prefix": "", "end_of_word_suffix": "", "fuse_unk": false,
                  "byte_fallback": false, "ignore_merges": false,
                  "vocab": vocab, "merges": merges},
    });
    // Guarded: tokenizers' deserializers can panic on malformed values (found by fuzzing).
    super::guarded(|| serde_json::from_value::<tokenizers::Tokenizer>(doc).map_err(Into::into))
        .map_err(|e| Error::Tokenizer {
            path: Some(source),
            reason: match e {
                Error::Tokenizer { reason, .. } => reason,
                other => other.to_string(),
            },
        })
}
