//! The dense vector ops (dot, axpy, f16 and int8 widening), one body compiled per ISA and
//! chosen through [`DenseKernels`].

use super::attend::{self, KvRows};
use super::exp;
use crate::dispatch::{CpuFeatures, Isa};
use crate::error::{Error, Result};
use half::f16;

/// Dot product at [`Isa::selected`] (the compiler vectorizes the same body for AVX-512,
/// AVX2+FMA or the baseline), so every caller in a process rounds alike.
#[inline]
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    (selected().dot)(a, b)
}

/// `y += alpha · x`, dispatched like [`dot_f32`].
#[inline]
pub fn axpy_f32(alpha: f32, x: &[f32], y: &mut [f32]) {
    (selected().axpy)(alpha, x, y)
}

/// `dst[i] = src[i]` widened from IEEE half (F16C / AVX-512 conversions where the CPU has
/// them): the f16 KV cache's read path, called for every attended position.
#[inline]
pub fn widen_f16(src: &[f16], dst: &mut [f32]) {
    selected().widen_f16(src, dst)
}

/// `dst[i] = src[i] · scales[i / block]`: the int8 KV cache's read path.
#[inline]
pub fn widen_q8(src: &[i8], scales: &[f32], block: usize, dst: &mut [f32]) {
    selected().widen_q8(src, scales, block, dst)
}

