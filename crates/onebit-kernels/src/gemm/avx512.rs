//! AVX-512 VNNI GEMM: decode 6 rows to codes (T2 by shift/mask, B3 by `vpermi2b` tables),
//! then a 6-row × 4-token tile (`ROWS` × `TOKENS`: 24 zmm sums, the six rows' codes and one activation
//! vector fill 31 of the 32 registers) of `vpdpbusd` accumulators over the whole reduction. Tokens
//! are taken in blocks whose activations stay in L2 while the thread's rows pass over them
//! (rows are re-decoded per block, which is cheap next to the tile work).

use super::with_codes;
use crate::format::{b3, t2};
use crate::gemv::MatmulArgs;
use std::arch::x86_64::*;
use std::ops::Range;

const ROWS: usize = 6;
const TOKENS: usize = 4;
/// Bytes of activations kept hot (in L2) while all rows of a thread pass over them.
const ACT_BLOCK_BYTES: usize = 1 << 20;

#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
#[inline]
pub(crate) fn decode_t2(row: &[u8], out: &mut [u8]) {
    let mask = _mm512_set1_epi8(3);
    for (blk, dst) in row.chunks_exact(t2::BLOCK_BYTES).zip(out.chunks_exact_mut(t2::BLOCK)) {
        // SAFETY: blk has 64 bytes, dst 256.
        unsafe {
            let v = _mm512_loadu_si512(blk.as_ptr() as *const _);
            let p = dst.as_mut_ptr() as *mut __m512i;
            _mm512_storeu_si512(p as *mut _, _mm512_and_si512(v, mask));
            _mm512_storeu_si512(
                p.add(1) as *mut _,
                _mm512_and_si512(_mm512_srli_epi16::<2>(v), mask),
            );
            _mm512_storeu_si512(
                p.add(2) as *mut _,
                _mm512_and_si512(_mm512_srli_epi16::<4>(v), mask),
            );
            _mm512_storeu_si512(
                p.add(3) as *mut _,
                _mm512_and_si512(_mm512_srli_epi16::<6>(v), mask),
            );
        }
    }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx512vbmi")]
#[inline]
pub(crate) fn decode_b3(row: &[u8], out: &mut [u8]) {
    // SAFETY: the tables have 256 bytes, four loads of 64.
    let load = |t: &[u8; 256]| -> [__m512i; 4] {
        std::array::from_fn(|i| {
            // SAFETY: t has 256 bytes; 64i + 64 <= 256.
            unsafe { _mm512_loadu_si512(t[64 * i..].as_ptr() as *const _) }
        })
    };
    let (quad, last) = (load(&b3::QUAD_CODES), load(&b3::LAST_CODES));
    let mask = _mm512_set1_epi8(3);
    for (blk, dst) in row.chunks_exact(b3::BLOCK_BYTES).zip(out.chunks_exact_mut(b3::BLOCK)) {
        // SAFETY: blk has 64 bytes, dst 320.
        unsafe {
            let v = _mm512_loadu_si512(blk.as_ptr() as *const _);
            let high = _mm512_movepi8_mask(v);
            let pick = |t: &[__m512i; 4]| {
                let lo = _mm512_permutex2var_epi8(t[0], v, t[1]);
                let hi = _mm512_permutex2var_epi8(t[2], v, t[3]);
                _mm512_mask_blend_epi8(high, lo, hi)
            };
            let q = pick(&quad);
            let p = dst.as_mut_ptr() as *mut __m512i;
            _mm512_storeu_si512(p as *mut _, _mm512_and_si512(q, mask));
            _mm512_storeu_si512(
                p.add(1) as *mut _,
                _mm512_and_si512(_mm512_srli_epi16::<2>(q), mask),
            );
            _mm512_storeu_si512(
                p.add(2) as *mut _,
                _mm512_and_si512(_mm512_srli_epi16::<4>(q), mask),
            );
            _mm512_storeu_si512(
                p.add(3) as *mut _,
                _mm512_and_si512(_mm512_srli_epi16::<6>(q), mask),
            );
            _mm512_storeu_si512(p.add(4) as *mut _, pick(&last));
        }
    }
}

/// Horizontal sums of four vectors: lane i of the result is Σ v[i].
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
#[inline]
pub(crate) fn hsum4(v: [__m512i; 4]) -> __m128i {
    let a01 =
        _mm512_add_epi32(_mm512_unpacklo_epi32(v[0], v[1]), _mm512_unpackhi_epi32(v[0], v[1]));
    let a23 =
        _mm512_add_epi32(_mm512_unpacklo_epi32(v[2], v[3]), _mm512_unpackhi_epi32(v[2], v[3]));
    let b = _mm512_add_epi32(_mm512_unpacklo_epi64(a01, a23), _mm512_unpackhi_epi64(a01, a23));
    let c = _mm256_add_epi32(_mm512_castsi512_si256(b), _mm512_extracti64x4_epi64::<1>(b));
    _mm_add_epi32(_mm256_castsi256_si128(c), _mm256_extracti128_si256::<1>(c))
}

/// Σ c·q for an R × T tile over `k64` chunks of 64; T ≤ 8. With `ahead` set, one cache
/// line of it per chunk is prefetched (the next rows' packed weights: see [`gemm_with`]).
///
/// # Safety
/// `codes + r·cstride + 64·k64` and `act + t·astride + 64·k64` are readable.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
#[inline]
#[allow(clippy::needless_range_loop)] // acc[r][t] reads clearer than zipped iterators
unsafe fn tile<const R: usize, const T: usize>(
    codes: *const u8,
    cstride: usize,
    act: *const i8,
    astride: usize,
    k64: usize,
    ahead: Option<*const u8>,
) -> [[i32; 8]; R] {
    let mut acc = [[_mm512_setzero_si512(); T]; R];
    for k in 0..k64 {
        if let Some(p) = ahead {
            // A prefetch is a hint and never faults, even past the weights.
            _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(64 * k) as *const i8);
        }
        // SAFETY: in bounds by the caller's contract.
        let w: [__m512i; R] = std::array::from_fn(|r| unsafe {
            _mm512_loadu_si512(codes.add(r * cstride + 64 * k) as *const _)
        });
        for t in 0..T {
            // SAFETY: as above.
            let x = unsafe { _mm512_loadu_si512(act.add(t * astride + 64 * k) as *const _) };
            for r in 0..R {
                acc[r][t] = _mm512_dpbusd_epi32(acc[r][t], w[r], x);
            }
        }
    }
    let zero = _mm512_setzero_si512();
    std::array::from_fn(|r| {
        let mut out = [0i32; 8];
        let pick = |t: usize| if t < T { acc[r][t] } else { zero };
        let lo = hsum4([pick(0), pick(1), pick(2), pick(3)]);
        let hi = hsum4([pick(4), pick(5), pick(6), pick(7)]);
        // SAFETY: out has 8 i32: two stores of 4.
        unsafe {
            _mm_storeu_si128(out.as_mut_ptr() as *mut _, lo);
            _mm_storeu_si128(out.as_mut_ptr().add(4) as *mut _, hi);
        }
        out
    })
}

