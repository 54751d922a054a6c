//! The CLI contract: `tokenize`, `run`, `inspect`, `--save`; bad input gives one clear error line
//! and a non-zero exit, never a panic.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;

use std::path::PathBuf;

use autoclass::candle_core::{DType, Device};

/// A scratch copy of a fixture folder.
fn scratch(from: &str, tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("autoclass-cli-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for entry in std::fs::read_dir(fixture(from)).unwrap() {
        let p = entry.unwrap().path();
        std::fs::copy(&p, dir.join(p.file_name().unwrap())).unwrap();
    }
    dir
}

#[test]
fn tokenize_prints_the_seed_encoding() {
    let dir = repo().join("checkpoints/bert-base-uncased");
    let out = autoclass(&[
        "tokenize",
        s(&dir),
        "--text",
        "In a hole in the ground there lived a hobbit.",
    ]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(
        v["input_ids"],
        serde_json::json!([
            101, 1999, 1037, 4920, 1999, 1996, 2598, 2045, 2973, 1037, 7570, 10322, 4183, 1012, 102
        ])
    );
    assert_eq!(v["token_type_ids"], serde_json::json!(vec![0; 15]));
    assert_eq!(v["attention_mask"], serde_json::json!(vec![1; 15]));
    let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["input_ids", "token_type_ids", "attention_mask"]);
}

#[test]
fn tokenize_batches_are_nested() {
    // transformers' output for a padded batch on the real vocabulary (from the fixture generator).
    let cases: Vec<serde_json::Value> = serde_json::from_str(
        &std::fs::read_to_string(fixture("tokenizer_bert_base_uncased.json")).unwrap(),
    )
    .unwrap();
    let case = cases
        .iter()
        .find(|c| {
            c["args"]["text"].is_array()
                && c["args"]["padding"] == "longest"
                && c["args"]["text_pair"].is_null()
        })
        .unwrap();
    let dir = repo().join("checkpoints/bert-base-uncased");
    let mut args = vec!["tokenize", s(&dir), "--padding", "longest"];
    for t in case["args"]["text"].as_array().unwrap() {
        args.extend(["--text", t.as_str().unwrap()]);
    }
    let out = autoclass(&args);
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert!(v["input_ids"][0].is_array(), "nested lists for a batch");
    for key in ["input_ids", "token_type_ids", "attention_mask"] {
        assert_eq!(v[key], case["expected"][key], "{key}");
    }
}

/// `run --save` writes transformers' names, ints as i64 and floats as f32, with the reference values.
#[test]
fn run_save_matches_the_reference() {
    // Plain, padding-free (same logits: only padding is skipped), with huge pages (only the
    // memory's page size changes) and int8 (close, not equal).
    for (extra, tol) in [
        (&[][..], 1e-4f32),
        (&["--padding-free"][..], 1e-4),
        (&["--huge-pages"][..], 1e-4),
        (&["--dtype", "int8"][..], 2e-2),
    ] {
        run_save_with(extra, tol);
    }
}

fn run_save_with(extra: &[&str], tol: f32) {
    let dir = fixture("distilbert_sequence_classification");
    let case: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("case.json")).unwrap()).unwrap();
    let save = std::env::temp_dir().join(format!(
        "autoclass-cli-save-{}.safetensors",
        std::process::id()
    ));
    let mut args = vec![
        "run",
        s(&dir),
        "--task",
        "sequence-classification",
        "--json",
        "--save",
        s(&save),
    ];
    let flags = text_flags(&case);
    args.extend(flags.iter().map(String::as_str));
    args.extend(["--padding", "longest"]);
    args.extend(extra);
    let out = autoclass(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(report["model"], "DistilBertForSequenceClassification");
    assert_eq!(
        report["results"].as_array().unwrap().len(),
        case["texts"].as_array().unwrap().len()
    );

    let saved = autoclass::candle_core::safetensors::load(&save, &Device::Cpu).unwrap();
    let expected =
        autoclass::candle_core::safetensors::load(dir.join("expected.safetensors"), &Device::Cpu)
            .unwrap();
    assert_eq!(saved["input_ids"].dtype(), DType::I64);
    assert_eq!(saved["logits"].dtype(), DType::F32);
    let ids =
        |t: &autoclass::candle_core::Tensor| t.flatten_all().unwrap().to_vec1::<i64>().unwrap();
    assert_eq!(ids(&saved["input_ids"]), ids(&expected["input_ids"]));
    let a = saved["logits"]
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let e = expected["logits"]
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert_eq!(a.len(), e.len());
    let scale = e.iter().fold(0f32, |m, v| m.max(v.abs())).max(1.0);
    assert!(
        a.iter().zip(&e).all(|(x, y)| (x - y).abs() < tol * scale),
        "{extra:?}: {a:?} vs {e:?}"
    );
    let _ = std::fs::remove_file(save);
}

