//! f32 GEMM for `nn.Linear` on x86-64 CPUs with AVX-512: `y = x Wᵀ + b`, optionally followed by
//! an activation, with `W` packed once at load into column panels.
//!
//! Layout: `W` `[n, k]` (PyTorch's `[out, in]`) becomes `ceil(n / NR)` panels; panel `p` holds,
//! for every `kk` in `0..k`, the `NR` values `W[p·NR + c, kk]` (zero past `n`). The micro-kernel
//! computes an `MR × NR` tile of `y` from a packed `MR`-row slice of `x` and one panel slice,
//! keeping the 24 accumulators in zmm registers. Up to `KC` (all of BERT's `k`), `k` is not
//! blocked: each output tile is written once, and the packed rows of `x` (at most `MO_FLOATS`
//! floats) stay in L2 while each panel streams past them. Work is split across rayon's pool by
//! rows (large `m`) or by panels (small `m`, e.g. one short sequence).
//!
//! Summation order differs from PyTorch's BLAS, as any two BLAS differ; results agree to float
//! rounding (the parity tests run through this path).
#![allow(unsafe_code)]

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::{as_uninit, assume_init, filled_vec};

/// Columns per packed panel (two zmm registers).
pub const NR: usize = 32;
/// Rows per micro-kernel tile.
pub const MR: usize = 12;
/// Depth of one k block. Measured on BERT-base shapes (1 thread, Sapphire Rapids), one block
/// over all of `k` beat 192-deep blocks by up to 10%: no partial sums reloaded from memory.
const KC: usize = 4096;
/// Floats of packed `x` per pass over the weights (768 KiB: L2-resident); the row chunk is
/// this divided by the block depth.
const MO_FLOATS: usize = 196_608;
/// Floats of packed weights per column block (768 KiB: with the packed rows, L2-resident):
/// every `MR`-row tile of the row chunk passes over all the block's panels, so its packed rows
/// (`MR·k` floats, L1-sized up to k = 768) are read from L1 and the panels from L2. Against one
/// panel per block passed over by 96 rows at a time (each tile re-reading its rows from L2):
/// +5-20% on BERT and Swin shapes (gemm_speed, 1 thread).
const NC_FLOATS: usize = 196_608;
/// Floats per 64-byte line, for aligning the packed buffer.
const ALIGN: usize = 16;
/// Software prefetch distances of the micro-kernel, in k steps, for the weight panel (`NR`
/// floats a step) and the packed rows (`MR` floats a step). Both stream from L2 (a panel is
/// `k·128` bytes, more than L1 for k ≥ 384); the hardware prefetcher alone left the kernel at
/// 60-65% of peak in place, these give 3-8% more (gemm_speed, BERT and Swin shapes).
const PFB: usize = 4;
/// See [`PFB`].
const PFA: usize = 24;

/// An activation fused into the GEMM epilogue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Epilogue {
    /// Bias only.
    None,
    /// Exact GELU, `0.5x(1+erf(x/√2))` (erf as ATen's vectorised version computes it).
    GeluErf,
}

/// A weight matrix packed for [`PackedLinear::forward`], with its bias.
#[derive(Debug)]
pub struct PackedLinear {
    n: usize,
    k: usize,
    data: Vec<f32>,
    offset: usize,
    bias: Vec<f32>,
}

impl PackedLinear {
    /// Packs `weight` `[n, k]` (row-major) and `bias` `[n]` (zeros when `None`). Returns `None`
    /// when the slices do not have those lengths.
    pub fn pack(weight: &[f32], n: usize, k: usize, bias: Option<&[f32]>) -> Option<Self> {
        if weight.len() != n.checked_mul(k)? {
            return None;
        }
        let bias = match bias {
            Some(b) if b.len() == n => b.to_vec(),
            Some(_) => return None,
            None => vec![0f32; n],
        };
        Self::pack_strided(weight, k, n, k, bias)
    }

