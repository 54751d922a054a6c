//! The seed's AutoBackbone call: swin-tiny with `out_indices=(1,)` gives `feature_maps[0]` of
//! shape [1, 96, 56, 56], equal to transformers. The real weights are not committed: both sides
//! use the deterministic synthetic weights of `checkpoints/swin-tiny-patch4-window7-224/`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::PathBuf;

use autoclass::weights::synthetic;
use autoclass::{Batch, LoadOptions, Model, Task};
use common::*;
use serde_json::Value;

fn swin_tiny_dir() -> PathBuf {
    repo_root()
        .join("checkpoints")
        .join("swin-tiny-patch4-window7-224")
}

/// The Rust generator reproduces the Python one bit for bit.
#[test]
fn synthetic_weights_match_the_python_generator() {
    let checks: Value = serde_json::from_str(
        &std::fs::read_to_string(swin_tiny_dir().join("weights_checks.json")).unwrap(),
    )
    .unwrap();
    let tensors = checks["tensors"].as_object().unwrap();
    assert!(!tensors.is_empty());
    for (name, t) in tensors {
        let shape: Vec<usize> = t["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap() as usize)
            .collect();
        let kind: synthetic::Kind = t["kind"].as_str().unwrap().parse().unwrap();
        let values = synthetic::values(name, &shape, kind);
        let bits: Vec<String> = values
            .iter()
            .take(8)
            .map(|v| format!("{:#010x}", v.to_bits()))
            .collect();
        let expected: Vec<String> = t["first8_bits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b.as_str().unwrap().to_string())
            .collect();
        assert_eq!(bits, expected, "{name}");
        if let Some(sum) = t.get("sum_f64").and_then(Value::as_f64) {
            let ours: f64 = values.iter().map(|v| f64::from(*v)).sum();
            assert!(
                (ours - sum).abs() <= 1e-9 * sum.abs().max(1.0),
                "{name}: {ours} vs {sum}"
            );
        }
    }
}

/// A scratch checkpoint: the committed config files plus regenerated weights.
pub fn materialise(tag: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("autoclass-swin-tiny-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["config.json", "preprocessor_config.json"] {
        std::fs::copy(swin_tiny_dir().join(f), dir.join(f)).unwrap();
    }
    synthetic::write_checkpoint(
        &swin_tiny_dir().join("weights_manifest.json"),
        &dir.join("model.safetensors"),
    )
    .unwrap();
    dir
}

#[test]
fn backbone_stage1_feature_map_matches_transformers() {
    let dir = materialise("lib");
    let case = case("vision/seed_swin_tiny");
    let expected = expected(fixtures().join("vision/seed_swin_tiny/expected.safetensors"));
    let mut batch = Batch::new();
    batch.insert("pixel_values", expected["pixel_values"].clone());

    let mut options = LoadOptions::default();
    options
        .config
        .values
        .insert("out_indices".into(), serde_json::json!([1]));
    let backbone = Model::from_pretrained(dir.to_str().unwrap(), Task::Backbone, &options).unwrap();
    assert_eq!(backbone.class_name(), "SwinBackbone");
    let info = backbone.loading_info();
    assert_eq!(info.missing, strings(&case["loading_info"]["missing_keys"]));
    assert_eq!(
        info.unexpected,
        strings(&case["loading_info"]["unexpected_keys"])
    );
    let out = backbone.forward(&batch).unwrap();
    let maps = out.feature_maps.as_ref().unwrap();
    assert_eq!(maps.len(), 1);
    assert_eq!(maps[0].dims(), &[1, 96, 56, 56]);
    let d = assert_close(
        "feature_maps.0",
        &maps[0],
        &expected["feature_maps.0"],
        1e-4,
    );
    eprintln!("swin-tiny feature_maps.0 max |diff| {d:e}");

    let classifier = Model::from_pretrained(
        dir.to_str().unwrap(),
        Task::ImageClassification,
        &LoadOptions::default(),
    )
    .unwrap();
    let logits = classifier.forward(&batch).unwrap();
    let d = assert_close(
        "logits",
        logits.require("logits").unwrap(),
        &expected["logits"],
        1e-4,
    );
    eprintln!("swin-tiny logits max |diff| {d:e}");
    let _ = std::fs::remove_dir_all(dir);
}
