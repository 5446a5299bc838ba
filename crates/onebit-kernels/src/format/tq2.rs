//! llama.cpp TQ2_0: blocks of 256 weights along a row, each `qs[64]` then an f16 `d`
//! (66 bytes, 2.0625 bpw). Byte m of each 32-byte chunk j holds elements
//! 128·j + m + {0, 32, 64, 96} in bits `[1:0]`, `[3:2]`, `[5:4]`, `[7:6]`, code = w + 1.
//! `d` is the block's absmax; for ternary weights we store the tensor multiplier.

use super::{code, find_code3, trit, TernaryFormat};
use crate::error::{Error, Result};
use half::f16;

/// Bytes per 256-weight block.
pub const BLOCK_BYTES: usize = 66;

/// Packs row-major trits with `scale` as every block's `d`.
pub fn pack(trits: &[i8], rows: usize, cols: usize, scale: f32) -> Vec<u8> {
    let mut out = Vec::with_capacity(rows * cols / 256 * BLOCK_BYTES);
    let d = f16::from_f32(scale).to_le_bytes();
    for block in trits.chunks_exact(256) {
        for j in 0..2 {
            for m in 0..32 {
                let mut byte = 0u8;
                for n in 0..4 {
                    byte |= code(block[128 * j + m + 32 * n]) << (2 * n);
                }
                out.push(byte);
            }
        }
        out.extend_from_slice(&d);
    }
    out
}

/// Unpacks to row-major trits (block scales are not applied).
pub fn unpack(data: &[u8], rows: usize, cols: usize) -> Vec<i8> {
    let mut out = vec![0i8; rows * cols];
    for (block, bytes) in out.chunks_exact_mut(256).zip(data.chunks_exact(BLOCK_BYTES)) {
        for j in 0..2 {
            for m in 0..32 {
                let byte = bytes[32 * j + m];
                for n in 0..4 {
                    block[128 * j + m + 32 * n] = trit((byte >> (2 * n)) & 3);
                }
            }
        }
    }
    out
}

/// The f32 value of block `b`'s `d`.
pub fn block_scale(data: &[u8], b: usize) -> f32 {
    let at = b * BLOCK_BYTES + 64;
    f16::from_le_bytes([data[at], data[at + 1]]).to_f32()
}

/// Rejects code 3 and non-finite or negative block scales.
pub fn validate(data: &[u8], rows: usize, cols: usize) -> Result<()> {
    for b in 0..rows * cols / 256 {
        let bytes = &data[b * BLOCK_BYTES..b * BLOCK_BYTES + 64];
        if let Some(at) = find_code3(bytes) {
            return Err(Error::BadCode {
                format: TernaryFormat::Tq2_0,
                byte: b * BLOCK_BYTES + at,
            });
        }
        let d = block_scale(data, b);
        if !d.is_finite() || d < 0.0 {
            return Err(Error::BadScale(d));
        }
    }
    Ok(())
}
