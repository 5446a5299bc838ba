//! AMX-INT8 GEMM for prefill on CPUs with Advanced Matrix Extensions (Intel Sapphire Rapids
//! and later): one `tdpbusd` multiplies a 16×64 tile of unsigned codes by a 64×16 tile of
//! signed activations (16 384 MACs). A 32-row × 32-token block keeps four accumulator tiles.
//!
//! Rust's AMX intrinsics are still unstable, so the handful of tile instructions are inline
//! assembly (stable), fenced in this file. Linux hands out the tile state only on request
//! (`arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`), made once per process.
//!
//! Activations are repacked per chunk of tokens into the VNNI tile layout (row kk of a B tile
//! holds, for each of 16 tokens, the 4 activations k = 4kk..4kk+4), codes are decoded per
//! 32-row block into a per-thread buffer and read by `tileloadd` straight from there.

use super::avx512::{decode_b3, decode_t2};
use crate::format::{b3, t2};
use crate::gemv::MatmulArgs;
use crate::quant::dequant_factor;
use std::arch::asm;
use std::cell::RefCell;
use std::sync::OnceLock;

thread_local! {
    static BUFS: RefCell<(Vec<u8>, Vec<u8>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// Whether the CPU has AMX-TILE and AMX-INT8 and the OS granted the tile state.
pub fn available() -> bool {
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| {
        let r = std::arch::x86_64::__cpuid_count(7, 0);
        let (tile, int8) = ((r.edx >> 24) & 1 == 1, (r.edx >> 25) & 1 == 1);
        if !(tile && int8 && std::arch::is_x86_feature_detected!("avx512vnni")) {
            return false;
        }
        request_tile_permission()
    })
}

#[cfg(target_os = "linux")]
fn request_tile_permission() -> bool {
    const ARCH_REQ_XCOMP_PERM: i64 = 0x1023;
    const XFEATURE_XTILEDATA: i64 = 18;
    const SYS_ARCH_PRCTL: i64 = 158;
    let ret: i64;
    // SAFETY: the arch_prctl system call with a request that only widens this process's
    // permitted xsave features; it reads and writes no memory of ours.
    unsafe {
        asm!(
            "syscall",
            inlateout("rax") SYS_ARCH_PRCTL => ret,
            in("rdi") ARCH_REQ_XCOMP_PERM,
            in("rsi") XFEATURE_XTILEDATA,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack)
        );
    }
    ret == 0
}

#[cfg(not(target_os = "linux"))]
fn request_tile_permission() -> bool {
    false
}

/// Tiles 0-3: accumulators; 4-5: code rows; 6-7: activations. All 16 rows × 64 bytes.
#[repr(C, align(64))]
struct TileConfig([u8; 64]);

const TILE_CONFIG: TileConfig = {
    let mut c = [0u8; 64];
    c[0] = 1;
    let mut t = 0;
    while t < 8 {
        c[16 + 2 * t] = 64;
        c[48 + t] = 16;
        t += 1;
    }
    TileConfig(c)
};

/// Tokens per repacked activation chunk, so that chunk (tokens × K) stays near 1 MB.
fn token_chunk(k: usize) -> usize {
    ((1 << 20) / k).clamp(32, 256) / 32 * 32
}

/// Packs tokens `t0..t0+n` (n ≤ chunk, rest zero) of `a.act` into VNNI B tiles:
/// tile (tb, kb) at `(tb·kblocks + kb)·1024`.
fn pack_acts(a: &MatmulArgs<'_>, t0: usize, n: usize, k: usize, out: &mut [u8]) {
    let kblocks = k / 64;
    out.fill(0);
    for j in 0..n {
        let (tb, col) = (j / 16, j % 16);
        let src = &a.act[(t0 + j) * a.act_stride..][..k];
        for kb in 0..kblocks {
            let tile = &mut out[(tb * kblocks + kb) * 1024..][..1024];
            // Row kk of the tile takes this token's 4 activations k = 4kk..4kk+4 at column `col`.
            for (kk, quad) in src[kb * 64..kb * 64 + 64].chunks_exact(4).enumerate() {
                let at = kk * 64 + col * 4;
                tile[at..at + 4].copy_from_slice(&[
                    quad[0] as u8,
                    quad[1] as u8,
                    quad[2] as u8,
                    quad[3] as u8,
                ]);
            }
        }
    }
}

/// C[32 rows × 32 tokens] over the whole reduction; stores 4 tiles of 16×16 i32 to `c`.
///
/// # Safety
/// Tile config loaded; `codes` has 32 rows of `cstride` bytes; `b` has the two token
/// tiles' packs of `kblocks` tiles each.
unsafe fn block(
    codes: *const u8,
    cstride: usize,
    b0: *const u8,
    b1: *const u8,
    kblocks: usize,
    c: &mut [i32; 1024],
) {
    // SAFETY: tile instructions on tiles configured by the caller; every load reads 16 rows
    // of 64 bytes inside the buffers described in the contract; stores write inside `c`.
    unsafe {
        asm!(
            "tilezero tmm0",
            "tilezero tmm1",
            "tilezero tmm2",
            "tilezero tmm3",
            options(nostack, nomem)
        );
        for kb in 0..kblocks {
            asm!(
                "tileloadd tmm4, [{a0} + {s}*1]",
                "tileloadd tmm5, [{a1} + {s}*1]",
                "tileloadd tmm6, [{b0} + {bs}*1]",
                "tileloadd tmm7, [{b1} + {bs}*1]",
                "tdpbusd tmm0, tmm4, tmm6",
                "tdpbusd tmm1, tmm4, tmm7",
                "tdpbusd tmm2, tmm5, tmm6",
                "tdpbusd tmm3, tmm5, tmm7",
                a0 = in(reg) codes.add(kb * 64),
                a1 = in(reg) codes.add(16 * cstride + kb * 64),
                b0 = in(reg) b0.add(kb * 1024),
                b1 = in(reg) b1.add(kb * 1024),
                s = in(reg) cstride,
                bs = in(reg) 64usize,
                options(nostack, readonly)
            );
        }
        let p = c.as_mut_ptr() as *mut u8;
        asm!(
            "tilestored [{p0} + {s}*1], tmm0",
            "tilestored [{p1} + {s}*1], tmm1",
            "tilestored [{p2} + {s}*1], tmm2",
            "tilestored [{p3} + {s}*1], tmm3",
            p0 = in(reg) p,
            p1 = in(reg) p.add(1024),
            p2 = in(reg) p.add(2048),
            p3 = in(reg) p.add(3072),
            s = in(reg) 64usize,
            options(nostack)
        );
    }
}

