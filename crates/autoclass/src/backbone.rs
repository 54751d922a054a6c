//! AutoBackbone's stage selection: `out_features` / `out_indices`, aligned and validated exactly
//! as transformers' `BackboneConfigMixin.set_output_features_output_indices` and
//! `verify_out_features_out_indices` do it (`backbone_utils.py`), error messages included.

use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// The stages a backbone returns: names (in stage order) and indices (as given; negative
/// indices are kept, as transformers keeps them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StageSelection {
    /// `out_features`.
    pub out_features: Vec<String>,
    /// `out_indices`.
    pub out_indices: Vec<i64>,
}

fn py_list_str(items: &[String]) -> String {
    format!(
        "[{}]",
        items
            .iter()
            .map(|s| format!("'{s}'"))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

fn py_list_int(items: &[i64]) -> String {
    format!(
        "[{}]",
        items
            .iter()
            .map(i64::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    )
}

fn py_tuple_int(items: &[i64]) -> String {
    match items {
        [one] => format!("({one},)"),
        _ => format!(
            "({})",
            items
                .iter()
                .map(i64::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn invalid(field: &str, message: String) -> Error {
    Error::InvalidConfig {
        path: None,
        field: field.to_string(),
        reason: message,
    }
}

/// transformers' `verify_out_features_out_indices`.
fn verify(
    out_features: Option<&[String]>,
    out_indices: Option<&[i64]>,
    stage_names: &[String],
) -> Result<()> {
    let n = stage_names.len() as i64;
    if let Some(features) = out_features {
        if let Some(bad) = features.iter().find(|f| !stage_names.contains(f)) {
            let _ = bad;
            return Err(invalid(
                "out_features",
                format!(
                    "out_features must be a subset of stage_names: {} got {}",
                    py_list_str(stage_names),
                    py_list_str(features)
                ),
            ));
        }
        let mut seen = std::collections::HashSet::new();
        if !features.iter().all(|f| seen.insert(f)) {
            return Err(invalid(
                "out_features",
                format!(
                    "out_features must not contain any duplicates, got {}",
                    py_list_str(features)
                ),
            ));
        }
        let mut sorted: Vec<String> = features.to_vec();
        sorted.sort_by_key(|f| stage_names.iter().position(|s| s == f));
        if sorted != features {
            return Err(invalid(
                "out_features",
                format!(
                    "out_features must be in the same order as stage_names, expected {} got {}",
                    py_list_str(&sorted),
                    py_list_str(features)
                ),
            ));
        }
    }
    if let Some(indices) = out_indices {
        let positive: Vec<i64> = indices
            .iter()
            .map(|&i| if i < 0 { i.rem_euclid(n.max(1)) } else { i })
            .collect();
        if positive.iter().any(|&i| i < 0 || i >= n) {
            return Err(invalid(
                "out_indices",
                format!(
                    "out_indices must be valid indices for stage_names {}, got {}",
                    py_list_str(stage_names),
                    py_list_int(indices)
                ),
            ));
        }
        let mut seen = std::collections::HashSet::new();
        if !positive.iter().all(|i| seen.insert(*i)) {
            // transformers compares a tuple to a list here, so the "equivalent to" part is always shown.
            return Err(invalid(
                "out_indices",
                format!(
                    "out_indices must not contain any duplicates, got {}(equivalent to {}))",
                    py_list_int(indices),
                    py_tuple_int(&positive)
                ),
            ));
        }
        let mut order: Vec<usize> = (0..indices.len()).collect();
        order.sort_by_key(|&k| positive[k]);
        let sorted_negative: Vec<i64> = order.iter().map(|&k| indices[k]).collect();
        if sorted_negative != indices {
            return Err(invalid(
                "out_indices",
                format!(
                    "out_indices must be in the same order as stage_names, expected {} got {}",
                    py_list_int(&sorted_negative),
                    py_list_int(indices)
                ),
            ));
        }
    }
    if let (Some(features), Some(indices)) = (out_features, out_indices) {
        if features.len() != indices.len() {
            return Err(invalid(
                "out_features",
                "out_features and out_indices should have the same length if both are set".into(),
            ));
        }
        let by_index: Vec<&String> = indices
            .iter()
            .filter_map(|&i| stage_names.get(if i < 0 { (i + n) as usize } else { i as usize }))
            .collect();
        if by_index.len() != features.len() || by_index.iter().zip(features).any(|(a, b)| *a != b) {
            return Err(invalid(
                "out_features",
                "out_features and out_indices should correspond to the same stages if both are set"
                    .into(),
            ));
        }
    }
    Ok(())
}

impl StageSelection {
    /// Aligns and validates `out_features` / `out_indices` against `stage_names`.
    pub fn new(
        out_features: Option<Vec<String>>,
        out_indices: Option<Vec<i64>>,
        stage_names: &[String],
    ) -> Result<Self> {
        if stage_names.is_empty() {
            return Err(invalid(
                "stage_names",
                "Stage_names must be set for transformers backbones".into(),
            ));
        }
        verify(out_features.as_deref(), out_indices.as_deref(), stage_names)?;
        let n = stage_names.len() as i64;
        let index_of = |i: i64| -> Result<usize> {
            let k = if i < 0 { i + n } else { i };
            if k < 0 || k >= n {
                // transformers lets e.g. -7 through validation and then fails with an IndexError.
                return Err(invalid(
                    "out_indices",
                    format!(
                        "out_indices must be valid indices for stage_names {}, got {}",
                        py_list_str(stage_names),
                        i
                    ),
                ));
            }
            Ok(k as usize)
        };
        let (features, indices) = match (out_features, out_indices) {
            (None, None) => (
                vec![stage_names[stage_names.len() - 1].clone()],
                vec![n - 1],
            ),
            (Some(f), None) => {
                let idx = f
                    .iter()
                    .filter_map(|x| stage_names.iter().position(|s| s == x).map(|p| p as i64))
                    .collect();
                (f, idx)
            }
            (None, Some(i)) => {
                let f = i
                    .iter()
                    .map(|&k| index_of(k).map(|k| stage_names[k].clone()))
                    .collect::<Result<Vec<_>>>()?;
                (f, i)
            }
            (Some(f), Some(i)) => (f, i),
        };
        verify(Some(&features), Some(&indices), stage_names)?;
        Ok(StageSelection {
            out_features: features,
            out_indices: indices,
        })
    }

    /// Reads `out_features` / `out_indices` from config values (config.json or caller overrides).
    pub fn from_config(raw: &Map<String, Value>, stage_names: &[String]) -> Result<Self> {
        let features = match raw.get("out_features") {
            None | Some(Value::Null) => None,
            Some(Value::Array(a)) => Some(
                a.iter()
                    .map(|v| {
                        v.as_str().map(str::to_string).ok_or_else(|| {
                            invalid(
                                "out_features",
                                format!("out_features must be a list of stage names, got {v}"),
                            )
                        })
                    })
                    .collect::<Result<Vec<_>>>()?,
            ),
            Some(other) => {
                return Err(invalid(
                    "out_features",
                    format!("out_features must be a list got {other}"),
                ))
            }
        };
        let indices = match raw.get("out_indices") {
            None | Some(Value::Null) => None,
            Some(Value::Array(a)) => Some(
                a.iter()
                    .map(|v| {
                        v.as_i64().ok_or_else(|| {
                            invalid(
                                "out_indices",
                                format!("out_indices must be a list of integers, got {v}"),
                            )
                        })
                    })
                    .collect::<Result<Vec<_>>>()?,
            ),
            Some(other) => {
                return Err(invalid(
                    "out_indices",
                    format!("out_indices must be a list, got {other}"),
                ))
            }
        };
        Self::new(features, indices, stage_names)
    }

    /// Positions of the selected stages in `stage_names` (negative indices resolved).
    pub fn positions(&self, stage_names: &[String]) -> Vec<usize> {
        self.out_features
            .iter()
            .filter_map(|f| stage_names.iter().position(|s| s == f))
            .collect()
    }
}
