//! Parity of LayoutLMv3 (AutoModel, AutoModelForTokenClassification,
//! AutoModelForSequenceClassification, AutoModelForQuestionAnswering) with Python transformers on
//! the tiny checkpoints in `fixtures/multimodal/layoutlmv3/models`, plus bad-input checks.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashMap;
use std::path::PathBuf;

use autoclass::candle_core::{DType, Device, Tensor};
use autoclass::{Batch, ForwardOptions, LoadOptions, Model, Task, ARCHITECTURES};
use common::*;
use serde_json::Value;

const TOL: f32 = 1e-4;

/// `fixtures/multimodal/layoutlmv3/models`.
fn models_dir() -> PathBuf {
    fixtures()
        .join("multimodal")
        .join("layoutlmv3")
        .join("models")
}

/// Reads `<models_dir>/<name>/case.json`.
fn lv3_case(name: &str) -> Value {
    let path = models_dir().join(name).join("case.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// The names of the case's inputs (`inputs` is a list, or a single name).
fn input_names(case: &Value) -> Vec<String> {
    match &case["inputs"] {
        Value::String(s) => vec![s.clone()],
        other => strings(other),
    }
}

/// The case's inputs, read from its expected.safetensors and checked against `input_shapes`.
fn inputs(name: &str, case: &Value, expected: &HashMap<String, Tensor>) -> Batch {
    let mut batch = Batch::new();
    for key in input_names(case) {
        let tensor = expected
            .get(&key)
            .unwrap_or_else(|| panic!("{name}: expected.safetensors lacks input {key}"));
        if let Some(shape) = case["input_shapes"][&key].as_array() {
            let shape: Vec<usize> = shape.iter().map(|v| v.as_u64().unwrap() as usize).collect();
            assert_eq!(tensor.dims(), &shape[..], "{name}: shape of {key}");
        }
        batch.insert(key, tensor.clone());
    }
    batch
}

/// The checkpoint folder of a case (`load_from` names another case's folder).
fn checkpoint_dir(name: &str, case: &Value) -> PathBuf {
    match case["load_from"].as_str() {
        Some(other) => models_dir().join(other),
        None => models_dir().join(name),
    }
}

/// Loads the case's checkpoint for its task, checks the class and the load report against
/// transformers', runs the model on the reference inputs and compares every `compare` output at
/// 1e-4; for an `expect_error` case, checks that loading or running fails with transformers'
/// message. Returns the largest difference seen.
fn run_case(name: &str) -> f32 {
    let case = lv3_case(name);
    let dir = models_dir().join(name);
    let ckpt = checkpoint_dir(name, &case);
    let expected = expected(dir.join("expected.safetensors"));
    let batch = inputs(name, &case, &expected);
    let task: Task = case["task"].as_str().unwrap().parse().unwrap();
    let compare = strings(&case["compare"]);
    let options = ForwardOptions {
        output_hidden_states: case["output_hidden_states"].as_bool().unwrap_or(false)
            || compare.iter().any(|k| k.starts_with("hidden_states.")),
        output_attentions: case["output_attentions"].as_bool().unwrap_or(false)
            || compare.iter().any(|k| k.starts_with("attentions.")),
        ..Default::default()
    };
    let loaded = Model::from_pretrained(ckpt.to_str().unwrap(), task, &LoadOptions::default());

    match check_model_case(name, &case, loaded, &batch, &options, &expected, TOL) {
        Some((max, _)) => max,
        None => 0.0,
    }
}

macro_rules! parity {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                run_case(stringify!($name));
            }
        )*
        /// Every case the parity tests run.
        const PARITY_CASES: &[&str] = &[$(stringify!($name)),*];
    };
}

parity!(
    layoutlmv3_base,
    layoutlmv3_base_text_only,
    layoutlmv3_token_classification,
    layoutlmv3_sequence_classification,
    layoutlmv3_question_answering,
    layoutlmv3_wrong_image_size,
);

/// Every case folder the generator wrote is run by a parity test above.
#[test]
fn every_fixture_case_is_run() {
    let mut on_disk: Vec<String> = std::fs::read_dir(models_dir())
        .unwrap()
        .filter_map(|e| {
            let e = e.unwrap();
            e.path()
                .join("case.json")
                .exists()
                .then(|| e.file_name().to_string_lossy().into_owned())
        })
        .collect();
    on_disk.sort();
    for case in &on_disk {
        assert!(
            PARITY_CASES.contains(&case.as_str()),
            "{case}: fixture has no parity test"
        );
    }
}

/// Walks the registry: every LayoutLMv3 task is covered by a parity case named
/// `layoutlmv3_{task}` (or `layoutlmv3_{task}_{variant}`) that declares that task and class and
/// loads cleanly.
#[test]
fn every_registered_layoutlmv3_task_has_a_parity_fixture() {
    let arch = ARCHITECTURES
        .iter()
        .find(|a| a.model_type() == "layoutlmv3")
        .expect("layoutlmv3 is registered");
    assert_eq!(arch.config_class(), "LayoutLMv3Config");
    assert_eq!(arch.base_model_prefix(), "layoutlmv3");
    assert!(!arch.tasks().is_empty());
    for (task, class) in arch.tasks() {
        let name = if *task == Task::Base {
            "layoutlmv3_base".to_string()
        } else {
            format!("layoutlmv3_{}", task.as_str().replace('-', "_"))
        };
        let covering: Vec<&str> = PARITY_CASES
            .iter()
            .copied()
            .filter(|c| *c == name || c.starts_with(&format!("{name}_")))
            .filter(|c| {
                let case = lv3_case(c);
                case["task"].as_str() == Some(task.as_str())
                    && case["model_class"].as_str() == Some(*class)
                    && case["expect_error"].is_null()
            })
            .collect();
        assert!(
            !covering.is_empty(),
            "{name}: no parity case covers {} / {class}",
            task.as_str()
        );
    }
}

