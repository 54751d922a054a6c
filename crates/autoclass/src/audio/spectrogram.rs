//! transformers' `audio_utils`: mel scales, mel filter banks, window functions and the
//! log-mel spectrogram of `WhisperFeatureExtractor` (numpy path), in float64 where numpy works
//! in float64.

use rustfft::num_complex::Complex;
use rustfft::FftPlanner;

use crate::error::{Error, Result};

/// A mel scale (`mel_scale=` of `audio_utils.hertz_to_mel`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MelScale {
    /// `2595 * log10(1 + f / 700)`.
    Htk,
    /// `1127 * ln(1 + f / 700)`.
    Kaldi,
    /// Slaney's: linear `3f / 200` below 1 kHz, logarithmic (`27 / ln 6.4` mels per e-fold) above.
    Slaney,
}

/// `audio_utils.hertz_to_mel`.
pub fn hertz_to_mel(freq: f64, scale: MelScale) -> f64 {
    match scale {
        MelScale::Htk => 2595.0 * (1.0 + freq / 700.0).log10(),
        MelScale::Kaldi => 1127.0 * (1.0 + freq / 700.0).ln(),
        MelScale::Slaney => {
            if freq >= 1000.0 {
                15.0 + (freq / 1000.0).ln() * (27.0 / 6.4f64.ln())
            } else {
                3.0 * freq / 200.0
            }
        }
    }
}

/// `audio_utils.mel_to_hertz`.
pub fn mel_to_hertz(mels: f64, scale: MelScale) -> f64 {
    match scale {
        MelScale::Htk => 700.0 * (10f64.powf(mels / 2595.0) - 1.0),
        MelScale::Kaldi => 700.0 * ((mels / 1127.0).exp() - 1.0),
        MelScale::Slaney => {
            if mels >= 15.0 {
                1000.0 * ((6.4f64.ln() / 27.0) * (mels - 15.0)).exp()
            } else {
                200.0 * mels / 3.0
            }
        }
    }
}

/// `np.linspace(start, stop, num)`: `i * step + start`, the last point exactly `stop`.
fn linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    if num == 1 {
        return vec![start];
    }
    let step = (stop - start) / (num - 1) as f64;
    let mut out: Vec<f64> = (0..num).map(|i| i as f64 * step + start).collect();
    if let Some(last) = out.last_mut() {
        *last = stop;
    }
    out
}

/// A mel filter bank, `[num_frequency_bins, num_mel_filters]` row-major (transformers' layout).
#[derive(Clone, Debug, PartialEq)]
pub struct MelFilterBank {
    /// Number of frequency bins (rows): `n_fft / 2 + 1`.
    pub num_frequency_bins: usize,
    /// Number of mel filters (columns).
    pub num_mel_filters: usize,
    /// The weights, row-major.
    pub weights: Vec<f64>,
}

/// `audio_utils.mel_filter_bank(num_frequency_bins, num_mel_filters, min_frequency,
/// max_frequency, sampling_rate, norm, mel_scale)` (triangularized in Hz), float64. `slaney_norm`
/// is `norm="slaney"`: each filter scaled by `2 / (f[i+2] - f[i])`.
pub fn mel_filter_bank(
    num_frequency_bins: usize,
    num_mel_filters: usize,
    min_frequency: f64,
    max_frequency: f64,
    sampling_rate: u32,
    slaney_norm: bool,
    scale: MelScale,
) -> Result<MelFilterBank> {
    if num_frequency_bins < 2 {
        return Err(Error::config(
            "n_fft",
            format!("Require num_frequency_bins: {num_frequency_bins} >= 2"),
        ));
    }
    if min_frequency > max_frequency {
        return Err(Error::config(
            "max_frequency",
            format!("Require min_frequency: {min_frequency} <= max_frequency: {max_frequency}"),
        ));
    }
    let mel_min = hertz_to_mel(min_frequency, scale);
    let mel_max = hertz_to_mel(max_frequency, scale);
    let filter_freqs: Vec<f64> = linspace(mel_min, mel_max, num_mel_filters + 2)
        .into_iter()
        .map(|m| mel_to_hertz(m, scale))
        .collect();
    let fft_freqs = linspace(0.0, f64::from(sampling_rate / 2), num_frequency_bins);
    let mut weights = vec![0f64; num_frequency_bins * num_mel_filters];
    for (j, &fft) in fft_freqs.iter().enumerate() {
        for i in 0..num_mel_filters {
            let down = -(filter_freqs[i] - fft) / (filter_freqs[i + 1] - filter_freqs[i]);
            let up = (filter_freqs[i + 2] - fft) / (filter_freqs[i + 2] - filter_freqs[i + 1]);
            let mut w = 0f64.max(down.min(up));
            if slaney_norm {
                w *= 2.0 / (filter_freqs[i + 2] - filter_freqs[i]);
            }
            weights[j * num_mel_filters + i] = w;
        }
    }
    Ok(MelFilterBank {
        num_frequency_bins,
        num_mel_filters,
        weights,
    })
}

