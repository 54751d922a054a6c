//! PyTorch checkpoints (`pytorch_model.bin`, single or sharded) read without executing anything.
//!
//! Both containers `torch.save` writes are understood:
//!
//! * the zip archive (PyTorch ≥ 1.6): `<archive>/data.pkl`, `<archive>/data/<key>` storages,
//!   `<archive>/byteorder` (`little`/`big`), `<archive>/version`. Entries must be stored
//!   uncompressed, nothing may follow the archive, and TorchScript archives are refused;
//! * the legacy stream: pickled magic number `0x1950a86a20f9469cfc6c`, protocol version 1001,
//!   `sys_info`, the state dict, the sorted list of storage keys, then each storage as an 8-byte
//!   element count followed by its raw bytes.
//!
//! The pickles are interpreted by the symbolic machine in [`super::pickle`], which calls nothing
//! and refuses every global a state dict does not need. Every storage's size is checked against
//! its element count, and every tensor's offset and strided extent against its storage, before
//! any tensor is built; strided views, shared storages and big-endian data are materialised into
//! contiguous little-endian tensors on load.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

use super::pickle::{self, PickleError, StorageDType, TensorRef, Value};
use super::safetensors::StoredTensor;
use super::zip;
use crate::error::{Error, Result};

/// The legacy format's magic number (`torch.serialization.MAGIC_NUMBER`).
pub const LEGACY_MAGIC: i128 = 0x1950_a86a_20f9_469c_fc6c;
/// The oldest zip archive format version (`version` record) torch reads.
pub const MIN_ARCHIVE_VERSION: u64 = 1;
/// The newest zip archive format version torch reads (`kMaxSupportedFileFormatVersion`).
pub const MAX_ARCHIVE_VERSION: u64 = 10;
/// The legacy format's protocol version (`torch.serialization.PROTOCOL_VERSION`).
pub const LEGACY_PROTOCOL: i128 = 1001;

impl StorageDType {
    /// The candle dtype a tensor of this storage type is loaded as natively: `int8` widens to
    /// `I16` and `bool` becomes `U8` (0/1), as candle has neither.
    pub fn candle_dtype(self) -> DType {
        match self {
            StorageDType::F64 => DType::F64,
            StorageDType::F32 => DType::F32,
            StorageDType::F16 => DType::F16,
            StorageDType::BF16 => DType::BF16,
            StorageDType::I64 => DType::I64,
            StorageDType::I32 => DType::I32,
            StorageDType::I16 | StorageDType::I8 => DType::I16,
            StorageDType::U8 | StorageDType::Bool => DType::U8,
        }
    }

    /// The matching safetensors dtype (for [`StoredTensor`]).
    pub fn safetensors_dtype(self) -> safetensors::Dtype {
        match self {
            StorageDType::F64 => safetensors::Dtype::F64,
            StorageDType::F32 => safetensors::Dtype::F32,
            StorageDType::F16 => safetensors::Dtype::F16,
            StorageDType::BF16 => safetensors::Dtype::BF16,
            StorageDType::I64 => safetensors::Dtype::I64,
            StorageDType::I32 => safetensors::Dtype::I32,
            StorageDType::I16 => safetensors::Dtype::I16,
            StorageDType::I8 => safetensors::Dtype::I8,
            StorageDType::U8 => safetensors::Dtype::U8,
            StorageDType::Bool => safetensors::Dtype::BOOL,
        }
    }

    fn is_float(self) -> bool {
        matches!(
            self,
            StorageDType::F64 | StorageDType::F32 | StorageDType::F16 | StorageDType::BF16
        )
    }
}

/// Where one storage's bytes are in the file.
#[derive(Clone, Debug)]
struct StorageData {
    dtype: StorageDType,
    numel: usize,
    bytes: Range<usize>,
}

/// One `.bin` file, read into memory and validated.
struct TorchFile {
    path: PathBuf,
    bytes: Vec<u8>,
    big_endian: bool,
    tensors: Vec<(String, TensorRef)>,
    storages: HashMap<String, StorageData>,
}

