//! Pillow 13.0.0's `Image.resize` for 8-bit images, bit for bit.
//!
//! * Every filter but `NEAREST` goes through Pillow's `ImagingResample` (`libImaging/Resample.c`):
//!   separable passes with coefficients precomputed once per axis (the kernel is stretched by the
//!   scale factor when shrinking, which is Pillow's antialiasing), converted to 22-bit fixed point;
//!   each pass writes 8-bit results. Pillow 13 runs the vertical pass first when
//!   `(H_in - H_out) > 0 && (H_in - H_out) > 2 * (W_in - W_out)`, the horizontal pass first
//!   otherwise (Pillow 12 and older always run it first; results differ by ±1).
//! * `NEAREST` goes through Pillow's affine scaling (`libImaging/Geometry.c`,
//!   `ImagingScaleAffine`): source coordinates accumulate `scale = in / out` from `scale / 2`
//!   in double precision and are truncated.
//!
//! Pixels are interleaved 8-bit channels (1 for L, 3 for RGB, or 2/4): channels are resampled
//! independently, exactly like Pillow does for L and RGB (RGBA/LA are premultiplied by Pillow
//! first; [`resize_interleaved`] does not do that).

use std::fmt;
use std::str::FromStr;

use ::image::{GrayImage, RgbImage};

use crate::error::{Error, Result};

/// A Pillow resampling filter, with Pillow's (and transformers' `PILImageResampling`) codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Resample {
    /// `Image.NEAREST` (0): nearest neighbour, through Pillow's affine scaling.
    Nearest = 0,
    /// `Image.LANCZOS` (1): windowed sinc, support 3.
    Lanczos = 1,
    /// `Image.BILINEAR` (2): triangle filter, support 1.
    Bilinear = 2,
    /// `Image.BICUBIC` (3): cubic convolution with a = -0.5, support 2.
    Bicubic = 3,
    /// `Image.BOX` (4): box filter, support 0.5.
    Box = 4,
    /// `Image.HAMMING` (5): Hamming-windowed sinc, support 1.
    Hamming = 5,
}

impl Resample {
    /// Every filter, by code.
    pub const ALL: [Resample; 6] = [
        Resample::Nearest,
        Resample::Lanczos,
        Resample::Bilinear,
        Resample::Bicubic,
        Resample::Box,
        Resample::Hamming,
    ];

    /// The filter for a Pillow code (`resample` in preprocessor_config.json).
    pub fn from_code(code: i64) -> Result<Self> {
        Self::ALL
            .iter()
            .copied()
            .find(|r| *r as i64 == code)
            .ok_or_else(|| {
                Error::config(
                    "resample",
                    format!(
                        "{code} is not a Pillow resampling filter (0 NEAREST, 1 LANCZOS, \
                         2 BILINEAR, 3 BICUBIC, 4 BOX, 5 HAMMING)"
                    ),
                )
            })
    }

    /// The Pillow code.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// Pillow's name (`BILINEAR`).
    pub fn name(self) -> &'static str {
        match self {
            Resample::Nearest => "NEAREST",
            Resample::Lanczos => "LANCZOS",
            Resample::Bilinear => "BILINEAR",
            Resample::Bicubic => "BICUBIC",
            Resample::Box => "BOX",
            Resample::Hamming => "HAMMING",
        }
    }

    /// The convolution filter and its support; `None` for `NEAREST`.
    fn filter(self) -> Option<Kernel> {
        match self {
            Resample::Nearest => None,
            Resample::Box => Some((box_filter, 0.5)),
            Resample::Bilinear => Some((bilinear_filter, 1.0)),
            Resample::Hamming => Some((hamming_filter, 1.0)),
            Resample::Bicubic => Some((bicubic_filter, 2.0)),
            Resample::Lanczos => Some((lanczos_filter, 3.0)),
        }
    }
}

impl fmt::Display for Resample {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Resample {
    type Err = Error;

