//! Parity of the audio models (AutoModel, AutoModelForAudioClassification, AutoModelForCTC for
//! Wav2Vec2 and HuBERT) with Python transformers on the fixtures in `fixtures/audio/models`, and
//! of `Wav2Vec2CTCTokenizer` decoding on `fixtures/audio/ctc_decode_cases.json`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashMap;
use std::path::PathBuf;

use autoclass::candle_core::{DType, Device, Tensor};
use autoclass::tokenization::ctc::{CtcDecodeOptions, CtcDecoded, Wav2Vec2CtcTokenizer};
use autoclass::{
    Batch, Checkpoint, ForwardOptions, HubOptions, LoadOptions, Model, Task, ARCHITECTURES,
};
use common::*;
use serde_json::{Map, Value};

const TOL: f32 = 5e-4;

/// `fixtures/audio/models`.
fn models_dir() -> PathBuf {
    fixtures().join("audio").join("models")
}

/// Reads `fixtures/audio/models/<name>/case.json`.
fn audio_case(name: &str) -> Value {
    let path = models_dir().join(name).join("case.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// The case's inputs (`input_values`, maybe `attention_mask`), read from its expected.safetensors.
fn inputs(name: &str, case: &Value, expected: &HashMap<String, Tensor>) -> Batch {
    let shape: Vec<usize> = case["input_shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    let mut batch = Batch::new();
    for key in strings(&case["inputs"]) {
        let tensor = expected
            .get(&key)
            .unwrap_or_else(|| panic!("{name}: expected.safetensors lacks {key}"));
        assert_eq!(tensor.dims(), &shape[..], "{name}: {key} shape");
        batch.insert(key, tensor.clone());
    }
    batch
}

/// The checkpoint folder a case loads (its own, or `load_from`'s).
fn checkpoint_dir(case: &Value, name: &str) -> PathBuf {
    match case["load_from"].as_str() {
        Some(other) => models_dir().join(other),
        None => models_dir().join(name),
    }
}

/// Row-wise argmax of logits `[B, F, V]`.
fn argmax_ids(logits: &Tensor) -> Vec<Vec<i64>> {
    logits
        .argmax(2)
        .unwrap()
        .to_vec2::<u32>()
        .unwrap()
        .into_iter()
        .map(|r| r.into_iter().map(i64::from).collect())
        .collect()
}

/// Loads the case's checkpoint for its task, checks the class and the load report against
/// transformers', runs the model on the reference inputs and compares every listed output at
/// 5e-4; for an `expect_error` case, checks that loading or running fails with transformers'
/// message. CTC cases also check the greedy ids and (with a tokenizer) the transcription.
/// Returns the largest difference seen.
fn run_case(name: &str) -> f32 {
    let case = audio_case(name);
    let dir = models_dir().join(name);
    let ckpt_dir = checkpoint_dir(&case, name);
    let ckpt = ckpt_dir.to_str().unwrap();
    let expected = expected(dir.join("expected.safetensors"));
    let batch = inputs(name, &case, &expected);
    let task: Task = case["task"].as_str().unwrap().parse().unwrap();
    let options = ForwardOptions {
        output_hidden_states: case["output_hidden_states"].as_bool().unwrap_or(false),
        output_attentions: false,
        ..Default::default()
    };
    let loaded = Model::from_pretrained(ckpt, task, &LoadOptions::default());

    let Some((max, outputs)) =
        check_model_case(name, &case, loaded, &batch, &options, &expected, TOL)
    else {
        return 0.0;
    };

    if let Some(ids) = case["predicted_ids"].as_array() {
        let reference: Vec<Vec<i64>> = ids
            .iter()
            .map(|r| {
                r.as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_i64().unwrap())
                    .collect()
            })
            .collect();
        let logits = outputs.require("logits").unwrap();
        assert_eq!(argmax_ids(logits), reference, "{name}: greedy CTC ids");
    }
    if let Some(transcription) = case["transcription"].as_array() {
        let reference: Vec<String> = transcription
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect();
        let checkpoint = Checkpoint::resolve(ckpt, &HubOptions::default()).unwrap();
        let tokenizer = Wav2Vec2CtcTokenizer::from_checkpoint(&checkpoint).unwrap();
        let text = tokenizer
            .decode_logits(outputs.require("logits").unwrap())
            .unwrap();
        assert_eq!(text, reference, "{name}: transcription");
        eprintln!("{name}: transcription {text:?}");
    }
    eprintln!("{name}: max |diff| {max:e}");
    max
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
    wav2vec2_base,
    wav2vec2_base_masked,
    wav2vec2_legacy_weight_norm,
    wav2vec2_ctc_into_base,
    wav2vec2_audio_classification,
    wav2vec2_audio_classification_nomask,
    wav2vec2_audio_classification_weighted,
    wav2vec2_base_into_audio_classification,
    wav2vec2_large_layout_audio_classification,
    wav2vec2_ctc,
    wav2vec2_large_layout_ctc,
    wav2vec2_ctc_no_vocab_size,
    hubert_base,
    hubert_audio_classification,
    hubert_ctc,
);

/// Every case folder in `fixtures/audio/models` is run by a parity test above.
#[test]
fn every_audio_fixture_is_tested() {
    for entry in std::fs::read_dir(models_dir()).unwrap() {
        let entry = entry.unwrap();
        if entry.path().join("case.json").is_file() {
            let name = entry.file_name().to_string_lossy().into_owned();
            assert!(
                PARITY_CASES.contains(&name.as_str()),
                "fixture {name} has no parity test"
            );
        }
    }
}

/// Walks the registry: every (audio architecture, task) is covered by a parity case above named
/// `{model_type}_{task}` (or `{model_type}_{task}_{variant}`, or `{model_type}_{variant}_{task}`
/// for a layout variant such as `wav2vec2_large_layout_ctc`) that declares that task and class
/// and loads cleanly.
#[test]
fn every_registered_audio_task_has_a_parity_fixture() {
    let audio: Vec<_> = ARCHITECTURES
        .iter()
        .filter(|a| a.feature_extractor_class().is_some())
        .collect();
    for model_type in ["wav2vec2", "hubert"] {
        assert!(
            audio.iter().any(|a| a.model_type() == model_type),
            "{model_type} is registered as an audio model"
        );
    }
    for arch in audio {
        for (task, class) in arch.tasks() {
            let task_name = if *task == Task::Base {
                "base".to_string()
            } else {
                task.as_str().replace('-', "_")
            };
            let prefix = format!("{}_", arch.model_type());
            let covering: Vec<&str> = PARITY_CASES
                .iter()
                .copied()
                .filter(|c| {
                    c.strip_prefix(&prefix).is_some_and(|rest| {
                        rest == task_name
                            || rest.starts_with(&format!("{task_name}_"))
                            || rest.ends_with(&format!("_{task_name}"))
                    })
                })
                .filter(|c| {
                    let case = audio_case(c);
                    case["task"].as_str() == Some(task.as_str())
                        && case["model_class"].as_str() == Some(*class)
                        && case["expect_error"].is_null()
                })
                .collect();
            assert!(
                !covering.is_empty(),
                "{}_{task_name}: no parity case covers {} / {class}",
                arch.model_type(),
                task.as_str()
            );
        }
    }
}

/// The decode options of a case's `kwargs`.
fn decode_options(kwargs: &Value) -> CtcDecodeOptions {
    let mut options = CtcDecodeOptions::default();
    for (k, v) in kwargs.as_object().unwrap() {
        let b = v.as_bool().unwrap_or_else(|| panic!("kwarg {k}: {v}"));
        match k.as_str() {
            "skip_special_tokens" => options.skip_special_tokens = b,
            "group_tokens" => options.group_tokens = b,
            "spaces_between_special_tokens" => options.spaces_between_special_tokens = b,
            "clean_up_tokenization_spaces" => options.clean_up_tokenization_spaces = Some(b),
            "output_char_offsets" => options.output_char_offsets = b,
            "output_word_offsets" => options.output_word_offsets = b,
            other => panic!("unhandled decode kwarg {other}"),
        }
    }
    options
}

/// A decode result as transformers' JSON: a string, or {text, char_offsets, word_offsets}.
fn decoded_json(d: &CtcDecoded, options: &CtcDecodeOptions) -> Value {
    if !(options.output_char_offsets || options.output_word_offsets) {
        return Value::String(d.text.clone());
    }
    let chars = d.char_offsets.as_ref().map(|list| {
        list.iter()
            .map(|c| serde_json::json!({"char": c.char, "start_offset": c.start_offset, "end_offset": c.end_offset}))
            .collect::<Vec<_>>()
    });
    let words = d.word_offsets.as_ref().map(|list| {
        list.iter()
            .map(|w| serde_json::json!({"word": w.word, "start_offset": w.start_offset, "end_offset": w.end_offset}))
            .collect::<Vec<_>>()
    });
    serde_json::json!({"text": d.text, "char_offsets": chars, "word_offsets": words})
}

/// `ctc_decode_cases.json`: every decode / batch_decode matches transformers exactly.
#[test]
fn ctc_decode_matches_transformers() {
    let path = fixtures().join("audio").join("ctc_decode_cases.json");
    let file: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let vocab = file["vocab"].as_object().unwrap();
    let cases = file["cases"].as_array().unwrap();
    assert!(!cases.is_empty());
    let ids = |v: &Value| -> Vec<i64> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|i| i.as_i64().unwrap())
            .collect()
    };
    for case in cases {
        let note = case["note"].as_str().unwrap();
        let mut config: Map<String, Value> = file["tokenizer_config"].as_object().unwrap().clone();
        config.insert("do_lower_case".into(), case["do_lower_case"].clone());
        let tokenizer = Wav2Vec2CtcTokenizer::from_json(vocab, &config).unwrap();
        let options = decode_options(&case["kwargs"]);
        let got = if case["batch"].as_bool().unwrap_or(false) {
            let rows: Vec<Vec<i64>> = case["ids"].as_array().unwrap().iter().map(ids).collect();
            let decoded = tokenizer.batch_decode_with(&rows, &options).unwrap();
            Value::Array(decoded.iter().map(|d| decoded_json(d, &options)).collect())
        } else {
            decoded_json(
                &tokenizer.decode_with(&ids(&case["ids"]), &options).unwrap(),
                &options,
            )
        };
        assert_eq!(got, case["expected"], "{note}");
    }
}