    /// Packs an `[n, k]` matrix read from `src` with row stride `ld`.
    fn pack_strided(src: &[f32], ld: usize, n: usize, k: usize, bias: Vec<f32>) -> Option<Self> {
        if n == 0 || k == 0 || bias.len() != n {
            return None;
        }
        if src.len() < (n - 1).checked_mul(ld)?.checked_add(k)? {
            return None;
        }
        let panels = n.div_ceil(NR);
        let len = panels.checked_mul(k)?.checked_mul(NR)?;
        let mut data = vec![0f32; len.checked_add(ALIGN)?];
        let offset = align_offset(&data);
        let packed = data.get_mut(offset..offset + len)?;
        // Panels are independent: pack them in parallel (start-up is timed to first logits).
        packed
            .par_chunks_exact_mut(k * NR)
            .enumerate()
            .for_each(|(p, panel)| {
                let cols = NR.min(n - p * NR);
                for c in 0..cols {
                    let row = p * NR + c;
                    for (kk, &w) in src[row * ld..row * ld + k].iter().enumerate() {
                        panel[kk * NR + c] = w;
                    }
                }
            });
        Some(PackedLinear {
            n,
            k,
            data,
            offset,
            bias,
        })
    }

    /// An empty matrix, to [`Self::repack_block`] into.
    pub fn empty() -> Self {
        PackedLinear {
            n: 0,
            k: 0,
            data: Vec::new(),
            offset: 0,
            bias: Vec::new(),
        }
    }

    /// Packs the `[n, k]` block at column `col` of the row-major matrix `src` (row stride `ld`)
    /// into this matrix, reusing its buffers (no bias): e.g. one head's keys inside a fused QKV
    /// output. With `transposed`, the block is read as `[k, n]` (element `(row, kk)` at
    /// `kk·ld + row`): one head's values, so that the product computes `P · V`. `None`
    /// (leaving the matrix empty) when `src` is too short.
    pub fn repack_block(
        &mut self,
        src: &[f32],
        ld: usize,
        col: usize,
        n: usize,
        k: usize,
        transposed: bool,
    ) -> Option<()> {
        let src = src.get(col..)?;
        self.n = 0;
        if n == 0 || k == 0 {
            return None;
        }
        let last = if transposed {
            (k - 1).checked_mul(ld)?.checked_add(n)?
        } else {
            (n - 1).checked_mul(ld)?.checked_add(k)?
        };
        if src.len() < last {
            return None;
        }
        let panels = n.div_ceil(NR);
        let len = panels.checked_mul(k)?.checked_mul(NR)?;
        if self.data.len() < len + ALIGN {
            self.data.resize(len + ALIGN, 0.0);
        }
        self.offset = align_offset(&self.data);
        let packed = self.data.get_mut(self.offset..self.offset + len)?;
        for (p, panel) in packed.chunks_exact_mut(k * NR).enumerate() {
            let cols = NR.min(n - p * NR);
            for kk in 0..k {
                let dst = &mut panel[kk * NR..(kk + 1) * NR];
                if transposed {
                    let at = kk * ld + p * NR;
                    dst[..cols].copy_from_slice(&src[at..at + cols]);
                } else {
                    for (c, d) in dst[..cols].iter_mut().enumerate() {
                        *d = src[(p * NR + c) * ld + kk];
                    }
                }
                dst[cols..].fill(0.0);
            }
        }
        self.bias.clear();
        self.bias.resize(n, 0.0);
        self.n = n;
        self.k = k;
        Some(())
    }

    /// `x Wᵀ + b` on the calling thread only, for `m` rows of `x` read with row stride `ldx`
    /// (`x[i·ldx + kk]`), into `y` (its first `m·n` floats, all overwritten). `None` if `x` or
    /// `y` is too short or AVX-512 is absent.
    pub fn forward_serial_into(
        &self,
        x: &[f32],
        ldx: usize,
        m: usize,
        y: &mut [f32],
    ) -> Option<()> {
        if ldx < self.k || self.n == 0 {
            return None;
        }
        self.check_rows(x, ldx, m)?;
        let y = y.get_mut(..m.checked_mul(self.n)?)?;
        let panels = self.n.div_ceil(NR);
        let ok = m == 0 || self.region(x, ldx, m, 0, panels, as_uninit(y), self.n, Epilogue::None);
        ok.then_some(())
    }