    /// Parses a Pillow name (`bicubic`, `BICUBIC`, `ANTIALIAS` = LANCZOS) or a code (`3`).
    fn from_str(s: &str) -> Result<Self> {
        if let Ok(code) = s.trim().parse::<i64>() {
            return Self::from_code(code);
        }
        let upper = s.trim().to_ascii_uppercase();
        let upper = upper
            .strip_prefix("PILIMAGERESAMPLING.")
            .or_else(|| upper.strip_prefix("RESAMPLING."))
            .unwrap_or(&upper);
        if upper == "ANTIALIAS" {
            return Ok(Resample::Lanczos);
        }
        Self::ALL
            .iter()
            .copied()
            .find(|r| r.name() == upper)
            .ok_or_else(|| {
                Error::config(
                    "resample",
                    format!(
                        "`{s}` is not a Pillow resampling filter (NEAREST, LANCZOS, BILINEAR, \
                         BICUBIC, BOX, HAMMING)"
                    ),
                )
            })
    }
}

/// A convolution filter and its support.
type Kernel = (fn(f64) -> f64, f64);

// ---------------------------------------------------------------------------------------------
// Filters (Resample.c)
// ---------------------------------------------------------------------------------------------

fn box_filter(x: f64) -> f64 {
    if x > -0.5 && x <= 0.5 {
        1.0
    } else {
        0.0
    }
}

fn bilinear_filter(x: f64) -> f64 {
    let x = x.abs();
    if x < 1.0 {
        1.0 - x
    } else {
        0.0
    }
}

fn hamming_filter(x: f64) -> f64 {
    let x = x.abs();
    if x == 0.0 {
        1.0
    } else if x >= 1.0 {
        0.0
    } else {
        let x = x * std::f64::consts::PI;
        x.sin() / x * (0.54 + 0.46 * x.cos())
    }
}

fn bicubic_filter(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

fn sinc_filter(x: f64) -> f64 {
    if x == 0.0 {
        1.0
    } else {
        let x = x * std::f64::consts::PI;
        x.sin() / x
    }
}

fn lanczos_filter(x: f64) -> f64 {
    if (-3.0..3.0).contains(&x) {
        sinc_filter(x) * sinc_filter(x / 3.0)
    } else {
        0.0
    }
}

// ---------------------------------------------------------------------------------------------
// Coefficients (precompute_coeffs + normalize_coeffs_8bpc)
// ---------------------------------------------------------------------------------------------

const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Fixed-point kernels of one axis: for output `i`, input pixels `start[i] .. start[i] + len[i]`
/// weighted by `weights[i * ksize ..][.. len[i]]`.
struct Coeffs {
    ksize: usize,
    start: Vec<usize>,
    len: Vec<usize>,
    weights: Vec<i32>,
}

impl Coeffs {
    fn new(in_size: usize, out_size: usize, filter: fn(f64) -> f64, support: f64) -> Self {
        // Pillow passes the box as floats: in0 = 0, in1 = in_size.
        let in0 = 0.0f64;
        let in1 = in_size as f32 as f64;
        let scale = (in1 - in0) / out_size as f64;
        let filterscale = if scale < 1.0 { 1.0 } else { scale };
        let support = support * filterscale;
        let ksize = support.ceil() as usize * 2 + 1;
        let mut start = Vec::with_capacity(out_size);
        let mut len = Vec::with_capacity(out_size);
        let mut weights = vec![0i32; out_size * ksize];
        let mut k = vec![0f64; ksize];
        let ss = 1.0 / filterscale;
        for xx in 0..out_size {
            let center = in0 + (xx as f64 + 0.5) * scale;
            // C `(int)` casts truncate toward zero, like Rust's `as`.
            let xmin = ((center - support + 0.5) as i64).max(0);
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64);
            let count = (xmax - xmin).clamp(0, ksize as i64) as usize;
            let xmin = xmin as usize;
            let mut ww = 0.0;
            for (x, slot) in k.iter_mut().enumerate().take(count) {
                let w = filter(((x + xmin) as f64 - center + 0.5) * ss);
                *slot = w;
                ww += w;
            }
            let row = &mut weights[xx * ksize..(xx + 1) * ksize];
            for (x, out) in row.iter_mut().enumerate().take(count) {
                let mut w = k[x];
                if ww != 0.0 {
                    w /= ww;
                }
                let scaled = w * f64::from(1u32 << PRECISION_BITS);
                *out = if w < 0.0 {
                    (-0.5 + scaled) as i32
                } else {
                    (0.5 + scaled) as i32
                };
            }
            start.push(xmin);
            len.push(count);
        }
        Coeffs {
            ksize,
            start,
            len,
            weights,
        }
    }

    fn kernel(&self, i: usize) -> (usize, &[i32]) {
        let base = i * self.ksize;
        (self.start[i], &self.weights[base..base + self.len[i]])
    }
}

#[inline]
fn clip8(acc: i64) -> u8 {
    if acc >= 1 << (PRECISION_BITS + 8) {
        255
    } else if acc <= 0 {
        0
    } else {
        (acc >> PRECISION_BITS) as u8
    }
}

const HALF: i64 = 1 << (PRECISION_BITS - 1);

/// Horizontal pass over `rows` source rows starting at `row0`: `[rows, out_w, C]`.
fn horizontal_pass<const C: usize>(
    src: &[u8],
    src_w: usize,
    row0: usize,
    rows: usize,
    out_w: usize,
    coeffs: &Coeffs,
) -> Vec<u8> {
    let mut out = vec![0u8; rows * out_w * C];
    let src_stride = src_w * C;
    for (y, out_row) in out.chunks_exact_mut(out_w * C).enumerate() {
        let row_start = (row0 + y) * src_stride;
        let in_row = &src[row_start..row_start + src_stride];
        for (xx, out_px) in out_row.chunks_exact_mut(C).enumerate() {
            let (xmin, k) = coeffs.kernel(xx);
            let mut acc = [HALF; C];
            let pixels = &in_row[xmin * C..(xmin + k.len()) * C];
            for (px, &w) in pixels.chunks_exact(C).zip(k) {
                let w = i64::from(w);
                for c in 0..C {
                    acc[c] += i64::from(px[c]) * w;
                }
            }
            for c in 0..C {
                out_px[c] = clip8(acc[c]);
            }
        }
    }
    out
}

/// Vertical pass: `[out_h, width, C]` from `[src_h, width, C]`.
fn vertical_pass<const C: usize>(
    src: &[u8],
    width: usize,
    out_h: usize,
    coeffs: &Coeffs,
) -> Vec<u8> {
    let stride = width * C;
    let mut out = vec![0u8; out_h * stride];
    let mut acc = vec![0i64; stride];
    for (yy, out_row) in out.chunks_exact_mut(stride).enumerate() {
        let (ymin, k) = coeffs.kernel(yy);
        acc.fill(HALF);
        for (dy, &w) in k.iter().enumerate() {
            let row_start = (ymin + dy) * stride;
            let in_row = &src[row_start..row_start + stride];
            let w = i64::from(w);
            for (a, &p) in acc.iter_mut().zip(in_row) {
                *a += i64::from(p) * w;
            }
        }
        for (o, &a) in out_row.iter_mut().zip(&acc) {
            *o = clip8(a);
        }
    }
    out
}

/// Pillow's `ImagingResample` (8 bits per channel) on an interleaved buffer.
fn resample_passes<const C: usize>(
    src: &[u8],
    w: usize,
    h: usize,
    out_w: usize,
    out_h: usize,
    filter: fn(f64) -> f64,
    support: f64,
) -> Vec<u8> {
    let need_h = out_w != w;
    let need_v = out_h != h;
    let kh = Coeffs::new(w, out_w, filter, support);
    let kv = Coeffs::new(h, out_h, filter, support);
    // Pillow 13: vertical first when the height shrinks by more than twice the width does.
    let (dh, dw) = (h as i64 - out_h as i64, w as i64 - out_w as i64);
    let horizontal_first = !(dh > 0 && dh > dw * 2);
    if horizontal_first {
        let mut cur: Option<Vec<u8>> = None;
        let mut kv = kv;
        if need_h {
            // Only the source rows the vertical pass reads.
            let first = kv.start.first().copied().unwrap_or(0);
            let last = kv
                .start
                .last()
                .zip(kv.len.last())
                .map(|(s, l)| s + l)
                .unwrap_or(h);
            let (first, last) = if need_v { (first, last) } else { (0, h) };
            if need_v {
                for s in &mut kv.start {
                    *s -= first;
                }
            }
            cur = Some(horizontal_pass::<C>(
                src,
                w,
                first,
                last - first,
                out_w,
                &kh,
            ));
        }
        if need_v {
            let width = if need_h { out_w } else { w };
            let input = cur.as_deref().unwrap_or(src);
            cur = Some(vertical_pass::<C>(input, width, out_h, &kv));
        }
        cur.unwrap_or_else(|| src.to_vec())
    } else {
        let mut cur: Option<Vec<u8>> = None;
        if need_v {
            cur = Some(vertical_pass::<C>(src, w, out_h, &kv));
        }
        if need_h {
            let rows = if need_v { out_h } else { h };
            let input = cur.as_deref().unwrap_or(src);
            cur = Some(horizontal_pass::<C>(input, w, 0, rows, out_w, &kh));
        }
        cur.unwrap_or_else(|| src.to_vec())
    }
}

/// Pillow's `ImagingScaleAffine` (what `resize(..., NEAREST)` runs): pixels whose source
/// coordinate falls outside the image stay 0.
fn nearest<const C: usize>(src: &[u8], w: usize, h: usize, out_w: usize, out_h: usize) -> Vec<u8> {
    let coord = |v: f64| -> i64 {
        if v < 0.0 {
            -1
        } else {
            v as i64
        }
    };
    let a0 = (w as f32 as f64) / out_w as f64;
    let a4 = (h as f32 as f64) / out_h as f64;
    let mut xin = vec![usize::MAX; out_w];
    let mut xo = a0 * 0.5;
    for slot in xin.iter_mut() {
        let x = coord(xo);
        if x >= 0 && (x as usize) < w {
            *slot = x as usize;
        }
        xo += a0;
    }
    let mut out = vec![0u8; out_w * out_h * C];
    let mut yo = a4 * 0.5;
    for out_row in out.chunks_exact_mut(out_w * C) {
        let y = coord(yo);
        if y >= 0 && (y as usize) < h {
            let in_row = &src[y as usize * w * C..(y as usize + 1) * w * C];
            for (out_px, &x) in out_row.chunks_exact_mut(C).zip(&xin) {
                if x != usize::MAX {
                    out_px.copy_from_slice(&in_row[x * C..(x + 1) * C]);
                }
            }
        }
        yo += a4;
    }
    out
}

/// Resizes an interleaved 8-bit image of `channels` channels (1 to 4) from `width x height` to
/// `out_width x out_height`, exactly as Pillow 13 resizes an L (1 channel) or RGB (3 channels)
/// image. Sizes must be non-zero and `src.len()` must be `width * height * channels`.
pub fn resize_interleaved(
    src: &[u8],
    width: usize,
    height: usize,
    channels: usize,
    out_width: usize,
    out_height: usize,
    resample: Resample,
) -> Result<Vec<u8>> {
    if width == 0 || height == 0 || out_width == 0 || out_height == 0 {
        return Err(Error::input(format!(
            "cannot resize a {width}x{height} image to {out_width}x{out_height}: sizes must be \
             positive"
        )));
    }
    let expected = width
        .checked_mul(height)
        .and_then(|n| n.checked_mul(channels));
    if expected != Some(src.len()) {
        return Err(Error::input(format!(
            "pixel buffer of {} bytes does not hold a {width}x{height} image with {channels} \
             channels",
            src.len()
        )));
    }
    if out_width
        .checked_mul(out_height)
        .and_then(|n| n.checked_mul(channels))
        .is_none()
    {
        return Err(Error::input(format!(
            "cannot resize to {out_width}x{out_height}: too large"
        )));
    }
    if (out_width, out_height) == (width, height) {
        return Ok(src.to_vec());
    }
    let out = match (resample.filter(), channels) {
        (None, 1) => nearest::<1>(src, width, height, out_width, out_height),
        (None, 2) => nearest::<2>(src, width, height, out_width, out_height),
        (None, 3) => nearest::<3>(src, width, height, out_width, out_height),
        (None, 4) => nearest::<4>(src, width, height, out_width, out_height),
        (Some((f, s)), 1) => resample_passes::<1>(src, width, height, out_width, out_height, f, s),
        (Some((f, s)), 2) => resample_passes::<2>(src, width, height, out_width, out_height, f, s),
        (Some((f, s)), 3) => resample_passes::<3>(src, width, height, out_width, out_height, f, s),
        (Some((f, s)), 4) => resample_passes::<4>(src, width, height, out_width, out_height, f, s),
        _ => {
            return Err(Error::input(format!(
                "cannot resize an image with {channels} channels (1 to 4 supported)"
            )))
        }
    };
    Ok(out)
}

/// `Image.resize((width, height), resample)` of an RGB image, bit-identical to Pillow 13.0.0.
pub fn resize(src: &RgbImage, width: u32, height: u32, resample: Resample) -> Result<RgbImage> {
    let out = resize_interleaved(
        src.as_raw(),
        src.width() as usize,
        src.height() as usize,
        3,
        width as usize,
        height as usize,
        resample,
    )?;
    RgbImage::from_raw(width, height, out)
        .ok_or_else(|| Error::input("resized buffer has the wrong size"))
}

/// `Image.resize((width, height), resample)` of an L (8-bit grayscale) image, bit-identical to
/// Pillow 13.0.0.
pub fn resize_gray(
    src: &GrayImage,
    width: u32,
    height: u32,
    resample: Resample,
) -> Result<GrayImage> {
    let out = resize_interleaved(
        src.as_raw(),
        src.width() as usize,
        src.height() as usize,
        1,
        width as usize,
        height as usize,
        resample,
    )?;
    GrayImage::from_raw(width, height, out)
        .ok_or_else(|| Error::input("resized buffer has the wrong size"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    /// A straight port of `pil_resize_ref.py` (itself verified against Pillow 13), used as an
    /// oracle for the optimised passes.
    fn reference(
        img: &[u8],
        w: usize,
        h: usize,
        c: usize,
        ow: usize,
        oh: usize,
        r: Resample,
    ) -> Vec<u8> {
        let (f, s) = r.filter().unwrap();
        let coeffs = |in_size: usize, out_size: usize| {
            let scale = in_size as f64 / out_size as f64;
            let fscale = scale.max(1.0);
            let support = s * fscale;
            let mut all = Vec::new();
            for xx in 0..out_size {
                let center = (xx as f64 + 0.5) * scale;
                let xmin = ((center - support + 0.5) as i64).max(0) as usize;
                let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize - xmin;
                let ws: Vec<f64> = (0..xmax)
                    .map(|x| f((x as f64 + xmin as f64 - center + 0.5) * (1.0 / fscale)))
                    .collect();
                let sum: f64 = ws.iter().sum();
                let ws: Vec<i64> = ws
                    .iter()
                    .map(|w| {
                        let w = if sum != 0.0 { w / sum } else { *w };
                        if w < 0.0 {
                            (w * 4194304.0 - 0.5) as i64
                        } else {
                            (w * 4194304.0 + 0.5) as i64
                        }
                    })
                    .collect();
                all.push((xmin, ws));
            }
            all
        };
        let hpass = |src: &[u8], sw: usize, rows: usize| {
            let kh = coeffs(sw, ow);
            let mut out = vec![0u8; rows * ow * c];
            for y in 0..rows {
                for (xx, (xmin, ws)) in kh.iter().enumerate() {
                    for ch in 0..c {
                        let mut acc = HALF;
                        for (i, w) in ws.iter().enumerate() {
                            acc += i64::from(src[(y * sw + xmin + i) * c + ch]) * w;
                        }
                        out[(y * ow + xx) * c + ch] = clip8(acc);
                    }
                }
            }
            out
        };
        let vpass = |src: &[u8], width: usize, sh: usize| {
            let kv = coeffs(sh, oh);
            let mut out = vec![0u8; oh * width * c];
            for (yy, (ymin, ws)) in kv.iter().enumerate() {
                for x in 0..width * c {
                    let mut acc = HALF;
                    for (i, w) in ws.iter().enumerate() {
                        acc += i64::from(src[(ymin + i) * width * c + x]) * w;
                    }
                    out[yy * width * c + x] = clip8(acc);
                }
            }
            out
        };
        let vertical_first =
            (h as i64 - oh as i64) > 0 && (h as i64 - oh as i64) > (w as i64 - ow as i64) * 2;
        let mut cur = img.to_vec();
        let (mut cw, mut ch) = (w, h);
        let steps: [bool; 2] = if vertical_first {
            [false, true]
        } else {
            [true, false]
        };
        for horizontal in steps {
            if horizontal && ow != cw {
                cur = hpass(&cur, cw, ch);
                cw = ow;
            } else if !horizontal && oh != ch {
                cur = vpass(&cur, cw, ch);
                ch = oh;
            }
        }
        cur
    }

    fn noise(n: usize, seed: u64) -> Vec<u8> {
        let mut state = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (state >> 56) as u8
            })
            .collect()
    }

    #[test]
    fn optimised_passes_match_the_reference_port() {
        let sizes = [
            (300, 200, 224, 224),
            (50, 70, 224, 224),
            (17, 100, 224, 224),
            (224, 224, 7, 9),
            (60, 80, 80, 60),
            (33, 21, 33, 50),
            (33, 21, 90, 21),
            (257, 257, 250, 60),
            (40, 30, 97, 61),
            (5, 3, 2, 1),
        ];
        for (i, &(w, h, ow, oh)) in sizes.iter().enumerate() {
            for c in [1usize, 3] {
                let img = noise(w * h * c, i as u64 * 7 + c as u64);
                for r in [
                    Resample::Bilinear,
                    Resample::Bicubic,
                    Resample::Lanczos,
                    Resample::Box,
                    Resample::Hamming,
                ] {
                    let got = resize_interleaved(&img, w, h, c, ow, oh, r).unwrap();
                    let want = reference(&img, w, h, c, ow, oh, r);
                    assert_eq!(got, want, "{w}x{h} -> {ow}x{oh} {r} c={c}");
                }
            }
        }
    }

    #[test]
    fn pass_order_rule_is_pillow_13() {
        // 300x200 -> 224x224: W shrinks by 76, H grows: horizontal first.
        // 257x257 -> 250x60: H shrinks by 197 > 2 * 7: vertical first.
        let img = noise(257 * 257 * 3, 5);
        let got = resize_interleaved(&img, 257, 257, 3, 250, 60, Resample::Bilinear).unwrap();
        let want = reference(&img, 257, 257, 3, 250, 60, Resample::Bilinear);
        assert_eq!(got, want);
    }

    #[test]
    fn gray_equals_each_rgb_channel() {
        let gray = noise(45 * 31, 9);
        let rgb: Vec<u8> = gray.iter().flat_map(|&v| [v, v, v]).collect();
        for r in Resample::ALL {
            let g = resize_interleaved(&gray, 45, 31, 1, 20, 77, r).unwrap();
            let c = resize_interleaved(&rgb, 45, 31, 3, 20, 77, r).unwrap();
            let expanded: Vec<u8> = g.iter().flat_map(|&v| [v, v, v]).collect();
            assert_eq!(expanded, c, "{r}");
        }
    }

    #[test]
    fn nearest_follows_the_affine_rule() {
        // 3 -> 7: scale 3/7; x = floor((i + 0.5) * 3/7) accumulated.
        let src: Vec<u8> = vec![10, 20, 30];
        let out = resize_interleaved(&src, 3, 1, 1, 7, 1, Resample::Nearest).unwrap();
        assert_eq!(out, vec![10, 10, 20, 20, 20, 30, 30]);
        // 4 -> 2: picks 1 and 3.
        let out = resize_interleaved(&[1, 2, 3, 4], 4, 1, 1, 2, 1, Resample::Nearest).unwrap();
        assert_eq!(out, vec![2, 4]);
    }

    #[test]
    fn identity_is_a_copy_and_bad_sizes_are_errors() {
        let img = noise(12, 1);
        assert_eq!(
            resize_interleaved(&img, 2, 2, 3, 2, 2, Resample::Lanczos).unwrap(),
            img
        );
        assert!(resize_interleaved(&img, 2, 2, 3, 0, 2, Resample::Bilinear).is_err());
        assert!(resize_interleaved(&img, 2, 3, 3, 4, 2, Resample::Bilinear).is_err());
        assert!(resize_interleaved(&img, 2, 2, 3, 4, 2, Resample::Bilinear).is_ok());
    }

    #[test]
    fn codes_and_names() {
        for r in Resample::ALL {
            assert_eq!(Resample::from_code(i64::from(r.code())).unwrap(), r);
            assert_eq!(r.name().parse::<Resample>().unwrap(), r);
        }
        assert_eq!("bicubic".parse::<Resample>().unwrap(), Resample::Bicubic);
        assert_eq!("2".parse::<Resample>().unwrap(), Resample::Bilinear);
        assert!(Resample::from_code(6).is_err());
        assert!("cubic".parse::<Resample>().is_err());
    }
}
