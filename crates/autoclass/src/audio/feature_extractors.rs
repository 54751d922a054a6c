//! Feature extractors: `AutoFeatureExtractor`, `Wav2Vec2FeatureExtractor` and
//! `WhisperFeatureExtractor` (numpy path) of transformers 5.
//!
//! Class selection follows `AutoFeatureExtractor.from_pretrained`: the `feature_extractor` (else
//! `audio_processor`) entry of processor_config.json if there is one, else
//! preprocessor_config.json; its `feature_extractor_type`, else config.json's
//! `feature_extractor_type`, else the model type's extractor in the registry
//! ([`crate::registry::Architecture::feature_extractor_class`]). The extractor's attributes are
//! the class defaults overridden by that dict, as transformers' `cls(**dict)` sets them.
//!
//! `extract` is `extractor(raw_speech, sampling_rate=..., return_tensors="pt", **options)`:
//!
//! * the sampling-rate check (a `ValueError` on a mismatch, a warning through [`log::warn!`] when
//!   no rate is given), with transformers' wording;
//! * `SequenceFeatureExtractor.pad`: truncation to `max_length` (rounded up to
//!   `pad_to_multiple_of`), padding to the longest or to `max_length` (rounded up too) with
//!   `padding_value` on `padding_side`, an attention mask of ones over the real samples;
//! * Wav2Vec2: `zero_mean_unit_var_norm` in float32 exactly as numpy computes it, over the
//!   unpadded length when a mask was returned and padding was asked for, else over the whole
//!   (possibly padded) row; `input_values` `[B, T]`;
//! * Whisper: padding/truncation to 30 s by default, the log-mel spectrogram of
//!   [`super::spectrogram`], the last frame dropped, `max(x, x.max() - 8)`, `(x + 4) / 4`;
//!   `input_features` `[B, n_mels, frames]`.
//!
//! Masks are returned as int64 (transformers returns int32; the models take either).

use std::fmt;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use serde_json::{json, Map, Value};

use super::decode::{open, to_mono, MAX_FRAMES};
use super::numerics::{python_json, zero_mean_unit_var};
use super::resample::resample;
use super::spectrogram::{
    hann_window, log_mel_spectrogram, mel_filter_bank, MelFilterBank, MelScale,
};
use crate::config::read_json_object;
use crate::error::{Error, Result};
use crate::hub::{Checkpoint, HubOptions};
use crate::models::Batch;
use crate::tokenization::Padding;

/// Where padding goes (`padding_side`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PaddingSide {
    /// After the samples (the default).
    #[default]
    Right,
    /// Before the samples.
    Left,
}

impl PaddingSide {
    /// The config value (`"right"` / `"left"`).
    pub fn as_str(self) -> &'static str {
        match self {
            PaddingSide::Right => "right",
            PaddingSide::Left => "left",
        }
    }
}

/// The keyword arguments of `extractor(raw_speech, ...)`. `None` means "not passed": the class's
/// default applies.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AudioOptions {
    /// `padding=`: Wav2Vec2 default [`Padding::None`] (`False`: a batch of unequal lengths then
    /// cannot become a tensor and is an error, as transformers' `return_tensors="pt"`); Whisper
    /// default [`Padding::MaxLength`].
    pub padding: Option<Padding>,
    /// `max_length=`: required by `padding="max_length"` and `truncation=True` (Wav2Vec2);
    /// Whisper's default is `chunk_length * sampling_rate` (480000).
    pub max_length: Option<usize>,
    /// `truncation=`: Wav2Vec2 default `false`, Whisper default `true`.
    pub truncation: Option<bool>,
    /// `pad_to_multiple_of=`: rounds the padding and the truncation length up to a multiple.
    pub pad_to_multiple_of: Option<usize>,
    /// `return_attention_mask=`: default the extractor's `return_attention_mask` setting.
    pub return_attention_mask: Option<bool>,
    /// Whisper's `do_normalize=` call argument (default off). Wav2Vec2's `__call__` has no such
    /// argument (its normalisation is the `do_normalize` config setting): passing it is an error.
    pub do_normalize: Option<bool>,
}

