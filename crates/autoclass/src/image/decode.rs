//! Image files → pixels, as Pillow gives them to transformers.
//!
//! PNG, JPEG, WebP, BMP and GIF (first frame) are decoded by the `image` crate under
//! [`limits`], so a file whose header claims an absurd size is refused before anything is
//! allocated. Every failure is an [`Error::Io`] naming the file (kind `InvalidData` for a file
//! that is not a usable image); nothing here panics on bad input.
//!
//! [`to_rgb`] is Pillow's `Image.convert("RGB")` (alpha dropped, 16-bit grayscale clamped to 255,
//! as Pillow does) and [`to_rgb_for_processor`] is transformers 5's `convert_to_rgb` (images with
//! alpha composited over opaque white with Pillow's integer `alpha_composite`).
//!
//! JPEG is the one format whose pixels are not bit-identical with Pillow's: the `image` crate
//! decodes baseline/progressive JPEG with zune-jpeg, not libjpeg-turbo, and the two IDCT/chroma
//! upsampling implementations round differently (a few units on some pixels).

use std::io::{Cursor, ErrorKind};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use ::image::{
    DynamicImage, ImageBuffer, ImageDecoder, ImageError, ImageFormat, ImageReader, Limits, Luma,
    RgbImage, Rgba, RgbaImage,
};

use crate::error::{Error, Result};

/// Largest width or height accepted.
pub const MAX_DIMENSION: u32 = 32_768;

/// Largest decoded size in bytes the decoders may allocate (1 GiB).
pub const MAX_ALLOC: u64 = 1 << 30;

/// Largest pixel count accepted: Pillow's decompression-bomb error threshold
/// (`2 * Image.MAX_IMAGE_PIXELS` = 178956970).
pub const MAX_PIXELS: u64 = 2 * 89_478_485;

/// The decoding limits used by [`open`] and [`decode`].
pub fn limits() -> Limits {
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_DIMENSION);
    limits.max_image_height = Some(MAX_DIMENSION);
    limits.max_alloc = Some(MAX_ALLOC);
    limits
}

fn invalid(path: &Path, message: impl Into<String>) -> Error {
    Error::io(
        path,
        std::io::Error::new(ErrorKind::InvalidData, message.into()),
    )
}

fn describe(err: ImageError) -> String {
    match err {
        ImageError::Limits(e) => format!(
            "image exceeds the decoding limits (at most {MAX_DIMENSION}x{MAX_DIMENSION} pixels \
             and {} MiB): {e}",
            MAX_ALLOC >> 20
        ),
        ImageError::Unsupported(e) => format!("unsupported image: {e}"),
        ImageError::Decoding(e) => format!("cannot decode image (corrupt or truncated file?): {e}"),
        ImageError::IoError(e) if e.kind() == ErrorKind::UnexpectedEof => {
            format!("image file is truncated: {e}")
        }
        other => format!("cannot decode image: {other}"),
    }
}

/// Reads and decodes an image file (PNG, JPEG, WebP, BMP, GIF first frame).
pub fn open(path: &Path) -> Result<DynamicImage> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    decode_at(&bytes, path)
}

/// Decodes an in-memory image file; `name_for_errors` (a file name or URL) is what errors name.
pub fn decode(bytes: &[u8], name_for_errors: &str) -> Result<DynamicImage> {
    decode_at(bytes, &PathBuf::from(name_for_errors))
}

fn decode_at(bytes: &[u8], path: &Path) -> Result<DynamicImage> {
    // The decoders are third-party code fed untrusted bytes: a panic in one becomes an error.
    match catch_unwind(AssertUnwindSafe(|| decode_inner(bytes, path))) {
        Ok(result) => result,
        Err(_) => Err(invalid(path, "the image decoder failed on this file")),
    }
}

