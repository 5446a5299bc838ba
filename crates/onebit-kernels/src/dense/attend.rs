//! Decode attention read straight from an f16 KV cache: the query heads of a GQA group
//! score every cached key ([`scores_f16`]) and sum the cached values by their weights
//! ([`weigh_f16`]), each key and value row converted once for all the heads.
//!
//! These compute the same bits as widening the rows with [`super::widen_f16`] and running
//! [`super::dot_f32`] / [`super::axpy_f32`] on them (the order the GPU backend repeats): the
//! f16 → f32 conversion is exact, each dot keeps `dot_f32`'s sixteen lane sums and their
//! sequential total, and each output element adds its products position by position. What
//! changes is the memory traffic: widening wrote every row as f32 to a scratch buffer and
//! read it back once per head, which at a long context was the largest part of a decode step
//! (bench/runs/2026-12-06-xeon-fused-f16-attention.txt).

use half::f16;

/// Heads scored or weighed in one pass over the rows (accumulators held in registers).
pub(crate) const HEADS_PER_PASS: usize = 4;

/// `s[g·n + p] = dot_f32(q[g], k[p]) · scale` for the `q.len() / hd` heads of `q` (one row of
/// `hd` each) and the `n` key rows `k[p·stride..][..hd]`.
pub fn scores_f16(q: &[f32], hd: usize, k: &[f16], stride: usize, scale: f32, s: &mut [f32]) {
    super::vecops::selected().scores_f16(q, hd, k, stride, scale, s)
}

/// `o[g] += Σ_p s[g·n + p] · v[p]`, position by position, for the `o.len() / hd` heads of `o`
/// and the `n = s.len() / heads` value rows `v[p·stride..][..hd]`.
pub fn weigh_f16(s: &[f32], v: &[f16], stride: usize, hd: usize, o: &mut [f32]) {
    super::vecops::selected().weigh_f16(s, v, stride, hd, o)
}

/// Checks the operands of [`scores_f16`] / [`weigh_f16`]: `(heads, n)`.
pub(crate) fn shape(
    q_or_o: usize,
    hd: usize,
    rows: usize,
    stride: usize,
    k: usize,
) -> (usize, usize) {
    assert!(hd > 0 && q_or_o.is_multiple_of(hd), "attend: q/o length {q_or_o} is not heads × {hd}");
    let heads = q_or_o / hd;
    assert!(heads > 0 && rows.is_multiple_of(heads), "attend: {rows} scores for {heads} heads");
    let n = rows / heads;
    assert!(
        n == 0 || (stride >= hd && (n - 1) * stride + hd <= k),
        "attend: rows out of the cache"
    );
    (heads, n)
}

/// `dot_f32`'s total: the sixteen lane sums in order, then the tail's.
#[inline(always)]
fn lane_total(lanes: &[f32; 16], tail: f32) -> f32 {
    lanes.iter().sum::<f32>() + tail
}

/// The definition: [`scores_f16`] in plain code (a row widened 16 values at a time, each
/// head's sixteen lane sums as `dot_f32` keeps them).
pub(crate) fn scores_body(
    q: &[f32],
    hd: usize,
    k: &[f16],
    stride: usize,
    scale: f32,
    s: &mut [f32],
) {
    let (heads, n) = shape(q.len(), hd, s.len(), stride, k.len());
    let full = hd / 16 * 16;
    for g0 in (0..heads).step_by(HEADS_PER_PASS) {
        let gs = HEADS_PER_PASS.min(heads - g0);
        for p in 0..n {
            let row = &k[p * stride..][..hd];
            let mut acc = [[0f32; 16]; HEADS_PER_PASS];
            for c in (0..full).step_by(16) {
                let kv: [f32; 16] = std::array::from_fn(|i| row[c + i].to_f32());
                for (g, acc) in acc.iter_mut().enumerate().take(gs) {
                    let qg = &q[(g0 + g) * hd + c..][..16];
                    for i in 0..16 {
                        acc[i] += qg[i] * kv[i];
                    }
                }
            }
            for (g, acc) in acc.iter().enumerate().take(gs) {
                let qg = &q[(g0 + g) * hd..][..hd];
                let tail: f32 =
                    qg[full..].iter().zip(&row[full..]).map(|(x, y)| x * y.to_f32()).sum();
                s[(g0 + g) * n + p] = lane_total(acc, tail) * scale;
            }
        }
    }
}

