//! The 4-bit head's row packing: values -7..7 in nibbles times a 4-bit multiplier per 64
//! columns, so that the widened values stay exact int8 and take the int8 kernels.

/// Columns sharing one 4-bit block multiplier.
pub(super) const Q4_BLOCK: usize = 64;

/// Quantizes one row for the 4-bit head: `w ≈ s · m_b · q` with q in -7..7 (nibbles q + 8)
/// and a multiplier m_b in 1..15 per block of 64 columns; byte j of a block's 32 bytes
/// holds elements j (low nibble) and j + 32 (high nibble). Widened values `m_b · q` stay within ±105, so the int8 kernels apply exactly.
/// The row scale is chosen by least squares over a few clip ratios. Returns (s, Σ m_b·q).
pub(super) fn quantize_row_4bit(w: &[f32], dst: &mut [u8], mults: &mut [u8]) -> (f32, i32) {
    let amax = w.iter().fold(0f32, |m, &v| m.max(v.abs()));
    dst.fill(0x88);
    mults.fill(1);
    if amax == 0.0 {
        return (1.0, 0);
    }
    // The clip search below encodes every row eight times, so its loop must vectorize: a
    // reciprocal multiply instead of a division, and a lane sum of the error (measured: a
    // 2b4t load with the 4-bit head took 9.0 s before, 7.4 s after).
    let q = |v: f32, inv: f32| crate::quant::round_half_even_small(v * inv).clamp(-7.0, 7.0);
    let encode = |s: f32, mults: &mut [u8]| -> f64 {
        let mut err = 0f64;
        for (b, blk) in w.chunks(Q4_BLOCK).enumerate() {
            let bmax = blk.iter().fold(0f32, |m, &v| m.max(v.abs()));
            let m = (bmax / (7.0 * s)).ceil().clamp(1.0, 15.0);
            mults[b] = m as u8;
            let (step, inv) = (s * m, 1.0 / (s * m));
            // Eight lanes so the sum vectorizes (a single f32 sum is a serial chain).
            let mut lanes = [0f32; 8];
            for c in blk.chunks(8) {
                for (l, &v) in lanes.iter_mut().zip(c) {
                    *l += (v - step * q(v, inv)).powi(2);
                }
            }
            err += lanes.iter().sum::<f32>() as f64;
        }
        err
    };
    let mut best = (f64::MAX, amax / 105.0);
    for i in 0..=6 {
        let s = amax * (1.0 - 0.05 * i as f32) / 105.0;
        let err = encode(s, mults);
        if err < best.0 {
            best = (err, s);
        }
    }
    let s = best.1;
    encode(s, mults);
    let mut sum = 0;
    for (k, &v) in w.iter().enumerate() {
        let m = mults[k / Q4_BLOCK] as f32;
        let n = q(v, 1.0 / (s * m)) as i32;
        sum += n * m as i32;
        let code = (n + 8) as u8;
        let (block, local) = (k / Q4_BLOCK, k % Q4_BLOCK);
        let at = block * Q4_BLOCK / 2 + local % (Q4_BLOCK / 2);
        dst[at] = if local < Q4_BLOCK / 2 {
            (dst[at] & 0xF0) | code
        } else {
            (dst[at] & 0x0F) | (code << 4)
        };
    }
    (s, sum)
}
