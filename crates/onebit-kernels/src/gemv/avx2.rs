//! AVX2 MAD kernels (`vpmaddubsw` + `vpmaddwd`), for CPUs without AVX-512 (AMD Zen2).
//!
//! T2: each 32-byte half of a block yields four registers of codes by shift and mask; the
//! four u8×s8 pair sums (≤ 4·508) are added in i16 before one widening `vpmaddwd`. B3:
//! trits come from the division-free rule, byte-multiplying by 3 with two adds and
//! thresholding (`(q·3) >> 8` is 1 for q ≥ 86 and 2 for q ≥ 171).

use super::MatmulArgs;
use crate::format::{b3, t2};
use std::arch::x86_64::*;

#[target_feature(enable = "avx2")]
#[inline]
fn hsum(v: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
    _mm_cvtsi128_si32(s)
}

/// Σ c·q for one row of T2, prefetching the same block of the next row.
///
/// # Safety
/// `w + nb·64` and `act + nb·256` are readable.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn t2_row(w: *const u8, row_bytes: usize, nb: usize, act: *const i8) -> i32 {
    let mask = _mm256_set1_epi8(3);
    let ones = _mm256_set1_epi16(1);
    let mut acc = _mm256_setzero_si256();
    for b in 0..nb {
        for h in 0..2 {
            // SAFETY: b < nb, in bounds by the caller's contract.
            let a: [__m256i; 4] = std::array::from_fn(|i| unsafe {
                _mm256_loadu_si256(act.add(b * t2::BLOCK + 64 * i + 32 * h) as *const _)
            });
            // A hint, harmless past the end of the matrix.
            _mm_prefetch::<_MM_HINT_T0>(w.wrapping_add(row_bytes + b * 64 + 32 * h) as *const i8);
            // SAFETY: as above.
            let v = unsafe { _mm256_loadu_si256(w.add(b * 64 + 32 * h) as *const _) };
            let c0 = _mm256_and_si256(v, mask);
            let c1 = _mm256_and_si256(_mm256_srli_epi16::<2>(v), mask);
            let c2 = _mm256_and_si256(_mm256_srli_epi16::<4>(v), mask);
            let c3 = _mm256_and_si256(_mm256_srli_epi16::<6>(v), mask);
            let p = _mm256_add_epi16(
                _mm256_add_epi16(_mm256_maddubs_epi16(c0, a[0]), _mm256_maddubs_epi16(c1, a[1])),
                _mm256_add_epi16(_mm256_maddubs_epi16(c2, a[2]), _mm256_maddubs_epi16(c3, a[3])),
            );
            acc = _mm256_add_epi32(acc, _mm256_madd_epi16(p, ones));
        }
    }
    hsum(acc)
}

/// T2 GEMV/GEMM by rows, one row at a time: the weights are read as one sequential stream
/// (plus a prefetch one row ahead). Four rows per pass sharing the activation loads, as the
/// AVX-512 kernel does, read four interleaved streams: on an AMD EPYC (Zen 4) that was
/// 1.4-1.6x slower from memory (2B4T decode at one token 20-22 vs 28-35 tok/s on 2 threads,
/// `bench/runs/2026-12-07-zen4-row-kernels.txt`); the activations stay in L1 either way.
///
/// # Safety
/// See [`super::MatmulFn`]; the CPU has AVX2.
#[target_feature(enable = "avx2")]
pub unsafe fn t2(a: &MatmulArgs<'_>, r0: usize, r1: usize) {
    let nb = a.row_bytes / t2::BLOCK_BYTES;
    for t in 0..a.tokens {
        // SAFETY: dispatch checked the act and weight sizes.
        let act = unsafe { a.act.as_ptr().add(t * a.act_stride) };
        for r in r0..r1 {
            // SAFETY: row r exists.
            let s = unsafe { t2_row(a.w.as_ptr().add(r * a.row_bytes), a.row_bytes, nb, act) };
            // SAFETY: r < r1.
            unsafe { a.store(t, r, s - a.act_sum[t]) };
        }
    }
}

