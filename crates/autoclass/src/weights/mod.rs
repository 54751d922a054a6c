//! Weights: finding the weight files of a checkpoint, reading them, mapping checkpoint names to
//! model names the way transformers does (`base_model_prefix`, legacy `gamma`/`beta`), and the
//! load report (missing, unexpected, mismatched).

pub mod flax;
pub mod hdf5;
pub mod memory;
pub mod msgpack;
pub mod pickle;
pub mod safetensors;
pub mod synthetic;
pub mod tf;
pub mod torch;
pub mod zip;

use std::collections::{BTreeSet, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Tensor};

pub use self::flax::FLAX_WEIGHTS_NAME;
pub use self::memory::MemoryStore;
pub use self::safetensors::{SafetensorsStore, StoredTensor};
pub use self::tf::TF2_WEIGHTS_NAME;
pub use self::torch::TorchStore;
use crate::error::{Error, Result};
use crate::hub::Checkpoint;

/// The file names transformers looks for, in its order (`modeling_utils._get_resolved_checkpoint_files`).
pub const SAFE_WEIGHTS_NAME: &str = "model.safetensors";
/// Sharded safetensors index.
pub const SAFE_WEIGHTS_INDEX_NAME: &str = "model.safetensors.index.json";
/// PyTorch pickle weights.
pub const WEIGHTS_NAME: &str = "pytorch_model.bin";
/// Sharded PyTorch pickle weights index.
pub const WEIGHTS_INDEX_NAME: &str = "pytorch_model.bin.index.json";

/// Which framework's weights `from_pretrained` may read (transformers 4.x's `from_tf` /
/// `from_flax`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FrameworkChoice {
    /// Prefer `tf_model.h5` over every PyTorch file (`from_tf=True`).
    pub from_tf: bool,
    /// Prefer `flax_model.msgpack` over every PyTorch file (`from_flax=True`).
    pub from_flax: bool,
}

/// Opens the weights of a checkpoint in transformers' order: `model.safetensors`, the sharded
/// safetensors index, then `pytorch_model.bin` and its sharded index (read without executing
/// the pickle, see [`torch`]).
pub fn open_checkpoint_weights(checkpoint: &Checkpoint) -> Result<WeightStore> {
    open_checkpoint_weights_with(checkpoint, FrameworkChoice::default())
}

/// Opens the weights of a checkpoint as transformers 4.x does with `from_tf` / `from_flax`:
/// `tf_model.h5` first when `from_tf`, then `flax_model.msgpack` when `from_flax`, then the
/// PyTorch files in their order. A checkpoint with only TensorFlow or Flax weights and neither
/// option set gives transformers' "Use `from_tf=True`" error.
pub fn open_checkpoint_weights_with(
    checkpoint: &Checkpoint,
    choice: FrameworkChoice,
) -> Result<WeightStore> {
    let (file, path) = match find_weight_file_with(checkpoint, choice)? {
        Some(found) => found,
        None => {
            let name = checkpoint.name().to_string();
            let local = checkpoint.is_local();
            return Err(if checkpoint.get(TF2_WEIGHTS_NAME)?.is_some() {
                Error::OtherFrameworkWeights {
                    name,
                    local,
                    framework: "TensorFlow",
                    option: "from_tf",
                }
            } else if checkpoint.get(FLAX_WEIGHTS_NAME)?.is_some() {
                Error::OtherFrameworkWeights {
                    name,
                    local,
                    framework: "Flax",
                    option: "from_flax",
                }
            } else {
                Error::NoWeights { name }
            });
        }
    };
    match file {
        TF2_WEIGHTS_NAME => tf::open(&path).map(WeightStore::Tf),
        FLAX_WEIGHTS_NAME => flax::open(&path).map(WeightStore::Flax),
        SAFE_WEIGHTS_NAME => SafetensorsStore::open(&path).map(WeightStore::from),
        SAFE_WEIGHTS_INDEX_NAME => {
            SafetensorsStore::open_index(&path, |shard| checkpoint.require(shard))
                .map(WeightStore::from)
        }
        WEIGHTS_NAME => TorchStore::open(&path).map(WeightStore::from),
        _ => {
            TorchStore::open_index(&path, |shard| checkpoint.require(shard)).map(WeightStore::from)
        }
    }
}

