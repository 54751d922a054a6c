//! The `autoclass` command: tokenize, run and inspect Hugging Face checkpoints.
//!
//! A thin layer: parse arguments, call the library, print. Errors are one line on stderr and
//! a non-zero exit status. The command names and flags are a contract used by outside scripts:
//! extend them, never rename them.

mod bench;
mod document;
mod output;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;

use autoclass::candle_core::{DType, Device, Tensor};
use autoclass::image::ImageProcessor;
use autoclass::tokenization::ctc::Wav2Vec2CtcTokenizer;
use autoclass::{
    AudioOptions, AutoTokenizer, Checkpoint, Config, ConfigOverrides, DTypeChoice, EncodeOptions,
    Encoding, FeatureExtractor, ForwardOptions, HubOptions, LoadOptions, Model, Padding, Task,
    Tokenizer, Truncation,
};
use clap::{Args, Parser, Subcommand};

/// Load Hugging Face checkpoints and run them, like transformers' Auto classes.
#[derive(Parser, Debug)]
#[command(name = "autoclass", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Let the allocator use transparent huge pages (where the system's THP mode is `madvise`
    /// or `always`). For long runs: fewer TLB misses made forward passes steadier and up to 20%
    /// faster on a busy VM, but faulting in fresh 2 MiB pages made start-up 2-3x slower after
    /// another big process had exited. Off by default.
    #[arg(long, global = true)]
    huge_pages: bool,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Tokenize text and print the encoding as JSON with transformers' keys.
    Tokenize(TokenizeArgs),
    /// Tokenize, run the model for a task and print the result.
    Run(RunArgs),
    /// Show the resolved files, model type, config class, architectures and supported tasks.
    Inspect(InspectArgs),
    /// Run only the preprocessor (feature extractor for --audio, image processor for --image,
    /// tokenizer for --text) and print or save what it makes.
    Preprocess(PreprocessArgs),
    /// Time the forward pass and the whole pipeline on synthetic inputs of a given shape
    /// (a benchmark harness; see benches/README.md).
    Bench(bench::BenchArgs),
    /// Download a whole Hub repo (or the files matching --include) into the Hugging Face cache
    /// and print the snapshot folder, as `huggingface-cli download` / `snapshot_download` do.
    Download(DownloadArgs),
}

#[derive(Args, Debug)]
struct DownloadArgs {
    /// The Hub repo id (`org/name`).
    repo_id: String,
    /// Branch, tag or commit hash.
    #[arg(long, default_value = "main")]
    revision: String,
    /// Only files matching this pattern (fnmatch: `*.json`, `model-*.safetensors`); repeatable.
    #[arg(long = "include")]
    include: Vec<String>,
    /// Hub cache folder (default: HF_HUB_CACHE, HF_HOME/hub, ~/.cache/huggingface/hub).
    #[arg(long)]
    cache_dir: Option<PathBuf>,
}

/// Where the checkpoint comes from.
#[derive(Args, Debug, Clone)]
struct Source {
    /// A local folder or a Hub id (`org/name`): read from the Hugging Face cache, downloaded from
    /// HF_ENDPOINT when missing there (unless --offline).
    model: String,
    /// Branch, tag or commit hash (Hub ids only).
    #[arg(long)]
    revision: Option<String>,
    /// Folder inside the repo that holds the checkpoint.
    #[arg(long)]
    subfolder: Option<String>,
    /// Hub cache folder (default: HF_HUB_CACHE, HF_HOME/hub, ~/.cache/huggingface/hub).
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Never touch the network: use only local folders and the Hub cache (as HF_HUB_OFFLINE=1).
    #[arg(long)]
    offline: bool,
}

