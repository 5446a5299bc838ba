//! F16C / AVX-512 conversions (`vcvtph2ps`, or int8 → i32 → f32 times the block's scale)
//! with unfused multiplies and adds, so each lane rounds as the plain bodies do.

use super::{shape, KvRows, HEADS_PER_PASS};
use std::arch::x86_64::*;

/// Rows ahead of the one being read that are asked for: cache rows sit `stride` apart (a
/// position's heads side by side), and each position's work is short, so without the hint
/// a pass waits on memory at every row (measured: the conversion of each loaded row took
/// most of the time at a 1024-token context).
const AHEAD: usize = 8;
/// [`AHEAD`] for the value rows, whose work per row is a third of a key row's (measured
/// at a 1024-token context and 8 sequences: 8 → 24 rows +4 %, 48 no better than 24; 16
/// for the keys no better than 8).
const AHEAD_V: usize = 24;

/// Rows as the vector loops read them: `Q8` (a const parameter of each loop) says whether
/// `vals` holds int8 values with a scale per `block` or f16 values.
#[derive(Clone, Copy)]
struct Src {
    vals: *const u8,
    scales: *const f32,
    block: usize,
}

impl Src {
    /// `rows` for the vector loops (`Some((src, q8))`) when `hd` and the int8 blocks are
    /// multiples of 16, so that no 16 values straddle two scales.
    fn of(rows: KvRows<'_>, hd: usize) -> Option<(Src, bool)> {
        if !hd.is_multiple_of(16) {
            return None;
        }
        match rows {
            KvRows::F16(v) => {
                Some((Src { vals: v.as_ptr().cast(), scales: std::ptr::null(), block: 1 }, false))
            }
            KvRows::Q8(v, scales, block) if block.is_multiple_of(16) => {
                Some((Src { vals: v.as_ptr().cast(), scales: scales.as_ptr(), block }, true))
            }
            KvRows::Q8(..) => None,
        }
    }

    /// Asks for the cache lines of values `i..i + len` (a hint: never faults, even past
    /// the cache).
    #[inline(always)]
    fn prefetch<const Q8: bool>(self, i: usize, len: usize) {
        let size = if Q8 { 1 } else { 2 };
        for off in (0..len * size).step_by(64) {
            // SAFETY: a prefetch reads nothing architecturally and never faults.
            unsafe {
                _mm_prefetch::<_MM_HINT_T0>(self.vals.wrapping_add(i * size + off) as *const i8)
            };
        }
    }

    /// Values `i..i + 16` as f32.
    ///
    /// # Safety
    /// AVX-512F; the values (and for int8 their scale) are in the rows.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn load16<const Q8: bool>(self, i: usize) -> __m512 {
        // SAFETY: in the rows by the caller's contract.
        unsafe {
            if Q8 {
                let x = _mm512_cvtepi8_epi32(_mm_loadu_si128(self.vals.add(i) as *const _));
                _mm512_mul_ps(
                    _mm512_cvtepi32_ps(x),
                    _mm512_set1_ps(*self.scales.add(i / self.block)),
                )
            } else {
                _mm512_cvtph_ps(_mm256_loadu_si256(self.vals.add(2 * i) as *const _))
            }
        }
    }

    /// Values `i..i + 8` as f32.
    ///
    /// # Safety
    /// AVX2 and F16C; the values (and for int8 their scale) are in the rows.
    #[target_feature(enable = "avx2,f16c")]
    #[inline]
    unsafe fn load8<const Q8: bool>(self, i: usize) -> __m256 {
        // SAFETY: in the rows by the caller's contract.
        unsafe {
            if Q8 {
                let x = _mm256_cvtepi8_epi32(_mm_loadl_epi64(self.vals.add(i) as *const _));
                _mm256_mul_ps(
                    _mm256_cvtepi32_ps(x),
                    _mm256_set1_ps(*self.scales.add(i / self.block)),
                )
            } else {
                _mm256_cvtph_ps(_mm_loadu_si128(self.vals.add(2 * i) as *const _))
            }
        }
    }
}