/// `audio_utils.window_function(length, "hann", periodic)`: `np.hanning(length + 1)[:-1]` when
/// periodic, else `np.hanning(length)`.
pub fn hann_window(length: usize, periodic: bool) -> Vec<f64> {
    let m = if periodic { length + 1 } else { length };
    let full: Vec<f64> = match m {
        0 => Vec::new(),
        1 => vec![1.0],
        _ => (0..m)
            .map(|k| {
                // np.hanning: n = arange(1 - M, M, 2); 0.5 + 0.5 * cos(pi * n / (M - 1)).
                let n = (2 * k) as f64 + 1.0 - m as f64;
                0.5 + 0.5 * (std::f64::consts::PI * n / (m - 1) as f64).cos()
            })
            .collect(),
    };
    full.into_iter().take(length).collect()
}

/// `np.pad(x, (pad, pad), mode="reflect")` as a float64 vector (numpy's repeated reflection for
/// pads longer than the signal).
fn reflect_pad(x: &[f32], pad: usize) -> Vec<f64> {
    let n = x.len();
    let period = 2 * (n.max(1) - 1);
    (0..n + 2 * pad)
        .map(|i| {
            if n == 1 {
                return f64::from(x[0]);
            }
            let m = (i as i64 - pad as i64).rem_euclid(period as i64) as usize;
            let m = if m >= n { period - m } else { m };
            f64::from(x[m])
        })
        .collect()
}

