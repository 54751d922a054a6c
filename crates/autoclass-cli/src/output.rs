//! What `run` and `inspect` print: one JSON value per result, and its human rendering.

use autoclass::candle_core::{DType, Tensor, D};
use autoclass::tokenization::ctc::Wav2Vec2CtcTokenizer;
use autoclass::weights::{FrameworkChoice, FLAX_WEIGHTS_NAME, TF2_WEIGHTS_NAME};
use autoclass::{Checkpoint, Config, Encoding, Model, ModelOutput, Task, Tokenizer};
use serde_json::{json, Value};

/// How many predictions `masked-lm` shows per mask.
const TOP_K: usize = 5;
/// Longest answer span `question-answering` considers, in tokens (the pipeline's default).
const MAX_ANSWER_LEN: usize = 15;

fn softmax_rows(logits: &Tensor) -> autoclass::Result<Vec<Vec<f32>>> {
    let logits = logits.to_dtype(DType::F32)?;
    let probs = logits
        .broadcast_sub(&logits.max_keepdim(D::Minus1)?)?
        .exp()?;
    let probs = probs.broadcast_div(&probs.sum_keepdim(D::Minus1)?)?;
    let dims = probs.dims().to_vec();
    let width = dims.last().copied().unwrap_or(0);
    let flat = probs.flatten_all()?.to_vec1::<f32>()?;
    Ok(flat.chunks(width.max(1)).map(<[f32]>::to_vec).collect())
}

fn ranked(config: &Config, probs: &[f32]) -> Vec<Value> {
    let mut order: Vec<usize> = (0..probs.len()).collect();
    order.sort_by(|a, b| probs[*b].total_cmp(&probs[*a]));
    order
        .into_iter()
        .map(|i| json!({"label": config.label(i), "score": probs[i]}))
        .collect()
}

/// What a model was run on.
pub enum Inputs {
    /// Tokenized text.
    Text {
        /// The tokenizer used.
        tokenizer: Box<Tokenizer>,
        /// What it produced.
        encoding: Encoding,
    },
    /// Image files.
    Images(Vec<std::path::PathBuf>),
    /// A document: its words, and which word each first sub-token starts.
    Document {
        /// The words of each example.
        words: Vec<Vec<String>>,
        /// For each example and token, the word it starts.
        first_token_of: Vec<Vec<Option<usize>>>,
    },
    /// Audio files, and the CTC tokenizer for `ctc`.
    Audio {
        /// The files.
        paths: Vec<std::path::PathBuf>,
        /// The tokenizer that decodes CTC logits.
        ctc: Option<Box<Wav2Vec2CtcTokenizer>>,
    },
}

