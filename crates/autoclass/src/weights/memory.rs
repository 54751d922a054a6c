//! Tensors decoded into memory, already in PyTorch names and layout: what the Flax and
//! TensorFlow readers produce after transformers' renaming and transposes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

use super::pickle::StorageDType;
use super::safetensors::StoredTensor;
use crate::error::{Error, Result};

/// One decoded tensor: contiguous little-endian elements in PyTorch layout.
#[derive(Clone, Debug)]
pub struct MemoryTensor {
    /// The element type.
    pub dtype: StorageDType,
    /// The shape (PyTorch layout).
    pub shape: Vec<usize>,
    /// `shape.product() * dtype.size_in_bytes()` bytes, little-endian, row-major.
    pub data: Vec<u8>,
    /// Index of the file it came from in the store's list of paths.
    pub file: usize,
}

/// The tensors of a Flax or TensorFlow checkpoint, decoded and renamed.
#[derive(Clone, Debug, Default)]
pub struct MemoryStore {
    paths: Vec<PathBuf>,
    tensors: BTreeMap<String, MemoryTensor>,
    /// Names in file order (for `first_float_dtype`).
    order: Vec<String>,
    /// Whether a tensor whose element count matches the model's may be reshaped to the model's
    /// shape (transformers' `apply_transpose(..., match_shape)` for TensorFlow weights).
    reshape_to_model: bool,
}

impl MemoryStore {
    /// An empty store for the files `paths`.
    pub fn new(paths: Vec<PathBuf>, reshape_to_model: bool) -> Self {
        MemoryStore {
            paths,
            tensors: BTreeMap::new(),
            order: Vec::new(),
            reshape_to_model,
        }
    }

    /// Adds `tensor` as `name`; a name seen before is an error naming the file.
    pub fn insert(&mut self, name: String, tensor: MemoryTensor, what: &str) -> Result<()> {
        if self.tensors.contains_key(&name) {
            let path = self
                .paths
                .get(tensor.file)
                .cloned()
                .unwrap_or_else(|| PathBuf::from("?"));
            return Err(Error::InvalidWeights {
                path,
                reason: format!("two {what} weights map to the same PyTorch name `{name}`"),
            });
        }
        self.order.push(name.clone());
        self.tensors.insert(name, tensor);
        Ok(())
    }

    /// Whether shapes may be matched by reshaping (TensorFlow weights).
    pub fn reshapes_to_model(&self) -> bool {
        self.reshape_to_model
    }

    /// The decoded tensor `name`.
    pub fn tensor(&self, name: &str) -> Option<&MemoryTensor> {
        self.tensors.get(name)
    }

    /// Every tensor name, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    /// Whether the checkpoint holds `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// The stored dtype and shape of `name` (PyTorch layout).
    pub fn info(&self, name: &str) -> Option<StoredTensor> {
        let t = self.tensors.get(name)?;
        Some(StoredTensor {
            dtype: t.dtype.safetensors_dtype(),
            shape: t.shape.clone(),
        })
    }

    /// The file `name` came from.
    pub fn path_of(&self, name: &str) -> Option<&Path> {
        let t = self.tensors.get(name)?;
        self.paths.get(t.file).map(PathBuf::as_path)
    }

    /// The dtype of the first floating-point tensor in file order.
    pub fn first_float_dtype(&self) -> Option<DType> {
        self.order
            .iter()
            .filter_map(|n| self.tensors.get(n))
            .find(|t| {
                matches!(
                    t.dtype,
                    StorageDType::F64 | StorageDType::F32 | StorageDType::F16 | StorageDType::BF16
                )
            })
            .map(|t| t.dtype.candle_dtype())
    }

