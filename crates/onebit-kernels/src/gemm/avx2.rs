//! AVX2 GEMM: decode rows to codes (T2 by shift/mask, B3 by the scalar tables), then a
//! 2-row × 6-token tile (`ROWS` × `TOKENS`) of `vpmaddubsw` sums kept in i16 for 32 chunks, then widened by
//! `vpmaddwd` into i32 accumulators.

use super::{decode_b3_row, with_codes};
use crate::format::{b3, t2};
use crate::gemv::MatmulArgs;
use std::arch::x86_64::*;

const ROWS: usize = 2;
const TOKENS: usize = 6;

#[target_feature(enable = "avx2")]
#[inline]
fn decode_t2(row: &[u8], out: &mut [u8]) {
    let mask = _mm256_set1_epi8(3);
    for (blk, dst) in row.chunks_exact(t2::BLOCK_BYTES).zip(out.chunks_exact_mut(t2::BLOCK)) {
        for h in 0..2 {
            // SAFETY: blk has 64 bytes, dst 256: offsets 32h and 64i + 32h are in range.
            unsafe {
                let v = _mm256_loadu_si256(blk.as_ptr().add(32 * h) as *const _);
                let p = dst.as_mut_ptr().add(32 * h);
                _mm256_storeu_si256(p as *mut _, _mm256_and_si256(v, mask));
                _mm256_storeu_si256(
                    p.add(64) as *mut _,
                    _mm256_and_si256(_mm256_srli_epi16::<2>(v), mask),
                );
                _mm256_storeu_si256(
                    p.add(128) as *mut _,
                    _mm256_and_si256(_mm256_srli_epi16::<4>(v), mask),
                );
                _mm256_storeu_si256(
                    p.add(192) as *mut _,
                    _mm256_and_si256(_mm256_srli_epi16::<6>(v), mask),
                );
            }
        }
    }
}

#[target_feature(enable = "avx2")]
#[inline]
fn hsum(v: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
    _mm_cvtsi128_si32(s)
}

/// k-steps whose `vpmaddubsw` pair sums are added in 16 bits before widening: a pair sum
/// is at most 2·(2·128) = 512 in magnitude (codes 0..=2, activations ≥ −128), so 32 of
/// them stay within ±16384 and neither the multiply's saturation nor the i16 add can trip.
const I16_STEPS: usize = 32;

/// Σ c·q for an R × T tile over `k32` chunks of 32.
///
/// Pair sums are accumulated in i16 for [`I16_STEPS`] chunks and only then widened with
/// `vpmaddwd`, which halves the multiplies per chunk (the bound is the integer pipes on
/// AVX2-only cores); the result is the same integer.
/// With `ahead` set, a cache line of it is prefetched every 4 chunks (the next rows' packed
/// weights, 16 bytes per chunk of 32 codes for 2 rows of T2: see the AVX-512 GEMM).
///
/// # Safety
/// `codes + r·cstride + 32·k32` and `act + t·astride + 32·k32` are readable.
#[target_feature(enable = "avx2")]
#[inline]
#[allow(clippy::needless_range_loop)] // acc[r][t] reads clearer than zipped iterators
unsafe fn tile<const R: usize, const T: usize>(
    codes: *const u8,
    cstride: usize,
    act: *const i8,
    astride: usize,
    k32: usize,
    ahead: Option<*const u8>,
) -> [[i32; T]; R] {
    let ones = _mm256_set1_epi16(1);
    let mut acc = [[_mm256_setzero_si256(); T]; R];
    let mut k0 = 0;
    while k0 < k32 {
        let k1 = (k0 + I16_STEPS).min(k32);
        let mut acc16 = [[_mm256_setzero_si256(); T]; R];
        for k in k0..k1 {
            if let (Some(p), 0) = (ahead, k % 4) {
                // A prefetch is a hint and never faults, even past the weights.
                _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(16 * k) as *const i8);
            }
            // SAFETY: in bounds by the caller's contract.
            let w: [__m256i; R] = std::array::from_fn(|r| unsafe {
                _mm256_loadu_si256(codes.add(r * cstride + 32 * k) as *const _)
            });
            for t in 0..T {
                // SAFETY: as above.
                let x = unsafe { _mm256_loadu_si256(act.add(t * astride + 32 * k) as *const _) };
                for r in 0..R {
                    acc16[r][t] = _mm256_add_epi16(acc16[r][t], _mm256_maddubs_epi16(w[r], x));
                }
            }
        }
        for r in 0..R {
            for t in 0..T {
                acc[r][t] = _mm256_add_epi32(acc[r][t], _mm256_madd_epi16(acc16[r][t], ones));
            }
        }
        k0 = k1;
    }
    std::array::from_fn(|r| std::array::from_fn(|t| hsum(acc[r][t])))
}

