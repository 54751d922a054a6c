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
