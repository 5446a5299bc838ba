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
