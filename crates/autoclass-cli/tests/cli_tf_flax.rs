//! `--from-tf` / `--from-flax` on `run` and `inspect`: the TensorFlow- or Flax-only copies of the
//! tiny BERT classifier (`autoclass/tests/fixtures/weights/tf_flax/{tf,flax}_only`) give
//! transformers' logits with the flag, transformers' "Use `from_tf=True`" error without it, and
//! `inspect` says which file it picked and why.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;

use autoclass::candle_core::Device;

fn case() -> serde_json::Value {
    serde_json::from_str(
        &std::fs::read_to_string(fixture("bert_sequence_classification").join("case.json"))
            .unwrap(),
    )
    .unwrap()
}

fn run_saved(dir: &std::path::Path, flag: Option<&str>, tag: &str) -> std::process::Output {
    let save = std::env::temp_dir().join(format!(
        "autoclass-cli-{tag}-{}.safetensors",
        std::process::id()
    ));
    let mut args = vec![
        "run",
        s(dir),
        "--task",
        "sequence-classification",
        "--save",
        s(&save),
    ];
    if let Some(f) = flag {
        args.push(f);
    }
    let flags = text_flags(&case());
    args.extend(flags.iter().map(String::as_str));
    let out = autoclass(&args);
    if out.status.success() {
        let saved = autoclass::candle_core::safetensors::load(&save, &Device::Cpu).unwrap();
        let expected = autoclass::candle_core::safetensors::load(
            fixture("bert_sequence_classification").join("expected.safetensors"),
            &Device::Cpu,
        )
        .unwrap();
        let diff = max_diff(&saved["logits"], &expected["logits"]);
        assert!(diff < 1e-4, "{tag}: max |diff| {diff}");
        let _ = std::fs::remove_file(save);
    }
    out
}

#[test]
fn run_with_from_tf_and_from_flax() {
    for (folder, flag, framework) in [
        ("weights/tf_flax/tf_only", "--from-tf", "TensorFlow"),
        ("weights/tf_flax/flax_only", "--from-flax", "Flax"),
    ] {
        let dir = fixture(folder);
        let out = run_saved(&dir, Some(flag), flag.trim_start_matches('-'));
        assert!(
            out.status.success(),
            "{folder}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = run_saved(&dir, None, "noflag");
        let option = flag.trim_start_matches("--").replace('-', "_");
        let msg = check_fails(out, &format!("Use `{option}=True`"));
        assert!(
            msg.contains(&format!("there is a file for {framework} weights")),
            "{msg}"
        );
    }
}

#[test]
fn inspect_says_which_format_and_why() {
    let both = fixture("weights/tf_flax/bert_sequence_classification");
    let pick = |dir: &std::path::Path, flag: Option<&str>| -> serde_json::Value {
        let mut args = vec!["inspect", s(dir), "--json"];
        args.extend(flag);
        let out = autoclass(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
        v["weights"].clone()
    };
    let w = pick(&both, None);
    assert_eq!(w["file"], "model.safetensors");
    assert_eq!(w["format"], "safetensors");
    let w = pick(&both, Some("--from-tf"));
    assert_eq!(w["file"], "tf_model.h5");
    assert_eq!(w["format"], "tensorflow");
    assert!(w["why"].as_str().unwrap().contains("from_tf=True"), "{w}");
    let w = pick(&both, Some("--from-flax"));
    assert_eq!(w["file"], "flax_model.msgpack");
    assert_eq!(w["format"], "flax");
    let tf_only = fixture("weights/tf_flax/tf_only");
    let w = pick(&tf_only, None);
    assert!(w["file"].is_null());
    assert!(w["why"].as_str().unwrap().contains("--from-tf"), "{w}");
    // --from-flax on a TF-only folder: nothing loadable, and the why says so
    let w = pick(&tf_only, Some("--from-flax"));
    assert!(w["file"].is_null(), "{w}");
    // human output names the file
    let out = autoclass(&["inspect", s(&both), "--from-tf"]);
    assert!(stdout(&out).contains("weights:       tf_model.h5 (--from-tf"));
    // --from-tf on a folder without tf_model.h5 falls back and says so
    let bin = fixture("weights/torch/legacy");
    let w = pick(&bin, Some("--from-tf"));
    assert_eq!(w["file"], "pytorch_model.bin");
    assert!(w["why"].as_str().unwrap().contains("no tf_model.h5"), "{w}");
}