fn decode_inner(bytes: &[u8], path: &Path) -> Result<DynamicImage> {
    if bytes.is_empty() {
        return Err(invalid(
            path,
            "cannot identify image file: the file is empty",
        ));
    }
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| Error::io(path, e))?;
    let Some(format) = reader.format() else {
        return Err(invalid(
            path,
            "cannot identify image file (not a PNG, JPEG, WebP, BMP or GIF image)",
        ));
    };
    if !matches!(
        format,
        ImageFormat::Png
            | ImageFormat::Jpeg
            | ImageFormat::WebP
            | ImageFormat::Bmp
            | ImageFormat::Gif
    ) {
        return Err(invalid(
            path,
            format!("{format:?} images are not supported (PNG, JPEG, WebP, BMP, GIF are)"),
        ));
    }
    reader.limits(limits());
    let decoder = reader
        .into_decoder()
        .map_err(|e| invalid(path, describe(e)))?;
    let (width, height) = decoder.dimensions();
    if width == 0 || height == 0 {
        return Err(invalid(
            path,
            format!("image has no pixels ({width}x{height})"),
        ));
    }
    let pixels = u64::from(width) * u64::from(height);
    if pixels > MAX_PIXELS {
        return Err(invalid(
            path,
            format!(
                "Image size ({pixels} pixels) exceeds limit of {MAX_PIXELS} pixels, could be \
                 decompression bomb DOS attack."
            ),
        ));
    }
    if decoder.total_bytes() > MAX_ALLOC {
        return Err(invalid(
            path,
            format!(
                "image exceeds the decoding limits: {width}x{height} needs {} MiB (at most {} MiB)",
                decoder.total_bytes() >> 20,
                MAX_ALLOC >> 20
            ),
        ));
    }
    let image = DynamicImage::from_decoder(decoder).map_err(|e| invalid(path, describe(e)))?;
    if image.width() == 0 || image.height() == 0 {
        return Err(invalid(path, "image has no pixels"));
    }
    Ok(match image {
        // A 16-bit grayscale PNG with a tRNS colour key comes out as gray+alpha; Pillow keeps it
        // as mode I;16 (the key only goes to `info["transparency"]`), so drop the alpha again.
        DynamicImage::ImageLumaA16(la) if format == ImageFormat::Png && png_is_gray16(bytes) => {
            let (w, h) = la.dimensions();
            let data: Vec<u16> = la.pixels().map(|p| p.0[0]).collect();
            match ImageBuffer::<Luma<u16>, Vec<u16>>::from_raw(w, h, data) {
                Some(gray) => DynamicImage::ImageLuma16(gray),
                None => return Err(invalid(path, "inconsistent 16-bit image buffer")),
            }
        }
        other => other,
    })
}

/// Whether a PNG's IHDR says 16-bit grayscale (colour type 0).
fn png_is_gray16(bytes: &[u8]) -> bool {
    // 8-byte signature, 4-byte length, "IHDR", width, height, bit depth, colour type.
    bytes.len() > 25 && &bytes[12..16] == b"IHDR" && bytes[24] == 16 && bytes[25] == 0
}

/// Pillow's 16-bit → 8-bit rule for RGB(A)/LA data: the most significant byte.
fn msb(v: u16) -> u8 {
    (v >> 8) as u8
}

/// Pillow's `I;16 → RGB`: values above 255 clamp to 255 (no scaling).
fn clamp16(v: u16) -> u8 {
    v.min(255) as u8
}

/// The image as Pillow's RGBA (for images with alpha): LA → (l, l, l, a), 16-bit → high byte.
fn pil_rgba(img: &DynamicImage) -> Option<RgbaImage> {
    let (w, h) = (img.width(), img.height());
    let data: Vec<u8> = match img {
        DynamicImage::ImageLumaA8(la) => la
            .pixels()
            .flat_map(|p| [p.0[0], p.0[0], p.0[0], p.0[1]])
            .collect(),
        DynamicImage::ImageRgba8(rgba) => return Some(rgba.clone()),
        DynamicImage::ImageLumaA16(la) => la
            .pixels()
            .flat_map(|p| {
                let l = msb(p.0[0]);
                [l, l, l, msb(p.0[1])]
            })
            .collect(),
        DynamicImage::ImageRgba16(rgba) => rgba.as_raw().iter().map(|&v| msb(v)).collect(),
        DynamicImage::ImageRgba32F(_) => return Some(img.to_rgba8()),
        _ => return None,
    };
    RgbaImage::from_raw(w, h, data)
}

/// Pillow's `Image.convert("RGB")` of the image as Pillow would have opened it: gray is
/// replicated, alpha is dropped (no compositing), palettes are already expanded by the decoder,
/// 16-bit RGB(A) keeps the high byte, and 16-bit grayscale (`I;16`) is clamped to 255.
pub fn to_rgb(img: &DynamicImage) -> RgbImage {
    let (w, h) = (img.width(), img.height());
    let data: Vec<u8> = match img {
        DynamicImage::ImageRgb8(rgb) => return rgb.clone(),
        DynamicImage::ImageLuma8(l) => l.as_raw().iter().flat_map(|&v| [v, v, v]).collect(),
        DynamicImage::ImageLumaA8(la) => {
            la.pixels().flat_map(|p| [p.0[0], p.0[0], p.0[0]]).collect()
        }
        DynamicImage::ImageRgba8(rgba) => rgba
            .pixels()
            .flat_map(|p| [p.0[0], p.0[1], p.0[2]])
            .collect(),
        DynamicImage::ImageLuma16(l) => l
            .as_raw()
            .iter()
            .flat_map(|&v| {
                let v = clamp16(v);
                [v, v, v]
            })
            .collect(),
        DynamicImage::ImageLumaA16(la) => la
            .pixels()
            .flat_map(|p| {
                let v = msb(p.0[0]);
                [v, v, v]
            })
            .collect(),
        DynamicImage::ImageRgb16(rgb) => rgb.as_raw().iter().map(|&v| msb(v)).collect(),
        DynamicImage::ImageRgba16(rgba) => rgba
            .pixels()
            .flat_map(|p| [msb(p.0[0]), msb(p.0[1]), msb(p.0[2])])
            .collect(),
        other => return other.to_rgb8(),
    };
    RgbImage::from_raw(w, h, data).unwrap_or_else(|| img.to_rgb8())
}

