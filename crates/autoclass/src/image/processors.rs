//! Image processors: `AutoImageProcessor` and the PIL-backend pipelines of transformers 5
//! (`ViTImageProcessor`, `ConvNextImageProcessor`, `DeiTImageProcessor`, `CLIPImageProcessor`,
//! `LayoutLMv2ImageProcessor`, `LayoutLMv3ImageProcessor`).
//!
//! LayoutLMv2/v3 ([`ImageProcessor::preprocess_document`]): with `apply_ocr` (default true) each
//! image, at its original size, goes through Tesseract ([`super::ocr`]) for words and 0..1000
//! boxes. LayoutLMv2 then only resizes (224x224 bilinear) and flips RGB to BGR, keeping uint8;
//! LayoutLMv3 runs the standard pipeline (rescale 1/255, normalize with mean/std 0.5).
//!
//! Class selection follows `AutoImageProcessor.from_pretrained`: the `image_processor` entry of
//! processor_config.json if there is one, else preprocessor_config.json; its
//! `image_processor_type`, else the legacy `feature_extractor_type` with `FeatureExtractor` →
//! `ImageProcessor`, else config.json (`image_processor_type`, then the model type's processor
//! in the registry). A trailing `Fast` or `Pil` is dropped: the one implementation is the PIL
//! backend, which is what transformers uses without torchvision and what v4 used by default.
//!
//! Per image (transformers' `PilBackend._preprocess`): convert to RGB when `do_convert_rgb`,
//! resize on 8-bit data with Pillow 13's exact algorithm, center-crop (zero padding when the crop
//! is larger), rescale as `float32(float64(x) * rescale_factor)`, normalize in float32 as
//! `(x - mean) / std`, channels first. The images are then stacked into `pixel_values`
//! `[B, C, H, W]`.

use std::fmt;
use std::path::{Path, PathBuf};

use ::image::DynamicImage;
use candle_core::{Device, Tensor};
use serde_json::{Map, Value};

use super::decode::{open, to_rgb_for_processor, MAX_DIMENSION, MAX_PIXELS};
use super::ocr::{apply_tesseract, OcrWords};
use super::resize::{resize_interleaved, Resample};
use crate::config::read_json_object;
use crate::error::{Error, Result};
use crate::hub::{Checkpoint, HubOptions};
use crate::models::Batch;

/// `IMAGENET_STANDARD_MEAN` / `_STD`.
const IMAGENET_STANDARD: [f64; 3] = [0.5, 0.5, 0.5];
/// `OPENAI_CLIP_MEAN`.
const CLIP_MEAN: [f64; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
/// `OPENAI_CLIP_STD`.
const CLIP_STD: [f64; 3] = [0.268_629_54, 0.261_302_58, 0.275_777_11];

/// A size as transformers' `SizeDict` holds it. Valid key sets: `height`+`width`,
/// `shortest_edge`, `shortest_edge`+`longest_edge`, `longest_edge`, `max_height`+`max_width`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SizeDict {
    /// Target height.
    pub height: Option<usize>,
    /// Target width.
    pub width: Option<usize>,
    /// Target length of the shorter side (aspect ratio kept).
    pub shortest_edge: Option<usize>,
    /// Upper bound of the longer side.
    pub longest_edge: Option<usize>,
    /// Upper bound of the height (aspect ratio kept).
    pub max_height: Option<usize>,
    /// Upper bound of the width (aspect ratio kept).
    pub max_width: Option<usize>,
}

impl SizeDict {
    /// `{"height": height, "width": width}`.
    pub fn height_width(height: usize, width: usize) -> Self {
        SizeDict {
            height: Some(height),
            width: Some(width),
            ..Self::default()
        }
    }

    /// `{"shortest_edge": edge}`.
    pub fn shortest_edge(edge: usize) -> Self {
        SizeDict {
            shortest_edge: Some(edge),
            ..Self::default()
        }
    }

    fn keys(&self) -> Vec<&'static str> {
        [
            ("height", self.height),
            ("width", self.width),
            ("shortest_edge", self.shortest_edge),
            ("longest_edge", self.longest_edge),
            ("max_height", self.max_height),
            ("max_width", self.max_width),
        ]
        .iter()
        .filter(|(_, v)| v.is_some())
        .map(|(k, _)| *k)
        .collect()
    }

    /// The key set is one transformers accepts (`is_valid_size_dict`).
    fn is_valid(&self) -> bool {
        let mut keys = self.keys();
        keys.sort_unstable();
        matches!(
            keys.as_slice(),
            ["height", "width"]
                | ["shortest_edge"]
                | ["longest_edge", "shortest_edge"]
                | ["longest_edge"]
                | ["max_height", "max_width"]
        )
    }
}

impl fmt::Display for SizeDict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fields: Vec<String> = [
            ("height", self.height),
            ("width", self.width),
            ("shortest_edge", self.shortest_edge),
            ("longest_edge", self.longest_edge),
            ("max_height", self.max_height),
            ("max_width", self.max_width),
        ]
        .iter()
        .filter_map(|(k, v)| v.map(|v| format!("'{k}': {v}")))
        .collect();
        write!(f, "{{{}}}", fields.join(", "))
    }
}

/// `image_mean` / `image_std`: one value for every channel, or one per channel.
#[derive(Clone, Debug, PartialEq)]
pub enum ChannelStats {
    /// A single number, used for every channel.
    Scalar(f64),
    /// One number per channel (must match the image's channel count).
    PerChannel(Vec<f64>),
}

impl ChannelStats {
    /// The values for `channels` channels as float32, or transformers' error.
    fn for_channels(&self, name: &str, channels: usize) -> Result<Vec<f32>> {
        match self {
            ChannelStats::Scalar(v) => Ok(vec![*v as f32; channels]),
            ChannelStats::PerChannel(values) if values.len() == channels => {
                Ok(values.iter().map(|v| *v as f32).collect())
            }
            ChannelStats::PerChannel(values) => Err(Error::input(format!(
                "{name} must have {channels} elements if it is an iterable, got {} (the image has \
                 {channels} channel(s); set do_convert_rgb to convert images to RGB)",
                values.len()
            ))),
        }
    }
}

