//! bitnet.cpp I2_S, x86 build: the row-major tensor is cut into 128-weight blocks of
//! 32 bytes; byte g of a block holds elements g, g+32, g+64, g+96 in bits `[7:6]`, `[5:4]`,
//! `[3:2]`, `[1:0]` with code = w + 1. One f32 scale (the multiplier) follows the n/4 packed
//! bytes, and the tensor is padded by 32 bytes in all. bitnet.cpp's ARM build uses
//! 64-weight blocks instead; we read and write the x86 form only.

use super::{code, find_code3, trit, TernaryFormat};
use crate::error::{Error, Result};

/// Weights per block.
pub const BLOCK: usize = 128;
/// Bytes after the packed codes: the f32 scale and padding.
pub const TAIL: usize = 32;

/// Total tensor bytes, scale and padding included.
pub fn packed_len(rows: usize, cols: usize) -> usize {
    rows * cols / 4 + TAIL
}

/// Packs row-major trits; the caller has checked the shape and values.
pub fn pack(trits: &[i8], rows: usize, cols: usize, scale: f32) -> Vec<u8> {
    let n = rows * cols;
    let mut out = vec![0u8; packed_len(rows, cols)];
    for (b, block) in trits.chunks_exact(BLOCK).enumerate() {
        for g in 0..32 {
            out[b * 32 + g] = (code(block[g]) << 6)
                | (code(block[g + 32]) << 4)
                | (code(block[g + 64]) << 2)
                | code(block[g + 96]);
        }
    }
    out[n / 4..n / 4 + 4].copy_from_slice(&scale.to_le_bytes());
    out
}

/// Unpacks to row-major trits; the bytes have passed [`validate`].
pub fn unpack(data: &[u8], rows: usize, cols: usize) -> Vec<i8> {
    let n = rows * cols;
    let mut out = vec![0i8; n];
    for (b, block) in out.chunks_exact_mut(BLOCK).enumerate() {
        for g in 0..32 {
            let byte = data[b * 32 + g];
            block[g] = trit(byte >> 6);
            block[g + 32] = trit((byte >> 4) & 3);
            block[g + 64] = trit((byte >> 2) & 3);
            block[g + 96] = trit(byte & 3);
        }
    }
    out
}

/// The f32 multiplier stored after the packed codes.
pub fn read_scale(data: &[u8], rows: usize, cols: usize) -> f32 {
    let at = rows * cols / 4;
    f32::from_le_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]])
}

/// Rejects code 3 anywhere in the packed part.
pub fn validate(data: &[u8], rows: usize, cols: usize) -> Result<()> {
    match find_code3(&data[..rows * cols / 4]) {
        Some(byte) => Err(Error::BadCode { format: TernaryFormat::I2S, byte }),
        None => Ok(()),
    }
}
