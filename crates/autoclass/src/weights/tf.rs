//! TensorFlow checkpoints (`tf_model.h5`, Keras `save_weights` through h5py), read with our own
//! HDF5 reader ([`super::hdf5`]) and renamed to PyTorch names as transformers 4.x's
//! `convert_tf_weight_name_to_pt_weight_name` / `load_tf2_state_dict_in_pytorch_model`
//! (modeling_tf_pytorch_utils.py) do.
//!
//! Layout of the file: the root attribute `layer_names` lists the top-level Keras layers; each
//! layer's group has the attribute `weight_names` (both may be split into `name0`, `name1`, ...
//! when over 64 KiB, as Keras does); weight `w` of layer `l` is the dataset `/l/w`, where `w` is
//! like `tf_bert_for_sequence_classification/bert/embeddings/word_embeddings/weight:0`.
//!
//! Renaming: `:0` removed, `a___b` levels become `b`, `_._` becomes a level separator, the first
//! level (the model's name) is dropped; `kernel` / `embeddings` / `gamma` → `weight`, `beta` →
//! `bias`, `pointwise_kernel` / `depthwise_kernel` → `pointwise.weight` / `depthwise.weight`.
//! Transposes: 4-D `kernel` axes `(3, 2, 0, 1)`, 3-D `kernel` `(2, 1, 0)`, other kernels (and
//! anything under `emb_projs` / `out_projs`) reversed. A tensor whose element count matches the
//! model's but whose shape does not is reshaped to the model's shape when loaded, as
//! `apply_transpose(..., match_shape)` does. As in transformers, the base model prefix is added
//! or stripped by the [`super::VarBuilder`].

use std::path::Path;

use super::hdf5::{self, ElemType, File};
use super::memory::{permute, MemoryStore, MemoryTensor};
use super::pickle::StorageDType;
use crate::error::{Error, Result};

/// TensorFlow 2 weights file name (`TF2_WEIGHTS_NAME`).
pub const TF2_WEIGHTS_NAME: &str = "tf_model.h5";

/// The most `attr0`, `attr1`, ... chunks of one attribute read.
const MAX_ATTRIBUTE_CHUNKS: usize = 4096;