#[target_feature(enable = "avx2")]
#[inline]
fn run_tiles<const R: usize>(
    a: &MatmulArgs<'_>,
    codes: &[u8],
    cstride: usize,
    r: usize,
    mut ahead: Option<*const u8>,
) {
    let k32 = cstride / 32;
    let mut t = 0;
    while t < a.tokens {
        let act = a.act[t * a.act_stride..].as_ptr();
        macro_rules! go {
            ($t:expr) => {{
                // SAFETY: codes holds R rows of cstride; act holds tokens t..t+$t of act_stride ≥ cstride.
                let s = unsafe {
                    tile::<R, $t>(codes.as_ptr(), cstride, act, a.act_stride, k32, ahead.take())
                };
                for (i, row) in s.iter().enumerate() {
                    for (j, v) in row.iter().enumerate() {
                        // SAFETY: rows r..r+R belong to this call; t + j < tokens.
                        unsafe { a.store(t + j, r + i, v - a.act_sum[t + j]) };
                    }
                }
                t += $t;
            }};
        }
        match a.tokens - t {
            n if n >= TOKENS => go!(TOKENS),
            5 => go!(5),
            4 => go!(4),
            3 => go!(3),
            2 => go!(2),
            _ => go!(1),
        }
    }
}

#[target_feature(enable = "avx2")]
#[inline]
fn gemm_with(
    a: &MatmulArgs<'_>,
    r0: usize,
    r1: usize,
    block: usize,
    block_bytes: usize,
    decode: impl Fn(&[u8], &mut [u8]),
) {
    let cstride = a.row_bytes / block_bytes * block;
    with_codes(ROWS * cstride, |codes| {
        let mut r = r0;
        while r < r1 {
            let n = ROWS.min(r1 - r);
            for i in 0..n {
                let row = &a.w[(r + i) * a.row_bytes..(r + i + 1) * a.row_bytes];
                decode(row, &mut codes[i * cstride..(i + 1) * cstride]);
            }
            // The next rows stream in during the tile (see the AVX-512 GEMM).
            let ahead = (r + n < r1).then(|| a.w.as_ptr().wrapping_add((r + n) * a.row_bytes));
            if n == 2 {
                run_tiles::<2>(a, codes, cstride, r, ahead);
            } else {
                run_tiles::<1>(a, codes, cstride, r, ahead);
            }
            r += n;
        }
    })
}

/// T2 GEMM.
///
/// # Safety
/// See [`crate::gemv::MatmulFn`]; the CPU has AVX2.
#[target_feature(enable = "avx2")]
pub unsafe fn t2(a: &MatmulArgs<'_>, r0: usize, r1: usize) {
    gemm_with(a, r0, r1, t2::BLOCK, t2::BLOCK_BYTES, |row, out| decode_t2(row, out))
}

/// B3 GEMM.
///
/// # Safety
/// See [`crate::gemv::MatmulFn`]; the CPU has AVX2.
#[target_feature(enable = "avx2")]
pub unsafe fn b3(a: &MatmulArgs<'_>, r0: usize, r1: usize) {
    gemm_with(a, r0, r1, b3::BLOCK, b3::BLOCK_BYTES, decode_b3_row)
}