/// [`super::scores`]'s signature: queries, head width, key rows, their stride, scale, scores.
type ScoresFn = fn(&[f32], usize, KvRows<'_>, usize, f32, &mut [f32]);
/// [`super::weigh`]'s signature: weights, value rows, their stride, head width, outputs.
type WeighFn = fn(&[f32], KvRows<'_>, usize, usize, &mut [f32]);

/// The dense vector kernels of one [`Isa`]: the same safe bodies compiled for wider units.
#[derive(Clone, Copy)]
pub struct DenseKernels {
    isa: Isa,
    dot: fn(&[f32], &[f32]) -> f32,
    axpy: fn(f32, &[f32], &mut [f32]),
    widen_f16: fn(&[f16], &mut [f32]),
    widen_q8: fn(&[i8], &[f32], usize, &mut [f32]),
    scores: ScoresFn,
    weigh: WeighFn,
    exp_sub: fn(&mut [f32], f32),
}

impl DenseKernels {
    /// The kernels for `isa`, if this CPU can run them (AMX uses the AVX-512 ones; NEON
    /// the plain bodies, which the compiler vectorizes for NEON by default).
    pub fn get(isa: Isa) -> Result<DenseKernels> {
        let f = CpuFeatures::get();
        let unavailable = || Error::Unavailable(format!("dense/{}", isa.name()));
        if !f.has(isa) {
            return Err(unavailable());
        }
        let scalar = DenseKernels {
            isa,
            dot: dot_body,
            axpy: axpy_body,
            widen_f16: widen_f16_body,
            widen_q8: widen_q8_body,
            scores: attend::scores_body,
            weigh: attend::weigh_body,
            exp_sub: exp::exp_sub_body,
        };
        match isa {
            Isa::Scalar | Isa::Neon | Isa::NeonDot => Ok(scalar),
            #[cfg(target_arch = "x86_64")]
            // Every AVX-512 CPU also has AVX2, FMA and F16C; checked so each installed
            // function's feature claim holds.
            Isa::Avx512 | Isa::Amx if f.avx2 && f.fma && f.f16c => Ok(DenseKernels {
                isa,
                dot: x86::dot_avx512,
                axpy: x86::axpy_avx512,
                widen_f16: x86::widen_f16_avx2,
                widen_q8: x86::widen_q8_avx512,
                scores: attend::x86::scores_avx512,
                weigh: attend::x86::weigh_avx512,
                exp_sub: exp::x86::exp_sub_avx512,
            }),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 if f.fma && f.f16c => Ok(DenseKernels {
                isa,
                dot: x86::dot_avx2,
                axpy: x86::axpy_avx2,
                widen_f16: x86::widen_f16_avx2,
                widen_q8: x86::widen_q8_avx2,
                scores: attend::x86::scores_avx2,
                weigh: attend::x86::weigh_avx2,
                exp_sub: exp::x86::exp_sub_avx2,
            }),
            _ => Err(unavailable()),
        }
    }

    /// The ISA these kernels were chosen for.
    pub fn isa(&self) -> Isa {
        self.isa
    }

    /// `Σ a[i]·b[i]` over the shorter of the two.
    pub fn dot(&self, a: &[f32], b: &[f32]) -> f32 {
        (self.dot)(a, b)
    }

    /// `y += alpha · x`.
    pub fn axpy(&self, alpha: f32, x: &[f32], y: &mut [f32]) {
        (self.axpy)(alpha, x, y)
    }

    /// `dst[i] = src[i]` widened from IEEE half.
    pub fn widen_f16(&self, src: &[f16], dst: &mut [f32]) {
        assert_eq!(src.len(), dst.len(), "widen_f16: lengths");
        (self.widen_f16)(src, dst)
    }

    /// `dst[i] = src[i] · scales[i / block]`.
    pub fn widen_q8(&self, src: &[i8], scales: &[f32], block: usize, dst: &mut [f32]) {
        assert!(
            block > 0 && src.len() == dst.len() && scales.len() == src.len().div_ceil(block),
            "widen_q8: lengths"
        );
        (self.widen_q8)(src, scales, block, dst)
    }

    /// [`super::scores`] at this ISA.
    pub fn scores(
        &self,
        q: &[f32],
        hd: usize,
        k: KvRows<'_>,
        stride: usize,
        scale: f32,
        s: &mut [f32],
    ) {
        (self.scores)(q, hd, k, stride, scale, s)
    }

    /// [`super::exp_sub_f32`] at this ISA.
    pub fn exp_sub(&self, xs: &mut [f32], m: f32) {
        (self.exp_sub)(xs, m)
    }

    /// [`super::weigh`] at this ISA.
    pub fn weigh(&self, s: &[f32], v: KvRows<'_>, stride: usize, hd: usize, o: &mut [f32]) {
        (self.weigh)(s, v, stride, hd, o)
    }
}

/// The kernels of [`Isa::selected`], falling back to the plain bodies (AVX2 without FMA).
pub(crate) fn selected() -> &'static DenseKernels {
    static FNS: std::sync::OnceLock<DenseKernels> = std::sync::OnceLock::new();
    FNS.get_or_init(|| {
        DenseKernels::get(Isa::selected())
            .or_else(|_| DenseKernels::get(Isa::Scalar))
            .expect("scalar dense kernels run everywhere")
    })
}

/// Sixteen independent accumulators so the loop vectorizes at any width. Each product is
/// rounded before it is added (no fused multiply-add): the GPU backend repeats this exact
/// order for decode attention, and Mesa's lavapipe, where CI runs it, computes WGSL's `fma`
/// unfused, so only unfused steps give the same bits there.
#[inline(always)]
fn dot_body(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let (ac, bc) = (a.chunks_exact(16), b.chunks_exact(16));
    let tail: f32 = ac.remainder().iter().zip(bc.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ac.zip(bc) {
        for i in 0..16 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// `y += alpha · x` with each product rounded before its add, as [`dot_body`].
#[inline(always)]
fn axpy_body(alpha: f32, x: &[f32], y: &mut [f32]) {
    for (y, &x) in y.iter_mut().zip(x) {
        *y += alpha * x;
    }
}

fn widen_f16_body(src: &[f16], dst: &mut [f32]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d = s.to_f32();
    }
}

#[inline(always)]
fn widen_q8_body(src: &[i8], scales: &[f32], block: usize, dst: &mut [f32]) {
    for ((d, s), &k) in dst.chunks_mut(block).zip(src.chunks(block)).zip(scales) {
        for (d, &s) in d.iter_mut().zip(s) {
            *d = f32::from(s) * k;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use half::f16;
    use std::arch::x86_64::*;

    // The bodies are safe code; the wrappers only let the compiler use wider vectors.
    // Calling them is sound because `DenseKernels::get` installs them only after detecting the features.
    #[target_feature(enable = "avx512f,fma")]
    fn dot_512(a: &[f32], b: &[f32]) -> f32 {
        super::dot_body(a, b)
    }
    #[target_feature(enable = "avx512f,fma")]
    fn axpy_512(alpha: f32, x: &[f32], y: &mut [f32]) {
        super::axpy_body(alpha, x, y)
    }
    #[target_feature(enable = "avx2,fma")]
    fn dot_256(a: &[f32], b: &[f32]) -> f32 {
        super::dot_body(a, b)
    }
    #[target_feature(enable = "avx2,fma")]
    fn axpy_256(alpha: f32, x: &[f32], y: &mut [f32]) {
        super::axpy_body(alpha, x, y)
    }
    pub fn dot_avx512(a: &[f32], b: &[f32]) -> f32 {
        // SAFETY: installed only where AVX-512F and FMA were detected.
        unsafe { dot_512(a, b) }
    }
    pub fn axpy_avx512(alpha: f32, x: &[f32], y: &mut [f32]) {
        // SAFETY: as above.
        unsafe { axpy_512(alpha, x, y) }
    }
    #[target_feature(enable = "avx512f")]
    fn widen_q8_512(src: &[i8], scales: &[f32], block: usize, dst: &mut [f32]) {
        super::widen_q8_body(src, scales, block, dst)
    }
    #[target_feature(enable = "avx2")]
    fn widen_q8_256(src: &[i8], scales: &[f32], block: usize, dst: &mut [f32]) {
        super::widen_q8_body(src, scales, block, dst)
    }
    pub fn widen_q8_avx512(src: &[i8], scales: &[f32], block: usize, dst: &mut [f32]) {
        // SAFETY: installed only where AVX-512F was detected.
        unsafe { widen_q8_512(src, scales, block, dst) }
    }
    pub fn widen_q8_avx2(src: &[i8], scales: &[f32], block: usize, dst: &mut [f32]) {
        // SAFETY: installed only where AVX2 was detected.
        unsafe { widen_q8_256(src, scales, block, dst) }
    }

    /// `vcvtph2ps` 8 at a time (F16C, which every AVX2 and AVX-512 CPU has; a 16-wide
    /// AVX-512 version is not needed for a conversion that streams from the KV cache).
    #[target_feature(enable = "avx2,f16c")]
    fn widen_f16_256(src: &[f16], dst: &mut [f32]) {
        let n = src.len().min(dst.len());
        let mut i = 0;
        while i + 8 <= n {
            // SAFETY: i + 8 ≤ n ≤ both lengths; f16 is 2 bytes (repr(transparent) u16).
            unsafe {
                let h = _mm_loadu_si128(src.as_ptr().add(i) as *const __m128i);
                _mm256_storeu_ps(dst.as_mut_ptr().add(i), _mm256_cvtph_ps(h));
            }
            i += 8;
        }
        super::widen_f16_body(&src[i..n], &mut dst[i..n]);
    }
    pub fn widen_f16_avx2(src: &[f16], dst: &mut [f32]) {
        // SAFETY: installed only where AVX2 and F16C were detected.
        unsafe { widen_f16_256(src, dst) }
    }
    pub fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
        // SAFETY: installed only where AVX2 and FMA were detected.
        unsafe { dot_256(a, b) }
    }
    pub fn axpy_avx2(alpha: f32, x: &[f32], y: &mut [f32]) {
        // SAFETY: as above.
        unsafe { axpy_256(alpha, x, y) }
    }
}