/// The result of `run` as JSON.
pub fn report(model: &Model, inputs: &Inputs, outputs: &ModelOutput) -> autoclass::Result<Value> {
    let config = model.config();
    let mut results = Vec::new();
    let text = match inputs {
        Inputs::Text {
            tokenizer,
            encoding,
        } => Some((tokenizer, encoding)),
        _ => None,
    };
    let need_text = || text.ok_or_else(|| autoclass::Error::input("this task needs --text"));
    match model.task() {
        Task::ImageClassification => {
            let paths = match inputs {
                Inputs::Images(p) => p.clone(),
                _ => Vec::new(),
            };
            for (i, probs) in softmax_rows(outputs.require("logits")?)?.iter().enumerate() {
                let top: Vec<Value> = ranked(config, probs).into_iter().take(TOP_K).collect();
                let image = paths.get(i).map(|p| p.display().to_string());
                results.push(json!({"index": i, "image": image, "top": top}));
            }
        }
        Task::AudioClassification => {
            let paths = match inputs {
                Inputs::Audio { paths, .. } => paths.clone(),
                _ => Vec::new(),
            };
            for (i, probs) in softmax_rows(outputs.require("logits")?)?.iter().enumerate() {
                let scores = ranked(config, probs);
                let best = scores.first().cloned().unwrap_or(Value::Null);
                let audio = paths.get(i).map(|p| p.display().to_string());
                results.push(json!({"index": i, "audio": audio, "label": best["label"], "score": best["score"], "scores": scores}));
            }
        }
        Task::Ctc => {
            let Inputs::Audio {
                ctc: Some(tokenizer),
                ..
            } = inputs
            else {
                return Err(autoclass::Error::input(
                    "ctc needs --audio and a CTC tokenizer",
                ));
            };
            let transcription = tokenizer.decode_logits(outputs.require("logits")?)?;
            return Ok(json!({
                "model": model.class_name(),
                "task": model.task().as_str(),
                "transcription": transcription,
            }));
        }
        Task::Backbone => {
            let maps = outputs.feature_maps.as_deref().unwrap_or_default();
            for (i, m) in maps.iter().enumerate() {
                results.push(
                    json!({"index": i, "name": format!("feature_maps.{i}"), "shape": m.dims()}),
                );
            }
        }
        Task::SequenceClassification => {
            let _ = need_text()?;
            for (i, probs) in softmax_rows(outputs.require("logits")?)?.iter().enumerate() {
                let scores = ranked(config, probs);
                let best = scores.first().cloned().unwrap_or(Value::Null);
                results.push(json!({"index": i, "label": best["label"], "score": best["score"], "scores": scores}));
            }
        }
        Task::TokenClassification if matches!(inputs, Inputs::Document { .. }) => {
            let Inputs::Document {
                words,
                first_token_of,
            } = inputs
            else {
                return Err(autoclass::Error::input(
                    "token-classification needs --text or --image",
                ));
            };
            let probs = softmax_rows(outputs.require("logits")?)?;
            let width = first_token_of.first().map_or(0, Vec::len);
            for (i, starts) in first_token_of.iter().enumerate() {
                let mut labelled = Vec::new();
                for (j, word) in starts.iter().enumerate() {
                    let (Some(w), Some(p)) = (word, probs.get(i * width + j)) else {
                        continue;
                    };
                    let best = (0..p.len())
                        .max_by(|a, b| p[*a].total_cmp(&p[*b]))
                        .unwrap_or(0);
                    let text = words
                        .get(i)
                        .and_then(|ws| ws.get(*w))
                        .cloned()
                        .unwrap_or_default();
                    labelled.push(json!({"index": w, "token": text, "label": config.label(best), "score": p[best]}));
                }
                results.push(json!({"index": i, "tokens": labelled}));
            }
        }
        Task::TokenClassification => {
            let (tokenizer, encoding) = need_text()?;
            let probs = softmax_rows(outputs.require("logits")?)?;
            let width = encoding.input_ids.first().map_or(0, Vec::len);
            for (i, ids) in encoding.input_ids.iter().enumerate() {
                let mut tokens = Vec::new();
                for (j, &id) in ids.iter().enumerate() {
                    if tokenizer.is_special_id(id) {
                        continue;
                    }
                    let Some(p) = probs.get(i * width + j) else {
                        continue;
                    };
                    let best = (0..p.len())
                        .max_by(|a, b| p[*a].total_cmp(&p[*b]))
                        .unwrap_or(0);
                    tokens.push(json!({"index": j, "token": tokenizer.id_to_token(id), "label": config.label(best), "score": p[best]}));
                }
                results.push(json!({"index": i, "tokens": tokens}));
            }
        }
        Task::MaskedLm => {
            let (tokenizer, encoding) = need_text()?;
            let mask_id = tokenizer
                .mask_token_id()
                .ok_or_else(|| autoclass::Error::input("this tokenizer has no mask token"))?;
            let logits = outputs.require("logits")?;
            for (i, ids) in encoding.input_ids.iter().enumerate() {
                let mut masks = Vec::new();
                for (j, _) in ids.iter().enumerate().filter(|(_, id)| **id == mask_id) {
                    let row = logits.get(i)?.get(j)?.unsqueeze(0)?;
                    let p = softmax_rows(&row)?.remove(0);
                    let mut order: Vec<usize> = (0..p.len()).collect();
                    order.sort_by(|a, b| p[*b].total_cmp(&p[*a]));
                    let top: Vec<Value> = order
                        .into_iter()
                        .take(TOP_K)
                        .map(|t| json!({"token": t, "token_str": tokenizer.id_to_token(t as i64), "score": p[t]}))
                        .collect();
                    masks.push(json!({"index": j, "predictions": top}));
                }
                if masks.is_empty() {
                    return Err(autoclass::Error::input(format!(
                        "text {i} has no mask token; put one in the text for masked-lm"
                    )));
                }
                results.push(json!({"index": i, "masks": masks}));
            }
        }
        Task::QuestionAnswering => {
            let (tokenizer, encoding) = need_text()?;
            let start = softmax_rows(&outputs.require("start_logits")?.unsqueeze(1)?)?;
            let end = softmax_rows(&outputs.require("end_logits")?.unsqueeze(1)?)?;
            for (i, seq) in encoding.sequence_ids.iter().enumerate() {
                let context: Vec<usize> = (0..seq.len()).filter(|&j| seq[j] == Some(1)).collect();
                let mut best: Option<(f32, usize, usize)> = None;
                for &s in &context {
                    for &e in context
                        .iter()
                        .filter(|&&e| e >= s && e < s + MAX_ANSWER_LEN)
                    {
                        let score = start.get(i).and_then(|r| r.get(s)).copied().unwrap_or(0.0)
                            * end.get(i).and_then(|r| r.get(e)).copied().unwrap_or(0.0);
                        if best.is_none_or(|(b, _, _)| score > b) {
                            best = Some((score, s, e));
                        }
                    }
                }
                let Some((score, s, e)) = best else {
                    results.push(json!({"index": i, "answer": null}));
                    continue;
                };
                let answer =
                    tokenizer.decode(encoding.input_ids[i].get(s..=e).unwrap_or_default(), true)?;
                results.push(json!({"index": i, "answer": answer, "score": score, "start_token": s, "end_token": e}));
            }
        }
        _ => {
            let mut shapes = serde_json::Map::new();
            for (name, t) in outputs.iter() {
                let first: Vec<f32> = t
                    .to_dtype(DType::F32)?
                    .flatten_all()?
                    .to_vec1::<f32>()?
                    .into_iter()
                    .take(5)
                    .collect();
                shapes.insert(
                    name.to_string(),
                    json!({"shape": t.dims(), "first_values": first}),
                );
            }
            results.push(Value::Object(shapes));
        }
    }
    Ok(json!({
        "model": model.class_name(),
        "task": model.task().as_str(),
        "results": results,
    }))
}

