//! AutoTokenizer against transformers on bert-base-uncased's real vocabulary, and on the
//! tiny fixtures.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use autoclass::{AutoTokenizer, EncodeOptions, Padding, Truncation};
use common::*;
use serde_json::Value;

fn bert_base_uncased() -> String {
    repo_root()
        .join("checkpoints")
        .join("bert-base-uncased")
        .to_str()
        .unwrap()
        .to_string()
}

fn rows_i64(v: &Value) -> Vec<Vec<i64>> {
    let arr = v.as_array().unwrap();
    if arr.first().is_some_and(Value::is_array) {
        arr.iter()
            .map(|r| {
                r.as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_i64().unwrap())
                    .collect()
            })
            .collect()
    } else {
        vec![arr.iter().map(|x| x.as_i64().unwrap()).collect()]
    }
}

#[test]
fn hobbit_sentence_gives_the_seed_ids() {
    let tokenizer = AutoTokenizer::from_pretrained(&bert_base_uncased()).unwrap();
    let enc = tokenizer
        .encode(
            "In a hole in the ground there lived a hobbit.",
            &EncodeOptions::default(),
        )
        .unwrap();
    assert_eq!(
        enc.input_ids[0],
        [101, 1999, 1037, 4920, 1999, 1996, 2598, 2045, 2973, 1037, 7570, 10322, 4183, 1012, 102]
    );
    assert_eq!(enc.token_type_ids.as_ref().unwrap()[0], vec![0; 15]);
    assert_eq!(enc.attention_mask.as_ref().unwrap()[0], vec![1; 15]);
    // Printed flat, like Python's `print(tokenizer(sequence))`.
    let json = enc.to_json();
    assert_eq!(json["input_ids"][0], 101);
    assert_eq!(tokenizer.class_name(), "BertTokenizer");
    assert_eq!(tokenizer.model_max_length(), Some(512));
}

/// Every case transformers produced on the real vocabulary: ids, type ids, mask, offsets and
/// decoding, for single texts, batches, pairs, every truncation strategy, unicode edge cases.
#[test]
fn real_vocab_cases_match_transformers() {
    let path = fixtures().join("tokenizer_bert_base_uncased.json");
    let cases: Vec<Value> = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let tokenizer = AutoTokenizer::from_pretrained(&bert_base_uncased()).unwrap();
    assert!(cases.len() >= 15);
    for case in &cases {
        let note = case["note"].as_str().unwrap_or("?");
        let args = &case["args"];
        let options = encode_options(args);
        let texts: Vec<String> = match &args["text"] {
            Value::String(s) => vec![s.clone()],
            other => strings(other),
        };
        let pairs: Vec<String> = match &args["text_pair"] {
            Value::String(s) => vec![s.clone()],
            Value::Null => vec![],
            other => strings(other),
        };
        let t: Vec<&str> = texts.iter().map(String::as_str).collect();
        let p: Vec<&str> = pairs.iter().map(String::as_str).collect();
        let enc = tokenizer
            .encode_batch(&t, (!p.is_empty()).then_some(&p[..]), &options)
            .unwrap();
        let exp = &case["expected"];
        assert_eq!(
            enc.input_ids,
            rows_i64(&exp["input_ids"]),
            "{note}: input_ids"
        );
        assert_eq!(
            enc.token_type_ids.clone().unwrap(),
            rows_i64(&exp["token_type_ids"]),
            "{note}: token_type_ids"
        );
        assert_eq!(
            enc.attention_mask.clone().unwrap(),
            rows_i64(&exp["attention_mask"]),
            "{note}: attention_mask"
        );
        if let Some(offsets) = exp.get("offset_mapping") {
            let arr = offsets.as_array().unwrap();
            let nested = arr
                .first()
                .and_then(|r| r.get(0))
                .is_some_and(Value::is_array);
            let rows: Vec<Vec<(usize, usize)>> = if nested {
                arr.iter()
                    .map(|r| {
                        r.as_array()
                            .unwrap()
                            .iter()
                            .map(|p| {
                                (
                                    p[0].as_u64().unwrap() as usize,
                                    p[1].as_u64().unwrap() as usize,
                                )
                            })
                            .collect()
                    })
                    .collect()
            } else {
                vec![arr
                    .iter()
                    .map(|p| {
                        (
                            p[0].as_u64().unwrap() as usize,
                            p[1].as_u64().unwrap() as usize,
                        )
                    })
                    .collect()]
            };
            assert_eq!(enc.offset_mapping.clone().unwrap(), rows, "{note}: offsets");
        }
        if let Some(d) = case["decode"].as_str() {
            assert_eq!(
                tokenizer.decode(&enc.input_ids[0], false).unwrap(),
                d,
                "{note}: decode"
            );
        }
        if let Some(d) = case["decode_skip_special"].as_str() {
            assert_eq!(
                tokenizer.decode(&enc.input_ids[0], true).unwrap(),
                d,
                "{note}: decode skip"
            );
        }
    }
}

#[test]
fn batch_decode_and_padding_strategies() {
    let tokenizer = AutoTokenizer::from_pretrained(&bert_base_uncased()).unwrap();
    let options = EncodeOptions {
        padding: Padding::MaxLength,
        max_length: Some(8),
        truncation: Some(Truncation::LongestFirst),
        ..Default::default()
    };
    let enc = tokenizer
        .encode_batch(&["hello world", "a hobbit"], None, &options)
        .unwrap();
    assert!(enc.input_ids.iter().all(|r| r.len() == 8));
    let decoded = tokenizer.batch_decode(&enc.input_ids, true).unwrap();
    assert_eq!(decoded, ["hello world", "a hobbit"]);
}

/// The tiny DistilBERT checkpoint's tokenizer names DistilBertTokenizer: no token_type_ids.
#[test]
fn distilbert_tokenizer_has_no_token_type_ids() {
    let dir = fixtures().join("distilbert_base");
    let tokenizer = AutoTokenizer::from_pretrained(dir.to_str().unwrap()).unwrap();
    let enc = tokenizer
        .encode("Hello world!", &EncodeOptions::default())
        .unwrap();
    assert!(enc.token_type_ids.is_none());
    assert!(enc.to_json().get("token_type_ids").is_none());
}

/// Each token knows which sequence of a pair it came from (transformers' `sequence_ids()`).
#[test]
fn pair_sequence_ids() {
    let tokenizer = AutoTokenizer::from_pretrained(&bert_base_uncased()).unwrap();
    let enc = tokenizer
        .encode_pair("where is it", "in a hole", &EncodeOptions::default())
        .unwrap();
    let (n, z, o) = (None, Some(0), Some(1));
    assert_eq!(enc.sequence_ids[0], vec![n, z, z, z, n, o, o, o, n]);
}
