//! ggml's k-quant super-blocks of 256 values: Q2_K, Q3_K, Q4_K, Q5_K, Q6_K and Q8_K, one
//! block at a time. Layouts as ggml defines them (`ggml-common.h`); values computed in the
//! same order as its reference `dequantize_row_*`, so the f32 results are identical.

use half::f16;

fn d16(b: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

/// Q2_K (84 bytes): scales[16] (4-bit scale | 4-bit min), qs[64], f16 d, f16 dmin.
pub fn q2_k(b: &[u8], y: &mut [f32]) {
    let (scales, qs) = (&b[..16], &b[16..80]);
    let (d, min) = (d16(b, 80), d16(b, 82));
    let mut out = y.iter_mut();
    let mut is = 0;
    for half in 0..2 {
        let q = &qs[32 * half..32 * half + 32];
        for shift in [0, 2, 4, 6] {
            for part in 0..2 {
                let sc = scales[is];
                is += 1;
                let (dl, ml) = (d * (sc & 15) as f32, min * (sc >> 4) as f32);
                for &q in &q[16 * part..16 * part + 16] {
                    *out.next().expect("256 outputs") = dl * ((q >> shift) & 3) as f32 - ml;
                }
            }
        }
    }
}

/// The sixteen 6-bit scales of a Q3_K block (stored biased by 32 in 12 bytes).
fn q3_k_scales(s: &[u8]) -> [i8; 16] {
    let mut out = [0i8; 16];
    for (j, o) in out.iter_mut().enumerate() {
        let low = if j < 8 { s[j] & 15 } else { s[j - 8] >> 4 };
        let high = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
        *o = (low | high << 4) as i8 - 32;
    }
    out
}

/// Q3_K (110 bytes): hmask[32], qs[64], scales[12], f16 d; x = d·s·(q − 4 if the high bit
/// is clear).
pub fn q3_k(b: &[u8], y: &mut [f32]) {
    let (hm, qs) = (&b[..32], &b[32..96]);
    let scales = q3_k_scales(&b[96..108]);
    let d_all = d16(b, 108);
    let mut out = y.iter_mut();
    let (mut is, mut m) = (0, 1u8);
    for half in 0..2 {
        let q = &qs[32 * half..32 * half + 32];
        for shift in [0, 2, 4, 6] {
            for part in 0..2 {
                let dl = d_all * scales[is] as f32;
                is += 1;
                for l in 16 * part..16 * part + 16 {
                    let v = ((q[l] >> shift) & 3) as i32 - if hm[l] & m != 0 { 0 } else { 4 };
                    *out.next().expect("256 outputs") = dl * v as f32;
                }
            }
            m <<= 1;
        }
    }
}

/// Scale and minimum `j` (0..8) of a Q4_K / Q5_K block, 6 bits each in 12 bytes.
fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        ((q[j + 4] & 15) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4))
    }
}

/// Q4_K (144 bytes): f16 d, f16 dmin, scales[12], qs[128]; x = d·s·q − dmin·m.
pub fn q4_k(b: &[u8], y: &mut [f32]) {
    let (d, min, scales, qs) = (d16(b, 0), d16(b, 2), &b[4..16], &b[16..144]);
    for (c, (q, y)) in qs.chunks_exact(32).zip(y.chunks_exact_mut(64)).enumerate() {
        let (s1, m1) = scale_min_k4(2 * c, scales);
        let (s2, m2) = scale_min_k4(2 * c + 1, scales);
        let (d1, m1, d2, m2) = (d * s1 as f32, min * m1 as f32, d * s2 as f32, min * m2 as f32);
        for l in 0..32 {
            y[l] = d1 * (q[l] & 15) as f32 - m1;
            y[l + 32] = d2 * (q[l] >> 4) as f32 - m2;
        }
    }
}

/// Q5_K (176 bytes): f16 d, f16 dmin, scales[12], qh[32], qs[128]; as Q4_K with a fifth bit.
pub fn q5_k(b: &[u8], y: &mut [f32]) {
    let (d, min, scales, qh, qs) = (d16(b, 0), d16(b, 2), &b[4..16], &b[16..48], &b[48..176]);
    for (c, (q, y)) in qs.chunks_exact(32).zip(y.chunks_exact_mut(64)).enumerate() {
        let (s1, m1) = scale_min_k4(2 * c, scales);
        let (s2, m2) = scale_min_k4(2 * c + 1, scales);
        let (d1, m1, d2, m2) = (d * s1 as f32, min * m1 as f32, d * s2 as f32, min * m2 as f32);
        let (u1, u2) = (1u8 << (2 * c), 2u8 << (2 * c));
        for l in 0..32 {
            let h1 = if qh[l] & u1 != 0 { 16 } else { 0 };
            let h2 = if qh[l] & u2 != 0 { 16 } else { 0 };
            y[l] = d1 * ((q[l] & 15) + h1) as f32 - m1;
            y[l + 32] = d2 * ((q[l] >> 4) + h2) as f32 - m2;
        }
    }
}