/// The human rendering of [`report`].
pub fn human(report: &Value) -> String {
    if let Some(lines) = report["transcription"].as_array() {
        return lines
            .iter()
            .map(|l| format!("{}\n", l.as_str().unwrap_or("")))
            .collect();
    }
    let mut out = format!(
        "{} ({})\n",
        report["model"].as_str().unwrap_or("?"),
        report["task"].as_str().unwrap_or("?")
    );
    let empty = Vec::new();
    for r in report["results"].as_array().unwrap_or(&empty) {
        match report["task"].as_str() {
            Some("sequence-classification") | Some("audio-classification") => {
                out += &format!("[{}]\n", r["index"]);
                for s in r["scores"].as_array().unwrap_or(&empty) {
                    out += &format!(
                        "  {:<20} {:.4}\n",
                        s["label"].as_str().unwrap_or("?"),
                        s["score"].as_f64().unwrap_or(0.0)
                    );
                }
            }
            Some("token-classification") => {
                out += &format!("[{}]\n", r["index"]);
                for t in r["tokens"].as_array().unwrap_or(&empty) {
                    out += &format!(
                        "  {:<16} {:<12} {:.4}\n",
                        t["token"].as_str().unwrap_or("?"),
                        t["label"].as_str().unwrap_or("?"),
                        t["score"].as_f64().unwrap_or(0.0)
                    );
                }
            }
            Some("masked-lm") => {
                for m in r["masks"].as_array().unwrap_or(&empty) {
                    out += &format!("[{}] mask at token {}\n", r["index"], m["index"]);
                    for p in m["predictions"].as_array().unwrap_or(&empty) {
                        out += &format!(
                            "  {:<16} {:.4}\n",
                            p["token_str"].as_str().unwrap_or("?"),
                            p["score"].as_f64().unwrap_or(0.0)
                        );
                    }
                }
            }
            Some("image-classification") => {
                out += &format!("[{}] {}\n", r["index"], r["image"].as_str().unwrap_or(""));
                for s in r["top"].as_array().unwrap_or(&empty) {
                    out += &format!(
                        "  {:<40} {:.4}\n",
                        s["label"].as_str().unwrap_or("?"),
                        s["score"].as_f64().unwrap_or(0.0)
                    );
                }
            }
            Some("backbone") => {
                out += &format!(
                    "  {}: shape {}\n",
                    r["name"].as_str().unwrap_or("?"),
                    r["shape"]
                );
            }
            Some("question-answering") => {
                out += &format!(
                    "[{}] {} ({:.4})\n",
                    r["index"],
                    r["answer"]
                        .as_str()
                        .map_or("<no answer>".to_string(), |a| format!("{a:?}")),
                    r["score"].as_f64().unwrap_or(0.0)
                );
            }
            _ => {
                if let Some(map) = r.as_object() {
                    for (name, v) in map {
                        out += &format!(
                            "  {name}: shape {} first values {}\n",
                            v["shape"], v["first_values"]
                        );
                    }
                }
            }
        }
    }
    out
}

/// Files `inspect` looks for.
const KNOWN_FILES: &[&str] = &[
    "config.json",
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
    "tf_model.h5",
    "flax_model.msgpack",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.txt",
    "preprocessor_config.json",
    "processor_config.json",
    "generation_config.json",
];

