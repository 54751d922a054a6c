//! `autoclass bench`: times a model on synthetic inputs of a given shape.
//!
//! Not a test: a harness for the speed work, mirrored line for line by `benches/reference.py`
//! (transformers + PyTorch) so that `benches/compare.sh` can put the two side by side. Both
//! build the same deterministic inputs:
//!
//! * text: [`WORDS`] repeated (row `i` starts at word `i`), `L - 2` words per row so that a
//!   WordPiece tokenizer makes `L` tokens with `[CLS]`/`[SEP]`, truncated to `L`; with
//!   `--lengths random:A-B` row `i` gets a length drawn from [`SplitMix64`] seeded with
//!   [`SEED`], and the batch is padded to the longest;
//! * images: an `S`×`S` RGB gradient ([`synthetic_pixel`]), the same image `B` times;
//! * audio: `S` seconds of two sines at the extractor's rate ([`synthetic_sample`]).
//!
//! It prints the median, min and max of the preprocessed forward pass and of the whole
//! pipeline from raw input (tokenizer / image processor / feature extractor + forward), and as
//! its last line `throughput: X items/s` (batch size / median forward time).

use std::time::Instant;

use autoclass::candle_core::Device;
use autoclass::image::ImageProcessor;
use autoclass::{
    AudioOptions, Batch, Checkpoint, Config, ConfigOverrides, DTypeChoice, EncodeOptions,
    FeatureExtractor, LoadOptions, Model, Padding, Task, Tokenizer, Truncation,
};
use clap::Args;

use crate::Source;

/// The seed of the random text lengths (`--lengths random:A-B`); `benches/reference.py` uses
/// the same generator and seed.
pub const SEED: u64 = 0x5EED_0001;

/// Common English words, one WordPiece token each in BERT's uncased vocabulary.
pub const WORDS: &[&str] = &[
    "the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "while", "a", "small", "bird",
    "sings", "in", "green", "tree", "and", "people", "walk", "through", "old", "city", "park",
    "on", "warm", "summer", "evening", "with", "their", "friends", "after", "work",
];

/// Arguments of `autoclass bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(flatten)]
    source: Source,
    /// The task's head: sequence-classification, image-classification, backbone,
    /// audio-classification, ctc, base, ...
    #[arg(long)]
    task: String,
    /// Batch size (items per forward pass).
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Text: tokens per row, special tokens included (default 128).
    #[arg(long, conflicts_with_all = ["image_size", "audio_seconds", "lengths"])]
    seq_len: Option<usize>,
    /// Text: ragged rows with lengths drawn uniformly (fixed seed), e.g. `random:8-128`.
    #[arg(long, conflicts_with_all = ["image_size", "audio_seconds"])]
    lengths: Option<String>,
    /// Images: side of the square synthetic RGB image fed to the image processor (default 224).
    #[arg(long, conflicts_with = "audio_seconds")]
    image_size: Option<u32>,
    /// Audio: seconds of synthetic waveform fed to the feature extractor (default 10).
    #[arg(long)]
    audio_seconds: Option<f64>,
    /// Timed iterations (each of the forward pass and of the pipeline).
    #[arg(long, default_value_t = 10)]
    iters: usize,
    /// Untimed iterations first.
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Weight and compute dtype: f32, bf16, int8 (dynamic quantization of Linear layers);
    /// f16 also loads.
    #[arg(long, default_value = "f32")]
    dtype: String,
    #[command(flatten)]
    frameworks: crate::FrameworkArgs,
    /// Threads for the matrix products and every other parallel CPU kernel: sets
    /// RAYON_NUM_THREADS before any thread pool exists, which sizes rayon's global pool (used
    /// by candle's CPU ops) and the parallelism candle passes to gemm. Default: all cores.
    #[arg(long)]
    threads: Option<usize>,
    /// Padding-free batching (BERT, DistilBERT): run only the real tokens of a padded batch.
    #[arg(long)]
    padding_free: bool,
}

