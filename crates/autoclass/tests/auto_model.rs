//! Parity of AutoModel / AutoModelFor* with Python transformers on the committed fixtures.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use autoclass::{ForwardOptions, LoadOptions, Model, Task, Tokenizer, ARCHITECTURES};
use common::*;
use serde_json::Value;

const TOL: f32 = 1e-4;

/// Tokenizes the case's texts with the checkpoint's own tokenizer, checks the ids against the
/// reference exactly, runs the model and compares every deterministic output at 1e-4.
fn run_case(name: &str) {
    let case = case(name);
    let dir = fixtures().join(name);
    let ckpt_dir = match case["load_from"].as_str() {
        Some(other) => fixtures().join(other),
        None => dir.clone(),
    };
    let expected = expected(dir.join("expected.safetensors"));
    let ckpt = ckpt_dir.to_str().unwrap();

    let tokenizer = autoclass::AutoTokenizer::from_pretrained(ckpt).unwrap();
    let texts = strings(&case["texts"]);
    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
    let pairs = strings(&case["text_pairs"]);
    let pairs: Vec<&str> = pairs.iter().map(String::as_str).collect();
    let encoding = tokenizer
        .encode_batch(
            &texts,
            (!pairs.is_empty()).then_some(&pairs[..]),
            &encode_options(&case),
        )
        .unwrap();
    assert_eq!(
        encoding.token_type_ids.is_some(),
        case["tokenizer_returns_token_type_ids"].as_bool().unwrap(),
        "{name}: token_type_ids presence"
    );
    let batch = encoding
        .to_batch(&autoclass::candle_core::Device::Cpu)
        .unwrap();
    for key in ["input_ids", "attention_mask", "token_type_ids"] {
        match (batch.get(key), expected.get(key)) {
            (Some(a), Some(e)) => assert_ids(&format!("{name}/{key}"), a, e),
            (None, None) => {}
            (a, e) => panic!(
                "{name}/{key}: ours {:?}, reference {:?}",
                a.is_some(),
                e.is_some()
            ),
        }
    }

    let task: Task = case["task"].as_str().unwrap().parse().unwrap();
    let model = Model::from_pretrained(ckpt, task, &LoadOptions::default()).unwrap();
    assert_eq!(model.class_name(), case["model_class"].as_str().unwrap());
    let info = model.loading_info();
    let listed = |k: &str| strings(&case["loading_info"][k]);
    assert_eq!(info.missing, listed("missing_keys"), "{name}: missing keys");
    assert_eq!(
        info.unexpected,
        listed("unexpected_keys"),
        "{name}: unexpected keys"
    );

    let options = ForwardOptions {
        output_hidden_states: case["output_hidden_states"].as_bool().unwrap(),
        output_attentions: case["output_attentions"].as_bool().unwrap(),
        ..Default::default()
    };
    let outputs = model.forward_with(&batch, &options).unwrap();
    let ours: std::collections::HashMap<String, _> = outputs.named_tensors().into_iter().collect();
    let compare = strings(&case["compare"]);
    assert!(!compare.is_empty(), "{name}: nothing to compare");
    for key in compare {
        let e = expected
            .get(&key)
            .unwrap_or_else(|| panic!("{name}: reference lacks {key}"));
        let a = ours
            .get(&key)
            .unwrap_or_else(|| panic!("{name}: we returned no {key}"));
        assert_close(&format!("{name}/{key}"), a, e, TOL);
    }
    // Sequence classification reads only [CLS] (the last layer then runs on each text's first
    // row only): on a padded batch, padding-free batching gives the padded run's logits.
    if task == Task::SequenceClassification {
        let ragged = [
            "short",
            "a much longer text, so that the first one is padded",
        ];
        let ragged = tokenizer
            .encode_batch(&ragged, None, &encode_options(&case))
            .unwrap()
            .to_batch(&autoclass::candle_core::Device::Cpu)
            .unwrap();
        let mask = ragged
            .get("attention_mask")
            .unwrap()
            .to_vec2::<i64>()
            .unwrap();
        assert!(mask.iter().flatten().any(|&m| m == 0), "{name}: not padded");
        let padded = model.forward(&ragged).unwrap();
        let padding_free = ForwardOptions {
            padding_free: true,
            ..Default::default()
        };
        let packed = model.forward_with(&ragged, &padding_free).unwrap();
        assert_close(
            &format!("{name}/logits (padding-free)"),
            packed.require("logits").unwrap(),
            padded.require("logits").unwrap(),
            1e-5,
        );
    }
    // Every output the reference produced, we produce too.
    for key in expected
        .keys()
        .filter(|k| !["input_ids", "attention_mask", "token_type_ids"].contains(&k.as_str()))
    {
        assert!(ours.contains_key(key), "{name}: missing output {key}");
    }
}

macro_rules! parity {
    ($($name:ident),* $(,)?) => {$(
        #[test]
        fn $name() {
            run_case(stringify!($name));
        }
    )*};
}

