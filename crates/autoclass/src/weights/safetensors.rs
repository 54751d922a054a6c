//! Memory-mapped safetensors files, single or sharded (`model.safetensors.index.json`).

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use memmap2::Mmap;
use safetensors::tensor::{Metadata, TensorInfo};
use safetensors::SafeTensors;

use crate::error::{Error, Result};

/// One memory-mapped safetensors file with its parsed header.
struct MappedFile {
    path: PathBuf,
    /// The open file: tensor bytes are read from it with positional reads, so the mapping's
    /// data pages are never touched and do not count twice in resident memory.
    file: File,
    mmap: Mmap,
    /// Byte offset of the data section (8 + header length).
    data_start: usize,
    metadata: Metadata,
}

impl MappedFile {
    fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: the file is mapped read-only. Like every mmap reader (candle, safetensors'
        // Python bindings) we rely on the checkpoint not being truncated by another process while
        // mapped; the header is fully validated below before any tensor bytes are touched.
        #[allow(unsafe_code)]
        let mmap = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        if mmap.starts_with(b"version https://git-lfs.github.com/spec") {
            return Err(Error::InvalidWeights {
                path: path.to_path_buf(),
                reason: "this is a Git LFS pointer file, not the weights: fetch the real file (`git lfs pull`)".into(),
            });
        }
        let (header_len, metadata) =
            SafeTensors::read_metadata(&mmap).map_err(|e| Error::InvalidWeights {
                path: path.to_path_buf(),
                reason: describe(&e),
            })?;
        // The safetensors crate keeps the last of two equal tensor names; refuse them instead.
        if let Some(name) = mmap.get(8..8 + header_len).and_then(duplicate_key) {
            return Err(Error::InvalidWeights {
                path: path.to_path_buf(),
                reason: format!("the header names tensor `{name}` more than once (duplicate key)"),
            });
        }
        Ok(MappedFile {
            path: path.to_path_buf(),
            file,
            mmap,
            data_start: 8 + header_len,
            metadata,
        })
    }

    fn info(&self, name: &str) -> Option<&TensorInfo> {
        self.metadata.info(name)
    }

    /// An error about this file.
    fn invalid(&self, reason: String) -> Error {
        Error::InvalidWeights {
            path: self.path.clone(),
            reason,
        }
    }

    /// `[rows, cols]` when `info` is a 2-d f32 tensor whose bytes match its shape and lie in
    /// the file.
    fn f32_table(&self, info: &TensorInfo) -> Option<(usize, usize)> {
        let (&[rows, cols], safetensors::Dtype::F32) = (info.shape.as_slice(), info.dtype) else {
            return None;
        };
        let (start, end) = info.data_offsets;
        let bytes = rows.checked_mul(cols)?.checked_mul(4)?;
        (end.checked_sub(start) == Some(bytes)
            && self.data_start.checked_add(end)? <= self.mmap.len())
        .then_some((rows, cols))
    }
}

/// The first top-level key that appears twice in a JSON object, if any.
fn duplicate_key(header: &[u8]) -> Option<String> {
    struct Keys(Option<String>);
    impl<'de> serde::Deserialize<'de> for Keys {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
            struct Visitor;
            impl<'de> serde::de::Visitor<'de> for Visitor {
                type Value = Keys;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("a JSON object")
                }
                fn visit_map<A: serde::de::MapAccess<'de>>(
                    self,
                    mut map: A,
                ) -> std::result::Result<Keys, A::Error> {
                    let mut seen = std::collections::HashSet::new();
                    let mut dup = None;
                    while let Some(key) = map.next_key::<String>()? {
                        map.next_value::<serde::de::IgnoredAny>()?;
                        if dup.is_none() && !seen.insert(key.clone()) {
                            dup = Some(key);
                        }
                    }
                    Ok(Keys(dup))
                }
            }
            d.deserialize_map(Visitor)
        }
    }
    serde_json::from_slice::<Keys>(header)
        .ok()
        .and_then(|k| k.0)
}

fn describe(e: &safetensors::SafeTensorError) -> String {
    use safetensors::SafeTensorError as E;
    match e {
        E::HeaderTooSmall => {
            "the file is too small to hold a safetensors header (truncated?)".into()
        }
        E::InvalidHeaderLength => {
            "the header length is larger than the file (truncated or not a safetensors file)".into()
        }
        E::HeaderTooLarge => {
            "the header length is unreasonably large (not a safetensors file?)".into()
        }
        E::MetadataIncompleteBuffer => {
            "the tensor data does not match the file size (truncated or trailing bytes)".into()
        }
        other => other.to_string(),
    }
}