/// The weight file transformers would pick, in its order (`model.safetensors`,
/// `model.safetensors.index.json`, `pytorch_model.bin`, `pytorch_model.bin.index.json`): the
/// name and its path, or `None` when the checkpoint has none.
pub fn find_weight_file(
    checkpoint: &Checkpoint,
) -> Result<Option<(&'static str, std::path::PathBuf)>> {
    find_weight_file_with(checkpoint, FrameworkChoice::default())
}

/// The weight file transformers 4.x would pick with `from_tf` / `from_flax`: `tf_model.h5`
/// (with `from_tf`), `flax_model.msgpack` (with `from_flax`), then the PyTorch files as
/// [`find_weight_file`]. `None` when none of them is there.
pub fn find_weight_file_with(
    checkpoint: &Checkpoint,
    choice: FrameworkChoice,
) -> Result<Option<(&'static str, std::path::PathBuf)>> {
    let mut order: Vec<&'static str> = Vec::with_capacity(6);
    if choice.from_tf {
        order.push(TF2_WEIGHTS_NAME);
    }
    if choice.from_flax {
        order.push(FLAX_WEIGHTS_NAME);
    }
    order.extend([
        SAFE_WEIGHTS_NAME,
        SAFE_WEIGHTS_INDEX_NAME,
        WEIGHTS_NAME,
        WEIGHTS_INDEX_NAME,
    ]);
    for name in order {
        if let Some(path) = checkpoint.get(name)? {
            return Ok(Some((name, path)));
        }
    }
    Ok(None)
}

/// Opens a sharded checkpoint from its `*.index.json` (safetensors or PyTorch): reads the
/// `weight_map`, refuses shard names that leave the folder, opens the shards (sorted, each once)
/// with `open_many` after resolving them with `resolve`, and checks that every tensor is in the
/// shard the index names. `invalid` builds the format's error for the index file; `path_of`
/// says which file of the opened store holds a tensor.
pub(crate) fn open_sharded<S>(
    index_path: &Path,
    mut resolve: impl FnMut(&str) -> Result<std::path::PathBuf>,
    open_many: impl FnOnce(&[std::path::PathBuf]) -> Result<S>,
    path_of: impl Fn(&S, &str) -> Option<std::path::PathBuf>,
    invalid: impl Fn(&Path, String) -> Error,
) -> Result<S> {
    let raw = crate::config::read_json_object(index_path)?;
    let weight_map = raw
        .get("weight_map")
        .and_then(|v| v.as_object())
        .ok_or_else(|| invalid(index_path, "the index has no `weight_map` object".into()))?;
    let mut shards: Vec<String> = Vec::new();
    let mut expected: Vec<(&str, &str)> = Vec::new();
    for (tensor, shard) in weight_map {
        let shard = shard.as_str().ok_or_else(|| {
            invalid(
                index_path,
                format!("weight_map entry for `{tensor}` is not a file name"),
            )
        })?;
        if shard.contains("..") || shard.starts_with('/') || shard.contains('\\') {
            return Err(invalid(
                index_path,
                format!("shard name {shard:?} escapes the checkpoint folder"),
            ));
        }
        if !shards.iter().any(|s| s == shard) {
            shards.push(shard.to_string());
        }
        expected.push((tensor, shard));
    }
    shards.sort();
    let paths = shards
        .iter()
        .map(|s| resolve(s))
        .collect::<Result<Vec<_>>>()?;
    let store = open_many(&paths)?;
    for (tensor, shard) in expected {
        let ok = path_of(&store, tensor).is_some_and(|p| {
            p.file_name().and_then(|n| n.to_str())
                == Path::new(shard).file_name().and_then(|n| n.to_str())
        });
        if !ok {
            return Err(invalid(
                index_path,
                format!("the index says `{tensor}` is in {shard}, but it is not there"),
            ));
        }
    }
    Ok(store)
}

