//! Tesseract OCR (transformers' `apply_tesseract` through pytesseract) and the LayoutLMv2/v3
//! image processors against fixtures from tesseract 5.3.0, pytesseract 0.3.13 and transformers
//! 5.24 (tests/fixtures/multimodal/generate_multimodal.py).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use autoclass::candle_core::{DType, Tensor};
use autoclass::image::decode::open;
use autoclass::image::ocr::{
    apply_tesseract, apply_tesseract_with, normalize_box, parse_tsv, tesseract_args,
    words_from_rows, OcrWords, TesseractOptions, TESSERACT_CMD_ENV,
};
use autoclass::{Error, ImageProcessor};
use image::{DynamicImage, Rgb, RgbImage};
use serde_json::{Map, Value};

fn multimodal() -> PathBuf {
    common::fixtures().join("multimodal")
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn ocr_json() -> Value {
    read_json(&multimodal().join("images").join("ocr.json"))
}

fn load_rgb(name: &str) -> DynamicImage {
    let img = open(&multimodal().join("images").join(name)).unwrap();
    DynamicImage::ImageRgb8(img.to_rgb8())
}

fn expected_words(case: &Value) -> OcrWords {
    OcrWords {
        words: common::strings(&case["words"]),
        boxes: case["boxes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| {
                let b: Vec<i64> = b
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_i64().unwrap())
                    .collect();
                [b[0], b[1], b[2], b[3]]
            })
            .collect(),
    }
}

