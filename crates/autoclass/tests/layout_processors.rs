//! LayoutLMv2 / LayoutLMv3 tokenizers (words + boxes + labels) and processors (image processor
//! with Tesseract OCR + tokenizer) against transformers 5.24 fixtures in
//! `fixtures/multimodal/` (see generate_multimodal.py there). OCR cases need /usr/bin/tesseract.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};

use autoclass::candle_core::{DType, Tensor};
use autoclass::processing::layout::{LayoutLMv2Processor, LayoutLMv3Processor};
use autoclass::tokenization::layout::{
    LayoutEncodeOptions, LayoutEncoding, LayoutFamily, LayoutTokenizer, WordsInput,
};
use autoclass::tokenization::Side;
use autoclass::{AutoProcessor, Batch, Error, Padding, Processor, Truncation};
use common::*;
use image::DynamicImage;
use serde_json::Value;

fn multimodal() -> PathBuf {
    fixtures().join("multimodal")
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// `LayoutEncodeOptions` from a call's / case's keyword arguments.
fn options(kwargs: &Value) -> LayoutEncodeOptions {
    let padding = match &kwargs["padding"] {
        Value::Bool(true) => Padding::Longest,
        Value::String(s) => s.parse().unwrap(),
        _ => Padding::None,
    };
    let truncation = match &kwargs["truncation"] {
        Value::Null => None,
        Value::Bool(true) => Some(Truncation::LongestFirst),
        Value::Bool(false) => Some(Truncation::DoNotTruncate),
        Value::String(s) => Some(s.parse().unwrap()),
        other => panic!("truncation {other}"),
    };
    let flag = |k: &str| kwargs[k].as_bool().unwrap_or(false);
    LayoutEncodeOptions {
        padding,
        truncation,
        max_length: kwargs["max_length"].as_u64().map(|v| v as usize),
        stride: kwargs["stride"].as_u64().unwrap_or(0) as usize,
        pad_to_multiple_of: kwargs["pad_to_multiple_of"].as_u64().map(|v| v as usize),
        add_special_tokens: kwargs["add_special_tokens"].as_bool().unwrap_or(true),
        return_token_type_ids: kwargs["return_token_type_ids"].as_bool(),
        return_attention_mask: kwargs["return_attention_mask"].as_bool(),
        return_overflowing_tokens: flag("return_overflowing_tokens"),
        return_special_tokens_mask: flag("return_special_tokens_mask"),
        return_offsets_mapping: flag("return_offsets_mapping"),
        return_length: flag("return_length"),
    }
}

fn boxes_of(v: &Value) -> Option<Vec<[i64; 4]>> {
    v.as_array()?
        .iter()
        .map(|b| {
            let a = b.as_array()?;
            (a.len() == 4).then(|| std::array::from_fn(|i| a[i].as_i64().unwrap()))
        })
        .collect()
}

fn ints(v: &Value) -> Vec<i64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_i64().unwrap())
        .collect()
}

fn input_error(e: Error) -> String {
    match e {
        Error::Input { reason } => reason,
        other => panic!("expected an input error, got {other}"),
    }
}

/// The examples of a tokenizer call (`text`, `text_pair`, `boxes`, `word_labels`), whether it is
/// a single unbatched example, or `None` when a box is not 4 numbers (not representable).
fn call_inputs(call: &Value) -> Option<(Vec<WordsInput>, bool)> {
    let (questions, words, single): (Option<Vec<String>>, Vec<Vec<String>>, bool) =
        match &call["text_pair"] {
            Value::Null => match &call["text"] {
                Value::Array(a) if a.first().is_some_and(Value::is_array) => {
                    (None, a.iter().map(strings).collect(), false)
                }
                t => (None, vec![strings(t)], true),
            },
            pair => match &call["text"] {
                Value::String(q) => (Some(vec![q.clone()]), vec![strings(pair)], true),
                t => (
                    Some(strings(t)),
                    pair.as_array().unwrap().iter().map(strings).collect(),
                    false,
                ),
            },
        };
    let boxes: Vec<Vec<[i64; 4]>> = match &call["boxes"] {
        Value::Null => vec![Vec::new(); words.len()],
        b if single => vec![boxes_of(b)?],
        b => b
            .as_array()
            .unwrap()
            .iter()
            .map(boxes_of)
            .collect::<Option<_>>()?,
    };
    let labels: Option<Vec<Vec<i64>>> = match &call["word_labels"] {
        Value::Null => None,
        l if single => Some(vec![ints(l)]),
        l => Some(l.as_array().unwrap().iter().map(ints).collect()),
    };
    let inputs = words
        .into_iter()
        .zip(boxes)
        .enumerate()
        .map(|(i, (words, boxes))| WordsInput {
            question: questions.as_ref().map(|q| q[i].clone()),
            words,
            boxes,
            word_labels: labels.as_ref().map(|l| l[i].clone()),
        })
        .collect();
    Some((inputs, single))
}