/// `audio_utils.spectrogram(waveform, window, frame_length=n_fft, hop_length, power=2.0,
/// center=True, pad_mode="reflect", mel_filters, mel_floor=1e-10, log_mel="log10")` for a float32
/// waveform: reflect-padded by `n_fft / 2`, framed, windowed and transformed in float64, each bin
/// stored as complex64 (as numpy does), `|X|^2` in float64, `max(1e-10, filters.T @ power)`,
/// `log10`, cast to float32. Returns `[num_mel_filters, num_frames]` row-major and `num_frames`.
pub fn log_mel_spectrogram(
    waveform: &[f32],
    window: &[f64],
    hop_length: usize,
    filters: &MelFilterBank,
) -> Result<(Vec<f32>, usize)> {
    let n_fft = window.len();
    let bins = n_fft / 2 + 1;
    if n_fft == 0 || hop_length == 0 || bins != filters.num_frequency_bins {
        return Err(Error::config(
            "n_fft",
            format!(
                "window of {n_fft} samples, hop {hop_length} and a filter bank of {} bins do not fit",
                filters.num_frequency_bins
            ),
        ));
    }
    if waveform.is_empty() {
        return Err(Error::input(
            "cannot compute a spectrogram of an empty waveform",
        ));
    }
    let padded = reflect_pad(waveform, n_fft / 2);
    if padded.len() < n_fft {
        return Err(Error::input(format!(
            "a waveform of {} samples is too short for frames of {n_fft} samples",
            waveform.len()
        )));
    }
    let num_frames = 1 + (padded.len() - n_fft) / hop_length;
    let fft = FftPlanner::<f64>::new().plan_fft_forward(n_fft);
    let mut buffer = vec![Complex::new(0f64, 0f64); n_fft];
    let mut power = vec![0f64; bins];
    let n_mels = filters.num_mel_filters;
    // The non-zero band of each filter (the products outside it are exact zeros).
    let bands: Vec<(usize, usize)> = (0..n_mels)
        .map(|m| {
            let nonzero = |j: &usize| filters.weights[j * n_mels + m] != 0.0;
            let lo = (0..bins).find(nonzero).unwrap_or(0);
            let hi = (0..bins).rev().find(nonzero).map_or(0, |j| j + 1);
            (lo, hi.max(lo))
        })
        .collect();
    let mut out = vec![0f32; n_mels * num_frames];
    for frame in 0..num_frames {
        let start = frame * hop_length;
        for (k, slot) in buffer.iter_mut().enumerate() {
            *slot = Complex::new(padded[start + k] * window[k], 0.0);
        }
        fft.process(&mut buffer);
        for (p, x) in power.iter_mut().zip(&buffer) {
            // numpy stores the spectrum as complex64, then takes abs in float64 and squares.
            let re = f64::from(x.re as f32);
            let im = f64::from(x.im as f32);
            let magnitude = re.hypot(im);
            *p = magnitude * magnitude;
        }
        for (m, &(lo, hi)) in bands.iter().enumerate() {
            let mut acc = 0f64;
            for (j, p) in power.iter().enumerate().take(hi).skip(lo) {
                acc += filters.weights[j * n_mels + m] * p;
            }
            out[m * num_frames + frame] = acc.max(1e-10).log10() as f32;
        }
    }
    Ok((out, num_frames))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn mel_scales_round_trip() {
        for scale in [MelScale::Htk, MelScale::Kaldi, MelScale::Slaney] {
            for f in [0.0, 440.0, 999.0, 1000.0, 4321.5, 8000.0] {
                let back = mel_to_hertz(hertz_to_mel(f, scale), scale);
                assert!((back - f).abs() < 1e-9 * f.max(1.0), "{scale:?} {f} {back}");
            }
        }
        assert_eq!(hertz_to_mel(1000.0, MelScale::Slaney), 15.0);
    }

    #[test]
    fn hann_is_periodic() {
        let w = hann_window(400, true);
        assert_eq!(w.len(), 400);
        assert_eq!(w[0], 0.0);
        assert!((w[200] - 1.0).abs() < 1e-15);
        assert!((w[100] - 0.5).abs() < 1e-12 && (w[300] - 0.5).abs() < 1e-12);
        assert_eq!(hann_window(1, false), vec![1.0]);
    }

    #[test]
    fn reflect_matches_numpy() {
        let x = [1.0f32, 2.0, 3.0];
        let want = [1.0, 2.0, 3.0, 2.0, 1.0, 2.0, 3.0, 2.0, 1.0, 2.0, 3.0];
        assert_eq!(reflect_pad(&x, 4), want.to_vec());
        assert_eq!(reflect_pad(&[5.0], 2), vec![5.0; 5]);
    }

    #[test]
    fn filter_bank_shape_and_norm() {
        let fb = mel_filter_bank(201, 80, 0.0, 8000.0, 16000, true, MelScale::Slaney).unwrap();
        assert_eq!(fb.weights.len(), 201 * 80);
        assert!(fb.weights.iter().all(|w| *w >= 0.0));
        // Every filter has some weight.
        for m in 0..80 {
            assert!((0..201).any(|j| fb.weights[j * 80 + m] > 0.0), "filter {m}");
        }
        assert!(mel_filter_bank(1, 80, 0.0, 8000.0, 16000, true, MelScale::Slaney).is_err());
    }
}
