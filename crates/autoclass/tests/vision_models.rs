//! Parity of the vision models (AutoModel, AutoModelForImageClassification, AutoBackbone) with
//! Python transformers on the fixtures in `fixtures/vision/models`, and AutoBackbone's stage
//! selection rules against `backbone_errors.json`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::PathBuf;

use autoclass::backbone::StageSelection;
use autoclass::candle_core::{DType, Device, Tensor};
use autoclass::{Batch, ForwardOptions, LoadOptions, Model, Task, ARCHITECTURES};
use common::*;
use serde_json::Value;

const TOL: f32 = 1e-4;

/// `fixtures/vision/models`.
fn models_dir() -> PathBuf {
    fixtures().join("vision").join("models")
}

/// Reads `fixtures/vision/models/<name>/case.json`.
fn vision_case(name: &str) -> Value {
    let path = models_dir().join(name).join("case.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// The case's inputs, read from its expected.safetensors (no image processor involved).
fn inputs(name: &str, case: &Value, expected: &std::collections::HashMap<String, Tensor>) -> Batch {
    let key = case["inputs"].as_str().unwrap();
    let tensor = expected
        .get(key)
        .unwrap_or_else(|| panic!("{name}: expected.safetensors lacks {key}"));
    let shape: Vec<usize> = case["input_shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    assert_eq!(tensor.dims(), &shape[..], "{name}: input shape");
    let mut batch = Batch::new();
    batch.insert(key, tensor.clone());
    batch
}

/// `from_pretrained` options: the case's `backbone_kwargs` become config values, as
/// `XBackbone.from_pretrained(path, out_indices=...)` passes them to the config.
fn load_options(case: &Value) -> LoadOptions {
    let mut options = LoadOptions::default();
    if let Some(kwargs) = case["backbone_kwargs"].as_object() {
        for (k, v) in kwargs {
            options.config.values.insert(k.clone(), v.clone());
        }
    }
    options
}

/// Loads the case's checkpoint for its task, checks the class and the load report against
/// transformers', runs the model on the reference inputs and compares every listed output at
/// 1e-4; for an `expect_error` case, checks that loading or running fails with transformers'
/// message. Returns the largest difference seen.
fn run_case(name: &str) -> f32 {
    let case = vision_case(name);
    let dir = models_dir().join(name);
    let ckpt_dir = match case["load_from"].as_str() {
        Some(other) => models_dir().join(other),
        None => dir.clone(),
    };
    let ckpt = ckpt_dir.to_str().unwrap();
    let expected = expected(dir.join("expected.safetensors"));
    let batch = inputs(name, &case, &expected);
    let task: Task = case["task"].as_str().unwrap().parse().unwrap();
    let options = ForwardOptions {
        output_hidden_states: case["output_hidden_states"].as_bool().unwrap_or(false),
        output_attentions: false,
        ..Default::default()
    };
    let loaded = Model::from_pretrained(ckpt, task, &load_options(&case));

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
    vit_base,
    vit_image_classification,
    vit_wrong_size,
    convnext_base,
    convnext_image_classification,
    convnext_backbone,
    convnext_backbone_from_classification,
    swin_base,
    swin_base_odd,
    swin_image_classification,
    swin_backbone_default,
    swin_backbone_out_features,
    swin_backbone_from_classification,
    swin_backbone_negative,
    swin_backbone_bad_indices,
);

/// Walks the registry: every (vision architecture, task) is covered by a parity case above
/// named `{model_type}_{task}` (or `{model_type}_{task}_{variant}` when a task has several
/// cases, e.g. `swin_backbone_default`) that declares that task and class and loads cleanly.
#[test]
fn every_registered_vision_task_has_a_parity_fixture() {
    let vision: Vec<_> = ARCHITECTURES
        .iter()
        // Document models (image processor + tokenizer) are walked in layoutlmv3_models.rs.
        .filter(|a| a.image_processor_class().is_some() && a.tokenizer_class().is_none())
        .collect();
    for model_type in ["vit", "swin", "convnext"] {
        assert!(
            vision.iter().any(|a| a.model_type() == model_type),
            "{model_type} is registered as a vision model"
        );
    }
    for arch in vision {
        for (task, class) in arch.tasks() {
            let name = if *task == Task::Base {
                format!("{}_base", arch.model_type())
            } else {
                format!("{}_{}", arch.model_type(), task.as_str().replace('-', "_"))
            };
            let covering: Vec<&str> = PARITY_CASES
                .iter()
                .copied()
                .filter(|c| *c == name || c.starts_with(&format!("{name}_")))
                .filter(|c| {
                    let case = vision_case(c);
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
}

/// `backbone_errors.json`: every invalid out_features / out_indices combination fails with
/// transformers' exact message, and every valid one aligns as transformers aligns it.
#[test]
fn backbone_stage_selection_matches_transformers() {
    let path = models_dir().join("backbone_errors.json");
    let cases: Vec<Value> = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert!(!cases.is_empty());
    let optional = |v: &Value| (!v.is_null()).then(|| strings(v));
    let optional_ints = |v: &Value| {
        v.as_array()
            .map(|a| a.iter().map(|i| i.as_i64().unwrap()).collect::<Vec<_>>())
    };
    for case in &cases {
        let note = case["note"].as_str().unwrap();
        let stage_names = strings(&case["stage_names"]);
        let features = optional(&case["out_features"]);
        let indices = optional_ints(&case["out_indices"]);
        let result = StageSelection::new(features.clone(), indices.clone(), &stage_names);
        match (case["error_type"].as_str(), case["error"].as_str()) {
            (None, None) => {
                let sel = result.unwrap_or_else(|e| panic!("{note}: {e}"));
                assert_eq!(
                    sel.out_features,
                    strings(&case["aligned_out_features"]),
                    "{note}"
                );
                assert_eq!(
                    Some(sel.out_indices),
                    optional_ints(&case["aligned_out_indices"]),
                    "{note}"
                );
            }
            (Some("ValueError"), Some(message)) => match result {
                Err(autoclass::Error::InvalidConfig { reason, .. }) => {
                    assert_eq!(reason, message, "{note}")
                }
                other => panic!("{note}: expected {message:?}, got {other:?}"),
            },
            // transformers lets e.g. -7 through validation and then fails with an IndexError
            // ("list index out of range"); we refuse it with the validation message instead.
            (Some("IndexError"), Some(_)) => {
                let err = result.expect_err(note).to_string();
                assert!(
                    err.contains("out_indices must be valid indices"),
                    "{note}: {err}"
                );
            }
            // A Python tuple for out_features is rejected by v5's strict dataclass; JSON (and so
            // our config values) cannot express a tuple, so there is nothing to port.
            (Some("StrictDataclassFieldValidationError"), _) => {
                assert!(case["input_is_tuple"].as_bool().unwrap(), "{note}");
            }
            (kind, message) => panic!("{note}: unhandled reference {kind:?} {message:?}"),
        }
    }
}

/// A bad selection in config values fails when the config is read, as in transformers (the
/// config constructor validates), with transformers' message.
#[test]
fn convnext_backbone_bad_out_features() {
    let dir = models_dir().join("convnext_image_classification");
    let mut options = LoadOptions::default();
    options.config.values.insert(
        "out_features".into(),
        serde_json::json!(["stage2", "stage1"]),
    );
    let err = Model::from_pretrained(dir.to_str().unwrap(), Task::Backbone, &options)
        .err()
        .expect("out_features out of order must fail");
    assert!(
        err.to_string().contains(
            "out_features must be in the same order as stage_names, expected ['stage1', 'stage2'] got ['stage2', 'stage1']"
        ),
        "{err}"
    );
}

/// Runs `name`'s checkpoint on `pixel_values` and returns the error message.
fn forward_error(name: &str, task: Task, pixel_values: Tensor) -> String {
    let dir = models_dir().join(name);
    let model =
        Model::from_pretrained(dir.to_str().unwrap(), task, &LoadOptions::default()).unwrap();
    let mut batch = Batch::new();
    batch.insert("pixel_values", pixel_values);
    model.forward(&batch).expect_err("must fail").to_string()
}

/// The channel checks use transformers' messages (ViT's names both counts, ConvNext's does not).
#[test]
fn vit_and_convnext_channel_checks() {
    let one_channel = Tensor::zeros((1, 1, 32, 32), DType::F32, &Device::Cpu).unwrap();
    let msg = forward_error("vit_base", Task::Base, one_channel.clone());
    assert!(
        msg.contains("Make sure that the channel dimension of the pixel values match with the one set in the configuration. Expected 3 but got 1."),
        "{msg}"
    );
    let msg = forward_error("convnext_base", Task::Base, one_channel);
    assert!(
        msg.contains("Make sure that the channel dimension of the pixel values match with the one set in the configuration."),
        "{msg}"
    );
    // Not a 4-d tensor, and too small for the stem: errors, not panics.
    let flat = Tensor::zeros((3, 32), DType::F32, &Device::Cpu).unwrap();
    assert!(forward_error("convnext_base", Task::Base, flat).contains("pixel_values"));
    let tiny = Tensor::zeros((1, 3, 2, 2), DType::F32, &Device::Cpu).unwrap();
    assert!(forward_error("convnext_base", Task::Base, tiny).contains("Kernel size"));
}

/// ConvNext accepts any input size (no fixed image size), unlike ViT.
#[test]
fn convnext_other_sizes_run() {
    let dir = models_dir().join("convnext_image_classification");
    let model = Model::from_pretrained(
        dir.to_str().unwrap(),
        Task::ImageClassification,
        &LoadOptions::default(),
    )
    .unwrap();
    let mut batch = Batch::new();
    batch.insert(
        "pixel_values",
        Tensor::ones((1, 3, 45, 61), DType::F32, &Device::Cpu).unwrap(),
    );
    let logits = model.forward(&batch).unwrap();
    assert_eq!(logits.require("logits").unwrap().dims(), &[1, 4]);
}

/// f16 loads of the vision models run and stay close to the f32 reference. (bf16 is not tested:
/// candle's CPU conv2d has no bf16 kernel, so `nn::Conv2d` would need to widen to f32 first.)
#[test]
fn vision_half_precision_runs() {
    for name in ["vit_image_classification", "convnext_image_classification"] {
        let case = vision_case(name);
        let dir = models_dir().join(name);
        let expected = expected(dir.join("expected.safetensors"));
        let batch = inputs(name, &case, &expected);
        let options = LoadOptions {
            dtype: autoclass::DTypeChoice::F16,
            ..Default::default()
        };
        let model =
            Model::from_pretrained(dir.to_str().unwrap(), Task::ImageClassification, &options)
                .unwrap();
        let out = model.forward(&batch).unwrap();
        assert_close(
            &format!("{name} f16"),
            out.require("logits").unwrap(),
            &expected["logits"],
            0.1,
        );
    }
}