fn run_tokenizer_cases(cases_file: &Path, tokenizer_dir: &Path, family: LayoutFamily) -> usize {
    let file = read_json(cases_file);
    let mut checked = 0;
    for case in file["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let mut tok = LayoutTokenizer::from_pretrained(tokenizer_dir.to_str().unwrap()).unwrap();
        assert_eq!(tok.family(), family);
        if let Some(v) = case["tokenizer_attrs"]["only_label_first_subword"].as_bool() {
            tok.set_only_label_first_subword(v);
        }
        match case["tokenizer_attrs"]["padding_side"].as_str() {
            Some("left") => tok.set_padding_side(Side::Left),
            Some("right") | None => {}
            Some(other) => panic!("{name}: padding_side {other}"),
        }
        let call = &case["call"];
        let Some((inputs, single)) = call_inputs(call) else {
            // A box that is not 4 numbers: transformers passes it through unchecked; the Rust
            // API types boxes as [i64; 4], so this input cannot be expressed.
            assert_eq!(name, "error_box_not_four", "{name}: unrepresentable boxes");
            continue;
        };
        let opts = options(call);
        let result = if single {
            tok.encode_one(&inputs[0], &opts)
        } else {
            tok.encode_words(&inputs, &opts)
        };
        match (&case["error"], result) {
            (Value::Null, Ok(enc)) => {
                assert_eq!(enc.to_json(), case["expected"], "{name}");
                check_tokens(&tok, &enc, &case["tokens"], single, name);
            }
            (Value::String(msg), Err(e)) => {
                let got = input_error(e);
                if name == "error_no_boxes" {
                    // `boxes=None` cannot be passed: no boxes for the words is the length error.
                    assert_eq!(
                        got, "You must provide as many words as there are bounding boxes",
                        "{name}"
                    );
                } else {
                    assert!(got.starts_with(msg.as_str()), "{name}: {got:?} vs {msg:?}");
                }
            }
            (expected, got) => panic!("{name}: expected {expected}, got {got:?}"),
        }
        checked += 1;
    }
    checked
}

fn check_tokens(
    tok: &LayoutTokenizer,
    enc: &LayoutEncoding,
    tokens: &Value,
    single: bool,
    name: &str,
) {
    let rows: Vec<Vec<String>> = if single {
        vec![strings(tokens)]
    } else {
        tokens.as_array().unwrap().iter().map(strings).collect()
    };
    for (ids, expected) in enc.input_ids.iter().zip(rows) {
        let got: Vec<String> = tok
            .convert_ids_to_tokens(ids)
            .into_iter()
            .map(Option::unwrap)
            .collect();
        assert_eq!(got, expected, "{name}: tokens");
    }
}

#[test]
fn layoutlmv2_tokenizer_cases_match_transformers() {
    let n = run_tokenizer_cases(
        &multimodal().join("layoutlmv2/tokenizer_cases.json"),
        &multimodal().join("layoutlmv2/words_question"),
        LayoutFamily::V2,
    );
    assert!(n >= 18, "only {n} cases checked");
}

#[test]
fn layoutlmv3_tokenizer_cases_match_transformers() {
    let cases = multimodal().join("layoutlmv3/tokenizer_cases.json");
    // vocab.json + merges.txt + the processors' tokenizer_config.json.
    let dir = multimodal().join("layoutlmv3/processors/words_question");
    let n = run_tokenizer_cases(&cases, &dir, LayoutFamily::V3);
    assert!(n >= 20, "only {n} cases checked");
}

