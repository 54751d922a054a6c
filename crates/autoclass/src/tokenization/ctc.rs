//! `Wav2Vec2CTCTokenizer`'s decoding, following transformers'
//! `models/wav2vec2/tokenization_wav2vec2.py`: CTC output ids → text.
//!
//! `decode` groups repeated ids (CTC collapsing), drops the pad token (the CTC blank), turns the
//! word delimiter (`|`) into `replace_word_delimiter_char` (a space), joins and strips. Special
//! tokens other than the blank (`<s>`, `</s>`, `<unk>`) stay in the text unless
//! `skip_special_tokens`, which removes them (and the blank) before grouping, as transformers does.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use candle_core::{Tensor, D};
use serde_json::{Map, Value};

use crate::config::read_json_object;
use crate::error::{Error, Result};
use crate::hub::Checkpoint;

/// The keyword arguments of `Wav2Vec2CTCTokenizer.decode`.
#[derive(Clone, Debug)]
pub struct CtcDecodeOptions {
    /// `skip_special_tokens=` (default false): drop special tokens (and the blank) before grouping.
    pub skip_special_tokens: bool,
    /// `group_tokens=` (default true): collapse repeated tokens.
    pub group_tokens: bool,
    /// `spaces_between_special_tokens=` (default false): join the characters with spaces.
    pub spaces_between_special_tokens: bool,
    /// `clean_up_tokenization_spaces=`; `None` uses the tokenizer's setting.
    pub clean_up_tokenization_spaces: Option<bool>,
    /// `output_char_offsets=`.
    pub output_char_offsets: bool,
    /// `output_word_offsets=`.
    pub output_word_offsets: bool,
}

impl Default for CtcDecodeOptions {
    fn default() -> Self {
        CtcDecodeOptions {
            skip_special_tokens: false,
            group_tokens: true,
            spaces_between_special_tokens: false,
            clean_up_tokenization_spaces: None,
            output_char_offsets: false,
            output_word_offsets: false,
        }
    }
}

/// One decoded character and the frames it spans (`end_offset` exclusive).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CharOffset {
    /// The character (the word delimiter already replaced).
    pub char: String,
    /// First frame.
    pub start_offset: usize,
    /// One past the last frame.
    pub end_offset: usize,
}

/// One decoded word and the frames it spans (`end_offset` exclusive).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WordOffset {
    /// The word.
    pub word: String,
    /// First frame.
    pub start_offset: usize,
    /// One past the last frame.
    pub end_offset: usize,
}

/// `Wav2Vec2CTCTokenizerOutput`: the text and, when asked for, the offsets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CtcDecoded {
    /// The decoded text.
    pub text: String,
    /// Character offsets (with `output_char_offsets`; empty for an empty input when any offsets
    /// were asked for).
    pub char_offsets: Option<Vec<CharOffset>>,
    /// Word offsets (with `output_word_offsets`; empty for an empty input when any offsets were
    /// asked for).
    pub word_offsets: Option<Vec<WordOffset>>,
}

/// `Wav2Vec2CTCTokenizer` (decoding): the vocabulary of `vocab.json` and the settings of
/// `tokenizer_config.json` / `special_tokens_map.json`.
#[derive(Clone, Debug)]
pub struct Wav2Vec2CtcTokenizer {
    encoder: HashMap<String, i64>,
    decoder: HashMap<i64, String>,
    pad_token: Option<String>,
    unk_token: Option<String>,
    word_delimiter_token: Option<String>,
    replace_word_delimiter_char: String,
    do_lower_case: bool,
    clean_up_tokenization_spaces: bool,
    /// Ids `skip_special_tokens` removes: the special tokens except the word delimiter.
    skip_ids: HashSet<i64>,
    source: Option<PathBuf>,
}

/// A special-token value: a string, an AddedToken dict, or null.
fn token_content(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Object(m) => m.get("content").and_then(Value::as_str).map(str::to_string),
        _ => None,
    }
}

impl Wav2Vec2CtcTokenizer {
    /// Builds the tokenizer of a checkpoint: `vocab.json` (required), `tokenizer_config.json` and
    /// the legacy `special_tokens_map.json` (which, as in transformers, overrides the config when
    /// the config has no `added_tokens_decoder`).
    pub fn from_checkpoint(checkpoint: &Checkpoint) -> Result<Self> {
        let mut init = match checkpoint.get("tokenizer_config.json")? {
            Some(p) => read_json_object(&p)?,
            None => Map::new(),
        };
        if !init.contains_key("added_tokens_decoder") {
            if let Some(p) = checkpoint.get("special_tokens_map.json")? {
                for (k, v) in read_json_object(&p)? {
                    init.insert(k, v);
                }
            }
        }
        let vocab_path = checkpoint.require("vocab.json")?;
        let vocab = read_json_object(&vocab_path)?;
        Self::build(&vocab, &init, Some(&vocab_path))
    }

