//! AMX-INT8 GEMM for prefill on CPUs with Advanced Matrix Extensions (Intel Sapphire Rapids
//! and later): one `tdpbusd` multiplies a 16×64 tile of unsigned codes by a 64×16 tile of
//! signed activations (16 384 MACs). A 32-row × 32-token block keeps four accumulator tiles.
//!
//! Rust's AMX intrinsics are still unstable, so the handful of tile instructions are inline
//! assembly (stable), fenced in this file. Linux hands out the tile state only on request
//! (`arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`), made once per process.
//!
//! Activations are repacked per chunk of tokens into the VNNI tile layout (row kk of a B tile
//! holds, for each of 16 tokens, the 4 activations k = 4kk..4kk+4). Prompts: codes are decoded
//! per 32-row block into a per-thread buffer and read by `tileloadd` straight from there,
//! every pair of token tiles reusing them. Decode steps of 12-16 sequences: 64 rows × one
//! token tile, one format block of the 64 rows decoded at a time into an L1-sized buffer.
//! Tile registers are not renamed and tile loads are slow next to `tdp*` (measured here:
//! 7 ns per `tdpbusd` alone, 20-40 ns per tile load), so the blocks are shaped to load as
//! few tiles per product as the accumulators allow.

use super::avx512::{decode_b3, decode_t2};
use crate::format::{b3, t2};
use crate::gemv::MatmulArgs;
use crate::quant::dequant_factor;
use std::arch::asm;
use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
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
    pack_tiles(|j| &a.act[(t0 + j) * a.act_stride..][..k], n, k, out);
}

