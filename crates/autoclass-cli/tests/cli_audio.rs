//! The CLI's audio contract: `run --task audio-classification|ctc --audio`, `preprocess --audio`,
//! and bad audio as one clear error line, never a panic.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;

use std::path::PathBuf;

use autoclass::candle_core::{DType, Device};

fn audio(rel: &str) -> PathBuf {
    repo()
        .join("crates/autoclass/tests/fixtures/audio")
        .join(rel)
}

/// The seed's feature extractor through `preprocess`: `input_values` and `attention_mask` equal transformers'.
#[test]
fn seed_feature_extractor_through_preprocess() {
    let seed = repo().join("checkpoints/wav2vec2-lg-xlsr-en-speech-emotion-recognition");
    let save = std::env::temp_dir().join(format!(
        "autoclass-cli-audio-pre-{}.safetensors",
        std::process::id()
    ));
    let (a, b) = (
        audio("files/mono16k_s16.wav"),
        audio("files/mono16k_s16_short.wav"),
    );
    let out = autoclass(&[
        "preprocess",
        s(&seed),
        "--audio",
        s(&a),
        "--audio",
        s(&b),
        "--padding",
        "--save",
        s(&save),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("Wav2Vec2FeatureExtractor"));
    let saved = autoclass::candle_core::safetensors::load(&save, &Device::Cpu).unwrap();
    let expected = autoclass::candle_core::safetensors::load(
        audio("extractors/w2v2_seed/expected.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    assert!(max_diff(&saved["input_values"], &expected["input_values"]) <= 1e-5);
    assert_eq!(saved["attention_mask"].dtype(), DType::I64);
    assert_eq!(
        max_diff(&saved["attention_mask"], &expected["attention_mask"]),
        0.0
    );
    let _ = std::fs::remove_file(save);
}

/// `run --task ctc` prints `{"transcription": [...]}` and saves inputs and logits.
#[test]
fn ctc_transcription_and_save() {
    let model = audio("models/wav2vec2_ctc");
    let save = std::env::temp_dir().join(format!(
        "autoclass-cli-ctc-{}.safetensors",
        std::process::id()
    ));
    let (a, b) = (
        audio("files/mono16k_s16.wav"),
        audio("files/mono16k_s16_short.wav"),
    );
    let out = autoclass(&[
        "run",
        s(&model),
        "--task",
        "ctc",
        "--audio",
        s(&a),
        "--audio",
        s(&b),
        "--json",
        "--save",
        s(&save),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let lines = report["transcription"].as_array().unwrap();
    assert_eq!(lines.len(), 2);
    assert!(lines.iter().all(|l| !l.as_str().unwrap().is_empty()));
    let saved = autoclass::candle_core::safetensors::load(&save, &Device::Cpu).unwrap();
    // This checkpoint's extractor is base-960h style (no attention mask): same as the w2v2_base_nomask case.
    let expected = autoclass::candle_core::safetensors::load(
        audio("extractors/w2v2_base_nomask/expected.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    assert!(max_diff(&saved["input_values"], &expected["input_values"]) <= 1e-5);
    assert_eq!(saved["logits"].dims()[0], 2);
    assert_eq!(saved["logits"].dims()[2], 12);
    // The human output is the transcription itself.
    let human = autoclass(&["run", s(&model), "--task", "ctc", "--audio", s(&a)]);
    assert!(human.status.success());
    assert_eq!(String::from_utf8_lossy(&human.stdout).lines().count(), 1);
    let _ = std::fs::remove_file(save);
}

#[test]
fn bad_audio() {
    let model = audio("models/wav2vec2_ctc");
    let run = |file: &str, needle: &str| {
        fails_with(
            &[
                "run",
                s(&model),
                "--task",
                "ctc",
                "--audio",
                s(&audio(&format!("files/{file}"))),
            ],
            needle,
        )
    };
    run("truncated.wav", "truncated.wav");
    run("huge_header.wav", "huge_header.wav");
    run("empty.wav", "empty.wav");
    run("not_audio.wav", "not_audio.wav");
    run("stereo16k_s16.wav", "--mono");
    run("mono8k_s16.wav", "was trained using a sampling rate of 16000. Please make sure that the provided `raw_speech` input was sampled with 16000 and not 8000.");
    fails_with(&["run", s(&model), "--task", "ctc"], "--audio");
    // --mono and --resample make those two run.
    for (file, flag) in [
        ("stereo16k_s16.wav", "--mono"),
        ("mono8k_s16.wav", "--resample"),
    ] {
        let out = autoclass(&[
            "run",
            s(&model),
            "--task",
            "ctc",
            "--audio",
            s(&audio(&format!("files/{file}"))),
            flag,
        ]);
        assert!(
            out.status.success(),
            "{file} {flag}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
