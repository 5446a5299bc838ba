//! `exp` defined by a fixed sequence of f32 operations, so every backend computes the same
//! bits: the CPU here, and the WGSL and CUDA kernels of onebit-gpu, which repeat these steps
//! with the same constants. The platform's `expf` (glibc, or a GPU's `exp` instruction)
//! differs from machine to machine in the last bit, and in attention's softmax a last-bit
//! difference can move an activation across an int8 rounding boundary; with one definition
//! the GPU's softmax matches the CPU's bit for bit.
//!
//! Only plain multiplications and additions, each rounded on its own, and no fused
//! multiply-add: Mesa's lavapipe computes WGSL's `fma` unfused, so a fused step could not be
//! repeated there (the kernels keep GPU compilers from fusing instead).
//!
//! Method: x = k·ln2 + r with k = round_half_even(x·log2 e) (by adding and removing
//! 1.5·2²³) and r = (x − k·hi) − k·mid
//! (Cody–Waite: hi and mid carry at most 15 significant bits, so both products are exact and
//! no rounding depends on fusing), e^r by the degree-7 Taylor polynomial in Horner form
//! (|r| ≤ 0.35: truncation below 5e-9 relative), then scaled by 2^k built from its exponent
//! bits. Error within 2 ulp of the true value, as `expf`'s is for softmax's purposes. Below
//! −87 the result is 0 (never a subnormal, which GPUs may flush); above 88.72 it is infinity;
//! NaN stays NaN.

/// log2(e) rounded to f32.
pub const EXP_LOG2E: f32 = std::f32::consts::LOG2_E;
/// 1.5·2²³: adding and removing it rounds to an integer, half to even.
const ROUND_SHIFT: f32 = 12_582_912.0;

/// The high part of ln 2, 15 significant bits (k·EXP_LN2_HI is exact for |k| < 512).
pub const EXP_LN2_HI: f32 = f32::from_bits(0x3f31_7200);
/// ln 2 − EXP_LN2_HI to 15 significant bits (the rest, 1.6e-11, is dropped).
pub const EXP_LN2_MID: f32 = f32::from_bits(0x35bf_be00);
/// The Taylor coefficients 1/7! … 1/2!, 1, 1 for Horner's rule, highest first.
pub const EXP_COEFFS: [f32; 8] =
    [1.0 / 5040.0, 1.0 / 720.0, 1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0];

/// `e^x` by the fixed steps above.
#[inline]
pub fn exp_f32(x: f32) -> f32 {
    if x.is_nan() {
        return x;
    }
    if x < -87.0 {
        return 0.0;
    }
    if x > 88.72 {
        return f32::INFINITY;
    }
    // Round half to even by adding and removing 1.5·2²³ (|x·log2 e| < 2²²): plain f32
    // adds, which every backend repeats, and no call into libm's rintf.
    let k = (x * EXP_LOG2E + ROUND_SHIFT) - ROUND_SHIFT;
    let r = (x - k * EXP_LN2_HI) - k * EXP_LN2_MID;
    let mut p = EXP_COEFFS[0];
    for &c in &EXP_COEFFS[1..] {
        p = p * r + c;
    }
    // 2^k for k in [-126, 128]: 2^128 does not fit, so that case scales twice.
    let k = k as i32;
    let pow2 = |e: i32| f32::from_bits(((e + 127) as u32) << 23);
    if k > 127 {
        p * pow2(127) * pow2(k - 127)
    } else {
        p * pow2(k)
    }
}

/// `xs[i] = exp_f32(xs[i] − m)` for a whole row (softmax's exponentials): the same bits as the
/// scalar steps, eight or sixteen lanes at a time where the CPU has AVX2 or AVX-512.
pub fn exp_sub_f32(xs: &mut [f32], m: f32) {
    super::vecops::selected().exp_sub(xs, m)
}