impl Source {
    /// Downloads what the cache lacks from HF_ENDPOINT, unless --offline or HF_HUB_OFFLINE.
    fn hub(&self) -> HubOptions {
        let base = if self.offline {
            HubOptions::default()
        } else {
            HubOptions::online()
        };
        HubOptions {
            revision: self.revision.clone(),
            subfolder: self.subfolder.clone(),
            cache_dir: self.cache_dir.clone(),
            local_files_only: self.offline,
            ..base
        }
    }
}

/// Audio inputs shared by `run` and `preprocess`.
#[derive(Args, Debug, Clone)]
struct AudioArgs {
    /// Audio file (WAV, FLAC, MP3); repeat for a batch.
    #[arg(long = "audio")]
    audio: Vec<PathBuf>,
    /// Average the channels of multi-channel audio (otherwise it is refused).
    #[arg(long)]
    mono: bool,
    /// Resample audio whose rate differs from the feature extractor's (otherwise it is refused).
    #[arg(long)]
    resample: bool,
}

impl AudioArgs {
    /// Runs the checkpoint's feature extractor on the files (padding like `text`).
    fn extract(
        &self,
        checkpoint: &Checkpoint,
        padding: Option<&str>,
    ) -> autoclass::Result<(String, autoclass::Batch)> {
        let extractor = FeatureExtractor::from_checkpoint(checkpoint)?;
        let padding = match padding {
            Some(p) => Some(p.parse::<Padding>()?),
            None if self.audio.len() > 1 => Some(Padding::Longest),
            None => None,
        };
        let options = AudioOptions {
            padding,
            ..AudioOptions::default()
        };
        let batch = extractor.extract_paths(&self.audio, self.mono, self.resample, &options)?;
        Ok((extractor.class_name().to_string(), batch))
    }
}

/// The text inputs and tokenizer options shared by `tokenize` and `run`.
#[derive(Args, Debug, Clone)]
struct TextArgs {
    /// Text to encode; repeat for a batch.
    #[arg(long = "text")]
    texts: Vec<String>,
    /// Second sequence of a pair; repeat once per --text.
    #[arg(long = "text-pair")]
    text_pairs: Vec<String>,
    /// Pad the batch: `longest` (the default when the flag has no value) or `max_length`.
    #[arg(long, num_args = 0..=1, default_missing_value = "longest")]
    padding: Option<String>,
    /// Truncate: `longest_first` (the default when the flag has no value), `only_first`, `only_second`.
    #[arg(long, num_args = 0..=1, default_missing_value = "longest_first")]
    truncation: Option<String>,
    /// Maximum length for truncation and `max_length` padding.
    #[arg(long)]
    max_length: Option<usize>,
    /// Also return character offsets (`offset_mapping`).
    #[arg(long)]
    return_offsets_mapping: bool,
}

impl TextArgs {
    fn options(&self) -> autoclass::Result<EncodeOptions> {
        Ok(EncodeOptions {
            padding: match &self.padding {
                Some(p) => p.parse()?,
                None => Padding::None,
            },
            truncation: self
                .truncation
                .as_deref()
                .map(str::parse::<Truncation>)
                .transpose()?,
            max_length: self.max_length,
            return_offsets_mapping: self.return_offsets_mapping,
            ..EncodeOptions::default()
        })
    }

    fn encode(&self, tokenizer: &Tokenizer) -> autoclass::Result<Encoding> {
        if self.texts.is_empty() {
            return Err(autoclass::Error::input("give at least one --text"));
        }
        if let Some(i) = self
            .texts
            .iter()
            .chain(&self.text_pairs)
            .position(|t| t.trim().is_empty())
        {
            let which = if i < self.texts.len() {
                "--text"
            } else {
                "--text-pair"
            };
            return Err(autoclass::Error::input(format!(
                "{which} is empty; give some text to encode"
            )));
        }
        if !self.text_pairs.is_empty() && self.text_pairs.len() != self.texts.len() {
            return Err(autoclass::Error::input(format!(
                "got {} --text but {} --text-pair; give one pair per text",
                self.texts.len(),
                self.text_pairs.len()
            )));
        }
        let options = self.options()?;
        let texts: Vec<&str> = self.texts.iter().map(String::as_str).collect();
        let pairs: Vec<&str> = self.text_pairs.iter().map(String::as_str).collect();
        let pairs = (!pairs.is_empty()).then_some(&pairs[..]);
        let mut encoding = tokenizer.encode_batch(&texts, pairs, &options)?;
        encoding.single = texts.len() == 1;
        Ok(encoding)
    }
}

