//! BERT-family tokenizers rebuilt from a WordPiece vocabulary, as transformers'
//! `BertTokenizer.__init__` (and 4.x's `convert_slow_tokenizer.BertConverter`) builds them:
//! the vocabulary comes from tokenizer.json when present, else vocab.txt; the normalizer is
//! always rebuilt from `do_lower_case`, `strip_accents` and `tokenize_chinese_chars`.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{json, Map, Value};

use super::token_content;
use crate::error::{Error, Result};
use crate::hub::Checkpoint;

/// Reads the vocabulary: tokenizer.json's WordPiece `model.vocab`, else vocab.txt (one token per
/// line, trailing whitespace stripped, later duplicates winning, as the `tokenizers` crate reads it).
fn read_vocab(
    tokenizer_json: Option<&Path>,
    vocab_txt: Option<&Path>,
    checkpoint: &Checkpoint,
) -> Result<Map<String, Value>> {
    if let Some(path) = tokenizer_json {
        let raw = crate::config::read_json_object(path)?;
        let model = raw.get("model").and_then(Value::as_object);
        let is_wordpiece =
            model.and_then(|m| m.get("type")).and_then(Value::as_str) == Some("WordPiece");
        if let (true, Some(Value::Object(vocab))) =
            (is_wordpiece, model.and_then(|m| m.get("vocab")))
        {
            if vocab
                .values()
                .all(|v| v.as_u64().is_some_and(|id| id <= u64::from(u32::MAX)))
            {
                return Ok(vocab.clone());
            }
            return Err(Error::Tokenizer {
                path: Some(path.to_path_buf()),
                reason: "model.vocab has an id that is not a 32-bit unsigned integer".into(),
            });
        }
        if vocab_txt.is_none() {
            return Err(Error::Tokenizer {
                path: Some(path.to_path_buf()),
                reason: "a BERT-family tokenizer needs a WordPiece model in tokenizer.json or a vocab.txt".into(),
            });
        }
    }
    let path = vocab_txt.ok_or_else(|| Error::MissingFile {
        name: checkpoint.name().to_string(),
        filename: "vocab.txt".to_string(),
        revision: checkpoint.revision().to_string(),
    })?;
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if meta.len() > crate::util::MAX_TEXT_FILE {
        return Err(Error::Tokenizer {
            path: Some(path.to_path_buf()),
            reason: "vocab.txt is too large".into(),
        });
    }
    let path_str = path.to_str().ok_or_else(|| Error::Tokenizer {
        path: Some(path.to_path_buf()),
        reason: "the path is not valid UTF-8".into(),
    })?;
    let vocab = tokenizers::models::wordpiece::WordPiece::read_file(path_str).map_err(|e| {
        Error::Tokenizer {
            path: Some(path.to_path_buf()),
            reason: e.to_string(),
        }
    })?;
    Ok(vocab
        .into_iter()
        .map(|(k, v)| (k, Value::from(v)))
        .collect())
}

fn bool_or(init: &Map<String, Value>, key: &str, default: bool) -> bool {
    init.get(key).and_then(Value::as_bool).unwrap_or(default)
}

/// Builds the `tokenizers` pipeline of a BERT-family tokenizer.
pub(super) fn build(
    init: &Map<String, Value>,
    tokenizer_json: Option<&Path>,
    vocab_txt: Option<&Path>,
    checkpoint: &Checkpoint,
) -> Result<tokenizers::Tokenizer> {
    let vocab = read_vocab(tokenizer_json, vocab_txt, checkpoint)?;
    let special = |key: &str, default: &str| {
        init.get(key)
            .and_then(token_content)
            .unwrap_or_else(|| default.to_string())
    };
    let unk = special("unk_token", "[UNK]");
    let sep = special("sep_token", "[SEP]");
    let pad = special("pad_token", "[PAD]");
    let cls = special("cls_token", "[CLS]");
    let mask = special("mask_token", "[MASK]");

    let mut next_id = vocab
        .values()
        .filter_map(Value::as_u64)
        .max()
        .map_or(0, |m| m + 1);
    // Added tokens: tokenizer_config's added_tokens_decoder, then the named special tokens.
    let mut added: BTreeMap<u64, Value> = BTreeMap::new();
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
    let mut ids = BTreeMap::new();
    for token in [&unk, &sep, &pad, &cls, &mask] {
        let existing = added
            .iter()
            .find(|(_, v)| v.get("content").and_then(Value::as_str) == Some(token.as_str()))
            .map(|(id, _)| *id);
        let id = match existing.or_else(|| vocab.get(token.as_str()).and_then(Value::as_u64)) {
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
    let cls_id = ids.get(&cls).copied().unwrap_or(0);
    let sep_id = ids.get(&sep).copied().unwrap_or(0);

    let lowercase = bool_or(init, "do_lower_case", true);
    let strip_accents = init.get("strip_accents").and_then(Value::as_bool);
    let doc = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added.into_values().collect::<Vec<_>>(),
        "normalizer": {
            "type": "BertNormalizer",
            "clean_text": true,
            "handle_chinese_chars": bool_or(init, "tokenize_chinese_chars", true),
            "strip_accents": strip_accents,
            "lowercase": lowercase,
        },
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [
                {"SpecialToken": {"id": cls, "type_id": 0}},
                {"Sequence": {"id": "A", "type_id": 0}},
                {"SpecialToken": {"id": sep, "type_id": 0}},
            ],
            "pair": [
                {"SpecialToken": {"id": cls, "type_id": 0}},
                {"Sequence": {"id": "A", "type_id": 0}},
                {"SpecialToken": {"id": sep, "type_id": 0}},
                {"Sequence": {"id": "B", "type_id": 1}},
                {"SpecialToken": {"id": sep, "type_id": 1}},
            ],
            "special_tokens": {
                cls.clone(): {"id": cls, "ids": [cls_id], "tokens": [cls]},
                sep.clone(): {"id": sep, "ids": [sep_id], "tokens": [sep]},
            },
        },
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": true},
        "model": {
            "type": "WordPiece",
            "unk_token": unk,
            "continuing_subword_prefix": "##",
            "max_input_chars_per_word": 100,
            "vocab": vocab,
        },
    });
    let _ = pad;
    // Guarded: parts of the document come from the user's files, and tokenizers' deserializers
    // can panic on malformed values (found by fuzzing).
    super::guarded(|| serde_json::from_value::<tokenizers::Tokenizer>(doc).map_err(Into::into))
        .map_err(|e| Error::Tokenizer {
            path: tokenizer_json.or(vocab_txt).map(Path::to_path_buf),
            reason: match e {
                Error::Tokenizer { reason, .. } => reason,
                other => other.to_string(),
            },
        })
}
