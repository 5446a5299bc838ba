//! The device layouts: ternary rows as 2-bit codes sixteen to a u32, int8 rows and int8
//! activations four to a u32. Plain scalar code; the kernels' comments say why the bits sit
//! where they do.

use onebit_kernels::{ActQuant, Q8Matrix};
use std::ops::Range;

/// Activation words per token for `cols` columns: rows padded to 64 columns so both the
/// ternary kernel (16 columns per weight word) and the head (rows padded to 64) read whole
/// words of zeros past the end.
pub fn act_stride(cols: usize) -> usize {
    cols.div_ceil(64) * 16
}

/// Weight words per ternary row of `cols` columns.
pub fn ternary_words(cols: usize) -> usize {
    cols.div_ceil(16)
}

/// Packs row-major trits (`rows x cols`, values in {-1, 0, +1}) into words: column
/// 16k + 4j + i of a row is bits 8i + 2j of the row's word k, holding trit + 1; padding
/// columns hold trit 0.
pub fn pack_ternary(trits: &[i8], rows: usize, cols: usize) -> Vec<u32> {
    let kw = ternary_words(cols);
    let mut out = vec![0u32; rows * kw];
    for r in 0..rows {
        for k in 0..kw {
            let mut word = 0u32;
            for e in 0..16 {
                let c = 16 * k + e;
                let code = if c < cols { (trits[r * cols + c] + 1) as u32 } else { 1 };
                let (i, j) = (e % 4, e / 4);
                word |= code << (8 * i + 2 * j);
            }
            out[r * kw + k] = word;
        }
    }
    out
}

/// Unpacks [`pack_ternary`]'s words (tests).
pub fn unpack_ternary(words: &[u32], rows: usize, cols: usize) -> Vec<i8> {
    let kw = ternary_words(cols);
    let mut out = Vec::with_capacity(rows * cols);
    for r in 0..rows {
        for c in 0..cols {
            let (k, e) = (c / 16, c % 16);
            let (i, j) = (e % 4, e / 4);
            out.push(((words[r * kw + k] >> (8 * i + 2 * j)) & 3) as i8 - 1);
        }
    }
    out
}

/// Packs int8 values four to a little-endian u32 (a length not a multiple of four is padded
/// with zeros).
pub fn pack_i8(values: &[i8]) -> Vec<u32> {
    values
        .chunks(4)
        .map(|c| {
            let mut b = [0u8; 4];
            for (d, &v) in b.iter_mut().zip(c) {
                *d = v as u8;
            }
            u32::from_le_bytes(b)
        })
        .collect()
}

/// Words per head row: int8 rows padded to 64 columns (the activations' padding), four
/// values to a u32.
pub fn head_row_words(cols: usize) -> usize {
    cols.div_ceil(64) * 16
}

/// Rows `rows` of an int8 or 4-bit head, widened to int8 and packed four to a u32 with
/// [`head_row_words`] words per row, and their scales.
pub fn head_rows(m: &Q8Matrix, rows: Range<usize>) -> (Vec<u32>, Vec<f32>) {
    let kw = head_row_words(m.cols());
    let mut row = vec![0i8; kw * 4];
    let mut words = Vec::with_capacity(rows.len() * kw);
    let mut scale = Vec::with_capacity(rows.len());
    for r in rows {
        row.fill(0);
        m.unpack_row(r, &mut row);
        words.extend(pack_i8(&row));
        scale.push(m.row_scale(r));
    }
    (words, scale)
}

/// Activation rows of `x` in the device layout ([`act_stride`] words per token).
pub fn act_words(x: &ActQuant) -> Vec<u32> {
    let stride = act_stride(x.cols());
    (0..x.tokens()).flat_map(|t| pack_i8(&x.row(t)[..stride * 4])).collect()
}

/// The int8 codes of `n` token rows of `cols` columns from activation words laid out as
/// [`act_words`] (the inverse, dropping each row's padding).
pub fn codes_of_act_words(words: &[u32], n: usize, cols: usize) -> Vec<i8> {
    let stride = act_stride(cols);
    let bytes: Vec<i8> = words.iter().flat_map(|w| w.to_le_bytes()).map(|b| b as i8).collect();
    (0..n).flat_map(|t| bytes[t * stride * 4..][..cols].to_vec()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn hand_computed_word() {
        // Columns 0..16 of one row: trit +1 at column 0 (code 2 at bits 0..2), -1 at column 1
        // (code 0 at bits 8..10), +1 at column 4 (j = 1, i = 0: code 2 at bits 2..4); the
        // rest 0 (code 1).
        let mut t = [0i8; 16];
        t[0] = 1;
        t[1] = -1;
        t[4] = 1;
        let w = pack_ternary(&t, 1, 16)[0];
        let mut expect = 0u32;
        for (e, &v) in t.iter().enumerate() {
            let code = (v + 1) as u32;
            expect |= code << (8 * (e % 4) + 2 * (e / 4));
        }
        assert_eq!(w, expect);
        assert_eq!(w & 0xff, 0b0101_1010);
        assert_eq!(pack_i8(&[1, -1, 127, -128]), vec![0x807f_ff01]);
    }

    proptest! {
        #[test]
        fn ternary_round_trip(rows in 1usize..5, cols in 1usize..70, seed in any::<u64>()) {
            let mut s = seed | 1;
            let t: Vec<i8> = (0..rows * cols).map(|_| {
                s ^= s << 13; s ^= s >> 7; s ^= s << 17;
                (s % 3) as i8 - 1
            }).collect();
            let w = pack_ternary(&t, rows, cols);
            prop_assert_eq!(w.len(), rows * ternary_words(cols));
            prop_assert_eq!(unpack_ternary(&w, rows, cols), t);
        }
    }
}