    /// Builds the tokenizer from the contents of `vocab.json` and `tokenizer_config.json`.
    pub fn from_json(
        vocab: &Map<String, Value>,
        tokenizer_config: &Map<String, Value>,
    ) -> Result<Self> {
        Self::build(vocab, tokenizer_config, None)
    }

    fn build(
        vocab: &Map<String, Value>,
        init: &Map<String, Value>,
        path: Option<&Path>,
    ) -> Result<Self> {
        let bad = |reason: String| Error::Tokenizer {
            path: path.map(Path::to_path_buf),
            reason,
        };
        let name = path
            .and_then(|p| p.file_name())
            .map_or("vocab.json".to_string(), |n| {
                n.to_string_lossy().into_owned()
            });
        // A multi-lingual vocabulary (MMS) nests one vocabulary per language: `target_lang` picks one.
        let target_lang = init.get("target_lang").and_then(Value::as_str);
        let vocab = match target_lang {
            Some(lang) => match vocab.get(lang) {
                Some(Value::Object(inner)) => inner,
                _ => {
                    return Err(bad(format!(
                        "{name} has no vocabulary for target_lang {lang:?}; it has: {}",
                        vocab.keys().cloned().collect::<Vec<_>>().join(", ")
                    )))
                }
            },
            None => vocab,
        };
        let mut encoder = HashMap::with_capacity(vocab.len());
        let mut decoder = HashMap::with_capacity(vocab.len());
        for (token, id) in vocab {
            let id = match id {
                Value::Number(n) => n.as_i64(),
                _ => None,
            }
            .ok_or_else(|| {
                let hint = if id.is_object() {
                    " (a nested multi-lingual vocabulary needs `target_lang` in tokenizer_config.json)"
                } else {
                    ""
                };
                bad(format!(
                    "{name} must map tokens to integer ids, but {token:?} maps to {id}{hint}"
                ))
            })?;
            encoder.insert(token.clone(), id);
            // {v: k for k, v in encoder.items()}: a later token with the same id wins.
            decoder.insert(id, token.clone());
        }
        // `added_tokens_decoder` entries take precedence over the vocabulary when decoding.
        let mut special_added = Vec::new();
        if let Some(Value::Object(added)) = init.get("added_tokens_decoder") {
            for (id, token) in added {
                let id: i64 = id.trim().parse().map_err(|_| {
                    bad(format!("added_tokens_decoder has a non-integer id {id:?}"))
                })?;
                let content = token_content(token).ok_or_else(|| {
                    bad(format!("added_tokens_decoder entry {id} has no content"))
                })?;
                if token.get("special").and_then(Value::as_bool) == Some(true) {
                    special_added.push(content.clone());
                }
                encoder.insert(content.clone(), id);
                decoder.insert(id, content);
            }
        }
        let special = |key: &str, default: &str| -> Option<String> {
            match init.get(key) {
                None => Some(default.to_string()),
                Some(v) => token_content(v),
            }
        };
        let bos_token = special("bos_token", "<s>");
        let eos_token = special("eos_token", "</s>");
        let unk_token = special("unk_token", "<unk>");
        let pad_token = special("pad_token", "<pad>");
        let word_delimiter_token = special("word_delimiter_token", "|");
        let mut extra: Vec<String> = Vec::new();
        for key in ["additional_special_tokens", "extra_special_tokens"] {
            if let Some(Value::Array(list)) = init.get(key) {
                extra.extend(list.iter().filter_map(token_content));
            }
        }
        let skip_ids = [&bos_token, &eos_token, &unk_token, &pad_token]
            .into_iter()
            .flatten()
            .chain(&extra)
            .chain(&special_added)
            .filter(|t| Some(*t) != word_delimiter_token.as_ref())
            .filter_map(|t| encoder.get(t).copied())
            .collect();
        let flag = |key: &str| init.get(key).and_then(Value::as_bool).unwrap_or(false);
        Ok(Wav2Vec2CtcTokenizer {
            encoder,
            decoder,
            pad_token,
            unk_token,
            replace_word_delimiter_char: init
                .get("replace_word_delimiter_char")
                .and_then(Value::as_str)
                .unwrap_or(" ")
                .to_string(),
            word_delimiter_token,
            do_lower_case: flag("do_lower_case"),
            // transformers 5's default is False.
            clean_up_tokenization_spaces: flag("clean_up_tokenization_spaces"),
            skip_ids,
            source: path.map(Path::to_path_buf),
        })
    }

