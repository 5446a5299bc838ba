//! onebit T2: 2-bit rows shaped for the MAD kernels. Each row is cut into blocks of 256
//! weights stored in 64 bytes; byte j of a block holds elements j, j+64, j+128, j+192 in
//! bits `[1:0]`, `[3:2]`, `[5:4]`, `[7:6]`, code = w + 1. One AND per bit pair gives a whole
//! register of codes that lines up with 64 consecutive activations (AVX-512), and the same
//! bytes serve AVX2 (32-byte halves) and NEON (16-byte quarters) without repacking.
//! A ragged last block is padded with code 1 (weight 0).

use super::{code, find_code3, trit, TernaryFormat};
use crate::error::{Error, Result};

/// Weights per block.
pub const BLOCK: usize = 256;
/// Bytes per block.
pub const BLOCK_BYTES: usize = 64;

/// Bytes per packed row.
pub fn row_bytes(cols: usize) -> usize {
    cols.div_ceil(BLOCK) * BLOCK_BYTES
}

/// Packs row-major trits.
pub fn pack(trits: &[i8], rows: usize, cols: usize) -> Vec<u8> {
    let mut out = vec![0x55u8; rows * row_bytes(cols)];
    pack_into(trits, rows, cols, &mut out);
    out
}

/// [`pack`] into an existing buffer of `rows · row_bytes(cols)` bytes (training repacks
/// every step without allocating).
pub fn pack_into(trits: &[i8], rows: usize, cols: usize, out: &mut [u8]) {
    let rb = row_bytes(cols);
    assert_eq!(out.len(), rows * rb, "t2::pack_into: buffer length");
    for (row, dst) in trits.chunks_exact(cols).zip(out.chunks_exact_mut(rb)) {
        for (b, block) in dst.chunks_exact_mut(BLOCK_BYTES).enumerate() {
            let src = &row[b * BLOCK..row.len().min((b + 1) * BLOCK)];
            if src.len() == BLOCK {
                // Whole blocks gather the four quarters byte by byte (vectorizes: training
                // repacks every weight every step).
                for (j, d) in block.iter_mut().enumerate() {
                    *d = code(src[j])
                        | code(src[j + 64]) << 2
                        | code(src[j + 128]) << 4
                        | code(src[j + 192]) << 6;
                }
            } else {
                for (j, d) in block.iter_mut().enumerate() {
                    let at = |q: usize| src.get(j + 64 * q).map_or(1, |&t| code(t));
                    *d = at(0) | at(1) << 2 | at(2) << 4 | at(3) << 6;
                }
            }
        }
    }
}

/// Unpacks to row-major trits.
pub fn unpack(data: &[u8], rows: usize, cols: usize) -> Vec<i8> {
    let rb = row_bytes(cols);
    let mut out = vec![0i8; rows * cols];
    for (row, src) in out.chunks_exact_mut(cols).zip(data.chunks_exact(rb)) {
        for (k, t) in row.iter_mut().enumerate() {
            let (b, e) = (k / BLOCK, k % BLOCK);
            *t = trit((src[b * BLOCK_BYTES + e % 64] >> (2 * (e / 64))) & 3);
        }
    }
    out
}

/// Rejects code 3.
pub fn validate(data: &[u8], _rows: usize, _cols: usize) -> Result<()> {
    match find_code3(data) {
        Some(byte) => Err(Error::BadCode { format: TernaryFormat::T2, byte }),
        None => Ok(()),
    }
}
