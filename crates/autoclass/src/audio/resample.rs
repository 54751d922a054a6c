//! Sampling-rate conversion for the CLI's `--resample`.
//!
//! A band-limited (windowed-sinc) polyphase resampler computed offline over the whole signal in
//! float64: the kernel is `sinc` at the cutoff `0.95 × min(from, to) / 2` (−6 dB there), windowed
//! by a Kaiser window (β = 8.6) 64 zero crossings wide on each side: the transition band spans
//! about 91%–99% of the lower Nyquist frequency and the stop band is about 85 dB down. The output holds
//! `ceil(len × to / from)` samples, output sample `k` sitting at input time `k × from / to` (no
//! delay), with zeros assumed outside the signal.
//!
//! transformers' `load_audio` resamples with soxr (`soxr_hq`); this is a different filter of
//! similar quality, so resampled audio is close to, not identical with, Python's.

use crate::error::{Error, Result};

/// Zero crossings of the kernel on each side.
const ZEROS: f64 = 64.0;
/// Kaiser window shape.
const BETA: f64 = 8.6;
/// Cutoff relative to the lower Nyquist frequency.
const ROLLOFF: f64 = 0.95;
/// Most kernel phases tabulated; rarer ratios round the phase to the nearest of these.
const MAX_PHASES: u64 = 4096;
/// Longest output accepted (one hour at 48 kHz).
const MAX_OUTPUT: u64 = super::decode::MAX_FRAMES as u64;

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// The zeroth-order modified Bessel function of the first kind (power series).
fn bessel_i0(x: f64) -> f64 {
    let mut sum = 1.0;
    let mut term = 1.0;
    let q = x * x / 4.0;
    for k in 1..200 {
        term *= q / (k * k) as f64;
        sum += term;
        if term < sum * 1e-17 {
            break;
        }
    }
    sum
}

/// Resamples mono `samples` from `from` Hz to `to` Hz (see the module documentation for the
/// filter). The same rate returns a copy.
pub fn resample(samples: &[f32], from: u32, to: u32) -> Result<Vec<f32>> {
    if from == 0 || to == 0 {
        return Err(Error::input(format!(
            "cannot resample from {from} Hz to {to} Hz: sampling rates must be positive"
        )));
    }
    if from == to {
        return Ok(samples.to_vec());
    }
    let (from, to) = (u64::from(from), u64::from(to));
    let n = samples.len() as u64;
    let out_len = (n * to).div_ceil(from);
    if out_len > MAX_OUTPUT {
        return Err(Error::input(format!(
            "resampling {n} samples from {from} Hz to {to} Hz gives {out_len} samples, more than \
             the {MAX_OUTPUT} autoclass accepts"
        )));
    }
    let g = gcd(from, to);
    let (up, down) = (to / g, from / g); // output k sits at input time k * down / up
    let phases = up.min(MAX_PHASES);
    // Cutoff in cycles per input sample and the kernel half-width in input samples.
    let cutoff = 0.5 * ROLLOFF * (to as f64 / from as f64).min(1.0);
    let half_width = ZEROS / (2.0 * cutoff);
    let taps = half_width.ceil() as i64;
    let i0_beta = bessel_i0(BETA);
    let kernel = |x: f64| -> f64 {
        let r = x / half_width;
        if r.abs() >= 1.0 {
            return 0.0;
        }
        let arg = 2.0 * cutoff * x;
        let sinc = if arg == 0.0 {
            1.0
        } else {
            (std::f64::consts::PI * arg).sin() / (std::f64::consts::PI * arg)
        };
        2.0 * cutoff * sinc * bessel_i0(BETA * (1.0 - r * r).sqrt()) / i0_beta
    };
    // table[p][t]: weight of input sample (base + t - taps + 1) for phase p / phases.
    let width = (2 * taps) as usize;
    let mut table = vec![0f64; phases as usize * width];
    for p in 0..phases as usize {
        let frac = p as f64 / phases as f64;
        for t in 0..width {
            let offset = (t as i64 - taps + 1) as f64 - frac;
            table[p * width + t] = kernel(offset);
        }
    }
    let mut out = Vec::with_capacity(out_len as usize);
    for k in 0..out_len {
        let num = k * down;
        let mut base = (num / up) as i64;
        let rem = num % up;
        let mut phase = if up <= MAX_PHASES {
            rem
        } else {
            (rem * MAX_PHASES + up / 2) / up
        };
        if phase == phases {
            phase = 0;
            base += 1;
        }
        let row = &table[phase as usize * width..(phase as usize + 1) * width];
        let first = base - taps + 1;
        let mut acc = 0f64;
        for (t, w) in row.iter().enumerate() {
            let i = first + t as i64;
            if i >= 0 && (i as u64) < n {
                acc += w * f64::from(samples[i as usize]);
            }
        }
        out.push(acc as f32);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn sine(freq: f64, rate: u32, n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| (2.0 * std::f64::consts::PI * freq * i as f64 / f64::from(rate)).sin() as f32)
            .collect()
    }

    #[test]
    fn sines_survive() {
        for (from, to) in [
            (48_000, 16_000),
            (8_000, 16_000),
            (44_100, 16_000),
            (22_050, 16_001),
        ] {
            let x = sine(440.0, from, from as usize);
            let y = resample(&x, from, to).unwrap();
            assert_eq!(y.len(), to as usize);
            let want = sine(440.0, to, to as usize);
            // Away from the edges (where the signal stops), the sine is reproduced.
            let edge = to as usize / 10;
            let err = y[edge..y.len() - edge]
                .iter()
                .zip(&want[edge..want.len() - edge])
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(err < 2e-3, "{from} -> {to}: {err}");
        }
    }

    #[test]
    fn rejects_aliases_and_bad_rates() {
        // 9 kHz is above the Nyquist frequency of 16 kHz: it must (nearly) vanish, not alias.
        let x = sine(9_000.0, 48_000, 48_000);
        let y = resample(&x, 48_000, 16_000).unwrap();
        let peak = y[1600..14_400].iter().fold(0f32, |m, v| m.max(v.abs()));
        assert!(peak < 1e-3, "{peak}");
        assert!(resample(&x, 0, 16_000).is_err());
        assert_eq!(resample(&x[..5], 16_000, 16_000).unwrap(), x[..5].to_vec());
        assert_eq!(resample(&[], 48_000, 16_000).unwrap(), Vec::<f32>::new());
        assert_eq!(resample(&[0.5; 3], 48_000, 16_000).unwrap().len(), 1);
    }
}
