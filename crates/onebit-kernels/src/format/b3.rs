//! onebit B3: 1.6 bits per weight, five trits per byte, for models that only fit when
//! packed near the log2(3) limit (100B-class in 24 GB). Each row is cut into blocks of 320
//! weights stored in 64 bytes; byte j holds elements j + 64n (n = 0..5, n = 0 most
//! significant) in TQ1_0's division-free byte encoding (see [`super::tq1::encode5`]).
//! The AVX-512 kernel decodes a whole register with byte-table lookups (`vpermi2b`), the
//! others with the multiply-shift rule. A ragged last block is padded with weight 0.

use super::tq1::{decode, encode5};
use super::TernaryFormat;
use crate::error::{Error, Result};

/// Weights per block.
pub const BLOCK: usize = 320;
/// Bytes per block.
pub const BLOCK_BYTES: usize = 64;

/// Bytes per packed row.
pub fn row_bytes(cols: usize) -> usize {
    cols.div_ceil(BLOCK) * BLOCK_BYTES
}

/// Packs row-major trits.
pub fn pack(trits: &[i8], rows: usize, cols: usize) -> Vec<u8> {
    let rb = row_bytes(cols);
    let mut out = vec![0u8; rows * rb];
    for (row, dst) in trits.chunks_exact(cols).zip(out.chunks_exact_mut(rb)) {
        for (b, block) in dst.chunks_exact_mut(BLOCK_BYTES).enumerate() {
            for (j, byte) in block.iter_mut().enumerate() {
                let mut codes = [1u8; 5];
                for (n, c) in codes.iter_mut().enumerate() {
                    let k = b * BLOCK + j + 64 * n;
                    if k < cols {
                        *c = (row[k] + 1) as u8;
                    }
                }
                *byte = encode5(codes);
            }
        }
    }
    out
}

/// Unpacks to row-major trits.
pub fn unpack(data: &[u8], rows: usize, cols: usize) -> Vec<i8> {
    let rb = row_bytes(cols);
    let mut out = vec![0i8; rows * cols];
    for (row, src) in out.chunks_exact_mut(cols).zip(data.chunks_exact(rb)) {
        for (k, t) in row.iter_mut().enumerate() {
            let (b, e) = (k / BLOCK, k % BLOCK);
            *t = decode(src[b * BLOCK_BYTES + e % 64], (e / 64) as u32) as i8 - 1;
        }
    }
    out
}

/// Whether `byte` is one of the 243 encodings [`encode5`] produces.
pub fn is_valid_byte(byte: u8) -> bool {
    // The encoding is ceil(v·256/243); v is recovered as floor(byte·243/256) and must map back.
    let v = (byte as u16 * 243) >> 8;
    ((v * 256).div_ceil(243)) as u8 == byte
}

/// Rejects bytes that are no base-3 group.
pub fn validate(data: &[u8], _rows: usize, _cols: usize) -> Result<()> {
    match data.iter().position(|&b| !is_valid_byte(b)) {
        Some(byte) => {
            Err(Error::BadTritByte { format: TernaryFormat::B3, byte, value: data[byte] })
        }
        None => Ok(()),
    }
}

const fn decode_const(byte: u8, n: u32) -> u8 {
    let q = byte.wrapping_mul(3u8.pow(n));
    ((q as u16 * 3) >> 8) as u8
}

const fn tables() -> ([u8; 256], [u8; 256]) {
    let mut quad = [0u8; 256];
    let mut last = [0u8; 256];
    let mut v = 0;
    while v < 256 {
        let b = v as u8;
        quad[v] = decode_const(b, 0)
            | (decode_const(b, 1) << 2)
            | (decode_const(b, 2) << 4)
            | (decode_const(b, 3) << 6);
        last[v] = decode_const(b, 4);
        v += 1;
    }
    (quad, last)
}

/// For each byte value: codes of trits 0-3 packed as one T2 byte (bits `[1:0]` = trit 0).
pub static QUAD_CODES: [u8; 256] = tables().0;
/// For each byte value: the code of trit 4.
pub static LAST_CODES: [u8; 256] = tables().1;