#[test]
fn inspect_lists_files_and_tasks() {
    let out = autoclass(&["inspect", s(&fixture("bert_sharded")), "--json"]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["model_type"], "bert");
    assert_eq!(v["config_class"], "BertConfig");
    assert_eq!(
        v["architectures"],
        serde_json::json!(["BertForTokenClassification"])
    );
    let files: Vec<&str> = v["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert!(files.contains(&"model.safetensors.index.json"), "{files:?}");
    assert_eq!(v["tasks"].as_array().unwrap().len(), 5);
}

#[test]
fn folder_without_config() {
    let dir = scratch("bert_base", "noconfig");
    std::fs::remove_file(dir.join("config.json")).unwrap();
    fails_with(
        &["run", s(&dir), "--task", "base", "--text", "hi"],
        "does not appear to have a file named config.json",
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn unknown_model_type() {
    let dir = scratch("bert_base", "unknowntype");
    let cfg = std::fs::read_to_string(dir.join("config.json"))
        .unwrap()
        .replace("\"bert\"", "\"frobnicator\"");
    std::fs::write(dir.join("config.json"), cfg).unwrap();
    let line = fails_with(
        &["run", s(&dir), "--task", "base", "--text", "hi"],
        "frobnicator",
    );
    assert!(
        line.contains("bert") && line.contains("distilbert"),
        "known types listed: {line}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn truncated_and_garbage_weights() {
    let dir = scratch("bert_base", "badweights");
    let path = dir.join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    fails_with(
        &["run", s(&dir), "--task", "base", "--text", "hi"],
        "model.safetensors",
    );
    std::fs::write(
        &path,
        b"this is not a safetensors file at all, just some garbage bytes",
    )
    .unwrap();
    fails_with(
        &["run", s(&dir), "--task", "base", "--text", "hi"],
        "model.safetensors",
    );
    std::fs::write(&path, [0xffu8; 8]).unwrap();
    fails_with(
        &["run", s(&dir), "--task", "base", "--text", "hi"],
        "model.safetensors",
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn tensor_shape_mismatch() {
    let line = fails_with(
        &[
            "run",
            s(&fixture("bert_mismatch")),
            "--task",
            "base",
            "--text",
            "hi",
        ],
        "encoder.layer.0.attention.self.query.weight",
    );
    assert!(line.contains("[16, 32]"), "{line}");
}

#[test]
fn empty_text() {
    fails_with(
        &[
            "run",
            s(&fixture("bert_base")),
            "--task",
            "base",
            "--text",
            "",
        ],
        "empty",
    );
    fails_with(
        &["tokenize", s(&fixture("bert_base")), "--text", "  "],
        "empty",
    );
    fails_with(
        &["run", s(&fixture("bert_base")), "--task", "base"],
        "--text",
    );
}

/// Over model_max_length: transformers' warning from the tokenizer, then a clear model error.
#[test]
fn text_over_model_max_length() {
    let long = "hello world ".repeat(60);
    let out = autoclass(&[
        "run",
        s(&fixture("bert_base")),
        "--task",
        "base",
        "--text",
        &long,
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        err.contains(
            "Token indices sequence length is longer than the specified maximum sequence length"
        ),
        "{err}"
    );
    assert!(
        err.lines()
            .any(|l| l.starts_with("error: ") && l.contains("exceeds the model's maximum of 64")),
        "{err}"
    );
    // With truncation it runs.
    let ok = autoclass(&[
        "run",
        s(&fixture("bert_base")),
        "--task",
        "base",
        "--text",
        &long,
        "--truncation",
    ]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
}

#[test]
fn hub_id_not_cached_while_offline() {
    fails_with(
        &[
            "run",
            "google-bert/bert-base-uncased",
            "--task",
            "base",
            "--text",
            "hi",
        ],
        "We couldn't connect to 'https://huggingface.co'",
    );
    fails_with(
        &[
            "tokenize",
            "distilbert/distilbert-base-uncased",
            "--text",
            "hi",
        ],
        "couldn't find them in the cached files",
    );
}

#[test]
fn unsupported_task_and_bad_flags() {
    fails_with(
        &[
            "run",
            s(&fixture("bert_base")),
            "--task",
            "image-classification",
            "--text",
            "hi",
        ],
        "Unrecognized configuration class BertConfig for this kind of AutoModel: AutoModelForImageClassification",
    );
    fails_with(
        &[
            "run",
            s(&fixture("bert_base")),
            "--task",
            "frobnicate",
            "--text",
            "hi",
        ],
        "unknown task",
    );
    fails_with(
        &[
            "run",
            s(&fixture("bert_base")),
            "--task",
            "base",
            "--text",
            "hi",
            "--dtype",
            "f8",
        ],
        "unknown dtype",
    );
    fails_with(
        &["run", "./no/such/folder", "--task", "base", "--text", "hi"],
        "is not a local folder and is not a valid model identifier",
    );
}

/// A checkpoint with only `pytorch_model.bin`: `inspect` says which file it picked and why, and
/// `run` gives transformers' logits (the safe pickle reader never executes the file).
#[test]
fn pytorch_bin_checkpoint() {
    let dir = fixture("weights/torch/legacy");
    let out = autoclass(&["inspect", s(&dir), "--json"]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["weights"]["file"], "pytorch_model.bin");
    let save = std::env::temp_dir().join(format!(
        "autoclass-cli-bin-{}.safetensors",
        std::process::id()
    ));
    let case: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("bert_sequence_classification").join("case.json"))
            .unwrap(),
    )
    .unwrap();
    let mut args = vec![
        "run",
        s(&dir),
        "--task",
        "sequence-classification",
        "--save",
        s(&save),
    ];
    let flags = text_flags(&case);
    args.extend(flags.iter().map(String::as_str));
    let out = autoclass(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let saved = autoclass::candle_core::safetensors::load(&save, &Device::Cpu).unwrap();
    let expected = autoclass::candle_core::safetensors::load(
        fixture("bert_sequence_classification").join("expected.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    let a = saved["logits"]
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let e = expected["logits"]
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert!(
        a.iter().zip(&e).all(|(x, y)| (x - y).abs() < 1e-4),
        "{a:?} vs {e:?}"
    );
    let _ = std::fs::remove_file(save);
}