/// The tensors of a checkpoint, whichever format they came in.
pub enum WeightStore {
    /// `model.safetensors` (single or sharded), memory-mapped.
    Safetensors(SafetensorsStore),
    /// `pytorch_model.bin` (single or sharded), read without executing the pickle.
    Torch(TorchStore),
    /// `flax_model.msgpack`, decoded into PyTorch names and layout.
    Flax(MemoryStore),
    /// `tf_model.h5`, decoded into PyTorch names and layout.
    Tf(MemoryStore),
}

impl From<SafetensorsStore> for WeightStore {
    fn from(store: SafetensorsStore) -> Self {
        WeightStore::Safetensors(store)
    }
}

impl From<TorchStore> for WeightStore {
    fn from(store: TorchStore) -> Self {
        WeightStore::Torch(store)
    }
}

impl WeightStore {
    /// Every tensor name, sorted.
    pub fn names(&self) -> Box<dyn Iterator<Item = &str> + '_> {
        match self {
            WeightStore::Safetensors(s) => Box::new(s.names()),
            WeightStore::Torch(s) => Box::new(s.names()),
            WeightStore::Flax(s) | WeightStore::Tf(s) => Box::new(s.names()),
        }
    }

    /// Whether the checkpoint holds `name`.
    pub fn contains(&self, name: &str) -> bool {
        match self {
            WeightStore::Safetensors(s) => s.contains(name),
            WeightStore::Torch(s) => s.contains(name),
            WeightStore::Flax(s) | WeightStore::Tf(s) => s.contains(name),
        }
    }

    /// The stored dtype and shape of `name`.
    pub fn info(&self, name: &str) -> Option<StoredTensor> {
        match self {
            WeightStore::Safetensors(s) => s.info(name),
            WeightStore::Torch(s) => s.info(name),
            WeightStore::Flax(s) | WeightStore::Tf(s) => s.info(name),
        }
    }

    /// The file `name` is stored in.
    pub fn path_of(&self, name: &str) -> Option<&Path> {
        match self {
            WeightStore::Safetensors(s) => s.path_of(name),
            WeightStore::Torch(s) => s.path_of(name),
            WeightStore::Flax(s) | WeightStore::Tf(s) => s.path_of(name),
        }
    }

    /// The dtype of the first floating-point tensor (transformers' `dtype="auto"` fallback).
    pub fn first_float_dtype(&self) -> Option<DType> {
        match self {
            WeightStore::Safetensors(s) => s.first_float_dtype(),
            WeightStore::Torch(s) => s.first_float_dtype(),
            WeightStore::Flax(s) | WeightStore::Tf(s) => s.first_float_dtype(),
        }
    }

    /// Whether a tensor whose element count matches may be reshaped to the model's shape
    /// (TensorFlow weights, as transformers' `apply_transpose(..., match_shape)` does).
    pub fn reshapes_to_model(&self) -> bool {
        matches!(self, WeightStore::Tf(s) if s.reshapes_to_model())
    }

    /// The format's name, for reports (`safetensors`, `PyTorch`, `Flax`, `TensorFlow`).
    pub fn format(&self) -> &'static str {
        match self {
            WeightStore::Safetensors(_) => "safetensors",
            WeightStore::Torch(_) => "PyTorch",
            WeightStore::Flax(_) => "Flax",
            WeightStore::Tf(_) => "TensorFlow",
        }
    }

    /// Loads `name` as a tensor of `dtype` on `device`.
    pub fn load(&self, name: &str, dtype: DType, device: &Device) -> Result<Tensor> {
        match self {
            WeightStore::Safetensors(s) => s.load(name, dtype, device),
            WeightStore::Torch(s) => s.load(name, dtype, device),
            WeightStore::Flax(s) | WeightStore::Tf(s) => s.load(name, dtype, device),
        }
    }
}

