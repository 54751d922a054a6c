//! `LayoutLMv2Processor` and `LayoutLMv3Processor` (`models/layoutlmv2/processing_layoutlmv2.py`,
//! `models/layoutlmv3/processing_layoutlmv3.py`): the document image processor (resize, and
//! Tesseract OCR when `apply_ocr`) followed by the words+boxes tokenizer.

use std::path::PathBuf;

use candle_core::{Device, Tensor};
use image::DynamicImage;

use crate::error::{Error, Result};
use crate::hub::Checkpoint;
use crate::image::ImageProcessor;
use crate::models::Batch;
use crate::tokenization::layout::{
    LayoutEncodeOptions, LayoutEncoding, LayoutFamily, LayoutTokenizer, WordsInput,
};

const BOXES_WITH_OCR: &str =
    "You cannot provide bounding boxes if you initialized the image processor with apply_ocr set to True.";
const LABELS_WITH_OCR: &str =
    "You cannot provide word labels if you initialized the image processor with apply_ocr set to True.";
const OVERFLOW_WITHOUT_OFFSETS: &str =
    "You cannot return overflowing tokens without returning the offsets mapping.";

/// The text side of a processor call: what `text`, `text_pair`, `boxes` and `word_labels` carry.
/// Every field is per image (one entry per image in the batch).
#[derive(Clone, Copy, Debug, Default)]
struct DocumentText<'a> {
    /// Questions (`text` when the words come from OCR or `text_pair`): one per image; they become
    /// the first sequence and their tokens get `pad_token_box`.
    questions: Option<&'a [String]>,
    /// The words of each image (only when the image processor's `apply_ocr` is off).
    words: Option<&'a [Vec<String>]>,
    /// One normalised box per word (only when `apply_ocr` is off).
    boxes: Option<&'a [Vec<[i64; 4]>]>,
    /// Word labels for token classification (only when `apply_ocr` is off).
    word_labels: Option<&'a [Vec<i64>]>,
}

/// The shared implementation of both processors.
fn run(
    family: LayoutFamily,
    image_processor: &ImageProcessor,
    tokenizer: &LayoutTokenizer,
    images: &[DynamicImage],
    text: &DocumentText<'_>,
    options: &LayoutEncodeOptions,
) -> Result<(Batch, LayoutEncoding)> {
    // LayoutLMv2Processor renames pixel_values to `image` and checks overflow needs offsets.
    let (image_key, check_overflow) = match family {
        LayoutFamily::V2 => ("image", true),
        LayoutFamily::V3 => ("pixel_values", false),
    };
    let device = &Device::Cpu;
    let apply_ocr = image_processor.apply_ocr();
    if apply_ocr && text.boxes.is_some() {
        return Err(Error::input(BOXES_WITH_OCR));
    }
    if apply_ocr && text.word_labels.is_some() {
        return Err(Error::input(LABELS_WITH_OCR));
    }
    if check_overflow && options.return_overflowing_tokens && !options.return_offsets_mapping {
        return Err(Error::input(OVERFLOW_WITHOUT_OFFSETS));
    }
    if apply_ocr && text.words.is_some() {
        return Err(Error::input(
            "You cannot provide words if you initialized the image processor with apply_ocr set to True: \
             the words come from OCR (pass questions instead, or turn apply_ocr off).",
        ));
    }
    let (features, ocr) = image_processor.preprocess_document_on(images, device)?;
    let (words, boxes): (Vec<Vec<String>>, Vec<Vec<[i64; 4]>>) = match ocr {
        Some(found) => found.into_iter().map(|o| (o.words, o.boxes)).unzip(),
        None => {
            let words = text.words.ok_or_else(|| {
                Error::input(
                    "the image processor's apply_ocr is off: pass the words and their boxes",
                )
            })?;
            let boxes = text
                .boxes
                .ok_or_else(|| Error::input("You must provide corresponding bounding boxes"))?;
            if words.len() != boxes.len() {
                return Err(Error::input(
                    "You must provide words and boxes for an equal amount of examples",
                ));
            }
            (words.to_vec(), boxes.to_vec())
        }
    };
    if words.len() != images.len() {
        return Err(Error::input(format!(
            "got {} images but words for {} examples; give one list of words per image",
            images.len(),
            words.len()
        )));
    }
    if let Some(q) = text.questions {
        if q.len() != words.len() {
            return Err(Error::input(format!(
                "batch length of `text`: {} does not match batch length of `text_pair`: {}.",
                q.len(),
                words.len()
            )));
        }
    }
    if let Some(l) = text.word_labels {
        if l.len() != words.len() {
            return Err(Error::input(format!(
                "got word labels for {} examples but {} examples",
                l.len(),
                words.len()
            )));
        }
    }
    let inputs: Vec<WordsInput> = words
        .into_iter()
        .zip(boxes)
        .enumerate()
        .map(|(i, (words, boxes))| WordsInput {
            question: text.questions.map(|q| q[i].clone()),
            words,
            boxes,
            word_labels: text.word_labels.map(|l| l[i].clone()),
        })
        .collect();
    let encoding = tokenizer.encode_words(&inputs, options)?;
    let mut batch = encoding.to_batch(device)?;
    let pixels = features.require("pixel_values")?;
    let pixels = match &encoding.overflow_to_sample_mapping {
        Some(mapping) => {
            let idx: Vec<u32> = mapping
                .iter()
                .map(|&i| u32::try_from(i).unwrap_or(u32::MAX))
                .collect();
            let n = idx.len();
            pixels.index_select(&Tensor::from_vec(idx, n, pixels.device())?, 0)?
        }
        None => pixels.clone(),
    };
    batch.insert(image_key, pixels);
    Ok((batch, encoding))
}

