//! Scalar kernels, one per layout: the definition of correct that every SIMD kernel is
//! tested against. They decode one element at a time with the format module's own rules.

use super::MatmulArgs;
use crate::format::{b3, i2s, iq1bn, iq2bn, t2, tq1, tq2};

/// Σ t·q over trits and activations: the arithmetic every kernel must reproduce.
pub fn dot_trits(trits: &[i8], act: &[i8]) -> i32 {
    trits.iter().zip(act).map(|(&t, &q)| t as i32 * q as i32).sum()
}

fn rows_with(a: &MatmulArgs<'_>, r0: usize, r1: usize, trit_at: impl Fn(usize, usize) -> i8) {
    for t in 0..a.tokens {
        let act = &a.act[t * a.act_stride..];
        for r in r0..r1 {
            let acc: i32 = (0..a.cols).map(|k| trit_at(r, k) as i32 * act[k] as i32).sum();
            // SAFETY: r in this call's range, t < tokens (dispatch checked the sizes).
            unsafe { a.store(t, r, acc) };
        }
    }
}

/// T2 layout.
///
/// # Safety
/// See [`super::MatmulFn`].
pub unsafe fn t2(a: &MatmulArgs<'_>, r0: usize, r1: usize) {
    rows_with(a, r0, r1, |r, k| {
        let (b, e) = (k / t2::BLOCK, k % t2::BLOCK);
        let byte = a.w[r * a.row_bytes + b * t2::BLOCK_BYTES + e % 64];
        ((byte >> (2 * (e / 64))) & 3) as i8 - 1
    })
}

/// B3 layout.
///
/// # Safety
/// See [`super::MatmulFn`].
pub unsafe fn b3(a: &MatmulArgs<'_>, r0: usize, r1: usize) {
    rows_with(a, r0, r1, |r, k| {
        let (b, e) = (k / b3::BLOCK, k % b3::BLOCK);
        let byte = a.w[r * a.row_bytes + b * b3::BLOCK_BYTES + e % 64];
        tq1::decode(byte, (e / 64) as u32) as i8 - 1
    })
}

/// I2_S layout (bitnet.cpp, x86).
///
/// # Safety
/// See [`super::MatmulFn`].
pub unsafe fn i2s(a: &MatmulArgs<'_>, r0: usize, r1: usize) {
    rows_with(a, r0, r1, |r, k| {
        let n = r * a.cols + k;
        let (b, e) = (n / i2s::BLOCK, n % i2s::BLOCK);
        let byte = a.w[b * 32 + e % 32];
        ((byte >> (6 - 2 * (e / 32))) & 3) as i8 - 1
    })
}

/// HF packed layout.
///
/// # Safety
/// See [`super::MatmulFn`].
pub unsafe fn hf(a: &MatmulArgs<'_>, r0: usize, r1: usize) {
    let quarter = a.rows / 4;
    rows_with(a, r0, r1, |r, k| {
        let byte = a.w[(r % quarter) * a.cols + k];
        ((byte >> (2 * (r / quarter))) & 3) as i8 - 1
    })
}

/// TQ2_0 blocks with one shared scale (the matrix was checked uniform); block scales of
/// non-uniform files are applied by [`tq2_q8k_row`].
///
/// # Safety
/// See [`super::MatmulFn`].
pub unsafe fn tq2(a: &MatmulArgs<'_>, r0: usize, r1: usize) {
    let blocks = a.cols / 256;
    rows_with(a, r0, r1, |r, k| {
        let blk = &a.w[(r * blocks + k / 256) * tq2::BLOCK_BYTES..];
        let e = k % 256;
        let (j, rest) = (e / 128, e % 128);
        ((blk[32 * j + rest % 32] >> (2 * (rest / 32))) & 3) as i8 - 1
    })
}

/// TQ1_0 blocks with one shared scale.
///
/// # Safety
/// See [`super::MatmulFn`].
pub unsafe fn tq1(a: &MatmulArgs<'_>, r0: usize, r1: usize) {
    let blocks = a.cols / 256;
    rows_with(a, r0, r1, |r, k| {
        let blk = &a.w[(r * blocks + k / 256) * tq1::BLOCK_BYTES..];
        let e = k % 256;
        let (byte, n) = match e {
            0..160 => (e % 32, e / 32),
            160..240 => (32 + (e - 160) % 16, (e - 160) / 16),
            _ => (48 + (e - 240) % 4, (e - 240) / 4),
        };
        tq1::decode(blk[byte], n as u32) as i8 - 1
    })
}

/// IQ2_BN rows (a row with scale 0 is zero).
///
/// # Safety
/// See [`super::MatmulFn`].
pub unsafe fn iq2bn(a: &MatmulArgs<'_>, r0: usize, r1: usize) {
    rows_with(a, r0, r1, |r, k| {
        if iq2bn::row_scale(a.w, r, a.cols) == 0.0 {
            return 0;
        }
        let row = &a.w[r * a.row_bytes + 4..];
        let (b, e) = (k / iq2bn::BLOCK, k % iq2bn::BLOCK);
        ((row[b * iq2bn::BLOCK_BYTES + e % 16] >> (2 * (e / 16))) & 3) as i8 - 1
    })
}

/// IQ1_BN rows (a row with scale 0 is zero).
///
/// # Safety
/// See [`super::MatmulFn`].
pub unsafe fn iq1bn(a: &MatmulArgs<'_>, r0: usize, r1: usize) {
    rows_with(a, r0, r1, |r, k| {
        if iq1bn::row_scale(a.w, r, a.cols) == 0.0 {
            return 0;
        }
        let row = &a.w[r * a.row_bytes + 2..];
        let (b, e) = (k / iq1bn::BLOCK, k % iq1bn::BLOCK);
        let blk = &row[b * iq1bn::BLOCK_BYTES..];
        let (g, i) = (e / 16, e % 16);
        let (byte, digit) = if i == 15 { (blk[12], g) } else { (blk[3 * g + i / 5], i % 5) };
        tq1::decode(byte, 4 - digit as u32) as i8 - 1
    })
}

/// One TQ2_0 row against Q8_K activations with per-block scales, as ggml's generic
/// `vec_dot_tq2_0_q8_K` computes it (f32 sum of block results).
pub fn tq2_q8k_row(row: &[u8], act: &[crate::quant::Q8K]) -> f32 {
    row.chunks_exact(tq2::BLOCK_BYTES)
        .zip(act)
        .map(|(blk, y)| {
            let mut sumi = 0i32;
            for e in 0..256 {
                let (j, rest) = (e / 128, e % 128);
                let t = ((blk[32 * j + rest % 32] >> (2 * (rest / 32))) & 3) as i32 - 1;
                sumi += t * y.qs[e] as i32;
            }
            let d = half::f16::from_le_bytes([blk[64], blk[65]]).to_f32();
            sumi as f32 * (y.d * d)
        })
        .sum()
}

/// One TQ1_0 row against Q8_K activations with per-block scales (ggml's generic rule).
pub fn tq1_q8k_row(row: &[u8], act: &[crate::quant::Q8K]) -> f32 {
    row.chunks_exact(tq1::BLOCK_BYTES)
        .zip(act)
        .map(|(blk, y)| {
            let trits = tq1::unpack(blk, 1, 256);
            let d = half::f16::from_le_bytes([blk[52], blk[53]]).to_f32();
            dot_trits(&trits, &y.qs) as f32 * (d * y.d)
        })
        .sum()
}
