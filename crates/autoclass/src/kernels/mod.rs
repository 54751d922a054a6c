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
use rayon::prelude::*;

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

/// A vector of `len` floats filled in parallel: split into chunks of `chunk` floats (the last
/// may be shorter), each zeroed inside its task, in cache, then handed to `fill` with its
/// index. No serial `memset` of the whole output first (see [`filled_vec`]). `None` when `len`
/// floats cannot be allocated or `chunk` is 0.
pub(crate) fn par_filled(
    len: usize,
    chunk: usize,
    fill: impl Fn(usize, &mut [f32]) + Sync + Send,
) -> Option<Vec<f32>> {
    if chunk == 0 {
        return None;
    }
    let fill_all = |out: &mut [MaybeUninit<f32>]| -> bool {
        out.par_chunks_mut(chunk)
            .enumerate()
            .for_each(|(i, c)| fill(i, zeroed(c)));
        true
    };
    // SAFETY: the chunks cover the output and `zeroed` writes every element of each.
    #[allow(unsafe_code)]
    unsafe {
        filled_vec(len, fill_all)
    }
}

/// `t.contiguous()`, with the copy of a strided f32 CPU tensor split across rayon's pool
/// (candle copies on the calling thread: the permutes of Swin's feature maps and patch merging
/// were 6% of its CPU time with the other core idle). Other tensors go to candle.
pub fn contiguous(t: &Tensor) -> candle_core::Result<Tensor> {
    if t.is_contiguous() || t.elem_count() < 1 << 14 || !avx512() {
        return t.contiguous();
    }
    match strided_copy(t) {
        Some(data) => Tensor::from_vec(data, t.dims(), t.device()),
        None => t.contiguous(),
    }
}

/// The elements of the f32 CPU tensor `t` in row-major order; `None` for other tensors.
fn strided_copy(t: &Tensor) -> Option<Vec<f32>> {
    if t.dtype() != DType::F32 {
        return None;
    }
    let (storage, layout) = t.storage_and_layout();
    let Storage::Cpu(cpu) = &*storage else {
        return None;
    };
    let src = cpu.as_slice::<f32>().ok()?;
    let (dims, strides) = (layout.dims(), layout.stride());
    let (&inner, outer_dims) = dims.split_last()?;
    let (&step, outer_strides) = strides.split_last()?;
    // The last element read must lie inside the storage.
    let start = layout.start_offset();
    let mut last = start;
    for (&d, &s) in dims.iter().zip(strides) {
        last = last.checked_add(d.checked_sub(1)?.checked_mul(s)?)?;
    }
    if last >= src.len() || inner == 0 {
        return None;
    }
    let rows_per = ((1usize << 14) / inner).max(1);
    par_filled(t.elem_count(), rows_per * inner, |chunk, dst| {
        // The chunk's first row as an index over the outer dimensions (row-major).
        let mut idx = vec![0usize; outer_dims.len()];
        let mut row = chunk * rows_per;
        for (i, &d) in outer_dims.iter().enumerate().rev() {
            idx[i] = row % d;
            row /= d;
        }
        for out_row in dst.chunks_exact_mut(inner) {
            let base = start
                + idx
                    .iter()
                    .zip(outer_strides)
                    .map(|(&i, &s)| i * s)
                    .sum::<usize>();
            if step == 1 {
                out_row.copy_from_slice(&src[base..base + inner]);
            } else {
                for (j, o) in out_row.iter_mut().enumerate() {
                    *o = src[base + j * step];
                }
            }
            // Next row: odometer over the outer dimensions.
            for i in (0..idx.len()).rev() {
                idx[i] += 1;
                if idx[i] < outer_dims[i] {
                    break;
                }
                idx[i] = 0;
            }
        }
    })
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use candle_core::{Device, Tensor};

    /// The parallel copy gives candle's elements for permuted, transposed and narrowed views
    /// (a start offset, strides of 1 and not).
    #[test]
    fn contiguous_matches_candle() {
        let mut seed = 3u64;
        let data: Vec<f32> = (0..2 * 30 * 28 * 40)
            .map(|_| super::lcg(&mut seed))
            .collect();
        let t = Tensor::from_vec(data, (2, 30, 28, 40), &Device::Cpu).unwrap();
        let views = [
            t.permute((0, 3, 1, 2)).unwrap(),
            t.permute((0, 2, 1, 3)).unwrap(),
            t.transpose(2, 3).unwrap(),
            t.narrow(1, 3, 20).unwrap().narrow(3, 5, 30).unwrap(),
            t.narrow(2, 1, 25).unwrap().permute((3, 0, 2, 1)).unwrap(),
        ];
        for v in &views {
            assert!(!v.is_contiguous());
            let ours = super::contiguous(v).unwrap();
            assert!(ours.is_contiguous());
            assert_eq!(ours.dims(), v.dims());
            let want = v
                .contiguous()
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let got = ours.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert_eq!(got, want);
        }
    }
}
