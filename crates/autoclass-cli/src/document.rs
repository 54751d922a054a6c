//! Documents for the CLI: OCR or user-given words and boxes, through a LayoutLMv2/v3 processor.

use std::path::{Path, PathBuf};

use autoclass::candle_core::Device;
use autoclass::image::ocr::OcrWords;
use autoclass::processing::Processor;
use autoclass::tokenization::layout::{LayoutEncodeOptions, LayoutTokenizer, WordsInput};
use autoclass::{Batch, Checkpoint, Error, Result};
use serde_json::Value;

/// `--words-file`: `{"words": [...], "boxes": [[x0, y0, x1, y1], ...], "word_labels": [...]}`.
#[derive(Clone, Debug)]
pub struct WordsFile {
    /// The words.
    pub words: Vec<String>,
    /// One box per word (0..1000 scale).
    pub boxes: Vec<[i64; 4]>,
    /// Optional labels, one per word.
    pub word_labels: Option<Vec<i64>>,
}

impl WordsFile {
    /// Reads and checks the file.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let v: Value = serde_json::from_str(&text).map_err(|source| Error::Json {
            path: path.to_path_buf(),
            source,
        })?;
        let bad = |what: &str| Error::input(format!("{}: {what}", path.display()));
        let words = v["words"]
            .as_array()
            .ok_or_else(|| bad("`words` must be a list of strings"))?
            .iter()
            .map(|w| {
                w.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| bad("`words` must be a list of strings"))
            })
            .collect::<Result<Vec<_>>>()?;
        let boxes = v["boxes"]
            .as_array()
            .ok_or_else(|| bad("`boxes` must be a list of [x0, y0, x1, y1]"))?
            .iter()
            .map(|b| {
                let nums: Vec<i64> = b
                    .as_array()
                    .map(|a| a.iter().filter_map(Value::as_i64).collect())
                    .unwrap_or_default();
                <[i64; 4]>::try_from(nums)
                    .map_err(|_| bad("each box must be four integers [x0, y0, x1, y1]"))
            })
            .collect::<Result<Vec<_>>>()?;
        let word_labels = match &v["word_labels"] {
            Value::Null => None,
            Value::Array(a) => Some(
                a.iter()
                    .map(|l| {
                        l.as_i64()
                            .ok_or_else(|| bad("`word_labels` must be integers"))
                    })
                    .collect::<Result<Vec<_>>>()?,
            ),
            _ => return Err(bad("`word_labels` must be a list of integers")),
        };
        Ok(WordsFile {
            words,
            boxes,
            word_labels,
        })
    }
}

/// A document batch plus, per example, its words and the word each token starts (first sub-token).
pub struct Document {
    /// `input_ids`, `bbox`, `attention_mask`, [`token_type_ids`], `image` or `pixel_values`, [`labels`].
    pub batch: Batch,
    /// The words of each example (OCR'd or given).
    pub words: Vec<Vec<String>>,
    /// For each example and token: the index of the word it starts, if it is a word's first sub-token.
    pub first_token_of: Vec<Vec<Option<usize>>>,
}

/// Runs the checkpoint's LayoutLMv2/v3 processor on `images`, with OCR or the words of `words_file`.
pub fn process(
    checkpoint: &Checkpoint,
    images: &[PathBuf],
    words_file: Option<&Path>,
) -> Result<Document> {
    let processor = Processor::from_checkpoint(checkpoint)?;
    let (image_processor, tokenizer, image_key) = match &processor {
        Processor::LayoutLMv2(p) => (&p.image_processor, &p.tokenizer, "image"),
        Processor::LayoutLMv3(p) => (&p.image_processor, &p.tokenizer, "pixel_values"),
        other => {
            return Err(Error::input(format!(
                "{} has no document processor (it has {}); --image with a text task needs LayoutLMv2/LayoutLMv3",
                checkpoint.name(),
                other.class_name()
            )))
        }
    };
    let decoded = images
        .iter()
        .map(|p| autoclass::image::decode::open(p))
        .collect::<Result<Vec<_>>>()?;
    let (pixels, ocr) = image_processor.preprocess_document(&decoded)?;
    let given = words_file.map(WordsFile::read).transpose()?;
    let examples: Vec<(OcrWords, Option<Vec<i64>>)> = match (ocr, given) {
        (Some(_), Some(_)) => {
            return Err(Error::input(
                "You cannot provide bounding boxes if you initialized the image processor with apply_ocr set to True.",
            ))
        }
        (Some(ocr), None) => ocr.into_iter().map(|o| (o, None)).collect(),
        (None, Some(file)) => {
            if images.len() != 1 {
                return Err(Error::input("--words-file gives the words of one image; pass exactly one --image"));
            }
            vec![(OcrWords { words: file.words, boxes: file.boxes }, file.word_labels)]
        }
        (None, None) => return Err(Error::input("this processor does not run OCR (apply_ocr is false): pass --words-file")),
    };
    encode(tokenizer, examples, pixels, image_key)
}

fn encode(
    tokenizer: &LayoutTokenizer,
    examples: Vec<(OcrWords, Option<Vec<i64>>)>,
    pixels: Batch,
    image_key: &str,
) -> Result<Document> {
    let options = LayoutEncodeOptions {
        padding: if examples.len() > 1 {
            autoclass::Padding::Longest
        } else {
            autoclass::Padding::None
        },
        ..LayoutEncodeOptions::default()
    };
    let inputs: Vec<WordsInput> = examples
        .iter()
        .map(|(o, labels)| WordsInput {
            question: None,
            words: o.words.clone(),
            boxes: o.boxes.clone(),
            word_labels: labels.clone(),
        })
        .collect();
    let encoding = tokenizer.encode_words(&inputs, &options)?;
    // The same words labelled with their own index mark each word's first sub-token.
    let indexed: Vec<WordsInput> = examples
        .iter()
        .map(|(o, _)| WordsInput {
            question: None,
            words: o.words.clone(),
            boxes: o.boxes.clone(),
            word_labels: Some((0..o.words.len() as i64).collect()),
        })
        .collect();
    let index = tokenizer.encode_words(&indexed, &options)?;
    let first_token_of = index
        .labels
        .unwrap_or_default()
        .into_iter()
        .map(|row| row.into_iter().map(|l| usize::try_from(l).ok()).collect())
        .collect();
    let mut batch = encoding.to_batch(&Device::Cpu)?;
    let pixel_values = pixels.require("pixel_values")?.clone();
    batch.insert(image_key, pixel_values);
    Ok(Document {
        batch,
        words: examples.into_iter().map(|(o, _)| o.words).collect(),
        first_token_of,
    })
}