fn tesseract_available() -> bool {
    std::process::Command::new("tesseract")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// OCR of every fixture case equals pytesseract's words and normalised boxes.
#[test]
fn ocr_matches_pytesseract() {
    assert!(
        tesseract_available(),
        "tesseract is required for these tests (apt install tesseract-ocr)"
    );
    let json = ocr_json();
    let cases = json["cases"].as_array().unwrap();
    assert!(!cases.is_empty());
    for case in cases {
        let id = case["id"].as_str().unwrap();
        let img = load_rgb(case["image"].as_str().unwrap());
        assert_eq!(
            (img.width(), img.height()),
            (
                case["width"].as_u64().unwrap() as u32,
                case["height"].as_u64().unwrap() as u32
            )
        );
        let lang = case["ocr_lang"].as_str();
        let config = case["tesseract_config"].as_str().unwrap_or("");
        let got = apply_tesseract_with(&img, lang, config, &TesseractOptions::default())
            .unwrap_or_else(|e| panic!("{id}: {e}"));
        assert_eq!(got, expected_words(case), "{id}");
    }
}

/// The argument list is pytesseract's (temp paths aside).
#[test]
fn arguments_match_pytesseract() {
    let json = ocr_json();
    for case in json["cases"].as_array().unwrap() {
        let id = case["id"].as_str().unwrap();
        let argv = common::strings(&case["argv"]);
        let args = tesseract_args(
            Path::new("<tmp>/tess_XXXXXXXX_input.PNG"),
            Path::new("<tmp>/tess_XXXXXXXX"),
            case["ocr_lang"].as_str(),
            case["tesseract_config"].as_str().unwrap_or(""),
        )
        .unwrap();
        let args: Vec<String> = args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(argv[0], "tesseract");
        assert_eq!(args, argv[1..], "{id}");
        assert_eq!(case["tesseract_input_file"]["format"], "PNG", "{id}");
    }
}

/// The TSV parser on the stored TSV files gives pytesseract's dict and the filtered words.
#[test]
fn tsv_parser_matches_file_to_dict() {
    let json = ocr_json();
    for case in json["cases"].as_array().unwrap() {
        let id = case["id"].as_str().unwrap();
        let rows = parse_tsv(case["tsv"].as_str().unwrap()).unwrap();
        let raw = &case["raw"];
        let col = |name: &str| -> Vec<Value> { raw[name].as_array().unwrap().clone() };
        assert_eq!(rows.len(), col("level").len(), "{id}");
        for (i, r) in rows.iter().enumerate() {
            let ints = [
                ("level", r.level),
                ("page_num", r.page_num),
                ("block_num", r.block_num),
                ("par_num", r.par_num),
                ("line_num", r.line_num),
                ("word_num", r.word_num),
                ("left", r.left),
                ("top", r.top),
                ("width", r.width),
                ("height", r.height),
                ("conf", r.conf.trunc() as i64),
            ];
            for (name, v) in ints {
                assert_eq!(Some(v), col(name)[i].as_i64(), "{id} row {i} {name}");
            }
            assert_eq!(
                Some(r.text.as_str()),
                col("text")[i].as_str(),
                "{id} row {i}"
            );
        }
        let w = case["width"].as_u64().unwrap() as u32;
        let h = case["height"].as_u64().unwrap() as u32;
        assert_eq!(words_from_rows(&rows, w, h), expected_words(case), "{id}");
    }
    // The .tsv files written by tesseract for the default cases.
    let tsv_dir = multimodal().join("images").join("tsv");
    for doc in json["documents"].as_array().unwrap() {
        let name = doc["name"].as_str().unwrap();
        let text = std::fs::read_to_string(tsv_dir.join(format!("{name}.tsv"))).unwrap();
        let rows = parse_tsv(&text).unwrap();
        let case = json["cases"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == name)
            .unwrap();
        let w = doc["width"].as_u64().unwrap() as u32;
        let h = doc["height"].as_u64().unwrap() as u32;
        assert_eq!(
            words_from_rows(&rows, w, h),
            expected_words(case),
            "{name}.tsv"
        );
    }
    // Malformed output is an error.
    for bad in [
        "level\tpage_num\n1\t2\n",
        "level\tpage_num\tblock_num\tpar_num\tline_num\tword_num\tleft\ttop\twidth\theight\tconf\ttext\n\
         5\t1\t1\t1\t1\t1\tx\t0\t1\t1\t90\tword\n",
        "level\tpage_num\tblock_num\tpar_num\tline_num\tword_num\tleft\ttop\twidth\theight\tconf\ttext\n\
         5\t1\t1\t1\n5\t1\t1\t1\t1\t1\t0\t0\t1\t1\t90\tword\n",
    ] {
        let err = parse_tsv(bad).unwrap_err();
        assert!(err.to_string().contains("malformed"), "{err}");
    }
    assert_eq!(
        normalize_box([28, 48, 152, 78], 500, 120),
        [56, 400, 304, 650]
    );
}

/// A stand-in tesseract: records its arguments and writes a TSV next to the output base.
#[cfg(unix)]
fn fake_tesseract(dir: &Path, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("fake-tesseract");
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn scratch(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("autoclass_ocr_test_{}_{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The program is invoked like pytesseract invokes it, and its failures are errors.
#[cfg(unix)]
#[test]
fn invocation_exit_status_and_timeout() {
    let dir = scratch("invocation");
    let log = dir.join("args.txt");
    let hello = ocr_json()["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "hello")
        .unwrap()
        .clone();
    let tsv = dir.join("hello.tsv");
    std::fs::write(&tsv, hello["tsv"].as_str().unwrap()).unwrap();
    let prog = fake_tesseract(
        &dir,
        &format!(
            "for a in \"$@\"; do echo \"$a\"; done > '{}'\nfile \"$1\" >> '{}' 2>/dev/null\ncp '{}' \"$2.tsv\"",
            log.display(),
            log.display(),
            tsv.display()
        ),
    );
    let opts = TesseractOptions {
        program: Some(prog),
        ..TesseractOptions::default()
    };
    let img = load_rgb("hello.png");
    let got = apply_tesseract_with(&img, Some("eng"), " --psm  '6' ", &opts).unwrap();
    assert_eq!(got, expected_words(&hello));
    let logged = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = logged.lines().collect();
    assert!(lines[0].ends_with("_input.PNG"), "{logged}");
    assert_eq!(format!("{}_input.PNG", lines[1]), lines[0], "{logged}");
    assert_eq!(
        lines[2..8],
        ["-l", "eng", "-c", "tessedit_create_tsv=1", "--psm", "6"],
        "{logged}"
    );
    // The temp files are gone.
    assert!(!Path::new(lines[0]).exists());

    let failing = fake_tesseract(
        &dir,
        "echo 'Error opening data file' >&2\necho 'second line' >&2\nexit 3",
    );
    let err = apply_tesseract_with(
        &img,
        Some("xyz"),
        "",
        &TesseractOptions {
            program: Some(failing),
            ..TesseractOptions::default()
        },
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("exit status 3"), "{msg}");
    assert!(msg.contains("Error opening data file second line"), "{msg}");

    let silent = fake_tesseract(&dir, "exit 0");
    let err = apply_tesseract_with(
        &img,
        None,
        "",
        &TesseractOptions {
            program: Some(silent),
            ..TesseractOptions::default()
        },
    )
    .unwrap_err();
    assert!(err.to_string().contains("no TSV output"), "{err}");

    let garbage = fake_tesseract(&dir, "printf 'not\\ta\\ttsv\\n1\\t2\\t3\\n' > \"$2.tsv\"");
    let err = apply_tesseract_with(
        &img,
        None,
        "",
        &TesseractOptions {
            program: Some(garbage),
            ..TesseractOptions::default()
        },
    )
    .unwrap_err();
    assert!(err.to_string().contains("malformed"), "{err}");

    let slow = fake_tesseract(&dir, "exec sleep 30");
    let start = std::time::Instant::now();
    let err = apply_tesseract_with(
        &img,
        None,
        "",
        &TesseractOptions {
            program: Some(slow),
            timeout: Duration::from_millis(300),
        },
    )
    .unwrap_err();
    assert!(err.to_string().contains("timeout"), "{err}");
    assert!(start.elapsed() < Duration::from_secs(10));

    // Unbalanced quotes in tesseract_config (shlex's ValueError).
    assert!(apply_tesseract_with(&img, None, "--psm '6", &opts).is_err());
    let _ = std::fs::remove_dir_all(&dir);
}

/// Tesseract missing: a clear error, via an explicit program and via `TESSERACT_CMD`. The
/// environment variable is set only in a child process running [`missing_tesseract_child`], so
/// tests running in parallel threads never see it.
#[test]
fn missing_tesseract_is_a_clear_error() {
    let img = DynamicImage::ImageRgb8(RgbImage::from_pixel(8, 8, Rgb([255, 255, 255])));
    let explicit = TesseractOptions {
        program: Some(PathBuf::from("/nonexistent/tesseract")),
        ..TesseractOptions::default()
    };
    let err = apply_tesseract_with(&img, None, "", &explicit).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::Input { .. }), "{err:?}");
    assert!(
        msg.contains("/nonexistent/tesseract is not installed or it's not in your PATH"),
        "{msg}"
    );
    assert!(msg.contains("TESSERACT_CMD"), "{msg}");

    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "missing_tesseract_child",
            "--ignored",
            "--nocapture",
        ])
        .env(TESSERACT_CMD_ENV, "/nonexistent")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Run by [`missing_tesseract_is_a_clear_error`] with `TESSERACT_CMD=/nonexistent`.
#[test]
#[ignore = "run by missing_tesseract_is_a_clear_error in a child process"]
fn missing_tesseract_child() {
    assert_eq!(
        std::env::var(TESSERACT_CMD_ENV).as_deref(),
        Ok("/nonexistent"),
        "run through missing_tesseract_is_a_clear_error"
    );
    let img = DynamicImage::ImageRgb8(RgbImage::from_pixel(8, 8, Rgb([255, 255, 255])));
    let err = apply_tesseract(&img, None, "").unwrap_err().to_string();
    assert!(err.contains("/nonexistent is not installed"), "{err}");
    let p = ImageProcessor::from_config("LayoutLMv2FeatureExtractor", &Map::new()).unwrap();
    let err = p
        .preprocess_document(std::slice::from_ref(&img))
        .unwrap_err()
        .to_string();
    assert!(err.contains("OCR of image 0"), "{err}");
    assert!(err.contains("not installed"), "{err}");
    // preprocess never runs OCR, so it works without tesseract.
    let plain = p.preprocess(std::slice::from_ref(&img)).unwrap();
    assert_eq!(
        plain.require("pixel_values").unwrap().dims(),
        &[1, 3, 224, 224]
    );
}

fn u8_values(t: &Tensor) -> Vec<u8> {
    t.flatten_all().unwrap().to_vec1::<u8>().unwrap()
}

fn case_images(dir: &Path, case: &Value) -> Vec<DynamicImage> {
    case["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let img = open(&dir.join(p.as_str().unwrap())).unwrap();
            DynamicImage::ImageRgb8(img.to_rgb8())
        })
        .collect()
}

fn case_ocr(case: &Value) -> Option<Vec<OcrWords>> {
    let words = case.get("ocr_words")?.as_array()?;
    let boxes = case["ocr_boxes"].as_array().unwrap();
    Some(
        words
            .iter()
            .zip(boxes)
            .map(|(w, b)| expected_words(&serde_json::json!({"words": w, "boxes": b})))
            .collect(),
    )
}

/// LayoutLMv2: `image` (uint8 BGR 224x224) exact and the OCR words of every case.
#[test]
fn layoutlmv2_image_processor() {
    let root = multimodal().join("layoutlmv2");
    let mut checked = 0;
    let mut entries: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("expected.safetensors").exists())
        .collect();
    entries.sort();
    for dir in entries {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let case = read_json(&dir.join("case.json"));
        let cfg = read_json(&dir.join("preprocessor_config.json"));
        let cfg = cfg.as_object().unwrap();
        let class = cfg["feature_extractor_type"]
            .as_str()
            .or(cfg.get("image_processor_type").and_then(Value::as_str))
            .unwrap();
        let p = ImageProcessor::from_config(class, cfg).unwrap();
        assert_eq!(p.class_name(), "LayoutLMv2ImageProcessor");
        let images = case_images(&dir, &case);
        let (batch, words) = p.preprocess_document(&images).unwrap();
        let expected = common::expected(dir.join("expected.safetensors"));
        let want = &expected["image"];
        let got = batch.require("pixel_values").unwrap();
        assert_eq!(got.dtype(), DType::U8, "{name}");
        assert_eq!(got.dims(), want.dims(), "{name}");
        assert!(u8_values(got) == u8_values(want), "{name}: image differs");
        assert_eq!(
            p.apply_ocr(),
            cfg.get("apply_ocr")
                .and_then(Value::as_bool)
                .unwrap_or(true)
        );
        match case_ocr(&case) {
            Some(expected_ocr) if p.apply_ocr() => {
                assert_eq!(words.as_ref(), Some(&expected_ocr), "{name}");
            }
            _ => {
                if !p.apply_ocr() {
                    assert!(words.is_none(), "{name}");
                }
            }
        }
        // preprocess: same pixels, no OCR.
        let plain = p.preprocess(&images).unwrap();
        assert!(u8_values(plain.require("pixel_values").unwrap()) == u8_values(want));
        checked += 1;
    }
    assert!(checked >= 3, "only {checked} LayoutLMv2 cases found");
}