/// The CTC tokenizer of the hub-layout folder: ids, sizes, and `decode` / `batch_decode`.
#[test]
fn ctc_tokenizer_from_checkpoint() {
    let dir = models_dir().join("wav2vec2_ctc");
    let checkpoint = Checkpoint::resolve(dir.to_str().unwrap(), &HubOptions::default()).unwrap();
    let tokenizer = Wav2Vec2CtcTokenizer::from_checkpoint(&checkpoint).unwrap();
    assert_eq!(tokenizer.vocab_size(), 12);
    assert_eq!(tokenizer.pad_token_id(), Some(0));
    assert_eq!(tokenizer.word_delimiter_token_id(), Some(4));
    assert_eq!(
        tokenizer
            .decode(&[7, 7, 6, 0, 8, 8, 0, 8, 9, 4, 11, 9])
            .unwrap(),
        "HELLO TO"
    );
    assert_eq!(
        tokenizer
            .batch_decode(&[vec![10, 5, 0, 8, 11], vec![]])
            .unwrap(),
        vec!["SALT".to_string(), String::new()]
    );
    // decode_logits: one-hot logits decode like their ids.
    let ids = [7u32, 7, 0, 5, 4, 10];
    let mut values = vec![0f32; ids.len() * 12];
    for (i, &id) in ids.iter().enumerate() {
        values[i * 12 + id as usize] = 1.0;
    }
    let logits = Tensor::from_vec(values, (1, ids.len(), 12), &Device::Cpu).unwrap();
    assert_eq!(
        tokenizer.decode_logits(&logits).unwrap(),
        vec!["HA S".to_string()]
    );
    assert!(tokenizer
        .decode_logits(&logits.squeeze(0).unwrap())
        .is_err());
}

