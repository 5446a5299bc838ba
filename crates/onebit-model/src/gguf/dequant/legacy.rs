//! ggml's 32-value block types: Q4_0, Q4_1, Q5_0, Q5_1 and Q8_0, one block at a time.
//! Layouts as ggml defines them (`ggml-common.h`); the values as its reference
//! `dequantize_row_*` computes them.

use half::f16;

fn d16(b: &[u8]) -> f32 {
    f16::from_le_bytes([b[0], b[1]]).to_f32()
}

/// Q8_0 (34 bytes): f16 d, then 32 int8 q; x = d·q.
pub fn q8_0(b: &[u8], y: &mut [f32]) {
    let d = d16(b);
    for (y, &q) in y.iter_mut().zip(&b[2..34]) {
        *y = d * (q as i8) as f32;
    }
}

/// Q4_0 (18 bytes): f16 d, then 16 bytes; element j < 16 is the low nibble of byte j,
/// element j + 16 the high nibble; x = d·(q − 8).
pub fn q4_0(b: &[u8], y: &mut [f32]) {
    let d = d16(b);
    for (j, &q) in b[2..18].iter().enumerate() {
        y[j] = d * ((q & 15) as i32 - 8) as f32;
        y[j + 16] = d * ((q >> 4) as i32 - 8) as f32;
    }
}

/// Q4_1 (20 bytes): f16 d, f16 m, then 16 bytes of nibbles as in Q4_0; x = d·q + m.
pub fn q4_1(b: &[u8], y: &mut [f32]) {
    let (d, m) = (d16(b), d16(&b[2..]));
    for (j, &q) in b[4..20].iter().enumerate() {
        y[j] = d * (q & 15) as f32 + m;
        y[j + 16] = d * (q >> 4) as f32 + m;
    }
}

/// The fifth bits of a Q5 block: bit j of `qh` belongs to element j.
fn fifth_bits(qh: &[u8], j: usize) -> (u8, u8) {
    let qh = u32::from_le_bytes([qh[0], qh[1], qh[2], qh[3]]);
    (((qh >> j) << 4) as u8 & 0x10, (qh >> (j + 12)) as u8 & 0x10)
}

/// Q5_0 (22 bytes): f16 d, u32 qh (the fifth bits), 16 bytes of nibbles; x = d·(q − 16).
pub fn q5_0(b: &[u8], y: &mut [f32]) {
    let d = d16(b);
    for (j, &q) in b[6..22].iter().enumerate() {
        let (h0, h1) = fifth_bits(&b[2..6], j);
        y[j] = d * (((q & 15) | h0) as i32 - 16) as f32;
        y[j + 16] = d * (((q >> 4) | h1) as i32 - 16) as f32;
    }
}

/// Q5_1 (24 bytes): f16 d, f16 m, u32 qh, 16 bytes of nibbles; x = d·q + m.
pub fn q5_1(b: &[u8], y: &mut [f32]) {
    let (d, m) = (d16(b), d16(&b[2..]));
    for (j, &q) in b[8..24].iter().enumerate() {
        let (h0, h1) = fifth_bits(&b[4..8], j);
        y[j] = d * ((q & 15) | h0) as f32 + m;
        y[j + 16] = d * ((q >> 4) | h1) as f32 + m;
    }
}

/// Q8_0 blocks of `x` (whole blocks of 32), as ggml's reference `quantize_row_q8_0_ref`
/// writes them: d = absmax / 127, q = round(x / d) half away from zero.
pub fn quantize_q8_0(x: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(x.len() / 32 * 34);
    for b in x.chunks_exact(32) {
        let amax = b.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
        out.extend(b.iter().map(|&v| (v * id).round() as i8 as u8));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(head: &[f32], rest: &[u8]) -> Vec<u8> {
        let mut v: Vec<u8> = head.iter().flat_map(|&x| f16::from_f32(x).to_le_bytes()).collect();
        v.extend_from_slice(rest);
        v
    }

    fn run(f: fn(&[u8], &mut [f32]), b: &[u8]) -> Vec<f32> {
        let mut y = vec![f32::NAN; 32];
        f(b, &mut y);
        y
    }

    #[test]
    fn q8_0_holds_ternary_values_up_to_its_f16_scale() {
        let x: Vec<f32> = (0..64).map(|i| [0.3f32, 0.0, -0.3][i % 3]).collect();
        let b = quantize_q8_0(&x);
        assert_eq!(b.len(), 68);
        let mut y = vec![0f32; 32];
        q8_0(&b[34..], &mut y);
        let a = 127.0 * f16::from_f32(0.3 / 127.0).to_f32();
        assert!(y
            .iter()
            .zip(&x[32..])
            .all(|(y, x)| *y == a * x.signum() * (*x != 0.0) as u8 as f32));
    }

    #[test]
    fn hand_computed_blocks() {
        // Q8_0: d = 0.5, q = -128, -1, 0, 1, 127, then zeros.
        let mut qs = vec![0u8; 32];
        qs[..5].copy_from_slice(&[0x80, 0xFF, 0x00, 0x01, 0x7F]);
        let x = run(q8_0, &block(&[0.5], &qs));
        assert_eq!(&x[..5], &[-64.0, -0.5, 0.0, 0.5, 63.5]);
        // Q4_0: d = 2, byte 0 = 0xF0 → element 0 is 0 − 8, element 16 is 15 − 8.
        let mut qs = vec![0x88u8; 16];
        qs[0] = 0xF0;
        let x = run(q4_0, &block(&[2.0], &qs));
        assert_eq!((x[0], x[16], x[1], x[17]), (-16.0, 14.0, 0.0, 0.0));
        // Q4_1: d = 0.25, m = -1, byte 1 = 0x3C → element 1 = 12·0.25 − 1, element 17 = 3·0.25 − 1.
        let mut qs = vec![0u8; 16];
        qs[1] = 0x3C;
        let x = run(q4_1, &block(&[0.25, -1.0], &qs));
        assert_eq!((x[1], x[17], x[0]), (2.0, -0.25, -1.0));
        // Q5_0: d = 1; qh bit 0 (element 0) and bit 17 (element 17) set; byte 0 = 0x21,
        // byte 1 = 0x3F → element 0 = (1|16) − 16 = 1, element 16 = 2 − 16 = -14,
        // element 1 = 15 − 16 = -1, element 17 = (3|16) − 16 = 3.
        let mut rest = (1u32 | 1 << 17).to_le_bytes().to_vec();
        let mut qs = vec![0u8; 16];
        qs[0] = 0x21;
        qs[1] = 0x3F;
        rest.extend(&qs);
        let x = run(q5_0, &block(&[1.0], &rest));
        assert_eq!((x[0], x[16], x[1], x[17], x[2]), (1.0, -14.0, -1.0, 3.0, -16.0));
        // Q5_1: d = 0.5, m = 1, the same bits → element 0 = 17·0.5 + 1, element 17 = 19·0.5 + 1.
        let x = run(q5_1, &block(&[0.5, 1.0], &rest));
        assert_eq!((x[0], x[17], x[2]), (9.5, 10.5, 1.0));
    }
}