/// The raw input of the pipeline and how to preprocess it (tokenizer, image processor or
/// feature extractor, built once).
struct RawInput {
    kind: &'static str,
    preprocess: Box<dyn Fn() -> autoclass::Result<Batch>>,
}

impl RawInput {
    /// One line describing the inputs.
    fn describe(&self, batch: &Batch) -> String {
        let shapes: Vec<String> = batch
            .iter()
            .map(|(name, t)| format!("{name} {:?}", t.dims()))
            .collect();
        format!("inputs: {}; {}", self.kind, shapes.join(", "))
    }
}

/// SplitMix64, the generator behind `--lengths` (also in `benches/reference.py`).
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `lo..=hi` (modulo bias is irrelevant here).
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        let span = (hi - lo + 1) as u64;
        lo + (self.next_u64() % span) as usize
    }
}

/// `words` words of [`WORDS`], starting at word `start`.
pub fn synthetic_text(start: usize, words: usize) -> String {
    (0..words)
        .map(|i| WORDS[(start + i) % WORDS.len()])
        .collect::<Vec<_>>()
        .join(" ")
}

/// The RGB pixel at (x, y) of the synthetic `size`×`size` image: a gradient.
pub fn synthetic_pixel(x: u32, y: u32, size: u32) -> [u8; 3] {
    let s = u64::from(size.max(1));
    let (x, y) = (u64::from(x), u64::from(y));
    [
        (x * 255 / s) as u8,
        (y * 255 / s) as u8,
        ((x + y) * 127 / s) as u8,
    ]
}

/// Sample `i` of the synthetic waveform at `rate` Hz: two sines (220 and 330 Hz).
pub fn synthetic_sample(i: usize, rate: u32) -> f32 {
    let t = i as f64 / f64::from(rate);
    let v = 0.5 * (2.0 * std::f64::consts::PI * 220.0 * t).sin()
        + 0.25 * (2.0 * std::f64::consts::PI * 330.0 * t).sin();
    v as f32
}

