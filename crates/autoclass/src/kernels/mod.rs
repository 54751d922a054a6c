//! CPU fast paths for the hot layers (issue 7): a packed-weight AVX-512 f32 GEMM with fused
//! bias and GELU, fused residual + LayerNorm, fused multi-head attention, a VNNI int8 GEMM and
//! an AMX bf16 GEMM.
//!
//! They sit behind candle: layers in [`crate::nn`] hand them the f32 data of contiguous CPU
//! tensors and wrap the results back into tensors. Every fast path has a fallback (candle's own
//! ops), taken on CPUs without AVX-512F, for other dtypes and devices, and when the environment
//! variable `AUTOCLASS_KERNELS=candle` is set (for A/B comparisons). This module and its
//! children are the only places besides the weight mmap allowed `unsafe` (SIMD intrinsics,
//! `target_feature` calls and the AMX `asm!`, each with a `SAFETY:` comment).

pub mod amx;
pub mod attention;
pub mod elementwise;
pub mod gemm;
pub mod int8;

use std::mem::MaybeUninit;
use std::sync::OnceLock;

use candle_core::{DType, Storage, Tensor};

/// Whether the AVX-512 fast paths are in use: the CPU has AVX-512F (detected at run time) and
/// `AUTOCLASS_KERNELS` is not `candle`.
pub fn avx512() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| {
        let disabled = std::env::var("AUTOCLASS_KERNELS").is_ok_and(|v| v == "candle");
        #[cfg(target_arch = "x86_64")]
        let detected = std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("fma");
        #[cfg(not(target_arch = "x86_64"))]
        let detected = false;
        detected && !disabled
    })
}

/// A vector of `len` floats that `fill` writes in place, with no zeroing first: returns `None`
/// when `len` floats cannot be allocated or `fill` returns `false`. Zeroing an output the
/// kernels overwrite anyway was a serial `memset` before each parallel GEMM or LayerNorm,
/// 4% of BERT's CPU time with the other core idle.
///
/// # Safety
/// `fill` must return `true` only after writing every one of the `len` elements it is given.
#[allow(unsafe_code)]
pub(crate) unsafe fn filled_vec(
    len: usize,
    fill: impl FnOnce(&mut [MaybeUninit<f32>]) -> bool,
) -> Option<Vec<f32>> {
    let mut v = Vec::<f32>::new();
    v.try_reserve_exact(len).ok()?;
    if !fill(v.spare_capacity_mut().get_mut(..len)?) {
        return None;
    }
    // SAFETY: the caller's contract: `fill` returned `true`, so all `len` floats are written.
    unsafe { v.set_len(len) };
    Some(v)
}

/// Views written floats as an output buffer for the kernels that take possibly-uninitialised
/// ones.
#[allow(unsafe_code)]
pub(crate) fn as_uninit(xs: &mut [f32]) -> &mut [MaybeUninit<f32>] {
    // SAFETY: `MaybeUninit<f32>` has the layout of `f32`, and the kernels only ever store
    // initialised floats through the view, so `xs` stays initialised.
    unsafe { &mut *(xs as *mut [f32] as *mut [MaybeUninit<f32>]) }
}

/// Views an output buffer's floats as initialised.
///
/// # Safety
/// Every element of `xs` must have been written.
#[allow(unsafe_code)]
pub(crate) unsafe fn assume_init(xs: &mut [MaybeUninit<f32>]) -> &mut [f32] {
    // SAFETY: same layout, and the caller guarantees every element is initialised.
    unsafe { &mut *(xs as *mut [MaybeUninit<f32>] as *mut [f32]) }
}

/// Zeroes a buffer and returns it as initialised floats.
#[allow(unsafe_code)]
pub(crate) fn zeroed(xs: &mut [MaybeUninit<f32>]) -> &mut [f32] {
    xs.fill(MaybeUninit::new(0.0));
    // SAFETY: every element was just written.
    unsafe { assume_init(xs) }
}

/// Runs `f` on the f32 values of `t` if it is a contiguous f32 CPU tensor; `None` otherwise.
pub fn with_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Option<R> {
    if t.dtype() != DType::F32 || !t.device().is_cpu() {
        return None;
    }
    let (storage, layout) = t.storage_and_layout();
    let (start, end) = layout.contiguous_offsets()?;
    match &*storage {
        Storage::Cpu(cpu) => {
            let data = cpu.as_slice::<f32>().ok()?;
            Some(f(data.get(start..end)?))
        }
        _ => None,
    }
}

/// A deterministic pseudo-random value in `[-0.5, 0.5)` (64-bit LCG), for the kernels' tests.
#[cfg(test)]
pub(crate) fn lcg(seed: &mut u64) -> f32 {
    *seed = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    ((*seed >> 40) as f32 / (1u64 << 24) as f32) - 0.5
}
