//! Fused multi-head attention over a packed `[B·L, 3·D]` QKV projection: per (sequence, head)
//! the scores, additive mask, softmax and value product, without materialising `[B, H, L, L]`
//! tensors or transposed copies.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::elementwise::scaled_masked_softmax;
use super::gemm::PackedLinear;
use super::{filled_vec, zeroed};

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

/// What is added to the scaled scores before the softmax.
#[derive(Clone, Copy, Debug)]
enum Additive<'a> {
    /// Nothing.
    None,
    /// One value per key, indexed by the key's row in the batch (transformers' padding mask).
    Keys(&'a [f32]),
    /// Swin's windows (all `n` long): `bias` `[heads, n, n]` for every window and, for shifted
    /// windows, `mask` `[nw, n, n]` (window `w` takes `mask[w % nw]`).
    Windows {
        bias: &'a [f32],
        mask: Option<&'a [f32]>,
        nw: usize,
    },
}

/// One (sequence `qi`, head `h`): writes `ctx` `[len, hd]`. Both products run through the
/// packed GEMM on this thread (`S = Q Kᵀ` with the keys packed as weights, then `P V` with the
/// values packed transposed).
#[allow(clippy::too_many_arguments)]
fn head(
    qkv: &[f32],
    s: AttentionShape,
    seq: Seq,
    qi: usize,
    h: usize,
    add: Additive<'_>,
    scale: f32,
    ctx: &mut [f32],
) -> Option<()> {
    let (l, ld) = (seq.len, 3 * s.dim);
    if l == 0 {
        return Some(());
    }
    let rows = qkv.get(seq.start * ld..(seq.start + l) * ld)?;
    SCRATCH.with(|scratch| match scratch.try_borrow_mut() {
        Ok(mut scratch) => {
            let Scratch {
                keys,
                values,
                scores,
            } = &mut *scratch;
            head_in(rows, s, seq, qi, h, add, scale, ctx, keys, values, scores)
        }
        // Not reached (nothing below calls back in), but never panic over a buffer.
        Err(_) => head_in(
            rows,
            s,
            seq,
            qi,
            h,
            add,
            scale,
            ctx,
            &mut PackedLinear::empty(),
            &mut PackedLinear::empty(),
            &mut Vec::new(),
        ),
    })
}

/// Each thread's buffers for [`head`]: the packed keys and values of one (sequence, head) and
/// its scores.
struct Scratch {
    keys: PackedLinear,
    values: PackedLinear,
    scores: Vec<f32>,
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::new(Scratch {
        keys: PackedLinear::empty(),
        values: PackedLinear::empty(),
        scores: Vec::new(),
    });
}

/// [`head`] on `rows` (the sequence's rows of `qkv`) with the given buffers.
#[allow(clippy::too_many_arguments)]
fn head_in(
    rows: &[f32],
    s: AttentionShape,
    seq: Seq,
    qi: usize,
    h: usize,
    add: Additive<'_>,
    scale: f32,
    ctx: &mut [f32],
    keys: &mut PackedLinear,
    values: &mut PackedLinear,
    scores: &mut Vec<f32>,
) -> Option<()> {
    let (l, d) = (seq.len, s.dim);
    let hd = d / s.heads;
    let ld = 3 * d;
    keys.repack_block(rows, ld, d + h * hd, l, hd, false)?;
    if scores.len() < l * l {
        scores.resize(l * l, 0.0);
    }
    let scores = &mut scores[..l * l];
    keys.forward_serial_into(rows.get(h * hd..)?, ld, l, scores)?;
    values.repack_block(rows, ld, 2 * d + h * hd, hd, l, true)?;
    match add {
        Additive::None => {
            for row in scores.chunks_exact_mut(l) {
                scaled_masked_softmax(row, scale, None, None);
            }
        }
        Additive::Keys(m) => {
            let m = m.get(seq.start..seq.start + l)?;
            for row in scores.chunks_exact_mut(l) {
                scaled_masked_softmax(row, scale, Some(m), None);
            }
        }
        Additive::Windows { bias, mask, nw } => {
            let bias = bias.get(h * l * l..(h + 1) * l * l)?;
            let w = qi % nw.max(1);
            let mask = match mask {
                Some(m) => Some(m.get(w * l * l..(w + 1) * l * l)?),
                None => None,
            };
            for (i, row) in scores.chunks_exact_mut(l).enumerate() {
                let b = bias.get(i * l..(i + 1) * l);
                let m = match mask {
                    Some(m) => Some(m.get(i * l..(i + 1) * l)?),
                    None => None,
                };
                scaled_masked_softmax(row, scale, b, m);
            }
        }
    }
    values.forward_serial_into(scores, l, l, ctx)
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
    let rows = qkv.len() / (3 * s.dim.max(1));
    if mask.is_some_and(|m| m.len() != rows) {
        return None;
    }
    let add = match mask {
        Some(m) => Additive::Keys(m),
        None => Additive::None,
    };
    run(qkv, s, seqs, add, scale)
}