/// `r` transposed: lane j of the result i is lane i of `r[j]` (4 stages of shuffles).
#[target_feature(enable = "avx512f")]
fn transpose16(r: &[__m512; 16]) -> [__m512; 16] {
    let t: [__m512; 16] = std::array::from_fn(|i| {
        let (a, b) = (r[i / 2 * 2], r[i / 2 * 2 + 1]);
        if i % 2 == 0 {
            _mm512_unpacklo_ps(a, b)
        } else {
            _mm512_unpackhi_ps(a, b)
        }
    });
    // u[4q + m]: 128-bit lane L holds column 4L + m of rows 4q..4q + 4.
    let u: [__m512; 16] = std::array::from_fn(|i| {
        let (q, m) = (i / 4, i % 4);
        let (a, b) = (_mm512_castps_pd(t[4 * q + m / 2]), _mm512_castps_pd(t[4 * q + 2 + m / 2]));
        _mm512_castpd_ps(if m % 2 == 0 {
            _mm512_unpacklo_pd(a, b)
        } else {
            _mm512_unpackhi_pd(a, b)
        })
    });
    // v[m][h][e]: lanes (col m + 8e, rows 8h..8h+4), (col m + 8e, rows 8h+4..8h+8) for e = 0 (imm
    // 0x88) and the columns m + 4 + 8e for e = 1 (0xdd), as lanes 0–1 of h's pair and 2–3.
    let mut c = [_mm512_setzero_ps(); 16];
    for m in 0..4 {
        let v = |h: usize, e: usize| {
            let (a, b) = (u[8 * h + m], u[8 * h + 4 + m]);
            if e == 0 {
                _mm512_shuffle_f32x4::<0x88>(a, b)
            } else {
                _mm512_shuffle_f32x4::<0xdd>(a, b)
            }
        };
        let (v00, v01, v10, v11) = (v(0, 0), v(0, 1), v(1, 0), v(1, 1));
        c[m] = _mm512_shuffle_f32x4::<0x88>(v00, v10);
        c[m + 8] = _mm512_shuffle_f32x4::<0xdd>(v00, v10);
        c[m + 4] = _mm512_shuffle_f32x4::<0x88>(v01, v11);
        c[m + 12] = _mm512_shuffle_f32x4::<0xdd>(v01, v11);
    }
    c
}

/// `G` heads × `P` positions (`G·P ≤ 16`) from `p0` scored at once: sixteen (head,
/// position) lane sums in registers, transposed so their sequential totals are sixteen
/// vector adds.
///
/// # Safety
/// AVX-512F; `shape` accepted the operands; `g0 + G ≤ heads`, `p0 < n`.
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn scores_block_512<const Q8: bool, const G: usize, const P: usize>(
    q: &[f32],
    hd: usize,
    k: Src,
    stride: usize,
    scale: f32,
    s: &mut [f32],
    (n, g0, p0): (usize, usize, usize),
) {
    let np = P.min(n - p0);
    for pp in 0..np {
        k.prefetch::<Q8>((p0 + pp + AHEAD) * stride, hd);
    }
    let mut acc = [_mm512_setzero_ps(); 16];
    for c in (0..hd).step_by(16) {
        // SAFETY: (g0 + g)·hd + c + 16 ≤ heads·hd = q.len().
        let qv: [__m512; G] =
            std::array::from_fn(|g| unsafe { _mm512_loadu_ps(q.as_ptr().add((g0 + g) * hd + c)) });
        for pp in (0..P).filter(|&pp| pp < np) {
            // SAFETY: p0 + pp < n, so the row's hd values are in k (`shape`).
            let kv = unsafe { k.load16::<Q8>((p0 + pp) * stride + c) };
            for (g, qv) in qv.iter().enumerate() {
                let a = &mut acc[g * P + pp];
                *a = _mm512_add_ps(*a, _mm512_mul_ps(*qv, kv));
            }
        }
    }
    let cols = transpose16(&acc);
    let zero = _mm512_set1_ps(std::iter::empty::<f32>().sum());
    let total = cols.iter().fold(zero, |t, c| _mm512_add_ps(t, *c));
    let total = _mm512_mul_ps(_mm512_add_ps(total, zero), _mm512_set1_ps(scale));
    let mut lanes = [0f32; 16];
    // SAFETY: lanes holds 16 f32.
    unsafe { _mm512_storeu_ps(lanes.as_mut_ptr(), total) };
    for g in 0..G {
        s[(g0 + g) * n + p0..][..np].copy_from_slice(&lanes[g * P..][..np]);
    }
}

