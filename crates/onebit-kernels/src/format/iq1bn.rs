//! ik_llama.cpp IQ1_BN (ggml type 134): each row is an f16 scale (the row's absmax) followed
//! by 64-weight blocks of 13 bytes (1.625 bpw plus 16 bits a row). A block is four groups of
//! 16 weights: bytes `3g`, `3g + 1`, `3g + 2` hold elements `16g + 5k + j` (j = 0..5) as
//! base-3 numbers with j = 0 least significant, byte 12 holds element `16g + 15` of each
//! group g as digit g. Bytes store `ceil(v·256/243)`, so digit j decodes without division
//! as `((b·3^(4−j) mod 256)·3) >> 8`, the scheme TQ1_0 uses with the digits reversed.
//!
//! As with IQ2_BN, a row whose scale is 0 unpacks to zeros.

use super::TernaryFormat;
use crate::error::{Error, Result};
use half::f16;

/// Weights per block.
pub const BLOCK: usize = 64;
/// Bytes per block.
pub const BLOCK_BYTES: usize = 13;

/// Bytes of one row (scale and blocks).
pub fn row_bytes(cols: usize) -> usize {
    2 + cols / BLOCK * BLOCK_BYTES
}

/// Scale of row `r`.
pub fn row_scale(data: &[u8], r: usize, cols: usize) -> f32 {
    let at = r * row_bytes(cols);
    f16::from_le_bytes([data[at], data[at + 1]]).to_f32()
}

/// Encodes five codes (0..=2; `codes[0]` least significant).
fn encode(codes: &[u8]) -> u8 {
    let v = codes.iter().rev().fold(0u16, |v, &c| v * 3 + c as u16);
    ((v * 256).div_ceil(243)) as u8
}

/// Decodes digit j (0 = least significant) of a byte.
fn decode(byte: u8, j: u32) -> i8 {
    let q = byte.wrapping_mul(3u8.pow(4 - j));
    ((q as u16 * 3) >> 8) as i8 - 1
}

/// Packs row-major trits with `scale` (rounded to f16) in every non-zero row's header.
pub fn pack(trits: &[i8], rows: usize, cols: usize, scale: f32) -> Vec<u8> {
    let mut out = Vec::with_capacity(rows * row_bytes(cols));
    for row in trits.chunks_exact(cols) {
        let s = if row.iter().any(|&t| t != 0) { scale } else { 0.0 };
        out.extend_from_slice(&f16::from_f32(s).to_le_bytes());
        for block in row.chunks_exact(BLOCK) {
            let c = |e: usize| (block[e] + 1) as u8;
            for g in 0..4 {
                for k in 0..3 {
                    let codes: Vec<u8> = (0..5).map(|j| c(16 * g + 5 * k + j)).collect();
                    out.push(encode(&codes));
                }
            }
            let extra: Vec<u8> = (0..4).map(|g| c(16 * g + 15)).collect();
            out.push(encode(&extra));
        }
    }
    out
}

/// Unpacks to row-major trits; rows with scale 0 are zeros.
pub fn unpack(data: &[u8], rows: usize, cols: usize) -> Vec<i8> {
    let mut out = vec![0i8; rows * cols];
    for (r, (row, bytes)) in
        out.chunks_exact_mut(cols).zip(data.chunks_exact(row_bytes(cols))).enumerate()
    {
        if row_scale(data, r, cols) == 0.0 {
            continue;
        }
        for (block, b) in row.chunks_exact_mut(BLOCK).zip(bytes[2..].chunks_exact(BLOCK_BYTES)) {
            for g in 0..4 {
                for k in 0..3 {
                    for j in 0..5 {
                        block[16 * g + 5 * k + j] = decode(b[3 * g + k], j as u32);
                    }
                }
                block[16 * g + 15] = decode(b[12], g as u32);
            }
        }
    }
    out
}

/// Rejects non-finite or negative row scales (every byte decodes to some digits, as in
/// TQ1_0).
pub fn validate(data: &[u8], rows: usize, cols: usize) -> Result<()> {
    for r in 0..rows {
        let d = row_scale(data, r, cols);
        if !d.is_finite() || d < 0.0 {
            return Err(Error::BadScale(d));
        }
    }
    let _ = TernaryFormat::Iq1Bn;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_five_digit_number_round_trips() {
        for v in 0..243u16 {
            let codes: Vec<u8> = (0..5).map(|j| (v / 3u16.pow(j) % 3) as u8).collect();
            let b = encode(&codes);
            for (j, &c) in codes.iter().enumerate() {
                assert_eq!(decode(b, j as u32), c as i8 - 1, "v {v} digit {j}");
            }
        }
    }
}