/// LayoutLMv3: `pixel_values` within 1e-5 and the OCR words.
#[test]
fn layoutlmv3_image_processor() {
    let root = multimodal().join("layoutlmv3").join("processors");
    let Ok(read) = std::fs::read_dir(&root) else {
        panic!("missing fixtures {}", root.display());
    };
    let mut entries: Vec<PathBuf> = read
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("expected.safetensors").exists())
        .collect();
    entries.sort();
    let mut checked = 0;
    for dir in entries {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let case = read_json(&dir.join("case.json"));
        let cfg = read_json(&dir.join("preprocessor_config.json"));
        let cfg = cfg.as_object().unwrap();
        let class = cfg
            .get("image_processor_type")
            .and_then(Value::as_str)
            .or(cfg.get("feature_extractor_type").and_then(Value::as_str))
            .unwrap();
        let p = ImageProcessor::from_config(class, cfg).unwrap();
        assert_eq!(p.class_name(), "LayoutLMv3ImageProcessor");
        let images = case_images(&dir, &case);
        let (batch, words) = p.preprocess_document(&images).unwrap();
        let expected = common::expected(dir.join("expected.safetensors"));
        let want = &expected["pixel_values"];
        let got = batch.require("pixel_values").unwrap();
        assert_eq!(got.dtype(), DType::F32, "{name}");
        common::assert_close(&name, got, want, 1e-5);
        if let Some(expected_ocr) = case_ocr(&case) {
            if p.apply_ocr() {
                assert_eq!(words.as_ref(), Some(&expected_ocr), "{name}");
            }
        }
        if !p.apply_ocr() {
            assert!(words.is_none(), "{name}");
        }
        checked += 1;
    }
    assert!(checked >= 1, "no LayoutLMv3 cases in {}", root.display());
}

