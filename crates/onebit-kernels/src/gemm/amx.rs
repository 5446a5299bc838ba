//! AMX-INT8 GEMM for prefill on CPUs with Advanced Matrix Extensions (Intel Sapphire Rapids
//! and later): one `tdp*` instruction multiplies two 16 × 64 int8 tiles (16 384 MACs) into a
//! 16 × 16 i32 accumulator tile; blocks keep four accumulator tiles.
//!
//! Rust's AMX intrinsics are still unstable, so the handful of tile instructions are inline
//! assembly (stable), fenced in this file. Linux hands out the tile state only on request
//! (`arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`), made once per process.
//!
//! Prompts and batches over 16 tokens (`prompt`): the activations are the A operand, read by
//! `tileloadd` where they lie (16 token rows at the activation stride), and each 32-row block
//! of codes is decoded and packed into the VNNI B layout (row kk of a tile holds, for each of
//! 16 weight rows, the codes k = 4kk..4kk+4) once per chunk of tokens; a 32-token × 32-row
//! block (`tdpbsud`, signed activations × unsigned codes) then writes each token's outputs as
//! a contiguous run of rows. Decode steps of 12-16 sequences (`decode_step`): 64 rows × one
//! token tile, the token tile packed as B and one format block of the 64 rows decoded at a
//! time into an L1-sized buffer. Tile registers are not renamed and tile loads are slow next
//! to `tdp*` (measured here: 7 ns per `tdpbusd` alone, 20-40 ns per tile load), so the blocks
//! are shaped to load as few tiles per product as the accumulators allow.

use super::avx512::{decode_b3, decode_t2};
use crate::aligned::AlignedBuf;
use crate::format::{b3, t2};
use crate::gemv::MatmulArgs;
use crate::quant::dequant_factor;
use std::arch::asm;
use std::arch::x86_64::{
    __m512i, __mmask16, _mm512_mask_i32gather_epi32, _mm512_mullo_epi32, _mm512_set1_epi32,
    _mm512_setr_epi32, _mm512_setzero_si512, _mm512_storeu_si512, _mm_prefetch, _MM_HINT_T0,
};
use std::cell::RefCell;
use std::sync::OnceLock;

