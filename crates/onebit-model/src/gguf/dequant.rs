//! Dequantizers for the llama.cpp block types a pretrained full-precision model may come in
//! (fine-tuning reads them as f32 masters): Q8_0, Q4_0 and Q4_1, blocks of 32 values.
//! Lengths are checked by the container (`GgmlType::tensor_bytes`) before these run.

use half::f16;

fn d16(b: &[u8]) -> f32 {
    f16::from_le_bytes([b[0], b[1]]).to_f32()
}

/// Q8_0: f16 d, then 32 int8 q; x = d·q.
pub fn q8_0(data: &[u8]) -> Vec<f32> {
    let mut out = Vec::with_capacity(data.len() / 34 * 32);
    for b in data.chunks_exact(34) {
        let d = d16(b);
        out.extend(b[2..].iter().map(|&q| d * (q as i8) as f32));
    }
    out
}

/// Q4_0: f16 d, then 16 bytes; element j < 16 is the low nibble of byte j, element j + 16
/// the high nibble; x = d·(q − 8).
pub fn q4_0(data: &[u8]) -> Vec<f32> {
    let mut out = Vec::with_capacity(data.len() / 18 * 32);
    for b in data.chunks_exact(18) {
        let d = d16(b);
        let qs = &b[2..];
        out.extend(qs.iter().map(|&q| d * ((q & 15) as f32 - 8.0)));
        out.extend(qs.iter().map(|&q| d * ((q >> 4) as f32 - 8.0)));
    }
    out
}

/// Q4_1: f16 d, f16 m, then 16 bytes of nibbles as in Q4_0; x = d·q + m.
pub fn q4_1(data: &[u8]) -> Vec<f32> {
    let mut out = Vec::with_capacity(data.len() / 20 * 32);
    for b in data.chunks_exact(20) {
        let (d, m) = (d16(b), d16(&b[2..]));
        let qs = &b[4..];
        out.extend(qs.iter().map(|&q| d * (q & 15) as f32 + m));
        out.extend(qs.iter().map(|&q| d * (q >> 4) as f32 + m));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(head: &[f32], qs: &[u8]) -> Vec<u8> {
        let mut v: Vec<u8> = head.iter().flat_map(|&x| f16::from_f32(x).to_le_bytes()).collect();
        v.extend_from_slice(qs);
        v
    }

    #[test]
    fn hand_computed_blocks() {
        // Q8_0: d = 0.5, q = -128, -1, 0, 1, 127, then zeros.
        let mut qs = vec![0u8; 32];
        qs[..5].copy_from_slice(&[0x80, 0xFF, 0x00, 0x01, 0x7F]);
        let x = q8_0(&block(&[0.5], &qs));
        assert_eq!(&x[..5], &[-64.0, -0.5, 0.0, 0.5, 63.5]);
        assert_eq!(x.len(), 32);
        // Q4_0: d = 2, byte 0 = 0xF0 → element 0 is 0 − 8, element 16 is 15 − 8.
        let mut qs = vec![0x88u8; 16];
        qs[0] = 0xF0;
        let x = q4_0(&block(&[2.0], &qs));
        assert_eq!((x[0], x[16], x[1], x[17]), (-16.0, 14.0, 0.0, 0.0));
        // Q4_1: d = 0.25, m = -1, byte 1 = 0x3C → element 1 = 12·0.25 − 1, element 17 = 3·0.25 − 1.
        let mut qs = vec![0u8; 16];
        qs[1] = 0x3C;
        let x = q4_1(&block(&[0.25, -1.0], &qs));
        assert_eq!((x[1], x[17], x[0]), (2.0, -0.25, -1.0));
    }

    #[test]
    fn partial_trailing_bytes_are_ignored_not_read() {
        assert_eq!(q4_1(&[0u8; 19]).len(), 0);
        assert_eq!(q8_0(&[0u8; 35]).len(), 32);
    }
}