/// The tensors of a checkpoint, across one or several memory-mapped files.
pub struct SafetensorsStore {
    files: Vec<MappedFile>,
    /// tensor name → file index
    index: BTreeMap<String, usize>,
}

/// A tensor's dtype and shape as stored in the checkpoint.
#[derive(Clone, Debug)]
pub struct StoredTensor {
    /// The stored dtype.
    pub dtype: safetensors::Dtype,
    /// The stored shape.
    pub shape: Vec<usize>,
}

impl SafetensorsStore {
    /// Maps one `model.safetensors` file.
    pub fn open(path: &Path) -> Result<Self> {
        Self::open_many(&[path.to_path_buf()])
    }

    /// Maps several shard files.
    pub fn open_many(paths: &[PathBuf]) -> Result<Self> {
        let mut files = Vec::new();
        let mut index = BTreeMap::new();
        for path in paths {
            let file = MappedFile::open(path)?;
            let i = files.len();
            for name in file.metadata.tensors().keys() {
                if index.insert(name.clone(), i).is_some() {
                    return Err(Error::InvalidWeights {
                        path: path.clone(),
                        reason: format!("tensor `{name}` also appears in another shard"),
                    });
                }
            }
            files.push(file);
        }
        Ok(SafetensorsStore { files, index })
    }

    /// Reads a sharded checkpoint from its index file, resolving shard names with `resolve`.
    pub fn open_index(
        index_path: &Path,
        resolve: impl FnMut(&str) -> Result<PathBuf>,
    ) -> Result<Self> {
        super::open_sharded(
            index_path,
            resolve,
            Self::open_many,
            |store: &Self, name| store.path_of(name).map(Path::to_path_buf),
            |path, reason| Error::InvalidWeights {
                path: path.to_path_buf(),
                reason,
            },
        )
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
        let file = &self.files[*self.index.get(name)?];
        file.info(name).map(|i| StoredTensor {
            dtype: i.dtype,
            shape: i.shape.clone(),
        })
    }

    /// The file `name` is stored in.
    pub fn path_of(&self, name: &str) -> Option<&Path> {
        self.index.get(name).map(|&i| self.files[i].path.as_path())
    }

    /// The dtype of the first floating-point tensor (transformers' `dtype="auto"` fallback).
    pub fn first_float_dtype(&self) -> Option<DType> {
        let file = self.files.first()?;
        let mut infos: Vec<(String, &TensorInfo)> = file.metadata.tensors().into_iter().collect();
        infos.sort_by_key(|(_, i)| i.data_offsets.0);
        infos.into_iter().find_map(|(_, i)| match i.dtype {
            safetensors::Dtype::F32 => Some(DType::F32),
            safetensors::Dtype::F16 => Some(DType::F16),
            safetensors::Dtype::BF16 => Some(DType::BF16),
            safetensors::Dtype::F64 => Some(DType::F64),
            _ => None,
        })
    }

    /// The file holding `name` and its header entry.
    fn locate(&self, name: &str) -> Result<(&MappedFile, &TensorInfo)> {
        let &i = self.index.get(name).ok_or_else(|| Error::MissingTensor {
            name: name.to_string(),
        })?;
        let file = &self.files[i];
        let info = file
            .info(name)
            .ok_or_else(|| file.invalid(format!("tensor `{name}` vanished from the header")))?;
        Ok((file, info))
    }

    /// The `[rows, cols]` shape of `name` when it is a 2-d f32 tensor whose bytes match its
    /// shape, so that [`Self::gather_f32_rows`] can read rows of it; `None` otherwise.
    pub fn f32_table(&self, name: &str) -> Option<(usize, usize)> {
        let (file, info) = self.locate(name).ok()?;
        file.f32_table(info)
    }