/// The definition of [`exp_sub_f32`]: [`exp_f32`] element by element.
pub(crate) fn exp_sub_body(xs: &mut [f32], m: f32) {
    for x in xs {
        *x = exp_f32(*x - m);
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod x86 {
    //! [`super::exp_f32`]'s steps on every lane, its three early returns as blends: each lane
    //! rounds exactly as the scalar function (plain multiplies and adds, no fused step).

    use super::{exp_f32, EXP_COEFFS, EXP_LN2_HI, EXP_LN2_MID, EXP_LOG2E, ROUND_SHIFT};
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx512f")]
    fn exp_sub_512(xs: &mut [f32], m: f32) {
        let full = xs.len() / 16 * 16;
        let f = _mm512_set1_ps;
        let pow2 = |e: __m512i| {
            _mm512_castsi512_ps(_mm512_slli_epi32::<23>(_mm512_add_epi32(
                e,
                _mm512_set1_epi32(127),
            )))
        };
        for i in (0..full).step_by(16) {
            // SAFETY: i + 16 ≤ full ≤ xs.len().
            let x = _mm512_sub_ps(unsafe { _mm512_loadu_ps(xs.as_ptr().add(i)) }, f(m));
            let k = _mm512_sub_ps(
                _mm512_add_ps(_mm512_mul_ps(x, f(EXP_LOG2E)), f(ROUND_SHIFT)),
                f(ROUND_SHIFT),
            );
            let r = _mm512_sub_ps(
                _mm512_sub_ps(x, _mm512_mul_ps(k, f(EXP_LN2_HI))),
                _mm512_mul_ps(k, f(EXP_LN2_MID)),
            );
            let mut p = f(EXP_COEFFS[0]);
            for &c in &EXP_COEFFS[1..] {
                p = _mm512_add_ps(_mm512_mul_ps(p, r), f(c));
            }
            // k is an integer wherever the result is kept; k > 127 scales twice (× 2^0 = 1
            // exactly elsewhere).
            let ki = _mm512_cvtps_epi32(k);
            let lo = _mm512_min_epi32(ki, _mm512_set1_epi32(127));
            let extra = _mm512_max_epi32(
                _mm512_sub_epi32(ki, _mm512_set1_epi32(127)),
                _mm512_setzero_si512(),
            );
            let mut y = _mm512_mul_ps(_mm512_mul_ps(p, pow2(lo)), pow2(extra));
            y = _mm512_mask_blend_ps(
                _mm512_cmp_ps_mask::<_CMP_LT_OQ>(x, f(-87.0)),
                y,
                _mm512_setzero_ps(),
            );
            y = _mm512_mask_blend_ps(
                _mm512_cmp_ps_mask::<_CMP_GT_OQ>(x, f(88.72)),
                y,
                f(f32::INFINITY),
            );
            y = _mm512_mask_blend_ps(_mm512_cmp_ps_mask::<_CMP_UNORD_Q>(x, x), y, x);
            // SAFETY: as the load.
            unsafe { _mm512_storeu_ps(xs.as_mut_ptr().add(i), y) };
        }
        for x in &mut xs[full..] {
            *x = exp_f32(*x - m);
        }
    }

    #[target_feature(enable = "avx2")]
    fn exp_sub_256(xs: &mut [f32], m: f32) {
        let full = xs.len() / 8 * 8;
        let f = _mm256_set1_ps;
        let pow2 = |e: __m256i| {
            _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(
                e,
                _mm256_set1_epi32(127),
            )))
        };
        for i in (0..full).step_by(8) {
            // SAFETY: i + 8 ≤ full ≤ xs.len().
            let x = _mm256_sub_ps(unsafe { _mm256_loadu_ps(xs.as_ptr().add(i)) }, f(m));
            let k = _mm256_sub_ps(
                _mm256_add_ps(_mm256_mul_ps(x, f(EXP_LOG2E)), f(ROUND_SHIFT)),
                f(ROUND_SHIFT),
            );
            let r = _mm256_sub_ps(
                _mm256_sub_ps(x, _mm256_mul_ps(k, f(EXP_LN2_HI))),
                _mm256_mul_ps(k, f(EXP_LN2_MID)),
            );
            let mut p = f(EXP_COEFFS[0]);
            for &c in &EXP_COEFFS[1..] {
                p = _mm256_add_ps(_mm256_mul_ps(p, r), f(c));
            }
            let ki = _mm256_cvtps_epi32(k);
            let lo = _mm256_min_epi32(ki, _mm256_set1_epi32(127));
            let extra = _mm256_max_epi32(
                _mm256_sub_epi32(ki, _mm256_set1_epi32(127)),
                _mm256_setzero_si256(),
            );
            let mut y = _mm256_mul_ps(_mm256_mul_ps(p, pow2(lo)), pow2(extra));
            y = _mm256_blendv_ps(y, _mm256_setzero_ps(), _mm256_cmp_ps::<_CMP_LT_OQ>(x, f(-87.0)));
            y = _mm256_blendv_ps(y, f(f32::INFINITY), _mm256_cmp_ps::<_CMP_GT_OQ>(x, f(88.72)));
            y = _mm256_blendv_ps(y, x, _mm256_cmp_ps::<_CMP_UNORD_Q>(x, x));
            // SAFETY: as the load.
            unsafe { _mm256_storeu_ps(xs.as_mut_ptr().add(i), y) };
        }
        for x in &mut xs[full..] {
            *x = exp_f32(*x - m);
        }
    }

    /// [`super::exp_sub_f32`] at AVX-512.
    pub fn exp_sub_avx512(xs: &mut [f32], m: f32) {
        // SAFETY: installed only where AVX-512F was detected.
        unsafe { exp_sub_512(xs, m) }
    }

    /// [`super::exp_sub_f32`] at AVX2.
    pub fn exp_sub_avx2(xs: &mut [f32], m: f32) {
        // SAFETY: installed only where AVX2 was detected.
        unsafe { exp_sub_256(xs, m) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_to_the_true_exponential_everywhere_it_is_finite() {
        let mut worst = 0f64;
        let mut x = -87.0f32;
        while x < 88.7 {
            let got = exp_f32(x) as f64;
            let want = (x as f64).exp();
            worst = worst.max(((got - want) / want).abs());
            x += 0.001_37;
        }
        // 2 ulp of f32 is 2.4e-7 relative.
        assert!(worst < 2.4e-7, "worst relative error {worst:e}");
    }

    #[test]
    fn the_constants_are_the_bits_the_gpu_kernels_use() {
        // Written as bit patterns in onebit-gpu's exp.wgsl and kernels.cu.
        let bits: Vec<u32> = EXP_COEFFS.iter().map(|c| c.to_bits()).collect();
        assert_eq!(
            bits,
            [
                0x3950_0d01,
                0x3ab6_0b61,
                0x3c08_8889,
                0x3d2a_aaab,
                0x3e2a_aaab,
                0x3f00_0000,
                0x3f80_0000,
                0x3f80_0000
            ]
        );
        assert_eq!(EXP_LOG2E.to_bits(), 0x3fb8_aa3b);
    }

    #[test]
    fn edges() {
        assert_eq!(exp_f32(0.0), 1.0);
        assert_eq!(exp_f32(-0.0), 1.0);
        assert_eq!(exp_f32(-87.5), 0.0);
        assert_eq!(exp_f32(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp_f32(89.0), f32::INFINITY);
        assert!(exp_f32(f32::NAN).is_nan());
        assert!(exp_f32(88.7).is_finite() && exp_f32(88.7) > 3.0e38);
        assert_eq!(EXP_LN2_HI.to_bits() & 0x1ff, 0, "k·hi must be exact");
        assert_eq!(EXP_LN2_MID.to_bits() & 0x1ff, 0, "k·mid must be exact");
        let ln2 = (EXP_LN2_HI as f64) + (EXP_LN2_MID as f64);
        assert!((ln2 - std::f64::consts::LN_2).abs() < 2e-11);
    }
}