/// The effective settings of a feature extractor: the class defaults overridden by the
/// checkpoint's config.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct FeatureExtractorSettings {
    /// `feature_size`: 1 for Wav2Vec2 (raw samples), the number of mel bins for Whisper.
    pub feature_size: usize,
    /// The sampling rate the model was trained on.
    pub sampling_rate: u32,
    /// The value padding is filled with; `None` (`null`) forbids padding.
    pub padding_value: Option<f64>,
    /// Where padding goes.
    pub padding_side: PaddingSide,
    /// Whether an `attention_mask` is returned by default.
    pub return_attention_mask: bool,
    /// Wav2Vec2: zero-mean unit-variance normalisation of every row.
    pub do_normalize: bool,
    /// Whisper: FFT size (and window length).
    pub n_fft: usize,
    /// Whisper: samples between two frames.
    pub hop_length: usize,
    /// Whisper: the window in seconds every input is padded or truncated to.
    pub chunk_length: usize,
}

impl FeatureExtractorSettings {
    /// Whisper's `n_samples`: `chunk_length * sampling_rate`.
    pub fn n_samples(&self) -> usize {
        self.chunk_length * self.sampling_rate as usize
    }
}

/// How a class computes its features.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Wav2Vec2,
    Whisper,
}

/// One feature-extractor class: its transformers name, kind and `__init__` defaults.
struct ClassSpec {
    name: &'static str,
    kind: Kind,
    defaults: fn() -> Value,
}

/// The classes autoclass implements, under the names transformers writes in configs.
const CLASSES: &[ClassSpec] = &[
    ClassSpec {
        name: "Wav2Vec2FeatureExtractor",
        kind: Kind::Wav2Vec2,
        defaults: || {
            json!({
                "feature_size": 1,
                "sampling_rate": 16000,
                "padding_value": 0.0,
                "padding_side": "right",
                "return_attention_mask": false,
                "do_normalize": true,
            })
        },
    },
    ClassSpec {
        name: "WhisperFeatureExtractor",
        kind: Kind::Whisper,
        defaults: || {
            json!({
                "feature_size": 80,
                "sampling_rate": 16000,
                "hop_length": 160,
                "chunk_length": 30,
                "n_fft": 400,
                "padding_value": 0.0,
                "dither": 0.0,
                "return_attention_mask": false,
                "padding_side": "right",
            })
        },
    },
];

/// The feature-extractor class names autoclass implements.
pub fn known_classes() -> Vec<&'static str> {
    let mut names: Vec<&'static str> = CLASSES.iter().map(|c| c.name).collect();
    names.sort_unstable();
    names
}

fn class_spec(name: &str, path: Option<&Path>) -> Result<&'static ClassSpec> {
    CLASSES
        .iter()
        .find(|c| c.name == name)
        .ok_or_else(|| Error::InvalidConfig {
            path: path.map(Path::to_path_buf),
            field: "feature_extractor_type".into(),
            reason: format!(
                "unknown feature extractor class `{name}`; autoclass implements: {}",
                known_classes().join(", ")
            ),
        })
}

// ---------------------------------------------------------------------------------------------
// Config parsing
// ---------------------------------------------------------------------------------------------

/// Largest `n_fft`, `hop_length` and `feature_size` accepted.
const MAX_SIZE: u64 = 1 << 16;

use crate::config::FieldParser as Parser;

impl Parser<'_> {
    /// A positive integer of at most `max` (integral floats such as `16000.0` accepted).
    fn positive(&self, field: &str, v: &Value, max: u64) -> Result<u64> {
        let n = match v {
            Value::Number(n) => n.as_u64().or_else(|| {
                n.as_f64()
                    .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f <= max as f64)
                    .map(|f| f as u64)
            }),
            _ => None,
        };
        match n {
            Some(n) if n > 0 && n <= max => Ok(n),
            _ => Err(self.err(
                field,
                format!("must be a positive integer of at most {max}, found {v}"),
            )),
        }
    }
}

