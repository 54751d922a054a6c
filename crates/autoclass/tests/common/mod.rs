//! Helpers shared by the integration tests: fixture paths, case files, tensor comparison.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::path::PathBuf;

use autoclass::candle_core::{DType, Device, Tensor};
use autoclass::{EncodeOptions, Padding, Truncation};
use serde_json::Value;

/// `crates/autoclass/tests/fixtures`.
pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("fixtures")
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("..")
}

/// Reads `fixtures/<case>/case.json`.
pub fn case(name: &str) -> Value {
    let path = fixtures().join(name).join("case.json");
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// Reads an expected.safetensors file.
pub fn expected(path: PathBuf) -> HashMap<String, Tensor> {
    autoclass::candle_core::safetensors::load(&path, &Device::Cpu)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Encode options from the `padding`/`truncation`/`max_length` fields of a case
/// (JSON null for truncation means "not passed").
pub fn encode_options(args: &Value) -> EncodeOptions {
    let padding = match &args["padding"] {
        Value::Bool(true) => Padding::Longest,
        Value::String(s) => s.parse().unwrap(),
        _ => Padding::None,
    };
    let truncation = match &args["truncation"] {
        Value::Null => None,
        Value::Bool(true) => Some(Truncation::LongestFirst),
        Value::Bool(false) => Some(Truncation::DoNotTruncate),
        Value::String(s) => Some(s.parse().unwrap()),
        other => panic!("truncation {other}"),
    };
    EncodeOptions {
        padding,
        truncation,
        max_length: args["max_length"].as_u64().map(|v| v as usize),
        return_offsets_mapping: args["return_offsets_mapping"].as_bool().unwrap_or(false),
        ..EncodeOptions::default()
    }
}

/// Strings of a JSON array.
pub fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| a.iter().map(|s| s.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

/// Asserts `actual` equals `expected` within `tol` (max absolute difference); returns the max diff.
pub fn assert_close(name: &str, actual: &Tensor, expected: &Tensor, tol: f32) -> f32 {
    assert_eq!(actual.dims(), expected.dims(), "{name}: shape");
    let a = actual
        .to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let e = expected
        .to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let max = a
        .iter()
        .zip(&e)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    assert!(max <= tol, "{name}: max |diff| {max} > {tol}");
    assert!(a.iter().all(|v| v.is_finite()), "{name}: non-finite values");
    max
}

/// Asserts two integer tensors are equal.
pub fn assert_ids(name: &str, actual: &Tensor, expected: &Tensor) {
    assert_eq!(actual.dims(), expected.dims(), "{name}: shape");
    let a = actual
        .to_dtype(DType::I64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<i64>()
        .unwrap();
    let e = expected
        .to_dtype(DType::I64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<i64>()
        .unwrap();
    assert_eq!(a, e, "{name}");
}

/// Checks a model loaded for a fixture case against transformers: for an `expect_error` case,
/// that loading or running fails with transformers' message (then `None`); otherwise the class,
/// the load report, every `compare` output at `tol`, and that we return exactly the outputs
/// transformers returned (every tensor in `expected` that is not one of the batch's inputs).
/// Returns the largest difference and the outputs.
pub fn check_model_case(
    name: &str,
    case: &Value,
    loaded: autoclass::Result<autoclass::Model>,
    batch: &autoclass::Batch,
    options: &autoclass::ForwardOptions,
    expected: &HashMap<String, Tensor>,
    tol: f32,
) -> Option<(f32, autoclass::ModelOutput)> {
    if let Some(reference) = case["expect_error"].as_str() {
        let err = match loaded {
            Err(e) => e,
            Ok(model) => model
                .forward_with(batch, options)
                .err()
                .unwrap_or_else(|| panic!("{name}: expected an error: {reference}")),
        };
        let msg = err.to_string();
        assert!(
            msg.contains(reference),
            "{name}: error {msg:?} lacks transformers' {reference:?}"
        );
        return None;
    }
    let model = loaded.unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(
        model.class_name(),
        case["model_class"].as_str().unwrap(),
        "{name}"
    );
    let info = model.loading_info();
    let listed = |k: &str| strings(&case["loading_info"][k]);
    assert_eq!(info.missing, listed("missing_keys"), "{name}: missing keys");
    assert_eq!(
        info.unexpected,
        listed("unexpected_keys"),
        "{name}: unexpected keys"
    );
    assert_eq!(
        info.mismatched,
        listed("mismatched_keys"),
        "{name}: mismatched keys"
    );

    let outputs = model.forward_with(batch, options).unwrap();
    let ours: HashMap<String, Tensor> = outputs.named_tensors().into_iter().collect();
    let compare = strings(&case["compare"]);
    assert!(!compare.is_empty(), "{name}: nothing to compare");
    let mut max = 0f32;
    for key in &compare {
        let e = expected
            .get(key)
            .unwrap_or_else(|| panic!("{name}: reference lacks {key}"));
        let a = ours
            .get(key)
            .unwrap_or_else(|| panic!("{name}: we returned no {key}"));
        max = max.max(assert_close(&format!("{name}/{key}"), a, e, tol));
    }
    // Every output the reference produced, we produce too, and nothing more.
    let inputs: Vec<&str> = batch.iter().map(|(k, _)| k).collect();
    for key in expected.keys().filter(|k| !inputs.contains(&k.as_str())) {
        assert!(ours.contains_key(key), "{name}: missing output {key}");
    }
    for key in ours.keys() {
        assert!(
            expected.contains_key(key),
            "{name}: we return {key}, transformers does not"
        );
    }
    eprintln!("{name}: max |diff| {max:e}");
    Some((max, outputs))
}
