//! Helpers shared by the CLI tests: paths, running the binary, checking error lines.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use autoclass::candle_core::{DType, Tensor};

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("..")
}

/// `crates/autoclass/tests/fixtures/<rel>`.
pub fn fixture(rel: &str) -> PathBuf {
    repo().join("crates/autoclass/tests/fixtures").join(rel)
}

/// Runs `autoclass` offline with an empty Hub cache and extra environment variables.
pub fn autoclass_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_autoclass"));
    cmd.args(args).env("HF_HUB_OFFLINE", "1").env(
        "HF_HUB_CACHE",
        std::env::temp_dir().join("autoclass-cli-empty-cache"),
    );
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

/// Runs `autoclass` offline with an empty Hub cache.
pub fn autoclass(args: &[&str]) -> Output {
    autoclass_env(args, &[])
}

/// Standard output as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A path as `&str`.
pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Checks a run that must fail: non-zero exit, an `error:` line containing `needle`, no panic.
/// Returns that line.
pub fn check_fails(out: Output, needle: &str) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "succeeded: {}", stdout(&out));
    assert!(!err.contains("panicked"), "panicked: {err}");
    let line = err
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("no error line: {err}"));
    assert!(line.contains(needle), "expected {needle:?} in {line}");
    line.to_string()
}

/// Runs a command that must fail (see [`check_fails`]).
pub fn fails_with(args: &[&str], needle: &str) -> String {
    check_fails(autoclass(args), needle)
}

/// The largest absolute difference between two tensors of the same shape.
pub fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    let a = a.to_dtype(DType::F32).unwrap();
    let b = b.to_dtype(DType::F32).unwrap();
    a.sub(&b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// `--text T ... --text-pair P ...` for the texts and pairs of a fixture's case.json.
pub fn text_flags(case: &serde_json::Value) -> Vec<String> {
    let list = |key: &str| -> Vec<String> {
        case[key]
            .as_array()
            .map(|a| a.iter().map(|t| t.as_str().unwrap().to_string()).collect())
            .unwrap_or_default()
    };
    let mut flags = Vec::new();
    for t in list("texts") {
        flags.extend(["--text".to_string(), t]);
    }
    for p in list("text_pairs") {
        flags.extend(["--text-pair".to_string(), p]);
    }
    flags
}