/// The effective settings of an image processor: the class defaults overridden by the
/// checkpoint's config (the attributes transformers' `to_dict()` shows).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct ImageProcessorSettings {
    /// Convert every image to RGB first (alpha composited over white).
    pub do_convert_rgb: bool,
    /// Resize the images.
    pub do_resize: bool,
    /// The resize target.
    pub size: Option<SizeDict>,
    /// The Pillow filter used to resize.
    pub resample: Resample,
    /// Center-crop after resizing.
    pub do_center_crop: bool,
    /// The crop (`height` and `width`).
    pub crop_size: Option<SizeDict>,
    /// Multiply the pixels by `rescale_factor`.
    pub do_rescale: bool,
    /// Usually 1/255.
    pub rescale_factor: Option<f64>,
    /// Normalize with `image_mean` / `image_std`.
    pub do_normalize: bool,
    /// Per-channel mean.
    pub image_mean: Option<ChannelStats>,
    /// Per-channel standard deviation.
    pub image_std: Option<ChannelStats>,
    /// ConvNext: the crop ratio used when `shortest_edge < 384`.
    pub crop_pct: Option<f64>,
    /// Pad every image (bottom and right, with zeros) to `pad_size` or to the largest image.
    pub do_pad: bool,
    /// The padding target (`height` and `width`).
    pub pad_size: Option<SizeDict>,
    /// LayoutLMv2/v3: run Tesseract OCR on every image (before resizing) for words and boxes
    /// ([`ImageProcessor::preprocess_document`]). Always false for the other classes.
    pub apply_ocr: bool,
    /// LayoutLMv2/v3: tesseract's language (`-l`), `None` for tesseract's default (English).
    pub ocr_lang: Option<String>,
    /// LayoutLMv2/v3: extra tesseract arguments (split like `shlex.split`), e.g. `--psm 6`.
    pub tesseract_config: Option<String>,
}

/// How a class resizes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// `PilBackend.resize`.
    Standard,
    /// `ConvNextImageProcessorPil.resize` (crop_pct).
    ConvNext,
}

/// One image-processor class: its transformers name, resize rule and class defaults.
struct ClassSpec {
    name: &'static str,
    kind: Kind,
    default_to_square: bool,
    defaults: fn() -> ImageProcessorSettings,
    /// The class reads `apply_ocr`, `ocr_lang` and `tesseract_config` (LayoutLMv2/v3).
    ocr: bool,
    /// LayoutLMv2: `_preprocess` only resizes and flips RGB to BGR (no crop, rescale,
    /// normalize or pad), keeping uint8.
    resize_and_flip_only: bool,
}

fn base_defaults() -> ImageProcessorSettings {
    ImageProcessorSettings {
        do_convert_rgb: false,
        do_resize: true,
        size: None,
        resample: Resample::Bilinear,
        do_center_crop: false,
        crop_size: None,
        do_rescale: true,
        rescale_factor: Some(1.0 / 255.0),
        do_normalize: true,
        image_mean: Some(ChannelStats::PerChannel(IMAGENET_STANDARD.to_vec())),
        image_std: Some(ChannelStats::PerChannel(IMAGENET_STANDARD.to_vec())),
        crop_pct: None,
        do_pad: false,
        pad_size: None,
        apply_ocr: false,
        ocr_lang: None,
        tesseract_config: None,
    }
}

/// The classes autoclass implements, under the names transformers writes in configs.
const CLASSES: &[ClassSpec] = &[
    ClassSpec {
        name: "ViTImageProcessor",
        kind: Kind::Standard,
        default_to_square: true,
        defaults: || ImageProcessorSettings {
            size: Some(SizeDict::height_width(224, 224)),
            resample: Resample::Bilinear,
            ..base_defaults()
        },
        ocr: false,
        resize_and_flip_only: false,
    },
    ClassSpec {
        name: "ConvNextImageProcessor",
        kind: Kind::ConvNext,
        default_to_square: false,
        defaults: || ImageProcessorSettings {
            size: Some(SizeDict::shortest_edge(384)),
            resample: Resample::Bicubic,
            crop_pct: Some(224.0 / 256.0),
            ..base_defaults()
        },
        ocr: false,
        resize_and_flip_only: false,
    },
    ClassSpec {
        name: "DeiTImageProcessor",
        kind: Kind::Standard,
        default_to_square: true,
        defaults: || ImageProcessorSettings {
            size: Some(SizeDict::height_width(256, 256)),
            resample: Resample::Bicubic,
            do_center_crop: true,
            crop_size: Some(SizeDict::height_width(224, 224)),
            ..base_defaults()
        },
        ocr: false,
        resize_and_flip_only: false,
    },
    ClassSpec {
        name: "CLIPImageProcessor",
        kind: Kind::Standard,
        default_to_square: false,
        defaults: || ImageProcessorSettings {
            do_convert_rgb: true,
            size: Some(SizeDict::shortest_edge(224)),
            resample: Resample::Bicubic,
            do_center_crop: true,
            crop_size: Some(SizeDict::height_width(224, 224)),
            image_mean: Some(ChannelStats::PerChannel(CLIP_MEAN.to_vec())),
            image_std: Some(ChannelStats::PerChannel(CLIP_STD.to_vec())),
            ..base_defaults()
        },
        ocr: false,
        resize_and_flip_only: false,
    },
    ClassSpec {
        name: "LayoutLMv2ImageProcessor",
        kind: Kind::Standard,
        default_to_square: true,
        defaults: || ImageProcessorSettings {
            size: Some(SizeDict::height_width(224, 224)),
            resample: Resample::Bilinear,
            do_rescale: false,
            rescale_factor: None,
            do_normalize: false,
            image_mean: None,
            image_std: None,
            apply_ocr: true,
            tesseract_config: Some(String::new()),
            ..base_defaults()
        },
        ocr: true,
        resize_and_flip_only: true,
    },
    ClassSpec {
        name: "LayoutLMv3ImageProcessor",
        kind: Kind::Standard,
        default_to_square: true,
        defaults: || ImageProcessorSettings {
            size: Some(SizeDict::height_width(224, 224)),
            resample: Resample::Bilinear,
            apply_ocr: true,
            tesseract_config: Some(String::new()),
            ..base_defaults()
        },
        ocr: true,
        resize_and_flip_only: false,
    },
];

/// The image-processor class names autoclass implements.
pub fn known_classes() -> Vec<&'static str> {
    let mut names: Vec<&'static str> = CLASSES.iter().map(|c| c.name).collect();
    names.sort_unstable();
    names
}

/// A class name from a config with the backend suffixes dropped (`ViTImageProcessorFast`,
/// `ViTImageProcessorPil` → `ViTImageProcessor`).
fn canonical_class(name: &str) -> &str {
    let name = name.strip_suffix("Fast").unwrap_or(name);
    name.strip_suffix("Pil").unwrap_or(name)
}

fn class_spec(name: &str, path: Option<&Path>) -> Result<&'static ClassSpec> {
    let canonical = canonical_class(name);
    CLASSES
        .iter()
        .find(|c| c.name == canonical)
        .ok_or_else(|| Error::InvalidConfig {
            path: path.map(Path::to_path_buf),
            field: "image_processor_type".into(),
            reason: format!(
                "unknown image processor class `{name}`; autoclass implements: {}",
                known_classes().join(", ")
            ),
        })
}

// ---------------------------------------------------------------------------------------------
// Config parsing
// ---------------------------------------------------------------------------------------------

/// What transformers' `is_valid_size_dict` accepts.
const VALID_SIZE_KEYS: &str = "must have one of the following set of keys: {height, width}, \
     {shortest_edge}, {shortest_edge, longest_edge}, {longest_edge}, {max_height, max_width}";

use crate::config::FieldParser as Parser;