/// Which dtype to load floating-point weights in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DTypeChoice {
    /// float32 (the default here, as in transformers 4).
    #[default]
    F32,
    /// float16.
    F16,
    /// bfloat16. On CPUs with AMX, Linear layers run in bf16 on AMX (f32 accumulation) and the
    /// other layers in f32, as PyTorch's CPU autocast does; the outputs are bf16.
    BF16,
    /// Dynamic int8 quantization of Linear layers (AVX-512 VNNI CPUs; elsewhere f32): weights
    /// int8 per output channel, activations u8 per row at run time, everything else f32.
    Int8,
    /// The config's `dtype`/`torch_dtype`, else the checkpoint's first float tensor (transformers 5's default).
    Auto,
}

impl std::str::FromStr for DTypeChoice {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "f32" | "float32" => Ok(DTypeChoice::F32),
            "f16" | "float16" | "half" => Ok(DTypeChoice::F16),
            "bf16" | "bfloat16" => Ok(DTypeChoice::BF16),
            "int8" | "qint8" => Ok(DTypeChoice::Int8),
            "auto" => Ok(DTypeChoice::Auto),
            other => Err(Error::input(format!(
                "unknown dtype `{other}`; use f32, f16, bf16, int8 or auto"
            ))),
        }
    }
}

impl DTypeChoice {
    /// The concrete dtype, given the config's dtype string and the store.
    pub fn resolve(self, config_dtype: Option<&str>, store: &WeightStore) -> DType {
        match self {
            DTypeChoice::F32 => DType::F32,
            DTypeChoice::F16 => DType::F16,
            DTypeChoice::BF16 => DType::BF16,
            DTypeChoice::Int8 => DType::F32,
            DTypeChoice::Auto => match config_dtype {
                Some("float32") => DType::F32,
                Some("float16") => DType::F16,
                Some("bfloat16") => DType::BF16,
                _ => store.first_float_dtype().unwrap_or(DType::F32),
            },
        }
    }
}

/// How a parameter the checkpoint lacks is initialised (transformers' `_init_weights`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Init {
    /// All values equal (LayerNorm weight 1, biases 0).
    Const(f64),
    /// Normal(0, std), seeded by the parameter name so it is reproducible.
    Normal(f64),
}

/// What happened when a checkpoint was loaded into a model (transformers' load report).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LoadReport {
    /// Model parameters the checkpoint lacked; they were newly initialised.
    pub missing: Vec<String>,
    /// Checkpoint tensors the model did not use.
    pub unexpected: Vec<String>,
    /// Tensors whose shapes differed (always also an error today).
    pub mismatched: Vec<String>,
}

impl LoadReport {
    /// Logs the report as transformers warns about it.
    pub fn warn(&self, class_name: &str, source: &str) {
        if !self.unexpected.is_empty() {
            log::warn!(
                "Some weights of the model checkpoint at {source} were not used when initializing {class_name}: {:?}",
                self.unexpected
            );
        }
        if !self.missing.is_empty() {
            log::warn!(
                "Some weights of {class_name} were not initialized from the model checkpoint at {source} and are newly initialized: {:?}\nYou should probably TRAIN this model on a down-stream task to be able to use it for predictions and inference.",
                self.missing
            );
        }
    }
}

/// Patterns of checkpoint keys transformers never reports as unexpected.
fn ignored_unexpected(name: &str) -> bool {
    name == "position_ids" || name.ends_with(".position_ids")
}

struct LoadState {
    store: WeightStore,
    dtype: DType,
    device: Device,
    prefix: &'static str,
    used: Mutex<HashSet<String>>,
    missing: Mutex<Vec<String>>,
    /// (tensors, values) initialised so far because the checkpoint lacked them.
    init_budget: Mutex<(usize, usize)>,
    /// Quantize Linear layers to int8 ([`DTypeChoice::Int8`]).
    int8_linear: bool,
    /// Run Linear layers in bf16 on AMX ([`DTypeChoice::BF16`] on AMX CPUs).
    bf16_linear: bool,
}

/// At most this many parameters may be missing from a checkpoint and newly initialised.
const MAX_NEW_TENSORS: usize = 10_000;
/// At most this many values (1 GiB of f32) may be newly initialised.
const MAX_NEW_ELEMENTS: usize = 1 << 28;