/// The settings and the Python attribute dict of `spec` with `config` applied.
fn settings_from_config(
    spec: &ClassSpec,
    config: &Map<String, Value>,
    path: Option<&Path>,
) -> Result<(FeatureExtractorSettings, Map<String, Value>)> {
    let p = Parser { path };
    let mut attributes = match (spec.defaults)() {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    for (key, value) in config {
        // FeatureExtractionMixin.__init__ pops processor_class; to_dict drops mel_filters/window.
        if matches!(key.as_str(), "processor_class" | "mel_filters" | "window") {
            continue;
        }
        attributes.insert(key.clone(), value.clone());
    }
    let get = |key: &str| attributes.get(key).cloned().unwrap_or(Value::Null);
    let mut s = FeatureExtractorSettings {
        feature_size: p.positive("feature_size", &get("feature_size"), MAX_SIZE)? as usize,
        sampling_rate: p.positive("sampling_rate", &get("sampling_rate"), u64::from(u32::MAX))?
            as u32,
        padding_value: p.number("padding_value", &get("padding_value"))?,
        padding_side: match get("padding_side") {
            Value::String(s) if s == "right" => PaddingSide::Right,
            Value::String(s) if s == "left" => PaddingSide::Left,
            other => {
                return Err(p.err(
                    "padding_side",
                    format!("Invalid padding strategy:{other} (use \"right\" or \"left\")"),
                ))
            }
        },
        return_attention_mask: p.flag("return_attention_mask", &get("return_attention_mask"))?,
        do_normalize: false,
        n_fft: 0,
        hop_length: 0,
        chunk_length: 0,
    };
    match spec.kind {
        Kind::Wav2Vec2 => {
            s.do_normalize = p.flag("do_normalize", &get("do_normalize"))?;
            if s.feature_size != 1 {
                return Err(p.err(
                    "feature_size",
                    format!(
                        "must be 1: Wav2Vec2FeatureExtractor takes raw mono samples, found {}",
                        s.feature_size
                    ),
                ));
            }
        }
        Kind::Whisper => {
            s.n_fft = p.positive("n_fft", &get("n_fft"), MAX_SIZE)? as usize;
            s.hop_length = p.positive("hop_length", &get("hop_length"), MAX_SIZE)? as usize;
            s.chunk_length = p.positive("chunk_length", &get("chunk_length"), 3600)? as usize;
            if s.n_samples() > MAX_FRAMES {
                return Err(p.err(
                    "chunk_length",
                    format!(
                        "chunk_length * sampling_rate = {} samples is more than the {MAX_FRAMES} \
                         autoclass accepts",
                        s.n_samples()
                    ),
                ));
            }
            match p.number("dither", &get("dither"))? {
                None | Some(0.0) => {}
                Some(d) => {
                    return Err(p.err(
                        "dither",
                        format!(
                            "is {d}: random dithering (numpy's random generator) is not \
                             implemented; set it to 0.0"
                        ),
                    ))
                }
            }
            // WhisperFeatureExtractor.__init__ recomputes these, whatever the config says.
            attributes.insert("n_samples".into(), json!(s.n_samples()));
            attributes.insert("nb_max_frames".into(), json!(s.n_samples() / s.hop_length));
        }
    }
    attributes.insert("feature_extractor_type".into(), json!(spec.name));
    Ok((s, attributes))
}

// ---------------------------------------------------------------------------------------------
// Class selection
// ---------------------------------------------------------------------------------------------

/// `AutoFeatureExtractor`: picks and builds the right feature extractor for a checkpoint.
pub struct AutoFeatureExtractor;

impl AutoFeatureExtractor {
    /// `AutoFeatureExtractor.from_pretrained(name_or_path)`.
    pub fn from_pretrained(name_or_path: &str) -> Result<FeatureExtractor> {
        Self::from_pretrained_with(name_or_path, &HubOptions::default())
    }

    /// `AutoFeatureExtractor.from_pretrained(name_or_path, revision=..., subfolder=...)`.
    pub fn from_pretrained_with(name_or_path: &str, hub: &HubOptions) -> Result<FeatureExtractor> {
        let checkpoint = Checkpoint::resolve(name_or_path, hub)?;
        FeatureExtractor::from_checkpoint(&checkpoint)
    }
}

/// The feature-extractor dict of a checkpoint and the file it came from.
fn extractor_dict(checkpoint: &Checkpoint) -> Result<(Map<String, Value>, PathBuf)> {
    if let Some(path) = checkpoint.get("processor_config.json")? {
        let raw = read_json_object(&path)?;
        // processor_dict.get("feature_extractor", processor_dict.get("audio_processor"))
        let (field, nested) = match raw.get("feature_extractor") {
            Some(v) => ("feature_extractor", Some(v)),
            None => ("audio_processor", raw.get("audio_processor")),
        };
        match nested {
            Some(Value::Object(dict)) => return Ok((dict.clone(), path)),
            Some(Value::Null) | None => {}
            Some(other) => {
                return Err(Error::InvalidConfig {
                    path: Some(path),
                    field: field.into(),
                    reason: format!("must be an object, found {other}"),
                })
            }
        }
    }
    let path = checkpoint.require("preprocessor_config.json")?;
    Ok((read_json_object(&path)?, path))
}

/// The class named by the feature-extractor dict, or by config.json.
fn resolve_class_name(
    dict: &Map<String, Value>,
    dict_path: &Path,
    checkpoint: &Checkpoint,
) -> Result<String> {
    if let Some(name) = dict.get("feature_extractor_type").and_then(Value::as_str) {
        return Ok(name.to_string());
    }
    if dict
        .get("auto_map")
        .and_then(Value::as_object)
        .is_some_and(|m| m.contains_key("AutoFeatureExtractor"))
    {
        return Err(Error::InvalidConfig {
            path: Some(dict_path.to_path_buf()),
            field: "auto_map".into(),
            reason: "the feature extractor is custom code from the repo (auto_map); autoclass \
                     does not run remote code"
                .into(),
        });
    }
    crate::registry::preprocessor_class_from_config(
        checkpoint,
        "feature_extractor_type",
        "feature extractor",
        |a| a.feature_extractor_class(),
        dict_path,
    )
}

// ---------------------------------------------------------------------------------------------
// The extractor
// ---------------------------------------------------------------------------------------------

/// What a class needs besides its settings.
#[derive(Clone, Debug)]
enum Engine {
    Wav2Vec2,
    Whisper {
        filters: MelFilterBank,
        window: Vec<f64>,
    },
}

/// A feature extractor: turns mono waveforms into model inputs, like transformers'
/// `Wav2Vec2FeatureExtractor` (`input_values`) and `WhisperFeatureExtractor` (`input_features`).
///
/// Its [`fmt::Display`] is transformers' `repr`: the class name and the attributes as sorted JSON.
#[derive(Clone, Debug)]
pub struct FeatureExtractor {
    class_name: &'static str,
    settings: FeatureExtractorSettings,
    attributes: Map<String, Value>,
    engine: Engine,
}

impl fmt::Display for FeatureExtractor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} {}",
            self.class_name,
            python_json(&Value::Object(self.attributes.clone()))
        )
    }
}

