//! Flax checkpoints (`flax_model.msgpack`), read with our bounded MessagePack parser
//! ([`super::msgpack`]) and renamed to PyTorch names the way transformers 4.x's
//! `load_flax_weights_in_pytorch_model` (modeling_flax_pytorch_utils.py) does.
//!
//! The file is `flax.serialization.to_bytes(params)`: a nested map of string keys whose leaves
//! are extension values of type 1 (ndarray) or 3 (numpy scalar), each payload itself a
//! MessagePack array `(shape, dtype name, raw C-order bytes)`. Renaming, applied to the last
//! key part: `kernel` → `weight` (4-D conv kernels permuted `(3, 2, 0, 1)`, others transposed by
//! reversing every axis, numpy's `.T`), `scale` / `embedding` → `weight`, a name containing
//! `mean` / `var` → `running_mean` / `running_var`; with `batch_stats` present the leading
//! `params` / `batch_stats` level is dropped. `bfloat16` arrays become float32, as transformers
//! converts them. Adding or stripping the base model prefix is the [`super::VarBuilder`]'s job,
//! as for every format. transformers' one model-dependent exception (a PyTorch parameter that
//! is itself named `kernel`) does not occur in any architecture here.

use std::path::{Path, PathBuf};

use super::memory::{numel, permute, MemoryStore, MemoryTensor};
use super::msgpack::{self, Value};
use super::pickle::StorageDType;
use crate::error::{Error, Result};

/// Flax weights file name (`FLAX_WEIGHTS_NAME`).
pub const FLAX_WEIGHTS_NAME: &str = "flax_model.msgpack";

/// The most dimensions one array may have.
pub const MAX_RANK: usize = 32;

/// flax.serialization's extension type codes.
const EXT_NDARRAY: i8 = 1;
const EXT_NPSCALAR: i8 = 3;