    /// Loads `name` as a tensor of `dtype` on `device`.
    pub fn load(&self, name: &str, dtype: DType, device: &Device) -> Result<Tensor> {
        let t = self.tensors.get(name).ok_or_else(|| Error::MissingTensor {
            name: name.to_string(),
        })?;
        let shape = t.shape.as_slice();
        let tensor = match t.dtype {
            StorageDType::I8 => {
                let wide: Vec<i16> = t.data.iter().map(|&b| i16::from(b as i8)).collect();
                Tensor::from_vec(wide, shape, device)?
            }
            StorageDType::Bool => {
                let norm: Vec<u8> = t.data.iter().map(|&b| u8::from(b != 0)).collect();
                Tensor::from_vec(norm, shape, device)?
            }
            other => Tensor::from_raw_buffer(&t.data, other.candle_dtype(), shape, device)?,
        };
        Ok(if tensor.dtype() == dtype {
            tensor
        } else {
            tensor.to_dtype(dtype)?
        })
    }
}

/// The number of elements of `shape`, or `None` on overflow.
pub fn numel(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

/// Permutes the axes of a row-major array of `elem`-byte elements: output axis `i` is input
/// axis `axes[i]` (numpy's `transpose(axes)`). Returns the new data and shape, or `None` when
/// `axes` is not a permutation of the dimensions or the sizes do not add up.
pub fn permute(
    data: &[u8],
    shape: &[usize],
    elem: usize,
    axes: &[usize],
) -> Option<(Vec<u8>, Vec<usize>)> {
    let rank = shape.len();
    if axes.len() != rank {
        return None;
    }
    let mut seen = vec![false; rank];
    for &a in axes {
        let slot = seen.get_mut(a)?;
        if *slot {
            return None;
        }
        *slot = true;
    }
    let total = numel(shape)?;
    if total.checked_mul(elem)? != data.len() {
        return None;
    }
    // Row-major strides of the input, in elements.
    let mut in_strides = vec![0usize; rank];
    let mut acc = 1usize;
    for i in (0..rank).rev() {
        *in_strides.get_mut(i)? = acc;
        acc = acc.checked_mul(*shape.get(i)?)?;
    }
    let out_shape: Vec<usize> = axes
        .iter()
        .map(|&a| shape.get(a).copied())
        .collect::<Option<_>>()?;
    let out_strides: Vec<usize> = axes
        .iter()
        .map(|&a| in_strides.get(a).copied())
        .collect::<Option<_>>()?;
    let mut out = Vec::with_capacity(data.len());
    if total == 0 {
        return Some((out, out_shape));
    }
    let mut index = vec![0usize; rank];
    loop {
        let src: usize = index.iter().zip(&out_strides).map(|(i, s)| i * s).sum();
        let at = src.checked_mul(elem)?;
        out.extend_from_slice(data.get(at..at.checked_add(elem)?)?);
        // odometer over the output dimensions
        let mut dim = rank;
        loop {
            if dim == 0 {
                return Some((out, out_shape));
            }
            dim -= 1;
            let i = index.get_mut(dim)?;
            *i += 1;
            if *i < *out_shape.get(dim)? {
                break;
            }
            *i = 0;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn permute_matches_numpy() {
        // a = arange(6).reshape(2, 3); a.T
        let data: Vec<u8> = (0..6).collect();
        let (out, shape) = permute(&data, &[2, 3], 1, &[1, 0]).unwrap();
        assert_eq!(shape, vec![3, 2]);
        assert_eq!(out, vec![0, 3, 1, 4, 2, 5]);
        // arange(24).reshape(2,3,2,2).transpose(3,2,0,1)[1,0,1,2] == a[1,2,0,1]
        let data: Vec<u8> = (0..24).collect();
        let (out, shape) = permute(&data, &[2, 3, 2, 2], 1, &[3, 2, 0, 1]).unwrap();
        assert_eq!(shape, vec![2, 2, 2, 3]);
        let idx = (2 * 2 + 1) * 3 + 2; // [1,0,1,2] in shape (2,2,2,3)
        assert_eq!(out[idx], 12 + 2 * 4 + 1); // a[1,2,0,1]
        assert!(permute(&data, &[2, 3, 2, 2], 1, &[0, 0, 1, 2]).is_none());
        assert!(permute(&data, &[2, 3, 2], 1, &[0, 1, 2]).is_none());
    }
}