thread_local! {
    static BUFS: RefCell<(AlignedBuf<u8>, AlignedBuf<u8>)> =
        const { RefCell::new((AlignedBuf::empty(), AlignedBuf::empty())) };
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

/// Tiles 0-3: accumulators; 4-7: operands. All 16 rows × 64 bytes.
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

/// Tokens per chunk of a prompt, so that the chunk's activations (tokens × K) stay near 1 MB.
fn token_chunk(k: usize) -> usize {
    ((1 << 20) / k).clamp(32, 4096) / 32 * 32
}

/// Packs tokens `t0..t0+n` of `a.act` into VNNI B tiles, tile (tb, kb) at
/// `(tb·kblocks + kb)·1024`, the tokens of a partial last tile zero.
fn pack_acts(a: &MatmulArgs<'_>, t0: usize, n: usize, k: usize, out: &mut [u8]) {
    // SAFETY: AMX implies AVX-512F (checked in `available`).
    unsafe { pack_tiles(bytes(&a.act[t0 * a.act_stride..]), a.act_stride, n, k, out) };
}

/// The bytes of int8 data (tile loads read either the same way).
pub(crate) fn bytes(v: &[i8]) -> &[u8] {
    // SAFETY: i8 and u8 have the same size, alignment and validity.
    unsafe { std::slice::from_raw_parts(v.as_ptr() as *const u8, v.len()) }
}

/// Packs `n` rows of `k` bytes (row j at `src[j·stride..]`) into VNNI B tiles, tile (tb, kb)
/// at `(tb·kblocks + kb)·1024`: row kk of a tile holds, for each of its 16 rows, the bytes
/// 4kk..4kk + 4 of the block, one masked 16-lane gather per tile row (rows of a partial
/// last tile zero). A byte loop here cost more than the products on K = 2560.
///
/// # Safety
/// AVX-512F.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn pack_tiles(src: &[u8], stride: usize, n: usize, k: usize, out: &mut [u8]) {
    let (kblocks, tiles) = (k / 64, n.div_ceil(16));
    assert!(k.is_multiple_of(64) && out.len() >= tiles * kblocks * 1024, "pack_tiles: sizes");
    assert!(n == 0 || src.len() >= (n - 1) * stride + k, "pack_tiles: rows");
    i32::try_from(15 * stride).expect("pack_tiles: row stride under 128 MiB");
    let lanes = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    let offsets = _mm512_mullo_epi32(lanes, _mm512_set1_epi32(stride as i32));
    for tb in 0..tiles {
        let live = (n - 16 * tb).min(16);
        let mask: __mmask16 = if live == 16 { !0 } else { (1 << live) - 1 };
        for kb in 0..kblocks {
            for kk in 0..16 {
                // SAFETY: live lane j reads 4 bytes of row 16tb + j < n at kb·64 + 4kk < k
                // (asserted inside `src`); masked lanes read nothing; the store writes 64
                // bytes of tile (tb, kb) inside `out` (asserted).
                unsafe {
                    let base = src.as_ptr().add(16 * tb * stride + kb * 64 + 4 * kk);
                    let z = _mm512_setzero_si512();
                    let v = _mm512_mask_i32gather_epi32::<1>(z, mask, offsets, base as *const i32);
                    let dst = out.as_mut_ptr().add((tb * kblocks + kb) * 1024 + kk * 64);
                    _mm512_storeu_si512(dst as *mut __m512i, v);
                }
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

/// One k block of [`block`] with the dot-product instruction `$op`: A tiles from `$a0`/`$a1`
/// (16 rows `$s` bytes apart), B tiles from `$b0`/`$b1`, into accumulators 0-3.
macro_rules! block_step {
    ($op:literal, $a0:expr, $a1:expr, $s:expr, $b0:expr, $b1:expr) => {
        asm!(
            "tileloadd tmm4, [{a0} + {s}*1]",
            "tileloadd tmm6, [{b0} + {bs}*1]",
            "tileloadd tmm7, [{b1} + {bs}*1]",
            concat!($op, " tmm0, tmm4, tmm6"),
            "tileloadd tmm5, [{a1} + {s}*1]",
            concat!($op, " tmm1, tmm4, tmm7"),
            concat!($op, " tmm2, tmm5, tmm6"),
            concat!($op, " tmm3, tmm5, tmm7"),
            a0 = in(reg) $a0,
            a1 = in(reg) $a1,
            b0 = in(reg) $b0,
            b1 = in(reg) $b1,
            s = in(reg) $s,
            bs = in(reg) 64usize,
            options(nostack, readonly)
        )
    };
}

/// A 32 × 32 block over the whole reduction, stored to `c` as four 16 × 16 i32 tiles (tile
/// 2i + j: A rows 16i.. × B columns 16j..). A: two 16-row tiles read in place from `a0` and
/// `a1`, rows `astride` bytes apart; B: two packed tile columns, `b0` and `b1`, `kblocks`
/// tiles of 1024 bytes each. Codes as A and packed activations as B take `tdpbusd`
/// (unsigned × signed); activations as A and packed codes as B (`acts_a`) take `tdpbsud`.
///
/// # Safety
/// Tile config loaded; `a0` and `a1` each have 16 rows of `astride` bytes with
/// `kblocks` · 64 readable; `b0` and `b1` have `kblocks` tiles of 1024 bytes.
unsafe fn block(
    (a0, a1, astride): (*const u8, *const u8, usize),
    (b0, b1): (*const u8, *const u8),
    kblocks: usize,
    acts_a: bool,
    c: &mut [i32; 1024],
) {
    // SAFETY: tile instructions on tiles configured by the caller; every load reads 16 rows
    // of 64 bytes inside the buffers described in the contract; stores write inside `c`.
    unsafe {
        zero4();
        for kb in 0..kblocks {
            let (a0, a1) = (a0.add(kb * 64), a1.add(kb * 64));
            let (b0, b1) = (b0.add(kb * 1024), b1.add(kb * 1024));
            if acts_a {
                block_step!("tdpbsud", a0, a1, astride, b0, b1);
            } else {
                block_step!("tdpbusd", a0, a1, astride, b0, b1);
            }
        }
        store4(c);
    }
}

/// The two 16-row A tiles of 32 rows `stride` bytes apart in `buf`.
fn rows_of(buf: &[u8], stride: usize) -> (*const u8, *const u8, usize) {
    (buf.as_ptr(), buf[16 * stride..].as_ptr(), stride)
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
    BUFS.with(|bufs| {
        let mut bufs = bufs.borrow_mut();
        let (codes, packed) = &mut *bufs;
        // SAFETY: AMX is available (this kernel is only dispatched then); released below.
        unsafe { load_config() };
        if a.tokens <= 16 {
            decode_step(a, r0, r1, (block_w, block_bytes), &decode, cstride, codes, packed);
        } else {
            prompt(a, r0, r1, &decode, cstride, codes, packed);
        }
        // SAFETY: loaded above on this thread.
        unsafe { release() };
    })
}

/// One token tile (a decode step of ≤ 16 sequences): 64 rows × 16 tokens, the codes of one
/// format block at a time decoded into an L1-sized buffer.
#[allow(clippy::too_many_arguments)]
fn decode_step(
    a: &MatmulArgs<'_>,
    r0: usize,
    r1: usize,
    fmt: (usize, usize),
    decode: &impl Fn(&[u8], &mut [u8]),
    cstride: usize,
    codes: &mut AlignedBuf<u8>,
    packed: &mut AlignedBuf<u8>,
) {
    let codes = codes.scratch(64 * fmt.0);
    let packed = packed.scratch(16 * cstride);
    pack_acts(a, 0, a.tokens, cstride, packed);
    let mut c = [0i32; 1024];
    let mut r = r0;
    while r < r1 {
        let rows = 64.min(r1 - r);
        // SAFETY: the caller loaded the config; `codes` holds 64 rows of one block, `packed`
        // the token tile.
        unsafe { fused_r4(a, r, rows, fmt, decode, codes, packed, &mut c) };
        store_tiles(a, &c, (r, rows), (0, a.tokens), false, |ti| (16 * ti, 0));
        r += rows;
    }
}

/// From this many tokens a prompt reads its activations in place and packs each row block's
/// codes; below, it packs the few tokens once and reads the codes in place (both in
/// [`prompt`]). Measured on the 2B4T shapes and the training shapes (K = 256, 688), 2
/// threads, Xeon with AMX: at 128 tokens the packed activations were ahead (2560 × 2560:
/// 1.90-1.96 ms vs 1.97-2.00), at 512 the in-place ones (6.80-8.06 ms vs 7.93-8.36; 688 × 256:
/// 0.36 vs 0.45).
pub const IN_PLACE_MIN_TOKENS: usize = 256;

/// Decodes rows `r..r + rows` (≤ 32) into `codes` (32 rows of `cstride` bytes, the rest 0).
fn decode_rows(
    a: &MatmulArgs<'_>,
    r: usize,
    rows: usize,
    decode: &impl Fn(&[u8], &mut [u8]),
    cstride: usize,
    codes: &mut [u8],
) {
    for (i, dst) in codes.chunks_exact_mut(cstride).take(32).enumerate() {
        if i < rows {
            decode(&a.w[(r + i) * a.row_bytes..(r + i + 1) * a.row_bytes], dst);
        } else {
            dst.fill(0);
        }
    }
}

/// Prompts and batches of more than 16 tokens: 32 × 32 blocks over the whole reduction,
/// each 32-row block of codes decoded once per chunk of tokens. Below
/// [`IN_PLACE_MIN_TOKENS`] the codes are the A operand, read in place, and the chunk's
/// activations are packed as B tiles once. From it the activations are the A operand, read
/// where they lie (16 token rows at the activation stride), and each row block's codes are
/// packed as B tiles instead: nothing proportional to the tokens is copied per thread, and
/// each token's outputs are stored as one contiguous run. There the chunk is sized so its
/// activations stay in L2 while every row block passes over them, and tokens past the last
/// whole 32 are copied into a zeroed 32-row buffer (a tile load reads 16 whole rows).
fn prompt(
    a: &MatmulArgs<'_>,
    r0: usize,
    r1: usize,
    decode: &impl Fn(&[u8], &mut [u8]),
    cstride: usize,
    codes: &mut AlignedBuf<u8>,
    packed: &mut AlignedBuf<u8>,
) {
    let kblocks = cstride / 64;
    let in_place = a.tokens >= IN_PLACE_MIN_TOKENS;
    let chunk = if in_place { token_chunk(cstride) } else { token_chunk(cstride).min(256) };
    let codes = codes.scratch(32 * cstride);
    let wt_len = 2 * kblocks * 1024;
    let packed = packed.scratch(if in_place { wt_len + 32 * cstride } else { chunk * cstride });
    let whole = a.tokens / 32 * 32;
    if in_place {
        let tail = &mut packed[wt_len..];
        tail.fill(0);
        for (j, dst) in tail.chunks_exact_mut(cstride).take(a.tokens - whole).enumerate() {
            let src = &a.act[(whole + j) * a.act_stride..][..cstride];
            dst.iter_mut().zip(src).for_each(|(d, &v)| *d = v as u8);
        }
    }
    let mut c = [0i32; 1024];
    for t0 in (0..a.tokens).step_by(chunk) {
        let n = chunk.min(a.tokens - t0);
        if !in_place {
            pack_acts(a, t0, n, cstride, packed);
        }
        let mut r = r0;
        while r < r1 {
            let rows = 32.min(r1 - r);
            decode_rows(a, r, rows, decode, cstride, codes);
            if in_place {
                let (wt, tail) = packed.split_at_mut(wt_len);
                // SAFETY: AMX implies AVX-512F (checked in `available`).
                unsafe { pack_tiles(codes, cstride, 32, cstride, wt) };
                for t in (t0..t0 + n).step_by(32) {
                    let (p, stride) = if t < whole {
                        (a.act[t * a.act_stride..].as_ptr() as *const u8, a.act_stride)
                    } else {
                        (tail.as_ptr(), cstride)
                    };
                    // SAFETY: config loaded by the caller; `p` has 32 rows of `stride` bytes
                    // with `cstride` readable (whole tokens: rows t..t + 32 of the activations,
                    // whose stride is at least `cstride`; the rest: the 32-row tail copy); `wt`
                    // holds the two 16-row halves' `kblocks` tiles.
                    unsafe {
                        let w = (wt.as_ptr(), wt[kblocks * 1024..].as_ptr());
                        block((p, p.add(16 * stride), stride), w, kblocks, true, &mut c)
                    };
                    let n = (a.tokens - t).min(32);
                    store_tiles(a, &c, (r, rows), (t, n), true, |ti| {
                        (16 * (ti % 2), 16 * (ti / 2))
                    });
                }
            } else {
                let tiles = n.div_ceil(16);
                for tb in (0..tiles).step_by(2) {
                    let b0 = packed[tb * kblocks * 1024..].as_ptr();
                    // An odd last token tile pairs with tile tb again; its results are ignored.
                    let b1 = if tb + 1 < tiles {
                        packed[(tb + 1) * kblocks * 1024..].as_ptr()
                    } else {
                        b0
                    };
                    // SAFETY: config loaded by the caller; codes holds 32 rows; packed these
                    // tiles.
                    unsafe { block(rows_of(codes, cstride), (b0, b1), kblocks, false, &mut c) };
                    store_tiles(a, &c, (r, rows), (t0, n), false, |ti| {
                        (16 * (ti / 2), tb * 16 + 16 * (ti % 2))
                    });
                }
            }
            r += rows;
        }
    }
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

/// Writes the four 16 × 16 accumulator tiles of a [`block`] (tile `ti` at rows / tokens
/// `at(ti)` relative to `r` / `t0`) as outputs, removing the codes' +1 offset. A tile's rows
/// are tokens when the activations were the A operand (`acts_a`: each token's outputs are
/// one contiguous run), weight rows otherwise.
fn store_tiles(
    a: &MatmulArgs<'_>,
    c: &[i32; 1024],
    (r, rows): (usize, usize),
    (t0, n): (usize, usize),
    acts_a: bool,
    at: impl Fn(usize) -> (usize, usize),
) {
    for ti in 0..4 {
        let (rbase, tbase) = at(ti);
        let mrows = 16.min(rows.saturating_sub(rbase));
        for col in 0..16.min(n.saturating_sub(tbase)) {
            let t = t0 + tbase + col;
            let (sum, f) = (a.act_sum[t], dequant_factor(a.act_scale[t], a.w_scale));
            if acts_a {
                let accs = &c[ti * 256 + col * 16..][..mrows];
                // SAFETY: rows r + rbase.. + mrows are in this call's row range, t < tokens.
                unsafe { a.store_run(t, r + rbase, accs, sum, f) };
                continue;
            }
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
