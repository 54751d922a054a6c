//! bf16 GEMM for `nn.Linear` on Intel AMX (`tdpbf16ps`): `y = x Wᵀ + b` with the weights
//! rounded to bf16 once at load, the activations rounded to bf16 per call, and f32
//! accumulation — what PyTorch's CPU autocast does for bf16 matmuls. Used for
//! [`crate::DTypeChoice::BF16`] on CPUs with AMX; other layers then stay in f32.
//!
//! AMX needs the kernel's permission for the tile state (`arch_prctl(ARCH_REQ_XCOMP_PERM)`,
//! Linux 5.16+), asked once; AMX intrinsics are not stable Rust, so the tile instructions are
//! written with `asm!`.
//!
//! Packed layouts (every tile is 16 rows of 64 bytes, each row one aligned cache line):
//! - weights: `n_pad = ceil32(n)`, `kt = ceil32(k) / 32`; the tile of 16-column block `nb` and
//!   32-deep k block `kb` is at line `(nb·kt + kb)·16`; its row `p` holds, for column `c`,
//!   `W[nb·16 + c, kb·32 + 2p + j]` at `2c + j` (AMX's pair-interleaved B layout). Zero padding.
//! - activations: `m_pad = ceil16(m)`; the tile of 16-row block `mb` and k block `kb` is at line
//!   `(mb·kt + kb)·16`; its row `r` holds `x[mb·16 + r, kb·32 ..][..32]`. Zero padding.
#![allow(unsafe_code)]

use std::cell::RefCell;
use std::sync::OnceLock;

use rayon::prelude::*;

use super::gemm::Epilogue;

/// Rows of `x` whose packed tiles stay in L2 while every weight panel passes over them.
const M_CHUNK: usize = 128;

/// One 64-byte cache line: one tile row of 32 bf16 values.
#[repr(C, align(64))]
#[derive(Clone, Copy, Debug)]
struct Line([u16; 32]);

const ZERO_LINE: Line = Line([0; 32]);

/// Whether the AMX bf16 path is usable: AVX-512 fast paths on (see [`super::avx512`]), the CPU
/// has AMX-TILE, AMX-BF16 and AVX512-BF16, the OS enabled the tile state, and the kernel granted
/// this process permission to use it.
pub fn available() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| super::avx512() && detect())
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn detect() -> bool {
    use std::arch::x86_64::__cpuid_count;
    const XFEATURE_XTILECFG: u64 = 17;
    const XFEATURE_XTILEDATA: u64 = 18;
    if __cpuid_count(0, 0).eax < 7 {
        return false;
    }
    let leaf7 = __cpuid_count(7, 0);
    let leaf7_1 = __cpuid_count(7, 1);
    let amx_bf16 = leaf7.edx & (1 << 22) != 0;
    let amx_tile = leaf7.edx & (1 << 24) != 0;
    let avx512_bf16 = leaf7_1.eax & (1 << 5) != 0;
    let osxsave = __cpuid_count(1, 0).ecx & (1 << 27) != 0;
    if !(amx_bf16 && amx_tile && avx512_bf16 && osxsave) {
        return false;
    }
    let (lo, hi): (u32, u32);
    // SAFETY: `xgetbv` with ecx = 0 is valid when CPUID.1:ECX.OSXSAVE is set (checked above).
    unsafe {
        std::arch::asm!("xgetbv", in("ecx") 0u32, out("eax") lo, out("edx") hi,
            options(nomem, nostack, preserves_flags));
    }
    let xcr0 = ((hi as u64) << 32) | lo as u64;
    if xcr0 & (1 << XFEATURE_XTILECFG) == 0 || xcr0 & (1 << XFEATURE_XTILEDATA) == 0 {
        return false;
    }
    request_permission(XFEATURE_XTILEDATA)
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
fn detect() -> bool {
    false
}

/// `arch_prctl(ARCH_REQ_XCOMP_PERM, feature)` then `ARCH_GET_XCOMP_PERM` to confirm it.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn request_permission(feature: u64) -> bool {
    const SYS_ARCH_PRCTL: i64 = 158;
    const ARCH_GET_XCOMP_PERM: u64 = 0x1022;
    const ARCH_REQ_XCOMP_PERM: u64 = 0x1023;
    let call = |code: u64, arg: u64| -> i64 {
        let ret: i64;
        // SAFETY: `arch_prctl` with ARCH_REQ_XCOMP_PERM only extends this process's permitted
        // XSAVE features; with ARCH_GET_XCOMP_PERM it writes one u64 at `arg`, which points to a
        // live local below. `syscall` clobbers rcx and r11, declared here.
        unsafe {
            std::arch::asm!("syscall",
                inlateout("rax") SYS_ARCH_PRCTL => ret,
                in("rdi") code, in("rsi") arg,
                lateout("rcx") _, lateout("r11") _,
                options(nostack));
        }
        ret
    };
    if call(ARCH_REQ_XCOMP_PERM, feature) != 0 {
        return false;
    }
    let mut mask = 0u64;
    call(ARCH_GET_XCOMP_PERM, &mut mask as *mut u64 as u64) == 0 && mask & (1 << feature) != 0
}

