//! The AVX2 dot product of the head.

use std::arch::x86_64::*;

/// Σ w·q with the sign trick (|w| unsigned, q·sign(w) signed).
///
/// # Safety
/// AVX2; `w.len() == q.len()`, a multiple of 32; q ≥ -127.
#[target_feature(enable = "avx2")]
pub unsafe fn dot(w: &[i8], q: &[i8]) -> i32 {
    let ones = _mm256_set1_epi16(1);
    let mut acc = _mm256_setzero_si256();
    for k in 0..w.len() / 32 {
        // SAFETY: block k within both slices.
        let (wv, qv) = unsafe {
            (
                _mm256_loadu_si256(w.as_ptr().add(32 * k) as *const _),
                _mm256_loadu_si256(q.as_ptr().add(32 * k) as *const _),
            )
        };
        let p = _mm256_maddubs_epi16(_mm256_sign_epi8(wv, wv), _mm256_sign_epi8(qv, wv));
        acc = _mm256_add_epi32(acc, _mm256_madd_epi16(p, ones));
    }
    let s = _mm_add_epi32(_mm256_castsi256_si128(acc), _mm256_extracti128_si256::<1>(acc));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
    _mm_cvtsi128_si32(s)
}
