//! Audio files → float32 samples, as `soundfile.read(path, dtype="float32")` gives them to
//! transformers.
//!
//! WAV (PCM unsigned 8-bit, signed 16/24/32-bit, IEEE float 32/64-bit), FLAC and MP3 are decoded
//! with symphonia. Integer samples are scaled as libsndfile scales them: `(u8 - 128) / 128`,
//! `s16 / 32768`, `s24 / 2^23`, `float32(s32) / 2^31`; float samples are kept as they are. WAV and
//! FLAC decodes are therefore bit-identical with soundfile's. MP3 is lossy and decoders differ in
//! the last bits (symphonia here, mpg123 inside libsndfile); the encoder delay and padding
//! announced by a LAME/Xing header are trimmed, as mpg123 does.
//!
//! Robustness: nothing is allocated from sizes a header claims; the decode stops with an error
//! past [`MAX_FRAMES`] frames (one hour at 48 kHz) or [`MAX_CHANNELS`] channels; a WAV or FLAC
//! file holding fewer frames than its header declares is refused as truncated (soundfile would
//! silently return the frames that are there); a panic inside the third-party decoders becomes an
//! error. Every failure is an [`Error::Io`] naming the file (kind `InvalidData` for a file that is
//! not usable audio).

use std::io::ErrorKind;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use symphonia::core::audio::{AudioBufferRef, Signal};
use symphonia::core::codecs::{DecoderOptions, CODEC_TYPE_NULL};
use symphonia::core::errors::Error as SymphoniaError;
use symphonia::core::formats::{FormatOptions, FormatReader};
use symphonia::core::io::{MediaSource, MediaSourceStream};
use symphonia::core::meta::MetadataOptions;
use symphonia::core::probe::Hint;

use crate::error::{Error, Result};

/// Most frames (samples per channel) a decode may produce: one hour at 48 kHz.
pub const MAX_FRAMES: usize = 3600 * 48_000;

/// Most channels accepted.
pub const MAX_CHANNELS: usize = 32;

/// Decoded audio: planar float32 samples in `[-1, 1)` (float files may exceed it), as soundfile
/// returns them (transposed: one `Vec` per channel).
#[derive(Clone, Debug, PartialEq)]
pub struct Audio {
    /// Samples per second.
    pub sampling_rate: u32,
    /// One vector of samples per channel, all of the same length.
    pub channels: Vec<Vec<f32>>,
    /// The file (or the name given to [`decode`]) the audio came from; errors name it.
    pub source: PathBuf,
}

impl Audio {
    /// The number of frames (samples per channel).
    pub fn frames(&self) -> usize {
        self.channels.first().map_or(0, Vec::len)
    }

    /// The duration in seconds.
    pub fn duration_seconds(&self) -> f64 {
        if self.sampling_rate == 0 {
            return 0.0;
        }
        self.frames() as f64 / f64::from(self.sampling_rate)
    }
}

fn invalid(path: &Path, message: impl Into<String>) -> Error {
    Error::io(
        path,
        std::io::Error::new(ErrorKind::InvalidData, message.into()),
    )
}

/// Reads and decodes an audio file (WAV, FLAC or MP3).
pub fn open(path: &Path) -> Result<Audio> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    if len == 0 {
        return Err(invalid(
            path,
            "cannot decode audio: the file is empty (Format not recognised)",
        ));
    }
    let hint = path.extension().and_then(|e| e.to_str());
    decode_guarded(Box::new(file), hint, path)
}

/// Decodes an in-memory audio file; `name_for_errors` (a file name or URL) is what errors name,
/// and its extension is used as a format hint.
pub fn decode(bytes: &[u8], name_for_errors: &str) -> Result<Audio> {
    let path = PathBuf::from(name_for_errors);
    if bytes.is_empty() {
        return Err(invalid(
            &path,
            "cannot decode audio: the file is empty (Format not recognised)",
        ));
    }
    let hint = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_string);
    let cursor = std::io::Cursor::new(bytes.to_vec());
    decode_guarded(Box::new(cursor), hint.as_deref(), &path)
}

fn decode_guarded(source: Box<dyn MediaSource>, hint: Option<&str>, path: &Path) -> Result<Audio> {
    // The decoders are third-party code fed untrusted bytes: a panic in one becomes an error.
    match catch_unwind(AssertUnwindSafe(|| decode_source(source, hint, path))) {
        Ok(result) => result,
        Err(_) => Err(invalid(path, "the audio decoder failed on this file")),
    }
}