/// [`super::scores`] at AVX-512 over rows [`Src::of`] accepted.
///
/// # Safety
/// AVX-512F; `shape` accepted the operands (`heads`, `n`) and `k` holds the rows.
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn scores_512<const Q8: bool>(
    q: &[f32],
    hd: usize,
    k: Src,
    stride: usize,
    scale: f32,
    s: &mut [f32],
    (heads, n): (usize, usize),
) {
    for g0 in (0..heads).step_by(HEADS_PER_PASS) {
        let gs = HEADS_PER_PASS.min(heads - g0);
        for p0 in (0..n).step_by(16 / gs) {
            let at = (n, g0, p0);
            // SAFETY: by this function's contract.
            unsafe {
                match gs {
                    1 => scores_block_512::<Q8, 1, 16>(q, hd, k, stride, scale, s, at),
                    2 => scores_block_512::<Q8, 2, 8>(q, hd, k, stride, scale, s, at),
                    3 => scores_block_512::<Q8, 3, 5>(q, hd, k, stride, scale, s, at),
                    _ => scores_block_512::<Q8, 4, 4>(q, hd, k, stride, scale, s, at),
                }
            }
        }
    }
}

/// [`super::scores`] at AVX2 + F16C: two `ymm` per head (lanes 0–7 and 8–15), totals
/// lane by lane.
///
/// # Safety
/// As [`scores_512`], with AVX2 and F16C.
#[target_feature(enable = "avx2,f16c")]
#[allow(clippy::too_many_arguments)]
unsafe fn scores_256<const Q8: bool>(
    q: &[f32],
    hd: usize,
    k: Src,
    stride: usize,
    scale: f32,
    s: &mut [f32],
    (heads, n): (usize, usize),
) {
    for g0 in (0..heads).step_by(HEADS_PER_PASS) {
        let gs = HEADS_PER_PASS.min(heads - g0);
        for p in 0..n {
            k.prefetch::<Q8>((p + AHEAD) * stride, hd);
            let mut acc = [[_mm256_setzero_ps(); 2]; HEADS_PER_PASS];
            for c in (0..hd).step_by(16) {
                // SAFETY: p < n: the row's hd values are in k.
                let kv =
                    unsafe { [k.load8::<Q8>(p * stride + c), k.load8::<Q8>(p * stride + c + 8)] };
                for (g, acc) in acc.iter_mut().enumerate().take(gs) {
                    for h in 0..2 {
                        // SAFETY: (g0 + g)·hd + c + 8h + 8 ≤ q.len().
                        let qv =
                            unsafe { _mm256_loadu_ps(q.as_ptr().add((g0 + g) * hd + c + 8 * h)) };
                        acc[h] = _mm256_add_ps(acc[h], _mm256_mul_ps(qv, kv[h]));
                    }
                }
            }
            for (g, acc) in acc.iter().enumerate().take(gs) {
                let mut lanes = [0f32; 16];
                // SAFETY: lanes holds 16 f32.
                unsafe {
                    _mm256_storeu_ps(lanes.as_mut_ptr(), acc[0]);
                    _mm256_storeu_ps(lanes.as_mut_ptr().add(8), acc[1]);
                }
                s[(g0 + g) * n + p] =
                    super::lane_total(&lanes, std::iter::empty::<f32>().sum()) * scale;
            }
        }
    }
}

