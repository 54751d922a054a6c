//! Images: decoding, Pillow-exact resampling and the image processors.
//!
//! * [`decode`]: image files to pixels as Pillow opens them ([`decode::open`],
//!   [`decode::to_rgb`] = `Image.convert("RGB")`, [`decode::to_rgb_for_processor`] =
//!   transformers' `convert_to_rgb`), with limits against decompression bombs.
//! * [`resize`]: Pillow 13.0.0's `Image.resize` for 8-bit images, bit for bit.
//! * [`processors`]: [`AutoImageProcessor`] and the image processors (`ViTImageProcessor`,
//!   `ConvNextImageProcessor`, `DeiTImageProcessor`, `CLIPImageProcessor`) producing
//!   `pixel_values`; `LayoutLMv2ImageProcessor` / `LayoutLMv3ImageProcessor` also run OCR
//!   ([`ImageProcessor::preprocess_document`]).
//! * [`ocr`]: Tesseract OCR exactly as transformers' `apply_tesseract` runs it through
//!   pytesseract ([`ocr::apply_tesseract`], words and 0..1000 boxes).

pub mod decode;
pub mod ocr;
pub mod processors;
pub mod resize;

pub use ocr::{apply_tesseract, OcrWords};
pub use processors::{
    AutoImageProcessor, ChannelStats, ImageProcessor, ImageProcessorSettings, SizeDict,
};
pub use resize::Resample;