fn describe(err: &SymphoniaError) -> String {
    match err {
        SymphoniaError::IoError(e) if e.kind() == ErrorKind::UnexpectedEof => {
            "the file ends unexpectedly (truncated?)".to_string()
        }
        SymphoniaError::IoError(e) => format!("read error: {e}"),
        SymphoniaError::DecodeError(msg) => format!("corrupt audio data: {msg}"),
        SymphoniaError::Unsupported(msg) => format!("unsupported audio: {msg}"),
        SymphoniaError::LimitError(msg) => format!("decoder limit reached: {msg}"),
        SymphoniaError::SeekError(_) => "seek error".to_string(),
        SymphoniaError::ResetRequired => {
            "the stream changes its parameters midway, which is not supported".to_string()
        }
    }
}

fn decode_source(source: Box<dyn MediaSource>, hint: Option<&str>, path: &Path) -> Result<Audio> {
    let stream = MediaSourceStream::new(source, Default::default());
    let mut probe_hint = Hint::new();
    if let Some(ext) = hint {
        probe_hint.with_extension(ext);
    }
    let format_options = FormatOptions {
        enable_gapless: true,
        ..Default::default()
    };
    let probed = symphonia::default::get_probe()
        .format(
            &probe_hint,
            stream,
            &format_options,
            &MetadataOptions::default(),
        )
        .map_err(|e| match e {
            SymphoniaError::Unsupported(_) => invalid(
                path,
                "cannot decode audio: format not recognised (not a WAV, FLAC or MP3 file)",
            ),
            other => invalid(path, format!("cannot decode audio: {}", describe(&other))),
        })?;
    let mut format = probed.format;
    decode_tracks(format.as_mut(), path)
}

/// The container kinds whose headers give an exact frame count.
fn exact_frame_count(format: &dyn FormatReader) -> bool {
    // symphonia's readers do not name themselves; the codec tells WAV/FLAC from MP3.
    format.default_track().is_some_and(|t| {
        use symphonia::core::codecs as c;
        !matches!(
            t.codec_params.codec,
            c::CODEC_TYPE_MP1 | c::CODEC_TYPE_MP2 | c::CODEC_TYPE_MP3
        )
    })
}

fn decode_tracks(format: &mut dyn FormatReader, path: &Path) -> Result<Audio> {
    let track = format
        .tracks()
        .iter()
        .find(|t| t.codec_params.codec != CODEC_TYPE_NULL)
        .ok_or_else(|| invalid(path, "cannot decode audio: the file has no audio track"))?;
    let track_id = track.id;
    let declared_frames = track.codec_params.n_frames;
    let mut sampling_rate = track.codec_params.sample_rate;
    let exact = exact_frame_count(format);
    let mut decoder = symphonia::default::get_codecs()
        .make(&track.codec_params, &DecoderOptions::default())
        .map_err(|e| invalid(path, format!("cannot decode audio: {}", describe(&e))))?;

    let mut channels: Vec<Vec<f32>> = Vec::new();
    loop {
        let packet = match format.next_packet() {
            Ok(packet) => packet,
            Err(SymphoniaError::IoError(e)) if e.kind() == ErrorKind::UnexpectedEof => break,
            Err(e) => {
                return Err(invalid(
                    path,
                    format!("cannot decode audio: {}", describe(&e)),
                ))
            }
        };
        if packet.track_id() != track_id {
            continue;
        }
        let buffer = decoder
            .decode(&packet)
            .map_err(|e| invalid(path, format!("cannot decode audio: {}", describe(&e))))?;
        let spec = *buffer.spec();
        let count = spec.channels.count();
        if count == 0 || count > MAX_CHANNELS {
            return Err(invalid(
                path,
                format!(
                    "the audio has {count} channels; between 1 and {MAX_CHANNELS} are supported"
                ),
            ));
        }
        match sampling_rate {
            Some(rate) if rate != spec.rate => {
                return Err(invalid(
                    path,
                    format!(
                        "the sampling rate changes midway ({rate} Hz, then {} Hz)",
                        spec.rate
                    ),
                ))
            }
            _ => sampling_rate = Some(spec.rate),
        }
        if channels.is_empty() {
            channels = vec![Vec::new(); count];
        } else if channels.len() != count {
            return Err(invalid(
                path,
                format!(
                    "the channel count changes midway ({}, then {count})",
                    channels.len()
                ),
            ));
        }
        let decoded = channels.first().map_or(0, Vec::len);
        if decoded + buffer.frames() > MAX_FRAMES {
            return Err(invalid(
                path,
                format!(
                    "the audio is longer than {MAX_FRAMES} frames (one hour at 48 kHz), the most \
                     autoclass decodes"
                ),
            ));
        }
        append_scaled(&buffer, &mut channels);
    }
    let Some(sampling_rate) = sampling_rate.filter(|r| *r > 0) else {
        return Err(invalid(
            path,
            "cannot decode audio: the file does not give its sampling rate",
        ));
    };
    if channels.is_empty() {
        let count = track_channel_count(format, track_id).unwrap_or(1);
        channels = vec![Vec::new(); count];
    }
    let frames = channels.first().map_or(0, Vec::len);
    if exact {
        if let Some(declared) = declared_frames {
            if declared > frames as u64 {
                return Err(invalid(
                    path,
                    format!(
                        "the header declares {declared} frames but the file holds only {frames}: \
                         it is truncated or its header is corrupt"
                    ),
                ));
            }
        }
    }
    Ok(Audio {
        sampling_rate,
        channels,
        source: path.to_path_buf(),
    })
}