/// `o[g] += s·v` for `G` heads and `16·C` columns from `c0`, held in registers over every
/// position (each column still adds its products position by position).
///
/// # Safety
/// AVX-512F; `shape` accepted the operands; `g0 + G ≤ heads`, `c0 + 16·C ≤ hd`.
#[target_feature(enable = "avx512f")]
unsafe fn weigh_block_512<const Q8: bool, const G: usize, const C: usize>(
    s: &[f32],
    v: Src,
    stride: usize,
    hd: usize,
    o: &mut [f32],
    (n, g0, c0): (usize, usize, usize),
) {
    let at = |g: usize, j: usize| (g0 + g) * hd + c0 + 16 * j;
    let mut acc: [[__m512; C]; G] = std::array::from_fn(|g| {
        // SAFETY: at(g, j) + 16 ≤ heads·hd = o.len() for g < G, j < C.
        std::array::from_fn(|j| unsafe { _mm512_loadu_ps(o.as_ptr().add(at(g, j))) })
    });
    for p in 0..n {
        v.prefetch::<Q8>((p + AHEAD_V) * stride + c0, 16 * C);
        // SAFETY: p < n: the row's columns c0..c0 + 16·C are in v (`shape`).
        let x: [__m512; C] =
            std::array::from_fn(|j| unsafe { v.load16::<Q8>(p * stride + c0 + 16 * j) });
        for (g, acc) in acc.iter_mut().enumerate() {
            let w = _mm512_set1_ps(s[(g0 + g) * n + p]);
            for (a, x) in acc.iter_mut().zip(&x) {
                *a = _mm512_add_ps(*a, _mm512_mul_ps(w, *x));
            }
        }
    }
    for (g, acc) in acc.iter().enumerate() {
        for (j, a) in acc.iter().enumerate() {
            // SAFETY: as the loads above.
            unsafe { _mm512_storeu_ps(o.as_mut_ptr().add(at(g, j)), *a) };
        }
    }
}

/// [`super::weigh`] at AVX-512: 64 columns (four `zmm` per head) per pass where they
/// remain.
///
/// # Safety
/// AVX-512F; `shape` accepted the operands (`heads`, `n`) and `v` holds the rows.
#[target_feature(enable = "avx512f")]
unsafe fn weigh_512<const Q8: bool>(
    s: &[f32],
    v: Src,
    stride: usize,
    hd: usize,
    o: &mut [f32],
    (heads, n): (usize, usize),
) {
    for g0 in (0..heads).step_by(HEADS_PER_PASS) {
        let gs = HEADS_PER_PASS.min(heads - g0);
        let mut c0 = 0;
        while c0 < hd {
            let wide = hd - c0 >= 64;
            let at = (n, g0, c0);
            // SAFETY: by this function's contract.
            unsafe {
                match (gs, wide) {
                    (1, true) => weigh_block_512::<Q8, 1, 4>(s, v, stride, hd, o, at),
                    (2, true) => weigh_block_512::<Q8, 2, 4>(s, v, stride, hd, o, at),
                    (3, true) => weigh_block_512::<Q8, 3, 4>(s, v, stride, hd, o, at),
                    (_, true) => weigh_block_512::<Q8, 4, 4>(s, v, stride, hd, o, at),
                    (1, false) => weigh_block_512::<Q8, 1, 1>(s, v, stride, hd, o, at),
                    (2, false) => weigh_block_512::<Q8, 2, 1>(s, v, stride, hd, o, at),
                    (3, false) => weigh_block_512::<Q8, 3, 1>(s, v, stride, hd, o, at),
                    (_, false) => weigh_block_512::<Q8, 4, 1>(s, v, stride, hd, o, at),
                }
            }
            c0 += if wide { 64 } else { 16 };
        }
    }
}