/// The base case's model and reference inputs.
fn base_model_and_batch() -> (Model, Batch) {
    let name = "layoutlmv3_base";
    let case = lv3_case(name);
    let expected = expected(models_dir().join(name).join("expected.safetensors"));
    let batch = inputs(name, &case, &expected);
    let model = Model::from_pretrained(
        checkpoint_dir(name, &case).to_str().unwrap(),
        Task::Base,
        &LoadOptions::default(),
    )
    .unwrap();
    (model, batch)
}

/// Runs the model on `batch` and returns the error message; panics if it succeeds.
fn error_of(model: &Model, batch: &Batch) -> String {
    match model.forward(batch) {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bbox_with_the_wrong_shape_is_an_error() {
    let (model, batch) = base_model_and_batch();
    let bbox = batch.get("bbox").unwrap().clone();
    let (b, l, _) = bbox.dims3().unwrap();

    let mut bad = batch.clone();
    bad.insert("bbox", bbox.narrow(2, 0, 3).unwrap());
    let msg = error_of(&model, &bad);
    assert!(
        msg.contains("bbox") && msg.contains("[batch, length, 4]"),
        "{msg}"
    );

    let mut bad = batch.clone();
    bad.insert("bbox", bbox.narrow(1, 0, l - 1).unwrap());
    let msg = error_of(&model, &bad);
    assert!(msg.contains("bbox"), "{msg}");

    let mut bad = batch.clone();
    bad.insert(
        "bbox",
        Tensor::zeros((b, l), DType::I64, &Device::Cpu).unwrap(),
    );
    let msg = error_of(&model, &bad);
    assert!(msg.contains("bbox"), "{msg}");
}

#[test]
fn bbox_coordinates_out_of_range_are_an_error() {
    let (model, batch) = base_model_and_batch();
    let config: Value = serde_json::from_str(
        &std::fs::read_to_string(
            checkpoint_dir("layoutlmv3_base", &lv3_case("layoutlmv3_base")).join("config.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let max_2d = config["max_2d_position_embeddings"]
        .as_i64()
        .unwrap_or(1024);
    let bbox = batch.get("bbox").unwrap().to_dtype(DType::I64).unwrap();
    let dims = bbox.dims().to_vec();
    for bad_value in [max_2d, -1] {
        let mut values = bbox.flatten_all().unwrap().to_vec1::<i64>().unwrap();
        values[2] = bad_value;
        let mut bad = batch.clone();
        bad.insert(
            "bbox",
            Tensor::from_vec(values, dims.as_slice(), &Device::Cpu).unwrap(),
        );
        let msg = error_of(&model, &bad);
        assert!(
            msg.contains("The `bbox` coordinate values should be within 0-1000 range."),
            "{bad_value}: {msg}"
        );
    }
}

#[test]
fn other_bad_inputs_are_errors() {
    let (model, batch) = base_model_and_batch();
    let ids = batch.get("input_ids").unwrap().clone();
    let (b, l) = ids.dims2().unwrap();

    // attention_mask of the wrong length.
    let mut bad = batch.clone();
    bad.insert(
        "attention_mask",
        Tensor::ones((b, l + 1), DType::I64, &Device::Cpu).unwrap(),
    );
    assert!(error_of(&model, &bad).contains("attention_mask"));

    // Float bounding boxes.
    let mut bad = batch.clone();
    bad.insert(
        "bbox",
        Tensor::zeros((b, l, 4), DType::F32, &Device::Cpu).unwrap(),
    );
    assert!(error_of(&model, &bad).contains("integer"));

    // Wrong image size and channel count.
    if let Some(pixels) = batch.get("pixel_values") {
        let (pb, c, h, w) = pixels.dims4().unwrap();
        let mut bad = batch.clone();
        bad.insert(
            "pixel_values",
            Tensor::zeros((pb, c, h * 2, w), DType::F32, &Device::Cpu).unwrap(),
        );
        assert!(error_of(&model, &bad).contains("doesn't match model"));
        let mut bad = batch.clone();
        bad.insert(
            "pixel_values",
            Tensor::zeros((pb, c + 1, h, w), DType::F32, &Device::Cpu).unwrap(),
        );
        assert!(error_of(&model, &bad).contains("channels"));
    }

    // Nothing to run on.
    assert!(error_of(&model, &Batch::new()).contains("input_ids"));
}

/// Text-only and image-only inputs run: the image is optional, as in transformers.
#[test]
fn text_only_and_image_only_inputs_run() {
    let (model, batch) = base_model_and_batch();
    let ids = batch.get("input_ids").unwrap();
    let (b, l) = ids.dims2().unwrap();
    let mut text = Batch::new();
    for (k, v) in batch.iter().filter(|(k, _)| *k != "pixel_values") {
        text.insert(k, v.clone());
    }
    let out = model.forward(&text).unwrap();
    let h = out.require("last_hidden_state").unwrap();
    assert_eq!(&h.dims()[..2], &[b, l]);

    if let Some(pixels) = batch.get("pixel_values") {
        let mut image = Batch::new();
        image.insert("pixel_values", pixels.clone());
        let out = model.forward(&image).unwrap();
        let full = model.forward(&batch).unwrap();
        let hv = out.require("last_hidden_state").unwrap();
        let hf = full.require("last_hidden_state").unwrap();
        assert_eq!(hv.dim(1).unwrap() + l, hf.dim(1).unwrap());
    }
}