impl Parser<'_> {
    /// A JSON string; `null` is `None`.
    fn string(&self, field: &str, v: &Value) -> Result<Option<String>> {
        match v {
            Value::Null => Ok(None),
            Value::String(s) => Ok(Some(s.clone())),
            other => Err(self.err(field, format!("must be a string, found {other}"))),
        }
    }

    fn length(&self, field: &str, v: &Value) -> Result<usize> {
        let n = match v {
            Value::Number(n) => n.as_u64().or_else(|| {
                n.as_f64()
                    .filter(|f| f.fract() == 0.0 && *f >= 0.0)
                    .map(|f| f as u64)
            }),
            _ => None,
        };
        match n {
            Some(n) if n > 0 && n <= u64::from(MAX_DIMENSION) => Ok(n as usize),
            _ => Err(self.err(
                field,
                format!(
                    "must be a positive integer of at most {}, found {v}",
                    MAX_DIMENSION
                ),
            )),
        }
    }

    /// transformers' `get_size_dict(size, default_to_square=..., param_name=field)`.
    fn size(&self, field: &str, v: &Value, default_to_square: bool) -> Result<Option<SizeDict>> {
        let size = match v {
            Value::Null => return Ok(None),
            Value::Number(_) => {
                let n = self.length(field, v)?;
                if default_to_square {
                    SizeDict::height_width(n, n)
                } else {
                    SizeDict::shortest_edge(n)
                }
            }
            Value::Array(items) if items.len() == 2 => SizeDict::height_width(
                self.length(field, &items[0])?,
                self.length(field, &items[1])?,
            ),
            Value::Object(map) => {
                let mut size = SizeDict::default();
                for (k, v) in map {
                    if v.is_null() {
                        continue;
                    }
                    let slot = match k.as_str() {
                        "height" => &mut size.height,
                        "width" => &mut size.width,
                        "shortest_edge" => &mut size.shortest_edge,
                        "longest_edge" => &mut size.longest_edge,
                        "max_height" => &mut size.max_height,
                        "max_width" => &mut size.max_width,
                        other => {
                            return Err(self.err(
                                field,
                                format!("has an unknown key `{other}` ({VALID_SIZE_KEYS})"),
                            ))
                        }
                    };
                    *slot = Some(self.length(&format!("{field}.{k}"), v)?);
                }
                size
            }
            other => {
                return Err(self.err(
                    field,
                    format!("Could not convert size input to size dict: {other}"),
                ))
            }
        };
        if !size.is_valid() {
            return Err(self.err(
                field,
                format!("{VALID_SIZE_KEYS}; got {{{}}}", size.keys().join(", ")),
            ));
        }
        Ok(Some(size))
    }

    fn stats(&self, field: &str, v: &Value) -> Result<Option<ChannelStats>> {
        match v {
            Value::Null => Ok(None),
            Value::Number(_) => Ok(self.number(field, v)?.map(ChannelStats::Scalar)),
            Value::Array(items) => {
                let mut values = Vec::with_capacity(items.len());
                for item in items {
                    match self.number(field, item)? {
                        Some(x) => values.push(x),
                        None => return Err(self.err(field, "must not contain null")),
                    }
                }
                Ok(Some(ChannelStats::PerChannel(values)))
            }
            other => Err(self.err(
                field,
                format!("must be a number or a list of numbers, found {other}"),
            )),
        }
    }

    fn resample(&self, v: &Value) -> Result<Resample> {
        let parsed = match v {
            // `None`: PilBackend.resize falls back to BILINEAR.
            Value::Null => Ok(Resample::Bilinear),
            Value::Number(n) => match n.as_i64() {
                Some(code) => Resample::from_code(code),
                None => Err(self.err("resample", format!("{n} is not a Pillow filter code"))),
            },
            Value::String(s) => s.parse(),
            other => Err(self.err(
                "resample",
                format!("must be a Pillow filter code, found {other}"),
            )),
        };
        parsed.map_err(|e| match e {
            Error::InvalidConfig { field, reason, .. } => self.err(&field, reason),
            other => other,
        })
    }
}

/// The settings of `spec` with the config's values applied.
fn settings_from_config(
    spec: &ClassSpec,
    config: &Map<String, Value>,
    path: Option<&Path>,
) -> Result<ImageProcessorSettings> {
    let p = Parser { path };
    let mut s = (spec.defaults)();
    let default_to_square = match config.get("default_to_square") {
        Some(v) if !v.is_null() => p.flag("default_to_square", v)?,
        _ => spec.default_to_square,
    };
    for (key, v) in config {
        match key.as_str() {
            "do_convert_rgb" => s.do_convert_rgb = p.flag(key, v)?,
            "do_resize" => s.do_resize = p.flag(key, v)?,
            "size" => s.size = p.size(key, v, default_to_square)?,
            "resample" => s.resample = p.resample(v)?,
            "do_center_crop" => s.do_center_crop = p.flag(key, v)?,
            "crop_size" => s.crop_size = p.size(key, v, true)?,
            "do_rescale" => s.do_rescale = p.flag(key, v)?,
            "rescale_factor" => s.rescale_factor = p.number(key, v)?,
            "do_normalize" => s.do_normalize = p.flag(key, v)?,
            "image_mean" => s.image_mean = p.stats(key, v)?,
            "image_std" => s.image_std = p.stats(key, v)?,
            "crop_pct" if spec.kind == Kind::ConvNext => s.crop_pct = p.number(key, v)?,
            "do_pad" => s.do_pad = p.flag(key, v)?,
            "pad_size" => s.pad_size = p.size(key, v, true)?,
            "apply_ocr" if spec.ocr => s.apply_ocr = p.flag(key, v)?,
            "ocr_lang" if spec.ocr => s.ocr_lang = p.string(key, v)?,
            "tesseract_config" if spec.ocr => s.tesseract_config = p.string(key, v)?,
            // Everything else (image_processor_type, feature_extractor_type, processor_class,
            // auto_map, keys of other classes) is stored by transformers and never used here.
            _ => {}
        }
    }
    // CLIPImageProcessor: legacy KOSMOS-2 flag, squares the class default size.
    if spec.name == "CLIPImageProcessor"
        && config
            .get("use_square_size")
            .is_some_and(|v| v.as_bool() == Some(true))
    {
        s.size = Some(SizeDict::height_width(224, 224));
    }
    validate(spec, &s).map_err(|e| match e {
        Error::InvalidConfig { field, reason, .. } => p.err(&field, reason),
        other => other,
    })?;
    Ok(s)
}

