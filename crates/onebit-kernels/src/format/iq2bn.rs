//! ik_llama.cpp IQ2_BN (ggml type 135): each row is an f32 scale (the row's absmax) followed
//! by 64-weight blocks of 16 bytes; byte j of a block holds elements j, 16 + j, 32 + j and
//! 48 + j in bits `[1:0]`, `[3:2]`, `[5:4]`, `[7:6]`, code = w + 1 (2.0 bpw plus 32 bits a row).
//!
//! ik_llama.cpp's quantizer gives an all-zero row the scale 0 and code 2 everywhere, so a
//! row whose scale is 0 unpacks to zeros whatever its codes say. Ternary weights with one
//! multiplier per tensor have that multiplier as every non-zero row's scale.

use super::{code, find_code3, trit, TernaryFormat};
use crate::error::{Error, Result};

/// Weights per block.
pub const BLOCK: usize = 64;
/// Bytes per block.
pub const BLOCK_BYTES: usize = 16;

/// Bytes of one row (scale and blocks).
pub fn row_bytes(cols: usize) -> usize {
    4 + cols / BLOCK * BLOCK_BYTES
}

/// Scale of row `r`.
pub fn row_scale(data: &[u8], r: usize, cols: usize) -> f32 {
    let at = r * row_bytes(cols);
    f32::from_le_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]])
}

/// Packs row-major trits with `scale` in every row's header (0 for all-zero rows, as
/// ik_llama.cpp's quantizer writes them).
pub fn pack(trits: &[i8], rows: usize, cols: usize, scale: f32) -> Vec<u8> {
    let mut out = Vec::with_capacity(rows * row_bytes(cols));
    for row in trits.chunks_exact(cols) {
        let s = if row.iter().any(|&t| t != 0) { scale } else { 0.0 };
        out.extend_from_slice(&s.to_le_bytes());
        for block in row.chunks_exact(BLOCK) {
            for j in 0..16 {
                out.push(
                    code(block[j])
                        | code(block[16 + j]) << 2
                        | code(block[32 + j]) << 4
                        | code(block[48 + j]) << 6,
                );
            }
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
        for (block, b) in row.chunks_exact_mut(BLOCK).zip(bytes[4..].chunks_exact(BLOCK_BYTES)) {
            for (j, &byte) in b.iter().enumerate() {
                for n in 0..4 {
                    block[16 * n + j] = trit((byte >> (2 * n)) & 3);
                }
            }
        }
    }
    out
}

/// Rejects code 3 (in rows that count) and non-finite or negative row scales.
pub fn validate(data: &[u8], rows: usize, cols: usize) -> Result<()> {
    let rb = row_bytes(cols);
    for r in 0..rows {
        let d = row_scale(data, r, cols);
        if !d.is_finite() || d < 0.0 {
            return Err(Error::BadScale(d));
        }
        if d == 0.0 {
            continue;
        }
        if let Some(at) = find_code3(&data[r * rb + 4..(r + 1) * rb]) {
            return Err(Error::BadCode { format: TernaryFormat::Iq2Bn, byte: r * rb + 4 + at });
        }
    }
    Ok(())
}
