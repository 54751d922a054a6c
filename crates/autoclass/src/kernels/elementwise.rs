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

avx512_dispatch! {
    /// In-place exact GELU, `0.5x(1+erf(x/√2))`, as ATen computes it for f32.
    pub fn gelu_erf_inplace via gelu_avx512(xs: &mut [f32]) => gelu_generic
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
    let mut out = vec![0f32; x.len()];
    let rows_per = (1usize << 14).div_ceil(d).max(1);
    if x.len() >= 1 << 16 {
        out.par_chunks_mut(rows_per * d)
            .enumerate()
            .for_each(|(i, o)| {
                let start = i * rows_per * d;
                let xs = &x[start..start + o.len()];
                let rs = residual.map(|r| &r[start..start + o.len()]);
                layer_norm_rows(xs, rs, w, b, eps, o);
            });
    } else {
        layer_norm_rows(x, residual, w, b, eps, &mut out);
    }
    Some(out)
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

avx512_dispatch! {
    /// In-place softmax of one row (max-subtracted, f32).
    pub fn softmax_inplace via softmax_avx512(xs: &mut [f32]) => softmax_generic
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