fn open_all(paths: &[PathBuf]) -> Result<Vec<DynamicImage>> {
    paths
        .iter()
        .map(|p| crate::image::decode::open(p))
        .collect()
}

/// Defines a document processor type: an image processor plus a words + boxes tokenizer of
/// `$family`, run by [`run`].
macro_rules! layout_processor {
    ($(#[$doc:meta])* $name:ident, $family:expr, $image_class:literal, $tokenizer_class:literal) => {
        $(#[$doc])*
        #[derive(Debug)]
        pub struct $name {
            #[doc = concat!("The image processor (`", $image_class, "`).")]
            pub image_processor: ImageProcessor,
            #[doc = concat!("The tokenizer (`", $tokenizer_class, "`).")]
            pub tokenizer: LayoutTokenizer,
        }

        impl $name {
            /// Loads both parts from a resolved checkpoint.
            pub fn from_checkpoint(checkpoint: &Checkpoint) -> Result<Self> {
                Ok($name {
                    image_processor: ImageProcessor::from_checkpoint(checkpoint)?,
                    tokenizer: LayoutTokenizer::from_checkpoint_as(checkpoint, $family)?,
                })
            }

            /// `processor(images, text=questions, text_pair=words, boxes=..., word_labels=...,
            /// return_tensors="pt", **options)`: one entry per image in `questions`, `words`,
            /// `boxes` and `word_labels`. With `apply_ocr` the words and boxes come from OCR
            /// (questions, if given, become the first sequence) and passing boxes or word labels
            /// is transformers' ValueError; without it, `words` and `boxes` are required.
            pub fn process(
                &self,
                images: &[DynamicImage],
                questions: Option<&[String]>,
                words: Option<&[Vec<String>]>,
                boxes: Option<&[Vec<[i64; 4]>]>,
                word_labels: Option<&[Vec<i64>]>,
                options: &LayoutEncodeOptions,
            ) -> Result<Batch> {
                self.process_with_encoding(images, questions, words, boxes, word_labels, options)
                    .map(|(b, _)| b)
            }

            /// [`Self::process`], also returning the token-level encoding (rows, tokens' boxes,
            /// `overflow_to_sample_mapping`).
            pub fn process_with_encoding(
                &self,
                images: &[DynamicImage],
                questions: Option<&[String]>,
                words: Option<&[Vec<String>]>,
                boxes: Option<&[Vec<[i64; 4]>]>,
                word_labels: Option<&[Vec<i64>]>,
                options: &LayoutEncodeOptions,
            ) -> Result<(Batch, LayoutEncoding)> {
                let text = DocumentText {
                    questions,
                    words,
                    boxes,
                    word_labels,
                };
                run($family, &self.image_processor, &self.tokenizer, images, &text, options)
            }

            /// [`Self::process`] on image files.
            pub fn process_paths(
                &self,
                paths: &[PathBuf],
                questions: Option<&[String]>,
                words: Option<&[Vec<String>]>,
                boxes: Option<&[Vec<[i64; 4]>]>,
                word_labels: Option<&[Vec<i64>]>,
                options: &LayoutEncodeOptions,
            ) -> Result<Batch> {
                self.process(&open_all(paths)?, questions, words, boxes, word_labels, options)
            }
        }
    };
}

layout_processor!(
    /// `LayoutLMv2Processor`: `LayoutLMv2ImageProcessor` (224×224 BGR uint8, Tesseract OCR) and
    /// `LayoutLMv2Tokenizer`. Output: `input_ids`, `bbox`, `token_type_ids`, `attention_mask`,
    /// `labels` (with word labels), and `image` (the image processor's uint8 `pixel_values`).
    LayoutLMv2Processor,
    LayoutFamily::V2,
    "LayoutLMv2ImageProcessor",
    "LayoutLMv2Tokenizer"
);

layout_processor!(
    /// `LayoutLMv3Processor`: `LayoutLMv3ImageProcessor` (resized, normalised float pixels,
    /// Tesseract OCR) and `LayoutLMv3Tokenizer`. Output: `input_ids`, `bbox`, `attention_mask`,
    /// `labels` (with word labels) and `pixel_values`.
    LayoutLMv3Processor,
    LayoutFamily::V3,
    "LayoutLMv3ImageProcessor",
    "LayoutLMv3Tokenizer"
);