/// The weight file transformers 4.x picks with `choice` (`from_tf` / `from_flax`), its format
/// and why; or, when nothing loadable is there, `file: null` and what to do.
fn weight_choice(checkpoint: &Checkpoint, choice: FrameworkChoice) -> autoclass::Result<Value> {
    let has = |name: &str| checkpoint.get(name).map(|p| p.is_some());
    let picked = autoclass::weights::find_weight_file_with(checkpoint, choice)?;
    let Some((name, _)) = picked else {
        let why = if has(TF2_WEIGHTS_NAME)? {
            "only TensorFlow weights (tf_model.h5): load them with --from-tf (from_tf=True)"
        } else if has(FLAX_WEIGHTS_NAME)? {
            "only Flax weights (flax_model.msgpack): load them with --from-flax (from_flax=True)"
        } else {
            "no weight file"
        };
        return Ok(json!({"file": null, "format": null, "why": why}));
    };
    let mut why = match name {
        TF2_WEIGHTS_NAME => "--from-tf: TensorFlow weights come first (transformers' from_tf=True); Keras HDF5 read by our own reader, names and layouts converted to PyTorch's".to_string(),
        FLAX_WEIGHTS_NAME => "--from-flax: Flax weights come first (transformers' from_flax=True); msgpack read by our own parser, names and layouts converted to PyTorch's".to_string(),
        "model.safetensors" => "safetensors is transformers' first choice".to_string(),
        "model.safetensors.index.json" => "sharded safetensors (no single model.safetensors)".to_string(),
        "pytorch_model.bin" => "no safetensors file: PyTorch pickle, read without executing it".to_string(),
        _ => "sharded PyTorch pickles, read without executing them".to_string(),
    };
    if choice.from_tf && name != TF2_WEIGHTS_NAME {
        why += "; --from-tf was given but there is no tf_model.h5";
    } else if choice.from_flax && name != FLAX_WEIGHTS_NAME && name != TF2_WEIGHTS_NAME {
        why += "; --from-flax was given but there is no flax_model.msgpack";
    }
    let format = match name {
        TF2_WEIGHTS_NAME => "tensorflow",
        FLAX_WEIGHTS_NAME => "flax",
        "model.safetensors" | "model.safetensors.index.json" => "safetensors",
        _ => "pytorch",
    };
    Ok(json!({"file": name, "format": format, "why": why}))
}

/// What `inspect` reports, as JSON.
pub fn inspect(
    checkpoint: &Checkpoint,
    config: &Config,
    choice: FrameworkChoice,
) -> autoclass::Result<Value> {
    let mut files = Vec::new();
    for name in KNOWN_FILES {
        if let Some(path) = checkpoint.get(name)? {
            files.push(json!({"name": name, "path": path.display().to_string()}));
        }
    }
    let arch = config.architecture()?;
    let tasks: Vec<Value> = arch
        .tasks()
        .iter()
        .map(|(t, class)| json!({"task": t.as_str(), "class": class}))
        .collect();
    let tokenizer = Tokenizer::from_checkpoint(checkpoint)
        .map(|t| t.class_name().to_string())
        .ok();
    let weights = weight_choice(checkpoint, choice)?;
    Ok(json!({
        "name": checkpoint.name(),
        "dir": checkpoint.dir().map(|d| d.display().to_string()),
        "files": files,
        "model_type": config.model_type,
        "config_class": arch.config_class(),
        "architectures": config.architectures,
        "num_labels": config.num_labels(),
        "id2label": config.id2label,
        "dtype": config.dtype,
        "tokenizer_class": tokenizer,
        "weights": weights,
        "tasks": tasks,
    }))
}

/// The human rendering of [`inspect`].
pub fn human_inspect(info: &Value) -> String {
    let empty = Vec::new();
    let mut out = format!("checkpoint:    {}\n", info["name"].as_str().unwrap_or("?"));
    if let Some(dir) = info["dir"].as_str() {
        out += &format!("folder:        {dir}\n");
    }
    out += "files:\n";
    for f in info["files"].as_array().unwrap_or(&empty) {
        out += &format!("  {}\n", f["name"].as_str().unwrap_or("?"));
    }
    out += &format!(
        "model_type:    {}\n",
        info["model_type"].as_str().unwrap_or("?")
    );
    out += &format!(
        "config class:  {}\n",
        info["config_class"].as_str().unwrap_or("?")
    );
    out += &format!("architectures: {}\n", info["architectures"]);
    out += &format!(
        "labels:        {} {}\n",
        info["num_labels"], info["id2label"]
    );
    out += &format!(
        "tokenizer:     {}\n",
        info["tokenizer_class"].as_str().unwrap_or("none")
    );
    out += &match info["weights"].as_object() {
        Some(w) => format!(
            "weights:       {} ({})\n",
            w.get("file").and_then(Value::as_str).unwrap_or("none"),
            w.get("why").and_then(Value::as_str).unwrap_or("")
        ),
        None => "weights:       none\n".to_string(),
    };
    out += "tasks:\n";
    for t in info["tasks"].as_array().unwrap_or(&empty) {
        out += &format!(
            "  {:<26} {}\n",
            t["task"].as_str().unwrap_or("?"),
            t["class"].as_str().unwrap_or("?")
        );
    }
    out
}
