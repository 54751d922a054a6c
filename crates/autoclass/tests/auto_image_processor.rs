//! Image decoding, Pillow-exact resizing and AutoImageProcessor against fixtures produced by
//! Pillow 13.0.0 and transformers 5.24 (PIL backend): tests/fixtures/vision/generate_vision.py.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use autoclass::candle_core::{DType, Device, Tensor};
use autoclass::image::decode::{open, to_rgb, to_rgb_for_processor};
use autoclass::image::resize::{resize, Resample};
use autoclass::{AutoImageProcessor, Error, ImageProcessor};
use image::{DynamicImage, RgbImage};
use serde_json::Value;

fn vision() -> PathBuf {
    common::fixtures().join("vision")
}

fn images_dir() -> PathBuf {
    vision().join("images")
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn u8_values(t: &Tensor) -> Vec<u8> {
    t.to_dtype(DType::U8)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<u8>()
        .unwrap()
}

/// An HWC uint8 fixture tensor as an RGB image.
fn rgb_from_tensor(t: &Tensor) -> RgbImage {
    let dims = t.dims();
    assert_eq!(dims.len(), 3);
    assert_eq!(dims[2], 3);
    RgbImage::from_raw(dims[1] as u32, dims[0] as u32, u8_values(t)).unwrap()
}

/// (max |diff|, number of differing values, number of values).
fn diff_stats(a: &[u8], b: &[u8]) -> (u8, usize, usize) {
    assert_eq!(a.len(), b.len());
    let mut max = 0u8;
    let mut n = 0usize;
    for (x, y) in a.iter().zip(b) {
        let d = x.abs_diff(*y);
        if d > 0 {
            n += 1;
            max = max.max(d);
        }
    }
    (max, n, a.len())
}

fn is_jpeg(name: &str) -> bool {
    name.ends_with(".jpg") || name.ends_with(".jpeg")
}

// ---------------------------------------------------------------------------------------------
// Decoding
// ---------------------------------------------------------------------------------------------

#[test]
fn decoded_images_equal_pillow_convert_rgb() {
    let expected = common::expected(images_dir().join("decoded.safetensors"));
    let mut names: Vec<&String> = expected.keys().collect();
    names.sort();
    assert!(
        names.len() >= 10,
        "decoded.safetensors has {} entries",
        names.len()
    );
    for key in names {
        let (file, processor) = match key.split_once(':') {
            Some((file, "processor_rgb")) => (file, true),
            Some(other) => panic!("unexpected key {other:?}"),
            None => (key.as_str(), false),
        };
        let img = open(&images_dir().join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        let rgb = if processor {
            to_rgb_for_processor(&img)
        } else {
            to_rgb(&img)
        };
        let want = rgb_from_tensor(&expected[key]);
        assert_eq!(rgb.dimensions(), want.dimensions(), "{key}: size");
        let (max, n, total) = diff_stats(rgb.as_raw(), want.as_raw());
        assert_eq!(
            n, 0,
            "{key}: {n} of {total} values differ from Pillow (max {max})"
        );
    }
}

#[test]
fn jpeg_decoding_is_close_to_pillow() {
    let expected = common::expected(images_dir().join("decoded_jpeg.safetensors"));
    let mut names: Vec<&String> = expected.keys().collect();
    names.sort();
    assert!(!names.is_empty());
    for name in names {
        let img = open(&images_dir().join(name)).unwrap();
        let rgb = to_rgb(&img);
        let want = rgb_from_tensor(&expected[name]);
        assert_eq!(rgb.dimensions(), want.dimensions(), "{name}: size");
        let (max, n, total) = diff_stats(rgb.as_raw(), want.as_raw());
        let mean: f64 = rgb
            .as_raw()
            .iter()
            .zip(want.as_raw())
            .map(|(a, b)| f64::from(a.abs_diff(*b)))
            .sum::<f64>()
            / total as f64;
        eprintln!(
            "JPEG {name}: image crate (zune-jpeg) vs Pillow 13 (libjpeg-turbo): max |diff| {max}, \
             {n} of {total} values differ ({:.2}%), mean |diff| {mean:.4}",
            100.0 * n as f64 / total as f64
        );
        // Different IDCT / chroma upsampling rounding: small, never a different picture.
        // Measured: chelsea.jpg (4:2:0) max 4, 12.6% of values differ, mean 0.18;
        // rocket.jpg (4:4:4) max 2, 0.7% differ, mean 0.008.
        assert!(max <= 6, "{name}: max |diff| {max}");
        assert!(mean < 0.5, "{name}: mean |diff| {mean}");
        assert!(n * 4 < total, "{name}: {n} of {total} values differ");
    }
}

#[test]
fn bad_images_are_errors_naming_the_file() {
    let manifest = read_json(&images_dir().join("images.json"));
    let bad: Vec<String> = manifest
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["good"] == Value::Bool(false))
        .map(|e| e["name"].as_str().unwrap().to_string())
        .collect();
    for name in [
        "truncated.png",
        "garbage.jpg",
        "huge_header.png",
        "zero_pixel.png",
    ] {
        assert!(bad.contains(&name.to_string()), "{name} not in images.json");
    }
    for name in &bad {
        let path = images_dir().join(name);
        let err = open(&path).expect_err(name);
        let message = err.to_string();
        eprintln!("{name}: {message}");
        assert!(matches!(err, Error::Io { .. }), "{name}: {err:?}");
        assert!(message.contains(name.as_str()), "{name}: {message}");
    }
    let huge = open(&images_dir().join("huge_header.png"))
        .unwrap_err()
        .to_string();
    assert!(
        huge.contains("limit") || huge.contains("too large"),
        "{huge}"
    );
    let zero = open(&images_dir().join("zero_pixel.png"))
        .unwrap_err()
        .to_string();
    assert!(!zero.is_empty());
}

#[test]
fn truncated_png_fails_in_preprocess_paths() {
    let processor = AutoImageProcessor::from_pretrained(
        vision()
            .join("processors")
            .join("vit_google")
            .to_str()
            .unwrap(),
    )
    .unwrap();
    for name in [
        "truncated.png",
        "garbage.jpg",
        "huge_header.png",
        "zero_pixel.png",
    ] {
        let err = processor
            .preprocess_paths(&[images_dir().join("chelsea.png"), images_dir().join(name)])
            .unwrap_err();
        assert!(err.to_string().contains(name), "{err}");
    }
}

// ---------------------------------------------------------------------------------------------
// Resizing
// ---------------------------------------------------------------------------------------------

#[test]
fn every_resize_case_is_pixel_exact() {
    let cases = read_json(&vision().join("resize").join("cases.json"));
    let expected = common::expected(vision().join("resize").join("resize.safetensors"));
    let cases = cases.as_array().unwrap();
    assert!(cases.len() >= 30);
    let mut sources: HashMap<String, RgbImage> = HashMap::new();
    for (i, case) in cases.iter().enumerate() {
        let image = case["image"].as_str().unwrap();
        let src = sources
            .entry(image.to_string())
            .or_insert_with(|| to_rgb(&open(&images_dir().join(image)).unwrap()));
        let width = case["width"].as_u64().unwrap() as u32;
        let height = case["height"].as_u64().unwrap() as u32;
        let resample = Resample::from_code(case["resample"].as_i64().unwrap()).unwrap();
        let out = resize(src, width, height, resample).unwrap();
        let want = rgb_from_tensor(&expected[&i.to_string()]);
        assert_eq!(out.dimensions(), want.dimensions(), "case {i}");
        let (max, n, total) = diff_stats(out.as_raw(), want.as_raw());
        assert_eq!(
            n,
            0,
            "case {i} ({image} {}x{} -> {width}x{height} {resample}, vertical_first {}): {n} of \
             {total} values differ (max {max})",
            src.width(),
            src.height(),
            case["vertical_first"]
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Image processors
// ---------------------------------------------------------------------------------------------

fn processor_cases() -> Vec<(String, PathBuf)> {
    let mut out: Vec<(String, PathBuf)> = std::fs::read_dir(vision().join("processors"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("case.json").is_file())
        .map(|p| (p.file_name().unwrap().to_string_lossy().to_string(), p))
        .collect();
    out.sort();
    out
}

fn class_of(case: &Value) -> String {
    let class = case["processor_class"].as_str().unwrap();
    class.strip_suffix("Pil").unwrap_or(class).to_string()
}

#[test]
fn every_processor_case_matches_transformers() {
    let cases = processor_cases();
    assert!(cases.len() >= 8, "{} processor cases", cases.len());
    for (name, dir) in cases {
        let case = read_json(&dir.join("case.json"));
        let processor = AutoImageProcessor::from_pretrained(dir.to_str().unwrap())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(processor.class_name(), class_of(&case), "{name}: class");
        let files: Vec<String> = common::strings(&case["images"]);
        let paths: Vec<PathBuf> = files.iter().map(|f| images_dir().join(f)).collect();
        if let Some(message) = case["expect_error"].as_str() {
            let err = processor.preprocess_paths(&paths).unwrap_err();
            assert!(
                err.to_string().contains(message),
                "{name}: expected {message:?}, got {err}"
            );
            continue;
        }
        let want = common::expected(dir.join("expected.safetensors"));
        let want = &want["pixel_values"];
        let shape: Vec<usize> = case["output_shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(want.dims(), shape.as_slice(), "{name}: fixture shape");
        let batch = processor.preprocess_paths(&paths).unwrap();
        let got = batch.require("pixel_values").unwrap();
        assert_eq!(got.dtype(), DType::F32, "{name}: dtype");
        assert_eq!(got.dims(), shape.as_slice(), "{name}: shape");
        if files.iter().any(|f| is_jpeg(f)) {
            check_jpeg_case(&name, &processor, &files, got, want);
        } else {
            let max = common::assert_close(&name, got, want, 1e-5);
            eprintln!("processor {name}: max |diff| {max:e}");
        }
    }
}

/// JPEG inputs: exact when fed Pillow's own decode, within the decoders' difference otherwise.
fn check_jpeg_case(
    name: &str,
    processor: &ImageProcessor,
    files: &[String],
    ours: &Tensor,
    want: &Tensor,
) {
    let decoded = common::expected(images_dir().join("decoded_jpeg.safetensors"));
    let pil_images: Vec<DynamicImage> = files
        .iter()
        .map(|f| DynamicImage::ImageRgb8(rgb_from_tensor(&decoded[f.as_str()])))
        .collect();
    let exact = processor.preprocess(&pil_images).unwrap();
    let max = common::assert_close(name, exact.require("pixel_values").unwrap(), want, 1e-5);
    eprintln!("processor {name} (Pillow-decoded JPEG pixels): max |diff| {max:e}");
    // With our own decoder: pixels differ by a few units, i.e. a few 1/255 / std.
    let diff: Vec<f32> = (ours - want)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let max = diff.iter().copied().fold(0f32, f32::max);
    let mean = diff.iter().map(|d| f64::from(*d)).sum::<f64>() / diff.len() as f64;
    let differing = diff.iter().filter(|d| **d > 1e-5).count();
    eprintln!(
        "processor {name} (image-crate JPEG decode): max |diff| {max:.4} ({:.1}/255 before \
         normalize), mean |diff| {mean:.5}, {differing} of {} values differ",
        max * 0.5 * 255.0,
        diff.len()
    );
    // Measured on vit_modern: 3/255 at most, mean 0.0007.
    assert!(max < 6.0 / 255.0 / 0.5, "{name}: max |diff| {max}");
    assert!(mean < 0.5 / 255.0 / 0.5, "{name}: mean |diff| {mean}");
}

#[test]
fn mixed_size_batch_is_resized_per_image() {
    let dir = vision().join("processors").join("vit_google");
    let processor = AutoImageProcessor::from_pretrained(dir.to_str().unwrap()).unwrap();
    let want = common::expected(dir.join("expected.safetensors"));
    let want = &want["pixel_values"];
    // chelsea 451x300, coffee_crop 333x221, astronaut 257x257, one at a time and together.
    let files = ["chelsea.png", "coffee_crop.png", "astronaut_small.png"];
    for (i, f) in files.iter().enumerate() {
        let one = processor
            .preprocess(&[open(&images_dir().join(f)).unwrap()])
            .unwrap();
        let got = one.require("pixel_values").unwrap();
        common::assert_close(f, got, &want.narrow(0, i, 1).unwrap(), 1e-5);
    }
    let on_cpu = processor
        .preprocess_on(&[open(&images_dir().join(files[0])).unwrap()], &Device::Cpu)
        .unwrap();
    assert_eq!(
        on_cpu.require("pixel_values").unwrap().dims(),
        &[1, 3, 224, 224]
    );
}

/// A scratch checkpoint folder under the system temp dir, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "autoclass-image-processor-{}-{name}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn write(&self, file: &str, value: &Value) {
        std::fs::write(
            self.0.join(file),
            serde_json::to_string_pretty(value).unwrap(),
        )
        .unwrap();
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn unknown_image_processor_type_is_an_error_listing_known_classes() {
    let scratch = Scratch::new("unknown");
    scratch.write(
        "preprocessor_config.json",
        &serde_json::json!({"image_processor_type": "BeitImageProcessor", "size": 224}),
    );
    let err = AutoImageProcessor::from_pretrained(scratch.path()).unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, Error::InvalidConfig { .. }), "{err:?}");
    for known in [
        "BeitImageProcessor",
        "ViTImageProcessor",
        "ConvNextImageProcessor",
        "DeiTImageProcessor",
        "CLIPImageProcessor",
    ] {
        assert!(message.contains(known), "{message}");
    }
    assert!(message.contains("preprocessor_config.json"), "{message}");
}

#[test]
fn class_selection_order() {
    let vit_modern = read_json(
        &vision()
            .join("processors")
            .join("vit_modern")
            .join("preprocessor_config.json"),
    );
    // v5 Processor.save_pretrained: nested in processor_config.json, which wins.
    let scratch = Scratch::new("nested");
    scratch.write(
        "processor_config.json",
        &serde_json::json!({"image_processor": vit_modern, "processor_class": "SomeProcessor"}),
    );
    scratch.write(
        "preprocessor_config.json",
        &serde_json::json!({"image_processor_type": "ConvNextImageProcessor"}),
    );
    let p = AutoImageProcessor::from_pretrained(scratch.path()).unwrap();
    assert_eq!(p.class_name(), "ViTImageProcessor");
    assert_eq!(
        p.settings().size,
        Some(autoclass::image::SizeDict::height_width(160, 96))
    );

    // processor_config.json without an image_processor entry: preprocessor_config.json.
    let scratch = Scratch::new("flat");
    scratch.write(
        "processor_config.json",
        &serde_json::json!({"processor_class": "X"}),
    );
    scratch.write(
        "preprocessor_config.json",
        &serde_json::json!({"image_processor_type": "ConvNextImageProcessorFast", "size": 224}),
    );
    let p = AutoImageProcessor::from_pretrained(scratch.path()).unwrap();
    assert_eq!(p.class_name(), "ConvNextImageProcessor");

    // image_processor_type beats feature_extractor_type; Pil suffix dropped.
    let scratch = Scratch::new("both_types");
    scratch.write(
        "preprocessor_config.json",
        &serde_json::json!({"image_processor_type": "DeiTImageProcessorPil",
                            "feature_extractor_type": "ViTFeatureExtractor"}),
    );
    assert_eq!(
        AutoImageProcessor::from_pretrained(scratch.path())
            .unwrap()
            .class_name(),
        "DeiTImageProcessor"
    );

    // Nothing in the processor dict: config.json's model_type (swin → ViT processor).
    let scratch = Scratch::new("model_type");
    scratch.write("preprocessor_config.json", &serde_json::json!({"size": 32}));
    scratch.write("config.json", &serde_json::json!({"model_type": "swin"}));
    assert_eq!(
        AutoImageProcessor::from_pretrained(scratch.path())
            .unwrap()
            .class_name(),
        "ViTImageProcessor"
    );
    scratch.write(
        "config.json",
        &serde_json::json!({"model_type": "convnext"}),
    );
    assert_eq!(
        AutoImageProcessor::from_pretrained(scratch.path())
            .unwrap()
            .class_name(),
        "ConvNextImageProcessor"
    );
    scratch.write("config.json", &serde_json::json!({"model_type": "bert"}));
    let err = AutoImageProcessor::from_pretrained(scratch.path()).unwrap_err();
    assert!(
        err.to_string().contains("Unrecognized image processor"),
        "{err}"
    );

    // No image-processor file at all.
    let scratch = Scratch::new("missing");
    scratch.write("config.json", &serde_json::json!({"model_type": "vit"}));
    let err = AutoImageProcessor::from_pretrained(scratch.path()).unwrap_err();
    assert!(matches!(err, Error::MissingFile { .. }), "{err:?}");
    assert!(
        err.to_string().contains("preprocessor_config.json"),
        "{err}"
    );
}

#[test]
fn invalid_processor_configs_are_errors_naming_the_file() {
    let scratch = Scratch::new("invalid");
    for bad in [
        serde_json::json!({"image_processor_type": "ViTImageProcessor", "size": {"height": 3}}),
        serde_json::json!({"image_processor_type": "ViTImageProcessor", "resample": 17}),
        serde_json::json!({"image_processor_type": "ViTImageProcessor", "do_resize": "yes"}),
        serde_json::json!({"image_processor_type": "ConvNextImageProcessor",
                           "size": {"height": 3, "width": 3}}),
    ] {
        scratch.write("preprocessor_config.json", &bad);
        let err = AutoImageProcessor::from_pretrained(scratch.path()).unwrap_err();
        assert!(matches!(err, Error::InvalidConfig { .. }), "{bad}: {err:?}");
        assert!(
            err.to_string().contains("preprocessor_config.json"),
            "{err}"
        );
    }
    std::fs::write(scratch.0.join("preprocessor_config.json"), "{not json").unwrap();
    let err = AutoImageProcessor::from_pretrained(scratch.path()).unwrap_err();
    assert!(matches!(err, Error::Json { .. }), "{err:?}");
}

/// Timing only (`cargo test --release ... -- --ignored --nocapture`).
#[test]
#[ignore]
fn resize_speed() {
    let src = RgbImage::from_fn(1920, 1080, |x, y| {
        image::Rgb([(x % 251) as u8, (y % 241) as u8, ((x + y) % 256) as u8])
    });
    for r in [
        Resample::Bilinear,
        Resample::Bicubic,
        Resample::Lanczos,
        Resample::Nearest,
    ] {
        let start = std::time::Instant::now();
        let n = 10;
        for _ in 0..n {
            std::hint::black_box(resize(&src, 224, 224, r).unwrap());
        }
        eprintln!(
            "1920x1080 -> 224x224 {r}: {:?} per image",
            start.elapsed() / n
        );
        let start = std::time::Instant::now();
        std::hint::black_box(resize(&src, 3840, 2160, r).unwrap());
        eprintln!("1920x1080 -> 3840x2160 {r}: {:?}", start.elapsed());
    }
}