    /// `vocab_size`: the number of distinct ids in the vocabulary.
    pub fn vocab_size(&self) -> usize {
        self.decoder.len()
    }

    /// The id of the pad token (the CTC blank), if it is in the vocabulary.
    pub fn pad_token_id(&self) -> Option<i64> {
        self.pad_token
            .as_ref()
            .and_then(|t| self.encoder.get(t).copied())
    }

    /// The id of the word delimiter token (`|`), if it is in the vocabulary.
    pub fn word_delimiter_token_id(&self) -> Option<i64> {
        self.word_delimiter_token
            .as_ref()
            .and_then(|t| self.encoder.get(t).copied())
    }

    /// The id of `token`, if in the vocabulary.
    pub fn token_to_id(&self, token: &str) -> Option<i64> {
        self.encoder.get(token).copied()
    }

    /// The token of `id`, if in the vocabulary.
    pub fn id_to_token(&self, id: i64) -> Option<&str> {
        self.decoder.get(&id).map(String::as_str)
    }

    /// `tokenizer.decode(ids)`.
    pub fn decode(&self, ids: &[i64]) -> Result<String> {
        Ok(self.decode_with(ids, &CtcDecodeOptions::default())?.text)
    }

    /// `tokenizer.batch_decode(rows)`.
    pub fn batch_decode(&self, rows: &[Vec<i64>]) -> Result<Vec<String>> {
        rows.iter().map(|r| self.decode(r)).collect()
    }

    /// `tokenizer.batch_decode(rows, **options)`.
    pub fn batch_decode_with(
        &self,
        rows: &[Vec<i64>],
        options: &CtcDecodeOptions,
    ) -> Result<Vec<CtcDecoded>> {
        rows.iter().map(|r| self.decode_with(r, options)).collect()
    }

    /// Greedy CTC decoding of `logits` `[B, frames, vocab]`: argmax per frame, then `batch_decode`
    /// (what `processor.batch_decode(logits.argmax(-1))` does).
    pub fn decode_logits(&self, logits: &Tensor) -> Result<Vec<String>> {
        let (_, _, v) = logits.dims3().map_err(|_| {
            Error::input(format!(
                "CTC logits must be [batch, frames, vocab], got {:?}",
                logits.dims()
            ))
        })?;
        if v == 0 {
            return Err(Error::input("CTC logits have an empty vocabulary axis"));
        }
        let ids = logits.argmax(D::Minus1)?.to_vec2::<u32>()?;
        let rows: Vec<Vec<i64>> = ids
            .into_iter()
            .map(|r| r.into_iter().map(i64::from).collect())
            .collect();
        self.batch_decode(&rows)
    }

    /// `convert_ids_to_tokens`: unknown ids become the unk token.
    fn id_token(&self, id: i64) -> Result<&str> {
        match self.decoder.get(&id) {
            Some(t) => Ok(t),
            None => self.unk_token.as_deref().ok_or_else(|| Error::Tokenizer {
                path: self.source.clone(),
                reason: format!("token id {id} is not in the vocabulary and there is no unk_token"),
            }),
        }
    }