/// Swin's window attention: `softmax(Q Kᵀ · scale + bias[h] + mask[w % nw]) V` over the
/// windows of `qkv` `[windows · n, 3·D]` (each window `n` rows that attend to each other),
/// with the relative position `bias` `[heads, n, n]` and, for shifted windows, `mask`
/// `[nw, n, n]`. Returns the merged context `[windows · n, D]`, or `None` when the lengths
/// disagree.
pub fn window_attention(
    qkv: &[f32],
    s: AttentionShape,
    n: usize,
    bias: &[f32],
    mask: Option<(&[f32], usize)>,
    scale: f32,
) -> Option<Vec<f32>> {
    let rows = qkv.len() / (3 * s.dim.max(1));
    if n == 0 || rows % n != 0 || bias.len() != s.heads.checked_mul(n * n)? {
        return None;
    }
    if let Some((m, nw)) = mask {
        if nw == 0 || m.len() != nw.checked_mul(n * n)? {
            return None;
        }
    }
    let seqs: Vec<Seq> = (0..rows / n)
        .map(|w| Seq {
            start: w * n,
            len: n,
        })
        .collect();
    let add = Additive::Windows {
        bias,
        mask: mask.map(|(m, _)| m),
        nw: mask.map_or(1, |(_, nw)| nw),
    };
    run(qkv, s, &seqs, add, scale)
}

