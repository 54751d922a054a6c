//! AutoConfig: `config.json` → a [`Config`] whose typed part is chosen by `model_type` through
//! the registry. Follows `transformers.PreTrainedConfig` (`configuration_utils.py`) for the
//! fields every model shares: `architectures`, labels, `dtype`/`torch_dtype`, `problem_type`.

use std::any::Any;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::hub::{Checkpoint, HubOptions};
use crate::registry::{self, Architecture};

/// The model-specific half of a config (`BertConfig`, `DistilBertConfig`, ...).
pub trait ModelConfig: fmt::Debug + Send + Sync + 'static {
    /// For downcasting to the concrete config type.
    fn as_any(&self) -> &dyn Any;
    /// The config serialised back to JSON, every default filled in.
    fn to_json(&self) -> Value;
}

/// Values the caller sets on top of config.json, like the kwargs of
/// `AutoConfig.from_pretrained(name, num_labels=3, id2label=...)`.
#[derive(Clone, Debug, Default)]
pub struct ConfigOverrides {
    /// Number of labels; regenerates `LABEL_i` names when it differs from `id2label`.
    pub num_labels: Option<usize>,
    /// Replaces `id2label` (like transformers, this does not recompute `label2id`).
    pub id2label: Option<BTreeMap<usize, String>>,
    /// Replaces `label2id`.
    pub label2id: Option<BTreeMap<String, usize>>,
    /// Any other config attribute, by its config.json name (e.g. `hidden_dropout_prob`).
    pub values: Map<String, Value>,
}

/// A loaded configuration: the fields every model shares, plus the typed model-specific part.
#[derive(Clone, Debug)]
pub struct Config {
    /// `model_type` from config.json (`bert`, `distilbert`, ...).
    pub model_type: String,
    /// `architectures` from config.json (informational: the Auto class picks the head).
    pub architectures: Option<Vec<String>>,
    /// Label names by class index.
    pub id2label: BTreeMap<usize, String>,
    /// Class index by label name.
    pub label2id: BTreeMap<String, usize>,
    /// `dtype` (or legacy `torch_dtype`) from config.json, e.g. `float32`.
    pub dtype: Option<String>,
    /// `problem_type` from config.json.
    pub problem_type: Option<String>,
    /// `tie_word_embeddings` (default true).
    pub tie_word_embeddings: bool,
    /// `tokenizer_class` from config.json, if any.
    pub tokenizer_class: Option<String>,
    /// The config.json this came from, if any.
    pub path: Option<PathBuf>,
    raw: Map<String, Value>,
    model: Arc<dyn ModelConfig>,
}

impl Config {
    /// Number of labels: `len(id2label)`, as transformers derives it.
    pub fn num_labels(&self) -> usize {
        self.id2label.len()
    }