#[test]
fn layoutlmv3_from_tokenizer_json_matches_vocab_and_merges() {
    let src = multimodal().join("layoutlmv3/processors/words_question");
    let tok = LayoutTokenizer::from_pretrained(src.to_str().unwrap()).unwrap();
    let dir = std::env::temp_dir().join(format!("autoclass_lv3_tokjson_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("tokenizer.json"),
        tok.text_tokenizer().inner().to_string(false).unwrap(),
    )
    .unwrap();
    std::fs::copy(
        src.join("tokenizer_config.json"),
        dir.join("tokenizer_config.json"),
    )
    .unwrap();
    let n = run_tokenizer_cases(
        &multimodal().join("layoutlmv3/tokenizer_cases.json"),
        &dir,
        LayoutFamily::V3,
    );
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(n >= 20);
}

#[test]
fn overflowing_windows_keep_their_image() {
    let dir = multimodal().join("layoutlmv2/words_question");
    let Processor::LayoutLMv2(p) = AutoProcessor::from_pretrained(dir.to_str().unwrap()).unwrap()
    else {
        panic!("not a LayoutLMv2Processor")
    };
    let words = vec![
        strings(&serde_json::json!([
            "Invoice",
            "1234",
            "Date:",
            "2024-03-15",
            "Total"
        ])),
        strings(&serde_json::json!(["hello", "world"])),
    ];
    let boxes = vec![
        vec![[66, 75, 281, 180]; 5],
        vec![[10, 20, 30, 40], [50, 60, 70, 80]],
    ];
    let images: Vec<DynamicImage> = ["invoice.png", "hello.png"]
        .iter()
        .map(|n| autoclass::image::decode::open(&multimodal().join("images").join(n)).unwrap())
        .collect();
    let opts = LayoutEncodeOptions {
        truncation: Some(Truncation::LongestFirst),
        max_length: Some(6),
        padding: Padding::MaxLength,
        return_overflowing_tokens: true,
        return_offsets_mapping: true,
        ..Default::default()
    };
    let (batch, enc) = p
        .process_with_encoding(&images, None, Some(&words), Some(&boxes), None, &opts)
        .unwrap();
    let mapping = enc.overflow_to_sample_mapping.clone().unwrap();
    assert!(mapping.len() > 2, "{mapping:?}");
    assert_eq!(mapping.iter().filter(|&&i| i == 1).count(), 1);
    let image = batch.get("image").unwrap();
    assert_eq!(image.dims(), &[mapping.len(), 3, 224, 224]);
    assert_eq!(batch.get("bbox").unwrap().dims(), &[mapping.len(), 6, 4]);
    // Every window is [CLS] ... [SEP] with the special boxes, padded with the pad box.
    for (row, ids) in enc.bbox.iter().zip(&enc.input_ids) {
        assert_eq!(row[0], [0, 0, 0, 0]);
        let sep = ids.iter().rposition(|&i| i == 3).unwrap();
        assert_eq!(row[sep], [1000, 1000, 1000, 1000]);
    }
    let last = image.get(mapping.len() - 1).unwrap();
    let want = image.get(0).unwrap();
    assert_ne!(
        last.flatten_all().unwrap().to_vec1::<u8>().unwrap(),
        want.flatten_all().unwrap().to_vec1::<u8>().unwrap()
    );
}

#[test]
fn alignment_of_words_boxes_and_labels() {
    // hf-behaviour.md §6.3's example on the seed's real bert-base-uncased vocabulary (which
    // splits "unaffable" as una ##ffa ##ble, as BertTokenizer does).
    let dir = repo_root().join("checkpoints/layoutlmv2-base-uncased");
    let tok = LayoutTokenizer::from_pretrained(dir.to_str().unwrap()).unwrap();
    assert_eq!(tok.model_max_length(), Some(512));
    let input = WordsInput {
        question: None,
        words: vec!["Hello".into(), "unaffable".into(), "world".into()],
        boxes: vec![[10, 20, 30, 40], [50, 60, 70, 80], [100, 110, 120, 130]],
        word_labels: Some(vec![1, 2, 3]),
    };
    let enc = tok
        .encode_one(&input, &LayoutEncodeOptions::default())
        .unwrap();
    let tokens: Vec<String> = tok
        .convert_ids_to_tokens(&enc.input_ids[0])
        .into_iter()
        .map(Option::unwrap)
        .collect();
    assert_eq!(
        tokens,
        ["[CLS]", "hello", "una", "##ffa", "##ble", "world", "[SEP]"]
    );
    assert_eq!(
        enc.bbox[0],
        vec![
            [0, 0, 0, 0],
            [10, 20, 30, 40],
            [50, 60, 70, 80],
            [50, 60, 70, 80],
            [50, 60, 70, 80],
            [100, 110, 120, 130],
            [1000, 1000, 1000, 1000]
        ]
    );
    assert_eq!(
        enc.labels.as_ref().unwrap()[0],
        vec![-100, 1, 2, -100, -100, 3, -100]
    );
    let batch = enc.to_batch(&autoclass::candle_core::Device::Cpu).unwrap();
    assert_eq!(batch.get("bbox").unwrap().dims(), &[1, 7, 4]);
    assert_eq!(batch.get("labels").unwrap().dims(), &[1, 7]);
}

#[test]
fn bad_inputs_are_clear_errors() {
    let dir = multimodal().join("layoutlmv2/words_question");
    let tok = LayoutTokenizer::from_pretrained(dir.to_str().unwrap()).unwrap();
    let opts = LayoutEncodeOptions::default();
    let base = WordsInput {
        question: None,
        words: vec!["hello".into(), "world".into()],
        boxes: vec![[10, 20, 30, 40], [50, 60, 70, 80]],
        word_labels: None,
    };
    let err = |input: WordsInput| input_error(tok.encode_one(&input, &opts).unwrap_err());

    let e = err(WordsInput {
        boxes: vec![[1, 2, 3, 4]],
        ..base.clone()
    });
    assert_eq!(
        e,
        "You must provide as many words as there are bounding boxes"
    );
    // A box outside 0..1000 (e.g. pixel coordinates that were not normalised).
    let e = err(WordsInput {
        boxes: vec![[10, 20, 30, 40], [500, 60, 1700, 80]],
        ..base.clone()
    });
    assert!(e.contains("0-1000"), "{e}");
    assert!(e.contains("[500, 60, 1700, 80]"), "{e}");
    let e = err(WordsInput {
        boxes: vec![[-1, 20, 30, 40], [50, 60, 70, 80]],
        ..base.clone()
    });
    assert!(e.contains("normalized"), "{e}");
    // Fewer labels than words: transformers' IndexError, with a clearer message.
    let e = err(WordsInput {
        word_labels: Some(vec![1]),
        ..base.clone()
    });
    assert!(e.starts_with("list index out of range"), "{e}");
    assert!(e.contains("one label per word"), "{e}");
}

fn load_images(case_dir: &Path, case: &Value) -> Vec<DynamicImage> {
    strings(&case["images"])
        .iter()
        .map(|p| autoclass::image::decode::open(&case_dir.join(p)).unwrap())
        .collect()
}

fn tensor_names(batch: &Batch) -> Vec<String> {
    let mut names: Vec<String> = batch.iter().map(|(n, _)| n.to_string()).collect();
    names.sort();
    names
}

/// Runs one processor case folder (case.json + expected.safetensors) through AutoProcessor.
fn run_processor_case(case_dir: &Path, processor_dir: &Path) {
    let name = case_dir.file_name().unwrap().to_string_lossy().to_string();
    let case = read_json(&case_dir.join("case.json"));
    let processor = AutoProcessor::from_pretrained(processor_dir.to_str().unwrap()).unwrap();
    assert_eq!(
        processor.class_name(),
        case["processor_class"].as_str().unwrap(),
        "{name}"
    );
    let images = load_images(case_dir, &case);
    let n = images.len();
    let questions: Option<Vec<String>> = case["text"].as_str().map(|q| vec![q.to_string(); n]);
    let words: Option<Vec<Vec<String>>> = case["words"]
        .as_array()
        .map(|a| a.iter().map(strings).collect());
    let boxes: Option<Vec<Vec<[i64; 4]>>> = case["boxes"]
        .as_array()
        .map(|a| a.iter().map(|b| boxes_of(b).unwrap()).collect());
    let labels: Option<Vec<Vec<i64>>> = case["word_labels"]
        .as_array()
        .map(|a| a.iter().map(ints).collect());
    let opts = options(&case["kwargs"]);
    let (q, w, b, l) = (
        questions.as_deref(),
        words.as_deref(),
        boxes.as_deref(),
        labels.as_deref(),
    );
    let result = match &processor {
        Processor::LayoutLMv2(p) => p.process_with_encoding(&images, q, w, b, l, &opts),
        Processor::LayoutLMv3(p) => p.process_with_encoding(&images, q, w, b, l, &opts),
        _ => panic!("{name}: not a LayoutLM processor"),
    };
    if let Some(msg) = case["error"].as_str() {
        let e = result.expect_err(&name);
        assert_eq!(input_error(e), msg, "{name}");
        return;
    }
    let (batch, enc) = result.unwrap_or_else(|e| panic!("{name}: {e}"));
    let expected = expected(case_dir.join("expected.safetensors"));
    let mut keys: Vec<String> = strings(&case["output_keys"]);
    keys.sort();
    assert_eq!(tensor_names(&batch), keys, "{name}: output keys");
    for (key, want) in &expected {
        let got = batch.get(key).unwrap();
        match key.as_str() {
            "pixel_values" => {
                assert_eq!(got.dtype(), DType::F32, "{name}: {key} dtype");
                assert_close(&format!("{name}: {key}"), got, want, 1e-5);
            }
            "image" => {
                assert_eq!(got.dtype(), DType::U8, "{name}: {key} dtype");
                assert_ids(&format!("{name}: {key}"), got, want);
            }
            _ => {
                assert_eq!(got.dtype(), DType::I64, "{name}: {key} dtype");
                assert_ids(&format!("{name}: {key}"), got, want);
            }
        }
    }
    // The tokens transformers printed.
    let tokenizer = match &processor {
        Processor::LayoutLMv2(p) => &p.tokenizer,
        Processor::LayoutLMv3(p) => &p.tokenizer,
        _ => unreachable!(),
    };
    if case["tokens"].is_array() {
        check_tokens(tokenizer, &enc, &case["tokens"], false, &name);
    }
}

fn case_dirs(root: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("case.json").exists())
        .collect();
    dirs.sort();
    dirs
}

