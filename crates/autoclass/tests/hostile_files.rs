//! Hostile and malformed files (`tests/fixtures/weights/`: safetensors, configs, tokenizers, Flax
//! msgpack, Keras HDF5): every one gives its error, or at
//! least finishes quickly, and none panics. (Hostile pickles are in torch_weights.rs.)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use autoclass::weights::SafetensorsStore;
use autoclass::{AutoTokenizer, EncodeOptions, LoadOptions, Model, Task};
use common::*;
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(5);

fn weights_dir() -> PathBuf {
    fixtures().join("weights")
}

fn manifest(folder: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(weights_dir().join(folder).join("manifest.json")).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    v["cases"].as_array().unwrap().clone()
}

#[test]
fn malformed_safetensors_are_refused() {
    let cases = manifest("bad_safetensors");
    assert!(cases.len() >= 50, "{} cases", cases.len());
    for case in cases {
        let file = case["file"].as_str().unwrap();
        let path = weights_dir().join("bad_safetensors").join(file);
        let start = Instant::now();
        let result = SafetensorsStore::open(&path).and_then(|store| {
            // Opening may succeed for files whose damage is in the data: read every tensor.
            let names: Vec<String> = store.names().map(str::to_string).collect();
            for n in names {
                store.load(
                    &n,
                    autoclass::candle_core::DType::F32,
                    &autoclass::candle_core::Device::Cpu,
                )?;
            }
            Ok(())
        });
        assert!(
            start.elapsed() < LIMIT,
            "{file}: took {:?}",
            start.elapsed()
        );
        let err = result.err().unwrap_or_else(|| panic!("{file}: accepted"));
        let msg = err.to_string();
        assert!(
            msg.contains(file),
            "{file}: the error does not name the file: {msg}"
        );
        if let Some(phrase) = case["refusal"].as_str() {
            assert!(
                msg.to_lowercase().contains(&phrase.to_lowercase()),
                "{file}: {msg:?} lacks {phrase:?}"
            );
        }
    }
}

/// A scratch checkpoint: the tiny BERT weights and tokenizer with `config` as config.json.
fn with_config(config: &Path, tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("autoclass-badcfg-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for f in [
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ] {
        std::fs::copy(fixtures().join("bert_base").join(f), dir.join(f)).unwrap();
    }
    std::fs::copy(config, dir.join("config.json")).unwrap();
    dir
}

/// A scratch folder holding only `tokenizer` as tokenizer.json.
fn with_tokenizer(tokenizer: &Path, tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("autoclass-badtok-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(tokenizer, dir.join("tokenizer.json")).unwrap();
    dir
}

#[test]
fn malformed_configs_and_tokenizers_fail_cleanly() {
    let cases = manifest("bad_configs");
    assert!(cases.len() >= 20, "{} cases", cases.len());
    for (i, case) in cases.iter().enumerate() {
        let file = case["file"].as_str().unwrap();
        let path = weights_dir().join("bad_configs").join(file);
        let start = Instant::now();
        let (result, dir): (Result<(), String>, PathBuf) = match case["kind"].as_str().unwrap() {
            "config" => {
                let dir = with_config(&path, &i.to_string());
                let r = Model::from_pretrained(
                    dir.to_str().unwrap(),
                    Task::Base,
                    &LoadOptions::default(),
                )
                .map(|_| ())
                .map_err(|e| e.to_string());
                (r, dir)
            }
            _ => {
                let dir = with_tokenizer(&path, &i.to_string());
                let r = AutoTokenizer::from_pretrained(dir.to_str().unwrap()).and_then(|t| {
                    let input = case["input"].as_str().unwrap_or("hello world");
                    t.encode(input, &EncodeOptions::default()).map(|_| ())
                });
                (r.map_err(|e| e.to_string()), dir)
            }
        };
        assert!(
            start.elapsed() < LIMIT,
            "{file}: took {:?}",
            start.elapsed()
        );
        if case["expect"].as_str() == Some("error") {
            let msg = result.err().unwrap_or_else(|| panic!("{file}: accepted"));
            assert!(!msg.is_empty(), "{file}");
        }
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// Runs `open` on every file of a TF/Flax corpus: valid variants must give exactly the listed
/// tensors, every other file an error naming the file and containing its `refusal` phrase.
fn check_corpus(
    folder: &str,
    min_bad: usize,
    open: fn(&Path) -> autoclass::Result<autoclass::weights::MemoryStore>,
) {
    let cases = manifest(folder);
    let bad = cases.iter().filter(|c| c["accept"] != true).count();
    assert!(bad >= min_bad, "{folder}: {bad} malformed files");
    let mut failures = Vec::new();
    for case in cases {
        let file = case["file"].as_str().unwrap();
        let path = weights_dir().join(folder).join(file);
        let start = Instant::now();
        let result = open(&path);
        assert!(
            start.elapsed() < LIMIT,
            "{file}: took {:?}",
            start.elapsed()
        );
        if case["accept"] == true {
            let store = result.unwrap_or_else(|e| panic!("{file}: {e}"));
            let expect = case["expect"].as_object().unwrap();
            let mut want: Vec<&str> = expect.keys().map(String::as_str).collect();
            want.sort();
            assert_eq!(store.names().collect::<Vec<_>>(), want, "{file}");
            for (name, want) in expect {
                let t = store
                    .load(
                        name,
                        autoclass::candle_core::DType::F32,
                        &autoclass::candle_core::Device::Cpu,
                    )
                    .unwrap();
                let shape: Vec<usize> = want["shape"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|d| d.as_u64().unwrap() as usize)
                    .collect();
                assert_eq!(t.dims(), shape.as_slice(), "{file} {name}");
                let values: Vec<f32> = want["values"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_f64().unwrap() as f32)
                    .collect();
                assert_eq!(
                    t.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                    values,
                    "{file} {name}"
                );
            }
            continue;
        }
        let Some(err) = result.err() else {
            failures.push(format!("{file}: accepted"));
            continue;
        };
        let msg = err.to_string();
        let phrase = case["refusal"].as_str().unwrap();
        if !msg.contains(file) || !msg.to_lowercase().contains(&phrase.to_lowercase()) {
            failures.push(format!("{file}: {msg:?} lacks the file name or {phrase:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn malformed_flax_msgpack_files_are_refused() {
    check_corpus("bad_msgpack", 20, autoclass::weights::flax::open);
}

#[test]
fn malformed_keras_hdf5_files_are_refused() {
    check_corpus("bad_hdf5", 25, autoclass::weights::tf::open);
}
