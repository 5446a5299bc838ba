//! AVX-512 MAD kernels (AVX512F/BW + VNNI `vpdpbusd`; B3 also VBMI `vpermi2b`).
//!
//! T2: one AND per bit pair keeps each code at its position (c·4ⁱ ≤ 128 still fits the
//! unsigned operand), so no shifts are needed; each position has its own accumulator and
//! the exact multiples of 4ⁱ are shifted back once per row. B3: two 256-entry byte tables
//! turn a base-3 byte into a T2-style byte (trits 0-3) and a plain code (trit 4).
//!
//! Helpers carry the same `target_feature` as the entry points (instead of memchr's
//! `inline(always)` without it) so the compiler can always inline them.

use super::MatmulArgs;
use crate::format::{b3, t2};
use std::arch::x86_64::*;

#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
#[inline]
fn fold4(acc: [__m512i; 4]) -> i32 {
    let v = _mm512_add_epi32(
        _mm512_add_epi32(acc[0], _mm512_srai_epi32::<2>(acc[1])),
        _mm512_add_epi32(_mm512_srai_epi32::<4>(acc[2]), _mm512_srai_epi32::<6>(acc[3])),
    );
    _mm512_reduce_add_epi32(v)
}

/// Σ c·q for R rows of T2 starting at `w`.
///
/// # Safety
/// `w + r·row_bytes + nb·64` and `act + nb·256` are readable for every r < R.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
#[inline]
unsafe fn t2_rows<const R: usize>(
    w: *const u8,
    row_bytes: usize,
    nb: usize,
    act: *const i8,
) -> [i32; R] {
    let masks = [
        _mm512_set1_epi8(0x03),
        _mm512_set1_epi8(0x0C),
        _mm512_set1_epi8(0x30),
        _mm512_set1_epi8(0xC0u8 as i8),
    ];
    let mut acc = [[_mm512_setzero_si512(); 4]; R];
    for b in 0..nb {
        // SAFETY: b < nb, in bounds by the caller's contract.
        let a: [__m512i; 4] = std::array::from_fn(|i| unsafe {
            _mm512_loadu_si512(act.add(b * t2::BLOCK + 64 * i) as *const _)
        });
        for (r, acc_r) in acc.iter_mut().enumerate() {
            // Prefetch the same block of the next row group (see b3_rows).
            _mm_prefetch::<_MM_HINT_T0>(w.wrapping_add((r + R) * row_bytes + b * 64) as *const i8);
            // SAFETY: as above.
            let v = unsafe { _mm512_loadu_si512(w.add(r * row_bytes + b * 64) as *const _) };
            for i in 0..4 {
                acc_r[i] = _mm512_dpbusd_epi32(acc_r[i], _mm512_and_si512(v, masks[i]), a[i]);
            }
        }
    }
    std::array::from_fn(|r| fold4(acc[r]))
}

/// T2 GEMV/GEMM by rows: four rows per pass share the activation loads.
///
/// # Safety
/// See [`super::MatmulFn`]; the CPU has AVX512F, AVX512BW and AVX512-VNNI.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub unsafe fn t2(a: &MatmulArgs<'_>, r0: usize, r1: usize) {
    let nb = a.row_bytes / t2::BLOCK_BYTES;
    for t in 0..a.tokens {
        // SAFETY: dispatch checked act holds tokens x act_stride and w holds rows x row_bytes.
        let act = unsafe { a.act.as_ptr().add(t * a.act_stride) };
        let mut r = r0;
        while r + 4 <= r1 {
            // SAFETY: rows r..r+4 exist.
            let s =
                unsafe { t2_rows::<4>(a.w.as_ptr().add(r * a.row_bytes), a.row_bytes, nb, act) };
            for (i, v) in s.iter().enumerate() {
                // SAFETY: r + i < r1.
                unsafe { a.store(t, r + i, v - a.act_sum[t]) };
            }
            r += 4;
        }
        while r < r1 {
            // SAFETY: row r exists.
            let s =
                unsafe { t2_rows::<1>(a.w.as_ptr().add(r * a.row_bytes), a.row_bytes, nb, act) };
            // SAFETY: r < r1.
            unsafe { a.store(t, r, s[0] - a.act_sum[t]) };
            r += 1;
        }
    }
}

/// Rows per pass of the B3 kernel.
const B3_ROWS: usize = 4;

/// Byte tables for B3 decoding: `quad[v]` packs trits 0-3 of byte v as T2 codes,
/// `last[v]` is trit 4's code.
struct B3Tables {
    quad: [__m512i; 4],
    last: [__m512i; 4],
}