    /// Stacks packed layers with the same input size along the output dimension (e.g. Q, K
    /// and V into one projection). `None` unless every part's output size is a multiple of `NR`.
    pub fn concat(parts: &[&PackedLinear]) -> Option<Self> {
        let k = parts.first()?.k;
        if parts.iter().any(|p| p.k != k || p.n % NR != 0) {
            return None;
        }
        let n: usize = parts.iter().map(|p| p.n).sum();
        let len = n.checked_mul(k)?;
        let mut data = vec![0f32; len.checked_add(ALIGN)?];
        let offset = align_offset(&data);
        let mut at = offset;
        let mut bias = Vec::with_capacity(n);
        for p in parts {
            let src = p.packed();
            data.get_mut(at..at + src.len())?.copy_from_slice(src);
            at += src.len();
            bias.extend_from_slice(&p.bias);
        }
        Some(PackedLinear {
            n,
            k,
            data,
            offset,
            bias,
        })
    }

    /// Output features.
    pub fn out_features(&self) -> usize {
        self.n
    }

    /// Input features.
    pub fn in_features(&self) -> usize {
        self.k
    }

    fn packed(&self) -> &[f32] {
        let len = self.n.div_ceil(NR) * self.k * NR;
        &self.data[self.offset..self.offset + len]
    }

    /// `y = epilogue(x Wᵀ + b)` for `x` `[m, k]` row-major; returns `y` `[m, n]`. Returns
    /// `None` when `x` is not `m × k` or the CPU lacks AVX-512 (callers fall back to candle).
    pub fn forward(&self, x: &[f32], m: usize, epilogue: Epilogue) -> Option<Vec<f32>> {
        if x.len() != m.checked_mul(self.k)? {
            return None;
        }
        self.forward_strided(x, self.k, m, epilogue)
    }

    /// [`Self::forward`] for `m` rows of `x` read with row stride `ldx` (row `i` is
    /// `x[i·ldx ..][..k]`; rows may overlap when `ldx < k`, e.g. the windows of a strided 1-d
    /// convolution over channels-last input).
    pub fn forward_strided(
        &self,
        x: &[f32],
        ldx: usize,
        m: usize,
        epilogue: Epilogue,
    ) -> Option<Vec<f32>> {
        if ldx == 0 {
            return None;
        }
        self.check_rows(x, ldx, m)?;
        let n = self.n;
        let threads = rayon::current_num_threads().max(1);
        let panels = n.div_ceil(NR);
        let flops = 2.0 * m as f64 * n as f64 * self.k as f64;
        let fill = |y: &mut [MaybeUninit<f32>]| -> bool {
            if m == 0 {
                return true;
            }
            if threads == 1 || flops < 2e6 {
                return self.region(x, ldx, m, 0, panels, y, n, epilogue);
            }
            if m >= threads * MR * 2 {
                // Split by rows: each task owns a contiguous block of y.
                let rows_per = m.div_ceil(threads).div_ceil(MR) * MR;
                return y
                    .par_chunks_mut(rows_per * n)
                    .enumerate()
                    .map(|(i, yc)| {
                        let rows = yc.len() / n;
                        x.get(i * rows_per * ldx..).is_some_and(|xc| {
                            self.region(xc, ldx, rows, 0, panels, yc, n, epilogue)
                        })
                    })
                    .reduce(|| true, |a, b| a && b);
            }
            // Split by panels: each task fills a column block into its own buffer.
            let tasks = threads.min(panels);
            let per = panels.div_ceil(tasks);
            let parts: Vec<(usize, usize, Option<Vec<f32>>)> = (0..tasks)
                .into_par_iter()
                .filter_map(|t| {
                    let p0 = t * per;
                    let p1 = ((t + 1) * per).min(panels);
                    if p0 >= p1 {
                        return None;
                    }
                    let c0 = p0 * NR;
                    let c1 = (p1 * NR).min(n);
                    let w = c1 - c0;
                    // SAFETY: `region` returns true only after writing every float of its output.
                    let part = unsafe {
                        filled_vec(m * w, |o| self.region(x, ldx, m, p0, p1, o, w, epilogue))
                    };
                    Some((c0, c1, part))
                })
                .collect();
            let mut covered = 0;
            for (c0, c1, part) in parts {
                let (Some(part), true) = (part, c0 == covered) else {
                    return false;
                };
                let w = c1 - c0;
                for (row, src) in part.chunks_exact(w).enumerate() {
                    for (d, &v) in y[row * n + c0..row * n + c1].iter_mut().zip(src) {
                        d.write(v);
                    }
                }
                covered = c1;
            }
            covered == n
        };
        // SAFETY: `fill` returns true only when every float of `y` was written: the row split's
        // chunks cover all rows (each `region` call writes all of its rows and columns), and the
        // panel split checks that its parts cover columns 0..n in order.
        unsafe { filled_vec(m.checked_mul(n)?, fill) }
    }