#[test]
fn layoutlmv2_processor_cases_match_transformers() {
    let dirs = case_dirs(&multimodal().join("layoutlmv2"));
    assert!(dirs.len() >= 12, "{} cases", dirs.len());
    for dir in &dirs {
        run_processor_case(dir, dir);
    }
}

#[test]
fn layoutlmv3_processor_cases_match_transformers() {
    let dirs = case_dirs(&multimodal().join("layoutlmv3/processors"));
    assert!(!dirs.is_empty());
    for dir in &dirs {
        run_processor_case(dir, dir);
    }
}

#[test]
fn seed_layoutlmv2_checkpoint_gives_layoutlmv2_processor() {
    let ckpt = repo_root().join("checkpoints/layoutlmv2-base-uncased");
    let processor = AutoProcessor::from_pretrained(ckpt.to_str().unwrap()).unwrap();
    assert_eq!(processor.class_name(), "LayoutLMv2Processor");
    let Processor::LayoutLMv2(p) = &processor else {
        panic!("not a LayoutLMv2Processor")
    };
    assert!(p.image_processor.apply_ocr());
    assert_eq!(p.tokenizer.class_name(), "LayoutLMv2Tokenizer");
    run_processor_case(&multimodal().join("seed_layoutlmv2"), &ckpt);
}