#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx512vbmi")]
#[inline]
fn b3_tables() -> B3Tables {
    // SAFETY: each table has 256 bytes: four loads of 64.
    let load = |t: &[u8; 256]| {
        std::array::from_fn(|i| {
            // SAFETY: t has 256 bytes; 64i + 64 <= 256.
            unsafe { _mm512_loadu_si512(t[64 * i..].as_ptr() as *const _) }
        })
    };
    B3Tables { quad: load(&b3::QUAD_CODES), last: load(&b3::LAST_CODES) }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx512vbmi")]
#[inline]
fn lookup256(t: &[__m512i; 4], idx: __m512i, high: __mmask64) -> __m512i {
    let lo = _mm512_permutex2var_epi8(t[0], idx, t[1]);
    let hi = _mm512_permutex2var_epi8(t[2], idx, t[3]);
    _mm512_mask_blend_epi8(high, lo, hi)
}

/// Σ c·q for R rows of B3.
///
/// # Safety
/// `w + r·row_bytes + nb·64` and `act + nb·320` are readable for every r < R.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx512vbmi")]
#[inline]
#[allow(clippy::needless_range_loop)] // acc[r][i] reads clearer than zipped iterators
unsafe fn b3_rows<const R: usize>(
    tables: &B3Tables,
    w: *const u8,
    row_bytes: usize,
    nb: usize,
    act: *const i8,
) -> [i32; R] {
    let masks = [
        _mm512_set1_epi8(0x03),
        _mm512_set1_epi8(0x0C),
        _mm512_set1_epi8(0x30),
        _mm512_set1_epi8(0xC0u8 as i8),
    ];
    let mut acc = [[_mm512_setzero_si512(); 4]; R];
    for b in 0..nb {
        // SAFETY: b < nb, in bounds by the caller's contract.
        let a: [__m512i; 5] = std::array::from_fn(|i| unsafe {
            _mm512_loadu_si512(act.add(b * b3::BLOCK + 64 * i) as *const _)
        });
        for r in 0..R {
            // Prefetch the same block of the next row group: rows of a group are adjacent,
            // so this runs exactly one group ahead whatever the row length. A hint only:
            // past the matrix end it is harmless (no fault, no UB with wrapping_add).
            _mm_prefetch::<_MM_HINT_T0>(w.wrapping_add((r + R) * row_bytes + b * 64) as *const i8);
            // SAFETY: as above.
            let v = unsafe { _mm512_loadu_si512(w.add(r * row_bytes + b * 64) as *const _) };
            let high = _mm512_movepi8_mask(v);
            let quad = lookup256(&tables.quad, v, high);
            let last = lookup256(&tables.last, v, high);
            for i in 0..4 {
                acc[r][i] = _mm512_dpbusd_epi32(acc[r][i], _mm512_and_si512(quad, masks[i]), a[i]);
            }
            // Trit 4's codes are unscaled, like position 0's: they share its accumulator.
            acc[r][0] = _mm512_dpbusd_epi32(acc[r][0], last, a[4]);
        }
    }
    std::array::from_fn(|r| fold4(acc[r]))
}

/// B3 GEMV/GEMM by rows, two rows per pass (the tables take eight registers).
///
/// # Safety
/// See [`super::MatmulFn`]; the CPU has AVX512F/BW, VNNI and VBMI.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx512vbmi")]
pub unsafe fn b3(a: &MatmulArgs<'_>, r0: usize, r1: usize) {
    let nb = a.row_bytes / b3::BLOCK_BYTES;
    let tables = b3_tables();
    for t in 0..a.tokens {
        // SAFETY: dispatch checked the act and weight sizes.
        let act = unsafe { a.act.as_ptr().add(t * a.act_stride) };
        let mut r = r0;
        while r + B3_ROWS <= r1 {
            // SAFETY: rows r..r + B3_ROWS exist.
            let s = unsafe {
                b3_rows::<B3_ROWS>(&tables, a.w.as_ptr().add(r * a.row_bytes), a.row_bytes, nb, act)
            };
            for (i, v) in s.iter().enumerate() {
                // SAFETY: r + i < r1.
                unsafe { a.store(t, r + i, v - a.act_sum[t]) };
            }
            r += B3_ROWS;
        }
        while r < r1 {
            // SAFETY: row r exists.
            let s = unsafe {
                b3_rows::<1>(&tables, a.w.as_ptr().add(r * a.row_bytes), a.row_bytes, nb, act)
            };
            // SAFETY: r < r1.
            unsafe { a.store(t, r, s[0] - a.act_sum[t]) };
            r += 1;
        }
    }
}
