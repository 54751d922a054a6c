//! PyTorch checkpoints (`pytorch_model.bin`, zip and legacy, sharded, fp16, views, big-endian),
//! every storage dtype, and hostile pickles that must be refused without executing anything.
//! Fixtures: `fixtures/weights/` (see `generate_weights.py` there).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use autoclass::candle_core::{DType, Device, Tensor};
use autoclass::weights::TorchStore;
use autoclass::{LoadOptions, Model, Task};
use common::{assert_close, expected, fixtures};
use serde_json::Value;

fn weights() -> PathBuf {
    fixtures().join("weights")
}

/// Loads `weights/torch/<case>` as a sequence classifier and compares its logits.
fn check_case(case: &str) {
    let start = Instant::now();
    let dir = weights().join("torch").join(case);
    let reference = if dir.join("expected.safetensors").exists() {
        dir.join("expected.safetensors")
    } else {
        fixtures()
            .join("bert_sequence_classification")
            .join("expected.safetensors")
    };
    let expected = expected(reference);
    let model = Model::from_pretrained(
        dir.to_str().unwrap(),
        Task::SequenceClassification,
        &LoadOptions::default(),
    )
    .unwrap_or_else(|e| panic!("{case}: {e}"));
    let mut batch = autoclass::Batch::new();
    for key in ["input_ids", "attention_mask", "token_type_ids"] {
        batch.insert(key, expected[key].clone());
    }
    let out = model.forward(&batch).unwrap();
    assert_close(
        case,
        out.require("logits").unwrap(),
        &expected["logits"],
        1e-4,
    );
    assert!(
        start.elapsed() < Duration::from_secs(60),
        "{case} took {:?}",
        start.elapsed()
    );
}

#[test]
fn zip_checkpoint() {
    check_case("zip");
}

#[test]
fn legacy_checkpoint() {
    check_case("legacy");
}

#[test]
fn sharded_checkpoint() {
    check_case("sharded");
}

#[test]
fn fp16_checkpoint() {
    check_case("fp16");
}

#[test]
fn views_checkpoint() {
    check_case("views");
}

#[test]
fn big_endian_checkpoint() {
    check_case("big_endian");
}

/// The values of `t` as f64 (exact for every dtype but the extreme int64s, checked separately).
fn as_f64(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap()
}

#[test]
fn every_storage_dtype() {
    let dir = weights().join("torch").join("bool_int");
    let spec: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("extra.json")).unwrap()).unwrap();
    let store = TorchStore::open(&dir.join("extra.bin")).unwrap();
    let tensors = spec["tensors"].as_object().unwrap();
    assert_eq!(store.names().count(), tensors.len());
    for (name, want) in tensors {
        let dtype = want["dtype"].as_str().unwrap();
        let shape: Vec<usize> = want["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap() as usize)
            .collect();
        let info = store.info(name).unwrap_or_else(|| panic!("{name} missing"));
        assert_eq!(info.shape, shape, "{name}");
        let st = format!("{:?}", info.dtype).to_lowercase();
        let expected_st = match dtype {
            "float32" => "f32",
            "float64" => "f64",
            "float16" => "f16",
            "bfloat16" => "bf16",
            "int64" => "i64",
            "int32" => "i32",
            "int16" => "i16",
            "int8" => "i8",
            "uint8" => "u8",
            "bool" => "bool",
            other => panic!("{other}"),
        };
        assert_eq!(st, expected_st, "{name}");
        let native = store.native_dtype(name).unwrap();
        let t = store.load(name, native, &Device::Cpu).unwrap();
        assert_eq!(t.dims(), shape.as_slice(), "{name}");
        let values = want["values"].as_array().unwrap();
        match dtype {
            "int64" => {
                let got = t.flatten_all().unwrap().to_vec1::<i64>().unwrap();
                let want: Vec<i64> = values.iter().map(|v| v.as_i64().unwrap()).collect();
                assert_eq!(got, want, "{name}");
            }
            "bool" => {
                let got = t.flatten_all().unwrap().to_vec1::<u8>().unwrap();
                let want: Vec<u8> = values
                    .iter()
                    .map(|v| u8::from(v.as_bool().unwrap()))
                    .collect();
                assert_eq!(got, want, "{name}");
            }
            _ => {
                let got = as_f64(&t);
                let want: Vec<f64> = values.iter().map(|v| v.as_f64().unwrap()).collect();
                assert_eq!(got.len(), want.len(), "{name}");
                for (g, w) in got.iter().zip(&want) {
                    // serde_json's float parsing is not always correctly rounded (off by an
                    // ulp), so allow 4 ulps of the f64 value; stored values are exact.
                    assert!(
                        g == w || (g - w).abs() <= 4.0 * f64::EPSILON * w.abs(),
                        "{name}: {got:?} != {want:?}"
                    );
                    assert_eq!(g.is_sign_negative(), w.is_sign_negative(), "{name}: sign");
                }
            }
        }
        // Every dtype also converts to f32 for the model.
        store.load(name, DType::F32, &Device::Cpu).unwrap();
    }
}

fn canaries() -> Vec<PathBuf> {
    std::fs::read_dir("/tmp")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("autoclass_canary_"))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Loads a hostile fixture the way a user would: a folder through `Model::from_pretrained`, a
/// file through the PyTorch reader.
fn load_hostile(path: &Path) -> autoclass::Result<()> {
    if path.is_dir() {
        Model::from_pretrained(
            path.to_str().unwrap(),
            Task::SequenceClassification,
            &LoadOptions::default(),
        )
        .map(|_| ())
    } else {
        TorchStore::open(path).map(|_| ())
    }
}

#[test]
fn hostile_pickles_are_refused() {
    let dir = weights().join("hostile_pickles");
    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap();
    let before = canaries();
    let entries = manifest["cases"].as_array().unwrap();
    assert!(!entries.is_empty());
    for entry in entries {
        let file = entry["file"].as_str().unwrap();
        let start = Instant::now();
        let result = std::panic::catch_unwind(|| load_hostile(&dir.join(file)));
        let elapsed = start.elapsed();
        let result = result.unwrap_or_else(|_| panic!("{file}: panicked"));
        assert!(
            elapsed < Duration::from_secs(10),
            "{file}: took {elapsed:?}"
        );
        if entry["must_refuse"].as_bool() == Some(false) {
            continue;
        }
        let err = match result {
            Ok(()) => panic!("{file}: was accepted ({})", entry["note"]),
            Err(e) => e.to_string(),
        };
        let mut phrases = vec![entry["refusal"].as_str().unwrap().to_lowercase()];
        if let Some(also) = entry["also_accept"].as_array() {
            phrases.extend(also.iter().map(|p| p.as_str().unwrap().to_lowercase()));
        }
        let lower = err.to_lowercase();
        assert!(
            phrases.iter().any(|p| lower.contains(p)),
            "{file}: error does not mention {phrases:?}: {err}"
        );
        if let Some(canary) = entry["canary"].as_str() {
            assert!(!Path::new(canary).exists(), "{file}: {canary} appeared");
        }
    }
    let after = canaries();
    assert!(
        after.iter().all(|p| before.contains(p)),
        "canary files appeared: {after:?}"
    );
}
