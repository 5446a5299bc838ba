//! NEON lookup-table kernel: `vqtbl1q_u8` is a 16-entry byte table lookup, the same job
//! `vpshufb` does on x86. Per pair, one 16-byte load gives 32 rows' indices; four lookups
//! fetch low and high table bytes for rows 0-15 and 16-31, and `vzip` joins them into i16.
//! i16 partial sums are widened every 64 pairs (64 · 256 < 2¹⁵).

use super::TABLE_BYTES;
use crate::format::lut::PAIR_BYTES;
use crate::gemv::MatmulArgs;
use std::arch::aarch64::*;

const FLUSH: usize = 64;

/// Σ t·q for the 32 rows of one tile.
///
/// # Safety
/// `tile` has `pairs·16` bytes and `tables` `pairs·32`.
#[target_feature(enable = "neon")]
#[inline]
unsafe fn tile_sums(tile: *const u8, tables: *const u8, pairs: usize) -> [i32; 32] {
    let nib = vdupq_n_u8(15);
    let mut acc32 = [vdupq_n_s32(0); 8];
    let mut g = 0;
    while g < pairs {
        let end = pairs.min(g + FLUSH);
        let mut s = [vdupq_n_s16(0); 4];
        while g < end {
            // SAFETY: g < pairs, in bounds by the caller's contract.
            let (x, tl, th) = unsafe {
                (
                    vld1q_u8(tile.add(g * PAIR_BYTES)),
                    vld1q_u8(tables.add(g * TABLE_BYTES)),
                    vld1q_u8(tables.add(g * TABLE_BYTES + 16)),
                )
            };
            let (lo, hi) = (vandq_u8(x, nib), vshrq_n_u8::<4>(x));
            for (half, idx) in [lo, hi].into_iter().enumerate() {
                let (l, h) = (vqtbl1q_u8(tl, idx), vqtbl1q_u8(th, idx));
                let a = vreinterpretq_s16_u8(vzip1q_u8(l, h));
                let b = vreinterpretq_s16_u8(vzip2q_u8(l, h));
                s[2 * half] = vaddq_s16(s[2 * half], a);
                s[2 * half + 1] = vaddq_s16(s[2 * half + 1], b);
            }
            g += 1;
        }
        // s[0]: rows 0-7, s[1]: 8-15, s[2]: 16-23, s[3]: 24-31.
        for (i, v) in s.iter().enumerate() {
            acc32[2 * i] = vaddw_s16(acc32[2 * i], vget_low_s16(*v));
            acc32[2 * i + 1] = vaddw_high_s16(acc32[2 * i + 1], *v);
        }
    }
    let mut out = [0i32; 32];
    for (i, v) in acc32.iter().enumerate() {
        // SAFETY: out has 32 i32; each store writes 4 at offset 4i.
        unsafe { vst1q_s32(out.as_mut_ptr().add(4 * i), *v) };
    }
    out
}

/// Lut layout, rows `r0..r1` (`r0` a multiple of 32).
///
/// # Safety
/// See [`crate::gemv::MatmulFn`]; the CPU has NEON.
pub unsafe fn lut(a: &MatmulArgs<'_>, r0: usize, r1: usize) {
    // SAFETY: forwarded contract; the caller guarantees the ISA of `tile_sums`.
    unsafe { super::by_tiles(a, r0, r1, tile_sums) }
}