    /// `tokenizer.decode(ids, **options)` (`_decode` + `convert_tokens_to_string`).
    pub fn decode_with(&self, ids: &[i64], options: &CtcDecodeOptions) -> Result<CtcDecoded> {
        let mut tokens: Vec<&str> = Vec::with_capacity(ids.len());
        for &id in ids {
            if options.skip_special_tokens && self.skip_ids.contains(&id) {
                continue;
            }
            tokens.push(self.id_token(id)?);
        }
        let want_offsets = options.output_char_offsets || options.output_word_offsets;
        if tokens.is_empty() {
            return Ok(CtcDecoded {
                text: String::new(),
                char_offsets: want_offsets.then(Vec::new),
                word_offsets: want_offsets.then(Vec::new),
            });
        }
        // Group repeats (CTC collapsing), remembering how many frames each group spans.
        let mut groups: Vec<(&str, usize)> = Vec::new();
        for token in tokens {
            match groups.last_mut() {
                Some((last, count)) if options.group_tokens && *last == token => *count += 1,
                _ => groups.push((token, 1)),
            }
        }
        let blank = self.pad_token.as_deref();
        let delimiter = self.word_delimiter_token.as_deref();
        let mut chars: Vec<CharOffset> = Vec::with_capacity(groups.len());
        let mut start = 0;
        for (token, count) in groups {
            let end = start + count;
            if Some(token) != blank {
                let c = if Some(token) == delimiter {
                    self.replace_word_delimiter_char.clone()
                } else {
                    token.to_string()
                };
                chars.push(CharOffset {
                    char: c,
                    start_offset: start,
                    end_offset: end,
                });
            }
            start = end;
        }
        let join = if options.spaces_between_special_tokens {
            " "
        } else {
            ""
        };
        let joined = chars
            .iter()
            .map(|c| c.char.as_str())
            .collect::<Vec<_>>()
            .join(join);
        let mut text = py_strip(&joined).to_string();
        if self.do_lower_case {
            text = text.to_lowercase();
        }
        if options
            .clean_up_tokenization_spaces
            .unwrap_or(self.clean_up_tokenization_spaces)
        {
            text = clean_up_tokenization(&text);
        }
        let word_offsets = options
            .output_word_offsets
            .then(|| word_offsets(&chars, &self.replace_word_delimiter_char));
        Ok(CtcDecoded {
            text,
            char_offsets: options.output_char_offsets.then_some(chars),
            word_offsets,
        })
    }
}

/// `_get_word_offsets`: words are runs of non-delimiter characters.
fn word_offsets(chars: &[CharOffset], delimiter: &str) -> Vec<WordOffset> {
    let mut out = Vec::new();
    let mut last_is_space = true;
    let mut word = String::new();
    let (mut start, mut end) = (0, 0);
    for c in chars {
        let is_space = c.char == delimiter;
        if is_space == last_is_space {
            end = c.end_offset;
            word.push_str(&c.char);
        } else if is_space {
            out.push(WordOffset {
                word: word.clone(),
                start_offset: start,
                end_offset: end,
            });
        } else {
            start = c.start_offset;
            end = c.end_offset;
            word = c.char.clone();
        }
        last_is_space = is_space;
    }
    if !last_is_space {
        out.push(WordOffset {
            word,
            start_offset: start,
            end_offset: end,
        });
    }
    out
}

/// Python's `str.strip()`: Unicode whitespace plus the ASCII separators `\x1c`–`\x1f`.
fn py_strip(s: &str) -> &str {
    s.trim_matches(|c: char| c.is_whitespace() || ('\x1c'..='\x1f').contains(&c))
}

/// `PreTrainedTokenizerBase.clean_up_tokenization`.
fn clean_up_tokenization(s: &str) -> String {
    s.replace(" .", ".")
        .replace(" ?", "?")
        .replace(" !", "!")
        .replace(" ,", ",")
        .replace(" ' ", "'")
        .replace(" n't", "n't")
        .replace(" 'm", "'m")
        .replace(" 's", "'s")
        .replace(" 've", "'ve")
        .replace(" 're", "'re")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokenizer() -> Result<Wav2Vec2CtcTokenizer> {
        let vocab: Map<String, Value> = serde_json::from_str(
            r#"{"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, "|": 4, "A": 5, "B": 6}"#,
        )
        .map_err(|e| Error::input(e.to_string()))?;
        Wav2Vec2CtcTokenizer::from_json(&vocab, &Map::new())
    }

    #[test]
    fn groups_drops_blanks_and_splits_words() -> Result<()> {
        let t = tokenizer()?;
        assert_eq!(t.decode(&[5, 5, 0, 5, 4, 4, 6, 0])?, "AA B");
        assert_eq!(t.pad_token_id(), Some(0));
        assert_eq!(t.vocab_size(), 7);
        Ok(())
    }

    #[test]
    fn malformed_vocab_names_the_problem() -> Result<()> {
        let vocab: Map<String, Value> =
            serde_json::from_str(r#"{"a": "x"}"#).map_err(|e| Error::input(e.to_string()))?;
        let err = Wav2Vec2CtcTokenizer::from_json(&vocab, &Map::new()).err();
        assert!(err.is_some_and(|e| e.to_string().contains("vocab.json")));
        Ok(())
    }
}
