//! Dynamic int8 quantisation of `nn.Linear` (like PyTorch's `quantize_dynamic`): weights are
//! quantised once at load, symmetric per output channel (`q = round(w / s)`, `s = max|w| / 127`);
//! activations are quantised at run time per row, asymmetric to u8 (scale and zero point from
//! the row's min and max, both widened to include 0). The products run on AVX-512 VNNI
//! (`vpdpbusd`: u8 × i8, four pairs summed into each i32 lane) and are rescaled to f32:
//! `y = sa · sw · (acc − za · Σq_w) + b`.
#![allow(unsafe_code)]

use rayon::prelude::*;

use super::amx::AmxInt8;

/// Columns per packed panel (two zmm registers of 16 i32 lanes).
const NR: usize = 32;
/// Rows per micro-kernel tile.
const MR: usize = 12;

/// Whether the CPU can run the int8 path (AVX-512F + VNNI, detected at run time).
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        super::avx512() && std::arch::is_x86_feature_detected!("avx512vnni")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// A linear layer with int8 weights packed for the VNNI kernel.
#[derive(Debug)]
pub struct QuantLinear {
    n: usize,
    k: usize,
    /// `k` rounded up to a multiple of 4.
    kq: usize,
    /// Panel `p`, quad `g`, column `c`, byte `t` at `p·kq·NR + g·4·NR + 4c + t`.
    data: Vec<i8>,
    scale: Vec<f32>,
    colsum: Vec<i32>,
    bias: Vec<f32>,
    /// The same weights packed for AMX (`tdpbusd`) on CPUs that have it.
    amx: Option<AmxInt8>,
}

impl QuantLinear {
    /// Quantises `weight` `[n, k]` with `bias` `[n]` (zeros when `None`); `None` on a length
    /// mismatch.
    pub fn quantize(weight: &[f32], n: usize, k: usize, bias: Option<&[f32]>) -> Option<Self> {
        if n == 0 || k == 0 || weight.len() != n.checked_mul(k)? {
            return None;
        }
        let bias = match bias {
            Some(b) if b.len() == n => b.to_vec(),
            Some(_) => return None,
            None => vec![0f32; n],
        };
        let kq = k.div_ceil(4) * 4;
        let panels = n.div_ceil(NR);
        let mut data = vec![0i8; panels.checked_mul(kq)?.checked_mul(NR)?];
        let mut scale = vec![1f32; n];
        let mut colsum = vec![0i32; n];
        for row in 0..n {
            let w = &weight[row * k..(row + 1) * k];
            let amax = w.iter().fold(0f32, |a, v| a.max(v.abs()));
            let s = if amax > 0.0 { amax / 127.0 } else { 1.0 };
            scale[row] = s;
            let (p, c) = (row / NR, row % NR);
            let mut sum = 0i32;
            for (kk, &v) in w.iter().enumerate() {
                let q = (v / s).round().clamp(-127.0, 127.0) as i8;
                sum += i32::from(q);
                data[p * kq * NR + (kk / 4) * 4 * NR + 4 * c + kk % 4] = q;
            }
            colsum[row] = sum;
        }
        let amx = AmxInt8::pack(n, k, |row, kk| {
            data[(row / NR) * kq * NR + (kk / 4) * 4 * NR + 4 * (row % NR) + kk % 4]
        });
        Some(QuantLinear {
            n,
            k,
            kq,
            data,
            scale,
            colsum,
            bias,
            amx,
        })
    }

    /// Stacks layers with the same input size along the output dimension (Q, K and V); `None`
    /// unless every part's output size is a multiple of the panel width.
    pub fn concat(parts: &[&QuantLinear]) -> Option<Self> {
        let first = parts.first()?;
        let (k, kq) = (first.k, first.kq);
        if parts.iter().any(|p| p.k != k || p.n % NR != 0) {
            return None;
        }
        let mut out = QuantLinear {
            n: 0,
            k,
            kq,
            data: Vec::new(),
            scale: Vec::new(),
            colsum: Vec::new(),
            bias: Vec::new(),
            amx: None,
        };
        let amx: Option<Vec<&AmxInt8>> = parts.iter().map(|p| p.amx.as_ref()).collect();
        out.amx = amx.and_then(|a| AmxInt8::concat(&a));
        for p in parts {
            out.n += p.n;
            out.data.extend_from_slice(&p.data);
            out.scale.extend_from_slice(&p.scale);
            out.colsum.extend_from_slice(&p.colsum);
            out.bias.extend_from_slice(&p.bias);
        }
        Some(out)
    }

    /// Output features.
    pub fn out_features(&self) -> usize {
        self.n
    }

    /// Input features.
    pub fn in_features(&self) -> usize {
        self.k
    }