/// Codes (0..=2) of the current trit of every byte of `q` (q = byte·3ⁿ mod 256).
#[target_feature(enable = "avx2")]
#[inline]
fn trit_codes(q: __m256i, t1: __m256i, t2: __m256i) -> __m256i {
    let ge1 = _mm256_cmpeq_epi8(_mm256_max_epu8(q, t1), q);
    let ge2 = _mm256_cmpeq_epi8(_mm256_max_epu8(q, t2), q);
    _mm256_sub_epi8(_mm256_sub_epi8(_mm256_setzero_si256(), ge1), ge2)
}

/// Σ c·q for R rows of B3.
///
/// # Safety
/// `w + r·row_bytes + nb·64` and `act + nb·320` are readable for every r < R.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn b3_rows<const R: usize>(
    w: *const u8,
    row_bytes: usize,
    nb: usize,
    act: *const i8,
) -> [i32; R] {
    let (th1, th2) = (_mm256_set1_epi8(86), _mm256_set1_epi8(171u8 as i8));
    let ones = _mm256_set1_epi16(1);
    let mut acc = [_mm256_setzero_si256(); R];
    for b in 0..nb {
        for h in 0..2 {
            // SAFETY: b < nb, in bounds by the caller's contract.
            let a: [__m256i; 5] = std::array::from_fn(|i| unsafe {
                _mm256_loadu_si256(act.add(b * b3::BLOCK + 64 * i + 32 * h) as *const _)
            });
            for (r, acc_r) in acc.iter_mut().enumerate() {
                // One group ahead (a hint; harmless past the end).
                _mm_prefetch::<_MM_HINT_T0>(
                    w.wrapping_add((r + R) * row_bytes + b * 64 + 32 * h) as *const i8
                );
                // SAFETY: as above.
                let mut q = unsafe {
                    _mm256_loadu_si256(w.add(r * row_bytes + b * 64 + 32 * h) as *const _)
                };
                let mut p = _mm256_maddubs_epi16(trit_codes(q, th1, th2), a[0]);
                for ai in &a[1..] {
                    q = _mm256_add_epi8(_mm256_add_epi8(q, q), q);
                    p = _mm256_add_epi16(p, _mm256_maddubs_epi16(trit_codes(q, th1, th2), *ai));
                }
                *acc_r = _mm256_add_epi32(*acc_r, _mm256_madd_epi16(p, ones));
            }
        }
    }
    std::array::from_fn(|r| hsum(acc[r]))
}

/// B3 GEMV/GEMM by rows, two rows per pass.
///
/// # Safety
/// See [`super::MatmulFn`]; the CPU has AVX2.
#[target_feature(enable = "avx2")]
pub unsafe fn b3(a: &MatmulArgs<'_>, r0: usize, r1: usize) {
    let nb = a.row_bytes / b3::BLOCK_BYTES;
    for t in 0..a.tokens {
        // SAFETY: dispatch checked the act and weight sizes.
        let act = unsafe { a.act.as_ptr().add(t * a.act_stride) };
        let mut r = r0;
        while r + 2 <= r1 {
            // SAFETY: rows r, r+1 exist.
            let s =
                unsafe { b3_rows::<2>(a.w.as_ptr().add(r * a.row_bytes), a.row_bytes, nb, act) };
            for (i, v) in s.iter().enumerate() {
                // SAFETY: r + i < r1.
                unsafe { a.store(t, r + i, v - a.act_sum[t]) };
            }
            r += 2;
        }
        if r < r1 {
            // SAFETY: row r exists.
            let s =
                unsafe { b3_rows::<1>(a.w.as_ptr().add(r * a.row_bytes), a.row_bytes, nb, act) };
            // SAFETY: r < r1.
            unsafe { a.store(t, r, s[0] - a.act_sum[t]) };
        }
    }
}
