//! The CLI's document contract: `preprocess MODEL --image DOC [--words-file W.json]` through the
//! LayoutLMv2/v3 processors (tesseract OCR), and `run --task token-classification --image DOC`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;

use std::path::{Path, PathBuf};

use autoclass::candle_core::{DType, Device, Tensor};

fn mm(rel: &str) -> PathBuf {
    repo()
        .join("crates/autoclass/tests/fixtures/multimodal")
        .join(rel)
}

fn ints(t: &Tensor) -> Vec<i64> {
    t.to_dtype(DType::I64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<i64>()
        .unwrap()
}

fn scratch(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("autoclass-cli-doc-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The seed's `AutoProcessor.from_pretrained("microsoft/layoutlmv2-base-uncased")`, run on a page
/// through tesseract: every tensor equals transformers' (with pytesseract on the same tesseract).
#[test]
fn seed_layoutlmv2_processor_with_ocr() {
    let save = scratch("seed").join("out.safetensors");
    let out = autoclass(&[
        "preprocess",
        s(&repo().join("checkpoints/layoutlmv2-base-uncased")),
        "--image",
        s(&mm("images/invoice.png")),
        "--save",
        s(&save),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("LayoutLMv2Processor"));
    let saved = autoclass::candle_core::safetensors::load(&save, &Device::Cpu).unwrap();
    let expected = autoclass::candle_core::safetensors::load(
        mm("seed_layoutlmv2/expected.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    for key in [
        "input_ids",
        "bbox",
        "token_type_ids",
        "attention_mask",
        "image",
    ] {
        assert_eq!(saved[key].dims(), expected[key].dims(), "{key}");
        assert_eq!(ints(&saved[key]), ints(&expected[key]), "{key}");
    }
}

/// A tiny LayoutLMv3 token classifier with a 32x32 LayoutLMv3 processor, in a scratch folder.
fn tiny_layoutlmv3(tag: &str, apply_ocr: bool) -> PathBuf {
    let dir = scratch(tag);
    let model = mm("layoutlmv3/models/layoutlmv3_token_classification");
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(model.join(f), dir.join(f)).unwrap();
    }
    let proc_dir = mm("layoutlmv3/processors/ocr_single");
    for f in ["vocab.json", "merges.txt", "tokenizer_config.json"] {
        std::fs::copy(proc_dir.join(f), dir.join(f)).unwrap();
    }
    let mut cfg: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(proc_dir.join("preprocessor_config.json")).unwrap(),
    )
    .unwrap();
    cfg["size"] = serde_json::json!(32);
    cfg["apply_ocr"] = serde_json::json!(apply_ocr);
    std::fs::write(dir.join("preprocessor_config.json"), cfg.to_string()).unwrap();
    dir
}

fn words_file(dir: &Path, json: serde_json::Value) -> PathBuf {
    let path = dir.join("words.json");
    std::fs::write(&path, json.to_string()).unwrap();
    path
}

#[test]
fn layoutlmv3_token_classification_prints_words() {
    // OCR'd words.
    let dir = tiny_layoutlmv3("ocr", true);
    let save = dir.join("out.safetensors");
    let out = autoclass(&[
        "run",
        s(&dir),
        "--task",
        "token-classification",
        "--image",
        s(&mm("images/hello.png")),
        "--json",
        "--save",
        s(&save),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let words: Vec<&str> = report["results"][0]["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["token"].as_str().unwrap())
        .collect();
    let ocr: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(mm("images/ocr.json")).unwrap()).unwrap();
    let text = ocr.to_string();
    assert!(!words.is_empty());
    assert!(words.iter().all(|w| text.contains(w)), "{words:?}");
    let labels = ["O", "B-HEADER", "I-HEADER", "B-ANSWER", "I-ANSWER"];
    assert!(report["results"][0]["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .all(|t| labels.contains(&t["label"].as_str().unwrap())));
    let saved = autoclass::candle_core::safetensors::load(&save, &Device::Cpu).unwrap();
    for key in [
        "input_ids",
        "bbox",
        "attention_mask",
        "pixel_values",
        "logits",
    ] {
        assert!(saved.contains_key(key), "{key}");
    }
    assert_eq!(saved["pixel_values"].dims(), &[1, 3, 32, 32]);

    // Given words and boxes.
    let dir = tiny_layoutlmv3("words", false);
    let w = words_file(
        &dir,
        serde_json::json!({"words": ["Invoice", "total"], "boxes": [[10, 20, 110, 40], [120, 20, 200, 40]]}),
    );
    let out = autoclass(&[
        "run",
        s(&dir),
        "--task",
        "token-classification",
        "--image",
        s(&mm("images/invoice.png")),
        "--words-file",
        s(&w),
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let words: Vec<&str> = report["results"][0]["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["token"].as_str().unwrap())
        .collect();
    assert_eq!(words, ["Invoice", "total"]);
}

#[test]
fn document_errors() {
    let image = mm("images/invoice.png");
    // Tesseract missing.
    let dir = tiny_layoutlmv3("missing", true);
    let out = autoclass_env(
        &[
            "run",
            s(&dir),
            "--task",
            "token-classification",
            "--image",
            s(&image),
        ],
        &[("TESSERACT_CMD", "/nonexistent/tesseract")],
    );
    check_fails(out, "is not installed or it's not in your PATH");
    // Words given while apply_ocr=True.
    let w = words_file(
        &dir,
        serde_json::json!({"words": ["a"], "boxes": [[1, 2, 3, 4]]}),
    );
    check_fails(
        autoclass(&["run", s(&dir), "--task", "token-classification", "--image", s(&image), "--words-file", s(&w)]),
        "You cannot provide bounding boxes if you initialized the image processor with apply_ocr set to True.",
    );
    // Words and boxes of different lengths.
    let dir = tiny_layoutlmv3("lengths", false);
    let w = words_file(
        &dir,
        serde_json::json!({"words": ["a", "b"], "boxes": [[1, 2, 3, 4]]}),
    );
    check_fails(
        autoclass(&[
            "preprocess",
            s(&dir),
            "--image",
            s(&image),
            "--words-file",
            s(&w),
        ]),
        "You must provide as many words as there are bounding boxes",
    );
    // A box outside 0..1000.
    let w = words_file(
        &dir,
        serde_json::json!({"words": ["a"], "boxes": [[1, 2, 3, 1400]]}),
    );
    check_fails(
        autoclass(&[
            "preprocess",
            s(&dir),
            "--image",
            s(&image),
            "--words-file",
            s(&w),
        ]),
        "1000",
    );
}