/// A malformed vocab.json is an error naming the file, not a panic.
#[test]
fn ctc_tokenizer_malformed_vocab() {
    let dir = std::env::temp_dir().join(format!("autoclass-ctc-vocab-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let check = |content: &str, expect: &str| {
        std::fs::write(dir.join("vocab.json"), content).unwrap();
        let checkpoint =
            Checkpoint::resolve(dir.to_str().unwrap(), &HubOptions::default()).unwrap();
        let err = Wav2Vec2CtcTokenizer::from_checkpoint(&checkpoint)
            .err()
            .unwrap_or_else(|| panic!("{content:?} must fail"))
            .to_string();
        assert!(err.contains("vocab.json"), "{err}");
        assert!(err.contains(expect), "{err}");
    };
    check("{\"a\": 0,", "not a valid JSON");
    check("[1, 2]", "JSON object");
    check("{\"a\": \"zero\"}", "integer ids");
    check("{\"eng\": {\"a\": 0}}", "target_lang");
    std::fs::remove_dir_all(&dir).unwrap();
    // No vocab.json at all: transformers' missing-file message.
    let empty = models_dir().join("wav2vec2_base");
    let checkpoint = Checkpoint::resolve(empty.to_str().unwrap(), &HubOptions::default()).unwrap();
    let err = Wav2Vec2CtcTokenizer::from_checkpoint(&checkpoint)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("vocab.json"), "{err}");
}

