//! TensorFlow (`tf_model.h5`) and Flax (`flax_model.msgpack`) checkpoints loaded with
//! `from_tf` / `from_flax`: outputs against transformers (PyTorch) and against the same weights
//! from `model.safetensors`, the file-choice order, and transformers' "Use `from_tf=True`" error.
//! Fixtures: `fixtures/weights/tf_flax/` (see `generate_tf_flax.py` there).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};

use autoclass::weights::{find_weight_file_with, FrameworkChoice};
use autoclass::{Batch, Checkpoint, HubOptions, LoadOptions, Model, Task};
use common::{assert_close, expected, fixtures};
use serde_json::Value;

fn tf_flax() -> PathBuf {
    fixtures().join("weights").join("tf_flax")
}

fn case_json(dir: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("case.json")).unwrap()).unwrap()
}

fn options(fmt: &str) -> LoadOptions {
    LoadOptions {
        from_tf: fmt == "tf",
        from_flax: fmt == "flax",
        ..LoadOptions::default()
    }
}

/// Loads `case` from `fmt` (tf, flax or safetensors) and compares every output in `compare` with
/// transformers' and with the safetensors load; returns (max |diff| vs transformers, vs safetensors).
fn check(case: &str, fmt: &str) -> (f32, f32) {
    let dir = tf_flax().join(case);
    let info = case_json(&dir);
    let task: Task = info["task"].as_str().unwrap().parse().unwrap();
    let exp = expected(dir.join("expected.safetensors"));
    let mut batch = Batch::new();
    for key in info["inputs"].as_array().unwrap() {
        let key = key.as_str().unwrap();
        batch.insert(key, exp[key].clone());
    }
    let name = dir.to_str().unwrap();
    let model = Model::from_pretrained(name, task, &options(fmt))
        .unwrap_or_else(|e| panic!("{case} {fmt}: {e}"));
    let reference = Model::from_pretrained(name, task, &LoadOptions::default()).unwrap();
    assert_eq!(
        model.loading_info().missing,
        reference.loading_info().missing,
        "{case} {fmt}: missing"
    );
    assert!(
        model.loading_info().unexpected.is_empty(),
        "{case} {fmt}: unexpected {:?}",
        model.loading_info().unexpected
    );
    let out = model.forward(&batch).unwrap();
    let ref_out = reference.forward(&batch).unwrap();
    let (mut vs_py, mut vs_st) = (0f32, 0f32);
    for key in info["compare"].as_array().unwrap() {
        let key = key.as_str().unwrap();
        let actual = out.require(key).unwrap();
        vs_py = vs_py.max(assert_close(
            &format!("{case} {fmt} {key}"),
            actual,
            &exp[key],
            1e-4,
        ));
        vs_st = vs_st.max(assert_close(
            &format!("{case} {fmt} {key} vs safetensors"),
            actual,
            ref_out.require(key).unwrap(),
            1e-4,
        ));
    }
    eprintln!("{case} {fmt}: max |diff| vs transformers {vs_py:e}, vs safetensors {vs_st:e}");
    (vs_py, vs_st)
}

#[test]
fn every_case_loads_from_each_of_its_formats() {
    let mut n = 0;
    let mut dirs: Vec<_> = std::fs::read_dir(tf_flax())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("case.json").exists())
        .collect();
    dirs.sort();
    for dir in dirs {
        let info = case_json(&dir);
        let Some(formats) = info["formats"].as_array() else {
            continue;
        };
        let case = dir.file_name().unwrap().to_str().unwrap().to_string();
        for fmt in formats {
            check(&case, fmt.as_str().unwrap());
            n += 1;
        }
    }
    assert!(n >= 9, "only {n} (case, format) pairs");
}

#[test]
fn from_tf_and_from_flax_choose_the_file_as_transformers_does() {
    let dir = tf_flax().join("bert_sequence_classification");
    let checkpoint = Checkpoint::resolve(dir.to_str().unwrap(), &HubOptions::default()).unwrap();
    let pick = |from_tf, from_flax| {
        find_weight_file_with(&checkpoint, FrameworkChoice { from_tf, from_flax })
            .unwrap()
            .unwrap()
            .0
    };
    assert_eq!(pick(false, false), "model.safetensors");
    assert_eq!(pick(true, false), "tf_model.h5");
    assert_eq!(pick(false, true), "flax_model.msgpack");
    // transformers tests from_tf before from_flax
    assert_eq!(pick(true, true), "tf_model.h5");
    // without the TF file, from_tf falls through to the next candidates
    let only = tf_flax().join("flax_only");
    let checkpoint = Checkpoint::resolve(only.to_str().unwrap(), &HubOptions::default()).unwrap();
    let found = find_weight_file_with(
        &checkpoint,
        FrameworkChoice {
            from_tf: true,
            from_flax: false,
        },
    )
    .unwrap();
    assert!(found.is_none());
}

/// A folder whose model.safetensors is garbage: only the TF / Flax file can make it load, so a
/// successful `from_tf` load proves the other file was read.
#[test]
fn the_option_really_reads_the_other_file() {
    let src = tf_flax().join("bert_sequence_classification");
    let dir = std::env::temp_dir().join(format!("autoclass-tfflax-garbage-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["config.json", "tf_model.h5", "flax_model.msgpack"] {
        std::fs::copy(src.join(f), dir.join(f)).unwrap();
    }
    std::fs::write(dir.join("model.safetensors"), b"not safetensors at all").unwrap();
    let name = dir.to_str().unwrap();
    let task = Task::SequenceClassification;
    assert!(Model::from_pretrained(name, task, &LoadOptions::default()).is_err());
    let exp = expected(src.join("expected.safetensors"));
    let mut batch = Batch::new();
    for key in ["input_ids", "attention_mask", "token_type_ids"] {
        batch.insert(key, exp[key].clone());
    }
    for fmt in ["tf", "flax"] {
        let model = Model::from_pretrained(name, task, &options(fmt)).unwrap();
        let out = model.forward(&batch).unwrap();
        assert_close(fmt, out.require("logits").unwrap(), &exp["logits"], 1e-4);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn tf_or_flax_only_folders_give_transformers_error() {
    for (folder, option) in [("tf_only", "tf"), ("flax_only", "flax")] {
        let dir = tf_flax().join(folder);
        let name = dir.to_str().unwrap();
        let want = case_json(&dir)["expect_error"]
            .as_str()
            .unwrap()
            .replace("{dir}", name);
        let err =
            Model::from_pretrained(name, Task::SequenceClassification, &LoadOptions::default())
                .err()
                .unwrap_or_else(|| panic!("{folder}: loaded without the option"));
        assert_eq!(err.to_string(), want, "{folder}");
        // with the option it loads, and gives transformers' logits for the fixture's texts
        let model = Model::from_pretrained(name, Task::SequenceClassification, &options(option))
            .unwrap_or_else(|e| panic!("{folder}: {e}"));
        let exp = expected(
            fixtures()
                .join("bert_sequence_classification")
                .join("expected.safetensors"),
        );
        let mut batch = Batch::new();
        for key in ["input_ids", "attention_mask", "token_type_ids"] {
            batch.insert(key, exp[key].clone());
        }
        let out = model.forward(&batch).unwrap();
        assert_close(folder, out.require("logits").unwrap(), &exp["logits"], 1e-4);
    }
}
