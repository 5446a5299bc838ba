//! AVX-512 VNNI dot products of the head: int8 rows (four at a time) and 4-bit blocks.

use std::arch::x86_64::*;

/// `MUL_TABLES[m]`: byte c ↦ c·m for nibbles c < 16 (≤ 225, still an unsigned byte),
/// repeated in each 128-bit lane for `vpshufb`.
static MUL_TABLES: [[u8; 64]; 16] = {
    let mut t = [[0u8; 64]; 16];
    let mut m = 0;
    while m < 16 {
        let mut i = 0;
        while i < 64 {
            t[m][i] = ((i % 16) * m) as u8;
            i += 1;
        }
        m += 1;
    }
    t
};

/// Σ_b m_b · Σ_k (code − 8)·q over 4-bit blocks of 64 (byte j: elements j and j + 32),
/// for four rows sharing the activation loads. The block multiplier is applied to the
/// codes by a `vpshufb` lookup (c·m ≤ 225 fits the unsigned operand of `vpdpbusd`), so
/// each block is one multiply-add; `8·Σ m_b·Σx_b` is subtracted at the end.
///
/// # Safety
/// AVX-512 BW + VNNI; for every row `nib.len() == 32·mults.len()`; `q.len() ≥ 64·xsum.len()`,
/// `mults.len() == xsum.len()`, with `xsum[b]` = Σ of block b of `q`.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub unsafe fn dot4_q4(nib: [&[u8]; 4], mults: [&[u8]; 4], q: &[i8], xsum: &[i32]) -> [i32; 4] {
    let mask = _mm256_set1_epi8(0x0F);
    let mut acc = [_mm512_setzero_si512(); 4];
    let mut corr = [0i32; 4];
    for (b, &s) in xsum.iter().enumerate() {
        // SAFETY: block b lies within every slice (caller contract); m < 16 indexes the tables.
        unsafe {
            let x = _mm512_loadu_si512(q.as_ptr().add(64 * b) as *const _);
            for r in 0..4 {
                // Prefetch this row's block four rows on (the next group of four).
                _mm_prefetch::<_MM_HINT_T0>(
                    nib[r].as_ptr().wrapping_add(4 * nib[r].len() + 32 * b) as *const i8,
                );
                let m = *mults[r].get_unchecked(b) as usize;
                let raw = _mm256_loadu_si256(nib[r].as_ptr().add(32 * b) as *const __m256i);
                let lo = _mm256_and_si256(raw, mask);
                let hi = _mm256_and_si256(_mm256_srli_epi16(raw, 4), mask);
                let codes = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
                let table = _mm512_loadu_si512(MUL_TABLES[m & 15].as_ptr() as *const _);
                let scaled = _mm512_shuffle_epi8(table, codes);
                acc[r] = _mm512_dpbusd_epi32(acc[r], scaled, x);
                corr[r] += m as i32 * s;
            }
        }
    }
    std::array::from_fn(|r| _mm512_reduce_add_epi32(acc[r]) - 8 * corr[r])
}

/// Σ w·(q + 128) (the caller subtracts 128·Σw).
///
/// # Safety
/// AVX-512 BW + VNNI; `w.len() == q.len()`, a multiple of 64.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub unsafe fn dot(w: &[i8], q: &[i8]) -> i32 {
    let flip = _mm512_set1_epi8(-128);
    let (mut a0, mut a1) = (_mm512_setzero_si512(), _mm512_setzero_si512());
    let n = w.len() / 64;
    let mut k = 0;
    while k + 2 <= n {
        // SAFETY: k + 2 ≤ n blocks of 64 in both slices.
        unsafe {
            let x0 = _mm512_xor_si512(_mm512_loadu_si512(q.as_ptr().add(64 * k) as *const _), flip);
            let x1 =
                _mm512_xor_si512(_mm512_loadu_si512(q.as_ptr().add(64 * k + 64) as *const _), flip);
            a0 =
                _mm512_dpbusd_epi32(a0, x0, _mm512_loadu_si512(w.as_ptr().add(64 * k) as *const _));
            a1 = _mm512_dpbusd_epi32(
                a1,
                x1,
                _mm512_loadu_si512(w.as_ptr().add(64 * k + 64) as *const _),
            );
        }
        k += 2;
    }
    if k < n {
        // SAFETY: block k < n.
        unsafe {
            let x0 = _mm512_xor_si512(_mm512_loadu_si512(q.as_ptr().add(64 * k) as *const _), flip);
            a0 =
                _mm512_dpbusd_epi32(a0, x0, _mm512_loadu_si512(w.as_ptr().add(64 * k) as *const _));
        }
    }
    _mm512_reduce_add_epi32(_mm512_add_epi32(a0, a1))
}

/// [`dot`] for four rows sharing the activation loads.
///
/// # Safety
/// AVX-512 BW + VNNI; every slice as long as `q`, a multiple of 64.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub unsafe fn dot4(w: [&[i8]; 4], q: &[i8]) -> [i32; 4] {
    let flip = _mm512_set1_epi8(-128);
    let mut acc = [_mm512_setzero_si512(); 4];
    for k in 0..q.len() / 64 {
        // SAFETY: block k lies within q and every row.
        unsafe {
            let x = _mm512_xor_si512(_mm512_loadu_si512(q.as_ptr().add(64 * k) as *const _), flip);
            for (a, row) in acc.iter_mut().zip(&w) {
                // The next group of four rows, same block: rows are adjacent, `row.len()` apart.
                _mm_prefetch::<_MM_HINT_T0>(row.as_ptr().wrapping_add(4 * row.len() + 64 * k));
                *a = _mm512_dpbusd_epi32(
                    *a,
                    x,
                    _mm512_loadu_si512(row.as_ptr().add(64 * k) as *const _),
                );
            }
        }
    }
    acc.map(|a| _mm512_reduce_add_epi32(a))
}

/// [`dot`] for four rows × four tokens (`acc[row][token]`): each row load serves four tokens
/// and each activation load four rows, where [`dot4`] per token loads every row again from
/// L2 (batched decode: 16 sequences pass over the same 128k-row head).
///
/// # Safety
/// AVX-512 BW + VNNI; every row and every token slice as long as `q[0]`, a multiple of 64.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub unsafe fn dot4x4(w: [&[i8]; 4], q: [&[i8]; 4], ahead: bool) -> [[i32; 4]; 4] {
    let flip = _mm512_set1_epi8(-128);
    let mut acc = [[_mm512_setzero_si512(); 4]; 4];
    for k in 0..q[0].len() / 64 {
        // SAFETY: block k lies within every token slice.
        let x: [__m512i; 4] = std::array::from_fn(|t| unsafe {
            _mm512_xor_si512(_mm512_loadu_si512(q[t].as_ptr().add(64 * k) as *const _), flip)
        });
        for (a, row) in acc.iter_mut().zip(&w) {
            // SAFETY: block k lies within every row.
            let v = unsafe { _mm512_loadu_si512(row.as_ptr().add(64 * k) as *const _) };
            if ahead {
                // The next four rows, same block (see `dot4`).
                _mm_prefetch::<_MM_HINT_T1>(row.as_ptr().wrapping_add(4 * row.len() + 64 * k));
            }
            for (a, &x) in a.iter_mut().zip(&x) {
                *a = _mm512_dpbusd_epi32(*a, x, v);
            }
        }
    }
    acc.map(|a| {
        let mut out = [0i32; 4];
        // SAFETY: `out` has room for the four lanes.
        unsafe { _mm_storeu_si128(out.as_mut_ptr() as *mut _, crate::gemm::avx512::hsum4(a)) };
        out
    })
}