/// Loads a case's checkpoint for `task`.
fn load(name: &str, task: Task) -> Model {
    let dir = models_dir().join(name);
    Model::from_pretrained(dir.to_str().unwrap(), task, &LoadOptions::default()).unwrap()
}

/// Runs `model` on `input_values` (and an optional mask) and returns the error message.
fn forward_error(model: &Model, input_values: Tensor, mask: Option<Tensor>) -> String {
    let mut batch = Batch::new();
    batch.insert("input_values", input_values);
    if let Some(m) = mask {
        batch.insert("attention_mask", m);
    }
    model.forward(&batch).expect_err("must fail").to_string()
}

/// Inputs shorter than the feature encoder's receptive field, of the wrong rank, or with a
/// mismatched mask are clear errors, not panics.
#[test]
fn bad_audio_inputs_are_errors() {
    let model = load("wav2vec2_base", Task::Base);
    // Receptive field of conv_kernel (10,3,3) / conv_stride (5,2,2): 10 + 5·(3-1) + 10·(3-1) = 40.
    let short = Tensor::zeros((1, 39), DType::F32, &Device::Cpu).unwrap();
    let msg = forward_error(&model, short, None);
    assert!(msg.contains("39 samples") && msg.contains("40"), "{msg}");
    let ok = Tensor::zeros((1, 40), DType::F32, &Device::Cpu).unwrap();
    let mut batch = Batch::new();
    batch.insert("input_values", ok);
    let out = model.forward(&batch).unwrap();
    assert_eq!(
        out.require("last_hidden_state").unwrap().dims(),
        &[1, 1, 32]
    );

    let flat = Tensor::zeros(4000, DType::F32, &Device::Cpu).unwrap();
    assert!(forward_error(&model, flat, None).contains("input_values"));
    let values = Tensor::zeros((2, 4000), DType::F32, &Device::Cpu).unwrap();
    let mask = Tensor::ones((2, 3999), DType::I64, &Device::Cpu).unwrap();
    assert!(forward_error(&model, values, Some(mask)).contains("attention_mask"));
    let empty = Model::from_pretrained(
        models_dir().join("wav2vec2_base").to_str().unwrap(),
        Task::Base,
        &LoadOptions::default(),
    )
    .unwrap();
    let mut batch = Batch::new();
    batch.insert(
        "attention_mask",
        Tensor::ones((1, 10), DType::I64, &Device::Cpu).unwrap(),
    );
    assert!(empty
        .forward(&batch)
        .unwrap_err()
        .to_string()
        .contains("input_values"));
}