/// A `[rows, cols]` float32 table left in its safetensors file: [`Self::gather`] reads the
/// rows a lookup needs (positional reads), so loading does no work proportional to its size
/// (a vocabulary's word embeddings) and untouched rows take no memory. It keeps the checkpoint's
/// files open for as long as the model lives.
#[derive(Clone)]
pub struct LazyTable {
    state: Arc<LoadState>,
    key: String,
    rows: usize,
    cols: usize,
}

impl std::fmt::Debug for LazyTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LazyTable")
            .field("key", &self.key)
            .field("rows", &self.rows)
            .field("cols", &self.cols)
            .finish()
    }
}

impl LazyTable {
    /// Rows in the table.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Values per row.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Rows `ids` as a `[ids.len(), cols]` tensor; an id past the last row is an error.
    pub fn gather(&self, ids: &[usize]) -> Result<Tensor> {
        let WeightStore::Safetensors(store) = &self.state.store else {
            return Err(Error::MissingTensor {
                name: self.key.clone(),
            });
        };
        let values = store.gather_f32_rows(&self.key, ids)?;
        Ok(Tensor::from_vec(
            values,
            (ids.len(), self.cols),
            &self.state.device,
        )?)
    }

    /// The whole table as a tensor (read now).
    pub fn load(&self) -> Result<Tensor> {
        self.state
            .store
            .load(&self.key, self.state.dtype, &self.state.device)
    }
}

/// Reaches weights by name, like candle's `VarBuilder` (`vb.pp("encoder")`), with transformers'
/// name mapping and a record of what was used and what was missing.
#[derive(Clone)]
pub struct VarBuilder {
    state: Arc<LoadState>,
    path: Vec<String>,
}

impl VarBuilder {
    /// A builder over `store`, loading in `dtype` on `device`; `base_model_prefix` is the name of
    /// the base model inside head models (`bert`).
    pub fn new(
        store: impl Into<WeightStore>,
        dtype: DType,
        device: Device,
        base_model_prefix: &'static str,
    ) -> Self {
        VarBuilder {
            state: Arc::new(LoadState {
                store: store.into(),
                dtype,
                device,
                prefix: base_model_prefix,
                used: Mutex::new(HashSet::new()),
                missing: Mutex::new(Vec::new()),
                init_budget: Mutex::new((0, 0)),
                int8_linear: false,
                bf16_linear: false,
            }),
            path: Vec::new(),
        }
    }

    /// The same builder one level deeper: `vb.pp("encoder")`.
    pub fn pp(&self, name: impl ToString) -> Self {
        let mut path = self.path.clone();
        path.push(name.to_string());
        VarBuilder {
            state: self.state.clone(),
            path,
        }
    }

    /// The dtype weights are loaded in.
    pub fn dtype(&self) -> DType {
        self.state.dtype
    }

    /// Asks Linear layers to quantize their weights to int8 (call right after [`Self::new`]).
    pub fn with_int8_linear(mut self, on: bool) -> Self {
        if let Some(state) = Arc::get_mut(&mut self.state) {
            state.int8_linear = on;
        }
        self
    }

    /// Whether Linear layers quantize their weights to int8.
    pub fn int8_linear(&self) -> bool {
        self.state.int8_linear
    }

    /// Asks Linear layers to round their weights to bf16 and multiply on AMX, the rest of the
    /// model staying in the builder's dtype (call right after [`Self::new`]).
    pub fn with_bf16_linear(mut self, on: bool) -> Self {
        if let Some(state) = Arc::get_mut(&mut self.state) {
            state.bf16_linear = on;
        }
        self
    }

    /// Whether Linear layers run in bf16 on AMX.
    pub fn bf16_linear(&self) -> bool {
        self.state.bf16_linear
    }

    /// The device weights are loaded on.
    pub fn device(&self) -> &Device {
        &self.state.device
    }

    fn full_name(&self, name: &str) -> String {
        let mut parts = self.path.clone();
        parts.push(name.to_string());
        parts.join(".")
    }