fn track_channel_count(format: &dyn FormatReader, track_id: u32) -> Option<usize> {
    format
        .tracks()
        .iter()
        .find(|t| t.id == track_id)
        .and_then(|t| t.codec_params.channels)
        .map(|c| c.count())
        .filter(|&c| c > 0 && c <= MAX_CHANNELS)
}

/// Appends a decoded buffer, scaled to float32 as libsndfile scales each sample format.
fn append_scaled(buffer: &AudioBufferRef<'_>, channels: &mut [Vec<f32>]) {
    const U8_SCALE: f32 = 1.0 / 128.0;
    const S16_SCALE: f32 = 1.0 / 32_768.0;
    const S24_SCALE: f32 = 1.0 / 8_388_608.0;
    const S32_SCALE: f32 = 1.0 / 2_147_483_648.0;
    macro_rules! scaled {
        ($buf:expr, |$s:ident| $convert:expr) => {
            for (c, out) in channels.iter_mut().enumerate() {
                out.extend($buf.chan(c).iter().map(|&$s| $convert));
            }
        };
    }
    match buffer {
        AudioBufferRef::U8(b) => scaled!(b, |s| (f32::from(s) - 128.0) * U8_SCALE),
        AudioBufferRef::U16(b) => scaled!(b, |s| (f32::from(s) - 32_768.0) * S16_SCALE),
        AudioBufferRef::U24(b) => scaled!(b, |s| (s.inner() as f32 - 8_388_608.0) * S24_SCALE),
        AudioBufferRef::U32(b) => {
            scaled!(b, |s| ((f64::from(s) - 2_147_483_648.0) as f32) * S32_SCALE)
        }
        AudioBufferRef::S8(b) => scaled!(b, |s| f32::from(s) * U8_SCALE),
        AudioBufferRef::S16(b) => scaled!(b, |s| f32::from(s) * S16_SCALE),
        AudioBufferRef::S24(b) => scaled!(b, |s| s.inner() as f32 * S24_SCALE),
        // float32(s32) first, then the exact power-of-two scaling: libsndfile's i2f_array.
        AudioBufferRef::S32(b) => scaled!(b, |s| s as f32 * S32_SCALE),
        AudioBufferRef::F32(b) => scaled!(b, |s| s),
        AudioBufferRef::F64(b) => scaled!(b, |s| s as f32),
    }
}

