//! Fused multi-head attention over a packed `[B·L, 3·D]` QKV projection: per (sequence, head)
//! the scores, additive mask, softmax and value product, without materialising `[B, H, L, L]`
//! tensors or transposed copies.

use rayon::prelude::*;

use super::elementwise::scaled_masked_softmax;
use super::gemm::PackedLinear;

/// One sequence of a (possibly packed) batch: its first row and its length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seq {
    /// First row of the sequence in `qkv` / the output.
    pub start: usize,
    /// Positions.
    pub len: usize,
}

/// The shape of one fused attention call.
#[derive(Clone, Copy, Debug)]
pub struct AttentionShape {
    /// Model width (`heads × head_dim`).
    pub dim: usize,
    /// Heads.
    pub heads: usize,
}

/// One (sequence, head): writes `ctx` `[len, hd]`. Both products run through the packed GEMM
/// on this thread (`S = Q Kᵀ` with the keys packed as weights, then `P V` with the values
/// packed transposed).
fn head(
    qkv: &[f32],
    s: AttentionShape,
    seq: Seq,
    h: usize,
    mask: Option<&[f32]>,
    scale: f32,
    ctx: &mut [f32],
) -> Option<()> {
    let (l, d) = (seq.len, s.dim);
    if l == 0 {
        return Some(());
    }
    let hd = d / s.heads;
    let ld = 3 * d;
    let rows = qkv.get(seq.start * ld..(seq.start + l) * ld)?;
    let keys = PackedLinear::pack_block(rows, ld, d + h * hd, l, hd)?;
    let mut scores = keys.forward_serial(rows.get(h * hd..)?, ld, l)?;
    let values = PackedLinear::pack_block_transposed(rows, ld, 2 * d + h * hd, l, hd)?;
    let mask = match mask {
        Some(m) => Some(m.get(seq.start..seq.start + l)?),
        None => None,
    };
    for row in scores.chunks_exact_mut(l) {
        scaled_masked_softmax(row, scale, mask);
    }
    let out = values.forward_serial(&scores, l, l)?;
    ctx.get_mut(..l * hd)?.copy_from_slice(&out);
    Some(())
}

