//! AutoProcessor: a processor class when the checkpoint (or its model type) names one, else the
//! tokenizer, image processor or feature extractor alone.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use autoclass::{AutoProcessor, Processor};
use common::*;

#[test]
fn wav2vec2_ctc_checkpoint_gives_wav2vec2_processor() {
    let dir = fixtures().join("audio/models/wav2vec2_ctc");
    let case = case("audio/models/wav2vec2_ctc");
    let processor = AutoProcessor::from_pretrained(dir.to_str().unwrap()).unwrap();
    assert_eq!(processor.class_name(), "Wav2Vec2Processor");
    let Processor::Wav2Vec2(p) = processor else {
        panic!("not a Wav2Vec2Processor")
    };
    assert_eq!(p.feature_extractor.class_name(), "Wav2Vec2FeatureExtractor");
    // The tokenizer decodes transformers' greedy ids to transformers' transcription.
    let ids: Vec<Vec<i64>> = case["predicted_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_i64().unwrap())
                .collect()
        })
        .collect();
    assert_eq!(
        p.tokenizer.batch_decode(&ids).unwrap(),
        strings(&case["transcription"])
    );
}

#[test]
fn falls_back_to_the_single_component() {
    let bert = fixtures().join("bert_base");
    assert!(matches!(
        AutoProcessor::from_pretrained(bert.to_str().unwrap()).unwrap(),
        Processor::Tokenizer(_)
    ));
    let vit = fixtures().join("vision/processors/vit_google");
    let p = AutoProcessor::from_pretrained(vit.to_str().unwrap()).unwrap();
    assert!(
        matches!(p, Processor::ImageProcessor(_)),
        "{}",
        p.class_name()
    );
    let w2v2 = fixtures().join("audio/extractors/w2v2_seed");
    let p = AutoProcessor::from_pretrained(w2v2.to_str().unwrap()).unwrap();
    assert!(
        matches!(p, Processor::FeatureExtractor(_)),
        "{}",
        p.class_name()
    );
    assert_eq!(p.class_name(), "Wav2Vec2FeatureExtractor");
    // A named processor class we do not implement is a clear error, not a silent fallback.
    let whisper = fixtures().join("audio/extractors/whisper_80");
    let err = AutoProcessor::from_pretrained(whisper.to_str().unwrap())
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("WhisperProcessor"), "{err}");
}

#[test]
fn nothing_to_load_is_transformers_error() {
    let dir = std::env::temp_dir().join(format!("autoclass-noproc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("config.json"), r#"{"model_type": "bert"}"#).unwrap();
    let err = AutoProcessor::from_pretrained(dir.to_str().unwrap())
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("Unrecognized processing class in"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}
