//! AVX2 lookup-table kernel: per pair, one 16-byte load gives 32 rows' indices (low nibbles
//! to lane 0, high to lane 1); two `vpshufb` fetch low and high table bytes, which
//! `vpunpck{l,h}bw` join into i16 sums. i16 partial sums are widened every 64 pairs
//! (64 · 256 < 2¹⁵).

use super::TABLE_BYTES;
use crate::format::lut::PAIR_BYTES;
use crate::gemv::MatmulArgs;
use std::arch::x86_64::*;

const FLUSH: usize = 64;

/// Σ t·q for the 32 rows of one tile.
///
/// # Safety
/// `tile` has `pairs·16` bytes and `tables` `pairs·32`.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn tile_sums(tile: *const u8, tables: *const u8, pairs: usize) -> [i32; 32] {
    let nib = _mm_set1_epi8(15);
    let mut acc32 = [_mm256_setzero_si256(); 4];
    let mut g = 0;
    while g < pairs {
        let end = pairs.min(g + FLUSH);
        let (mut s0, mut s1) = (_mm256_setzero_si256(), _mm256_setzero_si256());
        while g < end {
            // SAFETY: g < pairs, in bounds by the caller's contract.
            let (x, tl, th) = unsafe {
                (
                    _mm_loadu_si128(tile.add(g * PAIR_BYTES) as *const _),
                    _mm256_broadcastsi128_si256(_mm_loadu_si128(
                        tables.add(g * TABLE_BYTES) as *const _
                    )),
                    _mm256_broadcastsi128_si256(_mm_loadu_si128(
                        tables.add(g * TABLE_BYTES + 16) as *const _
                    )),
                )
            };
            let lo = _mm_and_si128(x, nib);
            let hi = _mm_and_si128(_mm_srli_epi16::<4>(x), nib);
            let idx = _mm256_set_m128i(hi, lo);
            let l = _mm256_shuffle_epi8(tl, idx);
            let h = _mm256_shuffle_epi8(th, idx);
            s0 = _mm256_add_epi16(s0, _mm256_unpacklo_epi8(l, h));
            s1 = _mm256_add_epi16(s1, _mm256_unpackhi_epi8(l, h));
            g += 1;
        }
        // s0 lanes: rows 0-7 | 16-23; s1 lanes: rows 8-15 | 24-31.
        acc32[0] = _mm256_add_epi32(acc32[0], _mm256_cvtepi16_epi32(_mm256_castsi256_si128(s0)));
        acc32[1] = _mm256_add_epi32(acc32[1], _mm256_cvtepi16_epi32(_mm256_castsi256_si128(s1)));
        acc32[2] =
            _mm256_add_epi32(acc32[2], _mm256_cvtepi16_epi32(_mm256_extracti128_si256::<1>(s0)));
        acc32[3] =
            _mm256_add_epi32(acc32[3], _mm256_cvtepi16_epi32(_mm256_extracti128_si256::<1>(s1)));
    }
    let mut out = [0i32; 32];
    for (i, v) in acc32.iter().enumerate() {
        // SAFETY: out has 32 i32; each store writes 8 at offset 8i.
        unsafe { _mm256_storeu_si256(out.as_mut_ptr().add(8 * i) as *mut _, *v) };
    }
    out
}

/// Lut layout, rows `r0..r1` (`r0` a multiple of 32).
///
/// # Safety
/// See [`crate::gemv::MatmulFn`]; the CPU has AVX2.
pub unsafe fn lut(a: &MatmulArgs<'_>, r0: usize, r1: usize) {
    // SAFETY: forwarded contract; the caller guarantees the ISA of `tile_sums`.
    unsafe { super::by_tiles(a, r0, r1, tile_sums) }
}