/// One channel of samples: the only channel of mono audio, or, with `mix`, the average of the
/// channels (float32, summed in channel order then divided by the channel count, as numpy's
/// `waveform.mean(axis=0)` in transformers' `load_audio`). Multi-channel audio without `mix` is
/// refused with an error naming the file.
pub fn to_mono(audio: &Audio, mix: bool) -> Result<Vec<f32>> {
    match audio.channels.len() {
        0 => Err(Error::input(format!(
            "{} has no audio channels",
            audio.source.display()
        ))),
        1 => Ok(audio.channels[0].clone()),
        n if !mix => Err(Error::input(format!(
            "{} has {n} channels; pass --mono to average them",
            audio.source.display()
        ))),
        n => {
            let frames = audio.frames();
            if audio.channels.iter().any(|c| c.len() != frames) {
                return Err(Error::input(format!(
                    "{}: the channels have different lengths",
                    audio.source.display()
                )));
            }
            let mut sum = vec![0f32; frames];
            for channel in &audio.channels {
                for (s, x) in sum.iter_mut().zip(channel) {
                    *s += *x;
                }
            }
            let count = n as f32;
            Ok(sum.into_iter().map(|s| s / count).collect())
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    /// A PCM WAV file: `format` 1 (integer) or 3 (float).
    fn wav(
        format: u16,
        channels: u16,
        rate: u32,
        bits: u16,
        data: &[u8],
        data_len: u32,
    ) -> Vec<u8> {
        let block = channels * bits / 8;
        let mut out = Vec::new();
        out.extend_from_slice(b"RIFF");
        out.extend_from_slice(&(36 + data.len() as u32).to_le_bytes());
        out.extend_from_slice(b"WAVEfmt ");
        out.extend_from_slice(&16u32.to_le_bytes());
        out.extend_from_slice(&format.to_le_bytes());
        out.extend_from_slice(&channels.to_le_bytes());
        out.extend_from_slice(&rate.to_le_bytes());
        out.extend_from_slice(&(rate * u32::from(block)).to_le_bytes());
        out.extend_from_slice(&block.to_le_bytes());
        out.extend_from_slice(&bits.to_le_bytes());
        out.extend_from_slice(b"data");
        out.extend_from_slice(&data_len.to_le_bytes());
        out.extend_from_slice(data);
        out
    }

    #[test]
    fn scales_like_libsndfile() {
        let samples: [i16; 4] = [0, 1, -32768, 32767];
        let data: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
        let audio = decode(&wav(1, 1, 16000, 16, &data, 8), "a.wav").unwrap();
        assert_eq!(audio.sampling_rate, 16000);
        assert_eq!(
            audio.channels,
            vec![vec![0.0, 1.0 / 32768.0, -1.0, 32767.0 / 32768.0]]
        );
        let audio = decode(&wav(1, 1, 8000, 8, &[0, 128, 255], 3), "b.wav").unwrap();
        assert_eq!(audio.channels, vec![vec![-1.0, 0.0, 127.0 / 128.0]]);
    }

    #[test]
    fn stereo_needs_mix() {
        let data: Vec<u8> = [100i16, 300, -100, -301]
            .iter()
            .flat_map(|s| s.to_le_bytes())
            .collect();
        let audio = decode(&wav(1, 2, 16000, 16, &data, 8), "st.wav").unwrap();
        assert_eq!(audio.channels.len(), 2);
        let err = to_mono(&audio, false).unwrap_err().to_string();
        assert!(
            err.contains("st.wav has 2 channels; pass --mono to average them"),
            "{err}"
        );
        let mono = to_mono(&audio, true).unwrap();
        assert_eq!(mono, vec![200.0 / 32768.0, -200.5 / 32768.0]);
    }

    #[test]
    fn bad_inputs_are_errors() {
        let err = decode(&[], "e.wav").unwrap_err().to_string();
        assert!(err.contains("e.wav") && err.contains("empty"), "{err}");
        let err = decode(b"hello world, not audio at all", "t.wav")
            .unwrap_err()
            .to_string();
        assert!(err.contains("t.wav"), "{err}");
        // The header claims 2^32 - 1 bytes of data; 4 samples follow.
        let data = [0u8; 8];
        let mut huge = wav(1, 1, 16000, 16, &data, u32::MAX);
        huge[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        let err = decode(&huge, "h.wav").unwrap_err().to_string();
        assert!(err.contains("h.wav") && err.contains("truncated"), "{err}");
        // Cut in the header.
        let full = wav(1, 1, 16000, 16, &data, 8);
        for cut in [4, 12, 30, 43] {
            let err = decode(&full[..cut], "c.wav").unwrap_err().to_string();
            assert!(err.contains("c.wav"), "{cut}: {err}");
        }
    }
}