    /// `y = x Wᵀ + b` for `x` `[m, k]`; `None` when `x` is not `m × k` or VNNI is absent.
    pub fn forward(&self, x: &[f32], m: usize) -> Option<Vec<f32>> {
        if !available() || x.len() != m.checked_mul(self.k)? {
            return None;
        }
        let n = self.n;
        let mut y = vec![0f32; m.checked_mul(n)?];
        if m == 0 {
            return Some(y);
        }
        let threads = rayon::current_num_threads().max(1);
        let rows_per = m.div_ceil(threads).div_ceil(MR).max(1) * MR;
        y.par_chunks_mut(rows_per * n)
            .zip(x.par_chunks(rows_per * self.k))
            .for_each(|(yc, xc)| self.rows(xc, yc.len() / n, yc));
        Some(y)
    }

    /// All output columns for `m` rows of `x`, on this thread (the quantization and rescaling
    /// loops compiled for AVX-512 when it is there).
    fn rows(&self, x: &[f32], m: usize, y: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if available() {
            // SAFETY: AVX-512F (and FMA) was detected at run time.
            unsafe { self.rows_avx512(x, m, y) };
            return;
        }
        self.rows_generic(x, m, y)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,fma")]
    fn rows_avx512(&self, x: &[f32], m: usize, y: &mut [f32]) {
        self.rows_generic(x, m, y)
    }

    #[inline(always)]
    fn rows_generic(&self, x: &[f32], m: usize, y: &mut [f32]) {
        if let Some(amx) = &self.amx {
            self.rows_amx(amx, x, m, y);
            return;
        }
        let (k, kq, n) = (self.k, self.kq, self.n);
        let quads = kq / 4;
        let blocks = m.div_ceil(MR);
        // Quantise and pack the rows: block b, quad g, row r at b·quads·MR + g·MR + r.
        let mut a = vec![0i32; blocks * quads * MR];
        let mut sa = vec![1f32; blocks * MR];
        let mut za = vec![0i32; blocks * MR];
        let mut qrow = vec![0u8; kq];
        for r in 0..m {
            let (s, z) = quantize_row(&x[r * k..(r + 1) * k], &mut qrow);
            sa[r] = s;
            za[r] = z as i32;
            qrow[k..].fill(z as u8);
            let (b, i) = (r / MR, r % MR);
            for g in 0..quads {
                let bytes = [
                    qrow[4 * g],
                    qrow[4 * g + 1],
                    qrow[4 * g + 2],
                    qrow[4 * g + 3],
                ];
                a[b * quads * MR + g * MR + i] = i32::from_le_bytes(bytes);
            }
        }
        let mut tile = [0i32; MR * NR];
        for p in 0..n.div_ceil(NR) {
            let b = &self.data[p * kq * NR..(p + 1) * kq * NR];
            let c0 = p * NR;
            let cols = NR.min(n - c0);
            for blk in 0..blocks {
                let ab = &a[blk * quads * MR..(blk + 1) * quads * MR];
                micro(quads, ab, b, &mut tile);
                for i in 0..MR.min(m - blk * MR) {
                    let r = blk * MR + i;
                    // Padding past k holds the zero point against zero weights: it adds nothing.
                    let out = &mut y[r * n + c0..r * n + c0 + cols];
                    self.dequantize(sa[r], za[r], &tile[i * NR..i * NR + cols], c0, out);
                }
            }
        }
    }
}

impl QuantLinear {
    /// [`Self::rows_generic`] through the AMX tiles: the rows are quantised (as there) into a
    /// u8 matrix, multiplied in i32, then rescaled.
    #[inline(always)]
    fn rows_amx(&self, amx: &AmxInt8, x: &[f32], m: usize, y: &mut [f32]) {
        let (k, n) = (self.k, self.n);
        let (lda, ldo) = (amx.row_bytes(), amx.out_cols());
        let m_pad = m.div_ceil(16) * 16;
        let mut a = vec![0u8; m_pad * lda];
        let mut sa = vec![1f32; m];
        let mut za = vec![0i32; m];
        for (r, (xr, qr)) in x
            .chunks_exact(k)
            .zip(a.chunks_exact_mut(lda))
            .take(m)
            .enumerate()
        {
            let (s, z) = quantize_row(xr, qr);
            sa[r] = s;
            za[r] = z as i32;
        }
        let mut acc = vec![0i32; m_pad * ldo];
        if amx.matmul(&a, m, &mut acc).is_none() {
            return;
        }
        for (r, (yr, ar)) in y
            .chunks_exact_mut(n)
            .zip(acc.chunks_exact(ldo))
            .take(m)
            .enumerate()
        {
            self.dequantize(sa[r], za[r], &ar[..n], 0, yr);
        }
    }