#[derive(Args, Debug)]
struct TokenizeArgs {
    #[command(flatten)]
    source: Source,
    #[command(flatten)]
    text: TextArgs,
}

/// transformers 4.x's `from_tf` / `from_flax`.
#[derive(Args, Debug, Clone, Copy, Default)]
pub(crate) struct FrameworkArgs {
    /// Load TensorFlow weights (tf_model.h5) even when PyTorch weights exist (transformers'
    /// `from_tf=True`).
    #[arg(long)]
    pub(crate) from_tf: bool,
    /// Load Flax weights (flax_model.msgpack) even when PyTorch weights exist (transformers'
    /// `from_flax=True`).
    #[arg(long)]
    pub(crate) from_flax: bool,
}

impl FrameworkArgs {
    pub(crate) fn choice(self) -> autoclass::weights::FrameworkChoice {
        autoclass::weights::FrameworkChoice {
            from_tf: self.from_tf,
            from_flax: self.from_flax,
        }
    }
}

#[derive(Args, Debug)]
struct RunArgs {
    #[command(flatten)]
    source: Source,
    /// base, sequence-classification, token-classification, masked-lm, question-answering,
    /// image-classification, backbone, audio-classification or ctc.
    #[arg(long)]
    task: String,
    #[command(flatten)]
    text: TextArgs,
    /// Image file (PNG, JPEG, WebP, BMP, GIF); repeat for a batch.
    #[arg(long = "image")]
    images: Vec<PathBuf>,
    #[command(flatten)]
    audio: AudioArgs,
    /// Words and boxes of the --image document instead of OCR: `{"words": [...], "boxes":
    /// [[x0, y0, x1, y1], ...], "word_labels": [...]}` (LayoutLM checkpoints).
    #[arg(long)]
    words_file: Option<PathBuf>,
    /// Backbone stages by index, e.g. `1,2` (`out_indices`).
    #[arg(long, value_delimiter = ',', allow_negative_numbers = true)]
    out_indices: Vec<i64>,
    /// Backbone stages by name, e.g. `stage2,stage4` (`out_features`).
    #[arg(long, value_delimiter = ',')]
    out_features: Vec<String>,
    /// Weight dtype: f32 (default), f16, bf16 or auto (the config's dtype).
    #[arg(long, default_value = "f32")]
    dtype: String,
    #[command(flatten)]
    frameworks: FrameworkArgs,
    /// Override the number of labels of a classification head.
    #[arg(long)]
    num_labels: Option<usize>,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
    /// Write every input tensor and every output tensor to this .safetensors file.
    #[arg(long)]
    save: Option<PathBuf>,
    /// Also return (and save) every layer's hidden states.
    #[arg(long)]
    output_hidden_states: bool,
    /// Also return (and save) every layer's attention probabilities.
    #[arg(long)]
    output_attentions: bool,
    /// Padding-free batching (BERT, DistilBERT): run only the real tokens of a padded batch;
    /// outputs at padded positions are zeros.
    #[arg(long)]
    padding_free: bool,
}