fn bad(path: &Path, reason: impl Into<String>) -> Error {
    Error::InvalidFlaxWeights {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Parses the numpy dtype name flax writes.
fn dtype_from_name(name: &str) -> Option<StorageDType> {
    Some(match name {
        "float64" => StorageDType::F64,
        "float32" => StorageDType::F32,
        "float16" => StorageDType::F16,
        "bfloat16" => StorageDType::BF16,
        "int64" => StorageDType::I64,
        "int32" => StorageDType::I32,
        "int16" => StorageDType::I16,
        "int8" => StorageDType::I8,
        "uint8" => StorageDType::U8,
        "bool" => StorageDType::Bool,
        _ => return None,
    })
}

/// bfloat16 → float32 (exact: the bf16 bits are the high half of the f32).
fn bf16_to_f32(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len().saturating_mul(2));
    for c in data.chunks_exact(2) {
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(c);
    }
    out
}

/// Decodes one ndarray extension payload into a tensor (flax layout).
fn decode_array(path: &Path, key: &str, payload: &[u8], file: usize) -> Result<MemoryTensor> {
    let value = msgpack::parse(payload)
        .map_err(|e| bad(path, format!("array `{key}`: {} (inside the array)", e)))?;
    let Value::Array(parts) = value else {
        return Err(bad(
            path,
            format!(
                "array `{key}`: the payload is a {}, not (shape, dtype, data)",
                value.kind()
            ),
        ));
    };
    let [shape, dtype, data] = parts.as_slice() else {
        return Err(bad(
            path,
            format!(
                "array `{key}`: the payload has {} parts, not 3 (shape, dtype, data)",
                parts.len()
            ),
        ));
    };
    let Value::Array(dims) = shape else {
        return Err(bad(
            path,
            format!("array `{key}`: the shape is a {}", shape.kind()),
        ));
    };
    if dims.len() > MAX_RANK {
        return Err(bad(
            path,
            format!(
                "array `{key}` has {} dimensions (at most {MAX_RANK})",
                dims.len()
            ),
        ));
    }
    let shape: Vec<usize> = dims
        .iter()
        .map(|d| match d {
            Value::Int(n) => usize::try_from(*n)
                .map_err(|_| bad(path, format!("array `{key}` has dimension {n}"))),
            other => Err(bad(
                path,
                format!("array `{key}`: a dimension is a {}", other.kind()),
            )),
        })
        .collect::<Result<_>>()?;
    let Value::Str(dtype_name) = dtype else {
        return Err(bad(
            path,
            format!("array `{key}`: the dtype is a {}", dtype.kind()),
        ));
    };
    let dtype = dtype_from_name(dtype_name).ok_or_else(|| {
        bad(
            path,
            format!("array `{key}` has unsupported dtype {dtype_name:?}"),
        )
    })?;
    let Value::Bin(bytes) = data else {
        return Err(bad(
            path,
            format!("array `{key}`: the data is a {}", data.kind()),
        ));
    };
    let expected = numel(&shape)
        .and_then(|n| n.checked_mul(dtype.size_in_bytes()))
        .ok_or_else(|| {
            bad(
                path,
                format!("array `{key}`: the size of shape {shape:?} overflows"),
            )
        })?;
    if expected != bytes.len() {
        return Err(bad(
            path,
            format!(
                "array `{key}` of shape {shape:?} and dtype {dtype_name} needs {expected} bytes, the file holds {}",
                bytes.len()
            ),
        ));
    }
    let (dtype, data) = if dtype == StorageDType::BF16 {
        (StorageDType::F32, bf16_to_f32(bytes))
    } else {
        (dtype, bytes.to_vec())
    };
    Ok(MemoryTensor {
        dtype,
        shape,
        data,
        file,
    })
}

/// Walks the nested maps, collecting `(key parts, tensor)` leaves.
fn collect<'a>(
    path: &Path,
    value: &Value<'a>,
    prefix: &mut Vec<&'a str>,
    file: usize,
    out: &mut Vec<(Vec<String>, MemoryTensor)>,
) -> Result<()> {
    match value {
        Value::Map(items) => {
            for (k, v) in items {
                let Value::Str(k) = k else {
                    return Err(bad(
                        path,
                        format!(
                            "a key under `{}` is a {}, not a string",
                            prefix.join("."),
                            k.kind()
                        ),
                    ));
                };
                if k.is_empty() || k.contains('.') {
                    return Err(bad(
                        path,
                        format!(
                            "key {k:?} under `{}` is empty or has a dot",
                            prefix.join(".")
                        ),
                    ));
                }
                if *k == "__msgpack_chunked_array__" {
                    return Err(bad(
                        path,
                        format!(
                            "`{}` is an array over 1 GiB saved in chunks; chunked arrays are not supported",
                            prefix.join(".")
                        ),
                    ));
                }
                prefix.push(k);
                collect(path, v, prefix, file, out)?;
                prefix.pop();
            }
            Ok(())
        }
        Value::Ext(code, payload) if *code == EXT_NDARRAY || *code == EXT_NPSCALAR => {
            let key = prefix.join(".");
            let t = decode_array(path, &key, payload, file)?;
            out.push((prefix.iter().map(|s| s.to_string()).collect(), t));
            Ok(())
        }
        Value::Ext(code, _) => Err(bad(
            path,
            format!(
                "`{}` is a msgpack extension of type {code}, not an array",
                prefix.join(".")
            ),
        )),
        other => Err(bad(
            path,
            format!(
                "`{}` is a {}, not an array or a map of arrays",
                prefix.join("."),
                other.kind()
            ),
        )),
    }
}

/// transformers' renaming of one flattened Flax key, and the transpose it implies.
fn rename(
    mut parts: Vec<String>,
    t: MemoryTensor,
    has_batch_stats: bool,
) -> Option<(String, MemoryTensor)> {
    let last = parts.last()?.clone();
    let elem = t.dtype.size_in_bytes();
    let mut t = t;
    if last == "kernel" {
        let rank = t.shape.len();
        let axes: Vec<usize> = if rank == 4 {
            vec![3, 2, 0, 1]
        } else {
            (0..rank).rev().collect()
        };
        let (data, shape) = permute(&t.data, &t.shape, elem, &axes)?;
        t.data = data;
        t.shape = shape;
        *parts.last_mut()? = "weight".into();
    } else if last == "scale" || last == "embedding" {
        *parts.last_mut()? = "weight".into();
    } else if last.contains("mean") {
        *parts.last_mut()? = "running_mean".into();
    } else if last.contains("var") {
        *parts.last_mut()? = "running_var".into();
    }
    let parts = if has_batch_stats {
        parts.get(1..)?
    } else {
        parts.as_slice()
    };
    Some((parts.join("."), t))
}

/// Reads one `flax_model.msgpack` file's arrays as `(flax key parts, tensor)`.
fn read_file(path: &Path, file: usize) -> Result<Vec<(Vec<String>, MemoryTensor)>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    parse_file(path, &bytes, file)
}

