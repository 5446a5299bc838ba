//! transformers' packed BitNet weight: `uint8[rows/4, cols]`. With R = rows/4, byte
//! `[r, k]` holds rows r, r+R, r+2R, r+3R of column k in bits `[1:0]`, `[3:2]`, `[5:4]`, `[7:6]`,
//! code = w + 1. The scale lives in a separate `weight_scale` tensor whose meaning
//! (multiplier or divisor) the model loader decides; here it is always the multiplier.

use super::{code, find_code3, trit, TernaryFormat};
use crate::error::{Error, Result};

/// Packs row-major trits; rows is a multiple of 4 (checked by the caller).
pub fn pack(trits: &[i8], rows: usize, cols: usize) -> Vec<u8> {
    let quarter = rows / 4;
    let mut out = vec![0u8; quarter * cols];
    for r in 0..quarter {
        for k in 0..cols {
            let mut byte = 0u8;
            for i in 0..4 {
                byte |= code(trits[(r + i * quarter) * cols + k]) << (2 * i);
            }
            out[r * cols + k] = byte;
        }
    }
    out
}

/// Unpacks to row-major trits.
pub fn unpack(data: &[u8], rows: usize, cols: usize) -> Vec<i8> {
    let quarter = rows / 4;
    let mut out = vec![0i8; rows * cols];
    for r in 0..quarter {
        for k in 0..cols {
            let byte = data[r * cols + k];
            for i in 0..4 {
                out[(r + i * quarter) * cols + k] = trit((byte >> (2 * i)) & 3);
            }
        }
    }
    out
}

/// Rejects code 3.
pub fn validate(data: &[u8]) -> Result<()> {
    match find_code3(data) {
        Some(byte) => Err(Error::BadCode { format: TernaryFormat::HfPacked, byte }),
        None => Ok(()),
    }
}
