//! The one error type of the library.
//!
//! Every variant carries the context a user needs (the file, the tensor, the field). Messages
//! reuse transformers' wording where users know it. There is deliberately no blanket
//! `From<std::io::Error>`: an I/O error without its path is useless.

use std::path::PathBuf;

/// Shorthand for `Result<T, autoclass::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong when loading or running a checkpoint.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },

    /// A JSON file could not be parsed.
    #[error("{path} is not a valid JSON file: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The parser's error.
        source: serde_json::Error,
    },

    /// The name is neither a local folder nor a repo found in the cache (transformers' wording).
    #[error(
        "{name} is not a local folder and is not a valid model identifier listed on \
         'https://huggingface.co/models'\nIf this is a private repository, make sure to pass a \
         token having permission to this repo either by logging in with `hf auth login` or by \
         passing `token=<your_token>`"
    )]
    NotFound {
        /// What the caller passed.
        name: String,
    },

    /// Offline (or no downloader) and the repo/file is not in the Hugging Face cache.
    #[error(
        "We couldn't connect to '{}' to load the files, and couldn't find \
         them in the cached files.\nCheck your internet connection or see how to run the library \
         in offline mode at 'https://huggingface.co/docs/transformers/installation#offline-mode'. \
         (looked for {filename} of {repo_id} at revision {revision} in {cache})",
        crate::hub::download::endpoint_from_env()
    )]
    NotCached {
        /// The Hub repo id.
        repo_id: String,
        /// The revision asked for.
        revision: String,
        /// The file asked for.
        filename: String,
        /// The cache folder searched.
        cache: PathBuf,
    },

    /// The Hub could not be reached (connection refused, DNS, timeout, TLS) or answered 5xx.
    #[error("could not reach {url}: {reason}")]
    Connection {
        /// The URL asked for.
        url: String,
        /// What went wrong.
        reason: String,
    },

    /// The server answered something the download protocol refuses (bad headers, too many
    /// redirects, a size or checksum mismatch, a path that escapes the cache).
    #[error("download from {url} failed: {reason}")]
    Download {
        /// The URL (or file) concerned.
        url: String,
        /// What is wrong.
        reason: String,
    },

    /// The repo is gated and the token (if any) has no access (transformers' wording).
    #[error(
        "You are trying to access a gated repo.\nMake sure to have access to it at \
         https://huggingface.co/{repo_id}.\n{message}"
    )]
    GatedRepo {
        /// The Hub repo id.
        repo_id: String,
        /// The Hub's explanation.
        message: String,
    },

    /// The branch, tag or commit does not exist on the Hub (transformers' wording).
    #[error(
        "{revision} is not a valid git identifier (branch name, tag name or commit id) that \
         exists for this model name. Check the model page at 'https://huggingface.co/{repo_id}' \
         for available revisions."
    )]
    RevisionNotFound {
        /// The Hub repo id.
        repo_id: String,
        /// The revision asked for.
        revision: String,
    },

    /// Any other HTTP error from the Hub (transformers' wording).
    #[error("There was a specific connection error when trying to load {repo_id}:\n{message}")]
    HubHttp {
        /// The Hub repo id.
        repo_id: String,
        /// The status and the Hub's explanation.
        message: String,
    },

    /// A required file is missing from a checkpoint (transformers' wording).
    #[error(
        "{name} does not appear to have a file named {filename}. Checkout \
         'https://huggingface.co/{name}/tree/{revision}' for available files."
    )]
    MissingFile {
        /// The checkpoint name or path.
        name: String,
        /// The missing file.
        filename: String,
        /// The revision (`main` by default).
        revision: String,
    },

    /// No weight file at all in a checkpoint.
    #[error(
        "Error no file named model.safetensors, or pytorch_model.bin, found in directory {name}."
    )]
    NoWeights {
        /// The checkpoint name or path.
        name: String,
    },

    /// The weights exist only in a format this build cannot read yet.
    #[error("{path}: {format} weights are not supported yet; convert the checkpoint to model.safetensors")]
    UnsupportedWeights {
        /// The file.
        path: PathBuf,
        /// A description of the format.
        format: String,
    },

    /// `config.json` has no `model_type`.
    #[error("Unrecognized model in {path}. Should have a `model_type` key in its config.json.")]
    MissingModelType {
        /// The config file.
        path: PathBuf,
    },

    /// `model_type` names an architecture we do not implement.
    #[error(
        "The checkpoint you are trying to load has model type `{found}` but autoclass does not \
         recognize this architecture. Supported model types: {}",
        known.join(", ")
    )]
    UnknownModelType {
        /// The model_type found in config.json.
        found: String,
        /// Every model type in the registry.
        known: Vec<&'static str>,
    },

    /// The architecture has no model for this task.
    #[error(
        "Unrecognized configuration class {config_class} for this kind of AutoModel: {auto_class}.\n\
         Model type `{model_type}` supports the tasks: {}",
        supported.join(", ")
    )]
    UnsupportedTask {
        /// The model type.
        model_type: String,
        /// The config class name (`BertConfig`).
        config_class: String,
        /// The Auto class (`AutoModelForSequenceClassification`).
        auto_class: String,
        /// The tasks this model type does support.
        supported: Vec<&'static str>,
    },

    /// A configuration value is invalid.
    #[error("invalid configuration{}: `{field}` {reason}", path.as_ref().map(|p| format!(" in {}", p.display())).unwrap_or_default())]
    InvalidConfig {
        /// The config file, when known.
        path: Option<PathBuf>,
        /// The field name.
        field: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A weight file is malformed.
    #[error("{path} is not a valid safetensors file: {reason}")]
    InvalidWeights {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },

    /// A PyTorch pickle names or builds something a state dict never contains (`os.system`,
    /// `builtins.eval`, …); it was refused without executing anything.
    #[error(
        "{path}: refusing to load this PyTorch checkpoint: Weights only load failed. Unsupported \
         global `{global}` is not allowed in a state dict (only tensors, storages, torch.Size and \
         OrderedDict are); nothing was executed. Convert trusted checkpoints to model.safetensors"
    )]
    UnsafePickle {
        /// The file.
        path: PathBuf,
        /// The refused global or construct (`os.system`, `INST builtins.eval`, `EXT1 …`).
        global: String,
    },

    /// A PyTorch checkpoint (`pytorch_model.bin`) is malformed.
    #[error("{path} is not a valid PyTorch checkpoint: {reason}")]
    InvalidTorchWeights {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },

    /// A Flax checkpoint (`flax_model.msgpack`) is malformed.
    #[error("{path} is not a valid Flax checkpoint: {reason}")]
    InvalidFlaxWeights {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },

    /// A TensorFlow checkpoint (`tf_model.h5`) is malformed or uses an HDF5 feature Keras
    /// never writes.
    #[error("{path} is not a valid TensorFlow (Keras HDF5) checkpoint: {reason}")]
    InvalidTfWeights {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },

    /// The checkpoint has only TensorFlow or Flax weights and the matching option was not set
    /// (transformers' wording).
    #[error(
        "{} but there is a file for {framework} weights. Use `{option}=True` to load this model \
         from those weights.",
        if *local {
            format!("Error no file named pytorch_model.bin found in directory {name}")
        } else {
            format!("{name} does not appear to have a file named pytorch_model.bin")
        }
    )]
    OtherFrameworkWeights {
        /// The checkpoint name or path.
        name: String,
        /// A local folder (transformers words the two cases differently).
        local: bool,
        /// `TensorFlow` or `Flax`.
        framework: &'static str,
        /// `from_tf` or `from_flax`.
        option: &'static str,
    },

    /// The model needs a tensor the checkpoint lacks and cannot initialise.
    #[error("tensor `{name}` is missing from the checkpoint")]
    MissingTensor {
        /// The tensor name.
        name: String,
    },

    /// A checkpoint tensor's shape differs from what the config implies.
    #[error(
        "size mismatch for {name}: copying a param with shape {found:?} from checkpoint, the shape \
         in current model is {expected:?}.{}",
        path.as_ref().map(|p| format!(" (in {})", p.display())).unwrap_or_default()
    )]
    ShapeMismatch {
        /// The tensor name (model side).
        name: String,
        /// The shape the model expects.
        expected: Vec<usize>,
        /// The shape in the checkpoint.
        found: Vec<usize>,
        /// The file the tensor came from.
        path: Option<PathBuf>,
    },

    /// A tokenizer file could not be used.
    #[error("tokenizer error{}: {reason}", path.as_ref().map(|p| format!(" in {}", p.display())).unwrap_or_default())]
    Tokenizer {
        /// The file, when known.
        path: Option<PathBuf>,
        /// What went wrong.
        reason: String,
    },

    /// The caller's input cannot be processed.
    #[error("invalid input: {reason}")]
    Input {
        /// What is wrong with it.
        reason: String,
    },

    /// A sequence is longer than the model can take.
    #[error(
        "sequence length {length} exceeds the model's maximum of {max} positions \
         (max_position_embeddings); pass truncation=true or a shorter text"
    )]
    SequenceTooLong {
        /// The sequence length given.
        length: usize,
        /// The maximum the model supports.
        max: usize,
    },

    /// A tensor operation failed.
    #[error("tensor operation failed: {0}")]
    Tensor(#[from] candle_core::Error),
}

impl Error {
    /// An [`Error::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// An [`Error::Download`] for `url`.
    pub fn download(url: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Download {
            url: url.into(),
            reason: reason.into(),
        }
    }

    /// An [`Error::Input`] with `reason`.
    pub fn input(reason: impl Into<String>) -> Self {
        Error::Input {
            reason: reason.into(),
        }
    }

    /// An [`Error::InvalidConfig`] for `field`.
    pub fn config(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::InvalidConfig {
            path: None,
            field: field.into(),
            reason: reason.into(),
        }
    }
}