    /// The registry entry of this config's model type.
    pub fn architecture(&self) -> Result<&'static dyn Architecture> {
        registry::architecture(&self.model_type)
    }

    /// The config.json values after overrides and attribute_map aliases were applied.
    pub fn raw(&self) -> &Map<String, Value> {
        &self.raw
    }

    /// The typed model-specific config, e.g. `config.model_config::<BertConfig>()`.
    pub fn model_config<T: ModelConfig>(&self) -> Result<&T> {
        self.model.as_any().downcast_ref::<T>().ok_or_else(|| {
            Error::config(
                "model_type",
                format!("`{}` does not use this config class", self.model_type),
            )
        })
    }

    /// The typed model-specific config as a trait object.
    pub fn model_config_dyn(&self) -> &dyn ModelConfig {
        self.model.as_ref()
    }

    /// The label name for class `index` (`LABEL_{index}` when unknown).
    pub fn label(&self, index: usize) -> String {
        self.id2label
            .get(&index)
            .cloned()
            .unwrap_or_else(|| format!("LABEL_{index}"))
    }

    /// Parses a config from an in-memory config.json dict.
    pub fn from_json(raw: Map<String, Value>, overrides: &ConfigOverrides) -> Result<Self> {
        Self::from_json_at(raw, overrides, None)
    }

    fn from_json_at(
        mut raw: Map<String, Value>,
        overrides: &ConfigOverrides,
        path: Option<&Path>,
    ) -> Result<Self> {
        let with_path = |e: Error| match e {
            Error::InvalidConfig { field, reason, .. } => Error::InvalidConfig {
                path: path.map(Path::to_path_buf),
                field,
                reason,
            },
            other => other,
        };
        let model_type = match raw.get("model_type") {
            Some(Value::String(s)) => s.clone(),
            _ => {
                return Err(Error::MissingModelType {
                    path: path.map(Path::to_path_buf).unwrap_or_default(),
                })
            }
        };
        let arch = registry::architecture(&model_type)?;
        for (key, value) in &overrides.values {
            raw.insert(key.clone(), value.clone());
        }
        // Backbone configs: setting one of out_features / out_indices re-derives the other
        // (transformers' property setters), so a stale saved value must not be kept.
        for (set, derived) in [
            ("out_indices", "out_features"),
            ("out_features", "out_indices"),
        ] {
            if overrides.values.contains_key(set) && !overrides.values.contains_key(derived) {
                raw.remove(derived);
            }
        }
        // attribute_map: transformers redirects e.g. `hidden_size` to DistilBERT's `dim`.
        for (alias, canonical) in arch.attribute_map() {
            if let Some(value) = raw.remove(*alias) {
                raw.insert((*canonical).to_string(), value);
            }
        }

        let (id2label, label2id) = labels(&raw, overrides).map_err(with_path)?;
        let model = arch.parse_config(&raw).map_err(with_path)?;
        let architectures = match raw.get("architectures") {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                serde_json::from_value::<Vec<String>>(v.clone())
                    .map_err(|e| with_path(Error::config("architectures", e.to_string())))?,
            ),
        };
        let string_field = |key: &str| raw.get(key).and_then(Value::as_str).map(str::to_string);
        let dtype = string_field("dtype").or_else(|| string_field("torch_dtype"));
        Ok(Config {
            model_type,
            architectures,
            id2label,
            label2id,
            dtype,
            problem_type: string_field("problem_type"),
            tie_word_embeddings: raw
                .get("tie_word_embeddings")
                .and_then(Value::as_bool)
                .unwrap_or(true),
            tokenizer_class: string_field("tokenizer_class"),
            path: path.map(Path::to_path_buf),
            raw,
            model,
        })
    }

    /// Reads config.json from a resolved checkpoint.
    pub fn from_checkpoint(checkpoint: &Checkpoint, overrides: &ConfigOverrides) -> Result<Self> {
        let path = checkpoint.require("config.json")?;
        let raw = read_json_object(&path)?;
        Self::from_json_at(raw, overrides, Some(&path))
    }

    /// The config as JSON: config.json's values with every default of the typed config filled in.
    pub fn to_json(&self) -> Value {
        let mut out = self.raw.clone();
        if let Value::Object(typed) = self.model.to_json() {
            for (k, v) in typed {
                out.insert(k, v);
            }
        }
        out.insert("model_type".into(), Value::String(self.model_type.clone()));
        out.insert(
            "id2label".into(),
            Value::Object(
                self.id2label
                    .iter()
                    .map(|(k, v)| (k.to_string(), Value::String(v.clone())))
                    .collect(),
            ),
        );
        out.insert(
            "label2id".into(),
            Value::Object(
                self.label2id
                    .iter()
                    .map(|(k, v)| (k.clone(), Value::from(*v)))
                    .collect(),
            ),
        );
        Value::Object(out)
    }
}

fn generated_labels(n: usize) -> BTreeMap<usize, String> {
    (0..n).map(|i| (i, format!("LABEL_{i}"))).collect()
}

fn invert(id2label: &BTreeMap<usize, String>) -> BTreeMap<String, usize> {
    id2label.iter().map(|(k, v)| (v.clone(), *k)).collect()
}

/// transformers' label rules (`configuration_utils.py`): `num_labels` is `len(id2label)`;
/// without `id2label` there are `num_labels` (default 2) generated `LABEL_i` names.
fn labels(
    raw: &Map<String, Value>,
    overrides: &ConfigOverrides,
) -> Result<(BTreeMap<usize, String>, BTreeMap<String, usize>)> {
    let mut id2label = match raw.get("id2label") {
        None | Some(Value::Null) => None,
        Some(Value::Object(map)) => {
            let mut out = BTreeMap::new();
            for (k, v) in map {
                let index: usize = k.trim().parse().map_err(|_| {
                    Error::config(
                        "id2label",
                        format!("has a key {k:?} that is not an integer"),
                    )
                })?;
                let name = v.as_str().ok_or_else(|| {
                    Error::config("id2label", format!("has a value {v} that is not a string"))
                })?;
                out.insert(index, name.to_string());
            }
            Some(out)
        }
        Some(other) => {
            return Err(Error::config(
                "id2label",
                format!("must be an object, got {other}"),
            ))
        }
    };
    let mut label2id = match raw.get("label2id") {
        Some(Value::Object(map)) => {
            let mut out = BTreeMap::new();
            for (k, v) in map {
                let index = v.as_u64().ok_or_else(|| {
                    Error::config(
                        "label2id",
                        format!("has a value {v} that is not an integer"),
                    )
                })?;
                out.insert(k.clone(), index as usize);
            }
            Some(out)
        }
        _ => None,
    };
    let json_num_labels =
        match raw.get("num_labels") {
            None | Some(Value::Null) => None,
            Some(v) => Some(v.as_u64().ok_or_else(|| {
                Error::config("num_labels", format!("must be an integer, got {v}"))
            })? as usize),
        };
    const MAX_LABELS: usize = 1 << 20;
    if id2label.is_none() {
        let n = overrides.num_labels.or(json_num_labels).unwrap_or(2);
        if n > MAX_LABELS {
            return Err(Error::config(
                "num_labels",
                format!("{n} is unreasonably large"),
            ));
        }
        let generated = generated_labels(n);
        label2id = Some(invert(&generated));
        id2label = Some(generated);
    } else if let (Some(n), Some(map)) = (overrides.num_labels, id2label.as_ref()) {
        if map.len() != n {
            log::warn!(
                "You passed `num_labels={n}` which is incompatible to the `id2label` map of length `{}`.",
                map.len()
            );
            if n > MAX_LABELS {
                return Err(Error::config(
                    "num_labels",
                    format!("{n} is unreasonably large"),
                ));
            }
            let generated = generated_labels(n);
            label2id = Some(invert(&generated));
            id2label = Some(generated);
        }
    }
    let mut id2label = id2label.unwrap_or_default();
    if let Some(map) = &overrides.id2label {
        id2label = map.clone();
    }
    let mut label2id = label2id.unwrap_or_else(|| invert(&id2label));
    if let Some(map) = &overrides.label2id {
        label2id = map.clone();
    }
    Ok((id2label, label2id))
}

