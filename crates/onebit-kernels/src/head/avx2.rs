//! The AVX2 dot products of the head: int8 rows × int8 activations, in register tiles of
//! rows × tokens so that each row load serves every token of the tile and each activation
//! load every row (batched decode passes 16 sequences over the same 128k-row head).

use std::arch::x86_64::*;

/// Σ w·q for `R` rows × `T` tokens (`out[row][token]`) with the sign trick: `vpmaddubsw`
/// takes |w| unsigned and q·sign(w) signed, so a pair sum is at most 2·127·127 and never
/// saturates (AVX2 has no `vpdpbusd`; `w ≠ −128`, `q ≥ −127`).
///
/// With `ahead`, the same columns of the `R` rows that follow are prefetched (rows lie
/// `w[r].len()` apart): see `matmul.rs` for when.
///
/// # Safety
/// AVX2; every row and every token slice as long as `q[0]`, a multiple of 32; no weight is
/// −128 and no activation below −127.
#[target_feature(enable = "avx2")]
#[allow(clippy::needless_range_loop)] // acc[r][t] reads clearer than zipped iterators
pub unsafe fn dot_tile<const R: usize, const T: usize>(
    w: [&[i8]; R],
    q: [&[i8]; T],
    ahead: bool,
) -> [[i32; T]; R] {
    let ones = _mm256_set1_epi16(1);
    let mut acc = [[_mm256_setzero_si256(); T]; R];
    for k in 0..q[0].len() / 32 {
        // SAFETY: block k lies within every token slice (caller contract).
        let x: [__m256i; T] = std::array::from_fn(|t| unsafe {
            _mm256_loadu_si256(q[t].as_ptr().add(32 * k) as *const _)
        });
        for r in 0..R {
            // SAFETY: block k lies within every row.
            let wv = unsafe { _mm256_loadu_si256(w[r].as_ptr().add(32 * k) as *const _) };
            if ahead && k % 2 == 0 {
                // A prefetch is a hint and never faults, even past the rows.
                _mm_prefetch::<_MM_HINT_T1>(w[r].as_ptr().wrapping_add(R * w[r].len() + 32 * k));
            }
            let abs = _mm256_sign_epi8(wv, wv);
            for t in 0..T {
                let p = _mm256_maddubs_epi16(abs, _mm256_sign_epi8(x[t], wv));
                acc[r][t] = _mm256_add_epi32(acc[r][t], _mm256_madd_epi16(p, ones));
            }
        }
    }
    acc.map(|a| a.map(|v| hsum(v)))
}

/// Σ w·q over one row (the sign trick as in [`dot_tile`]).
///
/// # Safety
/// AVX2; `w.len() == q.len()`, a multiple of 32; no weight is −128, no activation below −127.
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
    hsum(acc)
}

#[target_feature(enable = "avx2")]
#[inline]
fn hsum(v: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
    _mm_cvtsi128_si32(s)
}
