//! Deterministic synthetic weights that Python and Rust both generate bit for bit.
//!
//! Real-size checkpoints (swin-tiny: 28M parameters) are too large to commit, so tests and the
//! seed tour regenerate them from a committed manifest of `[name, shape, kind]` with the value
//! generator specified in `checkpoints/swin-tiny-patch4-window7-224/SYNTHETIC_WEIGHTS.md`
//! (FNV-1a of the name seeds a SplitMix64 stream; `kind` scales the values).

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use serde_json::Value;

use crate::error::{Error, Result};

/// How a synthetic tensor's values are scaled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `1 + 0.1·v` (norm weights).
    NormWeight,
    /// `0.1·v` (biases and other 1-D tensors).
    Bias,
    /// `v / sqrt(fan_in)` (everything else).
    Weight,
}

impl std::str::FromStr for Kind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "norm_weight" => Ok(Kind::NormWeight),
            "bias" => Ok(Kind::Bias),
            "weight" => Ok(Kind::Weight),
            other => Err(Error::input(format!(
                "unknown synthetic weight kind `{other}`"
            ))),
        }
    }
}

fn fnv1a(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The values of tensor `name` of `shape` (row-major), as f32.
pub fn values(name: &str, shape: &[usize], kind: Kind) -> Vec<f32> {
    let numel: usize = shape.iter().product();
    let seed = fnv1a(name);
    let fan_in = if shape.is_empty() || shape[0] == 0 {
        1.0
    } else {
        (numel / shape[0]) as f64
    };
    let scale = fan_in.sqrt();
    (0..numel as u64)
        .map(|i| {
            let mut z = seed.wrapping_add((i + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            let u = (z >> 40) as f64 / (1u64 << 24) as f64;
            let v = 2.0 * u - 1.0;
            let x = match kind {
                Kind::NormWeight => 1.0 + 0.1 * v,
                Kind::Bias => 0.1 * v,
                Kind::Weight => v / scale,
            };
            x as f32
        })
        .collect()
}

/// Writes `model.safetensors` at `out` with the tensors listed in the JSON manifest at `manifest`.
pub fn write_checkpoint(manifest: &Path, out: &Path) -> Result<()> {
    let text = crate::util::read_text(manifest)?;
    let entries: Vec<(String, Vec<usize>, String)> = serde_json::from_str::<Value>(&text)
        .and_then(serde_json::from_value)
        .map_err(|source| Error::Json {
            path: manifest.to_path_buf(),
            source,
        })?;
    let mut tensors = HashMap::new();
    for (name, shape, kind) in entries {
        let kind: Kind = kind.parse()?;
        let numel = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        if numel.is_none_or(|n| n > 1 << 30) {
            return Err(Error::input(format!(
                "{}: tensor `{name}` is too large",
                manifest.display()
            )));
        }
        let data = values(&name, &shape, kind);
        tensors.insert(name, Tensor::from_vec(data, shape, &Device::Cpu)?);
    }
    candle_core::safetensors::save(&tensors, out).map_err(|e| match e {
        candle_core::Error::Io(source) => Error::io(out, source),
        other => Error::Tensor(other),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_of_empty_and_a() {
        assert_eq!(fnv1a(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a("a"), 0xaf63_dc4c_8601_ec8c);
    }
}
