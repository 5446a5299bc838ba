//! The MAD family for many tokens (prefill, training): each group of rows is decoded once
//! into plain codes (one byte per weight, w + 1), then a register tile of rows × tokens
//! multiply-adds codes against activations, so the decode cost is shared by every token.
//! Decoded codes live in a per-thread buffer that grows once and is then reused, on a cache
//! line ([`AlignedBuf`]).

#[cfg(target_arch = "x86_64")]
pub(crate) mod amx;
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2;
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512;

use crate::aligned::AlignedBuf;
use crate::format::{b3, t2};
use std::cell::RefCell;

thread_local! {
    static CODES: RefCell<AlignedBuf<u8>> = const { RefCell::new(AlignedBuf::empty()) };
}

/// Runs `f` with this thread's code buffer of at least `len` bytes.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) fn with_codes<R>(len: usize, f: impl FnOnce(&mut [u8]) -> R) -> R {
    CODES.with(|c| f(c.borrow_mut().scratch(len)))
}

/// Scalar decode of one T2 row into codes (`out.len()` = blocks · 256).
pub fn decode_t2_row(row: &[u8], out: &mut [u8]) {
    for (blk, dst) in row.chunks_exact(t2::BLOCK_BYTES).zip(out.chunks_exact_mut(t2::BLOCK)) {
        for (j, &byte) in blk.iter().enumerate() {
            for i in 0..4 {
                dst[64 * i + j] = (byte >> (2 * i)) & 3;
            }
        }
    }
}

/// Scalar decode of one B3 row into codes (`out.len()` = blocks · 320).
pub fn decode_b3_row(row: &[u8], out: &mut [u8]) {
    for (blk, dst) in row.chunks_exact(b3::BLOCK_BYTES).zip(out.chunks_exact_mut(b3::BLOCK)) {
        for (j, &byte) in blk.iter().enumerate() {
            let quad = b3::QUAD_CODES[byte as usize];
            for i in 0..4 {
                dst[64 * i + j] = (quad >> (2 * i)) & 3;
            }
            dst[256 + j] = b3::LAST_CODES[byte as usize];
        }
    }
}
