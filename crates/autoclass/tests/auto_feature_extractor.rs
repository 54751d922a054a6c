//! Audio decoding and feature extractors against the fixtures of
//! `tests/fixtures/audio/generate_audio.py` (soundfile 0.14 / transformers 5.24 / numpy 2.4).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use autoclass::audio::decode::{self, Audio};
use autoclass::audio::{resample, to_mono, AudioOptions, AutoFeatureExtractor, FeatureExtractor};
use autoclass::candle_core::{DType, Device, Tensor};
use autoclass::Padding;
use serde_json::{json, Value};

fn audio_dir() -> PathBuf {
    common::fixtures().join("audio")
}

fn files_dir() -> PathBuf {
    audio_dir().join("files")
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn manifest() -> Value {
    read_json(&files_dir().join("files.json"))
}

fn decoded_reference() -> HashMap<String, Tensor> {
    common::expected(files_dir().join("decoded.safetensors"))
}

fn f32s(t: &Tensor) -> Vec<f32> {
    t.to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
}

/// The decode as the reference stores it: `[frames]` for mono, `[channels, frames]` else.
fn as_tensor(audio: &Audio) -> Tensor {
    if audio.channels.len() == 1 {
        Tensor::new(audio.channels[0].as_slice(), &Device::Cpu).unwrap()
    } else {
        let frames = audio.frames();
        Tensor::from_vec(
            audio.channels.concat(),
            (audio.channels.len(), frames),
            &Device::Cpu,
        )
        .unwrap()
    }
}

/// SHA-256 (FIPS 180-4), for the decodes the fixtures only give as a hash.
fn sha256_hex(data: &[u8]) -> String {
    const K: [u32; 64] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
        0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
        0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
        0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
        0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
        0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
        0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
        0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
        0xc67178f2,
    ];
    let mut h: [u32; 8] = [
        0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab,
        0x5be0cd19,
    ];
    let mut msg = data.to_vec();
    let bits = (data.len() as u64) * 8;
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&bits.to_be_bytes());
    for block in msg.chunks_exact(64) {
        let mut w = [0u32; 64];
        for (i, word) in block.chunks_exact(4).enumerate() {
            w[i] = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
        }
        for i in 16..64 {
            let s0 = w[i - 15].rotate_right(7) ^ w[i - 15].rotate_right(18) ^ (w[i - 15] >> 3);
            let s1 = w[i - 2].rotate_right(17) ^ w[i - 2].rotate_right(19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16]
                .wrapping_add(s0)
                .wrapping_add(w[i - 7])
                .wrapping_add(s1);
        }
        let mut v = h;
        for i in 0..64 {
            let s1 = v[4].rotate_right(6) ^ v[4].rotate_right(11) ^ v[4].rotate_right(25);
            let ch = (v[4] & v[5]) ^ (!v[4] & v[6]);
            let t1 = v[7]
                .wrapping_add(s1)
                .wrapping_add(ch)
                .wrapping_add(K[i])
                .wrapping_add(w[i]);
            let s0 = v[0].rotate_right(2) ^ v[0].rotate_right(13) ^ v[0].rotate_right(22);
            let maj = (v[0] & v[1]) ^ (v[0] & v[2]) ^ (v[1] & v[2]);
            let t2 = s0.wrapping_add(maj);
            v = [
                t1.wrapping_add(t2),
                v[0],
                v[1],
                v[2],
                v[3].wrapping_add(t1),
                v[4],
                v[5],
                v[6],
            ];
        }
        for (a, b) in h.iter_mut().zip(v) {
            *a = a.wrapping_add(b);
        }
    }
    h.iter().map(|x| format!("{x:08x}")).collect()
}

fn sha256_f32le(audio: &Audio) -> String {
    let bytes: Vec<u8> = audio
        .channels
        .iter()
        .flat_map(|c| c.iter().flat_map(|v| v.to_le_bytes()))
        .collect();
    sha256_hex(&bytes)
}