    /// The checkpoint key holding model parameter `full`, trying transformers' renamings:
    /// the name itself, with `base_model_prefix` stripped or added, and legacy `gamma`/`beta`.
    fn find(&self, full: &str) -> Option<String> {
        let prefix = self.state.prefix;
        let mut candidates = vec![full.to_string()];
        match full.strip_prefix(prefix).and_then(|r| r.strip_prefix('.')) {
            Some(stripped) => candidates.push(stripped.to_string()),
            None => candidates.push(format!("{prefix}.{full}")),
        }
        let legacy: Vec<String> = candidates
            .iter()
            .filter_map(|c| {
                if let Some(base) = c.strip_suffix("LayerNorm.weight") {
                    Some(format!("{base}LayerNorm.gamma"))
                } else {
                    c.strip_suffix("LayerNorm.bias")
                        .map(|base| format!("{base}LayerNorm.beta"))
                }
            })
            .collect();
        candidates.extend(legacy);
        candidates
            .into_iter()
            .find(|c| self.state.store.contains(c))
    }

    fn mark_used(&self, key: &str) {
        if let Ok(mut used) = self.state.used.lock() {
            used.insert(key.to_string());
        }
    }

    /// Whether the checkpoint has a tensor for parameter `name` (under any accepted spelling).
    pub fn contains(&self, name: &str) -> bool {
        self.find(&self.full_name(name)).is_some()
    }

    /// Marks checkpoint tensor `name` (under any accepted spelling) as expected but unused, like
    /// transformers' `_keys_to_ignore_on_load_unexpected` (e.g. old `relative_position_index` buffers).
    pub fn ignore(&self, name: &str) {
        if let Some(key) = self.find(&self.full_name(name)) {
            self.mark_used(&key);
        }
    }

    /// Loads parameter `name` of shape `shape`; initialises it with `init` if the checkpoint
    /// lacks it (recorded as missing). A shape mismatch is an error naming the tensor.
    pub fn get(&self, shape: &[usize], name: &str, init: Init) -> Result<Tensor> {
        let full = self.full_name(name);
        match self.find(&full) {
            Some(key) => {
                self.mark_used(&key);
                self.load_checked(&key, &full, shape)
            }
            None => {
                if let Ok(mut missing) = self.state.missing.lock() {
                    missing.push(full.clone());
                }
                self.init(&full, shape, init)
            }
        }
    }

    /// Parameter `name` as a [`LazyTable`] of `rows × cols` when its rows can be read from the
    /// checkpoint on demand: a 2-d float32 tensor of exactly that shape in a safetensors file,
    /// loaded as float32 on the CPU. `None` otherwise (missing, another shape, format or dtype):
    /// the caller loads it with [`Self::get`], which reports what is wrong.
    pub fn get_lazy_table(&self, rows: usize, cols: usize, name: &str) -> Option<LazyTable> {
        let full = self.full_name(name);
        let key = self.find(&full)?;
        let WeightStore::Safetensors(store) = &self.state.store else {
            return None;
        };
        let fits = self.state.dtype == DType::F32
            && self.state.device.is_cpu()
            && store.f32_table(&key) == Some((rows, cols));
        if !fits {
            return None;
        }
        self.mark_used(&key);
        Some(LazyTable {
            state: self.state.clone(),
            key,
            rows,
            cols,
        })
    }

    /// Loads parameter `name`, or uses `tied` (e.g. the word embeddings for an MLM decoder) when
    /// the checkpoint lacks it, as `tie_weights` does.
    pub fn get_or_tied(&self, shape: &[usize], name: &str, tied: &Tensor) -> Result<Tensor> {
        let full = self.full_name(name);
        match self.find(&full) {
            Some(key) => {
                self.mark_used(&key);
                self.load_checked(&key, &full, shape)
            }
            None => {
                if tied.dims() != shape {
                    return Err(Error::ShapeMismatch {
                        name: full,
                        expected: shape.to_vec(),
                        found: tied.dims().to_vec(),
                        path: None,
                    });
                }
                Ok(tied.clone())
            }
        }
    }

