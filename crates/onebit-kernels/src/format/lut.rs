//! onebit Lut: the layout of the lookup-table kernel family (T-MAC / bitnet.cpp TL1 style).
//! Rows are grouped in tiles of 32 (the last tile padded with zero rows). Within a tile,
//! each pair of columns (2g, 2g+1) takes 16 bytes: byte j holds the 4-bit index of row j in
//! its low nibble and of row j+16 in its high nibble, index = 3·(w₀+1) + (w₁+1) ∈ 0..9.
//! One byte shuffle then looks up 32 rows at once in a 9-entry table of activation sums.

use super::TernaryFormat;
use crate::error::{Error, Result};

/// Rows per tile.
pub const TILE_ROWS: usize = 32;
/// Bytes per tile and column pair.
pub const PAIR_BYTES: usize = 16;

/// Bytes of one tile.
pub fn tile_bytes(cols: usize) -> usize {
    cols.div_ceil(2) * PAIR_BYTES
}

/// Total bytes.
pub fn packed_len(rows: usize, cols: usize) -> usize {
    rows.div_ceil(TILE_ROWS) * tile_bytes(cols)
}

/// Packs row-major trits.
pub fn pack(trits: &[i8], rows: usize, cols: usize) -> Vec<u8> {
    let tb = tile_bytes(cols);
    let mut out = vec![0u8; packed_len(rows, cols)];
    let at = |r: usize, k: usize| if r < rows && k < cols { trits[r * cols + k] } else { 0 };
    for (tile, dst) in out.chunks_exact_mut(tb).enumerate() {
        for (g, pair) in dst.chunks_exact_mut(PAIR_BYTES).enumerate() {
            for (j, byte) in pair.iter_mut().enumerate() {
                let idx = |r: usize| (3 * (at(r, 2 * g) + 1) + (at(r, 2 * g + 1) + 1)) as u8;
                let r = tile * TILE_ROWS + j;
                *byte = idx(r) | (idx(r + 16) << 4);
            }
        }
    }
    out
}

/// Unpacks to row-major trits.
pub fn unpack(data: &[u8], rows: usize, cols: usize) -> Vec<i8> {
    let tb = tile_bytes(cols);
    let mut out = vec![0i8; rows * cols];
    for r in 0..rows {
        let (tile, j) = (r / TILE_ROWS, r % TILE_ROWS);
        for k in 0..cols {
            let byte = data[tile * tb + (k / 2) * PAIR_BYTES + j % 16];
            let idx = if j < 16 { byte & 15 } else { byte >> 4 };
            let t = if k % 2 == 0 { idx / 3 } else { idx % 3 };
            out[r * cols + k] = t as i8 - 1;
        }
    }
    out
}

/// Rejects nibbles above 8.
pub fn validate(data: &[u8], _rows: usize, _cols: usize) -> Result<()> {
    match data.iter().position(|&b| (b & 15) > 8 || (b >> 4) > 8) {
        Some(byte) => Err(Error::BadCode { format: TernaryFormat::Lut, byte }),
        None => Ok(()),
    }
}