#[test]
fn sha256_is_right() {
    assert_eq!(
        sha256_hex(b"abc"),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
}

// ---------------------------------------------------------------------------------------------
// Decoding
// ---------------------------------------------------------------------------------------------

#[test]
fn good_files_decode_like_soundfile() {
    let manifest = manifest();
    let reference = decoded_reference();
    let mut checked = 0;
    for (name, info) in manifest["files"].as_object().unwrap() {
        if info["status"] != "good" {
            continue;
        }
        let path = files_dir().join(name);
        let audio = decode::open(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            u64::from(audio.sampling_rate),
            info["sampling_rate"].as_u64().unwrap(),
            "{name}: sampling rate"
        );
        assert_eq!(
            audio.channels.len() as u64,
            info["channels"].as_u64().unwrap(),
            "{name}: channels"
        );
        assert_eq!(
            audio.frames() as u64,
            info["frames"].as_u64().unwrap(),
            "{name}: frames"
        );
        let lossy = info["container"] == "MP3";
        if !lossy {
            assert_eq!(
                sha256_f32le(&audio),
                info["decoded_sha256_f32le"].as_str().unwrap(),
                "{name}: decode differs from the reference"
            );
        }
        if let Some(key) = info["decoded_key"].as_str() {
            let expected = &reference[key];
            let actual = as_tensor(&audio);
            assert_eq!(actual.dims(), expected.dims(), "{name}: shape");
            let (a, e) = (f32s(&actual), f32s(expected));
            let max = a
                .iter()
                .zip(&e)
                .map(|(x, y)| (x - y).abs())
                .fold(0f32, f32::max);
            if lossy {
                let rms = (a
                    .iter()
                    .zip(&e)
                    .map(|(x, y)| f64::from(x - y).powi(2))
                    .sum::<f64>()
                    / a.len() as f64)
                    .sqrt();
                println!("{name}: max |diff| {max:e}, rms {rms:e} vs soundfile (mpg123)");
                assert!(max < 1e-3, "{name}: max |diff| {max}");
            } else {
                assert_eq!(max, 0.0, "{name}: not bit-identical");
                println!("{name}: bit-identical with soundfile");
            }
        }
        checked += 1;
    }
    assert!(checked >= 12, "only {checked} files checked");
}

#[test]
fn in_memory_decode_matches_file_decode() {
    let path = files_dir().join("mono16k_s24.wav");
    let bytes = std::fs::read(&path).unwrap();
    let a = decode::decode(&bytes, "mono16k_s24.wav").unwrap();
    let b = decode::open(&path).unwrap();
    assert_eq!(a.channels, b.channels);
    assert_eq!(a.sampling_rate, b.sampling_rate);
}

#[test]
fn bad_files_are_errors_naming_the_file() {
    let manifest = manifest();
    let mut seen = 0;
    for (name, info) in manifest["files"].as_object().unwrap() {
        if info["status"] != "bad" {
            continue;
        }
        seen += 1;
        let path = files_dir().join(name);
        let err = decode::open(&path).expect_err(name).to_string();
        assert!(
            err.contains(name.as_str()),
            "{name}: error does not name the file: {err}"
        );
        println!("{name}: {err}");
        // In memory too.
        let bytes = std::fs::read(&path).unwrap();
        let err = decode::decode(&bytes, name).expect_err(name).to_string();
        assert!(err.contains(name.as_str()), "{err}");
    }
    assert_eq!(seen, 4);
    let err = decode::open(&files_dir().join("truncated.wav"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("truncated"), "{err}");
    let err = decode::open(&files_dir().join("huge_header.wav"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("2147483647") || err.contains("exceeds"),
        "{err}"
    );
    let err = decode::open(&files_dir().join("empty.wav"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("empty"), "{err}");
    let err = decode::open(&files_dir().join("not_audio.wav"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("not recognised"), "{err}");
    let missing = files_dir().join("no_such_file.wav");
    let err = decode::open(&missing).unwrap_err().to_string();
    assert!(err.contains("no_such_file.wav"), "{err}");
}

#[test]
fn garbage_never_panics() {
    // Every prefix of real files, and noise with each format's magic bytes.
    for name in [
        "mono16k_s16_tiny.wav",
        "mono16k.flac",
        "mono16k.mp3",
        "mono16k_f32.wav",
    ] {
        let bytes = std::fs::read(files_dir().join(name)).unwrap();
        let step = (bytes.len() / 97).max(1);
        for cut in (0..bytes.len()).step_by(step) {
            let _ = decode::decode(&bytes[..cut], name);
        }
        // Flip bytes through the file.
        let mut corrupt = bytes.clone();
        for i in (0..corrupt.len()).step_by(step) {
            corrupt[i] ^= 0x5a;
        }
        let _ = decode::decode(&corrupt, name);
    }
    let mut state = 0x1234_5678u32;
    for magic in [&b"RIFF"[..], b"fLaC", b"ID3\x03", b"\xff\xfb"] {
        let mut bytes = magic.to_vec();
        for _ in 0..4096 {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            bytes.push(state as u8);
        }
        let _ = decode::decode(&bytes, "noise.bin");
    }
}

#[test]
fn stereo_needs_mono() {
    let path = files_dir().join("stereo16k_s16.wav");
    let audio = decode::open(&path).unwrap();
    let err = to_mono(&audio, false).unwrap_err().to_string();
    assert!(
        err.contains("stereo16k_s16.wav has 2 channels; pass --mono to average them"),
        "{err}"
    );
    let mono = to_mono(&audio, true).unwrap();
    let reference = f32s(&decoded_reference()["stereo16k_s16.wav"]);
    let (left, right) = reference.split_at(audio.frames());
    let want: Vec<f32> = left.iter().zip(right).map(|(l, r)| (l + r) / 2.0).collect();
    assert_eq!(mono, want);
    // Through the extractor.
    let fe = AutoFeatureExtractor::from_pretrained(
        audio_dir().join("extractors/w2v2_seed").to_str().unwrap(),
    )
    .unwrap();
    let err = fe
        .extract_paths(
            std::slice::from_ref(&path),
            false,
            false,
            &AudioOptions::default(),
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("stereo16k_s16.wav has 2 channels"), "{err}");
    let batch = fe
        .extract_paths(&[path], true, false, &AudioOptions::default())
        .unwrap();
    assert_eq!(batch.require("input_values").unwrap().dims(), &[1, 16000]);
}

#[test]
fn other_rates_need_resample() {
    let fe = AutoFeatureExtractor::from_pretrained(
        audio_dir().join("extractors/w2v2_seed").to_str().unwrap(),
    )
    .unwrap();
    let path = files_dir().join("mono8k_s16.wav");
    let err = fe
        .extract_paths(
            std::slice::from_ref(&path),
            false,
            false,
            &AudioOptions::default(),
        )
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("and not 8000.") && err.contains("--resample"),
        "{err}"
    );
    let batch = fe
        .extract_paths(
            std::slice::from_ref(&path),
            false,
            true,
            &AudioOptions::default(),
        )
        .unwrap();
    assert_eq!(batch.require("input_values").unwrap().dims(), &[1, 16000]);
    let audio = decode::open(&path).unwrap();
    let up = resample(&audio.channels[0], 8000, 16000).unwrap();
    assert_eq!(up.len(), 16000);
    // Upsampling keeps the original samples (nearly) at the even positions.
    let err = (1000..7000)
        .map(|i| (up[2 * i] - audio.channels[0][i]).abs())
        .fold(0f32, f32::max);
    assert!(err < 5e-3, "{err}");
}

// ---------------------------------------------------------------------------------------------
// Feature extractors
// ---------------------------------------------------------------------------------------------

thread_local! {
    static WARNINGS: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

/// Collects this thread's `log` warnings (tests run on their own threads).
struct CaptureLogger;

impl log::Log for CaptureLogger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= log::Level::Warn
    }
    fn log(&self, record: &log::Record) {
        if self.enabled(record.metadata()) {
            WARNINGS.with(|w| w.borrow_mut().push(record.args().to_string()));
        }
    }
    fn flush(&self) {}
}

fn capture_warnings() {
    static LOGGER: CaptureLogger = CaptureLogger;
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(log::LevelFilter::Warn);
    }
    WARNINGS.with(|w| w.borrow_mut().clear());
}

fn take_warnings() -> Vec<String> {
    WARNINGS.with(|w| std::mem::take(&mut *w.borrow_mut()))
}

/// The case's kwargs as [`AudioOptions`].
fn options(kwargs: &Value) -> AudioOptions {
    let padding = match &kwargs["padding"] {
        Value::Null => None,
        Value::Bool(true) => Some(Padding::Longest),
        Value::Bool(false) => Some(Padding::None),
        Value::String(s) => Some(s.parse().unwrap()),
        other => panic!("padding {other}"),
    };
    let size = |key: &str| kwargs[key].as_u64().map(|v| v as usize);
    AudioOptions {
        padding,
        max_length: size("max_length"),
        truncation: kwargs["truncation"].as_bool(),
        pad_to_multiple_of: size("pad_to_multiple_of"),
        return_attention_mask: kwargs["return_attention_mask"].as_bool(),
        do_normalize: kwargs["do_normalize"].as_bool(),
    }
}

/// Decodes a fixture file to mono samples with our decoder.
fn load(name: &str) -> Vec<f32> {
    let audio = decode::open(&files_dir().join(name)).unwrap();
    to_mono(&audio, false).unwrap()
}

#[test]
fn extractor_cases_match_transformers() {
    capture_warnings();
    let dir = audio_dir().join("extractors");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert!(names.len() >= 19, "{names:?}");
    let mut report = Vec::new();
    for name in &names {
        let case_dir = dir.join(name);
        let case = read_json(&case_dir.join("case.json"));
        let fe = AutoFeatureExtractor::from_pretrained(case_dir.to_str().unwrap())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(fe.class_name(), case["extractor_class"], "{name}: class");
        let audio: Vec<Vec<f32>> = case["audio"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| load(a.as_str().unwrap()))
            .collect();
        let rate = case["sampling_rate"].as_u64().map(|r| r as u32);
        take_warnings();
        let result = fe.extract(&audio, rate, &options(&case["kwargs"]));
        let warnings = take_warnings();
        assert_eq!(json!(warnings), case["warnings"], "{name}: warnings differ");
        if let Some(error) = case["error"].as_str() {
            let err = result
                .expect_err(&format!("{name}: expected an error"))
                .to_string();
            assert_eq!(err, format!("invalid input: {error}"), "{name}");
            report.push(format!("{name}: error as expected"));
            continue;
        }
        let batch = result.unwrap_or_else(|e| panic!("{name}: {e}"));
        let expected = common::expected(case_dir.join("expected.safetensors"));
        let (key, tol) = if fe.class_name() == "WhisperFeatureExtractor" {
            ("input_features", 1e-4)
        } else {
            ("input_values", 1e-5)
        };
        let actual = batch.require(key).unwrap();
        assert_eq!(actual.dtype(), DType::F32, "{name}");
        let max = common::assert_close(&format!("{name}/{key}"), actual, &expected[key], tol);
        match (batch.get("attention_mask"), expected.get("attention_mask")) {
            (Some(a), Some(e)) => {
                assert_eq!(a.dtype(), DType::I64, "{name}");
                common::assert_ids(&format!("{name}/attention_mask"), a, e);
            }
            (None, None) => {}
            (a, e) => panic!(
                "{name}: attention_mask returned {} but expected {}",
                a.is_some(),
                e.is_some()
            ),
        }
        let names_out: Vec<&str> = batch.iter().map(|(n, _)| n).collect();
        let mut names_expected: Vec<&str> = expected.keys().map(String::as_str).collect();
        names_expected.sort_by_key(|n| *n != key);
        assert_eq!(names_out, names_expected, "{name}: outputs");
        report.push(format!("{name}: {key} max |diff| {max:e}"));
    }
    println!("{}", report.join("\n"));
}

#[test]
fn wrong_rate_error_embeds_the_repr() {
    let case_dir = audio_dir().join("extractors/w2v2_wrong_rate");
    let fe = AutoFeatureExtractor::from_pretrained(case_dir.to_str().unwrap()).unwrap();
    let config = std::fs::read_to_string(case_dir.join("preprocessor_config.json")).unwrap();
    // The hub-style file is exactly transformers' to_json_string() here.
    assert_eq!(
        fe.to_string(),
        format!("Wav2Vec2FeatureExtractor {}\n", config.trim_end())
    );
    let whisper = AutoFeatureExtractor::from_pretrained(
        audio_dir().join("extractors/whisper_80").to_str().unwrap(),
    )
    .unwrap();
    let err = whisper
        .extract(&[vec![0f32; 10]], Some(8000), &AudioOptions::default())
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "invalid input: The model corresponding to this feature extractor: \
         WhisperFeatureExtractor was trained using a sampling rate of 16000. Please make sure \
         that the provided `raw_speech` input was sampled with 16000 and not 8000."
    );
    capture_warnings();
    let _ = whisper.extract(&[vec![0f32; 10]], None, &AudioOptions::default());
    assert_eq!(
        take_warnings(),
        vec![
            "It is strongly recommended to pass the `sampling_rate` argument to \
             `WhisperFeatureExtractor()`. Failing to do so can result in silent errors that \
             might be hard to debug."
                .to_string()
        ]
    );
}

#[test]
fn whisper_options() {
    let fe = AutoFeatureExtractor::from_pretrained(
        audio_dir().join("extractors/whisper_80").to_str().unwrap(),
    )
    .unwrap();
    assert_eq!(fe.sampling_rate(), 16000);
    assert_eq!(fe.main_input_name(), "input_features");
    let tiny = load("mono16k_s16_tiny.wav");
    let with_mask = AudioOptions {
        return_attention_mask: Some(true),
        ..AudioOptions::default()
    };
    let batch = fe.extract(&[&tiny], Some(16000), &with_mask).unwrap();
    assert_eq!(
        batch.require("input_features").unwrap().dims(),
        &[1, 80, 3000]
    );
    let mask = batch.require("attention_mask").unwrap();
    assert_eq!(mask.dims(), &[1, 3000]);
    let ones: i64 = mask.sum_all().unwrap().to_scalar().unwrap();
    assert_eq!(ones, 4000 / 160);
    // Without padding to 30 s: frames = len / hop.
    let longest = AudioOptions {
        padding: Some(Padding::Longest),
        ..AudioOptions::default()
    };
    let batch = fe.extract(&[&tiny], Some(16000), &longest).unwrap();
    assert_eq!(
        batch.require("input_features").unwrap().dims(),
        &[1, 80, 25]
    );
    // do_normalize without return_attention_mask leaves the per-sample mask (transformers does).
    let normalize = AudioOptions {
        do_normalize: Some(true),
        ..AudioOptions::default()
    };
    let batch = fe.extract(&[&tiny], Some(16000), &normalize).unwrap();
    assert_eq!(
        batch.require("attention_mask").unwrap().dims(),
        &[1, 480_000]
    );
}

// ---------------------------------------------------------------------------------------------
// Class selection
// ---------------------------------------------------------------------------------------------

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "autoclass-fe-{tag}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn write(&self, name: &str, value: &Value) {
        std::fs::write(
            self.0.join(name),
            serde_json::to_string_pretty(value).unwrap(),
        )
        .unwrap();
    }

    fn load(&self) -> autoclass::Result<FeatureExtractor> {
        AutoFeatureExtractor::from_pretrained(self.0.to_str().unwrap())
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn class_is_chosen_like_transformers() {
    // feature_extractor_type in preprocessor_config.json.
    let dir = TempDir::new("type");
    dir.write(
        "preprocessor_config.json",
        &json!({"feature_extractor_type": "WhisperFeatureExtractor", "feature_size": 128}),
    );
    let fe = dir.load().unwrap();
    assert_eq!(fe.class_name(), "WhisperFeatureExtractor");
    assert_eq!(fe.settings().feature_size, 128);

    // processor_config.json's nested feature_extractor wins over preprocessor_config.json.
    dir.write(
        "processor_config.json",
        &json!({"feature_extractor": {"feature_extractor_type": "Wav2Vec2FeatureExtractor",
                                      "return_attention_mask": true},
                "processor_class": "Wav2Vec2Processor"}),
    );
    let fe = dir.load().unwrap();
    assert_eq!(fe.class_name(), "Wav2Vec2FeatureExtractor");
    assert!(fe.settings().return_attention_mask);
    // ... and "audio_processor" when there is no "feature_extractor".
    dir.write(
        "processor_config.json",
        &json!({"audio_processor": {"feature_extractor_type": "Wav2Vec2FeatureExtractor"}}),
    );
    assert_eq!(dir.load().unwrap().class_name(), "Wav2Vec2FeatureExtractor");
    // A processor_config.json without either falls back to preprocessor_config.json.
    dir.write("processor_config.json", &json!({"processor_class": "X"}));
    assert_eq!(dir.load().unwrap().class_name(), "WhisperFeatureExtractor");

    // No type: config.json's model_type through the registry.
    for (model_type, class) in [
        ("wav2vec2", "Wav2Vec2FeatureExtractor"),
        ("hubert", "Wav2Vec2FeatureExtractor"),
    ] {
        let dir = TempDir::new(model_type);
        dir.write("preprocessor_config.json", &json!({"sampling_rate": 16000}));
        dir.write("config.json", &json!({"model_type": model_type}));
        assert_eq!(dir.load().unwrap().class_name(), class, "{model_type}");
    }

    // Unknown class: the error lists the known ones.
    let dir = TempDir::new("unknown");
    dir.write(
        "preprocessor_config.json",
        &json!({"feature_extractor_type": "SpeechT5FeatureExtractor"}),
    );
    let err = dir.load().unwrap_err().to_string();
    assert!(
        err.contains("SpeechT5FeatureExtractor")
            && err.contains("Wav2Vec2FeatureExtractor, WhisperFeatureExtractor"),
        "{err}"
    );

    // No type and a model type without a feature extractor.
    let dir = TempDir::new("bert");
    dir.write("preprocessor_config.json", &json!({}));
    dir.write("config.json", &json!({"model_type": "bert"}));
    let err = dir.load().unwrap_err().to_string();
    assert!(
        err.contains("Unrecognized feature extractor")
            && err.contains("wav2vec2")
            && err.contains("hubert")
            && err.contains("found model_type `bert`"),
        "{err}"
    );

    // No file at all.
    let dir = TempDir::new("empty");
    let err = dir.load().unwrap_err().to_string();
    assert!(err.contains("preprocessor_config.json"), "{err}");

    // A broken value names the file and the field.
    let dir = TempDir::new("broken");
    dir.write(
        "preprocessor_config.json",
        &json!({"feature_extractor_type": "Wav2Vec2FeatureExtractor", "sampling_rate": "fast"}),
    );
    let err = dir.load().unwrap_err().to_string();
    assert!(
        err.contains("sampling_rate") && err.contains("preprocessor_config.json"),
        "{err}"
    );
}

#[test]
fn seed_checkpoint_extractor() {
    // The reconstructed speech-emotion checkpoint's preprocessor config, if it is there.
    let dir = common::repo_root()
        .join("checkpoints")
        .join("wav2vec2-lg-xlsr-en-speech-emotion-recognition");
    if !dir.join("preprocessor_config.json").is_file() {
        return;
    }
    let fe = AutoFeatureExtractor::from_pretrained(dir.to_str().unwrap()).unwrap();
    assert_eq!(fe.class_name(), "Wav2Vec2FeatureExtractor");
    assert!(fe.settings().return_attention_mask);
}