    /// `Some` when the kernel can run (AVX-512) and `x` holds `m` rows of `k` floats at row
    /// stride `ldx`.
    fn check_rows(&self, x: &[f32], ldx: usize, m: usize) -> Option<()> {
        if !super::avx512() {
            return None;
        }
        if m > 0 && x.len() < (m - 1).checked_mul(ldx)?.checked_add(self.k)? {
            return None;
        }
        Some(())
    }

    /// Computes columns `p0·NR ..` of `y` for panels `p0..p1` and all `m` rows of `x` (row
    /// stride `ldx`), into `out` (`m` rows of `ldo` floats, column 0 = panel `p0`'s first).
    /// Returns `true` once every one of those `m` rows × `min(p1·NR, n) − p0·NR` columns is
    /// written (`out` need not be initialised), `false` (having written less) only when a
    /// slice is shorter than the shapes say.
    ///
    /// Loop order: per row chunk and k block, the chunk's rows are packed once (L2-resident);
    /// then per column block (`NC_FLOATS` of weights, L2-resident) each `MR`-row tile of the
    /// chunk passes over every panel of the block, its packed rows staying in L1.
    #[allow(clippy::too_many_arguments)]
    fn region(
        &self,
        x: &[f32],
        ldx: usize,
        m: usize,
        p0: usize,
        p1: usize,
        out: &mut [MaybeUninit<f32>],
        ldo: usize,
        epilogue: Epilogue,
    ) -> bool {
        // Equal row chunks whose packed k block (at most MO_FLOATS floats) stays in L2; the
        // weights are streamed once per chunk.
        let mo = (MO_FLOATS / self.k.clamp(1, KC)).max(MR) / MR * MR;
        let chunks = m.div_ceil(mo).max(1);
        let per = m.div_ceil(chunks).div_ceil(MR) * MR;
        let mut r0 = 0;
        while r0 < m {
            let rows = per.min(m - r0);
            let (Some(xs), Some(os)) = (x.get(r0 * ldx..), out.get_mut(r0 * ldo..)) else {
                return false;
            };
            if !self.region_rows(xs, ldx, rows, p0, p1, os, ldo, epilogue) {
                return false;
            }
            r0 += rows;
        }
        true
    }

    /// [`Self::region`] for one row chunk.
    #[allow(clippy::too_many_arguments)]
    fn region_rows(
        &self,
        x: &[f32],
        ldx: usize,
        m: usize,
        p0: usize,
        p1: usize,
        out: &mut [MaybeUninit<f32>],
        ldo: usize,
        epilogue: Epilogue,
    ) -> bool {
        let need = m.div_ceil(MR) * MR * KC.min(self.k) + ALIGN;
        APACK.with(|scratch| match scratch.try_borrow_mut() {
            Ok(mut apack) => {
                if apack.len() < need {
                    apack.resize(need, 0.0);
                }
                self.region_packed(x, ldx, m, p0, p1, out, ldo, epilogue, &mut apack)
            }
            // Not reached (nothing below calls back in), but never panic over a buffer.
            Err(_) => {
                let mut apack = vec![0f32; need];
                self.region_packed(x, ldx, m, p0, p1, out, ldo, epilogue, &mut apack)
            }
        })
    }