/// Q6_K (210 bytes): ql[128], qh[64], int8 scales[16], f16 d; x = d·s·(q − 32).
pub fn q6_k(b: &[u8], y: &mut [f32]) {
    let d = d16(b, 208);
    for half in 0..2 {
        let ql = &b[64 * half..64 * half + 64];
        let qh = &b[128 + 32 * half..128 + 32 * half + 32];
        let sc = &b[192 + 8 * half..192 + 8 * half + 8];
        let y = &mut y[128 * half..128 * half + 128];
        for l in 0..32 {
            let is = l / 16;
            let q = [
                (ql[l] & 15) | ((qh[l] & 3) << 4),
                (ql[l + 32] & 15) | (((qh[l] >> 2) & 3) << 4),
                (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4),
                (ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4),
            ];
            for (n, q) in q.into_iter().enumerate() {
                y[l + 32 * n] = d * (sc[is + 2 * n] as i8) as f32 * (q as i32 - 32) as f32;
            }
        }
    }
}

/// Q8_K (292 bytes): f32 d, int8 qs[256], int16 bsums[16]; x = d·q.
pub fn q8_k(b: &[u8], y: &mut [f32]) {
    let d = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    for (y, &q) in y.iter_mut().zip(&b[4..260]) {
        *y = d * (q as i8) as f32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f16b(x: f32) -> [u8; 2] {
        f16::from_f32(x).to_le_bytes()
    }

    #[test]
    fn q3_k_scale_unpacking_matches_ggml_bit_shuffle() {
        // ggml packs scale j's low nibble in byte j (j < 8) or the high nibble of byte j − 8,
        // and its two high bits in byte 8 + j % 4 at bit 2·(j / 4).
        let mut s = [0u8; 12];
        s[0] = 0x5A; // scale 0 low = 0xA, scale 8 low = 0x5
        s[8] = 0b1110_0100; // scale 0 high = 0, scale 4 high = 1, scale 8 high = 2, scale 12 high = 3
        let sc = q3_k_scales(&s);
        assert_eq!(sc[0], 0xA - 32);
        assert_eq!(sc[4], (1 << 4) - 32);
        assert_eq!(sc[8], (0x5 | 2 << 4) - 32);
        assert_eq!(sc[12], (3 << 4) - 32);
    }

    #[test]
    fn hand_computed_blocks() {
        // Q6_K: d = 0.5, scale 0 = 2, scale 2 = -1; element 0 = ql[0] low nibble 3 | qh[0]
        // bits 0..2 = 1 → 19 − 32; element 32 = 0 − 32 under scale 2.
        let mut b = vec![0u8; 210];
        b[0] = 0x03;
        b[128] = 0b0000_0001;
        b[192] = 2;
        b[194] = (-1i8) as u8;
        b[208..210].copy_from_slice(&f16b(0.5));
        let mut y = vec![0f32; 256];
        q6_k(&b, &mut y);
        assert_eq!(y[0], 0.5 * 2.0 * (19.0 - 32.0));
        assert_eq!(y[32], 16.0);
        // Q4_K: d = 1, dmin = 0.5, scale 0 = 3 / min 0 = 2; element 0 nibble 5 → 3·5 − 1.
        let mut b = vec![0u8; 144];
        b[..2].copy_from_slice(&f16b(1.0));
        b[2..4].copy_from_slice(&f16b(0.5));
        b[4] = 3;
        b[8] = 2;
        b[16] = 0x05;
        let mut y = vec![0f32; 256];
        q4_k(&b, &mut y);
        assert_eq!((y[0], y[1]), (14.0, -1.0));
        // Q8_K: d = 0.25, q[3] = -8.
        let mut b = vec![0u8; 292];
        b[..4].copy_from_slice(&0.25f32.to_le_bytes());
        b[7] = (-8i8) as u8;
        let mut y = vec![0f32; 256];
        q8_k(&b, &mut y);
        assert_eq!(y[3], -2.0);
        // Q2_K: scale byte 0 = 0x21 (scale 1, min 2), d = 2, dmin = 1; qs[0] = 3 → 2·3 − 2.
        let mut b = vec![0u8; 84];
        b[0] = 0x21;
        b[16] = 3;
        b[80..82].copy_from_slice(&f16b(2.0));
        b[82..84].copy_from_slice(&f16b(1.0));
        let mut y = vec![0f32; 256];
        q2_k(&b, &mut y);
        assert_eq!((y[0], y[1]), (4.0, -2.0));
    }
}