    /// Rows `ids` of the 2-d f32 tensor `name` (see [`Self::f32_table`]), concatenated: one
    /// positional read per distinct id, so only those rows are read, and a file truncated since
    /// it was opened gives an I/O error rather than a fault in the mapping. An id past the last
    /// row is an error naming the file.
    pub fn gather_f32_rows(&self, name: &str, ids: &[usize]) -> Result<Vec<f32>> {
        let (file, info) = self.locate(name)?;
        let (rows, cols) = file
            .f32_table(info)
            .ok_or_else(|| file.invalid(format!("tensor `{name}` is not a 2-d float32 table")))?;
        let start = file.data_start + info.data_offsets.0;
        let mut out = vec![0f32; ids.len().saturating_mul(cols)];
        let mut first = std::collections::HashMap::new();
        for (at, &id) in ids.iter().enumerate() {
            if id >= rows {
                return Err(file.invalid(format!(
                    "row {id} of tensor `{name}` is past its {rows} rows"
                )));
            }
            let dst = at * cols..(at + 1) * cols;
            if let Some(&seen) = first.get(&id) {
                out.copy_within(seen * cols..(seen + 1) * cols, dst.start);
                continue;
            }
            first.insert(id, at);
            let offset = start + id * cols * 4;
            #[cfg(unix)]
            {
                use std::os::unix::fs::FileExt;
                file.file
                    .read_exact_at(
                        bytemuck::cast_slice_mut(&mut out[dst.clone()]),
                        offset as u64,
                    )
                    .map_err(|e| Error::io(&file.path, e))?;
                if cfg!(target_endian = "big") {
                    for v in &mut out[dst] {
                        *v = f32::from_bits(u32::from_le(v.to_bits()));
                    }
                }
            }
            #[cfg(not(unix))]
            {
                let row = file.mmap.get(offset..offset + cols * 4).ok_or_else(|| {
                    file.invalid(format!("tensor `{name}` lies outside the file"))
                })?;
                for (v, b) in out[dst].iter_mut().zip(row.chunks_exact(4)) {
                    *v = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                }
            }
        }
        Ok(out)
    }

    /// Loads `name` as a tensor of `dtype` on `device`.
    pub fn load(&self, name: &str, dtype: DType, device: &Device) -> Result<Tensor> {
        let (file, info) = self.locate(name)?;
        let stored = match info.dtype {
            safetensors::Dtype::F32 => DType::F32,
            safetensors::Dtype::F16 => DType::F16,
            safetensors::Dtype::BF16 => DType::BF16,
            safetensors::Dtype::F64 => DType::F64,
            safetensors::Dtype::I64 => DType::I64,
            safetensors::Dtype::I32 => DType::I32,
            safetensors::Dtype::U8 => DType::U8,
            safetensors::Dtype::U32 => DType::U32,
            other => {
                return Err(file.invalid(format!(
                    "tensor `{name}` has dtype {other:?}, which is not supported"
                )))
            }
        };
        let (start, end) = info.data_offsets;
        let range = file.data_start + start..file.data_start + end;
        let mapped = file
            .mmap
            .get(range.clone())
            .ok_or_else(|| file.invalid(format!("tensor `{name}` lies outside the file")))?;
        // Copy the bytes with a positional read rather than through the mapping: the copy is
        // needed anyway, and the page cache is not charged to this process's resident memory.
        // Little-endian f32 (the common case) is read straight into the tensor's own buffer.
        #[cfg(unix)]
        if stored == DType::F32 && dtype == DType::F32 && cfg!(target_endian = "little") {
            use std::os::unix::fs::FileExt;
            let numel: usize = info.shape.iter().product();
            if numel.checked_mul(4) != Some(mapped.len()) {
                return Err(file.invalid(format!(
                    "tensor `{name}` has {} bytes for shape {:?} of {:?}",
                    mapped.len(),
                    info.shape,
                    info.dtype
                )));
            }
            let mut values = vec![0f32; numel];
            file.file
                .read_exact_at(bytemuck::cast_slice_mut(&mut values), range.start as u64)
                .map_err(|e| Error::io(&file.path, e))?;
            return Ok(Tensor::from_vec(values, info.shape.as_slice(), device)?);
        }
        #[cfg(unix)]
        let owned = {
            use std::os::unix::fs::FileExt;
            let mut buf = vec![0u8; mapped.len()];
            file.file
                .read_exact_at(&mut buf, range.start as u64)
                .map_err(|e| Error::io(&file.path, e))?;
            buf
        };
        #[cfg(unix)]
        let bytes: &[u8] = &owned;
        #[cfg(not(unix))]
        let bytes = mapped;
        let numel: usize = info.shape.iter().product();
        if numel * stored.size_in_bytes() != bytes.len() {
            return Err(file.invalid(format!(
                "tensor `{name}` has {} bytes for shape {:?} of {:?}",
                bytes.len(),
                info.shape,
                info.dtype
            )));
        }
        let tensor = Tensor::from_raw_buffer(bytes, stored, &info.shape, device)?;
        Ok(if stored == dtype {
            tensor
        } else {
            tensor.to_dtype(dtype)?
        })
    }
}