/// `softmax(Q Kᵀ · scale + mask) V` for every sequence and head. `qkv` is `[T, 3·D]` (Q, K
/// and V side by side, heads contiguous inside each); each [`Seq`] is a run of rows that attend
/// to each other only (a padded batch has `B` runs of `L`; a packed one runs of true lengths).
/// `mask` is additive, one value per row (key position). Returns the merged context `[T, D]`,
/// or `None` when the lengths disagree or the sequences overlap or leave the buffer.
pub fn attention(
    qkv: &[f32],
    s: AttentionShape,
    seqs: &[Seq],
    mask: Option<&[f32]>,
    scale: f32,
) -> Option<Vec<f32>> {
    let (d, heads) = (s.dim, s.heads);
    if heads == 0 || d % heads != 0 || qkv.len() % (3 * d) != 0 {
        return None;
    }
    let rows = qkv.len() / (3 * d);
    if mask.is_some_and(|m| m.len() != rows) {
        return None;
    }
    // Sequences must be in order, disjoint and inside the buffer.
    let mut next = 0usize;
    for q in seqs {
        if q.start < next || q.start.checked_add(q.len)? > rows {
            return None;
        }
        next = q.start + q.len;
    }
    let hd = d / heads;
    let mut out = vec![0f32; rows * d];
    let threads = rayon::current_num_threads().max(1);
    if seqs.len() >= threads * 2 || seqs.len() >= 8 {
        // Hand each sequence its own rows of the output.
        let mut slices: Vec<(Seq, &mut [f32])> = Vec::with_capacity(seqs.len());
        let mut rest: &mut [f32] = &mut out;
        let mut at = 0usize;
        for q in seqs {
            let (_, tail) = rest.split_at_mut((q.start - at) * d);
            let (mine, tail) = tail.split_at_mut(q.len * d);
            slices.push((*q, mine));
            rest = tail;
            at = q.start + q.len;
        }
        let ok = slices.into_par_iter().all(|(q, ob)| {
            let mut ctx = vec![0f32; q.len * hd];
            for h in 0..heads {
                if head(qkv, s, q, h, mask, scale, &mut ctx).is_none() {
                    return false;
                }
                for i in 0..q.len {
                    ob[i * d + h * hd..i * d + (h + 1) * hd]
                        .copy_from_slice(&ctx[i * hd..(i + 1) * hd]);
                }
            }
            true
        });
        if !ok {
            return None;
        }
    } else {
        let parts: Option<Vec<(Seq, usize, Vec<f32>)>> = (0..seqs.len() * heads)
            .into_par_iter()
            .map(|t| {
                let (q, h) = (seqs[t / heads], t % heads);
                let mut ctx = vec![0f32; q.len * hd];
                head(qkv, s, q, h, mask, scale, &mut ctx)?;
                Some((q, h, ctx))
            })
            .collect();
        let parts = parts?;
        for (q, h, ctx) in parts {
            for i in 0..q.len {
                let o = (q.start + i) * d + h * hd;
                out[o..o + hd].copy_from_slice(&ctx[i * hd..(i + 1) * hd]);
            }
        }
    }
    Some(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Straightforward f64 attention for one sequence and head.
    #[allow(clippy::too_many_arguments)]
    fn naive(
        qkv: &[f32],
        d: usize,
        heads: usize,
        q: Seq,
        h: usize,
        mask: Option<&[f32]>,
        scale: f64,
        i: usize,
    ) -> Vec<f64> {
        let hd = d / heads;
        let at = |row: usize, col: usize| qkv[(q.start + row) * 3 * d + col] as f64;
        let mut s: Vec<f64> = (0..q.len)
            .map(|j| {
                let dot: f64 = (0..hd)
                    .map(|c| at(i, h * hd + c) * at(j, d + h * hd + c))
                    .sum();
                dot * scale + mask.map_or(0.0, |m| m[q.start + j] as f64)
            })
            .collect();
        let max = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let sum: f64 = s
            .iter_mut()
            .map(|v| {
                *v = (*v - max).exp();
                *v
            })
            .sum();
        (0..hd)
            .map(|c| {
                (0..q.len)
                    .map(|j| s[j] / sum * at(j, 2 * d + h * hd + c))
                    .sum()
            })
            .collect()
    }

    #[test]
    fn matches_naive_for_padded_and_packed_batches() {
        if !crate::kernels::avx512() {
            return;
        }
        let (d, heads) = (64, 4);
        let seqs = [
            Seq { start: 0, len: 5 },
            Seq { start: 5, len: 37 },
            Seq { start: 42, len: 1 },
        ];
        let rows = 43;
        let qkv: Vec<f32> = (0..rows * 3 * d)
            .map(|i| (((i * 2654435761usize) >> 7) % 1000) as f32 / 500.0 - 1.0)
            .collect();
        let mask: Vec<f32> = (0..rows)
            .map(|r| if r % 7 == 3 { f32::MIN } else { 0.0 })
            .collect();
        for m in [None, Some(mask.as_slice())] {
            let out = attention(&qkv, AttentionShape { dim: d, heads }, &seqs, m, 0.125).unwrap();
            for q in seqs {
                for h in 0..heads {
                    for i in 0..q.len {
                        let e = naive(&qkv, d, heads, q, h, m, 0.125, i);
                        let hd = d / heads;
                        for c in 0..hd {
                            let got = out[(q.start + i) * d + h * hd + c] as f64;
                            assert!((got - e[c]).abs() < 1e-5, "{got} vs {}", e[c]);
                        }
                    }
                }
            }
        }
    }
}