/// The synthetic image as an uncompressed 24-bit BMP file, so the library's decoder builds it.
fn synthetic_bmp(size: u32) -> Vec<u8> {
    let row = (size as usize * 3).div_ceil(4) * 4;
    let data = row * size as usize;
    let file = 54 + data;
    let mut out = Vec::with_capacity(file);
    out.extend_from_slice(b"BM");
    out.extend_from_slice(&(file as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&54u32.to_le_bytes());
    out.extend_from_slice(&40u32.to_le_bytes());
    out.extend_from_slice(&(size as i32).to_le_bytes());
    // Negative height: rows top to bottom.
    out.extend_from_slice(&(-(size as i32)).to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&24u16.to_le_bytes());
    out.extend_from_slice(&[0; 4]); // no compression
    out.extend_from_slice(&(data as u32).to_le_bytes());
    out.extend_from_slice(&2835u32.to_le_bytes());
    out.extend_from_slice(&2835u32.to_le_bytes());
    out.extend_from_slice(&[0; 8]);
    for y in 0..size {
        let start = out.len();
        for x in 0..size {
            let [r, g, b] = synthetic_pixel(x, y, size);
            out.extend_from_slice(&[b, g, r]);
        }
        out.resize(start + row, 0);
    }
    out
}

/// Parses `random:A-B`.
fn parse_lengths(spec: &str) -> autoclass::Result<(usize, usize)> {
    let bad = || {
        autoclass::Error::input(format!(
            "--lengths `{spec}`: use random:MIN-MAX, e.g. random:8-128"
        ))
    };
    let range = spec.strip_prefix("random:").ok_or_else(bad)?;
    let (lo, hi) = range.split_once('-').ok_or_else(bad)?;
    let lo: usize = lo.trim().parse().map_err(|_| bad())?;
    let hi: usize = hi.trim().parse().map_err(|_| bad())?;
    if lo < 3 || hi < lo {
        return Err(bad());
    }
    Ok((lo, hi))
}

/// Median, min and max in milliseconds.
fn summary(times: &mut [f64]) -> (f64, f64, f64) {
    if times.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    times.sort_by(f64::total_cmp);
    let n = times.len();
    let median = if n % 2 == 1 {
        times[n / 2]
    } else {
        (times[n / 2 - 1] + times[n / 2]) / 2.0
    };
    (median, times[0], times[n - 1])
}

/// CPU time of every live thread of this process, in ms (`/proc/self/task/*/schedstat`;
/// `None` where that is unavailable). Unlike wall time, it does not grow when other processes
/// take the cores, so single-threaded runs can be compared on a busy machine.
fn process_cpu_ms() -> Option<f64> {
    let mut total_ns: u64 = 0;
    for entry in std::fs::read_dir("/proc/self/task").ok()? {
        let path = entry.ok()?.path().join("schedstat");
        let text = std::fs::read_to_string(path).ok()?;
        total_ns += text.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(total_ns as f64 / 1e6)
}

/// Runs `f` `warmup` times, then `iters` times timed; the wall times and CPU times in ms.
fn time<F: FnMut() -> autoclass::Result<()>>(
    warmup: usize,
    iters: usize,
    mut f: F,
) -> autoclass::Result<(Vec<f64>, Vec<f64>)> {
    for _ in 0..warmup {
        f()?;
    }
    let mut times = Vec::with_capacity(iters);
    let mut cpu = Vec::with_capacity(iters);
    for _ in 0..iters {
        let cpu_start = process_cpu_ms();
        let start = Instant::now();
        f()?;
        times.push(start.elapsed().as_secs_f64() * 1e3);
        if let (Some(a), Some(b)) = (cpu_start, process_cpu_ms()) {
            cpu.push(b - a);
        }
    }
    Ok((times, cpu))
}

/// `autoclass bench`.
pub fn bench(args: BenchArgs) -> autoclass::Result<()> {
    if let Some(threads) = args.threads {
        if threads == 0 {
            return Err(autoclass::Error::input("--threads must be at least 1"));
        }
        // Before any rayon pool exists: rayon's global pool and candle's gemm parallelism
        // both read it (single-threaded here, so setting the environment is sound).
        std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
    }
    if args.batch == 0 || args.iters == 0 {
        return Err(autoclass::Error::input(
            "--batch and --iters must be at least 1",
        ));
    }
    let task: Task = args.task.parse()?;
    let hub = args.source.hub();
    let options = LoadOptions {
        hub: hub.clone(),
        config: ConfigOverrides::default(),
        dtype: args.dtype.parse::<DTypeChoice>()?,
        device: None,
        from_tf: args.frameworks.from_tf,
        from_flax: args.frameworks.from_flax,
    };
    let checkpoint = Checkpoint::resolve(&args.source.model, &hub)?;
    let config = Config::from_checkpoint(&checkpoint, &options.config)?;
    autoclass::auto::check_task(&config, task)?;

    let raw = if matches!(task, Task::AudioClassification | Task::Ctc) {
        let extractor = FeatureExtractor::from_checkpoint(&checkpoint)?;
        let seconds = args.audio_seconds.unwrap_or(10.0);
        if !seconds.is_finite() || seconds <= 0.0 {
            return Err(autoclass::Error::input("--audio-seconds must be positive"));
        }
        let rate = extractor.sampling_rate();
        let n = (seconds * f64::from(rate)).round() as usize;
        let wave: Vec<f32> = (0..n).map(|i| synthetic_sample(i, rate)).collect();
        let waves = vec![wave; args.batch];
        RawInput {
            kind: "audio",
            preprocess: Box::new(move || {
                extractor.extract(&waves, Some(rate), &AudioOptions::default())
            }),
        }
    } else if matches!(task, Task::ImageClassification | Task::Backbone) {
        let processor = ImageProcessor::from_checkpoint(&checkpoint)?;
        let size = args.image_size.unwrap_or(224);
        if size == 0 {
            return Err(autoclass::Error::input("--image-size must be positive"));
        }
        let image = autoclass::image::decode::decode(&synthetic_bmp(size), "synthetic image")?;
        let images = vec![image; args.batch];
        RawInput {
            kind: "image",
            preprocess: Box::new(move || processor.preprocess(&images)),
        }
    } else {
        let tokenizer = Tokenizer::from_checkpoint(&checkpoint)?;
        let (texts, options): (Vec<String>, EncodeOptions) = if let Some(spec) = &args.lengths {
            let (lo, hi) = parse_lengths(spec)?;
            let mut rng = SplitMix64::new(SEED);
            let texts = (0..args.batch)
                .map(|i| synthetic_text(i, rng.range(lo, hi) - 2))
                .collect();
            let options = EncodeOptions {
                padding: Padding::Longest,
                truncation: Some(Truncation::LongestFirst),
                max_length: Some(hi),
                ..EncodeOptions::default()
            };
            (texts, options)
        } else {
            let len = args.seq_len.unwrap_or(128);
            if len < 3 {
                return Err(autoclass::Error::input("--seq-len must be at least 3"));
            }
            let texts = (0..args.batch)
                .map(|i| synthetic_text(i, len - 2))
                .collect();
            let options = EncodeOptions {
                padding: Padding::Longest,
                truncation: Some(Truncation::LongestFirst),
                max_length: Some(len),
                ..EncodeOptions::default()
            };
            (texts, options)
        };
        RawInput {
            kind: "text",
            preprocess: Box::new(move || {
                let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
                tokenizer
                    .encode_batch(&texts, None, &options)?
                    .to_batch(&Device::Cpu)
            }),
        }
    };

    let load_start = Instant::now();
    let model = Model::from_checkpoint(&checkpoint, config, task, &options)?;
    let load_ms = load_start.elapsed().as_secs_f64() * 1e3;
    let batch = (raw.preprocess)()?;

    println!(
        "model: {} task: {task} dtype: {} batch: {} threads: {}",
        args.source.model,
        args.dtype,
        args.batch,
        autoclass::candle_core::utils::get_num_threads()
    );
    println!("{}", raw.describe(&batch));
    println!("load: {load_ms:.1} ms");

    let options = autoclass::ForwardOptions {
        padding_free: args.padding_free,
        ..Default::default()
    };
    let (mut forward, mut forward_cpu) = time(args.warmup, args.iters, || {
        model.forward_with(&batch, &options).map(drop)
    })?;
    let (mut pipeline, _) = time(args.warmup.min(1), args.iters, || {
        let batch = (raw.preprocess)()?;
        model.forward_with(&batch, &options).map(drop)
    })?;
    let (f_med, f_min, f_max) = summary(&mut forward);
    let (c_med, c_min, c_max) = summary(&mut forward_cpu);
    let (p_med, p_min, p_max) = summary(&mut pipeline);
    let n = args.iters;
    println!("forward: median {f_med:.3} ms (min {f_min:.3}, max {f_max:.3}) over {n} iters");
    println!("pipeline: median {p_med:.3} ms (min {p_min:.3}, max {p_max:.3}) over {n} iters");
    println!("forward cpu: median {c_med:.3} ms (min {c_min:.3}, max {c_max:.3}) over {n} iters");
    println!(
        "throughput: {:.3} items/s",
        args.batch as f64 / (f_med / 1e3)
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_matches_reference() {
        // The first outputs for seed 0 (the published SplitMix64 test vector).
        let mut rng = SplitMix64::new(0);
        assert_eq!(rng.next_u64(), 0xE220_A839_7B1D_CDAF);
    }

    #[test]
    fn lengths_parse() {
        assert_eq!(parse_lengths("random:8-128").ok(), Some((8, 128)));
        assert!(parse_lengths("8-128").is_err());
        assert!(parse_lengths("random:9-8").is_err());
    }

    #[test]
    fn bmp_has_its_size() {
        assert_eq!(synthetic_bmp(3).len(), 54 + 12 * 3);
    }
}