    /// [`Self::region_rows`] with `apack` (at least `ceil(m / MR)·MR·min(k, KC) + ALIGN` floats)
    /// as the packing buffer; `pack_a` writes every float of it that is read.
    #[allow(clippy::too_many_arguments)]
    fn region_packed(
        &self,
        x: &[f32],
        ldx: usize,
        m: usize,
        p0: usize,
        p1: usize,
        out: &mut [MaybeUninit<f32>],
        ldo: usize,
        epilogue: Epilogue,
        apack: &mut [f32],
    ) -> bool {
        let k = self.k;
        let packed = self.packed();
        let col0 = p0 * NR;
        let row_blocks = m.div_ceil(MR);
        let a_off = align_offset(apack);
        let mut tile = [0f32; MR * NR];
        // Every output float is stored (with the bias) by the first k block's micro-kernel,
        // then read back only by later k blocks (k > KC).
        let fits = m == 0
            || (out.len() >= (m - 1) * ldo + (p1 * NR).min(self.n) - col0
                && x.len() >= (m - 1) * ldx + k
                && packed.len() >= p1 * k * NR);
        if !fits || apack.len() < a_off + row_blocks * MR * KC.min(k) {
            return false;
        }
        let mut k0 = 0;
        while k0 < k {
            let kc = KC.min(k - k0);
            let first = k0 == 0;
            let last = k0 + kc == k;
            let a = &mut apack[a_off..a_off + row_blocks * MR * kc];
            pack_a(x, ldx, 0, m, k0, kc, a);
            let a = &*a;
            // Panels per column block: their k-block slices (kc·NR floats each) fit the L2 budget.
            let nc = (NC_FLOATS / (kc * NR)).max(1);
            let mut q0 = p0;
            while q0 < p1 {
                let q1 = (q0 + nc).min(p1);
                // Each MR-row tile over every panel of the block: its packed rows stay in L1.
                for (blk, a_blk) in a.chunks_exact(MR * kc).enumerate() {
                    let row0 = blk * MR;
                    let rows = MR.min(m - row0);
                    for p in q0..q1 {
                        let b = &packed[p * k * NR + k0 * NR..p * k * NR + (k0 + kc) * NR];
                        let c_first = p * NR;
                        let cols = NR.min(self.n - c_first);
                        let bias = &self.bias[c_first..c_first + cols];
                        let oc = c_first - col0;
                        if rows == MR && cols == NR {
                            let start = row0 * ldo + oc;
                            let end = (row0 + MR - 1) * ldo + oc + NR;
                            let c = &mut out[start..end];
                            if !micro(kc, a_blk, b, c, ldo, first, bias) {
                                return false;
                            }
                            if last && epilogue != Epilogue::None {
                                for r in 0..MR {
                                    // SAFETY: `micro` just stored these NR floats.
                                    apply(epilogue, unsafe {
                                        assume_init(&mut c[r * ldo..r * ldo + NR])
                                    });
                                }
                            }
                        } else {
                            // Edge tile: compute into a scratch tile, copy the valid part.
                            if !first {
                                for r in 0..rows {
                                    let at = (row0 + r) * ldo + oc;
                                    // SAFETY: the first k block stored these floats.
                                    let src = unsafe { assume_init(&mut out[at..at + cols]) };
                                    tile[r * NR..r * NR + cols].copy_from_slice(src);
                                }
                            }
                            let mut full_bias = [0f32; NR];
                            full_bias[..cols].copy_from_slice(bias);
                            let t = as_uninit(&mut tile);
                            if !micro(kc, a_blk, b, t, NR, first, &full_bias) {
                                return false;
                            }
                            for r in 0..rows {
                                let at = (row0 + r) * ldo + oc;
                                let dst = &mut out[at..at + cols];
                                for (d, &v) in dst.iter_mut().zip(&tile[r * NR..r * NR + cols]) {
                                    d.write(v);
                                }
                                if last && epilogue != Epilogue::None {
                                    // SAFETY: every float of `dst` was just written.
                                    apply(epilogue, unsafe { assume_init(dst) });
                                }
                            }
                        }
                    }
                }
                q0 = q1;
            }
            k0 += kc;
        }
        true
    }
}

