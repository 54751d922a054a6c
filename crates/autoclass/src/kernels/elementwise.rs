//! Row-wise and element-wise f32 kernels: GELU (erf), residual + LayerNorm, masked softmax.
//! Written as plain loops that LLVM vectorises; on AVX-512 CPUs the same code is compiled a
//! second time with `target_feature` and picked at run time.
#![allow(unsafe_code)]

use rayon::prelude::*;

const LOG2E: f32 = std::f32::consts::LOG2_E;

/// Defines `$name`, which runs `$generic` compiled with AVX-512 (through `$fast`) when the CPU
/// has it, and the baseline build of `$generic` otherwise.
macro_rules! avx512_dispatch {
    ($(#[$doc:meta])* $vis:vis fn $name:ident via $fast:ident ($($arg:ident: $ty:ty),*) => $generic:ident) => {
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx512f,fma")]
        fn $fast($($arg: $ty),*) {
            $generic($($arg),*)
        }

        $(#[$doc])*
        $vis fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            if super::avx512() {
                // SAFETY: AVX-512F and FMA were detected at run time.
                unsafe { $fast($($arg),*) };
                return;
            }
            $generic($($arg),*)
        }
    };
}

/// `exp(x)` for f32, Cephes' polynomial (about 1 ulp); inputs below -87.3 give 2^-126·exp(r).
#[inline(always)]
fn exp_f32(x: f32) -> f32 {
    let x = x.clamp(-87.3, 88.3);
    let n = (x * LOG2E).round_ties_even();
    let r = n.mul_add(-0.693_359_4, x);
    let r = n.mul_add(2.121_944_4e-4, r);
    let z = r * r;
    let mut p = 1.987_569_1e-4f32;
    p = p.mul_add(r, 1.398_2e-3);
    p = p.mul_add(r, 8.333_452e-3);
    p = p.mul_add(r, 4.166_579_6e-2);
    p = p.mul_add(r, 1.666_666_5e-1);
    p = p.mul_add(r, 0.5);
    let y = p.mul_add(z, r) + 1.0;
    let bits = ((n as i32 + 127) as u32) << 23;
    y * f32::from_bits(bits)
}

/// Softmax probabilities below this are set to 0 by the AVX-512 kernel (see
/// [`scaled_masked_softmax`]).
const TINY_PROBABILITY: f32 = 1e-30;

/// `erf(x)` as ATen's `Vectorized<float>::erf` computes it (Abramowitz & Stegun 7.1.26).
#[inline(always)]
fn erf_f32(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / 0.327_591_1f32.mul_add(a, 1.0);
    let mut r = 1.061_405_4f32;
    r = r.mul_add(t, -1.453_152);
    r = r.mul_add(t, 1.421_413_8);
    r = r.mul_add(t, -0.284_496_72);
    r = r.mul_add(t, 0.254_829_6);
    let e = exp_f32(-(x * x));
    let v = (-(e * t)).mul_add(r, 1.0);
    v.copysign(x)
}

#[inline(always)]
fn gelu_generic(xs: &mut [f32]) {
    for v in xs.iter_mut() {
        let x = *v;
        *v = x * 0.5 * (1.0 + erf_f32(x * std::f32::consts::FRAC_1_SQRT_2));
    }
}

/// In-place exact GELU, `0.5x(1+erf(x/√2))`, as ATen computes it for f32.
pub fn gelu_erf_inplace(xs: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if super::avx512() {
        // SAFETY: AVX-512F was detected at run time.
        unsafe { simd::gelu(xs) };
        return;
    }
    gelu_generic(xs)
}

/// Exact GELU of `xs` into a new vector, copied and computed chunk by chunk in parallel (no
/// serial copy of the whole input first). `None` if the output cannot be allocated.
pub fn gelu_erf(xs: &[f32]) -> Option<Vec<f32>> {
    const CHUNK: usize = 1 << 14;
    super::par_filled(xs.len(), CHUNK, |i, o| {
        o.copy_from_slice(&xs[i * CHUNK..i * CHUNK + o.len()]);
        gelu_erf_inplace(o);
    })
}

/// Exact GELU over a whole buffer, in parallel for large ones.
pub fn gelu_erf_par(xs: &mut [f32]) {
    if xs.len() >= 1 << 16 {
        xs.par_chunks_mut(1 << 14).for_each(gelu_erf_inplace);
    } else {
        gelu_erf_inplace(xs);
    }
}

#[inline(always)]
fn layer_norm_row_generic(
    x: &[f32],
    residual: Option<&[f32]>,
    w: &[f32],
    b: &[f32],
    eps: f32,
    out: &mut [f32],
) {
    let d = out.len();
    match residual {
        Some(r) => {
            for ((o, &a), &c) in out.iter_mut().zip(x).zip(r) {
                *o = a + c;
            }
        }
        None => out.copy_from_slice(x),
    }
    // Two-pass statistics in f32, accumulated in 16 lanes.
    let mut acc = [0f32; 16];
    let chunks = out.chunks_exact(16);
    let tail: f32 = chunks.remainder().iter().sum();
    for ch in chunks {
        for (a, &v) in acc.iter_mut().zip(ch) {
            *a += v;
        }
    }
    let mean = (acc.iter().sum::<f32>() + tail) / d as f32;
    let mut acc = [0f32; 16];
    let chunks = out.chunks_exact(16);
    let tail: f32 = chunks
        .remainder()
        .iter()
        .map(|v| (v - mean) * (v - mean))
        .sum();
    for ch in chunks {
        for (a, &v) in acc.iter_mut().zip(ch) {
            *a += (v - mean) * (v - mean);
        }
    }
    let var = (acc.iter().sum::<f32>() + tail) / d as f32;
    let rstd = 1.0 / (var + eps).sqrt();
    for ((o, &wv), &bv) in out.iter_mut().zip(w).zip(b) {
        *o = ((*o - mean) * rstd).mul_add(wv, bv);
    }
}

#[inline(always)]
fn layer_norm_rows_generic(
    x: &[f32],
    residual: Option<&[f32]>,
    w: &[f32],
    b: &[f32],
    eps: f32,
    out: &mut [f32],
) {
    let d = w.len();
    for (row, o) in out.chunks_exact_mut(d).enumerate() {
        let xr = &x[row * d..(row + 1) * d];
        let rr = residual.map(|r| &r[row * d..(row + 1) * d]);
        layer_norm_row_generic(xr, rr, w, b, eps, o);
    }
}

avx512_dispatch! {
    fn layer_norm_rows via layer_norm_rows_avx512(
        x: &[f32],
        residual: Option<&[f32]>,
        w: &[f32],
        b: &[f32],
        eps: f32,
        out: &mut [f32]
    ) => layer_norm_rows_generic
}

/// `LayerNorm(x + residual)` over rows of `w.len()` floats (biased variance, two-pass, f32),
/// as `nn.LayerNorm` computes it. Returns `None` when the lengths disagree.
pub fn add_layer_norm(
    x: &[f32],
    residual: Option<&[f32]>,
    w: &[f32],
    b: &[f32],
    eps: f32,
) -> Option<Vec<f32>> {
    let d = w.len();
    if d == 0 || b.len() != d || x.len() % d != 0 || residual.is_some_and(|r| r.len() != x.len()) {
        return None;
    }
    // 64 KiB chunks in parallel from 64K floats on, one chunk below.
    let chunk = if x.len() >= 1 << 16 {
        (1usize << 14).div_ceil(d) * d
    } else {
        x.len().max(d)
    };
    super::par_filled(x.len(), chunk, |i, o| {
        let start = i * chunk;
        let xs = &x[start..start + o.len()];
        let rs = residual.map(|r| &r[start..start + o.len()]);
        layer_norm_rows(xs, rs, w, b, eps, o);
    })
}

/// `nn.GroupNorm` with one group per channel, in place on channels-last `x` `[T, C]`: each
/// column normalised over the `T` rows (biased variance, two passes, sums in f64), then
/// `· w[c] + b[c]`. Returns `None` when the lengths disagree.
pub fn channel_norm(x: &mut [f32], w: &[f32], b: &[f32], eps: f32) -> Option<()> {
    let c = w.len();
    if c == 0 || b.len() != c || x.len() % c != 0 || x.is_empty() {
        return None;
    }
    let t = (x.len() / c) as f64;
    // Column blocks in parallel, each writing its columns' mean and scale; each column is still
    // summed in row order (the same sums as one serial pass).
    const COLS: usize = 64;
    let xs: &[f32] = x;
    let mut mean = vec![0f32; c];
    let mut scale = vec![0f32; c];
    mean.par_chunks_mut(COLS)
        .zip(scale.par_chunks_mut(COLS))
        .enumerate()
        .for_each(|(blk, (mean, scale))| {
            let c0 = blk * COLS;
            let cols = c0..c0 + mean.len();
            let mut mu = vec![0f64; cols.len()];
            for row in xs.chunks_exact(c) {
                for (s, &v) in mu.iter_mut().zip(&row[cols.clone()]) {
                    *s += v as f64;
                }
            }
            for m in &mut mu {
                *m /= t;
            }
            let mut var = vec![0f64; cols.len()];
            for row in xs.chunks_exact(c) {
                for ((s, &v), &m) in var.iter_mut().zip(&row[cols.clone()]).zip(&mu) {
                    let d = v as f64 - m;
                    *s += d * d;
                }
            }
            for ((((m, sc), &mu), &v), &wv) in mean
                .iter_mut()
                .zip(scale.iter_mut())
                .zip(&mu)
                .zip(&var)
                .zip(&w[cols])
            {
                *m = mu as f32;
                *sc = wv / ((v / t) as f32 + eps).sqrt();
            }
        });
    x.par_chunks_mut(c * 64).for_each(|rows| {
        for row in rows.chunks_exact_mut(c) {
            for (((v, &m), &s), &bv) in row.iter_mut().zip(&mean).zip(&scale).zip(b) {
                *v = (*v - m) * s + bv;
            }
        }
    });
    Some(())
}

#[inline(always)]
fn softmax_generic(xs: &mut [f32]) {
    let max = xs.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0f32;
    for v in xs.iter_mut() {
        *v = exp_f32(*v - max);
        sum += *v;
    }
    let inv = 1.0 / sum;
    for v in xs.iter_mut() {
        *v *= inv;
    }
}

/// In-place softmax of one row (max-subtracted, f32) of attention scores, after scaling them by
/// `scale` and adding the additive `mask` and then `mask2` (one value per element) when given.
pub fn scaled_masked_softmax(
    xs: &mut [f32],
    scale: f32,
    mask: Option<&[f32]>,
    mask2: Option<&[f32]>,
) {
    if mask.is_some_and(|m| m.len() < xs.len()) || mask2.is_some_and(|m| m.len() < xs.len()) {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if super::avx512() {
        // SAFETY: AVX-512F was detected at run time, and both masks cover `xs` (checked above).
        unsafe { simd::scaled_masked_softmax(xs, scale, mask, mask2) };
        return;
    }
    for v in xs.iter_mut() {
        *v *= scale;
    }
    for m in [mask, mask2].into_iter().flatten() {
        for (v, &mv) in xs.iter_mut().zip(m) {
            *v += mv;
        }
    }
    softmax_generic(xs)
}

/// Explicit AVX-512 versions of the kernels above: the same formulas lane by lane (GELU gives
/// identical results; softmax sums and maxima are reduced across lanes, a different order).
#[cfg(target_arch = "x86_64")]
mod simd {
    use std::arch::x86_64::*;

    /// 16 lanes of [`super::exp_f32`]; `scalef` applies the `2^n` of the bit construction.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn exp(x: __m512) -> __m512 {
        let x = _mm512_min_ps(
            _mm512_max_ps(x, _mm512_set1_ps(-87.3)),
            _mm512_set1_ps(88.3),
        );
        let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm512_mul_ps(x, _mm512_set1_ps(super::LOG2E)),
        );
        let r = _mm512_fmadd_ps(n, _mm512_set1_ps(-0.693_359_4), x);
        let r = _mm512_fmadd_ps(n, _mm512_set1_ps(2.121_944_4e-4), r);
        let z = _mm512_mul_ps(r, r);
        let mut p = _mm512_set1_ps(1.987_569_1e-4);
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.398_2e-3));
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.333_452e-3));
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.166_579_6e-2));
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.666_666_5e-1));
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5));
        let y = _mm512_add_ps(_mm512_fmadd_ps(p, z, r), _mm512_set1_ps(1.0));
        _mm512_scalef_ps(y, n)
    }

    /// 16 lanes of the exact GELU of [`super::gelu_generic`].
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn gelu16(x: __m512) -> __m512 {
        let u = _mm512_mul_ps(x, _mm512_set1_ps(std::f32::consts::FRAC_1_SQRT_2));
        let sign = _mm512_set1_epi32(i32::MIN);
        let a = _mm512_castsi512_ps(_mm512_andnot_si512(sign, _mm512_castps_si512(u)));
        let one = _mm512_set1_ps(1.0);
        let t = _mm512_div_ps(one, _mm512_fmadd_ps(_mm512_set1_ps(0.327_591_1), a, one));
        let mut r = _mm512_set1_ps(1.061_405_4);
        r = _mm512_fmadd_ps(r, t, _mm512_set1_ps(-1.453_152));
        r = _mm512_fmadd_ps(r, t, _mm512_set1_ps(1.421_413_8));
        r = _mm512_fmadd_ps(r, t, _mm512_set1_ps(-0.284_496_72));
        r = _mm512_fmadd_ps(r, t, _mm512_set1_ps(0.254_829_6));
        let e = exp(_mm512_sub_ps(_mm512_setzero_ps(), _mm512_mul_ps(u, u)));
        let v = _mm512_fnmadd_ps(_mm512_mul_ps(e, t), r, one);
        // copysign(v, u): v is non-negative.
        let erf = _mm512_castsi512_ps(_mm512_or_si512(
            _mm512_castps_si512(v),
            _mm512_and_si512(sign, _mm512_castps_si512(u)),
        ));
        _mm512_mul_ps(
            _mm512_mul_ps(x, _mm512_set1_ps(0.5)),
            _mm512_add_ps(one, erf),
        )
    }

    /// The lanes of a 16-lane block with `left` elements remaining: all of them, or the first
    /// `left`.
    #[inline]
    fn lanes(left: usize) -> __mmask16 {
        if left >= 16 {
            0xffff
        } else {
            ((1u32 << left) - 1) as __mmask16
        }
    }

    /// In-place GELU over `xs`.
    ///
    /// # Safety
    /// The CPU must support AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn gelu(xs: &mut [f32]) {
        let mut chunks = xs.chunks_exact_mut(16);
        for ch in &mut chunks {
            // SAFETY: `ch` holds exactly 16 floats.
            unsafe {
                let v = _mm512_loadu_ps(ch.as_ptr());
                _mm512_storeu_ps(ch.as_mut_ptr(), gelu16(v));
            }
        }
        let rest = chunks.into_remainder();
        if !rest.is_empty() {
            let k = lanes(rest.len());
            // SAFETY: the masked load and store touch only the `rest.len()` floats of `rest`.
            unsafe {
                let v = _mm512_maskz_loadu_ps(k, rest.as_ptr());
                _mm512_mask_storeu_ps(rest.as_mut_ptr(), k, gelu16(v));
            }
        }
    }

    /// In-place `softmax(xs · scale + mask + mask2)`.
    ///
    /// # Safety
    /// The CPU must support AVX-512F, and the masks (when given) must hold at least `xs.len()`
    /// floats.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn scaled_masked_softmax(
        xs: &mut [f32],
        scale: f32,
        mask: Option<&[f32]>,
        mask2: Option<&[f32]>,
    ) {
        let len = xs.len();
        let p = xs.as_mut_ptr();
        let sc = _mm512_set1_ps(scale);
        // SAFETY (whole body): every access is either a full 16-float block below `len` or a
        // masked access of the lanes below `len`; the masks have at least `len` floats.
        unsafe {
            // Pass 1: scale, add the mask, store back, track the maximum.
            let mut mx = _mm512_set1_ps(f32::NEG_INFINITY);
            let mut i = 0;
            while i < len {
                let k = lanes(len - i);
                let mut v = _mm512_mul_ps(_mm512_maskz_loadu_ps(k, p.add(i)), sc);
                if let Some(m) = mask {
                    v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(k, m.as_ptr().add(i)));
                }
                if let Some(m) = mask2 {
                    v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(k, m.as_ptr().add(i)));
                }
                _mm512_mask_storeu_ps(p.add(i), k, v);
                mx = _mm512_mask_max_ps(mx, k, mx, v);
                i += 16;
            }
            let max = _mm512_set1_ps(_mm512_reduce_max_ps(mx));
            // Pass 2: exponentials and their sum. Below e^-80 (masked keys) the exponential is
            // 0: near exp's clamp its result is subnormal, and so slow to compute and use.
            let floor = _mm512_set1_ps(-80.0);
            let mut sum = _mm512_setzero_ps();
            let mut i = 0;
            while i < len {
                let k = lanes(len - i);
                let d = _mm512_sub_ps(_mm512_maskz_loadu_ps(k, p.add(i)), max);
                let live = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(d, floor);
                let e = _mm512_maskz_mov_ps(live, exp(_mm512_max_ps(d, floor)));
                _mm512_mask_storeu_ps(p.add(i), k, e);
                sum = _mm512_mask_add_ps(sum, k, sum, e);
                i += 16;
            }
            let inv = _mm512_set1_ps(1.0 / _mm512_reduce_add_ps(sum));
            // Pass 3: normalise. Probabilities below 1e-30 (masked keys: e^-100 and less)
            // become 0: they and their products with the values would be subnormal floats,
            // which send every FMA that touches them down the CPU's slow path (Swin's shifted
            // windows ran 4x slower), for a contribution to the output below 1e-30.
            let tiny = _mm512_set1_ps(super::TINY_PROBABILITY);
            let mut i = 0;
            while i < len {
                let k = lanes(len - i);
                let v = _mm512_mul_ps(_mm512_maskz_loadu_ps(k, p.add(i)), inv);
                let normal = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(v, tiny);
                let v = _mm512_maskz_mov_ps(normal, v);
                _mm512_mask_storeu_ps(p.add(i), k, v);
                i += 16;
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn exp_and_erf_are_accurate() {
        let mut worst_exp = 0f64;
        let mut worst_erf = 0f64;
        for i in -20000..20000 {
            let x = i as f32 / 1000.0;
            let e = exp_f32(x) as f64;
            let r = (x as f64).exp();
            worst_exp = worst_exp.max(((e - r) / r).abs());
            if x.abs() > 3.0 {
                continue;
            }
            let v = erf_f32(x) as f64;
            // erf via the complementary series is long; compare against the A&S bound instead.
            let approx_bound = 2e-7;
            let exact = libm_erf(x as f64);
            worst_erf = worst_erf.max((v - exact).abs() - approx_bound);
        }
        assert!(worst_exp < 3e-7, "exp rel err {worst_exp}");
        assert!(worst_erf < 1e-6, "erf abs err {worst_erf}");
    }

    fn libm_erf(x: f64) -> f64 {
        // Taylor series; accurate in f64 for |x| <= 3.
        let mut sum = 0f64;
        let mut term = x;
        let mut n = 0.0;
        while term.abs() > 1e-17 * sum.abs().max(1e-300) || n < 3.0 {
            sum += term / (2.0 * n + 1.0);
            n += 1.0;
            term *= -x * x / n;
            if n > 400.0 {
                break;
            }
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    }

    /// The chunked copy-and-GELU gives the in-place GELU of every element, across chunk
    /// boundaries and a short last chunk.
    #[test]
    fn gelu_into_new_vector_matches_in_place() {
        let xs: Vec<f32> = (0..40_000).map(|i| (i % 997) as f32 / 83.0 - 6.0).collect();
        let mut want = xs.clone();
        gelu_generic(&mut want);
        assert_eq!(gelu_erf(&xs).unwrap(), want);
        assert_eq!(gelu_erf(&[]).unwrap(), Vec::<f32>::new());
    }

    #[test]
    fn vector_paths_match_the_generic_ones() {
        let xs: Vec<f32> = (0..1000).map(|i| (i as f32 - 500.0) / 61.0).collect();
        for len in [0, 1, 15, 16, 17, 128, 1000] {
            let mut g = xs[..len].to_vec();
            gelu_erf_inplace(&mut g);
            let mut r = xs[..len].to_vec();
            gelu_generic(&mut r);
            assert_eq!(g, r, "gelu, len {len}");
            let mask: Vec<f32> = (0..len)
                .map(|i| if i % 5 == 2 { f32::MIN } else { 0.0 })
                .collect();
            let bias: Vec<f32> = (0..len).map(|i| (i % 7) as f32 / 3.0).collect();
            for (m, m2) in [
                (None, None),
                (Some(mask.as_slice()), None),
                (Some(bias.as_slice()), Some(mask.as_slice())),
            ] {
                let mut s = xs[..len].to_vec();
                scaled_masked_softmax(&mut s, 0.7, m, m2);
                let mut e: Vec<f64> = xs[..len]
                    .iter()
                    .enumerate()
                    .map(|(i, &v)| {
                        v as f64 * 0.7
                            + m.map_or(0.0, |m| m[i] as f64)
                            + m2.map_or(0.0, |m| m[i] as f64)
                    })
                    .collect();
                let max = e.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let sum: f64 = e
                    .iter_mut()
                    .map(|v| {
                        *v = (*v - max).exp();
                        *v
                    })
                    .sum();
                for (a, b) in s.iter().zip(&e) {
                    assert!(
                        (*a as f64 - b / sum).abs() < 1e-6,
                        "softmax len {len}: {a} vs {}",
                        b / sum
                    );
                }
            }
        }
    }

    #[test]
    fn layer_norm_matches_two_pass_f64() {
        let d = 37;
        let x: Vec<f32> = (0..d * 3)
            .map(|i| ((i * 7919) % 101) as f32 / 10.0 - 5.0)
            .collect();
        let r: Vec<f32> = (0..d * 3).map(|i| ((i * 31) % 17) as f32 / 7.0).collect();
        let w: Vec<f32> = (0..d).map(|i| 1.0 + i as f32 / 100.0).collect();
        let b: Vec<f32> = (0..d).map(|i| i as f32 / 50.0).collect();
        let y = add_layer_norm(&x, Some(&r), &w, &b, 1e-12).unwrap();
        for row in 0..3 {
            let v: Vec<f64> = (0..d)
                .map(|j| (x[row * d + j] + r[row * d + j]) as f64)
                .collect();
            let mean = v.iter().sum::<f64>() / d as f64;
            let var = v.iter().map(|a| (a - mean) * (a - mean)).sum::<f64>() / d as f64;
            for j in 0..d {
                let e = (v[j] - mean) / (var + 1e-12).sqrt() * w[j] as f64 + b[j] as f64;
                assert!((y[row * d + j] as f64 - e).abs() < 1e-5);
            }
        }
    }
}