fn parse_file(path: &Path, bytes: &[u8], file: usize) -> Result<Vec<(Vec<String>, MemoryTensor)>> {
    if bytes.starts_with(b"version https://git-lfs.github.com/spec") {
        return Err(bad(
            path,
            "this is a Git LFS pointer file, not the weights: fetch the real file (`git lfs pull`)",
        ));
    }
    let root = msgpack::parse(bytes).map_err(|e| bad(path, e.to_string()))?;
    if !matches!(root, Value::Map(_)) {
        return Err(bad(
            path,
            format!(
                "the top level is a {}, not a map of parameters",
                root.kind()
            ),
        ));
    }
    let mut out = Vec::new();
    collect(path, &root, &mut Vec::new(), file, &mut out)?;
    Ok(out)
}

/// Builds the store from the arrays of every file, renamed to PyTorch names.
fn build(paths: Vec<PathBuf>, arrays: Vec<(Vec<String>, MemoryTensor)>) -> Result<MemoryStore> {
    let has_batch_stats = arrays
        .iter()
        .any(|(parts, _)| parts.first().is_some_and(|p| p == "batch_stats"));
    let mut store = MemoryStore::new(paths.clone(), false);
    for (parts, t) in arrays {
        let key = parts.join(".");
        let path = paths.get(t.file).cloned().unwrap_or_default();
        let (name, t) = rename(parts, t, has_batch_stats)
            .filter(|(n, _)| !n.is_empty())
            .ok_or_else(|| bad(&path, format!("cannot rename array `{key}`")))?;
        store.insert(name, t, "Flax")?;
    }
    Ok(store)
}

/// Reads `flax_model.msgpack` into PyTorch names and layout.
pub fn open(path: &Path) -> Result<MemoryStore> {
    let arrays = read_file(path, 0)?;
    build(vec![path.to_path_buf()], arrays)
}

/// Reads Flax weights already in memory (`path` names them in errors).
pub fn from_bytes(path: &Path, bytes: &[u8]) -> Result<MemoryStore> {
    let arrays = parse_file(path, bytes, 0)?;
    build(vec![path.to_path_buf()], arrays)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn ndarray(shape: &[u8], dtype: &str, data: &[u8]) -> Vec<u8> {
        let mut p = vec![0x93, 0x90 | shape.len() as u8];
        p.extend_from_slice(shape);
        p.push(0xa0 | dtype.len() as u8);
        p.extend_from_slice(dtype.as_bytes());
        p.extend_from_slice(&[0xc4, data.len() as u8]);
        p.extend_from_slice(data);
        let mut out = vec![0xc7, p.len() as u8, 1];
        out.extend(p);
        out
    }

    fn key(k: &str) -> Vec<u8> {
        let mut out = vec![0xa0 | k.len() as u8];
        out.extend_from_slice(k.as_bytes());
        out
    }

    #[test]
    fn kernels_are_transposed_and_renamed() {
        // {"dense": {"kernel": f32[2,3] = 0..6, "bias": f32[3]}, "ln": {"scale": f32[1]}}
        let kernel: Vec<u8> = (0..6).flat_map(|i| (i as f32).to_le_bytes()).collect();
        let bias: Vec<u8> = [1f32, 2., 3.]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let mut doc = vec![0x82];
        doc.extend(key("dense"));
        doc.push(0x82);
        doc.extend(key("kernel"));
        doc.extend(ndarray(&[2, 3], "float32", &kernel));
        doc.extend(key("bias"));
        doc.extend(ndarray(&[3], "float32", &bias));
        doc.extend(key("ln"));
        doc.push(0x81);
        doc.extend(key("scale"));
        doc.extend(ndarray(&[1], "bfloat16", &[0x80, 0x3f]));
        let store = from_bytes(Path::new("x.msgpack"), &doc).unwrap();
        let names: Vec<&str> = store.names().collect();
        assert_eq!(names, ["dense.bias", "dense.weight", "ln.weight"]);
        let w = store
            .load(
                "dense.weight",
                candle_core::DType::F32,
                &candle_core::Device::Cpu,
            )
            .unwrap();
        assert_eq!(
            w.to_vec2::<f32>().unwrap(),
            vec![vec![0., 3.], vec![1., 4.], vec![2., 5.]]
        );
        let s = store
            .load(
                "ln.weight",
                candle_core::DType::F32,
                &candle_core::Device::Cpu,
            )
            .unwrap();
        assert_eq!(s.to_vec1::<f32>().unwrap(), vec![1.0]);
    }

    #[test]
    fn sizes_must_match() {
        let mut doc = vec![0x81];
        doc.extend(key("kernel"));
        doc.extend(ndarray(&[2, 3], "float32", &[0; 8]));
        let e = from_bytes(Path::new("x.msgpack"), &doc)
            .unwrap_err()
            .to_string();
        assert!(e.contains("needs 24 bytes"), "{e}");
        assert!(e.contains("x.msgpack"), "{e}");
    }
}