thread_local! {
    /// Each thread's buffer for the packed rows of `x`, reused across calls.
    static APACK: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn align_offset(buf: &[f32]) -> usize {
    let addr = buf.as_ptr() as usize;
    let rem = (addr / 4) % ALIGN;
    if rem == 0 {
        0
    } else {
        ALIGN - rem
    }
}

/// Packs rows `m0..m0+mc`, columns `k0..k0+kc` of `x` (`ldx` floats per row) into `MR`-row
/// blocks: block `b`, step `kk`, row `r` at `b·MR·kc + kk·MR + r`; rows past `mc` are zero.
///
/// Step-major: each step's `MR` floats are stored together, read from the `MR` rows (L1-
/// resident after the first step). Row by row with strided stores it cost 0.9 ns a float
/// against 0.25 here (`pack_speed`), 6-7% of BERT's CPU time.
fn pack_a(x: &[f32], ldx: usize, m0: usize, mc: usize, k0: usize, kc: usize, a: &mut [f32]) {
    let blocks = mc.div_ceil(MR);
    for blk in 0..blocks {
        let dst = &mut a[blk * MR * kc..(blk + 1) * MR * kc];
        let rows = MR.min(mc - blk * MR);
        if rows < MR {
            dst.fill(0.0);
        }
        let srcs: [&[f32]; MR] = std::array::from_fn(|r| {
            let row = m0 + blk * MR + r.min(rows - 1);
            &x[row * ldx + k0..row * ldx + k0 + kc]
        });
        for (kk, d) in dst.chunks_exact_mut(MR).enumerate() {
            for r in 0..rows {
                d[r] = srcs[r][kk];
            }
        }
    }
}

/// One `MR × NR` tile: `c = (first ? bias : c) + a·b` over `kc` steps. `c` holds `MR` rows of
/// `ldc` floats (the last row only needs `NR`); with `first` it is only written, otherwise its
/// tile must be initialised. Returns `false`, writing nothing, when a slice is too short.
fn micro(
    kc: usize,
    a: &[f32],
    b: &[f32],
    c: &mut [MaybeUninit<f32>],
    ldc: usize,
    first: bool,
    bias: &[f32],
) -> bool {
    // Bounds for the raw-pointer kernel, checked once here.
    let ok = a.len() >= kc * MR
        && b.len() >= kc * NR
        && bias.len() >= NR
        && ldc >= NR
        && c.len() > (MR - 1) * ldc + NR - 1;
    if !ok {
        return false;
    }
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: `forward` only runs after `super::avx512()` detected AVX-512F at run time, and
        // the lengths checked above cover every pointer offset the kernel forms. Without
        // `first` it reads the tile, which the caller guarantees is initialised.
        unsafe {
            micro_avx512(
                kc,
                a.as_ptr(),
                b.as_ptr(),
                c.as_mut_ptr().cast::<f32>(),
                ldc,
                first,
                bias.as_ptr(),
            )
        }
        true
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn micro_avx512(
    kc: usize,
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    first: bool,
    bias: *const f32,
) {
    use std::arch::x86_64::*;
    let mut acc0 = [_mm512_setzero_ps(); MR];
    let mut acc1 = [_mm512_setzero_ps(); MR];
    // SAFETY (whole body): `micro` checked a ≥ kc·MR, b ≥ kc·NR, bias ≥ NR floats and that c
    // covers MR rows of stride ldc with NR floats in the last.
    unsafe {
        // The tile's rows lie a whole output row apart (often outside L2): ask for them now,
        // add the partial sums only after the k loop, by which time they have arrived.
        for i in 0..MR {
            _mm_prefetch::<_MM_HINT_T0>(c.add(i * ldc).cast());
            _mm_prefetch::<_MM_HINT_T0>(c.add(i * ldc + 16).cast());
        }
        if first {
            let b0 = _mm512_loadu_ps(bias);
            let b1 = _mm512_loadu_ps(bias.add(16));
            for i in 0..MR {
                acc0[i] = b0;
                acc1[i] = b1;
            }
        }
        let mut ap = a;
        let mut bp = b;
        for _ in 0..kc {
            // Prefetches never fault: past the end of the buffers they are harmless.
            _mm_prefetch::<_MM_HINT_T0>(bp.wrapping_add(PFB * NR).cast());
            _mm_prefetch::<_MM_HINT_T0>(bp.wrapping_add(PFB * NR + 16).cast());
            _mm_prefetch::<_MM_HINT_T0>(ap.wrapping_add(PFA * MR).cast());
            let b0 = _mm512_loadu_ps(bp);
            let b1 = _mm512_loadu_ps(bp.add(16));
            for i in 0..MR {
                let ai = _mm512_set1_ps(*ap.add(i));
                acc0[i] = _mm512_fmadd_ps(ai, b0, acc0[i]);
                acc1[i] = _mm512_fmadd_ps(ai, b1, acc1[i]);
            }
            ap = ap.add(MR);
            bp = bp.add(NR);
        }
        if !first {
            for i in 0..MR {
                acc0[i] = _mm512_add_ps(acc0[i], _mm512_loadu_ps(c.add(i * ldc)));
                acc1[i] = _mm512_add_ps(acc1[i], _mm512_loadu_ps(c.add(i * ldc + 16)));
            }
        }
        for i in 0..MR {
            _mm512_storeu_ps(c.add(i * ldc), acc0[i]);
            _mm512_storeu_ps(c.add(i * ldc + 16), acc1[i]);
        }
    }
}

fn apply(epilogue: Epilogue, xs: &mut [f32]) {
    match epilogue {
        Epilogue::None => {}
        Epilogue::GeluErf => super::elementwise::gelu_erf_inplace(xs),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::kernels::lcg;

    fn naive(x: &[f32], w: &[f32], b: &[f32], m: usize, n: usize, k: usize) -> Vec<f32> {
        let mut y = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                let mut s = b[j] as f64;
                for kk in 0..k {
                    s += x[i * k + kk] as f64 * w[j * k + kk] as f64;
                }
                y[i * n + j] = s as f32;
            }
        }
        y
    }

    #[test]
    fn matches_naive_on_odd_shapes() {
        if !crate::kernels::avx512() {
            return;
        }
        let mut seed = 7u64;
        for &(m, n, k) in &[
            (1, 1, 1),
            (5, 33, 7),
            (13, 64, 200),
            (16, 768, 96),
            (97, 45, 385),
            (130, 100, 64),
            (300, 70, 30),
            // Deeper than one k block (KC): later blocks add to the stored partial sums.
            (50, 70, 4200),
            (7, 100, 4500),
        ] {
            let x: Vec<f32> = (0..m * k).map(|_| lcg(&mut seed)).collect();
            let w: Vec<f32> = (0..n * k).map(|_| lcg(&mut seed)).collect();
            let b: Vec<f32> = (0..n).map(|_| lcg(&mut seed)).collect();
            let packed = PackedLinear::pack(&w, n, k, Some(&b)).unwrap();
            let y = packed.forward(&x, m, Epilogue::None).unwrap();
            let r = naive(&x, &w, &b, m, n, k);
            let worst = y
                .iter()
                .zip(&r)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(worst < 1e-4, "m={m} n={n} k={k}: max diff {worst}");
            let g = packed.forward(&x, m, Epilogue::GeluErf).unwrap();
            for (gv, rv) in g.iter().zip(&r) {
                let exact = 0.5 * (*rv as f64) * (1.0 + erf64(*rv as f64 / 2f64.sqrt()));
                assert!((*gv as f64 - exact).abs() < 1e-4, "gelu {gv} vs {exact}");
            }
        }
    }

    fn erf64(x: f64) -> f64 {
        // Series/continued fraction is overkill; a high-order A&S 7.1.28-free check: integrate.
        let n = 20000;
        let h = x / n as f64;
        let mut s = 0.0;
        for i in 0..n {
            let t = (i as f64 + 0.5) * h;
            s += (-t * t).exp();
        }
        s * h * 2.0 / std::f64::consts::PI.sqrt()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod speed {
    use super::*;

    fn thread_cpu_ns() -> u64 {
        std::fs::read_to_string("/proc/thread-self/schedstat")
            .ok()
            .and_then(|t| t.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    }

    /// `cargo test --release -p autoclass --lib gemm_speed -- --ignored --nocapture`: GFLOP/s of
    /// one thread on BERT-base shapes (CPU time, so a busy machine does not skew it).
    #[test]
    #[ignore]
    fn gemm_speed() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        // GEMM_SHAPES="m,n,k;m,n,k" replaces the default shapes.
        let shapes: Vec<(usize, usize, usize)> = match std::env::var("GEMM_SHAPES") {
            Ok(s) => s
                .split(';')
                .map(|t| {
                    let v: Vec<usize> = t.split(',').map(|d| d.trim().parse().unwrap()).collect();
                    (v[0], v[1], v[2])
                })
                .collect(),
            Err(_) => vec![
                (1024, 768, 768),
                (1024, 3072, 768),
                (1024, 768, 3072),
                (16, 768, 768),
                (3936, 768, 768),
            ],
        };
        for &(m, n, k) in &shapes {
            let x = vec![0.5f32; m * k];
            let w = vec![0.25f32; n * k];
            let p = PackedLinear::pack(&w, n, k, None).unwrap();
            pool.install(|| {
                // One output buffer, reused: allocation and page faults are not the GEMM's.
                let mut y = vec![0f32; m * n];
                p.forward_serial_into(&x, k, m, &mut y).unwrap();
                // CPU time is tick-accounted here (~4 ms): 1e11 flops keep that under 1%.
                let reps = (1e11 / (2.0 * (m * n * k) as f64)).ceil() as usize;
                let t0 = thread_cpu_ns();
                for _ in 0..reps {
                    p.forward_serial_into(&x, k, m, &mut y).unwrap();
                    std::hint::black_box(&mut y);
                }
                let dt = (thread_cpu_ns() - t0) as f64 / 1e9;
                let gflops = 2.0 * (m * n * k * reps) as f64 / dt / 1e9;
                println!("m={m} n={n} k={k}: {gflops:.1} GFLOP/s");
            });
        }
    }

    /// Speed of [`pack_a`] on L3-resident rows (BERT-base's 256-row chunks); prints ns per
    /// float, asserts nothing: a profiling harness, run with `--ignored --nocapture`.
    #[test]
    #[ignore]
    fn pack_speed() {
        let (m, k) = (256usize, 768usize);
        let bufs = 64;
        let xs: Vec<Vec<f32>> = (0..bufs).map(|i| vec![i as f32; m * k]).collect();
        let mut a = vec![0f32; m.div_ceil(MR) * MR * k];
        let reps = 20;
        let t0 = thread_cpu_ns();
        for _ in 0..reps {
            for x in &xs {
                pack_a(x, k, 0, m, 0, k, &mut a);
                std::hint::black_box(&mut a);
            }
        }
        let dt = (thread_cpu_ns() - t0) as f64;
        println!("pack_a: {:.2} ns/float", dt / (reps * bufs * m * k) as f64);
    }
}