/// Attentions come back per layer with the frame count, and a masked row's padded keys get no
/// attention.
#[test]
fn attentions_respect_the_frame_mask() {
    let case = audio_case("wav2vec2_base_masked");
    let expected = expected(
        models_dir()
            .join("wav2vec2_base_masked")
            .join("expected.safetensors"),
    );
    let batch = inputs("wav2vec2_base_masked", &case, &expected);
    let model = load("wav2vec2_base", Task::Base);
    let out = model
        .forward_with(
            &batch,
            &ForwardOptions {
                output_hidden_states: false,
                output_attentions: true,
                ..Default::default()
            },
        )
        .unwrap();
    let attentions = out.attentions.as_ref().unwrap();
    assert_eq!(attentions.len(), 2);
    assert_eq!(attentions[0].dims(), &[2, 4, 199, 199]);
    // Row 1 has 2600 samples → 129 valid frames: keys 129.. get (numerically) zero weight.
    let padded: Vec<f32> = attentions[0]
        .get(1)
        .unwrap()
        .narrow(2, 129, 70)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    assert!(padded.iter().all(|p| *p == 0.0));
}

/// Half-precision loads run and stay close to the f32 reference.
#[test]
fn audio_half_precision_runs() {
    for (name, task) in [
        ("wav2vec2_audio_classification", Task::AudioClassification),
        ("wav2vec2_large_layout_ctc", Task::Ctc),
    ] {
        let case = audio_case(name);
        let dir = models_dir().join(name);
        let expected = expected(dir.join("expected.safetensors"));
        let batch = inputs(name, &case, &expected);
        for dtype in [autoclass::DTypeChoice::F16, autoclass::DTypeChoice::BF16] {
            let options = LoadOptions {
                dtype,
                ..Default::default()
            };
            let model = Model::from_pretrained(dir.to_str().unwrap(), task, &options).unwrap();
            let out = model.forward(&batch).unwrap();
            assert_close(
                &format!("{name} {dtype:?}"),
                out.require("logits").unwrap(),
                &expected["logits"],
                0.5,
            );
        }
    }
}