/// The rows after `SequenceFeatureExtractor.pad`, with their masks when asked for.
struct Padded {
    rows: Vec<Vec<f32>>,
    masks: Option<Vec<Vec<i64>>>,
}

/// `pad()`'s arguments after the class defaults are applied.
struct PadArgs {
    strategy: Padding,
    max_length: Option<usize>,
    truncation: bool,
    pad_to_multiple_of: Option<usize>,
    return_attention_mask: bool,
}

impl FeatureExtractor {
    /// Builds the feature extractor of a resolved checkpoint (class chosen as
    /// `AutoFeatureExtractor` chooses it).
    pub fn from_checkpoint(checkpoint: &Checkpoint) -> Result<Self> {
        let (dict, path) = extractor_dict(checkpoint)?;
        let class = resolve_class_name(&dict, &path, checkpoint)?;
        let spec = class_spec(&class, Some(&path))?;
        Self::build(spec, &dict, Some(&path))
    }

    /// Builds `class_name` (`Wav2Vec2FeatureExtractor`, `WhisperFeatureExtractor`) from a
    /// feature-extractor config dict (the content of preprocessor_config.json).
    pub fn from_config(class_name: &str, config: &Map<String, Value>) -> Result<Self> {
        let spec = class_spec(class_name, None)?;
        Self::build(spec, config, None)
    }

    fn build(spec: &ClassSpec, config: &Map<String, Value>, path: Option<&Path>) -> Result<Self> {
        let (settings, attributes) = settings_from_config(spec, config, path)?;
        let engine = match spec.kind {
            Kind::Wav2Vec2 => Engine::Wav2Vec2,
            Kind::Whisper => Engine::Whisper {
                filters: mel_filter_bank(
                    1 + settings.n_fft / 2,
                    settings.feature_size,
                    0.0,
                    8000.0,
                    settings.sampling_rate,
                    true,
                    MelScale::Slaney,
                )
                .map_err(|e| match (e, path) {
                    (Error::InvalidConfig { field, reason, .. }, Some(p)) => Error::InvalidConfig {
                        path: Some(p.to_path_buf()),
                        field,
                        reason,
                    },
                    (other, _) => other,
                })?,
                window: hann_window(settings.n_fft, true),
            },
        };
        Ok(FeatureExtractor {
            class_name: spec.name,
            settings,
            attributes,
            engine,
        })
    }

    /// The transformers class name (`Wav2Vec2FeatureExtractor`).
    pub fn class_name(&self) -> &str {
        self.class_name
    }

    /// The sampling rate the model expects.
    pub fn sampling_rate(&self) -> u32 {
        self.settings.sampling_rate
    }