/// Whether the image carries an alpha channel (Pillow: an "A" band or a transparency entry,
/// which the decoders turn into an alpha channel).
pub fn has_alpha(img: &DynamicImage) -> bool {
    img.color().has_alpha()
}

/// Pillow's `Image.alpha_composite(white, rgba)` then `.convert("RGB")`, in Pillow's integer
/// arithmetic (`libImaging/AlphaComposite.c`, 7 extra bits of precision).
pub fn composite_over_white(rgba: &RgbaImage) -> RgbImage {
    const PRECISION_BITS: u32 = 7;
    fn shift_for_div255(a: u32) -> u32 {
        ((a >> 8) + a) >> 8
    }
    let (w, h) = rgba.dimensions();
    let mut out = Vec::with_capacity(w as usize * h as usize * 3);
    for &Rgba([r, g, b, a]) in rgba.pixels() {
        if a == 0 {
            out.extend_from_slice(&[255, 255, 255]);
            continue;
        }
        let a = u32::from(a);
        // dst = opaque white.
        let blend = 255 * (255 - a);
        let outa255 = a * 255 + blend;
        let coef1 = a * 255 * 255 * (1 << PRECISION_BITS) / outa255;
        let coef2 = 255 * (1 << PRECISION_BITS) - coef1;
        for src in [r, g, b] {
            let tmp = u32::from(src) * coef1 + 255 * coef2;
            out.push((shift_for_div255(tmp + (0x80 << PRECISION_BITS)) >> PRECISION_BITS) as u8);
        }
    }
    RgbImage::from_raw(w, h, out).unwrap_or_else(|| RgbImage::new(w, h))
}

/// transformers 5's `convert_to_rgb` (used when an image processor has `do_convert_rgb`):
/// images with alpha are composited over opaque white, the rest are [`to_rgb`].
pub fn to_rgb_for_processor(img: &DynamicImage) -> RgbImage {
    match pil_rgba(img) {
        Some(rgba) => composite_over_white(&rgba),
        None => to_rgb(img),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use ::image::{GrayAlphaImage, LumaA};

    fn png_bytes(img: &DynamicImage) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, ImageFormat::Png).unwrap();
        out.into_inner()
    }

    #[test]
    fn png_round_trip_and_rgb_conversion() {
        let la = GrayAlphaImage::from_fn(3, 2, |x, y| LumaA([(x * 50 + y) as u8, (x * 100) as u8]));
        let decoded = decode(&png_bytes(&DynamicImage::ImageLumaA8(la)), "mem.png").unwrap();
        let rgb = to_rgb(&decoded);
        assert_eq!(rgb.get_pixel(2, 1).0, [101, 101, 101]);
        // Alpha 0 → white; alpha 200 of 101 over white.
        let proc = to_rgb_for_processor(&decoded);
        assert_eq!(proc.get_pixel(0, 0).0, [255, 255, 255]);
        let expect = (101.0 * 200.0 / 255.0 + 255.0 * 55.0 / 255.0_f64).round() as u8;
        assert!((i32::from(proc.get_pixel(2, 1).0[0]) - i32::from(expect)).abs() <= 1);
    }

    #[test]
    fn opaque_composite_is_identity() {
        let img = RgbaImage::from_fn(16, 16, |x, y| {
            Rgba([(x * 16) as u8, (y * 16) as u8, 7, 255])
        });
        let out = composite_over_white(&img);
        for (p, q) in img.pixels().zip(out.pixels()) {
            assert_eq!(&p.0[..3], &q.0[..]);
        }
    }

    #[test]
    fn gray16_clamps() {
        let img = ImageBuffer::<Luma<u16>, Vec<u16>>::from_raw(3, 1, vec![7, 255, 1000]).unwrap();
        let rgb = to_rgb(&DynamicImage::ImageLuma16(img));
        assert_eq!(rgb.as_raw(), &[7, 7, 7, 255, 255, 255, 255, 255, 255]);
    }

    #[test]
    fn bad_inputs_are_errors_naming_the_file() {
        for bytes in [
            &b""[..],
            b"not an image at all",
            &[0x89, b'P', b'N', b'G', 13, 10, 26, 10],
        ] {
            let err = decode(bytes, "bad/file.png").unwrap_err();
            assert!(err.to_string().contains("bad/file.png"), "{err}");
        }
        let err = open(Path::new("/definitely/missing.png")).unwrap_err();
        assert!(err.to_string().contains("/definitely/missing.png"), "{err}");
    }
}
