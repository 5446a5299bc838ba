//! llama.cpp TQ1_0: blocks of 256 weights along a row: `qs[48]`, `qh[4]`, f16 `d`
//! (54 bytes, 1.6875 bpw). Bytes hold base-3 groups, first trit most significant, stored
//! as `ceil(v·256/243)` so trit n decodes without division as `((b·3ⁿ mod 256)·3) >> 8`.
//! `qs[m]` (m < 32) holds elements m + 32n (n = 0..5); `qs[32 + m]` (m < 16) holds
//! 160 + m + 16n; `qh[j]` holds 240 + j + 4n (n = 0..4, fifth trit 0).

use super::TernaryFormat;
use crate::error::{Error, Result};
use half::f16;

/// Bytes per 256-weight block.
pub const BLOCK_BYTES: usize = 54;

/// Encodes five codes (0..=2, first most significant) as a division-free base-3 byte.
#[inline]
pub fn encode5(codes: [u8; 5]) -> u8 {
    let v = codes.iter().fold(0u16, |v, &c| v * 3 + c as u16);
    ((v * 256).div_ceil(243)) as u8
}

/// Decodes code n (0 = most significant) of a base-3 byte.
#[inline]
pub fn decode(byte: u8, n: u32) -> u8 {
    let q = byte.wrapping_mul(3u8.pow(n));
    ((q as u16 * 3) >> 8) as u8
}

/// Element index (within the block) of trit n of byte `byte` of `qs ++ qh`.
#[inline]
fn element(byte: usize, n: usize) -> Option<usize> {
    match byte {
        0..32 => Some(byte + 32 * n),
        32..48 => Some(160 + (byte - 32) + 16 * n),
        _ if n < 4 => Some(240 + (byte - 48) + 4 * n),
        _ => None,
    }
}

/// Packs row-major trits with `scale` as every block's `d`.
pub fn pack(trits: &[i8], rows: usize, cols: usize, scale: f32) -> Vec<u8> {
    let mut out = Vec::with_capacity(rows * cols / 256 * BLOCK_BYTES);
    let d = f16::from_f32(scale).to_le_bytes();
    for block in trits.chunks_exact(256) {
        for byte in 0..52 {
            let mut codes = [0u8; 5];
            for (n, c) in codes.iter_mut().enumerate() {
                if let Some(e) = element(byte, n) {
                    *c = (block[e] + 1) as u8;
                }
            }
            out.push(encode5(codes));
        }
        out.extend_from_slice(&d);
    }
    out
}

/// Unpacks to row-major trits (block scales are not applied).
pub fn unpack(data: &[u8], rows: usize, cols: usize) -> Vec<i8> {
    let mut out = vec![0i8; rows * cols];
    for (block, bytes) in out.chunks_exact_mut(256).zip(data.chunks_exact(BLOCK_BYTES)) {
        for (byte, &b) in bytes[..52].iter().enumerate() {
            for n in 0..5 {
                if let Some(e) = element(byte, n) {
                    block[e] = decode(b, n as u32) as i8 - 1;
                }
            }
        }
    }
    out
}

/// The f32 value of block `b`'s `d`.
pub fn block_scale(data: &[u8], b: usize) -> f32 {
    let at = b * BLOCK_BYTES + 52;
    f16::from_le_bytes([data[at], data[at + 1]]).to_f32()
}

/// Every byte decodes to valid trits; only the block scales can be wrong.
pub fn validate(data: &[u8], rows: usize, cols: usize) -> Result<()> {
    for b in 0..rows * cols / 256 {
        let d = block_scale(data, b);
        if !d.is_finite() || d < 0.0 {
            return Err(Error::BadScale(d));
        }
    }
    let _ = TernaryFormat::Tq1_0;
    Ok(())
}
