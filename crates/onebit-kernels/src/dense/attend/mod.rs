//! Decode attention read straight from an f16 or int8 KV cache: the query heads of a GQA
//! group score every cached key ([`scores`]) and sum the cached values by their weights
//! ([`weigh`]), each key and value row converted once for all the heads.
//!
//! These compute the same bits as widening the rows with [`super::widen_f16`] /
//! [`super::widen_q8`] and running [`super::dot_f32`] / [`super::axpy_f32`] on them (the order
//! the GPU backend repeats): the conversion is the same (exact for f16, value × scale for
//! int8), each dot keeps `dot_f32`'s sixteen lane sums and their
//! sequential total, and each output element adds its products position by position. What
//! changes is the memory traffic: widening wrote every row as f32 to a scratch buffer and
//! read it back once per head, which at a long context was the largest part of a decode step
//! (bench/runs/2026-12-06-xeon-fused-attention.txt).

use half::f16;

/// Heads scored or weighed in one pass over the rows (accumulators held in registers).
pub(crate) const HEADS_PER_PASS: usize = 4;

/// Cached rows as the KV cache stores them; element `i` reads as the widening reads it.
#[derive(Clone, Copy, Debug)]
pub enum KvRows<'a> {
    /// IEEE half, read exactly.
    F16(&'a [f16]),
    /// int8 values and one f32 scale per `block` of them (value · scale, as `widen_q8`).
    Q8(&'a [i8], &'a [f32], usize),
}

impl KvRows<'_> {
    /// Values held (scales checked to cover them).
    fn len(&self) -> usize {
        match *self {
            KvRows::F16(v) => v.len(),
            KvRows::Q8(v, scales, block) => {
                assert!(block > 0 && scales.len() >= v.len().div_ceil(block), "attend: q8 scales");
                v.len()
            }
        }
    }

    /// Element `i` as f32.
    #[inline(always)]
    fn get(&self, i: usize) -> f32 {
        match *self {
            KvRows::F16(v) => v[i].to_f32(),
            KvRows::Q8(v, scales, block) => f32::from(v[i]) * scales[i / block],
        }
    }
}

/// `s[g·n + p] = dot_f32(q[g], k[p]) · scale` for the `q.len() / hd` heads of `q` (one row of
/// `hd` each) and the `n` key rows `k[p·stride..][..hd]`.
pub fn scores(q: &[f32], hd: usize, k: KvRows<'_>, stride: usize, scale: f32, s: &mut [f32]) {
    super::vecops::selected().scores(q, hd, k, stride, scale, s)
}

/// `o[g] += Σ_p s[g·n + p] · v[p]`, position by position, for the `o.len() / hd` heads of `o`
/// and the `n = s.len() / heads` value rows `v[p·stride..][..hd]`.
pub fn weigh(s: &[f32], v: KvRows<'_>, stride: usize, hd: usize, o: &mut [f32]) {
    super::vecops::selected().weigh(s, v, stride, hd, o)
}

/// Checks the operands of [`scores`] / [`weigh`]: `(heads, n)`.
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

/// The definition: [`scores`] in plain code (a row widened 16 values at a time, each head's
/// sixteen lane sums as `dot_f32` keeps them).
pub(crate) fn scores_body(
    q: &[f32],
    hd: usize,
    k: KvRows<'_>,
    stride: usize,
    scale: f32,
    s: &mut [f32],
) {
    let (heads, n) = shape(q.len(), hd, s.len(), stride, k.len());
    let full = hd / 16 * 16;
    for g0 in (0..heads).step_by(HEADS_PER_PASS) {
        let gs = HEADS_PER_PASS.min(heads - g0);
        for p in 0..n {
            let row = p * stride;
            let mut acc = [[0f32; 16]; HEADS_PER_PASS];
            for c in (0..full).step_by(16) {
                let kv: [f32; 16] = std::array::from_fn(|i| k.get(row + c + i));
                for (g, acc) in acc.iter_mut().enumerate().take(gs) {
                    let qg = &q[(g0 + g) * hd + c..][..16];
                    for i in 0..16 {
                        acc[i] += qg[i] * kv[i];
                    }
                }
            }
            for (g, acc) in acc.iter().enumerate().take(gs) {
                let qg = &q[(g0 + g) * hd..][..hd];
                let tail: f32 = (full..hd).map(|c| qg[c] * k.get(row + c)).sum();
                s[(g0 + g) * n + p] = lane_total(acc, tail) * scale;
            }
        }
    }
}

/// The definition: [`weigh`] in plain code.
pub(crate) fn weigh_body(s: &[f32], v: KvRows<'_>, stride: usize, hd: usize, o: &mut [f32]) {
    let (heads, n) = shape(o.len(), hd, s.len(), stride, v.len());
    for p in 0..n {
        for g in 0..heads {
            let w = s[g * n + p];
            for (c, y) in o[g * hd..][..hd].iter_mut().enumerate() {
                *y += w * v.get(p * stride + c);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod x86;