#[derive(Args, Debug)]
struct PreprocessArgs {
    #[command(flatten)]
    source: Source,
    #[command(flatten)]
    text: TextArgs,
    /// Image file; repeat for a batch.
    #[arg(long = "image")]
    images: Vec<PathBuf>,
    #[command(flatten)]
    audio: AudioArgs,
    /// Words and boxes of the --image document instead of OCR (LayoutLM processors).
    #[arg(long)]
    words_file: Option<PathBuf>,
    /// Write every tensor the preprocessor made to this .safetensors file.
    #[arg(long)]
    save: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct InspectArgs {
    #[command(flatten)]
    source: Source,
    #[command(flatten)]
    frameworks: FrameworkArgs,
    /// Print as JSON.
    #[arg(long)]
    json: bool,
}

/// The process allocator. A forward pass frees and allocates activations of many MB per layer;
/// glibc's malloc returns such blocks to the kernel and takes page faults (and zeroing) to get
/// them back, mimalloc keeps them for reuse. Measured with `benches/compare.sh` (issue 7):
/// +8–25% throughput on BERT, ViT, Swin and wav2vec2, peak RSS of W1 325 → 400 MB. mimalloc
/// asks for transparent huge pages on its memory; [`keep_small_pages`] turns them off unless
/// `--huge-pages` is given. Programs using the library choose their own allocator the same way.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc.h's `mi_option_e` (v2 and v3 alike; the bindings of
/// libmimalloc-sys 0.1 do not name it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Tells mimalloc never to give freed memory back to the kernel (`purge_delay = -1`, what the
/// environment variable `MIMALLOC_PURGE_DELAY=-1` does). With its default (10 ms) the
/// activations of one layer were purged before the next layer's reused them, and the page
/// faults and page zeroing that followed cost Swin-tiny (W5) 15% of its forward time. Peak
/// memory is unchanged: what is kept is reused.
#[allow(unsafe_code)]
fn keep_freed_memory() {
    // SAFETY: `mi_option_set` takes two integers and only stores the value in mimalloc's
    // option table; any option number and value are accepted, and nothing else is touched.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
}

/// Turns transparent huge pages off for this process (`prctl(PR_SET_THP_DISABLE)`) when the
/// system grants them only on request (THP mode `madvise`), so that only mimalloc's request
/// would have brought them: the process then runs on 4 KiB pages, as before mimalloc asked.
/// Where the mode is `always` the system's choice stands, as for any program.
#[allow(unsafe_code)]
fn keep_small_pages() {
    #[cfg(target_os = "linux")]
    {
        let mode = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled");
        if mode.is_ok_and(|m| m.contains("[madvise]")) {
            // SAFETY: PR_SET_THP_DISABLE takes integer arguments and only sets a flag on this
            // process's memory descriptor; no memory is read or written through them.
            unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
        }
    }
}

fn main() -> ExitCode {
    keep_freed_memory();
    autoclass::log_warnings_to_stderr();
    // Errors are one line; a failure inside a dependency must not print a panic trace either.
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        eprintln!("error: internal failure: {}", msg.replace('\n', " "));
    }));
    let cli = Cli::parse();
    if !cli.huge_pages {
        keep_small_pages();
    }
    let result = match cli.command {
        Command::Tokenize(args) => tokenize(args),
        Command::Run(args) => run(args),
        Command::Inspect(args) => inspect(args),
        Command::Preprocess(args) => preprocess(args),
        Command::Bench(args) => bench::bench(args),
        Command::Download(args) => download(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let msg = e.to_string().replace('\n', " ");
            eprintln!("error: {msg}");
            ExitCode::FAILURE
        }
    }
}

fn download(args: DownloadArgs) -> autoclass::Result<()> {
    let cache = args
        .cache_dir
        .clone()
        .unwrap_or_else(autoclass::hub::default_cache_dir);
    // Offline (HF_HUB_OFFLINE) or unreachable: the cached snapshot, as snapshot_download does.
    let folder = autoclass::HttpDownloader::from_env().snapshot(
        &cache,
        &args.repo_id,
        &args.revision,
        &args.include,
    )?;
    println!("{}", folder.display());
    Ok(())
}

fn tokenize(args: TokenizeArgs) -> autoclass::Result<()> {
    let tokenizer = AutoTokenizer::from_pretrained_with(&args.source.model, &args.source.hub())?;
    let encoding = args.text.encode(&tokenizer)?;
    println!("{}", encoding.to_json());
    Ok(())
}