fn bad(path: &Path, reason: impl Into<String>) -> Error {
    Error::InvalidTorchWeights {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn pickle_error(path: &Path, e: PickleError) -> Error {
    match e {
        PickleError::Unsafe(global) => Error::UnsafePickle {
            path: path.to_path_buf(),
            global,
        },
        PickleError::Invalid(reason) => bad(path, reason),
    }
}

impl TorchFile {
    fn open(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::parse(path, bytes)
    }

    fn parse(path: &Path, bytes: Vec<u8>) -> Result<Self> {
        let file = if zip::is_zip(&bytes) {
            Self::parse_zip(path, bytes)?
        } else {
            Self::parse_legacy(path, bytes)?
        };
        file.check_tensors()?;
        Ok(file)
    }

    fn parse_zip(path: &Path, bytes: Vec<u8>) -> Result<Self> {
        let index = zip::read_index(&bytes).map_err(|r| bad(path, r))?;
        let first = index
            .names
            .first()
            .ok_or_else(|| bad(path, "the zip archive is empty"))?;
        let prefix = match first.split_once('/') {
            Some((p, _)) if !p.is_empty() => format!("{p}/"),
            _ => {
                return Err(bad(
                    path,
                    format!("zip entry {first} is not inside an archive folder"),
                ))
            }
        };
        if let Some(stray) = index.names.iter().find(|n| !n.starts_with(&prefix)) {
            return Err(bad(
                path,
                format!("zip entry {stray} is outside the archive folder {prefix}"),
            ));
        }
        let is_torchscript = index.names.iter().any(|n| {
            n.strip_prefix(&prefix)
                .is_some_and(|r| r == "constants.pkl" || r.starts_with("code/"))
        });
        if is_torchscript {
            return Err(bad(
                path,
                "this is a TorchScript archive (torch.jit.save), not a state dict; TorchScript programs are not loaded",
            ));
        }
        let entry = |name: &str| -> Option<&[u8]> {
            let e = index.entries.get(&format!("{prefix}{name}"))?;
            bytes.get(e.data.clone())
        };
        let data_pkl_entry = index
            .entries
            .get(&format!("{prefix}data.pkl"))
            .ok_or_else(|| bad(path, format!("the archive has no {prefix}data.pkl")))?;
        let data_pkl = bytes
            .get(data_pkl_entry.data.clone())
            .ok_or_else(|| bad(path, "data.pkl lies outside the file"))?;
        if zip::crc32(data_pkl) != data_pkl_entry.crc32 {
            return Err(bad(
                path,
                "data.pkl fails its CRC-32 check (corrupted file)",
            ));
        }
        let big_endian = match entry("byteorder") {
            None | Some(b"little") => false,
            Some(b"big") => true,
            Some(other) => {
                return Err(bad(
                    path,
                    format!(
                        "the byteorder record is {:?}, not \"little\" or \"big\"",
                        String::from_utf8_lossy(other.get(..32).unwrap_or(other))
                    ),
                ))
            }
        };
        // PyTorchStreamReader accepts archive versions 1 through 10 (kMaxSupportedFileFormatVersion).
        if let Some(version) = entry("version").or_else(|| entry(".data/version")) {
            let text = std::str::from_utf8(version).unwrap_or("").trim();
            match text.parse::<u64>() {
                Ok(v) if (MIN_ARCHIVE_VERSION..=MAX_ARCHIVE_VERSION).contains(&v) => {}
                _ => {
                    return Err(bad(
                        path,
                        format!(
                            "unsupported archive format version {:?} (torch reads versions {MIN_ARCHIVE_VERSION} to {MAX_ARCHIVE_VERSION})",
                            String::from_utf8_lossy(version.get(..16).unwrap_or(version))
                        ),
                    ))
                }
            }
        }
        let (tensors, used) =
            pickle::load_state_dict(data_pkl).map_err(|e| pickle_error(path, e))?;
        if used != data_pkl.len() {
            return Err(bad(
                path,
                "data.pkl has trailing bytes after the pickle's STOP",
            ));
        }
        let mut storages: HashMap<String, StorageData> = HashMap::new();
        for (name, t) in &tensors {
            let dtype_numel = (t.dtype, t.storage_numel);
            if let Some(s) = storages.get(&t.storage) {
                if (s.dtype, s.numel) != dtype_numel {
                    return Err(bad(
                        path,
                        format!(
                            "tensor `{name}` views storage {} with a different type or size",
                            t.storage
                        ),
                    ));
                }
                continue;
            }
            let e = index
                .entries
                .get(&format!("{prefix}data/{}", t.storage))
                .ok_or_else(|| {
                    bad(
                        path,
                        format!(
                            "tensor `{name}`: the archive has no storage data/{}",
                            t.storage
                        ),
                    )
                })?;
            let expected = t
                .storage_numel
                .checked_mul(t.dtype.size_in_bytes())
                .ok_or_else(|| {
                    bad(
                        path,
                        format!("storage {}: its byte size overflows", t.storage),
                    )
                })?;
            if e.data.len() != expected {
                return Err(bad(
                    path,
                    format!(
                        "storage size mismatch: data/{} holds {} bytes but {} {} elements need {expected}",
                        t.storage,
                        e.data.len(),
                        t.storage_numel,
                        t.dtype.torch_name()
                    ),
                ));
            }
            storages.insert(
                t.storage.clone(),
                StorageData {
                    dtype: t.dtype,
                    numel: t.storage_numel,
                    bytes: e.data.clone(),
                },
            );
        }
        Ok(TorchFile {
            path: path.to_path_buf(),
            bytes,
            big_endian,
            tensors,
            storages,
        })
    }

    fn parse_legacy(path: &Path, bytes: Vec<u8>) -> Result<Self> {
        let mut pos = 0usize;
        let next = |pos: &mut usize| -> Result<Value> {
            let rest = bytes.get(*pos..).unwrap_or(&[]);
            let (v, used) = pickle::load(rest).map_err(|e| pickle_error(path, e))?;
            *pos += used;
            Ok(v)
        };
        let not_torch = || {
            bad(
                path,
                "not a PyTorch checkpoint: neither a zip archive nor the legacy torch.save format (bad magic number)",
            )
        };
        if bytes.get(257..262) == Some(b"ustar") {
            return Err(bad(
                path,
                "this is the pre-0.1.10 tar format of torch.save, which is not supported",
            ));
        }
        // A foreign pickle is refused here by the pickle machine, naming what it calls.
        match next(&mut pos) {
            Ok(Value::Int(LEGACY_MAGIC)) => {}
            Ok(_) => return Err(not_torch()),
            Err(e @ Error::UnsafePickle { .. }) => return Err(e),
            Err(_) => return Err(not_torch()),
        }
        match next(&mut pos)? {
            Value::Int(LEGACY_PROTOCOL) => {}
            other => {
                return Err(bad(
                    path,
                    format!("unsupported legacy protocol version {other:?} (expected 1001)"),
                ))
            }
        }
        let Value::Dict(sys_info) = next(&mut pos)? else {
            return Err(bad(path, "the legacy sys_info record is not a dict"));
        };
        let big_endian = sys_info.iter().any(
            |(k, v)| matches!((k, v), (Value::Str(k), Value::Bool(false)) if k == "little_endian"),
        );
        let main = next(&mut pos)?;
        let tensors = pickle::state_dict(main).map_err(|e| pickle_error(path, e))?;
        let Value::List(keys) = next(&mut pos)? else {
            return Err(bad(path, "the legacy storage key list is not a list"));
        };
        let mut wanted: HashMap<&str, (StorageDType, usize)> = HashMap::new();
        for (name, t) in &tensors {
            let spec = (t.dtype, t.storage_numel);
            if let Some(old) = wanted.insert(t.storage.as_str(), spec) {
                if old != spec {
                    return Err(bad(
                        path,
                        format!(
                            "tensor `{name}` views storage {} with a different type or size",
                            t.storage
                        ),
                    ));
                }
            }
        }
        let mut storages: HashMap<String, StorageData> = HashMap::new();
        for key in keys {
            let key = match key {
                Value::Str(s) => s,
                Value::Int(i) => i.to_string(),
                _ => return Err(bad(path, "a legacy storage key is not a string")),
            };
            let &(dtype, numel) = wanted
                .get(key.as_str())
                .ok_or_else(|| bad(path, format!("storage {key} is not used by any tensor")))?;
            let header: [u8; 8] = bytes
                .get(pos..pos + 8)
                .and_then(|h| h.try_into().ok())
                .ok_or_else(|| bad(path, format!("the file ends before storage {key}")))?;
            let count = if big_endian {
                u64::from_be_bytes(header)
            } else {
                u64::from_le_bytes(header)
            };
            if usize::try_from(count).ok() != Some(numel) {
                return Err(bad(
                    path,
                    format!("storage size mismatch: storage {key} holds {count} elements but its tensors say {numel}"),
                ));
            }
            let len = numel
                .checked_mul(dtype.size_in_bytes())
                .ok_or_else(|| bad(path, format!("storage {key}: its byte size overflows")))?;
            let start = pos + 8;
            let end = start
                .checked_add(len)
                .filter(|&e| e <= bytes.len())
                .ok_or_else(|| {
                    bad(
                        path,
                        format!(
                            "storage size: storage {key} needs {len} bytes but the file ends first (truncated?)"
                        ),
                    )
                })?;
            if storages
                .insert(
                    key.clone(),
                    StorageData {
                        dtype,
                        numel,
                        bytes: start..end,
                    },
                )
                .is_some()
            {
                return Err(bad(path, format!("storage {key} is listed twice")));
            }
            pos = end;
        }
        if let Some(missing) = wanted.keys().find(|k| !storages.contains_key(**k)) {
            return Err(bad(
                path,
                format!("storage {missing} is missing from the file"),
            ));
        }
        if pos != bytes.len() {
            return Err(bad(
                path,
                format!(
                    "{} trailing bytes after the last storage",
                    bytes.len() - pos
                ),
            ));
        }
        Ok(TorchFile {
            path: path.to_path_buf(),
            bytes,
            big_endian,
            tensors,
            storages,
        })
    }

    /// Every tensor must lie inside its storage.
    fn check_tensors(&self) -> Result<()> {
        for (name, t) in &self.tensors {
            let storage = self.storages.get(&t.storage).ok_or_else(|| {
                bad(
                    &self.path,
                    format!("tensor `{name}` has no storage {}", t.storage),
                )
            })?;
            let numel = t
                .shape
                .iter()
                .try_fold(1usize, |acc, &d| acc.checked_mul(d))
                .ok_or_else(|| {
                    bad(
                        &self.path,
                        format!("tensor `{name}`: its element count overflows"),
                    )
                })?;
            if numel == 0 {
                continue;
            }
            let extent = t
                .shape
                .iter()
                .zip(&t.stride)
                .try_fold(t.offset, |acc, (&d, &s)| {
                    (d - 1).checked_mul(s).and_then(|x| acc.checked_add(x))
                });
            match extent {
                Some(last) if last < storage.numel => {}
                _ => {
                    return Err(bad(
                        &self.path,
                        format!(
                            "tensor `{name}` (offset {}, shape {:?}, stride {:?}) does not fit its storage size of {} elements",
                            t.offset, t.shape, t.stride, storage.numel
                        ),
                    ))
                }
            }
            if numel > storage.numel {
                return Err(bad(
                    &self.path,
                    format!(
                        "tensor `{name}` has more elements ({numel}) than its storage ({}); expanded (stride 0) tensors are not supported",
                        storage.numel
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The tensor's elements, contiguous, little-endian.
    fn materialise(&self, t: &TensorRef) -> Result<Vec<u8>> {
        let storage = self
            .storages
            .get(&t.storage)
            .ok_or_else(|| bad(&self.path, format!("storage {} vanished", t.storage)))?;
        let raw = self.bytes.get(storage.bytes.clone()).ok_or_else(|| {
            bad(
                &self.path,
                format!("storage {} lies outside the file", t.storage),
            )
        })?;
        let e = t.dtype.size_in_bytes();
        let numel: usize = t.shape.iter().product();
        let mut out = Vec::with_capacity(numel * e);
        let outside = || {
            bad(
                &self.path,
                format!("a tensor of storage {} reaches past it", t.storage),
            )
        };
        if numel > 0 {
            let contiguous = {
                let mut expect = 1usize;
                let mut ok = true;
                for (&d, &s) in t.shape.iter().zip(&t.stride).rev() {
                    if d != 1 && s != expect {
                        ok = false;
                    }
                    expect *= d;
                }
                ok
            };
            if contiguous {
                let start = t.offset * e;
                out.extend_from_slice(raw.get(start..start + numel * e).ok_or_else(outside)?);
            } else {
                let outer = t.shape.len().saturating_sub(1);
                let mut index = vec![0usize; outer];
                let (inner_len, inner_stride) = match (t.shape.last(), t.stride.last()) {
                    (Some(&d), Some(&s)) => (d, s),
                    _ => (1, 1),
                };
                'outer: loop {
                    let base = t.offset
                        + index
                            .iter()
                            .zip(&t.stride)
                            .map(|(i, s)| i * s)
                            .sum::<usize>();
                    for j in 0..inner_len {
                        let at = (base + j * inner_stride) * e;
                        out.extend_from_slice(raw.get(at..at + e).ok_or_else(outside)?);
                    }
                    // odometer over the outer dimensions
                    let mut dim = outer;
                    loop {
                        if dim == 0 {
                            break 'outer;
                        }
                        dim -= 1;
                        let (Some(i), Some(&d)) = (index.get_mut(dim), t.shape.get(dim)) else {
                            break 'outer;
                        };
                        *i += 1;
                        if *i < d {
                            break;
                        }
                        *i = 0;
                    }
                }
            }
        }
        if self.big_endian && e > 1 {
            for chunk in out.chunks_exact_mut(e) {
                chunk.reverse();
            }
        }
        Ok(out)
    }

    fn load(&self, t: &TensorRef, dtype: DType, device: &Device) -> Result<Tensor> {
        let bytes = self.materialise(t)?;
        let shape = t.shape.as_slice();
        let tensor = match t.dtype {
            StorageDType::I8 => {
                let wide: Vec<i16> = bytes.iter().map(|&b| i16::from(b as i8)).collect();
                Tensor::from_vec(wide, shape, device)?
            }
            StorageDType::Bool => {
                let norm: Vec<u8> = bytes.iter().map(|&b| u8::from(b != 0)).collect();
                Tensor::from_vec(norm, shape, device)?
            }
            other => Tensor::from_raw_buffer(&bytes, other.candle_dtype(), shape, device)?,
        };
        Ok(if tensor.dtype() == dtype {
            tensor
        } else {
            tensor.to_dtype(dtype)?
        })
    }
}

/// The tensors of a PyTorch checkpoint, across one or several `.bin` files.
pub struct TorchStore {
    files: Vec<TorchFile>,
    /// tensor name → (file index, tensor index)
    index: BTreeMap<String, (usize, usize)>,
}

impl TorchStore {
    /// Reads one `pytorch_model.bin` (zip or legacy).
    pub fn open(path: &Path) -> Result<Self> {
        Self::open_many(&[path.to_path_buf()])
    }

    /// Reads several shard files.
    pub fn open_many(paths: &[PathBuf]) -> Result<Self> {
        let files = paths
            .iter()
            .map(|p| TorchFile::open(p))
            .collect::<Result<Vec<_>>>()?;
        Self::from_files(files)
    }

    /// Parses a checkpoint from bytes already in memory (`path` names it in errors).
    pub fn from_bytes(path: &Path, bytes: Vec<u8>) -> Result<Self> {
        Self::from_files(vec![TorchFile::parse(path, bytes)?])
    }

    fn from_files(files: Vec<TorchFile>) -> Result<Self> {
        let mut index = BTreeMap::new();
        for (fi, file) in files.iter().enumerate() {
            for (ti, (name, _)) in file.tensors.iter().enumerate() {
                if index.insert(name.clone(), (fi, ti)).is_some() {
                    return Err(bad(
                        &file.path,
                        format!("tensor `{name}` also appears in another shard"),
                    ));
                }
            }
        }
        Ok(TorchStore { files, index })
    }

    /// Reads a sharded checkpoint from `pytorch_model.bin.index.json`, resolving shard names
    /// with `resolve`.
    pub fn open_index(
        index_path: &Path,
        resolve: impl FnMut(&str) -> Result<PathBuf>,
    ) -> Result<Self> {
        super::open_sharded(
            index_path,
            resolve,
            Self::open_many,
            |store: &Self, name| store.path_of(name).map(Path::to_path_buf),
            bad,
        )
    }

    fn get(&self, name: &str) -> Option<(&TorchFile, &TensorRef)> {
        let &(fi, ti) = self.index.get(name)?;
        let file = self.files.get(fi)?;
        let (_, t) = file.tensors.get(ti)?;
        Some((file, t))
    }

    /// Every tensor name, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.index.keys().map(String::as_str)
    }

    /// Whether the checkpoint holds `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    /// The stored dtype and shape of `name`.
    pub fn info(&self, name: &str) -> Option<StoredTensor> {
        let (_, t) = self.get(name)?;
        Some(StoredTensor {
            dtype: t.dtype.safetensors_dtype(),
            shape: t.shape.clone(),
        })
    }

    /// How `name` is stored: storage key, storage dtype, offset, shape, stride.
    pub fn tensor_ref(&self, name: &str) -> Option<&TensorRef> {
        self.get(name).map(|(_, t)| t)
    }

    /// The candle dtype `name` loads as without conversion (see [`StorageDType::candle_dtype`]).
    pub fn native_dtype(&self, name: &str) -> Option<DType> {
        self.get(name).map(|(_, t)| t.dtype.candle_dtype())
    }

    /// The file `name` is stored in.
    pub fn path_of(&self, name: &str) -> Option<&Path> {
        self.get(name).map(|(f, _)| f.path.as_path())
    }

    /// The dtype of the first floating-point tensor of the first file, in state-dict order
    /// (transformers' `dtype="auto"` fallback).
    pub fn first_float_dtype(&self) -> Option<DType> {
        let file = self.files.first()?;
        file.tensors
            .iter()
            .find(|(_, t)| t.dtype.is_float())
            .map(|(_, t)| t.dtype.candle_dtype())
    }

    /// Loads `name` as a contiguous tensor of `dtype` on `device`.
    pub fn load(&self, name: &str, dtype: DType, device: &Device) -> Result<Tensor> {
        let (file, t) = self.get(name).ok_or_else(|| Error::MissingTensor {
            name: name.to_string(),
        })?;
        file.load(t, dtype, device)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::weights::zip::tests::build;

    fn s(text: &str) -> Vec<u8> {
        let mut v = vec![0x8c, text.len() as u8];
        v.extend_from_slice(text.as_bytes());
        v
    }

    /// (name, storage class, key, numel, offset, shape, stride).
    type Spec<'a> = (&'a str, &'a str, &'a str, u8, u8, &'a [u8], &'a [u8]);

    /// The pickle of `{name: tensor}` for each spec.
    fn pickle(tensors: &[Spec<'_>]) -> Vec<u8> {
        let mut p = vec![0x80, 2, b'}', b'('];
        for (name, class, key, numel, offset, shape, stride) in tensors {
            p.extend(s(name));
            p.extend(b"ctorch._utils\n_rebuild_tensor_v2\n((");
            p.extend(s("storage"));
            p.extend(format!("ctorch\n{class}\n").bytes());
            p.extend(s(key));
            p.extend(s("cpu"));
            p.extend([b'K', *numel, b't', b'Q', b'K', *offset, b'(']);
            for d in *shape {
                p.extend([b'K', *d]);
            }
            p.push(b't');
            p.push(b'(');
            for d in *stride {
                p.extend([b'K', *d]);
            }
            p.extend(b"t\x89ccollections\nOrderedDict\n)RtR");
        }
        p.extend(b"u.");
        p
    }

    fn f32_bytes(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    #[test]
    fn zip_views_and_byteorder() {
        let data: Vec<f32> = (0..12).map(|i| i as f32).collect();
        let pkl = pickle(&[
            ("a", "FloatStorage", "0", 12, 0, &[3, 4], &[4, 1]),
            ("t", "FloatStorage", "0", 12, 0, &[4, 3], &[1, 4]),
            ("o", "FloatStorage", "0", 12, 5, &[3], &[2]),
        ]);
        let le = f32_bytes(&data);
        let zip = build(
            &[
                ("x/data.pkl", &pkl),
                ("x/byteorder", b"little"),
                ("x/data/0", &le),
            ],
            0,
        );
        let store = TorchStore::from_bytes(Path::new("x.bin"), zip).unwrap();
        let a = store.load("a", DType::F32, &Device::Cpu).unwrap();
        assert_eq!(a.flatten_all().unwrap().to_vec1::<f32>().unwrap(), data);
        let t = store.load("t", DType::F32, &Device::Cpu).unwrap();
        assert_eq!(
            t.to_vec2::<f32>().unwrap()[1],
            vec![1.0, 5.0, 9.0],
            "Fortran order"
        );
        let o = store.load("o", DType::F32, &Device::Cpu).unwrap();
        assert_eq!(o.to_vec1::<f32>().unwrap(), vec![5.0, 7.0, 9.0]);

        let be: Vec<u8> = data.iter().flat_map(|x| x.to_be_bytes()).collect();
        let zip = build(
            &[
                ("x/data.pkl", &pkl),
                ("x/byteorder", b"big"),
                ("x/data/0", &be),
            ],
            0,
        );
        let store = TorchStore::from_bytes(Path::new("x.bin"), zip).unwrap();
        let t = store.load("t", DType::F32, &Device::Cpu).unwrap();
        assert_eq!(t.to_vec2::<f32>().unwrap()[1], vec![1.0, 5.0, 9.0]);
    }

    #[test]
    fn sizes_are_checked_before_loading() {
        // storage data shorter than numel × 4
        let pkl = pickle(&[("a", "FloatStorage", "0", 12, 0, &[3, 4], &[4, 1])]);
        let zip = build(&[("x/data.pkl", &pkl), ("x/data/0", &[0u8; 40])], 0);
        let err = TorchStore::from_bytes(Path::new("x.bin"), zip)
            .err()
            .unwrap();
        assert!(err.to_string().contains("48"), "{err}");
        // a view past the end of its storage
        let pkl = pickle(&[("a", "FloatStorage", "0", 12, 1, &[3, 4], &[4, 1])]);
        let zip = build(&[("x/data.pkl", &pkl), ("x/data/0", &[0u8; 48])], 0);
        let err = TorchStore::from_bytes(Path::new("x.bin"), zip)
            .err()
            .unwrap();
        assert!(err.to_string().contains("storage size"), "{err}");
        // a missing storage record, TorchScript
        let zip = build(&[("x/data.pkl", &pkl)], 0);
        assert!(TorchStore::from_bytes(Path::new("x.bin"), zip).is_err());
        let zip = build(
            &[
                ("x/data.pkl", &pkl),
                ("x/constants.pkl", b"."),
                ("x/code/m.py", b""),
            ],
            0,
        );
        let err = TorchStore::from_bytes(Path::new("x.bin"), zip)
            .err()
            .unwrap();
        assert!(err.to_string().contains("TorchScript"), "{err}");
    }

    #[test]
    fn legacy_stream() {
        let mut f = vec![0x80, 2, 0x8a, 10];
        f.extend(&LEGACY_MAGIC.to_le_bytes()[..10]);
        f.push(b'.');
        f.extend([0x80, 2, b'M', 0xe9, 0x03, b'.']);
        f.extend([0x80, 2, b'}', b'(']);
        f.extend(s("little_endian"));
        f.extend([0x88, b'u', b'.']);
        f.extend(pickle(&[
            ("i8", "CharStorage", "k1", 3, 0, &[3], &[1]),
            ("b", "BoolStorage", "k2", 2, 0, &[2], &[1]),
        ]));
        f.extend([0x80, 2, b'(']);
        f.extend(s("k1"));
        f.extend(s("k2"));
        f.extend([b'l', b'.']);
        f.extend(3u64.to_le_bytes());
        f.extend([0xff, 0x80, 0x05]);
        f.extend(2u64.to_le_bytes());
        f.extend([1, 0]);
        let store = TorchStore::from_bytes(Path::new("l.bin"), f.clone()).unwrap();
        assert_eq!(store.native_dtype("i8"), Some(DType::I16));
        let i8s = store.load("i8", DType::I16, &Device::Cpu).unwrap();
        assert_eq!(i8s.to_vec1::<i16>().unwrap(), vec![-1, -128, 5]);
        let b = store.load("b", DType::U8, &Device::Cpu).unwrap();
        assert_eq!(b.to_vec1::<u8>().unwrap(), vec![1, 0]);
        let mut trailing = f;
        trailing.push(0);
        assert!(TorchStore::from_bytes(Path::new("l.bin"), trailing).is_err());
        let err = TorchStore::from_bytes(Path::new("l.bin"), b"cos\nsystem\n.".to_vec())
            .err()
            .unwrap();
        assert!(matches!(err, Error::UnsafePickle { ref global, .. } if global == "os.system"));
    }
}