/// f32 → bf16, round to nearest even, subnormals flushed to zero (as `vcvtne2ps2bf16`).
fn f32_to_bf16(x: f32) -> u16 {
    let b = x.to_bits();
    if x.is_nan() {
        return ((b >> 16) | 0x40) as u16;
    }
    if b & 0x7f80_0000 == 0 {
        return (b >> 16) as u16 & 0x8000;
    }
    let lsb = (b >> 16) & 1;
    (b.wrapping_add(0x7fff + lsb) >> 16) as u16
}

/// A weight matrix rounded to bf16 and packed for AMX, with its f32 bias.
#[derive(Debug)]
pub struct AmxLinear {
    n: usize,
    k: usize,
    kt: usize,
    w: Vec<Line>,
    /// `n_pad` floats (zero past `n`).
    bias: Vec<f32>,
}

impl AmxLinear {
    /// Packs `weight` `[n, k]` (row-major f32) and `bias` `[n]`. `None` when the lengths
    /// disagree or AMX is not [`available`].
    pub fn pack(weight: &[f32], n: usize, k: usize, bias: Option<&[f32]>) -> Option<Self> {
        if !available() || n == 0 || k == 0 || weight.len() != n.checked_mul(k)? {
            return None;
        }
        let n_pad = n.div_ceil(32) * 32;
        let kt = k.div_ceil(32);
        let mut w = vec![ZERO_LINE; (n_pad / 16).checked_mul(kt)?.checked_mul(16)?];
        w.par_chunks_mut(kt * 16)
            .enumerate()
            .for_each(|(nb, block)| {
                for (kb, tile) in block.chunks_exact_mut(16).enumerate() {
                    for (p, row) in tile.iter_mut().enumerate() {
                        for c in 0..16 {
                            let col = nb * 16 + c;
                            if col >= n {
                                break;
                            }
                            for j in 0..2 {
                                let kk = kb * 32 + 2 * p + j;
                                if kk < k {
                                    row.0[2 * c + j] = f32_to_bf16(weight[col * k + kk]);
                                }
                            }
                        }
                    }
                }
            });
        let mut b = vec![0f32; n_pad];
        match bias {
            Some(src) if src.len() == n => b[..n].copy_from_slice(src),
            Some(_) => return None,
            None => {}
        }
        Some(AmxLinear {
            n,
            k,
            kt,
            w,
            bias: b,
        })
    }