/// Reads a JSON file that must hold an object, with errors naming the file.
pub fn read_json_object(path: &Path) -> Result<Map<String, Value>> {
    let text = crate::util::read_text(path)?;
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(Error::InvalidConfig {
            path: Some(path.to_path_buf()),
            field: "<root>".into(),
            reason: format!("must be a JSON object, found {}", json_kind(&other)),
        }),
        Err(source) => Err(Error::Json {
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Deserialises a typed config from config.json values; errors name the offending field.
pub fn parse_typed<T: serde::de::DeserializeOwned>(raw: &Map<String, Value>) -> Result<T> {
    serde_json::from_value(Value::Object(raw.clone())).map_err(|e| {
        // serde_json's message does not name the field: find it by parsing one key at a time.
        let field = raw
            .iter()
            .find(|(k, v)| {
                let single: Map<String, Value> =
                    std::iter::once(((*k).clone(), (*v).clone())).collect();
                serde_json::from_value::<T>(Value::Object(single)).is_err()
            })
            .map(|(k, _)| k.clone())
            .unwrap_or_else(|| "<config>".to_string());
        Error::config(field, e.to_string())
    })
}

/// `AutoConfig`: loads the right config class for a checkpoint.
pub struct AutoConfig;

impl AutoConfig {
    /// `AutoConfig.from_pretrained(name_or_path)`.
    pub fn from_pretrained(name_or_path: &str) -> Result<Config> {
        Self::from_pretrained_with(
            name_or_path,
            &HubOptions::default(),
            &ConfigOverrides::default(),
        )
    }

    /// `AutoConfig.from_pretrained(name_or_path, revision=..., num_labels=..., ...)`.
    pub fn from_pretrained_with(
        name_or_path: &str,
        hub: &HubOptions,
        overrides: &ConfigOverrides,
    ) -> Result<Config> {
        let checkpoint = Checkpoint::resolve(name_or_path, hub)?;
        Config::from_checkpoint(&checkpoint, overrides)
    }
}

/// Reads typed fields of a preprocessor config (preprocessor_config.json), with errors naming
/// the file and the field. Image processors and feature extractors add their own field kinds in
/// their modules.
pub(crate) struct FieldParser<'a> {
    /// The file being read, for error messages.
    pub(crate) path: Option<&'a Path>,
}

impl FieldParser<'_> {
    /// An [`Error::InvalidConfig`] for `field`.
    pub(crate) fn err(&self, field: &str, reason: impl Into<String>) -> Error {
        Error::InvalidConfig {
            path: self.path.map(Path::to_path_buf),
            field: field.to_string(),
            reason: reason.into(),
        }
    }

    /// A JSON boolean; `null` is Python's `None` (falsy), 0/1 are accepted.
    pub(crate) fn flag(&self, field: &str, v: &Value) -> Result<bool> {
        match v {
            Value::Bool(b) => Ok(*b),
            Value::Null => Ok(false),
            Value::Number(n) if n.as_f64() == Some(0.0) || n.as_f64() == Some(1.0) => {
                Ok(n.as_f64() == Some(1.0))
            }
            other => Err(self.err(field, format!("must be true or false, found {other}"))),
        }
    }

    /// A finite JSON number; `null` is `None`.
    pub(crate) fn number(&self, field: &str, v: &Value) -> Result<Option<f64>> {
        match v {
            Value::Null => Ok(None),
            Value::Number(n) => n
                .as_f64()
                .filter(|x| x.is_finite())
                .map(Some)
                .ok_or_else(|| self.err(field, "must be a finite number")),
            other => Err(self.err(field, format!("must be a number, found {other}"))),
        }
    }
}