parity!(
    bert_base,
    bert_sequence_classification,
    bert_token_classification,
    bert_masked_lm,
    bert_question_answering,
    distilbert_base,
    distilbert_sequence_classification,
    distilbert_token_classification,
    distilbert_masked_lm,
    distilbert_question_answering,
    bert_vocab_only,
    bert_base_into_head,
    bert_head_into_base,
    distilbert_base_into_token_classification,
    bert_sharded,
    bert_legacy_names,
);

/// Walks the registry: every declared (architecture, task) of the text architectures has a
/// fixture case named `{model_type}_{task}` that declares that task and class, so the parity
/// tests above cover it. (Vision and audio architectures are walked in vision_models.rs and
/// audio_models.rs.)
#[test]
fn every_registered_task_has_a_parity_fixture() {
    for arch in ARCHITECTURES
        .iter()
        .filter(|a| a.image_processor_class().is_none() && a.feature_extractor_class().is_none())
    {
        for (task, class) in arch.tasks() {
            let name = format!("{}_{}", arch.model_type(), task.as_str().replace('-', "_"));
            let name = if *task == Task::Base {
                format!("{}_base", arch.model_type())
            } else {
                name
            };
            let case = case(&name);
            assert_eq!(case["task"].as_str(), Some(task.as_str()), "{name}");
            assert_eq!(case["model_class"].as_str(), Some(*class), "{name}");
        }
    }
}

/// A shape that does not match the config is an error naming the tensor, not a panic.
#[test]
fn shape_mismatch_names_the_tensor() {
    let case = case("bert_mismatch");
    let dir = fixtures().join("bert_mismatch");
    let err = Model::from_pretrained(dir.to_str().unwrap(), Task::Base, &LoadOptions::default())
        .err()
        .expect("a mismatched checkpoint must not load");
    let msg = err.to_string();
    let tensor = case["mismatched_tensor"].as_str().unwrap();
    assert!(msg.contains(tensor), "{msg}");
    assert!(
        msg.contains("[16, 32]") && msg.contains("[32, 32]"),
        "{msg}"
    );
    assert!(matches!(err, autoclass::Error::ShapeMismatch { .. }));
}

/// Missing head weights are initialised reproducibly: two loads give the same logits.
#[test]
fn new_heads_are_seeded() {
    let dir = fixtures().join("bert_base");
    let load = || {
        let model = Model::from_pretrained(
            dir.to_str().unwrap(),
            Task::SequenceClassification,
            &LoadOptions::default(),
        )
        .unwrap();
        let tok: Tokenizer =
            autoclass::AutoTokenizer::from_pretrained(dir.to_str().unwrap()).unwrap();
        let batch = tok
            .encode("Hello world!", &Default::default())
            .unwrap()
            .to_batch(model.device())
            .unwrap();
        model
            .forward(&batch)
            .unwrap()
            .require("logits")
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    };
    let a = load();
    assert_eq!(a, load());
    assert!(a.iter().any(|v| *v != 0.0));
}

/// Config overrides: `num_labels` changes the head width and regenerates label names.
#[test]
fn num_labels_override() {
    let dir = fixtures().join("bert_sequence_classification");
    let mut options = LoadOptions::default();
    options.config.num_labels = Some(5);
    let model = Model::from_pretrained(
        dir.to_str().unwrap(),
        Task::SequenceClassification,
        &options,
    );
    // The classifier in the checkpoint has 3 rows: transformers refuses the mismatch too.
    let err = model
        .err()
        .expect("3-label checkpoint into a 5-label head must fail");
    assert!(err.to_string().contains("classifier.weight"), "{err}");

    let config = autoclass::AutoConfig::from_pretrained_with(
        dir.to_str().unwrap(),
        &Default::default(),
        &options.config,
    )
    .unwrap();
    assert_eq!(config.num_labels(), 5);
    assert_eq!(config.label(4), "LABEL_4");
    let plain = autoclass::AutoConfig::from_pretrained(dir.to_str().unwrap()).unwrap();
    assert_eq!(plain.num_labels(), 3);
    assert_eq!(plain.label(2), "positive");
}

/// f16 and bf16 loads run and stay close to the f32 reference.
#[test]
fn half_precision_runs() {
    let name = "bert_sequence_classification";
    let dir = fixtures().join(name);
    let expected = expected(dir.join("expected.safetensors"));
    for dtype in [autoclass::DTypeChoice::F16, autoclass::DTypeChoice::BF16] {
        let options = LoadOptions {
            dtype,
            ..Default::default()
        };
        let model = Model::from_pretrained(
            dir.to_str().unwrap(),
            Task::SequenceClassification,
            &options,
        )
        .unwrap();
        let mut batch = autoclass::Batch::new();
        for key in ["input_ids", "attention_mask", "token_type_ids"] {
            batch.insert(key, expected[key].clone());
        }
        let logits = model.forward(&batch).unwrap();
        assert_close(
            &format!("{dtype:?}"),
            logits.require("logits").unwrap(),
            &expected["logits"],
            0.1,
        );
    }
}

#[allow(dead_code)]
fn _unused(_: Value) {}