/// Defaults, config keys and apply_ocr=false.
#[test]
fn processor_settings_and_apply_ocr_false() {
    let v2 = ImageProcessor::from_config("LayoutLMv2ImageProcessor", &Map::new()).unwrap();
    assert!(v2.apply_ocr());
    assert!(!v2.settings().do_rescale && !v2.settings().do_normalize);
    let v3 = ImageProcessor::from_config("LayoutLMv3FeatureExtractor", &Map::new()).unwrap();
    assert_eq!(v3.class_name(), "LayoutLMv3ImageProcessor");
    assert!(v3.apply_ocr() && v3.settings().do_rescale && v3.settings().do_normalize);
    let cfg: Map<String, Value> = serde_json::from_value(serde_json::json!({
        "apply_ocr": false, "ocr_lang": "deu", "tesseract_config": "--psm 6", "size": 64
    }))
    .unwrap();
    let img = load_rgb("hello.png");
    for class in ["LayoutLMv2ImageProcessor", "LayoutLMv3ImageProcessorFast"] {
        let p = ImageProcessor::from_config(class, &cfg).unwrap();
        assert!(!p.apply_ocr());
        assert_eq!(p.settings().ocr_lang.as_deref(), Some("deu"));
        assert_eq!(p.settings().tesseract_config.as_deref(), Some("--psm 6"));
        let (batch, words) = p.preprocess_document(std::slice::from_ref(&img)).unwrap();
        assert!(words.is_none());
        assert_eq!(
            batch.require("pixel_values").unwrap().dims(),
            &[1, 3, 64, 64]
        );
    }
    // Other classes never run OCR (and ignore the keys).
    let vit = ImageProcessor::from_config(
        "ViTImageProcessor",
        &serde_json::from_value(serde_json::json!({"apply_ocr": true})).unwrap(),
    )
    .unwrap();
    assert!(!vit.apply_ocr());
    assert!(vit.preprocess_document(&[img]).unwrap().1.is_none());
    // BGR flip: a pure red image is blue first.
    let red = DynamicImage::ImageRgb8(RgbImage::from_pixel(4, 4, Rgb([255, 0, 0])));
    let p = ImageProcessor::from_config(
        "LayoutLMv2ImageProcessor",
        &serde_json::from_value(serde_json::json!({"apply_ocr": false, "size": 2})).unwrap(),
    )
    .unwrap();
    let pv = p.preprocess(&[red]).unwrap();
    let v = u8_values(pv.require("pixel_values").unwrap());
    assert_eq!(v, [0, 0, 0, 0, 0, 0, 0, 0, 255, 255, 255, 255]);
    assert!(ImageProcessor::from_config(
        "LayoutLMv2ImageProcessor",
        &serde_json::from_value(serde_json::json!({"tesseract_config": 6})).unwrap(),
    )
    .is_err());
}