/// Copies case `name`'s checkpoint into a fresh temporary folder, with its tensors changed by
/// `edit_tensors` and its config.json by `edit_config`.
fn derived_checkpoint(
    name: &str,
    tag: &str,
    edit_tensors: impl FnOnce(&mut HashMap<String, Tensor>),
    edit_config: impl FnOnce(&mut Map<String, Value>),
) -> PathBuf {
    let src = models_dir().join(name);
    let dir = std::env::temp_dir().join(format!("autoclass-audio-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut tensors = expected(src.join("model.safetensors"));
    edit_tensors(&mut tensors);
    autoclass::candle_core::safetensors::save(&tensors, dir.join("model.safetensors")).unwrap();
    let mut config: Map<String, Value> =
        serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    edit_config(&mut config);
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_string_pretty(&config).unwrap(),
    )
    .unwrap();
    dir
}

/// HuBERT's `conv_pos_batch_norm` variant (BatchNorm1d before a plain convolution, no weight
/// norm): with an identity BatchNorm and the weight-normed kernel written out, it reproduces
/// hubert_base, and every tensor (including `num_batches_tracked`) loads cleanly.
#[test]
fn hubert_conv_pos_batch_norm() {
    let p = "encoder.pos_conv_embed.";
    let dir = derived_checkpoint(
        "hubert_base",
        "hubert-bn",
        |t| {
            let g = t
                .remove(&format!("{p}conv.parametrizations.weight.original0"))
                .unwrap();
            let v = t
                .remove(&format!("{p}conv.parametrizations.weight.original1"))
                .unwrap();
            let norm = v
                .sqr()
                .unwrap()
                .sum_keepdim(0)
                .unwrap()
                .sum_keepdim(1)
                .unwrap()
                .sqrt()
                .unwrap();
            let w = v.broadcast_mul(&g.broadcast_div(&norm).unwrap()).unwrap();
            t.insert(format!("{p}conv.weight"), w);
            let d = 32;
            let cpu = &Device::Cpu;
            t.insert(
                format!("{p}batch_norm.weight"),
                Tensor::ones(d, DType::F32, cpu).unwrap(),
            );
            t.insert(
                format!("{p}batch_norm.bias"),
                Tensor::zeros(d, DType::F32, cpu).unwrap(),
            );
            t.insert(
                format!("{p}batch_norm.running_mean"),
                Tensor::zeros(d, DType::F32, cpu).unwrap(),
            );
            t.insert(
                format!("{p}batch_norm.running_var"),
                Tensor::ones(d, DType::F32, cpu).unwrap(),
            );
            t.insert(
                format!("{p}batch_norm.num_batches_tracked"),
                Tensor::new(0i64, cpu).unwrap(),
            );
        },
        |c| {
            c.insert("conv_pos_batch_norm".into(), Value::Bool(true));
        },
    );
    let model =
        Model::from_pretrained(dir.to_str().unwrap(), Task::Base, &LoadOptions::default()).unwrap();
    let info = model.loading_info();
    assert!(
        info.missing.is_empty() && info.unexpected.is_empty(),
        "{info:?}"
    );
    let case = audio_case("hubert_base");
    let expected = expected(
        models_dir()
            .join("hubert_base")
            .join("expected.safetensors"),
    );
    let out = model
        .forward(&inputs("hubert_base", &case, &expected))
        .unwrap();
    let diff = assert_close(
        "hubert conv_pos_batch_norm",
        out.require("last_hidden_state").unwrap(),
        &expected["last_hidden_state"],
        1e-3,
    );
    eprintln!("hubert conv_pos_batch_norm: max |diff| {diff:e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `adapter_attn_dim` (MMS): stable-layer-norm layers add `adapter_layer(h)`. A zero second
/// projection leaves the large-layout CTC logits unchanged; a non-zero one changes them.
#[test]
fn wav2vec2_attention_adapters() {
    let make = |tag: &str, out_bias: f32| {
        derived_checkpoint(
            "wav2vec2_large_layout_ctc",
            tag,
            |t| {
                let cpu = &Device::Cpu;
                for i in 0..2 {
                    let p = format!("wav2vec2.encoder.layers.{i}.adapter_layer.");
                    t.insert(
                        format!("{p}norm.weight"),
                        Tensor::ones(32, DType::F32, cpu).unwrap(),
                    );
                    t.insert(
                        format!("{p}norm.bias"),
                        Tensor::zeros(32, DType::F32, cpu).unwrap(),
                    );
                    t.insert(
                        format!("{p}linear_1.weight"),
                        (Tensor::ones((4, 32), DType::F32, cpu).unwrap() * 0.1).unwrap(),
                    );
                    t.insert(
                        format!("{p}linear_1.bias"),
                        Tensor::zeros(4, DType::F32, cpu).unwrap(),
                    );
                    t.insert(
                        format!("{p}linear_2.weight"),
                        Tensor::zeros((32, 4), DType::F32, cpu).unwrap(),
                    );
                    t.insert(
                        format!("{p}linear_2.bias"),
                        // Not a constant: the LayerNorms downstream would cancel a uniform shift.
                        (Tensor::arange(0f32, 32., cpu).unwrap() * f64::from(out_bias)).unwrap(),
                    );
                }
            },
            |c| {
                c.insert("adapter_attn_dim".into(), Value::from(4));
            },
        )
    };
    let case = audio_case("wav2vec2_large_layout_ctc");
    let expected = expected(
        models_dir()
            .join("wav2vec2_large_layout_ctc")
            .join("expected.safetensors"),
    );
    let batch = inputs("wav2vec2_large_layout_ctc", &case, &expected);
    for (tag, bias, same) in [("adapter-zero", 0.0, true), ("adapter-bias", 0.05, false)] {
        let dir = make(tag, bias);
        let model =
            Model::from_pretrained(dir.to_str().unwrap(), Task::Ctc, &LoadOptions::default())
                .unwrap();
        let info = model.loading_info();
        assert!(
            info.missing.is_empty() && info.unexpected.is_empty(),
            "{tag}: {info:?}"
        );
        let logits = model
            .forward(&batch)
            .unwrap()
            .require("logits")
            .unwrap()
            .clone();
        let diff = (logits - &expected["logits"])
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert_eq!(diff <= TOL, same, "{tag}: max |diff| {diff}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

/// `add_adapter` (the convolutional adapter) is refused, with transformers' message for
/// sequence classification; `mask_time_prob > 0` makes `masked_spec_embed` a model parameter,
/// reported missing when the checkpoint lacks it (as transformers does).
#[test]
fn wav2vec2_config_switches() {
    let dir = models_dir().join("wav2vec2_audio_classification");
    let mut options = LoadOptions::default();
    options
        .config
        .values
        .insert("add_adapter".into(), Value::Bool(true));
    let err = Model::from_pretrained(dir.to_str().unwrap(), Task::AudioClassification, &options)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("Sequence classification does not support the use of Wav2Vec2 adapters (config.add_adapter=True)"),
        "{err}"
    );
    let err = Model::from_pretrained(dir.to_str().unwrap(), Task::Base, &options)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("add_adapter"), "{err}");

    let mut options = LoadOptions::default();
    options
        .config
        .values
        .insert("mask_time_prob".into(), Value::from(0.05));
    let model =
        Model::from_pretrained(dir.to_str().unwrap(), Task::AudioClassification, &options).unwrap();
    assert_eq!(
        model.loading_info().missing,
        vec!["wav2vec2.masked_spec_embed".to_string()]
    );

    let mut options = LoadOptions::default();
    options
        .config
        .values
        .insert("feat_extract_norm".into(), Value::from("batch"));
    let err = Model::from_pretrained(dir.to_str().unwrap(), Task::Base, &options)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains(
            "`config.feat_extract_norm` is batch, but has to be one of ['group', 'layer']"
        ),
        "{err}"
    );
}

/// The seed's reconstructed XLS-R emotion config (v4.8-era keys, no weights) parses into
/// `Wav2Vec2Config` with transformers' defaults where it is silent.
#[test]
fn seed_emotion_config_parses() {
    use autoclass::models::wav2vec2::Wav2Vec2Config;
    let dir = repo_root()
        .join("checkpoints")
        .join("wav2vec2-lg-xlsr-en-speech-emotion-recognition");
    let config = autoclass::AutoConfig::from_pretrained(dir.to_str().unwrap()).unwrap();
    let cfg: &Wav2Vec2Config = config.model_config().unwrap();
    assert_eq!(cfg.hidden_size, 1024);
    assert_eq!(cfg.num_hidden_layers, 24);
    assert_eq!(cfg.feat_extract_norm, "layer");
    assert!(cfg.do_stable_layer_norm && cfg.conv_bias);
    assert_eq!(cfg.classifier_proj_size, 256);
    assert_eq!(cfg.output_hidden_size, Some(1024));
    assert_eq!(config.num_labels(), 8);
    assert_eq!(config.label(4), "happy");
}