fn run(args: RunArgs) -> autoclass::Result<()> {
    let task: Task = args.task.parse()?;
    let hub = args.source.hub();
    let mut config_overrides = ConfigOverrides {
        num_labels: args.num_labels,
        ..ConfigOverrides::default()
    };
    if !args.out_indices.is_empty() {
        config_overrides
            .values
            .insert("out_indices".into(), serde_json::json!(args.out_indices));
    }
    if !args.out_features.is_empty() {
        config_overrides
            .values
            .insert("out_features".into(), serde_json::json!(args.out_features));
    }
    let options = LoadOptions {
        hub: hub.clone(),
        config: config_overrides,
        dtype: args.dtype.parse::<DTypeChoice>()?,
        device: None,
        from_tf: args.frameworks.from_tf,
        from_flax: args.frameworks.from_flax,
    };
    let checkpoint = Checkpoint::resolve(&args.source.model, &hub)?;
    let config = Config::from_checkpoint(&checkpoint, &options.config)?;
    autoclass::auto::check_task(&config, task)?;
    let (inputs, batch) = if matches!(task, Task::AudioClassification | Task::Ctc) {
        if args.audio.audio.is_empty() {
            return Err(autoclass::Error::input(format!(
                "--task {task} needs at least one --audio"
            )));
        }
        let (_, batch) = args
            .audio
            .extract(&checkpoint, args.text.padding.as_deref())?;
        let ctc = if task == Task::Ctc {
            Some(Box::new(Wav2Vec2CtcTokenizer::from_checkpoint(
                &checkpoint,
            )?))
        } else {
            None
        };
        (
            output::Inputs::Audio {
                paths: args.audio.audio.clone(),
                ctc,
            },
            batch,
        )
    } else if !args.images.is_empty() && !matches!(task, Task::ImageClassification | Task::Backbone)
    {
        // A document task: words (OCR or --words-file), boxes and the page image.
        let doc = document::process(&checkpoint, &args.images, args.words_file.as_deref())?;
        (
            output::Inputs::Document {
                words: doc.words,
                first_token_of: doc.first_token_of,
            },
            doc.batch,
        )
    } else if matches!(task, Task::ImageClassification | Task::Backbone) {
        if args.images.is_empty() {
            return Err(autoclass::Error::input(format!(
                "--task {task} needs at least one --image"
            )));
        }
        let processor = ImageProcessor::from_checkpoint(&checkpoint)?;
        let batch = processor.preprocess_paths(&args.images)?;
        (output::Inputs::Images(args.images.clone()), batch)
    } else {
        let tokenizer = Tokenizer::from_checkpoint(&checkpoint)?;
        let mut text = args.text.clone();
        if text.padding.is_none() && text.texts.len() > 1 {
            // A model cannot run a ragged batch: pad to the longest, as transformers' pipelines do.
            text.padding = Some("longest".into());
        }
        let encoding = text.encode(&tokenizer)?;
        let batch = encoding.to_batch(&Device::Cpu)?;
        (
            output::Inputs::Text {
                tokenizer: Box::new(tokenizer),
                encoding,
            },
            batch,
        )
    };
    let model = Model::from_checkpoint(&checkpoint, config, task, &options)?;
    let forward = ForwardOptions {
        output_hidden_states: args.output_hidden_states,
        output_attentions: args.output_attentions,
        padding_free: args.padding_free,
    };
    let outputs = model.forward_with(&batch, &forward)?;
    if let Some(path) = &args.save {
        save(path, &batch, Some(&outputs))?;
    }
    let report = output::report(&model, &inputs, &outputs)?;
    emit(&report, args.json, output::human);
    Ok(())
}