    /// Stacks layers with the same input size along the output dimension (Q, K and V into one
    /// projection). `None` unless every part's output size is a multiple of 32.
    pub fn concat(parts: &[&AmxLinear]) -> Option<Self> {
        let first = parts.first()?;
        if parts.iter().any(|p| p.k != first.k || p.n % 32 != 0) {
            return None;
        }
        let mut w = Vec::with_capacity(parts.iter().map(|p| p.w.len()).sum());
        let mut bias = Vec::new();
        for p in parts {
            w.extend_from_slice(&p.w);
            bias.extend_from_slice(&p.bias);
        }
        Some(AmxLinear {
            n: parts.iter().map(|p| p.n).sum(),
            k: first.k,
            kt: first.kt,
            w,
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

    /// `y = epilogue(x Wᵀ + b)` for `x` `[m, k]` row-major; returns `y` `[m, n]`, or `None` when
    /// `x` is not `m × k`. Rows are split across rayon's pool.
    pub fn forward(&self, x: &[f32], m: usize, epilogue: Epilogue) -> Option<Vec<f32>> {
        let (n, k) = (self.n, self.k);
        if x.len() != m.checked_mul(k)? {
            return None;
        }
        let mut y = vec![0f32; m.checked_mul(n)?];
        if m == 0 {
            return Some(y);
        }
        let threads = rayon::current_num_threads().max(1);
        let rows_per = m.div_ceil(threads).div_ceil(32).max(1) * 32;
        let ok = if threads > 1 && m > rows_per {
            y.par_chunks_mut(rows_per * n)
                .zip(x.par_chunks(rows_per * k))
                .all(|(yc, xc)| self.rows(xc, yc.len() / n, yc, epilogue).is_some())
        } else {
            self.rows(x, m, &mut y, epilogue).is_some()
        };
        ok.then_some(y)
    }

    /// [`Self::forward`] for `m` rows on the calling thread, into `y` (`m × n`).
    fn rows(&self, x: &[f32], m: usize, y: &mut [f32], epilogue: Epilogue) -> Option<()> {
        let (n, k, kt) = (self.n, self.k, self.kt);
        let n_pad = n.div_ceil(32) * 32;
        let m_pad = m.div_ceil(16) * 16;
        if x.len() < m * k || y.len() < m * n || self.w.len() < (n_pad / 16) * kt * 16 {
            return None;
        }
        A_SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            let lines = (m_pad / 16) * kt * 16;
            if scratch.len() < lines {
                scratch.resize(lines, ZERO_LINE);
            }
            let a = &mut scratch[..lines];
            pack_a(x, m, k, kt, a);
            let a = &*a;
            let _tiles = TileGuard::new();
            // Blocks that do not lie wholly inside `y` go through this strip (32 rows per 32
            // output columns) and are copied out.
            let mut edge = Vec::new();
            let tile_lines = kt * 16;
            for ic in (0..m_pad).step_by(M_CHUNK) {
                let chunk_end = (ic + M_CHUNK).min(m_pad);
                for j0 in (0..n_pad).step_by(32) {
                    for i0 in (ic..chunk_end).step_by(32) {
                        let rows = (m - i0.min(m)).min(32);
                        if rows == 0 {
                            continue;
                        }
                        let cols = (n - j0).min(32);
                        let two_tiles = i0 + 16 < m_pad;
                        let kernel_rows = if two_tiles { 32 } else { 16 };
                        let a0 = &a[(i0 / 16) * tile_lines..];
                        let a1 = if two_tiles {
                            &a[(i0 / 16 + 1) * tile_lines..]
                        } else {
                            a0
                        };
                        let b0 = &self.w[(j0 / 16) * tile_lines..];
                        let b1 = &self.w[(j0 / 16 + 1) * tile_lines..];
                        if a0.len() < tile_lines || a1.len() < tile_lines || b1.len() < tile_lines {
                            return None;
                        }
                        let bias = self.bias.get(j0..j0 + 32)?;
                        let full = cols == 32 && rows == kernel_rows;
                        if full {
                            let c = y.get_mut(i0 * n + j0..(i0 + kernel_rows - 1) * n + j0 + 32)?;
                            block(a0, a1, b0, b1, kt, two_tiles, bias, c.as_mut_ptr(), n);
                        } else {
                            edge.resize(32 * 32, 0f32);
                            block(a0, a1, b0, b1, kt, two_tiles, bias, edge.as_mut_ptr(), 32);
                            for r in 0..rows {
                                y.get_mut((i0 + r) * n + j0..(i0 + r) * n + j0 + cols)?
                                    .copy_from_slice(edge.get(r * 32..r * 32 + cols)?);
                            }
                        }
                    }
                }
                if epilogue == Epilogue::GeluErf {
                    let r1 = chunk_end.min(m);
                    if ic < r1 {
                        super::elementwise::gelu_erf_inplace(y.get_mut(ic * n..r1 * n)?);
                    }
                }
            }
            Some(())
        })
    }
}

thread_local! {
    /// Each thread's packed activations, reused across calls.
    static A_SCRATCH: RefCell<Vec<Line>> = const { RefCell::new(Vec::new()) };
}

/// Rounds and packs `x` `[m, k]` into the activation tiles (see the module docs); writes every
/// line of `out` (`ceil16(m)/16 · kt · 16` lines).
fn pack_a(x: &[f32], m: usize, k: usize, kt: usize, out: &mut [Line]) {
    let m_pad = m.div_ceil(16) * 16;
    let k_full = k / 32;
    for r in 0..m_pad {
        let (mb, rr) = (r / 16, r % 16);
        let line = |kb: usize| (mb * kt + kb) * 16 + rr;
        if r >= m {
            for kb in 0..kt {
                if let Some(l) = out.get_mut(line(kb)) {
                    *l = ZERO_LINE;
                }
            }
            continue;
        }
        let Some(row) = x.get(r * k..(r + 1) * k) else {
            return;
        };
        for kb in 0..k_full {
            if let Some(dst) = out.get_mut(line(kb)) {
                convert32(&row[kb * 32..kb * 32 + 32], dst);
            }
        }
        for kb in k_full..kt {
            if let Some(dst) = out.get_mut(line(kb)) {
                for (j, d) in dst.0.iter_mut().enumerate() {
                    *d = row.get(kb * 32 + j).map_or(0, |&v| f32_to_bf16(v));
                }
            }
        }
    }
}

/// 32 f32 → 32 bf16 (round to nearest even).
fn convert32(src: &[f32], dst: &mut Line) {
    if src.len() < 32 {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    // SAFETY: AMX is only used after `available()` confirmed AVX-512F and AVX512-BF16; `src`
    // holds 32 floats (checked above) and `dst` is 64 bytes.
    unsafe {
        convert32_avx512(src.as_ptr(), dst)
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn convert32_avx512(src: *const f32, dst: &mut Line) {
    use std::arch::x86_64::*;
    // SAFETY: the caller guarantees 32 readable floats at `src`; `dst` is 64 writable bytes.
    unsafe {
        let lo = _mm512_loadu_ps(src);
        let hi = _mm512_loadu_ps(src.add(16));
        // Elements 0..16 of the result come from the second operand.
        let v = _mm512_cvtne2ps_pbh(hi, lo);
        _mm512_storeu_si512(
            dst.0.as_mut_ptr().cast(),
            std::mem::transmute::<__m512bh, __m512i>(v),
        );
    }
}

/// The 64-byte `ldtilecfg` operand: palette 1, tiles 0–7 all 16 rows × 64 bytes (tmm0–3: C
/// as 16 × 16 f32; tmm4–5: A as 16 × 32 bf16; tmm6–7: B as 16 k-pairs × 16 columns).
#[repr(C, align(64))]
struct TileConfig {
    palette_id: u8,
    start_row: u8,
    reserved: [u8; 14],
    colsb: [u16; 16],
    rows: [u8; 16],
}

/// Loads the tile configuration; releases the tiles when dropped.
struct TileGuard;

impl TileGuard {
    fn new() -> Self {
        let mut cfg = TileConfig {
            palette_id: 1,
            start_row: 0,
            reserved: [0; 14],
            colsb: [0; 16],
            rows: [0; 16],
        };
        for t in 0..8 {
            cfg.colsb[t] = 64;
            cfg.rows[t] = 16;
        }
        #[cfg(target_arch = "x86_64")]
        // SAFETY: only reached through `AmxLinear`, which exists only when `available()`
        // confirmed AMX and the kernel's permission; `cfg` is a valid, aligned palette-1
        // configuration. Compiler-generated code never uses tile state.
        unsafe {
            std::arch::asm!("ldtilecfg [{}]", in(reg) &cfg as *const TileConfig,
                options(nostack, readonly));
        }
        TileGuard
    }
}

impl Drop for TileGuard {
    fn drop(&mut self) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a guard exists only after a successful `ldtilecfg`.
        unsafe {
            std::arch::asm!("tilerelease", options(nostack, nomem));
        }
    }
}

/// One output block: `kernel_rows` (32 when `two_tiles`, else 16) rows × 32 columns of `c`
/// (row stride `ldc` floats) = bias + A · B over `kt` k tiles. `a0`/`a1` start at the rows'
/// tile blocks, `b0`/`b1` at the columns'; the caller checked they hold `kt` tiles each, that
/// `bias` holds 32 floats and that `c` covers the block.
#[allow(clippy::too_many_arguments)]
fn block(
    a0: &[Line],
    a1: &[Line],
    b0: &[Line],
    b1: &[Line],
    kt: usize,
    two_tiles: bool,
    bias: &[f32],
    c: *mut f32,
    ldc: usize,
) {
    let (a0, a1, b0, b1) = (a0.as_ptr(), a1.as_ptr(), b0.as_ptr(), b1.as_ptr());
    let (bias, ldc) = (bias.as_ptr(), ldc * 4);
    #[cfg(target_arch = "x86_64")]
    // SAFETY: tiles are configured (`TileGuard`); the caller checked every pointer covers the
    // `kt` tiles (1 KiB each) the loop reads and the block of `c` it writes. The bias is loaded
    // with a zero stride (each row reads the same 32 floats).
    unsafe {
        if two_tiles {
            std::arch::asm!(
                "tileloadd tmm0, [{bias} + {zero}*1]",
                "tileloadd tmm1, [{bias} + {zero}*1 + 64]",
                "tileloadd tmm2, [{bias} + {zero}*1]",
                "tileloadd tmm3, [{bias} + {zero}*1 + 64]",
                "mov {t:e}, 64",
                "2:",
                "tileloadd tmm4, [{a0} + {t}*1]",
                "tileloadd tmm6, [{b0} + {t}*1]",
                "tdpbf16ps tmm0, tmm4, tmm6",
                "tileloadd tmm7, [{b1} + {t}*1]",
                "tdpbf16ps tmm1, tmm4, tmm7",
                "tileloadd tmm5, [{a1} + {t}*1]",
                "tdpbf16ps tmm2, tmm5, tmm6",
                "tdpbf16ps tmm3, tmm5, tmm7",
                "add {a0}, 1024",
                "add {a1}, 1024",
                "add {b0}, 1024",
                "add {b1}, 1024",
                "dec {kt}",
                "jnz 2b",
                "tilestored [{c} + {ldc}*1], tmm0",
                "tilestored [{c} + {ldc}*1 + 64], tmm1",
                "mov {t}, {ldc}",
                "shl {t}, 4",
                "add {t}, {c}",
                "tilestored [{t} + {ldc}*1], tmm2",
                "tilestored [{t} + {ldc}*1 + 64], tmm3",
                a0 = inout(reg) a0 => _,
                a1 = inout(reg) a1 => _,
                b0 = inout(reg) b0 => _,
                b1 = inout(reg) b1 => _,
                kt = inout(reg) kt => _,
                bias = in(reg) bias,
                zero = in(reg) 0usize,
                c = in(reg) c,
                ldc = in(reg) ldc,
                t = out(reg) _,
                options(nostack),
            );
        } else {
            let _ = a1;
            std::arch::asm!(
                "tileloadd tmm0, [{bias} + {zero}*1]",
                "tileloadd tmm1, [{bias} + {zero}*1 + 64]",
                "mov {t:e}, 64",
                "2:",
                "tileloadd tmm4, [{a0} + {t}*1]",
                "tileloadd tmm6, [{b0} + {t}*1]",
                "tdpbf16ps tmm0, tmm4, tmm6",
                "tileloadd tmm7, [{b1} + {t}*1]",
                "tdpbf16ps tmm1, tmm4, tmm7",
                "add {a0}, 1024",
                "add {b0}, 1024",
                "add {b1}, 1024",
                "dec {kt}",
                "jnz 2b",
                "tilestored [{c} + {ldc}*1], tmm0",
                "tilestored [{c} + {ldc}*1 + 64], tmm1",
                a0 = inout(reg) a0 => _,
                b0 = inout(reg) b0 => _,
                b1 = inout(reg) b1 => _,
                kt = inout(reg) kt => _,
                bias = in(reg) bias,
                zero = in(reg) 0usize,
                c = in(reg) c,
                ldc = in(reg) ldc,
                t = out(reg) _,
                options(nostack),
            );
        }
    }
}

/// Whether the AMX int8 path is usable: [`available`] and AMX-INT8.
pub fn int8_available() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    #[cfg(target_arch = "x86_64")]
    let has = || std::arch::x86_64::__cpuid_count(7, 0).edx & (1 << 25) != 0;
    #[cfg(not(target_arch = "x86_64"))]
    let has = || false;
    *ON.get_or_init(|| available() && has())
}

/// One 64-byte cache line of int8 values: a tile row of 64 bytes.
#[repr(C, align(64))]
#[derive(Clone, Copy, Debug)]
struct Bytes([u8; 64]);

/// int8 weights `[n, k]` packed for `tdpbusd` (u8 activations × i8 weights, i32 sums): the
/// tile of 16-column block `nb` and 64-deep k block `kb` is at line `(nb·kt + kb)·16`; its row
/// `p` holds, for column `c`, `W[nb·16 + c, kb·64 + 4p + t]` at byte `4c + t`. Zero padding.
#[derive(Debug)]
pub struct AmxInt8 {
    n: usize,
    k: usize,
    kt: usize,
    w: Vec<Bytes>,
}

impl AmxInt8 {
    /// Packs the `[n, k]` int8 matrix whose element `(row, kk)` is `at(row, kk)`. `None` when
    /// AMX int8 is not [`int8_available`].
    pub fn pack(n: usize, k: usize, at: impl Fn(usize, usize) -> i8 + Sync) -> Option<Self> {
        if !int8_available() || n == 0 || k == 0 {
            return None;
        }
        let n_pad = n.div_ceil(32) * 32;
        let kt = k.div_ceil(64);
        let mut w = vec![Bytes([0; 64]); (n_pad / 16).checked_mul(kt)?.checked_mul(16)?];
        w.par_chunks_mut(kt * 16)
            .enumerate()
            .for_each(|(nb, block)| {
                for (kb, tile) in block.chunks_exact_mut(16).enumerate() {
                    for (p, row) in tile.iter_mut().enumerate() {
                        for c in 0..16 {
                            let col = nb * 16 + c;
                            if col >= n {
                                break;
                            }
                            for t in 0..4 {
                                let kk = kb * 64 + 4 * p + t;
                                if kk < k {
                                    row.0[4 * c + t] = at(col, kk) as u8;
                                }
                            }
                        }
                    }
                }
            });
        Some(AmxInt8 { n, k, kt, w })
    }

    /// Stacks packed matrices with the same `k` along `n` (each `n` a multiple of 32).
    pub fn concat(parts: &[&AmxInt8]) -> Option<Self> {
        let first = parts.first()?;
        if parts.iter().any(|p| p.k != first.k || p.n % 32 != 0) {
            return None;
        }
        let mut w = Vec::with_capacity(parts.iter().map(|p| p.w.len()).sum());
        for p in parts {
            w.extend_from_slice(&p.w);
        }
        Some(AmxInt8 {
            n: parts.iter().map(|p| p.n).sum(),
            k: first.k,
            kt: first.kt,
            w,
        })
    }

    /// Bytes per activation row [`Self::matmul`] expects: `k` rounded up to 64.
    pub fn row_bytes(&self) -> usize {
        self.kt * 64
    }

    /// Columns of [`Self::matmul`]'s output rows: `n` rounded up to 32.
    pub fn out_cols(&self) -> usize {
        self.n.div_ceil(32) * 32
    }

    /// `acc = a · Wᵀ` in i32 on this thread: `a` holds `ceil16(m)` rows of
    /// [`Self::row_bytes`] u8 values (the columns past `k` are ignored: the weights there are
    /// zero), `acc` as many rows of [`Self::out_cols`]. `None` when the lengths disagree.
    pub fn matmul(&self, a: &[u8], m: usize, acc: &mut [i32]) -> Option<()> {
        let (kt, lda, ldo) = (self.kt, self.row_bytes(), self.out_cols());
        let m_pad = m.div_ceil(16) * 16;
        if a.len() < m_pad * lda || acc.len() < m_pad * ldo || self.w.len() < ldo / 16 * kt * 16 {
            return None;
        }
        let _tiles = TileGuard::new();
        let tile_lines = kt * 16;
        for ic in (0..m_pad).step_by(M_CHUNK) {
            let chunk_end = (ic + M_CHUNK).min(m_pad);
            for j0 in (0..ldo).step_by(32) {
                let b0 = self.w.get((j0 / 16) * tile_lines..)?;
                let b1 = self
                    .w
                    .get((j0 / 16 + 1) * tile_lines..(j0 / 16 + 2) * tile_lines)?;
                for i0 in (ic..chunk_end).step_by(32) {
                    let two_tiles = i0 + 16 < m_pad;
                    let rows = if two_tiles { 32 } else { 16 };
                    let a0 = a.get(i0 * lda..(i0 + rows) * lda)?;
                    let c = acc.get_mut(i0 * ldo + j0..(i0 + rows - 1) * ldo + j0 + 32)?;
                    block_int8(a0, lda, b0, b1, kt, two_tiles, c.as_mut_ptr(), ldo);
                }
            }
        }
        Some(())
    }
}

/// One i32 output block of 32 (or, without `two_tiles`, 16) rows × 32 columns of `c` (row
/// stride `ldc` lanes) = A · B over `kt` k blocks of 64: `a` holds the block's rows of `lda`
/// bytes, `b0`/`b1` the two column blocks' `kt` tiles. The caller checked the lengths.
#[allow(clippy::too_many_arguments)]
fn block_int8(
    a: &[u8],
    lda: usize,
    b0: &[Bytes],
    b1: &[Bytes],
    kt: usize,
    two_tiles: bool,
    c: *mut i32,
    ldc: usize,
) {
    let a0 = a.as_ptr();
    let (b0, b1, ldc) = (b0.as_ptr(), b1.as_ptr(), ldc * 4);
    #[cfg(target_arch = "x86_64")]
    // SAFETY: tiles are configured (`TileGuard`); the caller checked that `a` holds the block's
    // rows of `lda` ≥ 64·kt bytes, that `b0`/`b1` hold `kt` tiles of 1 KiB and that `c` covers
    // the output block.
    unsafe {
        if two_tiles {
            std::arch::asm!(
                "tilezero tmm0",
                "tilezero tmm1",
                "tilezero tmm2",
                "tilezero tmm3",
                "mov {a1}, {lda}",
                "shl {a1}, 4",
                "add {a1}, {a0}",
                "mov {t:e}, 64",
                "2:",
                "tileloadd tmm4, [{a0} + {lda}*1]",
                "tileloadd tmm6, [{b0} + {t}*1]",
                "tdpbusd tmm0, tmm4, tmm6",
                "tileloadd tmm7, [{b1} + {t}*1]",
                "tdpbusd tmm1, tmm4, tmm7",
                "tileloadd tmm5, [{a1} + {lda}*1]",
                "tdpbusd tmm2, tmm5, tmm6",
                "tdpbusd tmm3, tmm5, tmm7",
                "add {a0}, 64",
                "add {a1}, 64",
                "add {b0}, 1024",
                "add {b1}, 1024",
                "dec {kt}",
                "jnz 2b",
                "tilestored [{c} + {ldc}*1], tmm0",
                "tilestored [{c} + {ldc}*1 + 64], tmm1",
                "mov {t}, {ldc}",
                "shl {t}, 4",
                "add {t}, {c}",
                "tilestored [{t} + {ldc}*1], tmm2",
                "tilestored [{t} + {ldc}*1 + 64], tmm3",
                a0 = inout(reg) a0 => _,
                a1 = out(reg) _,
                lda = in(reg) lda,
                b0 = inout(reg) b0 => _,
                b1 = inout(reg) b1 => _,
                kt = inout(reg) kt => _,
                c = in(reg) c,
                ldc = in(reg) ldc,
                t = out(reg) _,
                options(nostack),
            );
        } else {
            std::arch::asm!(
                "tilezero tmm0",
                "tilezero tmm1",
                "mov {t:e}, 64",
                "2:",
                "tileloadd tmm4, [{a0} + {lda}*1]",
                "tileloadd tmm6, [{b0} + {t}*1]",
                "tdpbusd tmm0, tmm4, tmm6",
                "tileloadd tmm7, [{b1} + {t}*1]",
                "tdpbusd tmm1, tmm4, tmm7",
                "add {a0}, 64",
                "add {b0}, 1024",
                "add {b1}, 1024",
                "dec {kt}",
                "jnz 2b",
                "tilestored [{c} + {ldc}*1], tmm0",
                "tilestored [{c} + {ldc}*1 + 64], tmm1",
                a0 = inout(reg) a0 => _,
                lda = in(reg) lda,
                b0 = inout(reg) b0 => _,
                b1 = inout(reg) b1 => _,
                kt = inout(reg) kt => _,
                c = in(reg) c,
                ldc = in(reg) ldc,
                t = out(reg) _,
                options(nostack),
            );
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::kernels::lcg;

    fn bf16(x: f32) -> f64 {
        f32::from_bits((f32_to_bf16(x) as u32) << 16) as f64
    }

    /// Exact against an f64 product of the bf16-rounded inputs, on ragged shapes.
    #[test]
    fn matches_bf16_rounded_reference() {
        if !available() {
            return;
        }
        let mut seed = 11u64;
        for &(m, n, k) in &[
            (1, 1, 1),
            (5, 33, 7),
            (16, 32, 32),
            (17, 64, 100),
            (40, 96, 768),
            (130, 70, 45),
        ] {
            let x: Vec<f32> = (0..m * k).map(|_| lcg(&mut seed)).collect();
            let w: Vec<f32> = (0..n * k).map(|_| lcg(&mut seed)).collect();
            let b: Vec<f32> = (0..n).map(|_| lcg(&mut seed)).collect();
            let p = AmxLinear::pack(&w, n, k, Some(&b)).unwrap();
            let y = p.forward(&x, m, Epilogue::None).unwrap();
            for i in 0..m {
                for j in 0..n {
                    let mut s = b[j] as f64;
                    let mut mag = b[j].abs() as f64;
                    for kk in 0..k {
                        let t = bf16(x[i * k + kk]) * bf16(w[j * k + kk]);
                        s += t;
                        mag += t.abs();
                    }
                    let got = y[i * n + j] as f64;
                    assert!(
                        (got - s).abs() <= 1e-5 * mag.max(1.0),
                        "m={m} n={n} k={k} ({i},{j}): {got} vs {s}"
                    );
                }
            }
        }
    }

    /// Exact i32 sums on ragged shapes.
    #[test]
    fn int8_matches_integer_reference() {
        if !int8_available() {
            return;
        }
        for &(m, n, k) in &[
            (1usize, 32usize, 1usize),
            (5, 64, 70),
            (16, 32, 64),
            (33, 96, 200),
            (130, 32, 768),
        ] {
            let w: Vec<i8> = (0..n * k).map(|i| ((i * 7919) % 255) as i8).collect();
            let p = AmxInt8::pack(n, k, |r, kk| w[r * k + kk]).unwrap();
            let lda = p.row_bytes();
            let m_pad = m.div_ceil(16) * 16;
            let mut a = vec![0u8; m_pad * lda];
            for r in 0..m {
                for kk in 0..k {
                    a[r * lda + kk] = ((r * 31 + kk * 17) % 256) as u8;
                }
                // Columns past k are ignored.
                for kk in k..lda {
                    a[r * lda + kk] = 255;
                }
            }
            let mut acc = vec![0i32; m_pad * p.out_cols()];
            p.matmul(&a, m, &mut acc).unwrap();
            for r in 0..m {
                for c in 0..n {
                    let want: i32 = (0..k)
                        .map(|kk| a[r * lda + kk] as i32 * w[c * k + kk] as i32)
                        .sum();
                    assert_eq!(
                        acc[r * p.out_cols() + c],
                        want,
                        "m={m} n={n} k={k} ({r},{c})"
                    );
                }
            }
        }
    }
}