#[test]
fn processors_can_be_built_directly() {
    let dir = multimodal().join("layoutlmv2/words_question");
    let ckpt = autoclass::Checkpoint::resolve(dir.to_str().unwrap(), &Default::default()).unwrap();
    let p = LayoutLMv2Processor::from_checkpoint(&ckpt).unwrap();
    assert!(!p.image_processor.apply_ocr());
    // apply_ocr off and no words: a clear error, not a panic.
    let img = autoclass::image::decode::open(&multimodal().join("images/hello.png")).unwrap();
    let e = p
        .process(
            std::slice::from_ref(&img),
            None,
            None,
            None,
            None,
            &Default::default(),
        )
        .unwrap_err();
    assert!(input_error(e).contains("apply_ocr"));
    let dir = multimodal().join("layoutlmv3/processors/words_question");
    let ckpt = autoclass::Checkpoint::resolve(dir.to_str().unwrap(), &Default::default()).unwrap();
    let p3 = LayoutLMv3Processor::from_checkpoint(&ckpt).unwrap();
    let words = vec![vec!["HELLO".to_string(), "WORLD".to_string()]];
    let boxes = vec![vec![[48, 341, 294, 575], [318, 341, 602, 575]]];
    let batch = p3
        .process_paths(
            &[multimodal().join("images/hello.png")],
            None,
            Some(&words),
            Some(&boxes),
            None,
            &Default::default(),
        )
        .unwrap();
    assert!(batch.get("token_type_ids").is_none());
    assert_eq!(batch.get("bbox").unwrap().dims()[2], 4);
    let pv: &Tensor = batch.get("pixel_values").unwrap();
    assert_eq!(pv.dims()[0], 1);
}