/// [`super::weigh`] at AVX2 + F16C: 16 columns (two `ymm` per head) per pass.
///
/// # Safety
/// As [`weigh_512`], with AVX2 and F16C.
#[target_feature(enable = "avx2,f16c")]
unsafe fn weigh_256<const Q8: bool>(
    s: &[f32],
    v: Src,
    stride: usize,
    hd: usize,
    o: &mut [f32],
    (heads, n): (usize, usize),
) {
    for g0 in (0..heads).step_by(HEADS_PER_PASS) {
        let gs = HEADS_PER_PASS.min(heads - g0);
        for c0 in (0..hd).step_by(16) {
            let mut acc = [[_mm256_setzero_ps(); 2]; HEADS_PER_PASS];
            for (g, acc) in acc.iter_mut().enumerate().take(gs) {
                for (h, a) in acc.iter_mut().enumerate() {
                    // SAFETY: (g0 + g)·hd + c0 + 8h + 8 ≤ o.len().
                    *a = unsafe { _mm256_loadu_ps(o.as_ptr().add((g0 + g) * hd + c0 + 8 * h)) };
                }
            }
            for p in 0..n {
                v.prefetch::<Q8>((p + AHEAD_V) * stride + c0, 16);
                // SAFETY: p < n: the row's columns c0..c0 + 16 are in v.
                let x =
                    unsafe { [v.load8::<Q8>(p * stride + c0), v.load8::<Q8>(p * stride + c0 + 8)] };
                for (g, acc) in acc.iter_mut().enumerate().take(gs) {
                    let w = _mm256_set1_ps(s[(g0 + g) * n + p]);
                    for (a, x) in acc.iter_mut().zip(&x) {
                        *a = _mm256_add_ps(*a, _mm256_mul_ps(w, *x));
                    }
                }
            }
            for (g, acc) in acc.iter().enumerate().take(gs) {
                for (h, a) in acc.iter().enumerate() {
                    // SAFETY: as the loads above.
                    unsafe { _mm256_storeu_ps(o.as_mut_ptr().add((g0 + g) * hd + c0 + 8 * h), *a) };
                }
            }
        }
    }
}

/// [`super::scores`] at AVX-512 (rows the vector loops do not take: the body).
pub fn scores_avx512(
    q: &[f32],
    hd: usize,
    k: KvRows<'_>,
    stride: usize,
    scale: f32,
    s: &mut [f32],
) {
    // The body checks the shapes itself.
    let Some((src, q8)) = Src::of(k, hd) else {
        return super::scores_body(q, hd, k, stride, scale, s);
    };
    let dims = shape(q.len(), hd, s.len(), stride, k.len());
    // SAFETY: installed only where AVX-512F was detected; `shape` checked the rows.
    unsafe {
        if q8 {
            scores_512::<true>(q, hd, src, stride, scale, s, dims)
        } else {
            scores_512::<false>(q, hd, src, stride, scale, s, dims)
        }
    }
}

/// [`super::scores`] at AVX2 + F16C.
pub fn scores_avx2(q: &[f32], hd: usize, k: KvRows<'_>, stride: usize, scale: f32, s: &mut [f32]) {
    // The body checks the shapes itself.
    let Some((src, q8)) = Src::of(k, hd) else {
        return super::scores_body(q, hd, k, stride, scale, s);
    };
    let dims = shape(q.len(), hd, s.len(), stride, k.len());
    // SAFETY: installed only where AVX2 and F16C were detected; `shape` checked the rows.
    unsafe {
        if q8 {
            scores_256::<true>(q, hd, src, stride, scale, s, dims)
        } else {
            scores_256::<false>(q, hd, src, stride, scale, s, dims)
        }
    }
}

/// [`super::weigh`] at AVX-512.
pub fn weigh_avx512(s: &[f32], v: KvRows<'_>, stride: usize, hd: usize, o: &mut [f32]) {
    // The body checks the shapes itself.
    let Some((src, q8)) = Src::of(v, hd) else {
        return super::weigh_body(s, v, stride, hd, o);
    };
    let dims = shape(o.len(), hd, s.len(), stride, v.len());
    // SAFETY: installed only where AVX-512F was detected; `shape` checked the rows.
    unsafe {
        if q8 {
            weigh_512::<true>(s, src, stride, hd, o, dims)
        } else {
            weigh_512::<false>(s, src, stride, hd, o, dims)
        }
    }
}

/// [`super::weigh`] at AVX2 + F16C.
pub fn weigh_avx2(s: &[f32], v: KvRows<'_>, stride: usize, hd: usize, o: &mut [f32]) {
    // The body checks the shapes itself.
    let Some((src, q8)) = Src::of(v, hd) else {
        return super::weigh_body(s, v, stride, hd, o);
    };
    let dims = shape(o.len(), hd, s.len(), stride, v.len());
    // SAFETY: installed only where AVX2 and F16C were detected; `shape` checked the rows.
    unsafe {
        if q8 {
            weigh_256::<true>(s, src, stride, hd, o, dims)
        } else {
            weigh_256::<false>(s, src, stride, hd, o, dims)
        }
    }
}