    /// The effective settings.
    pub fn settings(&self) -> &FeatureExtractorSettings {
        &self.settings
    }

    /// The name of the main output (`input_values` or `input_features`).
    pub fn main_input_name(&self) -> &'static str {
        match self.engine {
            Engine::Wav2Vec2 => "input_values",
            Engine::Whisper { .. } => "input_features",
        }
    }

    /// transformers' `ValueError` for audio sampled at `rate`.
    fn rate_error(&self, rate: u32) -> Error {
        // Wav2Vec2 embeds its repr (`{self}`); Whisper its class name.
        let who = match self.engine {
            Engine::Wav2Vec2 => self.to_string(),
            Engine::Whisper { .. } => self.class_name.to_string(),
        };
        let sr = self.settings.sampling_rate;
        Error::input(format!(
            "The model corresponding to this feature extractor: {who} was trained using a \
             sampling rate of {sr}. Please make sure that the provided `raw_speech` input was \
             sampled with {sr} and not {rate}."
        ))
    }

    /// `extractor(audio, sampling_rate=sampling_rate, return_tensors="pt", **options)`: one mono
    /// float32 waveform per batch entry, tensors on the CPU. `sampling_rate` `None` logs
    /// transformers' warning and proceeds; a rate other than the extractor's is an error.
    pub fn extract<S: AsRef<[f32]>>(
        &self,
        audio: &[S],
        sampling_rate: Option<u32>,
        options: &AudioOptions,
    ) -> Result<Batch> {
        match sampling_rate {
            Some(rate) if rate != self.settings.sampling_rate => return Err(self.rate_error(rate)),
            Some(_) => {}
            None => log::warn!(
                "It is strongly recommended to pass the `sampling_rate` argument to `{}()`. \
                 Failing to do so can result in silent errors that might be hard to debug.",
                self.class_name
            ),
        }
        if audio.is_empty() {
            return Err(Error::input(
                "no audio to extract features from (the batch is empty)",
            ));
        }
        let audio: Vec<&[f32]> = audio.iter().map(AsRef::as_ref).collect();
        match &self.engine {
            Engine::Wav2Vec2 => self.extract_wav2vec2(&audio, options),
            Engine::Whisper { filters, window } => {
                self.extract_whisper(&audio, options, filters, window)
            }
        }
    }

    /// Decodes the files ([`super::decode::open`]), makes them mono ([`to_mono`]: with `mono`
    /// the channels are averaged, else multi-channel files are refused), resamples them to the
    /// extractor's rate when `resample` is set (else a file at another rate is an error) and
    /// extracts their features.
    pub fn extract_paths(
        &self,
        paths: &[PathBuf],
        mono: bool,
        resample_audio: bool,
        options: &AudioOptions,
    ) -> Result<Batch> {
        let target = self.settings.sampling_rate;
        let mut waves = Vec::with_capacity(paths.len());
        for path in paths {
            let audio = open(path)?;
            let mut samples = to_mono(&audio, mono)?;
            if audio.sampling_rate != target {
                if !resample_audio {
                    return Err(match self.rate_error(audio.sampling_rate) {
                        Error::Input { reason } => Error::input(format!(
                            "{reason} ({} is sampled at {} Hz; pass --resample to convert it to \
                             {target} Hz)",
                            path.display(),
                            audio.sampling_rate
                        )),
                        other => other,
                    });
                }
                samples = resample(&samples, audio.sampling_rate, target)?;
            }
            waves.push(samples);
        }
        self.extract(&waves, Some(target), options)
    }

    /// `SequenceFeatureExtractor.pad` (with `_truncate` and `_pad`).
    fn pad(&self, audio: &[&[f32]], args: &PadArgs) -> Result<Padded> {
        // _get_padding_strategies
        if args.strategy == Padding::MaxLength && args.max_length.is_none() {
            return Err(Error::input(
                "When setting ``padding=PaddingStrategy.MAX_LENGTH``, make sure that max_length \
                 is defined",
            ));
        }
        let padding_value = match (args.strategy, self.settings.padding_value) {
            (Padding::None, v) => v.unwrap_or(0.0),
            (_, Some(v)) => v,
            (_, None) => {
                return Err(Error::input(
                    "Asking to pad but the feature_extractor does not have a padding value. \
                     Please select a value to use as `padding_value`. For example: \
                     `feature_extractor.padding_value = 0.0`.",
                ))
            }
        } as f32;
        let multiple = match args.pad_to_multiple_of {
            Some(0) => {
                return Err(Error::input(
                    "pad_to_multiple_of must be a positive integer",
                ))
            }
            other => other,
        };
        let round_up = |len: usize| -> usize {
            match multiple {
                Some(m) if len % m != 0 => (len / m + 1) * m,
                _ => len,
            }
        };
        let mut rows: Vec<&[f32]> = audio.to_vec();
        if args.truncation {
            let Some(max_length) = args.max_length else {
                return Err(Error::input(
                    "When setting ``truncation=True``, make sure that ``max_length`` is defined.",
                ));
            };
            let limit = round_up(max_length);
            for row in &mut rows {
                if row.len() > limit {
                    *row = &row[..limit];
                }
            }
        }
        let target = match args.strategy {
            Padding::None => None,
            Padding::Longest => Some(round_up(rows.iter().map(|r| r.len()).max().unwrap_or(0))),
            Padding::MaxLength => args.max_length.map(round_up),
        };
        if let Some(t) = target {
            if t > MAX_FRAMES {
                return Err(Error::input(format!(
                    "padding to {t} samples is refused: autoclass pads to at most {MAX_FRAMES} \
                     samples (one hour at 48 kHz)"
                )));
            }
        }
        let mut padded = Vec::with_capacity(rows.len());
        let mut masks = args.return_attention_mask.then(Vec::new);
        for row in rows {
            let len = row.len();
            let difference = target.map_or(0, |t| t.saturating_sub(len));
            let (values, mask) = match self.settings.padding_side {
                PaddingSide::Right => {
                    let mut values = row.to_vec();
                    values.resize(len + difference, padding_value);
                    let mut mask = vec![1i64; len];
                    mask.resize(len + difference, 0);
                    (values, mask)
                }
                PaddingSide::Left => {
                    let mut values = vec![padding_value; difference];
                    values.extend_from_slice(row);
                    let mut mask = vec![0i64; difference];
                    mask.resize(len + difference, 1);
                    (values, mask)
                }
            };
            padded.push(values);
            if let Some(masks) = masks.as_mut() {
                masks.push(mask);
            }
        }
        Ok(Padded {
            rows: padded,
            masks,
        })
    }

    /// transformers' error when a ragged batch is turned into tensors.
    fn ragged_error(name: &str, rows: &[Vec<f32>]) -> Error {
        let lengths: Vec<usize> = rows.iter().map(Vec::len).collect();
        Error::input(format!(
            "Unable to convert output '{name}' (type: list) to tensor: setting an array element \
             with a sequence. The requested array has an inhomogeneous shape after 1 dimensions. \
             The detected shape was ({},) + inhomogeneous part.\nYou can try:\n  1. Use \
             padding=True to ensure all outputs have the same shape\n  2. Set \
             return_tensors=None to return Python objects instead of tensors (the inputs have \
             {lengths:?} samples)",
            rows.len()
        ))
    }

    fn extract_wav2vec2(&self, audio: &[&[f32]], options: &AudioOptions) -> Result<Batch> {
        if options.do_normalize.is_some() {
            return Err(Error::input(
                "Wav2Vec2FeatureExtractor's __call__ has no `do_normalize` argument: \
                 normalisation is the extractor's `do_normalize` setting (preprocessor_config.json)",
            ));
        }
        let args = PadArgs {
            strategy: options.padding.unwrap_or(Padding::None),
            max_length: options.max_length,
            truncation: options.truncation.unwrap_or(false),
            pad_to_multiple_of: options.pad_to_multiple_of,
            return_attention_mask: options
                .return_attention_mask
                .unwrap_or(self.settings.return_attention_mask),
        };
        let Padded { mut rows, masks } = self.pad(audio, &args)?;
        if self.settings.do_normalize {
            let padding_value = self.settings.padding_value.unwrap_or(0.0) as f32;
            // The mask only counts when padding was asked for.
            let lengths: Vec<Option<usize>> = match (&masks, args.strategy) {
                (Some(masks), Padding::Longest | Padding::MaxLength) => masks
                    .iter()
                    .map(|m| Some(m.iter().filter(|&&v| v != 0).count()))
                    .collect(),
                _ => vec![None; rows.len()],
            };
            rows = rows
                .iter()
                .zip(lengths)
                .map(|(row, length)| zero_mean_unit_var(row, length, padding_value))
                .collect();
        }
        let t = rows.first().map_or(0, Vec::len);
        if rows.iter().any(|r| r.len() != t) {
            return Err(Self::ragged_error("input_values", &rows));
        }
        let b = rows.len();
        let mut batch = Batch::new();
        batch.insert(
            "input_values",
            Tensor::from_vec(rows.concat(), (b, t), &Device::Cpu)?,
        );
        if let Some(masks) = masks {
            batch.insert(
                "attention_mask",
                Tensor::from_vec(masks.concat(), (b, t), &Device::Cpu)?,
            );
        }
        Ok(batch)
    }

    fn extract_whisper(
        &self,
        audio: &[&[f32]],
        options: &AudioOptions,
        filters: &MelFilterBank,
        window: &[f64],
    ) -> Result<Batch> {
        let s = &self.settings;
        // `max_length if max_length else self.n_samples`
        let max_length = options
            .max_length
            .filter(|&m| m > 0)
            .unwrap_or(s.n_samples());
        // `return_attention_mask or do_normalize`, then pad's `None` → the instance default.
        let pad_mask = match options.return_attention_mask {
            Some(true) => Some(true),
            _ => options.do_normalize,
        };
        let args = PadArgs {
            strategy: options.padding.unwrap_or(Padding::MaxLength),
            max_length: Some(max_length),
            truncation: options.truncation.unwrap_or(true),
            pad_to_multiple_of: options.pad_to_multiple_of,
            return_attention_mask: pad_mask.unwrap_or(s.return_attention_mask),
        };
        let Padded { mut rows, masks } = self.pad(audio, &args)?;
        let t = rows.first().map_or(0, Vec::len);
        if rows.iter().any(|r| r.len() != t) {
            return Err(Self::ragged_error("input_features", &rows));
        }
        if options.do_normalize == Some(true) {
            let padding_value = s.padding_value.unwrap_or(0.0) as f32;
            let lengths: Vec<Option<usize>> = match &masks {
                Some(masks) => masks
                    .iter()
                    .map(|m| Some(m.iter().filter(|&&v| v != 0).count()))
                    .collect(),
                None => vec![None; rows.len()],
            };
            rows = rows
                .iter()
                .zip(lengths)
                .map(|(row, length)| zero_mean_unit_var(row, length, padding_value))
                .collect();
        }
        let n_mels = filters.num_mel_filters;
        let mut features = Vec::new();
        let mut frames_out = 0;
        for row in &rows {
            let (spec, frames) = log_mel_spectrogram(row, window, s.hop_length, filters)?;
            // Drop the last frame.
            let kept = frames - 1;
            if kept == 0 {
                return Err(Error::input(format!(
                    "{t} samples give no spectrogram frame with hop_length {} (pad the input: \
                     padding=\"max_length\")",
                    s.hop_length
                )));
            }
            frames_out = kept;
            let mut log_spec = Vec::with_capacity(n_mels * kept);
            for m in 0..n_mels {
                log_spec.extend_from_slice(&spec[m * frames..m * frames + kept]);
            }
            let max = log_spec.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let floor = max - 8.0f32;
            features.extend(
                log_spec
                    .into_iter()
                    .map(|x| (x.max(floor) + 4.0f32) / 4.0f32),
            );
        }
        let b = rows.len();
        let mut batch = Batch::new();
        batch.insert(
            "input_features",
            Tensor::from_vec(features, (b, n_mels, frames_out), &Device::Cpu)?,
        );
        if let Some(masks) = masks {
            let masks = if options.return_attention_mask == Some(true) {
                // Rescale from samples to frames: every hop_length-th sample, minus the last
                // when the length is not a multiple of hop_length.
                masks
                    .into_iter()
                    .map(|m| {
                        let mut r: Vec<i64> = m.into_iter().step_by(s.hop_length).collect();
                        if t % s.hop_length != 0 {
                            r.pop();
                        }
                        r
                    })
                    .collect::<Vec<_>>()
            } else {
                // transformers leaves the per-sample mask when only do_normalize asked for it.
                masks
            };
            let width = masks.first().map_or(0, Vec::len);
            batch.insert(
                "attention_mask",
                Tensor::from_vec(masks.concat(), (b, width), &Device::Cpu)?,
            );
        }
        Ok(batch)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn config(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => panic!("not an object"),
        }
    }

    fn values(batch: &Batch, name: &str) -> Vec<f32> {
        batch
            .require(name)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    }

    #[test]
    fn repr_is_pythons() {
        let fe = FeatureExtractor::from_config(
            "Wav2Vec2FeatureExtractor",
            &config(json!({"return_attention_mask": true, "processor_class": "X", "extra": 1e-7})),
        )
        .unwrap();
        assert_eq!(
            fe.to_string(),
            "Wav2Vec2FeatureExtractor {\n  \"do_normalize\": true,\n  \"extra\": 1e-07,\n  \
             \"feature_extractor_type\": \"Wav2Vec2FeatureExtractor\",\n  \"feature_size\": 1,\n  \
             \"padding_side\": \"right\",\n  \"padding_value\": 0.0,\n  \
             \"return_attention_mask\": true,\n  \"sampling_rate\": 16000\n}\n"
        );
        let err = fe.extract(&[vec![0.0f32; 4]], Some(8000), &AudioOptions::default());
        let err = err.unwrap_err().to_string();
        assert!(err.contains("and not 8000."), "{err}");
    }

    #[test]
    fn padding_rules() {
        let fe = FeatureExtractor::from_config(
            "Wav2Vec2FeatureExtractor",
            &config(json!({"do_normalize": false, "return_attention_mask": true})),
        )
        .unwrap();
        let audio = [vec![1.0f32; 5], vec![2.0f32; 3]];
        let opts = AudioOptions {
            padding: Some(Padding::Longest),
            pad_to_multiple_of: Some(4),
            ..AudioOptions::default()
        };
        let b = fe.extract(&audio, Some(16000), &opts).unwrap();
        assert_eq!(b.require("input_values").unwrap().dims(), &[2, 8]);
        assert_eq!(
            values(&b, "input_values"),
            [[1.0; 5].as_slice(), &[0.0; 3], &[2.0; 3], &[0.0; 5]].concat()
        );
        // Ragged without padding.
        let err = fe
            .extract(&audio, Some(16000), &AudioOptions::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("Unable to convert output 'input_values'"),
            "{err}"
        );
        // Truncation without max_length, max_length padding without max_length.
        for opts in [
            AudioOptions {
                truncation: Some(true),
                ..AudioOptions::default()
            },
            AudioOptions {
                padding: Some(Padding::MaxLength),
                ..AudioOptions::default()
            },
        ] {
            assert!(fe.extract(&audio, Some(16000), &opts).is_err());
        }
        let huge = AudioOptions {
            padding: Some(Padding::MaxLength),
            max_length: Some(usize::MAX / 2),
            ..AudioOptions::default()
        };
        assert!(fe.extract(&audio, Some(16000), &huge).is_err());
        assert!(fe
            .extract(
                &Vec::<Vec<f32>>::new(),
                Some(16000),
                &AudioOptions::default()
            )
            .is_err());
    }

    #[test]
    fn bad_configs() {
        for (class, cfg) in [
            ("Wav2Vec2FeatureExtractor", json!({"feature_size": 2})),
            ("Wav2Vec2FeatureExtractor", json!({"sampling_rate": 0})),
            (
                "Wav2Vec2FeatureExtractor",
                json!({"padding_side": "middle"}),
            ),
            ("WhisperFeatureExtractor", json!({"n_fft": 0})),
            ("WhisperFeatureExtractor", json!({"dither": 0.1})),
            ("WhisperFeatureExtractor", json!({"chunk_length": 100000})),
            ("SpeechT5FeatureExtractor", json!({})),
        ] {
            assert!(
                FeatureExtractor::from_config(class, &config(cfg.clone())).is_err(),
                "{class} {cfg}"
            );
        }
    }

    #[test]
    fn whisper_small_input() {
        let fe = FeatureExtractor::from_config(
            "WhisperFeatureExtractor",
            &config(json!({"feature_size": 8, "chunk_length": 1})),
        )
        .unwrap();
        let x: Vec<f32> = (0..1000).map(|i| (i as f32 * 0.1).sin()).collect();
        let b = fe
            .extract(
                std::slice::from_ref(&x),
                Some(16000),
                &AudioOptions {
                    return_attention_mask: Some(true),
                    ..AudioOptions::default()
                },
            )
            .unwrap();
        assert_eq!(b.require("input_features").unwrap().dims(), &[1, 8, 100]);
        assert_eq!(b.require("attention_mask").unwrap().dims(), &[1, 100]);
        // A tail that gives no frame after the last is dropped is an error, not a panic.
        let short = AudioOptions {
            padding: Some(Padding::Longest),
            ..AudioOptions::default()
        };
        assert!(fe.extract(&[&x[..100]], Some(16000), &short).is_err());
        assert!(fe.extract(&[&x[..0]], Some(16000), &short).is_err());
    }
}