/// The definition: [`weigh_f16`] in plain code.
pub(crate) fn weigh_body(s: &[f32], v: &[f16], stride: usize, hd: usize, o: &mut [f32]) {
    let (heads, n) = shape(o.len(), hd, s.len(), stride, v.len());
    for p in 0..n {
        let row = &v[p * stride..][..hd];
        for g in 0..heads {
            let w = s[g * n + p];
            for (y, x) in o[g * hd..][..hd].iter_mut().zip(row) {
                *y += w * x.to_f32();
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod x86 {
    //! `vcvtph2ps` (F16C / AVX-512F) with unfused multiplies and adds, so each lane rounds
    //! as the plain bodies do.

    use super::{shape, HEADS_PER_PASS};
    use half::f16;
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

    /// Asks for the cache lines of `len` halves at `p` (a hint: never faults, even past the cache).
    #[inline(always)]
    fn prefetch_row(p: *const f16, len: usize) {
        for off in (0..len).step_by(32) {
            // SAFETY: a prefetch reads nothing architecturally and never faults.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(off) as *const i8) };
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
            let (a, b) =
                (_mm512_castps_pd(t[4 * q + m / 2]), _mm512_castps_pd(t[4 * q + 2 + m / 2]));
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

    /// `G` heads × `P` positions (`G·P ≤ 16`) from `p0` scored at once: sixteen (head, position) lane
    /// sums in registers, transposed so their sequential totals are sixteen vector adds.
    ///
    /// # Safety
    /// AVX-512F; `shape` accepted the operands; `g0 + G ≤ heads`, `p0 < n`.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn scores_block_512<const G: usize, const P: usize>(
        q: &[f32],
        hd: usize,
        k: &[f16],
        stride: usize,
        scale: f32,
        s: &mut [f32],
        (n, g0, p0): (usize, usize, usize),
    ) {
        let np = P.min(n - p0);
        for pp in 0..np {
            prefetch_row(k.as_ptr().wrapping_add((p0 + pp + AHEAD) * stride), hd);
        }
        let mut acc = [_mm512_setzero_ps(); 16];
        for c in (0..hd).step_by(16) {
            // SAFETY: (g0 + g)·hd + c + 16 ≤ heads·hd = q.len().
            let qv: [__m512; G] = std::array::from_fn(|g| unsafe {
                _mm512_loadu_ps(q.as_ptr().add((g0 + g) * hd + c))
            });
            for pp in (0..P).filter(|&pp| pp < np) {
                // SAFETY: p0 + pp < n, so the row's hd halves are in k (`shape`).
                let kv = unsafe {
                    _mm512_cvtph_ps(_mm256_loadu_si256(
                        k.as_ptr().add((p0 + pp) * stride + c) as *const _
                    ))
                };
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

    /// [`super::scores_f16`] at AVX-512 for head widths that are multiples of 16.
    #[target_feature(enable = "avx512f")]
    fn scores_512(q: &[f32], hd: usize, k: &[f16], stride: usize, scale: f32, s: &mut [f32]) {
        let (heads, n) = shape(q.len(), hd, s.len(), stride, k.len());
        for g0 in (0..heads).step_by(HEADS_PER_PASS) {
            let gs = HEADS_PER_PASS.min(heads - g0);
            let per = 16 / gs;
            for p0 in (0..n).step_by(per) {
                let at = (n, g0, p0);
                // SAFETY: AVX-512F by this function's feature; operands checked by `shape`.
                unsafe {
                    match gs {
                        1 => scores_block_512::<1, 16>(q, hd, k, stride, scale, s, at),
                        2 => scores_block_512::<2, 8>(q, hd, k, stride, scale, s, at),
                        3 => scores_block_512::<3, 5>(q, hd, k, stride, scale, s, at),
                        _ => scores_block_512::<4, 4>(q, hd, k, stride, scale, s, at),
                    }
                }
            }
        }
    }

    /// As [`scores_512`] with two `ymm` per head (lanes 0–7 and 8–15).
    #[target_feature(enable = "avx2,f16c")]
    fn scores_256(q: &[f32], hd: usize, k: &[f16], stride: usize, scale: f32, s: &mut [f32]) {
        let (heads, n) = shape(q.len(), hd, s.len(), stride, k.len());
        for g0 in (0..heads).step_by(HEADS_PER_PASS) {
            let gs = HEADS_PER_PASS.min(heads - g0);
            for p in 0..n {
                let row = &k[p * stride..][..hd];
                prefetch_row(k.as_ptr().wrapping_add((p + AHEAD) * stride), hd);
                let mut acc = [[_mm256_setzero_ps(); 2]; HEADS_PER_PASS];
                for c in (0..hd).step_by(16) {
                    // SAFETY: c + 16 ≤ hd = row.len().
                    let kv = unsafe {
                        let p = row.as_ptr().add(c) as *const __m128i;
                        [
                            _mm256_cvtph_ps(_mm_loadu_si128(p)),
                            _mm256_cvtph_ps(_mm_loadu_si128(p.add(1))),
                        ]
                    };
                    for (g, acc) in acc.iter_mut().enumerate().take(gs) {
                        for h in 0..2 {
                            // SAFETY: (g0 + g)·hd + c + 8h + 8 ≤ q.len().
                            let qv = unsafe {
                                _mm256_loadu_ps(q.as_ptr().add((g0 + g) * hd + c + 8 * h))
                            };
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
    unsafe fn weigh_block_512<const G: usize, const C: usize>(
        s: &[f32],
        v: &[f16],
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
            prefetch_row(v.as_ptr().wrapping_add((p + AHEAD_V) * stride + c0), 16 * C);
            // SAFETY: p < n: the row's columns c0..c0 + 16·C are in v (`shape`).
            let x: [__m512; C] = std::array::from_fn(|j| unsafe {
                _mm512_cvtph_ps(_mm256_loadu_si256(
                    v.as_ptr().add(p * stride + c0 + 16 * j) as *const _
                ))
            });
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

    /// [`super::weigh_f16`] at AVX-512 for head widths that are multiples of 16: 64 columns
    /// (four `zmm` per head) per pass where they remain.
    #[target_feature(enable = "avx512f")]
    fn weigh_512(s: &[f32], v: &[f16], stride: usize, hd: usize, o: &mut [f32]) {
        let (heads, n) = shape(o.len(), hd, s.len(), stride, v.len());
        for g0 in (0..heads).step_by(HEADS_PER_PASS) {
            let gs = HEADS_PER_PASS.min(heads - g0);
            let mut c0 = 0;
            while c0 < hd {
                let wide = hd - c0 >= 64;
                let at = (n, g0, c0);
                // SAFETY: AVX-512F by this function's feature; operands checked by `shape`.
                unsafe {
                    match (gs, wide) {
                        (1, true) => weigh_block_512::<1, 4>(s, v, stride, hd, o, at),
                        (2, true) => weigh_block_512::<2, 4>(s, v, stride, hd, o, at),
                        (3, true) => weigh_block_512::<3, 4>(s, v, stride, hd, o, at),
                        (_, true) => weigh_block_512::<4, 4>(s, v, stride, hd, o, at),
                        (1, false) => weigh_block_512::<1, 1>(s, v, stride, hd, o, at),
                        (2, false) => weigh_block_512::<2, 1>(s, v, stride, hd, o, at),
                        (3, false) => weigh_block_512::<3, 1>(s, v, stride, hd, o, at),
                        (_, false) => weigh_block_512::<4, 1>(s, v, stride, hd, o, at),
                    }
                }
                c0 += if wide { 64 } else { 16 };
            }
        }
    }

    /// Output columns per pass of [`weigh_256`]: two `ymm` per head.
    const COLS_256: usize = 16;

    /// As [`weigh_512`] with 16 columns per pass.
    #[target_feature(enable = "avx2,f16c")]
    fn weigh_256(s: &[f32], v: &[f16], stride: usize, hd: usize, o: &mut [f32]) {
        let (heads, n) = shape(o.len(), hd, s.len(), stride, v.len());
        for g0 in (0..heads).step_by(HEADS_PER_PASS) {
            let gs = HEADS_PER_PASS.min(heads - g0);
            for c0 in (0..hd).step_by(COLS_256) {
                let mut acc = [[_mm256_setzero_ps(); 2]; HEADS_PER_PASS];
                for (g, acc) in acc.iter_mut().enumerate().take(gs) {
                    for (h, a) in acc.iter_mut().enumerate() {
                        // SAFETY: (g0 + g)·hd + c0 + 8h + 8 ≤ o.len().
                        *a = unsafe { _mm256_loadu_ps(o.as_ptr().add((g0 + g) * hd + c0 + 8 * h)) };
                    }
                }
                for p in 0..n {
                    prefetch_row(v.as_ptr().wrapping_add((p + AHEAD_V) * stride + c0), 16);
                    // SAFETY: p·stride + c0 + 16 ≤ v.len() by `shape`.
                    let x = unsafe {
                        let r = v.as_ptr().add(p * stride + c0) as *const __m128i;
                        [
                            _mm256_cvtph_ps(_mm_loadu_si128(r)),
                            _mm256_cvtph_ps(_mm_loadu_si128(r.add(1))),
                        ]
                    };
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
                        unsafe {
                            _mm256_storeu_ps(o.as_mut_ptr().add((g0 + g) * hd + c0 + 8 * h), *a)
                        };
                    }
                }
            }
        }
    }

    /// [`super::scores_f16`] at AVX-512 (head widths that are not a multiple of 16: the body).
    pub fn scores_avx512(
        q: &[f32],
        hd: usize,
        k: &[f16],
        stride: usize,
        scale: f32,
        s: &mut [f32],
    ) {
        if hd.is_multiple_of(16) {
            // SAFETY: installed only where AVX-512F was detected.
            unsafe { scores_512(q, hd, k, stride, scale, s) }
        } else {
            super::scores_body(q, hd, k, stride, scale, s)
        }
    }

    /// [`super::scores_f16`] at AVX2 + F16C.
    pub fn scores_avx2(q: &[f32], hd: usize, k: &[f16], stride: usize, scale: f32, s: &mut [f32]) {
        if hd.is_multiple_of(16) {
            // SAFETY: installed only where AVX2 and F16C were detected.
            unsafe { scores_256(q, hd, k, stride, scale, s) }
        } else {
            super::scores_body(q, hd, k, stride, scale, s)
        }
    }

    /// [`super::weigh_f16`] at AVX-512.
    pub fn weigh_avx512(s: &[f32], v: &[f16], stride: usize, hd: usize, o: &mut [f32]) {
        if hd.is_multiple_of(16) {
            // SAFETY: installed only where AVX-512F was detected.
            unsafe { weigh_512(s, v, stride, hd, o) }
        } else {
            super::weigh_body(s, v, stride, hd, o)
        }
    }

    /// [`super::weigh_f16`] at AVX2 + F16C.
    pub fn weigh_avx2(s: &[f32], v: &[f16], stride: usize, hd: usize, o: &mut [f32]) {
        if hd.is_multiple_of(16) {
            // SAFETY: installed only where AVX2 and F16C were detected.
            unsafe { weigh_256(s, v, stride, hd, o) }
        } else {
            super::weigh_body(s, v, stride, hd, o)
        }
    }
}