/// Packs `n` rows of `k` int8 activations (`row(j)`) into VNNI B tiles, tile (tb, kb) at
/// `(tb·kblocks + kb)·1024`, the tokens of a partial last tile zero.
pub(crate) fn pack_tiles<'a>(row: impl Fn(usize) -> &'a [i8], n: usize, k: usize, out: &mut [u8]) {
    let kblocks = k / 64;
    // Only the token tiles this chunk uses are read: clear those, not the whole buffer.
    out[..n.div_ceil(16) * kblocks * 1024].fill(0);
    for j in 0..n {
        let (tb, col) = (j / 16, j % 16);
        let src = row(j);
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

/// Loads this crate's tile configuration (8 tiles of 16 rows × 64 bytes).
///
/// # Safety
/// [`available`] returned true; pair with [`release`] on the same thread.
pub(crate) unsafe fn load_config() {
    // SAFETY: TILE_CONFIG is a valid palette-1 configuration, 64-byte aligned.
    unsafe { asm!("ldtilecfg [{}]", in(reg) TILE_CONFIG.0.as_ptr(), options(nostack, readonly)) };
}

/// Releases this thread's tile state.
///
/// # Safety
/// After [`load_config`] on this thread.
pub(crate) unsafe fn release() {
    // SAFETY: register-only.
    unsafe { asm!("tilerelease", options(nostack, nomem)) };
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
        zero4();
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
        store4(c);
    }
}

/// Zeroes accumulator tiles 0-3.
///
/// # Safety
/// Tile config loaded.
pub(crate) unsafe fn zero4() {
    // SAFETY: register-only tile instructions.
    unsafe {
        asm!(
            "tilezero tmm0",
            "tilezero tmm1",
            "tilezero tmm2",
            "tilezero tmm3",
            options(nostack, nomem)
        )
    };
}

/// One k block of [`steps_r4`] with the dot-product instruction `$op`: the activation tile
/// into tmm6, the four row tiles through tmm4, tmm5, tmm7, tmm4 into accumulators 0-3.
macro_rules! r4_step {
    ($op:literal, $a0:expr, $astride:expr, $b:expr) => {
        asm!(
            "tileloadd tmm6, [{b} + {bs}*1]",
            "tileloadd tmm4, [{a0} + {s}*1]",
            "tileloadd tmm5, [{a1} + {s}*1]",
            concat!($op, " tmm0, tmm4, tmm6"),
            "tileloadd tmm7, [{a2} + {s}*1]",
            concat!($op, " tmm1, tmm5, tmm6"),
            "tileloadd tmm4, [{a3} + {s}*1]",
            concat!($op, " tmm2, tmm7, tmm6"),
            concat!($op, " tmm3, tmm4, tmm6"),
            a0 = in(reg) $a0,
            a1 = in(reg) $a0.add(16 * $astride),
            a2 = in(reg) $a0.add(32 * $astride),
            a3 = in(reg) $a0.add(48 * $astride),
            b = in(reg) $b,
            s = in(reg) $astride,
            bs = in(reg) 64usize,
            options(nostack, readonly)
        )
    };
}

/// Adds `kblocks` steps of 64 rows × 16 tokens to accumulator tiles 0-3 (row tile i in
/// tile i): four row tiles share each activation tile, so no multiply is spent on padding
/// when a decode step has 16 tokens or fewer (a 32 × 32 block would run half its products
/// on a zero tile). `signed` picks `tdpbssd` (int8 × int8) over `tdpbusd` (codes × int8).
///
/// # Safety
/// Tile config loaded; `a` has 64 rows of `astride` bytes, `kblocks` · 64 of them read;
/// `b` has `kblocks` tiles of 1024 bytes.
pub(crate) unsafe fn steps_r4(
    a: *const u8,
    astride: usize,
    b: *const u8,
    kblocks: usize,
    signed: bool,
) {
    // SAFETY: tile instructions on tiles configured by the caller; every load reads 16 rows
    // of 64 bytes inside the buffers described in the contract.
    unsafe {
        for kb in 0..kblocks {
            let a0 = a.add(kb * 64);
            if signed {
                r4_step!("tdpbssd", a0, astride, b.add(kb * 1024));
            } else {
                r4_step!("tdpbusd", a0, astride, b.add(kb * 1024));
            }
        }
    }
}

/// Stores accumulator tiles 0-3 to `c` (tile i at `c[256·i..]`, 16 rows of 16 i32).
///
/// # Safety
/// Tile config loaded.
pub(crate) unsafe fn store4(c: &mut [i32; 1024]) {
    let p = c.as_mut_ptr() as *mut u8;
    // SAFETY: four 1 KB stores inside `c`.
    unsafe {
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
    // One token tile (a decode step of ≤ 16 sequences): 64 rows × 16 tokens, the codes of
    // one format block at a time decoded into an L1-sized buffer; otherwise 32 rows ×
    // 32 tokens over whole decoded rows (reused by every pair of token tiles).
    let one_tile = a.tokens <= 16;
    BUFS.with(|bufs| {
        let mut bufs = bufs.borrow_mut();
        let (codes, packed) = &mut *bufs;
        codes.resize(if one_tile { 64 * block_w } else { 32 * cstride }, 0);
        packed.resize(chunk * cstride, 0);
        // SAFETY: AMX is available (this kernel is only dispatched then); released below.
        unsafe { load_config() };
        let mut c = [0i32; 1024];
        for t0 in (0..a.tokens).step_by(chunk) {
            let n = chunk.min(a.tokens - t0);
            pack_acts(a, t0, n, cstride, packed);
            let mut r = r0;
            while r < r1 {
                if one_tile {
                    let rows = 64.min(r1 - r);
                    let fmt = (block_w, block_bytes);
                    // SAFETY: config loaded above; `codes` holds 64 rows of one block, `packed`
                    // the token tile.
                    unsafe { fused_r4(a, r, rows, fmt, &decode, codes, packed, &mut c) };
                    store_tiles(a, &c, r, rows, t0, n, |ti| (16 * ti, 0));
                    r += rows;
                    continue;
                }
                let rows = 32.min(r1 - r);
                for i in 0..32 {
                    let dst = &mut codes[i * cstride..(i + 1) * cstride];
                    if i < rows {
                        decode(&a.w[(r + i) * a.row_bytes..(r + i + 1) * a.row_bytes], dst);
                    } else {
                        dst.fill(0);
                    }
                }
                let tiles = n.div_ceil(16);
                for tb in (0..tiles).step_by(2) {
                    let b0 = packed[tb * kblocks * 1024..].as_ptr();
                    // An odd last token tile pairs with an all-zero tile past the data: use tile 0's
                    // storage again and ignore its results.
                    let b1 = if tb + 1 < tiles {
                        packed[(tb + 1) * kblocks * 1024..].as_ptr()
                    } else {
                        b0
                    };
                    // SAFETY: config loaded above; codes holds 32 rows; packed holds these tiles.
                    unsafe { block(codes.as_ptr(), cstride, b0, b1, kblocks, &mut c) };
                    store_tiles(a, &c, r, rows, t0, n, |ti| {
                        (16 * (ti / 2), tb * 16 + 16 * (ti % 2))
                    });
                }
                r += rows;
            }
        }
        // SAFETY: loaded above on this thread.
        unsafe { release() };
    })
}

/// Rows `r..r + rows` (≤ 64) × the one token tile in `packed`, into `c`: each format block
/// of the 64 rows is decoded into `codes` (64 × `block_w` bytes, L1-resident) and multiplied
/// at once, so the codes are never written to and read back from L2.
///
/// # Safety
/// Tile config loaded; `codes` holds 64 × `fmt.0` bytes; `packed` holds the token tile of
/// every k block.
#[allow(clippy::too_many_arguments)]
unsafe fn fused_r4(
    a: &MatmulArgs<'_>,
    r: usize,
    rows: usize,
    (block_w, block_bytes): (usize, usize),
    decode: &impl Fn(&[u8], &mut [u8]),
    codes: &mut [u8],
    packed: &[u8],
    c: &mut [i32; 1024],
) {
    let per = block_w / 64;
    codes[rows * block_w..].fill(0);
    // SAFETY: the caller loaded the config.
    unsafe { zero4() };
    for g in 0..a.row_bytes / block_bytes {
        for i in 0..rows {
            let at = (r + i) * a.row_bytes + g * block_bytes;
            // 64 rows advance one block at a time: more streams than the hardware prefetcher
            // follows, so ask for each row's block a few groups ahead.
            let ahead = a.w.as_ptr().wrapping_add(at + PREFETCH_BLOCKS * block_bytes);
            // SAFETY: a prefetch is a hint and never faults, even past the slice.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(ahead as *const i8) };
            decode(&a.w[at..at + block_bytes], &mut codes[i * block_w..(i + 1) * block_w]);
        }
        let b = packed[g * per * 1024..].as_ptr();
        // SAFETY: codes holds 64 rows of `block_w` bytes; packed holds k blocks g·per.. of
        // the token tile.
        unsafe { steps_r4(codes.as_ptr(), block_w, b, per, false) };
    }
    // SAFETY: the caller loaded the config.
    unsafe { store4(c) };
}

/// How many format blocks ahead [`fused_r4`] prefetches each row.
const PREFETCH_BLOCKS: usize = 4;

/// Writes the four 16 × 16 accumulator tiles of `c` (tile `ti` at rows/tokens `at(ti)`
/// relative to `r` / `t0`) as outputs, removing the codes' +1 offset.
fn store_tiles(
    a: &MatmulArgs<'_>,
    c: &[i32; 1024],
    r: usize,
    rows: usize,
    t0: usize,
    n: usize,
    at: impl Fn(usize) -> (usize, usize),
) {
    for ti in 0..4 {
        let (rbase, tbase) = at(ti);
        let mrows = 16.min(rows.saturating_sub(rbase));
        for col in 0..16.min(n.saturating_sub(tbase)) {
            let t = t0 + tbase + col;
            let (sum, f) = (a.act_sum[t], dequant_factor(a.act_scale[t], a.w_scale));
            for m in 0..mrows {
                let acc = c[ti * 256 + m * 16 + col];
                // SAFETY: r + rbase + m is in this call's row range, t < tokens.
                unsafe { a.store_with(t, r + rbase + m, acc - sum, f) };
            }
        }
    }
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

/// Below this many tokens the AVX-512 VNNI register tile is faster than a mostly-padding
/// AMX token tile (2B4T-shaped aggregate decode, tok/s, 2 threads, Xeon with AMX, the 64 × 16
/// fused block, medians of alternating runs: 4 tokens AVX-512 49 vs AMX 40; 8 tokens AVX-512
/// 71 vs AMX 60; 12 tokens AMX 93 vs AVX-512 74, AMX ahead in 5 of 5 pairs).
pub const AMX_MIN_TOKENS: usize = 12;

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