/// transformers' `validate_preprocess_arguments` plus the class's own size checks.
fn validate(spec: &ClassSpec, s: &ImageProcessorSettings) -> Result<()> {
    for (field, size) in [
        ("size", &s.size),
        ("crop_size", &s.crop_size),
        ("pad_size", &s.pad_size),
    ] {
        let Some(size) = size else { continue };
        let values = [
            size.height,
            size.width,
            size.shortest_edge,
            size.longest_edge,
            size.max_height,
            size.max_width,
        ];
        if values
            .iter()
            .flatten()
            .any(|&v| v == 0 || v > MAX_DIMENSION as usize)
        {
            return Err(Error::config(
                field,
                format!("values must be between 1 and {MAX_DIMENSION}, got {size}"),
            ));
        }
    }
    if s.do_rescale && s.rescale_factor.is_none() {
        return Err(Error::config(
            "rescale_factor",
            "must be specified if `do_rescale` is `True`.",
        ));
    }
    if s.do_normalize && (s.image_mean.is_none() || s.image_std.is_none()) {
        return Err(Error::config(
            "image_mean",
            "`image_mean` and `image_std` must both be specified if `do_normalize` is `True`.",
        ));
    }
    if s.do_center_crop {
        match &s.crop_size {
            Some(c) if c.height.is_some() && c.width.is_some() => {}
            Some(c) => {
                return Err(Error::config(
                    "crop_size",
                    format!("The size dictionary must have keys 'height' and 'width'. Got {c}"),
                ))
            }
            None => {
                return Err(Error::config(
                    "crop_size",
                    "must be specified if `do_center_crop` is `True`.",
                ))
            }
        }
    }
    if s.do_pad {
        if let Some(p) = &s.pad_size {
            if p.height.is_none() || p.width.is_none() {
                return Err(Error::config(
                    "pad_size",
                    format!(
                        "Pad size must contain 'height' and 'width' keys only. Got pad_size={p}."
                    ),
                ));
            }
        }
    }
    if s.do_resize {
        let Some(size) = &s.size else {
            return Err(Error::config(
                "size",
                "must be specified if `do_resize` is `True`.",
            ));
        };
        match spec.kind {
            Kind::Standard => {
                let ok = size.shortest_edge.is_some()
                    || (size.max_height.is_some() && size.max_width.is_some())
                    || (size.height.is_some() && size.width.is_some());
                if !ok {
                    return Err(Error::config(
                        "size",
                        format!(
                            "Size must contain 'height' and 'width' keys, or 'max_height' and \
                             'max_width', or 'shortest_edge' key. Got {size}."
                        ),
                    ));
                }
            }
            Kind::ConvNext => {
                let Some(edge) = size.shortest_edge else {
                    return Err(Error::config(
                        "size",
                        format!("Size dictionary must contain 'shortest_edge' key. Got {size}"),
                    ));
                };
                if edge < 384 {
                    match s.crop_pct {
                        Some(pct) if pct > 0.0 && (edge as f64 / pct) >= 1.0 => {}
                        other => {
                            return Err(Error::config(
                                "crop_pct",
                                format!(
                                    "must be a positive number (with shortest_edge {edge} < 384 \
                                     the image is resized to int(shortest_edge / crop_pct)), \
                                     found {other:?}"
                                ),
                            ))
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Output sizes (image_transforms.py)
// ---------------------------------------------------------------------------------------------

/// `get_resize_output_image_size(image, size, default_to_square=False)`: the shorter side
/// becomes `size`, the longer one `int(size * long / short)`. Returns (height, width).
fn shortest_edge_size(height: usize, width: usize, size: usize) -> (usize, usize) {
    let (short, long) = if width <= height {
        (width, height)
    } else {
        (height, width)
    };
    let new_long = ((size * long) as f64 / short as f64) as usize;
    if width <= height {
        (new_long, size)
    } else {
        (size, new_long)
    }
}

/// `get_size_with_aspect_ratio((height, width), size, max_size)`. Returns (height, width).
fn size_with_aspect_ratio(
    height: usize,
    width: usize,
    size: usize,
    max_size: usize,
) -> (usize, usize) {
    let mut size = size;
    let mut raw_size = None;
    let min_original = height.min(width) as f64;
    let max_original = height.max(width) as f64;
    if max_original / min_original * size as f64 > max_size as f64 {
        let raw = max_size as f64 * min_original / max_original;
        raw_size = Some(raw);
        size = raw.round_ties_even() as usize;
    }
    if (height <= width && height == size) || (width <= height && width == size) {
        (height, width)
    } else if width < height {
        let oh = match raw_size {
            Some(raw) => (raw * height as f64 / width as f64) as usize,
            None => ((size * height) as f64 / width as f64) as usize,
        };
        (oh, size)
    } else {
        let ow = match raw_size {
            Some(raw) => (raw * width as f64 / height as f64) as usize,
            None => ((size * width) as f64 / height as f64) as usize,
        };
        (size, ow)
    }
}

/// `get_image_size_for_max_height_width`. Returns (height, width).
fn size_for_max_height_width(
    height: usize,
    width: usize,
    max_height: usize,
    max_width: usize,
) -> (usize, usize) {
    let scale = (max_height as f64 / height as f64).min(max_width as f64 / width as f64);
    (
        (height as f64 * scale) as usize,
        (width as f64 * scale) as usize,
    )
}

// ---------------------------------------------------------------------------------------------
// Pixels
// ---------------------------------------------------------------------------------------------

/// An interleaved 8-bit image (`[height, width, channels]`), as numpy holds a PIL image.
#[derive(Clone, Debug)]
struct Pixels {
    width: usize,
    height: usize,
    channels: usize,
    data: Vec<u8>,
}

impl Pixels {
    /// The image as transformers sees it: `convert_to_rgb` when asked, else the PIL mode's bands
    /// (L 1, LA 2, RGB 3, RGBA 4; 16-bit RGB(A) keep the high byte as Pillow does).
    fn from_image(img: &DynamicImage, convert_rgb: bool, index: usize) -> Result<Self> {
        let (width, height) = (img.width() as usize, img.height() as usize);
        if width == 0 || height == 0 {
            return Err(Error::input(format!(
                "image {index} has no pixels ({width}x{height})"
            )));
        }
        let (channels, data) = if convert_rgb {
            (3, to_rgb_for_processor(img).into_raw())
        } else {
            match img {
                DynamicImage::ImageLuma8(i) => (1, i.as_raw().clone()),
                DynamicImage::ImageLumaA8(i) => (2, i.as_raw().clone()),
                DynamicImage::ImageRgb8(i) => (3, i.as_raw().clone()),
                DynamicImage::ImageRgba8(i) => (4, i.as_raw().clone()),
                DynamicImage::ImageLuma16(i) => {
                    // Pillow mode I;16 → a uint16 array; transformers casts it to uint8 for PIL
                    // only when every value is within [0, 255].
                    let max = i.as_raw().iter().copied().max().unwrap_or(0);
                    if max > 255 {
                        let min = i.as_raw().iter().copied().min().unwrap_or(0);
                        return Err(Error::input(format!(
                            "The image to be converted to a PIL image contains values outside the \
                             range [0, 255], got [{min}, {max}] which cannot be converted to uint8. \
                             (image {index} is 16-bit grayscale; set do_convert_rgb to convert it \
                             to RGB as Pillow does)"
                        )));
                    }
                    (1, i.as_raw().iter().map(|&v| v as u8).collect())
                }
                DynamicImage::ImageLumaA16(i) => {
                    // Pillow opens 16-bit gray+alpha PNGs as RGBA.
                    let data = i
                        .pixels()
                        .flat_map(|p| {
                            let l = (p.0[0] >> 8) as u8;
                            [l, l, l, (p.0[1] >> 8) as u8]
                        })
                        .collect();
                    (4, data)
                }
                DynamicImage::ImageRgb16(i) => {
                    (3, i.as_raw().iter().map(|&v| (v >> 8) as u8).collect())
                }
                DynamicImage::ImageRgba16(i) => {
                    (4, i.as_raw().iter().map(|&v| (v >> 8) as u8).collect())
                }
                other if other.color().has_alpha() => (4, other.to_rgba8().into_raw()),
                other => (3, other.to_rgb8().into_raw()),
            }
        };
        Ok(Pixels {
            width,
            height,
            channels,
            data,
        })
    }

    /// The pixels as an image (as `to_pil_image` makes one: L, LA, RGB or RGBA).
    fn to_dynamic(&self) -> Result<DynamicImage> {
        let (w, h) = (self.width as u32, self.height as u32);
        let data = self.data.clone();
        let img = match self.channels {
            1 => ::image::GrayImage::from_raw(w, h, data).map(DynamicImage::ImageLuma8),
            2 => ::image::GrayAlphaImage::from_raw(w, h, data).map(DynamicImage::ImageLumaA8),
            3 => ::image::RgbImage::from_raw(w, h, data).map(DynamicImage::ImageRgb8),
            4 => ::image::RgbaImage::from_raw(w, h, data).map(DynamicImage::ImageRgba8),
            _ => None,
        };
        img.ok_or_else(|| {
            Error::input(format!(
                "internal error: cannot rebuild a {w}x{h} image with {} channels",
                self.channels
            ))
        })
    }

    /// Pillow's `resize((width, height), resample)`.
    fn resize(&self, height: usize, width: usize, resample: Resample) -> Result<Pixels> {
        if (height, width) == (self.height, self.width) {
            return Ok(self.clone());
        }
        if height == 0
            || width == 0
            || height > MAX_DIMENSION as usize
            || width > MAX_DIMENSION as usize
            || (height as u64) * (width as u64) > MAX_PIXELS
        {
            return Err(Error::input(format!(
                "resizing a {}x{} image to {width}x{height} is refused: the result must be \
                 between 1x1 and {MAX_DIMENSION}x{MAX_DIMENSION} and at most {MAX_PIXELS} pixels",
                self.width, self.height
            )));
        }
        if self.channels == 2 || self.channels == 4 {
            return Err(Error::input(format!(
                "resizing an image with an alpha channel ({} channels) is not supported: Pillow \
                 resamples LA/RGBA premultiplied; set do_convert_rgb to composite it over white",
                self.channels
            )));
        }
        let data = resize_interleaved(
            &self.data,
            self.width,
            self.height,
            self.channels,
            width,
            height,
            resample,
        )?;
        Ok(Pixels {
            width,
            height,
            channels: self.channels,
            data,
        })
    }

    /// transformers' `center_crop`: zero-padded when the crop is larger than the image.
    fn center_crop(&self, crop_h: usize, crop_w: usize) -> Pixels {
        if (crop_h, crop_w) == (self.height, self.width) {
            return self.clone();
        }
        let c = self.channels;
        // Source offset of output (0, 0): floor((orig - crop) / 2), also when padding.
        let top = (self.height as i64 - crop_h as i64).div_euclid(2);
        let left = (self.width as i64 - crop_w as i64).div_euclid(2);
        let mut data = vec![0u8; crop_h * crop_w * c];
        let x0 = (-left).max(0) as usize;
        let x1 = ((self.width as i64 - left).min(crop_w as i64)).max(0) as usize;
        for (y, out_row) in data.chunks_exact_mut(crop_w * c).enumerate() {
            let sy = top + y as i64;
            if sy < 0 || sy >= self.height as i64 || x0 >= x1 {
                continue;
            }
            let row = sy as usize * self.width * c;
            let sx0 = (left + x0 as i64) as usize;
            out_row[x0 * c..x1 * c]
                .copy_from_slice(&self.data[row + sx0 * c..row + (sx0 + x1 - x0) * c]);
        }
        Pixels {
            width: crop_w,
            height: crop_h,
            channels: c,
            data,
        }
    }
}

/// One processed image, channels first.
enum Processed {
    /// Neither rescaled nor normalized: still uint8.
    U8 { shape: [usize; 3], data: Vec<u8> },
    /// Float32 after rescale and/or normalize.
    F32 { shape: [usize; 3], data: Vec<f32> },
}

impl Processed {
    fn shape(&self) -> [usize; 3] {
        match self {
            Processed::U8 { shape, .. } | Processed::F32 { shape, .. } => *shape,
        }
    }

    /// Pads bottom/right with zeros to `height x width`.
    fn pad(self, height: usize, width: usize) -> Result<Processed> {
        let [c, h, w] = self.shape();
        if (h, w) == (height, width) {
            return Ok(self);
        }
        if h > height || w > width {
            return Err(Error::input(format!(
                "Padding dimensions are negative. Please make sure that the `pad_size` is larger \
                 than the image size. Got pad_size=({height}, {width}), image_size=({h}, {w})."
            )));
        }
        fn pad_vec<T: Copy + Default>(
            data: &[T],
            c: usize,
            h: usize,
            w: usize,
            height: usize,
            width: usize,
        ) -> Vec<T> {
            let mut out = vec![T::default(); c * height * width];
            for ch in 0..c {
                for y in 0..h {
                    let src = &data[(ch * h + y) * w..(ch * h + y + 1) * w];
                    let dst = (ch * height + y) * width;
                    out[dst..dst + w].copy_from_slice(src);
                }
            }
            out
        }
        let shape = [c, height, width];
        Ok(match self {
            Processed::U8 { data, .. } => Processed::U8 {
                shape,
                data: pad_vec(&data, c, h, w, height, width),
            },
            Processed::F32 { data, .. } => Processed::F32 {
                shape,
                data: pad_vec(&data, c, h, w, height, width),
            },
        })
    }
}

// ---------------------------------------------------------------------------------------------
// The processor
// ---------------------------------------------------------------------------------------------

/// An image processor: turns images into `pixel_values`, like transformers' PIL-backend
/// `<Model>ImageProcessor` (`ViTImageProcessorPil`, ...).
#[derive(Clone, Debug)]
pub struct ImageProcessor {
    class_name: &'static str,
    kind: Kind,
    settings: ImageProcessorSettings,
}

/// `AutoImageProcessor`: picks and builds the right image processor for a checkpoint.
pub struct AutoImageProcessor;

impl AutoImageProcessor {
    /// `AutoImageProcessor.from_pretrained(name_or_path)`.
    pub fn from_pretrained(name_or_path: &str) -> Result<ImageProcessor> {
        Self::from_pretrained_with(name_or_path, &HubOptions::default())
    }

    /// `AutoImageProcessor.from_pretrained(name_or_path, revision=..., subfolder=...)`.
    pub fn from_pretrained_with(name_or_path: &str, hub: &HubOptions) -> Result<ImageProcessor> {
        let checkpoint = Checkpoint::resolve(name_or_path, hub)?;
        ImageProcessor::from_checkpoint(&checkpoint)
    }
}

/// The image-processor dict of a checkpoint and the file it came from.
fn processor_dict(checkpoint: &Checkpoint) -> Result<(Map<String, Value>, PathBuf)> {
    if let Some(path) = checkpoint.get("processor_config.json")? {
        let raw = read_json_object(&path)?;
        match raw.get("image_processor") {
            Some(Value::Object(dict)) => return Ok((dict.clone(), path)),
            Some(Value::Null) | None => {}
            Some(other) => {
                return Err(Error::InvalidConfig {
                    path: Some(path),
                    field: "image_processor".into(),
                    reason: format!("must be an object, found {other}"),
                })
            }
        }
    }
    let path = checkpoint.require("preprocessor_config.json")?;
    Ok((read_json_object(&path)?, path))
}

/// The class named by the image-processor dict, or by config.json.
fn resolve_class_name(
    dict: &Map<String, Value>,
    dict_path: &Path,
    checkpoint: &Checkpoint,
) -> Result<String> {
    if let Some(name) = dict.get("image_processor_type").and_then(Value::as_str) {
        return Ok(name.to_string());
    }
    if let Some(name) = dict.get("feature_extractor_type").and_then(Value::as_str) {
        return Ok(name.replace("FeatureExtractor", "ImageProcessor"));
    }
    crate::registry::preprocessor_class_from_config(
        checkpoint,
        "image_processor_type",
        "image processor",
        |a| a.image_processor_class(),
        dict_path,
    )
}

impl ImageProcessor {
    /// Builds the image processor of a resolved checkpoint (class chosen as
    /// `AutoImageProcessor` chooses it).
    pub fn from_checkpoint(checkpoint: &Checkpoint) -> Result<Self> {
        let (dict, path) = processor_dict(checkpoint)?;
        let class = resolve_class_name(&dict, &path, checkpoint)?;
        let spec = class_spec(&class, Some(&path))?;
        let settings = settings_from_config(spec, &dict, Some(&path))?;
        Ok(ImageProcessor {
            class_name: spec.name,
            kind: spec.kind,
            settings,
        })
    }

    /// Builds `class_name` (`ViTImageProcessor`, legacy `ViTFeatureExtractor`, `...Fast`, `...Pil`)
    /// from an image-processor config dict (the content of preprocessor_config.json).
    pub fn from_config(class_name: &str, config: &Map<String, Value>) -> Result<Self> {
        let class = class_name.replace("FeatureExtractor", "ImageProcessor");
        let spec = class_spec(&class, None)?;
        let settings = settings_from_config(spec, config, None)?;
        Ok(ImageProcessor {
            class_name: spec.name,
            kind: spec.kind,
            settings,
        })
    }

    /// The transformers class name (`ViTImageProcessor`; its PIL backend is
    /// `ViTImageProcessorPil`).
    pub fn class_name(&self) -> &str {
        self.class_name
    }

    /// The effective settings.
    pub fn settings(&self) -> &ImageProcessorSettings {
        &self.settings
    }

    /// Mutable settings (transformers' `preprocess(..., **kwargs)` overrides); checked again on
    /// every call.
    pub fn settings_mut(&mut self) -> &mut ImageProcessorSettings {
        &mut self.settings
    }

    /// The spec of this processor's class.
    fn spec(&self) -> Result<&'static ClassSpec> {
        class_spec(self.class_name, None)
    }

    /// `processor(images, return_tensors="pt")`: `pixel_values` `[B, C, H, W]` on the CPU
    /// (float32; uint8 when neither rescaling nor normalizing). Every image is processed on its
    /// own, so mixed sizes are fine as long as they end up the same size.
    pub fn preprocess(&self, images: &[DynamicImage]) -> Result<Batch> {
        self.preprocess_on(images, &Device::Cpu)
    }

    /// [`Self::preprocess`] with the tensor placed on `device`.
    pub fn preprocess_on(&self, images: &[DynamicImage], device: &Device) -> Result<Batch> {
        self.run(images, device, false).map(|(batch, _)| batch)
    }

    /// Whether [`Self::preprocess_document`] runs OCR: the class is LayoutLMv2/v3 and its
    /// `apply_ocr` is on.
    pub fn apply_ocr(&self) -> bool {
        self.spec().is_ok_and(|s| s.ocr) && self.settings.apply_ocr
    }

    /// LayoutLMv2/v3 `processor(images, return_tensors="pt")`: `pixel_values` `[B, C, H, W]`
    /// (uint8 BGR for LayoutLMv2, float32 for LayoutLMv3) and, when [`Self::apply_ocr`], the
    /// words and normalised boxes tesseract finds in each image at its original size
    /// ([`super::ocr::apply_tesseract`] with `ocr_lang` and `tesseract_config`); `None` when OCR
    /// is off. For other classes this is [`Self::preprocess`] with `None`.
    /// [`Self::preprocess`] gives the same `pixel_values` without running OCR.
    pub fn preprocess_document(
        &self,
        images: &[DynamicImage],
    ) -> Result<(Batch, Option<Vec<OcrWords>>)> {
        self.run(images, &Device::Cpu, true)
    }

    /// [`Self::preprocess_document`] with the tensor placed on `device`.
    pub fn preprocess_document_on(
        &self,
        images: &[DynamicImage],
        device: &Device,
    ) -> Result<(Batch, Option<Vec<OcrWords>>)> {
        self.run(images, device, true)
    }

    /// The pipeline; OCR only when `with_ocr` and [`Self::apply_ocr`].
    fn run(
        &self,
        images: &[DynamicImage],
        device: &Device,
        with_ocr: bool,
    ) -> Result<(Batch, Option<Vec<OcrWords>>)> {
        let spec = self.spec()?;
        validate(spec, &self.settings)?;
        if images.is_empty() {
            return Err(Error::input("no images to preprocess"));
        }
        let ocr = with_ocr && self.apply_ocr();
        let mut words = Vec::new();
        let mut processed = Vec::with_capacity(images.len());
        for (index, image) in images.iter().enumerate() {
            let px = Pixels::from_image(image, self.settings.do_convert_rgb, index)?;
            if ocr {
                let found = apply_tesseract(
                    &px.to_dynamic()?,
                    self.settings.ocr_lang.as_deref(),
                    self.settings.tesseract_config.as_deref().unwrap_or(""),
                )
                .map_err(|e| match e {
                    Error::Input { reason } => {
                        Error::input(format!("OCR of image {index}: {reason}"))
                    }
                    other => other,
                })?;
                words.push(found);
            }
            processed.push(self.process_pixels(px, spec)?);
        }
        let s = &self.settings;
        if s.do_pad && !spec.resize_and_flip_only {
            let (ph, pw) = match &s.pad_size {
                Some(SizeDict {
                    height: Some(h),
                    width: Some(w),
                    ..
                }) => (*h, *w),
                _ => processed.iter().fold((0, 0), |(h, w), p| {
                    let [_, ph, pw] = p.shape();
                    (h.max(ph), w.max(pw))
                }),
            };
            processed = processed
                .into_iter()
                .map(|p| p.pad(ph, pw))
                .collect::<Result<_>>()?;
        }
        let first = processed
            .first()
            .ok_or_else(|| Error::input("no images to preprocess"))?;
        let shape = first.shape();
        if let Some((i, p)) = processed
            .iter()
            .enumerate()
            .find(|(_, p)| p.shape() != shape)
        {
            return Err(Error::input(format!(
                "cannot stack the processed images into one tensor: image 0 is {shape:?} \
                 (channels, height, width) but image {i} is {:?}; enable do_resize (or do_pad) so \
                 they end up the same size",
                p.shape()
            )));
        }
        let dims = (processed.len(), shape[0], shape[1], shape[2]);
        let tensor = if matches!(first, Processed::U8 { .. }) {
            let mut all = Vec::with_capacity(dims.0 * shape.iter().product::<usize>());
            for p in processed {
                if let Processed::U8 { data, .. } = p {
                    all.extend_from_slice(&data);
                }
            }
            Tensor::from_vec(all, dims, device)?
        } else {
            let mut all = Vec::with_capacity(dims.0 * shape.iter().product::<usize>());
            for p in processed {
                if let Processed::F32 { data, .. } = p {
                    all.extend_from_slice(&data);
                }
            }
            Tensor::from_vec(all, dims, device)?
        };
        let mut batch = Batch::new();
        batch.insert("pixel_values", tensor);
        Ok((batch, ocr.then_some(words)))
    }

    /// Decodes the files ([`super::decode::open`]) and preprocesses them.
    pub fn preprocess_paths(&self, paths: &[PathBuf]) -> Result<Batch> {
        let images = paths.iter().map(|p| open(p)).collect::<Result<Vec<_>>>()?;
        self.preprocess(&images)
    }

    /// One image (already converted) through resize → crop → rescale → normalize, channels
    /// first; LayoutLMv2: resize → flip to BGR.
    fn process_pixels(&self, mut px: Pixels, spec: &ClassSpec) -> Result<Processed> {
        let s = &self.settings;
        if spec.resize_and_flip_only {
            if s.do_resize {
                px = self.resize(px)?;
            }
            let (c, plane) = (px.channels, px.height * px.width);
            let mut data = vec![0u8; c * plane];
            for (i, pixel) in px.data.chunks_exact(c).enumerate() {
                for (ch, &v) in pixel.iter().enumerate() {
                    // flip_channel_order: channel ch goes to c - 1 - ch.
                    data[(c - 1 - ch) * plane + i] = v;
                }
            }
            return Ok(Processed::U8 {
                shape: [c, px.height, px.width],
                data,
            });
        }
        let c = px.channels;
        // Fail before any work on a channel count that normalize will reject.
        let stats = if s.do_normalize {
            match (&s.image_mean, &s.image_std) {
                (Some(mean), Some(std)) => {
                    Some((mean.for_channels("mean", c)?, std.for_channels("std", c)?))
                }
                _ => None,
            }
        } else {
            None
        };
        if s.do_resize {
            px = self.resize(px)?;
        }
        if s.do_center_crop {
            if let Some(SizeDict {
                height: Some(h),
                width: Some(w),
                ..
            }) = &s.crop_size
            {
                px = px.center_crop(*h, *w);
            }
        }
        let (h, w) = (px.height, px.width);
        let plane = h * w;
        if !s.do_rescale && stats.is_none() {
            let mut data = vec![0u8; c * plane];
            for (i, pixel) in px.data.chunks_exact(c).enumerate() {
                for (ch, &v) in pixel.iter().enumerate() {
                    data[ch * plane + i] = v;
                }
            }
            return Ok(Processed::U8 {
                shape: [c, h, w],
                data,
            });
        }
        // rescale: float32(float64(x) * factor); without it, normalize casts uint8 to float32.
        let lut: Vec<f32> = (0..=255u8)
            .map(|v| match (s.do_rescale, s.rescale_factor) {
                (true, Some(factor)) => (f64::from(v) * factor) as f32,
                _ => f32::from(v),
            })
            .collect();
        let mut data = vec![0f32; c * plane];
        for (i, pixel) in px.data.chunks_exact(c).enumerate() {
            for (ch, &v) in pixel.iter().enumerate() {
                let x = lut[usize::from(v)];
                data[ch * plane + i] = match &stats {
                    Some((mean, std)) => (x - mean[ch]) / std[ch],
                    None => x,
                };
            }
        }
        Ok(Processed::F32 {
            shape: [c, h, w],
            data,
        })
    }

    /// The class's resize (PilBackend.resize, or ConvNext's crop_pct rule).
    fn resize(&self, px: Pixels) -> Result<Pixels> {
        let s = &self.settings;
        let Some(size) = &s.size else {
            return Ok(px);
        };
        let (h, w) = (px.height, px.width);
        match self.kind {
            Kind::ConvNext => {
                let edge = size.shortest_edge.unwrap_or(384);
                if edge < 384 {
                    let pct = s.crop_pct.unwrap_or(224.0 / 256.0);
                    let resize_edge = (edge as f64 / pct) as usize;
                    let (nh, nw) = shortest_edge_size(h, w, resize_edge);
                    let resized = px.resize(nh, nw, s.resample)?;
                    Ok(resized.center_crop(edge, edge))
                } else {
                    px.resize(edge, edge, s.resample)
                }
            }
            Kind::Standard => {
                let (nh, nw) = match size {
                    SizeDict {
                        shortest_edge: Some(se),
                        longest_edge: Some(le),
                        ..
                    } => size_with_aspect_ratio(h, w, *se, *le),
                    SizeDict {
                        shortest_edge: Some(se),
                        ..
                    } => shortest_edge_size(h, w, *se),
                    SizeDict {
                        max_height: Some(mh),
                        max_width: Some(mw),
                        ..
                    } => size_for_max_height_width(h, w, *mh, *mw),
                    SizeDict {
                        height: Some(th),
                        width: Some(tw),
                        ..
                    } => (*th, *tw),
                    other => {
                        return Err(Error::config(
                            "size",
                            format!(
                                "Size must contain 'height' and 'width' keys, or 'max_height' \
                                 and 'max_width', or 'shortest_edge' key. Got {other}."
                            ),
                        ))
                    }
                };
                if nh == 0 || nw == 0 {
                    return Err(Error::input(format!(
                        "resizing a {w}x{h} image with size {size} gives an empty image \
                         ({nw}x{nh})"
                    )));
                }
                px.resize(nh, nw, s.resample)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use ::image::{GrayImage, Luma, Rgb, RgbImage};
    use serde_json::json;

    fn config(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => panic!("not an object"),
        }
    }

    #[test]
    fn legacy_sizes_follow_default_to_square() {
        let vit = ImageProcessor::from_config("ViTFeatureExtractor", &config(json!({"size": 224})))
            .unwrap();
        assert_eq!(vit.class_name(), "ViTImageProcessor");
        assert_eq!(vit.settings().size, Some(SizeDict::height_width(224, 224)));
        let clip = ImageProcessor::from_config(
            "CLIPImageProcessorFast",
            &config(json!({"size": 224, "crop_size": 224})),
        )
        .unwrap();
        assert_eq!(clip.settings().size, Some(SizeDict::shortest_edge(224)));
        assert_eq!(
            clip.settings().crop_size,
            Some(SizeDict::height_width(224, 224))
        );
        assert!(clip.settings().do_convert_rgb);
        let cn =
            ImageProcessor::from_config("ConvNextImageProcessorPil", &config(json!({"size": 224})))
                .unwrap();
        assert_eq!(cn.settings().size, Some(SizeDict::shortest_edge(224)));
        assert_eq!(cn.settings().crop_pct, Some(0.875));
        let deit =
            ImageProcessor::from_config("DeiTImageProcessor", &config(json!({"size": [100, 50]})))
                .unwrap();
        assert_eq!(deit.settings().size, Some(SizeDict::height_width(100, 50)));
    }

    #[test]
    fn invalid_configs_are_errors() {
        for (class, cfg) in [
            ("ViTImageProcessor", json!({"size": {"height": 3}})),
            ("ViTImageProcessor", json!({"size": {"longest_edge": 3}})),
            (
                "ViTImageProcessor",
                json!({"size": {"height": 3, "width": 4, "depth": 1}}),
            ),
            ("ViTImageProcessor", json!({"size": -1})),
            ("ViTImageProcessor", json!({"resample": 9})),
            (
                "ViTImageProcessor",
                json!({"do_normalize": true, "image_mean": null}),
            ),
            ("ViTImageProcessor", json!({"do_center_crop": true})),
            (
                "ConvNextImageProcessor",
                json!({"size": {"height": 3, "width": 4}}),
            ),
            (
                "ConvNextImageProcessor",
                json!({"crop_pct": null, "size": 224}),
            ),
            ("BeitImageProcessor", json!({})),
        ] {
            let err = ImageProcessor::from_config(class, &config(cfg.clone()));
            assert!(err.is_err(), "{class} {cfg}");
        }
        let err = ImageProcessor::from_config("FooImageProcessor", &Map::new()).unwrap_err();
        assert!(err.to_string().contains("ViTImageProcessor"), "{err}");
    }

    #[test]
    fn output_size_rules() {
        // ConvNext 300x400 (h x w) → shortest 256: 256 x int(256*400/300) = 341.
        assert_eq!(shortest_edge_size(300, 400, 256), (256, 341));
        assert_eq!(shortest_edge_size(400, 300, 256), (341, 256));
        assert_eq!(shortest_edge_size(300, 451, 224), (224, 336));
        assert_eq!(size_with_aspect_ratio(480, 640, 800, 1333), (800, 1066));
        assert_eq!(size_with_aspect_ratio(100, 1000, 800, 1333), (133, 1333));
        assert_eq!(size_for_max_height_width(100, 200, 50, 50), (25, 50));
    }

    #[test]
    fn center_crop_pads_with_zeros() {
        let px = Pixels {
            width: 3,
            height: 2,
            channels: 1,
            data: vec![1, 2, 3, 4, 5, 6],
        };
        let out = px.center_crop(4, 2);
        // top = floor((2-4)/2) = -1, left = floor((3-2)/2) = 0.
        assert_eq!(out.data, vec![0, 0, 1, 2, 4, 5, 0, 0]);
        let out = px.center_crop(1, 5);
        // top = 0, left = floor((3-5)/2) = -1.
        assert_eq!(out.data, vec![0, 1, 2, 3, 0]);
    }

    #[test]
    fn pipeline_numerics() {
        let p = ImageProcessor::from_config(
            "ViTImageProcessor",
            &config(json!({"size": {"height": 2, "width": 3}})),
        )
        .unwrap();
        let img = RgbImage::from_fn(3, 2, |x, y| Rgb([(x * 40) as u8, (y * 100) as u8, 255]));
        let batch = p.preprocess(&[DynamicImage::ImageRgb8(img)]).unwrap();
        let pv = batch.require("pixel_values").unwrap();
        assert_eq!(pv.dims(), &[1, 3, 2, 3]);
        let v = pv.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let expect = |x: u8| ((f64::from(x) * (1.0 / 255.0)) as f32 - 0.5f32) / 0.5f32;
        assert_eq!(v[1], expect(40));
        assert_eq!(v[6 + 3], expect(100));
        assert_eq!(v[12], expect(255));
    }

    #[test]
    fn gray_without_conversion() {
        let gray = DynamicImage::ImageLuma8(GrayImage::from_pixel(5, 4, Luma([9])));
        let p = ImageProcessor::from_config("ViTImageProcessor", &Map::new()).unwrap();
        let err = p.preprocess(std::slice::from_ref(&gray)).unwrap_err();
        assert!(
            err.to_string()
                .contains("mean must have 1 elements if it is an iterable, got 3"),
            "{err}"
        );
        let p = ImageProcessor::from_config(
            "ViTImageProcessor",
            &config(json!({"image_mean": 0.5, "image_std": 0.5, "size": 8})),
        )
        .unwrap();
        let pv = p.preprocess(&[gray]).unwrap();
        assert_eq!(pv.require("pixel_values").unwrap().dims(), &[1, 1, 8, 8]);
    }

    #[test]
    fn uint8_output_and_mismatched_sizes() {
        let p = ImageProcessor::from_config(
            "ViTImageProcessor",
            &config(json!({"do_resize": false, "do_rescale": false, "do_normalize": false})),
        )
        .unwrap();
        let a = DynamicImage::ImageRgb8(RgbImage::from_pixel(4, 3, Rgb([1, 2, 3])));
        let pv = p.preprocess(&[a.clone(), a.clone()]).unwrap();
        let t = pv.require("pixel_values").unwrap();
        assert_eq!(t.dtype(), candle_core::DType::U8);
        assert_eq!(t.dims(), &[2, 3, 3, 4]);
        let b = DynamicImage::ImageRgb8(RgbImage::from_pixel(5, 3, Rgb([1, 2, 3])));
        assert!(p.preprocess(&[a.clone(), b.clone()]).is_err());
        let mut padded = p.clone();
        padded.settings_mut().do_pad = true;
        let t = padded.preprocess(&[a.clone(), b]).unwrap();
        assert_eq!(t.require("pixel_values").unwrap().dims(), &[2, 3, 3, 5]);
        assert!(p.preprocess(&[]).is_err());
        // Hand-edited settings are checked again; nothing panics.
        let mut zero = p.clone();
        zero.settings_mut().do_center_crop = true;
        zero.settings_mut().crop_size = Some(SizeDict::height_width(0, 3));
        assert!(zero.preprocess(&[a]).is_err());
        let thin = DynamicImage::ImageRgb8(RgbImage::from_pixel(1, 2000, Rgb([1, 2, 3])));
        let clip = ImageProcessor::from_config("CLIPImageProcessor", &Map::new()).unwrap();
        let err = clip.preprocess(&[thin]).unwrap_err();
        assert!(err.to_string().contains("refused"), "{err}");
    }
}
