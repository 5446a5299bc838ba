//! NEON MAD kernels for aarch64, with and without the dot-product extension (`sdot`).
//!
//! Codes (0..=2) are multiplied as signed bytes. Without `sdot`, products are widened with
//! `vmull_s8`/`vmlal_high_s8` and pairwise-accumulated into i32; with it, one `sdot` per 16
//! codes. The `sdot` intrinsic is still unstable in Rust, so it is one instruction of inline
//! assembly here, used only from entry points that require the `dotprod` feature.

use super::MatmulArgs;
use crate::format::{b3, t2};
use std::arch::aarch64::*;
use std::arch::asm;

/// acc += Σ over groups of four of c·a, by widening multiplies.
#[target_feature(enable = "neon")]
#[inline]
fn mac_widen(acc: int32x4_t, c: int8x16_t, a: int8x16_t) -> int32x4_t {
    let p = vmull_s8(vget_low_s8(c), vget_low_s8(a));
    vpadalq_s16(acc, vmlal_high_s8(p, c, a))
}

/// acc += Σ over groups of four of c·a, with `sdot`.
///
/// # Safety
/// The CPU has the dotprod extension.
#[target_feature(enable = "neon")]
#[inline]
unsafe fn mac_sdot(acc: int32x4_t, c: int8x16_t, a: int8x16_t) -> int32x4_t {
    let mut acc = acc;
    // SAFETY: a register-only instruction; the caller guarantees dotprod.
    unsafe {
        asm!(
            ".arch_extension dotprod",
            "sdot {acc:v}.4s, {c:v}.16b, {a:v}.16b",
            acc = inout(vreg) acc,
            c = in(vreg) c,
            a = in(vreg) a,
            options(pure, nomem, nostack)
        );
    }
    acc
}

/// # Safety
/// `w + nb·64` and `act + nb·256` are readable; with DOT the CPU has dotprod.
#[target_feature(enable = "neon")]
#[inline]
unsafe fn t2_row<const DOT: bool>(w: *const u8, nb: usize, act: *const i8) -> i32 {
    let mask = vdupq_n_u8(3);
    let mut acc = vdupq_n_s32(0);
    for b in 0..nb {
        for q in 0..4 {
            // SAFETY: the caller guarantees nb blocks of weights.
            let v = unsafe { vld1q_u8(w.add(b * 64 + 16 * q)) };
            let codes = [
                vandq_u8(v, mask),
                vandq_u8(vshrq_n_u8::<2>(v), mask),
                vandq_u8(vshrq_n_u8::<4>(v), mask),
                vshrq_n_u8::<6>(v),
            ];
            for (i, c) in codes.iter().enumerate() {
                // SAFETY: the caller guarantees nb blocks of activations.
                let a = unsafe { vld1q_s8(act.add(b * t2::BLOCK + 64 * i + 16 * q)) };
                let c = vreinterpretq_s8_u8(*c);
                // SAFETY: DOT only where the caller guarantees dotprod.
                acc = if DOT { unsafe { mac_sdot(acc, c, a) } } else { mac_widen(acc, c, a) };
            }
        }
    }
    vaddvq_s32(acc)
}

/// # Safety
/// `w + nb·64` and `act + nb·320` are readable; with DOT the CPU has dotprod.
#[target_feature(enable = "neon")]
#[inline]
unsafe fn b3_row<const DOT: bool>(w: *const u8, nb: usize, act: *const i8) -> i32 {
    let (th1, th2, three) = (vdupq_n_u8(86), vdupq_n_u8(171), vdupq_n_u8(3));
    let mut acc = vdupq_n_s32(0);
    for b in 0..nb {
        for q in 0..4 {
            // SAFETY: the caller guarantees nb blocks of weights.
            let mut v = unsafe { vld1q_u8(w.add(b * 64 + 16 * q)) };
            for i in 0..5 {
                // trit = (v·3) >> 8 = [v ≥ 86] + [v ≥ 171]; masks are 0xFF, so negate their sum.
                let m = vaddq_u8(vcgeq_u8(v, th1), vcgeq_u8(v, th2));
                let c = vreinterpretq_s8_u8(vsubq_u8(vdupq_n_u8(0), m));
                // SAFETY: the caller guarantees nb blocks of activations.
                let a = unsafe { vld1q_s8(act.add(b * b3::BLOCK + 64 * i + 16 * q)) };
                // SAFETY: DOT only where the caller guarantees dotprod.
                acc = if DOT { unsafe { mac_sdot(acc, c, a) } } else { mac_widen(acc, c, a) };
                v = vmulq_u8(v, three);
            }
        }
    }
    vaddvq_s32(acc)
}

/// # Safety
/// See [`super::MatmulFn`]; with DOT the CPU has dotprod.
#[target_feature(enable = "neon")]
#[inline]
unsafe fn by_rows<const B3: bool, const DOT: bool>(a: &MatmulArgs<'_>, r0: usize, r1: usize) {
    let nb = a.row_bytes / 64;
    for t in 0..a.tokens {
        // SAFETY: dispatch checked the act and weight sizes.
        let act = unsafe { a.act.as_ptr().add(t * a.act_stride) };
        for r in r0..r1 {
            // SAFETY: row r exists and holds nb blocks; act holds nb blocks (padded).
            let s = unsafe {
                let w = a.w.as_ptr().add(r * a.row_bytes);
                if B3 {
                    b3_row::<DOT>(w, nb, act)
                } else {
                    t2_row::<DOT>(w, nb, act)
                }
            };
            // SAFETY: r in this call's range.
            unsafe { a.store(t, r, s - a.act_sum[t]) };
        }
    }
}

/// T2 with widening multiplies.
///
/// # Safety
/// See [`super::MatmulFn`].
#[target_feature(enable = "neon")]
pub unsafe fn t2(a: &MatmulArgs<'_>, r0: usize, r1: usize) {
    // SAFETY: forwarded contract.
    unsafe { by_rows::<false, false>(a, r0, r1) }
}

/// T2 with `sdot`.
///
/// # Safety
/// See [`super::MatmulFn`]; the CPU has the dotprod extension.
#[target_feature(enable = "neon,dotprod")]
pub unsafe fn t2_dot(a: &MatmulArgs<'_>, r0: usize, r1: usize) {
    // SAFETY: forwarded contract; dotprod is required of our caller.
    unsafe { by_rows::<false, true>(a, r0, r1) }
}

/// B3 with widening multiplies.
///
/// # Safety
/// See [`super::MatmulFn`].
#[target_feature(enable = "neon")]
pub unsafe fn b3(a: &MatmulArgs<'_>, r0: usize, r1: usize) {
    // SAFETY: forwarded contract.
    unsafe { by_rows::<true, false>(a, r0, r1) }
}

/// B3 with `sdot`.
///
/// # Safety
/// See [`super::MatmulFn`]; the CPU has the dotprod extension.
#[target_feature(enable = "neon,dotprod")]
pub unsafe fn b3_dot(a: &MatmulArgs<'_>, r0: usize, r1: usize) {
    // SAFETY: forwarded contract; dotprod is required of our caller.
    unsafe { by_rows::<true, true>(a, r0, r1) }
}