/// [`attention`] and [`window_attention`]: every (sequence, head) in parallel.
#[allow(unsafe_code)]
fn run(
    qkv: &[f32],
    s: AttentionShape,
    seqs: &[Seq],
    add: Additive<'_>,
    scale: f32,
) -> Option<Vec<f32>> {
    let (d, heads) = (s.dim, s.heads);
    if heads == 0 || d % heads != 0 || qkv.len() % (3 * d) != 0 {
        return None;
    }
    let rows = qkv.len() / (3 * d);
    // Sequences must be in order, disjoint and inside the buffer.
    let mut next = 0usize;
    for q in seqs {
        if q.start < next || q.start.checked_add(q.len)? > rows {
            return None;
        }
        next = q.start + q.len;
    }
    let hd = d / heads;
    let threads = rayon::current_num_threads().max(1);
    let fill = |out: &mut [MaybeUninit<f32>]| -> bool {
        if seqs.len() >= threads * 2 || seqs.len() >= 8 {
            // Hand each sequence its own rows of the output (zeroed there, in cache); rows
            // outside every sequence are zeros.
            let mut slices: Vec<(usize, Seq, &mut [MaybeUninit<f32>])> =
                Vec::with_capacity(seqs.len());
            let mut rest: &mut [MaybeUninit<f32>] = out;
            let mut at = 0usize;
            for (qi, q) in seqs.iter().enumerate() {
                let (gap, tail) = rest.split_at_mut((q.start - at) * d);
                zeroed(gap);
                let (mine, tail) = tail.split_at_mut(q.len * d);
                slices.push((qi, *q, mine));
                rest = tail;
                at = q.start + q.len;
            }
            zeroed(rest);
            slices.into_par_iter().all(|(qi, q, ob)| {
                let ob = zeroed(ob);
                let mut ctx = vec![0f32; q.len * hd];
                for h in 0..heads {
                    if head(qkv, s, q, qi, h, add, scale, &mut ctx).is_none() {
                        return false;
                    }
                    for i in 0..q.len {
                        ob[i * d + h * hd..i * d + (h + 1) * hd]
                            .copy_from_slice(&ctx[i * hd..(i + 1) * hd]);
                    }
                }
                true
            })
        } else {
            let out = zeroed(out);
            let parts: Option<Vec<(Seq, usize, Vec<f32>)>> = (0..seqs.len() * heads)
                .into_par_iter()
                .map(|t| {
                    let (qi, h) = (t / heads, t % heads);
                    let q = seqs[qi];
                    let mut ctx = vec![0f32; q.len * hd];
                    head(qkv, s, q, qi, h, add, scale, &mut ctx)?;
                    Some((q, h, ctx))
                })
                .collect();
            let Some(parts) = parts else {
                return false;
            };
            for (q, h, ctx) in parts {
                for i in 0..q.len {
                    let o = (q.start + i) * d + h * hd;
                    out[o..o + hd].copy_from_slice(&ctx[i * hd..(i + 1) * hd]);
                }
            }
            true
        }
    };
    // SAFETY: `fill` zeroes every part of the output (the gaps, each sequence's rows, or all of
    // it) before it writes or returns.
    unsafe { filled_vec(rows * d, fill) }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Straightforward f64 attention for row `i` of one sequence and head; `extra(j)` is added
    /// to the scaled score of key `j` (position in the sequence).
    #[allow(clippy::too_many_arguments)]
    fn naive(
        qkv: &[f32],
        d: usize,
        heads: usize,
        q: Seq,
        h: usize,
        extra: impl Fn(usize) -> f64,
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
                dot * scale + extra(j)
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
                        let extra = |j: usize| m.map_or(0.0, |m| m[q.start + j] as f64);
                        let e = naive(&qkv, d, heads, q, h, extra, 0.125, i);
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

    #[test]
    fn window_attention_matches_naive() {
        if !crate::kernels::avx512() {
            return;
        }
        let (d, heads, n, nw, windows) = (64, 2, 9, 2, 4);
        let rows = n * windows;
        let qkv: Vec<f32> = (0..rows * 3 * d)
            .map(|i| (((i * 2654435761usize) >> 9) % 1000) as f32 / 500.0 - 1.0)
            .collect();
        let bias: Vec<f32> = (0..heads * n * n).map(|i| (i % 11) as f32 / 7.0).collect();
        let mask: Vec<f32> = (0..nw * n * n)
            .map(|i| if i % 5 == 1 { -100.0 } else { 0.0 })
            .collect();
        let hd = d / heads;
        for with_mask in [false, true] {
            let m = with_mask.then_some((mask.as_slice(), nw));
            let out =
                window_attention(&qkv, AttentionShape { dim: d, heads }, n, &bias, m, 0.2).unwrap();
            for w in 0..windows {
                for h in 0..heads {
                    for i in 0..n {
                        let extra = |j: usize| {
                            let m = if with_mask {
                                mask[(w % nw) * n * n + i * n + j] as f64
                            } else {
                                0.0
                            };
                            bias[h * n * n + i * n + j] as f64 + m
                        };
                        let q = Seq {
                            start: w * n,
                            len: n,
                        };
                        let e = naive(&qkv, d, heads, q, h, extra, 0.2, i);
                        for (c, e) in e.iter().enumerate() {
                            let got = out[(w * n + i) * d + h * hd + c] as f64;
                            assert!((got - e).abs() < 1e-5, "{got} vs {e}");
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod speed {
    use super::*;

    /// `cargo test --release -p autoclass --lib window_attention_speed -- --ignored --nocapture`:
    /// Swin-tiny stage 1 windows (4 images: 256 windows of 49, width 96, 3 heads), shifted.
    #[test]
    #[ignore]
    fn window_attention_speed() {
        let (n, d, heads, windows, nw) = (49usize, 96usize, 3usize, 256usize, 64usize);
        let qkv: Vec<f32> = (0..windows * n * 3 * d)
            .map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5)
            .collect();
        let bias: Vec<f32> = (0..heads * n * n).map(|i| (i % 13) as f32 / 13.0).collect();
        let mask: Vec<f32> = (0..nw * n * n)
            .map(|i| if i % 5 == 0 { -100.0 } else { 0.0 })
            .collect();
        let s = AttentionShape { dim: d, heads };
        let t0 = std::time::Instant::now();
        let reps = 20;
        for _ in 0..reps {
            std::hint::black_box(
                window_attention(&qkv, s, n, &bias, Some((&mask, nw)), 0.17).unwrap(),
            );
        }
        let dt = t0.elapsed().as_secs_f64() / reps as f64;
        let flops = 4.0 * (windows * heads * n * n * (d / heads)) as f64;
        println!(
            "window attention: {:.2} ms, {:.1} GFLOP/s",
            dt * 1e3,
            flops / dt / 1e9
        );
    }
}