/// Writes inputs and outputs under transformers' names: integers as i64, floats as f32.
fn save(
    path: &PathBuf,
    batch: &autoclass::Batch,
    outputs: Option<&autoclass::ModelOutput>,
) -> autoclass::Result<()> {
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    for (name, t) in batch.iter() {
        let dtype = if t.dtype().is_int() {
            DType::I64
        } else {
            DType::F32
        };
        tensors.insert(
            name.to_string(),
            t.to_dtype(dtype)?.to_device(&Device::Cpu)?.contiguous()?,
        );
    }
    for (name, t) in outputs.map(|o| o.named_tensors()).unwrap_or_default() {
        tensors.insert(
            name,
            t.to_dtype(DType::F32)?
                .to_device(&Device::Cpu)?
                .contiguous()?,
        );
    }
    autoclass::candle_core::safetensors::save(&tensors, path).map_err(|e| match e {
        autoclass::candle_core::Error::Io(source) => autoclass::Error::io(path, source),
        other => autoclass::Error::Tensor(other),
    })
}

fn inspect(args: InspectArgs) -> autoclass::Result<()> {
    let checkpoint = Checkpoint::resolve(&args.source.model, &args.source.hub())?;
    let config = Config::from_checkpoint(&checkpoint, &ConfigOverrides::default())?;
    let info = output::inspect(&checkpoint, &config, args.frameworks.choice())?;
    emit(&info, args.json, output::human_inspect);
    Ok(())
}

/// Prints `value` as pretty JSON, or its human rendering.
fn emit(value: &serde_json::Value, json: bool, human: fn(&serde_json::Value) -> String) {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(value).unwrap_or_default()
        );
    } else {
        print!("{}", human(value));
    }
}

/// Dispatches like AutoProcessor: audio goes through the feature extractor, images through the
/// image processor, text through the tokenizer.
fn preprocess(args: PreprocessArgs) -> autoclass::Result<()> {
    let checkpoint = Checkpoint::resolve(&args.source.model, &args.source.hub())?;
    let (batch, processor) = if !args.audio.audio.is_empty() {
        let (class, batch) = args
            .audio
            .extract(&checkpoint, args.text.padding.as_deref())?;
        (batch, class)
    } else if !args.images.is_empty() && has_document_processor(&checkpoint) {
        let doc = document::process(&checkpoint, &args.images, args.words_file.as_deref())?;
        let class = autoclass::Processor::from_checkpoint(&checkpoint)?
            .class_name()
            .to_string();
        (doc.batch, class)
    } else if !args.images.is_empty() {
        let processor = ImageProcessor::from_checkpoint(&checkpoint)?;
        (
            processor.preprocess_paths(&args.images)?,
            processor.class_name().to_string(),
        )
    } else if !args.text.texts.is_empty() {
        let tokenizer = Tokenizer::from_checkpoint(&checkpoint)?;
        let encoding = args.text.encode(&tokenizer)?;
        (
            encoding.to_batch(&Device::Cpu)?,
            tokenizer.class_name().to_string(),
        )
    } else {
        return Err(autoclass::Error::input(
            "give at least one --image or --text",
        ));
    };
    if let Some(path) = &args.save {
        save(path, &batch, None)?;
    }
    let tensors: serde_json::Map<String, serde_json::Value> = batch
        .iter()
        .map(|(name, t)| {
            (
                name.to_string(),
                serde_json::json!({"shape": t.dims(), "dtype": format!("{:?}", t.dtype())}),
            )
        })
        .collect();
    println!(
        "{}",
        serde_json::json!({"processor": processor, "tensors": tensors})
    );
    Ok(())
}

/// Whether the checkpoint's AutoProcessor is a document processor (LayoutLMv2/v3).
fn has_document_processor(checkpoint: &Checkpoint) -> bool {
    matches!(
        autoclass::Processor::from_checkpoint(checkpoint),
        Ok(autoclass::Processor::LayoutLMv2(_) | autoclass::Processor::LayoutLMv3(_))
    )
}