fn bad(path: &Path, reason: impl Into<String>) -> Error {
    Error::InvalidTfWeights {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Keras' `load_attributes_from_hdf5_group`: `name`, else `name0`, `name1`, ... concatenated.
fn chunked_attribute(
    file: &File<'_>,
    addr: u64,
    name: &str,
) -> std::result::Result<Option<Vec<String>>, hdf5::H5Error> {
    let attrs = file.attributes(addr)?;
    if let Some(v) = attrs.strings(file, name)? {
        return Ok(Some(v));
    }
    let mut out: Option<Vec<String>> = None;
    for i in 0..MAX_ATTRIBUTE_CHUNKS {
        match attrs.strings(file, &format!("{name}{i}"))? {
            Some(v) => out.get_or_insert_with(Vec::new).extend(v),
            None => return Ok(out),
        }
    }
    Err(hdf5::H5Error(format!(
        "attribute {name} is split into more than {MAX_ATTRIBUTE_CHUNKS} chunks"
    )))
}

/// How a TF weight is transposed into PyTorch layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transpose {
    /// Unchanged.
    No,
    /// All axes reversed (numpy `.T`).
    Simple,
    /// `(2, 1, 0)`.
    Conv1d,
    /// `(3, 2, 0, 1)`.
    Conv2d,
}

/// transformers' `convert_tf_weight_name_to_pt_weight_name` (without `start_prefix_to_remove`,
/// which the VarBuilder's prefix handling covers): the PyTorch name and the transpose.
pub fn tf_to_pt_name(
    tf_name: &str,
    rank: usize,
) -> std::result::Result<(String, Transpose), String> {
    let name = tf_name.replace(":0", "");
    if (name.len() > 2048 && name.contains("___")) || name.matches("___").count() > 10 {
        return Err(format!(
            "TF variable name is too long or contains too many ___ separators: {name}"
        ));
    }
    // re.sub(r"/[^/]*___([^/]*)/", r"/\1/"): non-overlapping, so a level right after a
    // replaced one (whose closing slash was consumed) is left alone.
    let levels: Vec<&str> = name.split('/').collect();
    let mut rebuilt: Vec<String> = Vec::with_capacity(levels.len());
    let mut slash_consumed = false;
    let last = levels.len().saturating_sub(1);
    for (i, level) in levels.iter().enumerate() {
        let middle = i > 0 && i < last;
        match level.rfind("___") {
            Some(at) if middle && !slash_consumed => {
                rebuilt.push(level.get(at + 3..).unwrap_or_default().to_string());
                slash_consumed = true;
            }
            _ => {
                rebuilt.push(level.to_string());
                slash_consumed = false;
            }
        }
    }
    let name = rebuilt.join("/").replace("_._", "/");
    // re.sub(r"//+", "/"): runs of slashes become one.
    let mut collapsed = String::with_capacity(name.len());
    for ch in name.chars() {
        if ch == '/' && collapsed.ends_with('/') {
            continue;
        }
        collapsed.push(ch);
    }
    let mut parts: Vec<String> = collapsed.split('/').map(str::to_string).collect();
    if parts.len() > 1 {
        parts.remove(0);
    }
    let last = parts
        .last()
        .cloned()
        .ok_or_else(|| format!("empty weight name {tf_name:?}"))?;
    let transpose = if last == "kernel" && rank == 4 {
        Transpose::Conv2d
    } else if last == "kernel" && rank == 3 {
        Transpose::Conv1d
    } else if ["kernel", "pointwise_kernel", "depthwise_kernel"].contains(&last.as_str())
        || parts.iter().any(|p| p == "emb_projs" || p == "out_projs")
    {
        Transpose::Simple
    } else {
        Transpose::No
    };
    let renamed = match last.as_str() {
        "kernel" | "embeddings" | "gamma" => "weight".to_string(),
        "beta" => "bias".to_string(),
        "pointwise_kernel" => "pointwise.weight".to_string(),
        "depthwise_kernel" => "depthwise.weight".to_string(),
        other => other.to_string(),
    };
    if let Some(l) = parts.last_mut() {
        *l = renamed;
    }
    Ok((parts.join("."), transpose))
}

/// Converts a dataset to a little-endian tensor of a torch dtype.
fn to_tensor(path: &Path, name: &str, ds: hdf5::Dataset<'_>) -> Result<MemoryTensor> {
    let (dtype, size, big_endian) = match ds.elem {
        ElemType::Float {
            size,
            big_endian,
            bf16,
        } => (
            match (size, bf16) {
                (2, true) => StorageDType::BF16,
                (2, false) => StorageDType::F16,
                (4, _) => StorageDType::F32,
                _ => StorageDType::F64,
            },
            size,
            big_endian,
        ),
        ElemType::Int {
            size,
            big_endian,
            signed,
        } => (
            match (size, signed) {
                (1, true) => StorageDType::I8,
                (1, false) => StorageDType::U8,
                (2, true) => StorageDType::I16,
                (4, true) => StorageDType::I32,
                (8, true) => StorageDType::I64,
                _ => {
                    return Err(bad(
                        path,
                        format!(
                            "weight {name}: unsigned {}-bit integers are not supported",
                            size * 8
                        ),
                    ))
                }
            },
            size,
            big_endian,
        ),
        other => {
            return Err(bad(
                path,
                format!("weight {name} holds {other:?}, not numbers"),
            ))
        }
    };
    let mut data = ds.data.to_vec();
    if big_endian && size > 1 {
        for c in data.chunks_exact_mut(size) {
            c.reverse();
        }
    }
    Ok(MemoryTensor {
        dtype,
        shape: ds.shape,
        data,
        file: 0,
    })
}

/// Parses a Keras weights file already in memory (`path` names it in errors).
pub fn from_bytes(path: &Path, bytes: &[u8]) -> Result<MemoryStore> {
    if bytes.starts_with(b"version https://git-lfs.github.com/spec") {
        return Err(bad(
            path,
            "this is a Git LFS pointer file, not the weights: fetch the real file (`git lfs pull`)",
        ));
    }
    let h5 = |e: hdf5::H5Error| bad(path, e.0);
    let file = File::parse(bytes).map_err(h5)?;
    let root = file.root();
    let layers = chunked_attribute(&file, root, "layer_names")
        .map_err(h5)?
        .ok_or_else(|| {
            bad(
                path,
                "the root group has no `layer_names` attribute: this is not a Keras weights file (model.save_weights)",
            )
        })?;
    let mut store = MemoryStore::new(vec![path.to_path_buf()], true);
    let mut decoded = 0usize;
    for layer in &layers {
        if layer.is_empty() || layer.contains('/') {
            return Err(bad(
                path,
                format!("layer name {layer:?} is empty or has a '/'"),
            ));
        }
        let group = file
            .child(root, layer)
            .map_err(h5)?
            .ok_or_else(|| bad(path, format!("layer {layer} is listed but has no group")))?;
        let weights = chunked_attribute(&file, group, "weight_names")
            .map_err(h5)?
            .ok_or_else(|| {
                bad(
                    path,
                    format!("layer {layer} has no `weight_names` attribute"),
                )
            })?;
        for weight in &weights {
            let addr = file
                .lookup(&format!("{layer}/{weight}"))
                .map_err(h5)?
                .ok_or_else(|| {
                    bad(
                        path,
                        format!("weight {weight} of layer {layer} is listed but absent"),
                    )
                })?;
            let ds = file
                .dataset(addr)
                .map_err(|e| bad(path, format!("weight {weight}: {}", e.0)))?;
            // Every dataset's bytes lie in the file; more than the file's size in total means the
            // same data is reached through several links, which must not multiply memory.
            decoded = decoded.saturating_add(ds.data.len());
            if decoded > bytes.len() {
                return Err(bad(
                    path,
                    format!(
                        "the weights add up to more bytes than the file holds ({} bytes): the same data is linked several times",
                        bytes.len()
                    ),
                ));
            }
            let t = to_tensor(path, weight, ds)?;
            let (name, transpose) =
                tf_to_pt_name(weight, t.shape.len()).map_err(|r| bad(path, r))?;
            let axes: Option<Vec<usize>> = match transpose {
                Transpose::No => None,
                Transpose::Simple => Some((0..t.shape.len()).rev().collect()),
                Transpose::Conv1d => Some(vec![2, 1, 0]),
                Transpose::Conv2d => Some(vec![3, 2, 0, 1]),
            };
            let t = match axes {
                None => t,
                Some(axes) => {
                    let elem = t.dtype.size_in_bytes();
                    let (data, shape) =
                        permute(&t.data, &t.shape, elem, &axes).ok_or_else(|| {
                            bad(path, format!("weight {weight} cannot be transposed"))
                        })?;
                    MemoryTensor { data, shape, ..t }
                }
            };
            store.insert(name, t, "TensorFlow")?;
        }
    }
    Ok(store)
}

/// Reads `tf_model.h5` into PyTorch names and layout.
pub fn open(path: &Path) -> Result<MemoryStore> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    from_bytes(path, &bytes)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_transformers() {
        let cases = [
            (
                "tf_bert_for_sequence_classification/bert/encoder/layer_._0/attention/self/query/kernel:0",
                2,
                "bert.encoder.layer.0.attention.self.query.weight",
                Transpose::Simple,
            ),
            (
                "tf_bert_model/bert/embeddings/LayerNorm/gamma:0",
                1,
                "bert.embeddings.LayerNorm.weight",
                Transpose::No,
            ),
            (
                "tf_bert_model/bert/embeddings/LayerNorm/beta:0",
                1,
                "bert.embeddings.LayerNorm.bias",
                Transpose::No,
            ),
            (
                "m/convnext/embeddings/patch_embeddings/kernel:0",
                4,
                "convnext.embeddings.patch_embeddings.weight",
                Transpose::Conv2d,
            ),
            ("m/w2v/conv/kernel:0", 3, "w2v.conv.weight", Transpose::Conv1d),
            ("m/a/x___y/b:0", 1, "a.y.b", Transpose::No),
            ("final_logits_bias:0", 1, "final_logits_bias", Transpose::No),
            (
                "m/distilbert/embeddings/word_embeddings/weight:0",
                2,
                "distilbert.embeddings.word_embeddings.weight",
                Transpose::No,
            ),
        ];
        for (tf, rank, pt, tr) in cases {
            assert_eq!(
                tf_to_pt_name(tf, rank).unwrap(),
                (pt.to_string(), tr),
                "{tf}"
            );
        }
        assert!(tf_to_pt_name(&"a___".repeat(11), 1).is_err());
    }
}