fn gemm_with(
    a: &MatmulArgs<'_>,
    r0: usize,
    r1: usize,
    block_w: usize,
    block_bytes: usize,
    decode: impl Fn(&[u8], &mut [u8]),
) {
    let cstride = a.row_bytes / block_bytes * block_w;
    let kblocks = cstride / 64;
    let chunk = token_chunk(cstride);
    BUFS.with(|bufs| {
        let mut bufs = bufs.borrow_mut();
        let (codes, packed) = &mut *bufs;
        codes.resize(32 * cstride, 0);
        packed.resize(chunk * cstride, 0);
        // SAFETY: TILE_CONFIG is a valid palette-1 configuration, 64-byte aligned.
        unsafe {
            asm!("ldtilecfg [{}]", in(reg) TILE_CONFIG.0.as_ptr(), options(nostack, readonly))
        };
        let mut c = [0i32; 1024];
        for t0 in (0..a.tokens).step_by(chunk) {
            let n = chunk.min(a.tokens - t0);
            pack_acts(a, t0, n, cstride, packed);
            let mut r = r0;
            while r < r1 {
                let rows = 32.min(r1 - r);
                for i in 0..32 {
                    let dst = &mut codes[i * cstride..(i + 1) * cstride];
                    if i < rows {
                        decode(&a.w[(r + i) * a.row_bytes..(r + i + 1) * a.row_bytes], dst);
                    } else {
                        dst.fill(0);
                    }
                }
                for tb in (0..n.div_ceil(16)).step_by(2) {
                    let b0 = packed[tb * kblocks * 1024..].as_ptr();
                    // An odd last token tile pairs with an all-zero tile past the data: use tile 0's
                    // storage again and ignore its results.
                    let b1 = if tb + 1 < n.div_ceil(16) {
                        packed[(tb + 1) * kblocks * 1024..].as_ptr()
                    } else {
                        b0
                    };
                    // SAFETY: config loaded above; codes holds 32 rows; packed holds these tiles.
                    unsafe { block(codes.as_ptr(), cstride, b0, b1, kblocks, &mut c) };
                    for ti in 0..4 {
                        let (rbase, tbase) = (16 * (ti / 2), tb * 16 + 16 * (ti % 2));
                        let mrows = 16.min((r + rows).saturating_sub(r + rbase));
                        for col in 0..16.min(n.saturating_sub(tbase)) {
                            let t = t0 + tbase + col;
                            let (sum, f) =
                                (a.act_sum[t], dequant_factor(a.act_scale[t], a.w_scale));
                            for m in 0..mrows {
                                let acc = c[ti * 256 + m * 16 + col];
                                // SAFETY: r + rbase + m is in this call's row range, t < tokens.
                                unsafe { a.store_with(t, r + rbase + m, acc - sum, f) };
                            }
                        }
                    }
                }
                r += rows;
            }
        }
        // SAFETY: releases this thread's tile state.
        unsafe { asm!("tilerelease", options(nostack, nomem)) };
    })
}

/// T2 GEMM on AMX.
///
/// # Safety
/// See [`crate::gemv::MatmulFn`]; [`available`] returned true.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub unsafe fn t2(a: &MatmulArgs<'_>, r0: usize, r1: usize) {
    if a.tokens < AMX_MIN_TOKENS {
        // SAFETY: the AMX kernel is only available where the AVX-512 one is (dispatch).
        return unsafe { crate::gemm::avx512::t2(a, r0, r1) };
    }
    gemm_with(a, r0, r1, t2::BLOCK, t2::BLOCK_BYTES, |row, out| decode_t2(row, out))
}

/// Below this many tokens a 32-token AMX tile is mostly padding and decoding rows to int8
/// tiles costs more than it saves: the AVX-512 VNNI register tile is faster (measured on
/// the 2B4T shapes: 4 tokens 47 vs 28 tok/s aggregate decode, 16 tokens 74 vs 79).
pub const AMX_MIN_TOKENS: usize = 16;

/// B3 GEMM on AMX.
///
/// # Safety
/// See [`crate::gemv::MatmulFn`]; [`available`] returned true and the CPU has VBMI.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx512vbmi")]
pub unsafe fn b3(a: &MatmulArgs<'_>, r0: usize, r1: usize) {
    if a.tokens < AMX_MIN_TOKENS {
        // SAFETY: the AMX kernel is only available where the AVX-512 one is (dispatch).
        return unsafe { crate::gemm::avx512::b3(a, r0, r1) };
    }
    gemm_with(a, r0, r1, b3::BLOCK, b3::BLOCK_BYTES, |row, out| decode_b3(row, out))
}