    /// `out[j] = s · sw · (acc[j] − z · Σq_w) + b` for the columns `c0 + j` of one row with
    /// activation scale `s` and zero point `z`.
    #[inline(always)]
    fn dequantize(&self, s: f32, z: i32, acc: &[i32], c0: usize, out: &mut [f32]) {
        let cols = c0..c0 + out.len();
        let (Some(colsum), Some(scale), Some(bias)) = (
            self.colsum.get(cols.clone()),
            self.scale.get(cols.clone()),
            self.bias.get(cols),
        ) else {
            return;
        };
        for ((((o, &a), &cs), &sw), &b) in out.iter_mut().zip(acc).zip(colsum).zip(scale).zip(bias)
        {
            *o = s * sw * (a - z * cs) as f32 + b;
        }
    }
}

/// Quantises row `x` to u8 into `q` (its first `x.len()` bytes), asymmetric over the row's
/// range widened to include 0; returns the scale and the zero point.
#[inline(always)]
fn quantize_row(x: &[f32], q: &mut [u8]) -> (f32, f32) {
    let (lo, hi) = x
        .iter()
        .fold((0f32, 0f32), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    let s = if hi > lo { (hi - lo) / 255.0 } else { 1.0 };
    let z = (-lo / s).round().clamp(0.0, 255.0);
    for (q, &v) in q.iter_mut().zip(x) {
        *q = ((v / s).round() + z).clamp(0.0, 255.0) as u8;
    }
    (s, z)
}

/// One `MR × NR` i32 tile over `quads` groups of four k values.
fn micro(quads: usize, a: &[i32], b: &[i8], tile: &mut [i32; MR * NR]) {
    if a.len() < quads * MR || b.len() < quads * 4 * NR {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: `forward` runs only after `available()` detected AVX-512F and VNNI, and the
        // lengths checked above cover every load; the tile holds MR × NR lanes.
        unsafe { micro_vnni(quads, a.as_ptr(), b.as_ptr(), tile.as_mut_ptr()) }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vnni")]
unsafe fn micro_vnni(quads: usize, a: *const i32, b: *const i8, tile: *mut i32) {
    use std::arch::x86_64::*;
    let mut acc0 = [_mm512_setzero_si512(); MR];
    let mut acc1 = [_mm512_setzero_si512(); MR];
    // SAFETY (whole body): `micro` checked a ≥ quads·MR i32s and b ≥ quads·4·NR bytes; the
    // tile has MR·NR i32s.
    unsafe {
        let mut ap = a;
        let mut bp = b;
        for _ in 0..quads {
            let b0 = _mm512_loadu_si512(bp.cast());
            let b1 = _mm512_loadu_si512(bp.add(64).cast());
            for i in 0..MR {
                let av = _mm512_set1_epi32(*ap.add(i));
                acc0[i] = _mm512_dpbusd_epi32(acc0[i], av, b0);
                acc1[i] = _mm512_dpbusd_epi32(acc1[i], av, b1);
            }
            ap = ap.add(MR);
            bp = bp.add(4 * NR);
        }
        for i in 0..MR {
            _mm512_storeu_si512(tile.add(i * NR).cast(), acc0[i]);
            _mm512_storeu_si512(tile.add(i * NR + 16).cast(), acc1[i]);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn close_to_f32_on_odd_shapes() {
        if !available() {
            return;
        }
        let mut seed = 11u64;
        let mut next = || crate::kernels::lcg(&mut seed);
        for &(m, n, k) in &[(1, 1, 1), (5, 33, 7), (13, 64, 202), (40, 96, 768)] {
            let x: Vec<f32> = (0..m * k).map(|_| next() + 0.3).collect();
            let w: Vec<f32> = (0..n * k).map(|_| next()).collect();
            let b: Vec<f32> = (0..n).map(|_| next()).collect();
            let mut q = QuantLinear::quantize(&w, n, k, Some(&b)).unwrap();
            let y = q.forward(&x, m).unwrap();
            // The VNNI kernel gives the same integers as the AMX one.
            q.amx = None;
            assert_eq!(
                q.forward(&x, m).unwrap(),
                y,
                "m={m} n={n} k={k}: VNNI vs AMX"
            );
            for i in 0..m {
                for j in 0..n {
                    let exact: f32 =
                        (0..k).map(|kk| x[i * k + kk] * w[j * k + kk]).sum::<f32>() + b[j];
                    // Error bound of 8-bit rounding on both sides, summed over k.
                    let bound = 0.02 * (k as f32).sqrt() + 1e-3;
                    assert!(
                        (y[i * n + j] - exact).abs() < bound,
                        "m={m} n={n} k={k}: {} vs {exact}",
                        y[i * n + j]
                    );
                }
            }
        }
    }
}