    fn load_checked(&self, key: &str, full: &str, shape: &[usize]) -> Result<Tensor> {
        let store = &self.state.store;
        if let Some(info) = store.info(key) {
            if info.shape != shape {
                // TensorFlow weights: transformers squeezes / expands / reshapes to the model's
                // shape when the element count agrees (apply_transpose's match_shape).
                if store.reshapes_to_model()
                    && memory::numel(&info.shape).is_some()
                    && memory::numel(&info.shape) == memory::numel(shape)
                {
                    let t = store.load(key, self.state.dtype, &self.state.device)?;
                    return Ok(t.reshape(shape)?);
                }
                return Err(Error::ShapeMismatch {
                    name: full.to_string(),
                    expected: shape.to_vec(),
                    found: info.shape,
                    path: store.path_of(key).map(|p| p.to_path_buf()),
                });
            }
        }
        store.load(key, self.state.dtype, &self.state.device)
    }

    fn init(&self, full: &str, shape: &[usize], init: Init) -> Result<Tensor> {
        let numel = shape
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .unwrap_or(usize::MAX);
        // A hostile config (huge sizes, millions of layers) must not turn into a huge allocation.
        let (count, total) = {
            let mut budget =
                self.state.init_budget.lock().map_err(|_| {
                    Error::input("weight loading was poisoned by an earlier failure")
                })?;
            budget.0 += 1;
            budget.1 = budget.1.saturating_add(numel);
            *budget
        };
        if count > MAX_NEW_TENSORS || total > MAX_NEW_ELEMENTS {
            return Err(Error::InvalidConfig {
                path: None,
                field: full.to_string(),
                reason: format!(
                    "the config asks for more new (missing from the checkpoint) weights than allowed: {count} tensors, {total} values (limits {MAX_NEW_TENSORS} and {MAX_NEW_ELEMENTS}); check the sizes in config.json"
                ),
            });
        }
        let values: Vec<f32> = match init {
            Init::Const(v) => vec![v as f32; numel],
            Init::Normal(std) => {
                let mut rng = SplitMix64::from_name(full);
                (0..numel).map(|_| (rng.normal() * std) as f32).collect()
            }
        };
        Ok(Tensor::from_vec(values, shape, &self.state.device)?.to_dtype(self.state.dtype)?)
    }

    /// The load report: missing parameters and unused checkpoint tensors.
    pub fn report(&self) -> LoadReport {
        let used = self
            .state
            .used
            .lock()
            .map(|u| u.clone())
            .unwrap_or_default();
        let mut missing = self
            .state
            .missing
            .lock()
            .map(|m| m.clone())
            .unwrap_or_default();
        missing.sort();
        let unexpected: BTreeSet<String> = self
            .state
            .store
            .names()
            .filter(|n| !used.contains(*n) && !ignored_unexpected(n))
            .map(str::to_string)
            .collect();
        LoadReport {
            missing,
            unexpected: unexpected.into_iter().collect(),
            mismatched: Vec::new(),
        }
    }
}

/// A small seeded generator for reproducible initialisation of missing weights.
struct SplitMix64(u64);

