//! Fused multi-head attention over a packed `[B·L, 3·D]` QKV projection: per (sequence, head)
//! the scores, additive mask, softmax and value product, without materialising `[B, H, L, L]`
//! tensors or transposed copies.
#![allow(unsafe_code)]

use rayon::prelude::*;

use super::elementwise::softmax_inplace;

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

#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let ca = a.chunks_exact(16);
    let cb = b.chunks_exact(16);
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (xa, xb) in ca.zip(cb) {
        for i in 0..16 {
            acc[i] = xa[i].mul_add(xb[i], acc[i]);
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// One (sequence, head): writes `ctx` `[len, hd]`.
#[inline(always)]
fn head_generic(
    qkv: &[f32],
    s: AttentionShape,
    seq: Seq,
    h: usize,
    mask: Option<&[f32]>,
    scale: f32,
    ctx: &mut [f32],
) {
    let (l, d) = (seq.len, s.dim);
    let hd = d / s.heads;
    let row = |i: usize| (seq.start + i) * 3 * d;
    // Contiguous K and V for this head.
    let mut k = vec![0f32; l * hd];
    let mut v = vec![0f32; l * hd];
    for j in 0..l {
        let base = row(j);
        k[j * hd..(j + 1) * hd].copy_from_slice(&qkv[base + d + h * hd..base + d + (h + 1) * hd]);
        v[j * hd..(j + 1) * hd]
            .copy_from_slice(&qkv[base + 2 * d + h * hd..base + 2 * d + (h + 1) * hd]);
    }
    let mut scores = vec![0f32; l];
    for i in 0..l {
        let base = row(i);
        let q = &qkv[base + h * hd..base + (h + 1) * hd];
        for (j, sc) in scores.iter_mut().enumerate() {
            *sc = dot(q, &k[j * hd..(j + 1) * hd]) * scale;
        }
        if let Some(m) = mask {
            for (sc, &mv) in scores.iter_mut().zip(&m[seq.start..seq.start + l]) {
                *sc += mv;
            }
        }
        softmax_inplace(&mut scores);
        let out = &mut ctx[i * hd..(i + 1) * hd];
        out.fill(0.0);
        for (j, &p) in scores.iter().enumerate() {
            for (o, &vv) in out.iter_mut().zip(&v[j * hd..(j + 1) * hd]) {
                *o = p.mul_add(vv, *o);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
fn head_avx512(
    qkv: &[f32],
    s: AttentionShape,
    seq: Seq,
    h: usize,
    mask: Option<&[f32]>,
    scale: f32,
    ctx: &mut [f32],
) {
    head_generic(qkv, s, seq, h, mask, scale, ctx)
}

fn head(
    qkv: &[f32],
    s: AttentionShape,
    seq: Seq,
    h: usize,
    mask: Option<&[f32]>,
    scale: f32,
    ctx: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if super::avx512() {
        // SAFETY: AVX-512F (and FMA) was detected at run time.
        unsafe { head_avx512(qkv, s, seq, h, mask, scale, ctx) };
        return;
    }
    head_generic(qkv, s, seq, h, mask, scale, ctx)
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
        slices.into_par_iter().for_each(|(q, ob)| {
            let mut ctx = vec![0f32; q.len * hd];
            for h in 0..heads {
                head(qkv, s, q, h, mask, scale, &mut ctx);
                for i in 0..q.len {
                    ob[i * d + h * hd..i * d + (h + 1) * hd]
                        .copy_from_slice(&ctx[i * hd..(i + 1) * hd]);
                }
            }
        });
    } else {
        let parts: Vec<(Seq, usize, Vec<f32>)> = (0..seqs.len() * heads)
            .into_par_iter()
            .map(|t| {
                let (q, h) = (seqs[t / heads], t % heads);
                let mut ctx = vec![0f32; q.len * hd];
                head(qkv, s, q, h, mask, scale, &mut ctx);
                (q, h, ctx)
            })
            .collect();
        for (q, h, ctx) in parts {
            for i in 0..q.len {
                let o = (q.start + i) * d + h * hd;
                out[o..o + hd].copy_from_slice(&ctx[i * hd..(i + 1) * hd]);
            }
        }
    }
    Some(out)
}