#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
#[inline]
fn run_tiles<const R: usize>(
    a: &MatmulArgs<'_>,
    codes: &[u8],
    cstride: usize,
    r: usize,
    tokens: Range<usize>,
    mut ahead: Option<*const u8>,
) {
    let k64 = cstride / 64;
    let mut t = tokens.start;
    while t < tokens.end {
        let act = a.act[t * a.act_stride..].as_ptr();
        macro_rules! go {
            ($t:expr) => {{
                // SAFETY: codes holds R rows of cstride; act holds tokens t..t+$t of act_stride ≥ cstride.
                let s = unsafe {
                    tile::<R, $t>(codes.as_ptr(), cstride, act, a.act_stride, k64, ahead.take())
                };
                for (i, row) in s.iter().enumerate() {
                    for (j, v) in row[..$t].iter().enumerate() {
                        // SAFETY: rows r..r+R belong to this call; t + j < tokens.
                        unsafe { a.store(t + j, r + i, v - a.act_sum[t + j]) };
                    }
                }
                t += $t;
            }};
        }
        match tokens.end - t {
            n if n >= TOKENS => go!(TOKENS),
            3 => go!(3),
            2 => go!(2),
            _ => go!(1),
        }
    }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
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
        // 64 tokens for 2B4T widths; fewer for very wide rows so the block stays in L2.
        let block = (ACT_BLOCK_BYTES / a.act_stride).clamp(8, 64) / 4 * 4;
        for t0 in (0..a.tokens).step_by(block) {
            let tokens = t0..a.tokens.min(t0 + block);
            let mut r = r0;
            while r < r1 {
                let n = ROWS.min(r1 - r);
                for i in 0..n {
                    let row = &a.w[(r + i) * a.row_bytes..(r + i + 1) * a.row_bytes];
                    decode(row, &mut codes[i * cstride..(i + 1) * cstride]);
                }
                // The next rows' weights stream in while this tile computes: the hardware
                // prefetcher sees no misses during the tile, so memory would sit idle and
                // the next decode wait on it (6912x2560 at 4 tokens, 1 thread: 22-26 % less
                // time; see the crate README). One line per chunk covers the first two
                // thirds of six T2 rows; two lines per chunk, all of them, measured no faster.
                let ahead = (r + n < r1).then(|| a.w.as_ptr().wrapping_add((r + n) * a.row_bytes));
                let tk = tokens.clone();
                match n {
                    6 => run_tiles::<6>(a, codes, cstride, r, tk, ahead),
                    5 => run_tiles::<5>(a, codes, cstride, r, tk, ahead),
                    4 => run_tiles::<4>(a, codes, cstride, r, tk, ahead),
                    3 => run_tiles::<3>(a, codes, cstride, r, tk, ahead),
                    2 => run_tiles::<2>(a, codes, cstride, r, tk, ahead),
                    _ => run_tiles::<1>(a, codes, cstride, r, tk, ahead),
                }
                r += n;
            }
        }
    })
}

/// T2 GEMM.
///
/// # Safety
/// See [`crate::gemv::MatmulFn`]; the CPU has AVX512F/BW and VNNI.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub unsafe fn t2(a: &MatmulArgs<'_>, r0: usize, r1: usize) {
    gemm_with(a, r0, r1, t2::BLOCK, t2::BLOCK_BYTES, |row, out| decode_t2(row, out))
}

/// B3 GEMM.
///
/// # Safety
/// See [`crate::gemv::MatmulFn`]; the CPU has AVX512F/BW, VNNI and VBMI.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx512vbmi")]
pub unsafe fn b3(a: &MatmulArgs<'_>, r0: usize, r1: usize) {
    gemm_with(a, r0, r1, b3::BLOCK, b3::BLOCK_BYTES, |row, out| decode_b3(row, out))
}