impl SplitMix64 {
    fn from_name(name: &str) -> Self {
        // FNV-1a of the parameter name, so each tensor's values do not depend on load order.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in name.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        SplitMix64(h ^ 0x5eed_0000_0000_0042)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    /// Box-Muller.
    fn normal(&mut self) -> f64 {
        let u1 = self.uniform();
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Row `i` of the test table: `[10i, 10i + 1, 10i + 2] + 0.5`.
    fn row(i: usize) -> Vec<f32> {
        (0..3).map(|j| (10 * i + j) as f32 + 0.5).collect()
    }

    #[test]
    fn lazy_tables_read_only_the_rows_a_lookup_needs() -> Result<()> {
        let table: Vec<u8> = (0..5).flat_map(row).flat_map(f32::to_le_bytes).collect();
        let half = [0u8; 8];
        let path = std::env::temp_dir().join(format!(
            "autoclass-lazy-table-{}.safetensors",
            std::process::id()
        ));
        fn view(
            dtype: ::safetensors::Dtype,
            shape: Vec<usize>,
            data: &[u8],
        ) -> Result<::safetensors::tensor::TensorView<'_>> {
            ::safetensors::tensor::TensorView::new(dtype, shape, data)
                .map_err(|e| Error::input(format!("test tensor: {e}")))
        }
        ::safetensors::serialize_to_file(
            [
                (
                    "emb.weight",
                    view(::safetensors::Dtype::F32, vec![5, 3], &table)?,
                ),
                (
                    "half.weight",
                    view(::safetensors::Dtype::BF16, vec![2, 2], &half)?,
                ),
            ],
            None,
            &path,
        )
        .map_err(|e| Error::input(format!("test file: {e}")))?;
        let (store, store16) = (SafetensorsStore::open(&path), SafetensorsStore::open(&path));
        let _ = std::fs::remove_file(&path);
        let vb = VarBuilder::new(store?, DType::F32, Device::Cpu, "bert");

        let lazy = vb
            .pp("emb")
            .get_lazy_table(5, 3, "weight")
            .ok_or_else(|| Error::input("a 5×3 f32 table should stay lazy"))?;
        let got = lazy.gather(&[4, 0, 4])?.to_vec2::<f32>()?;
        assert_eq!(got, vec![row(4), row(0), row(4)]);
        assert_eq!(
            lazy.load()?.to_vec2::<f32>()?,
            (0..5).map(row).collect::<Vec<_>>()
        );
        let err = lazy
            .gather(&[1, 5])
            .map(|_| ())
            .err()
            .map(|e| e.to_string());
        assert!(
            err.as_deref()
                .is_some_and(|e| e.contains("row 5") && e.contains("autoclass-lazy-table")),
            "{err:?}"
        );
        // Another shape, another dtype or a non-f32 load stays eager (and `get` reports it).
        assert!(vb.pp("emb").get_lazy_table(5, 4, "weight").is_none());
        assert!(vb.pp("emb").get_lazy_table(3, 5, "weight").is_none());
        assert!(vb.pp("half").get_lazy_table(2, 2, "weight").is_none());
        assert!(vb.pp("missing").get_lazy_table(2, 2, "weight").is_none());
        let vb16 = VarBuilder::new(store16?, DType::F16, Device::Cpu, "bert");
        assert!(vb16.pp("emb").contains("weight"));
        assert!(vb16.pp("emb").get_lazy_table(5, 3, "weight").is_none());

        // The embedding looks up through the table, as the eager one does.
        let emb = crate::nn::Embedding::load(&vb.pp("emb"), 5, 3, 0.02, "emb")?;
        let ids = Tensor::new(&[[4u32, 0], [2, 2]], &Device::Cpu)?;
        let got = emb.forward(&ids)?.to_vec3::<f32>()?;
        assert_eq!(got, vec![vec![row(4), row(0)], vec![row(2), row(2)]]);
        assert!(emb.forward(&Tensor::new(&[5u32], &Device::Cpu)?).is_err());
        assert_eq!(
            emb.weight()?.to_vec2::<f32>()?,
            (0..5).map(row).collect::<Vec<_>>()
        );
        assert_eq!(emb.forward(&ids)?.to_vec3::<f32>()?, got);
        // The lazily read table counts as used.
        assert!(vb.report().unexpected == vec!["half.weight".to_string()]);
        Ok(())
    }

    #[test]
    fn seeded_init_is_reproducible_and_normal() {
        let a: Vec<f64> = {
            let mut r = SplitMix64::from_name("classifier.weight");
            (0..10_000).map(|_| r.normal()).collect()
        };
        let mut r = SplitMix64::from_name("classifier.weight");
        assert!(a.iter().all(|v| *v == r.normal()));
        let mean = a.iter().sum::<f64>() / a.len() as f64;
        let var = a.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / a.len() as f64;
        assert!(
            mean.abs() < 0.05 && (var - 1.0).abs() < 0.05,
            "{mean} {var}"
        );
    }
}
