//! The lookup-table kernel family (T-MAC, bitnet.cpp TL1 style): multiplication-free.
//! For each pair of activations (a₀, a₁) a 9-entry table holds every t₀·a₀ + t₁·a₁
//! (|·| ≤ 256, so i16, split into a low-byte and a high-byte table of 16 entries each);
//! the [`crate::format::lut`] layout gives 32 rows' 4-bit indices per pair, so one byte
//! shuffle looks up 32 rows at once. Tables are built per token into a per-thread buffer.

pub mod scalar;

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2;
#[cfg(target_arch = "aarch64")]
pub(crate) mod neon;

use std::cell::RefCell;

thread_local! {
    static TABLES: RefCell<crate::AlignedBuf<u8>> = const { RefCell::new(crate::AlignedBuf::empty()) };
}

/// Bytes of table per pair: 16 low bytes then 16 high bytes.
pub const TABLE_BYTES: usize = 32;

/// Builds the pair tables for one token's activations (`pairs` pairs) into `out`.
pub fn build_tables(act: &[i8], pairs: usize, out: &mut [u8]) {
    for g in 0..pairs {
        let (a0, a1) = (act[2 * g] as i16, act[2 * g + 1] as i16);
        let dst = &mut out[g * TABLE_BYTES..(g + 1) * TABLE_BYTES];
        dst.fill(0);
        for c0 in 0..3i16 {
            for c1 in 0..3i16 {
                let v = (c0 - 1) * a0 + (c1 - 1) * a1;
                let idx = (3 * c0 + c1) as usize;
                dst[idx] = v as u8;
                dst[16 + idx] = (v >> 8) as u8;
            }
        }
    }
}

/// Runs `f` with this thread's table buffer filled for `act`.
pub(crate) fn with_tables<R>(act: &[i8], pairs: usize, f: impl FnOnce(&[u8]) -> R) -> R {
    TABLES.with(|t| {
        let mut t = t.borrow_mut();
        let t = t.scratch(pairs * TABLE_BYTES);
        build_tables(act, pairs, t);
        f(t)
    })
}

/// Σ t·q for the 32 rows of one tile: `(tile, tables, pairs)`.
///
/// # Safety
/// `tile` has `pairs·16` bytes, `tables` `pairs·32`, and the CPU has the function's ISA.
pub(crate) type TileSumsFn = unsafe fn(*const u8, *const u8, usize) -> [i32; 32];

/// The shared tile loop of every lookup-table kernel: per token, build the tables, then
/// one `tile_sums` per 32-row tile of rows `r0..r1`.
///
/// # Safety
/// See [`crate::gemv::MatmulFn`]; `tile_sums` can run on this CPU.
#[inline(always)]
pub(crate) unsafe fn by_tiles(
    a: &crate::gemv::MatmulArgs<'_>,
    r0: usize,
    r1: usize,
    tile_sums: TileSumsFn,
) {
    use crate::format::lut::TILE_ROWS;
    let pairs = a.cols.div_ceil(2);
    for t in 0..a.tokens {
        let act = &a.act[t * a.act_stride..(t + 1) * a.act_stride];
        with_tables(act, pairs, |tables| {
            let mut r = r0;
            while r < r1 {
                let tile = r / TILE_ROWS;
                // SAFETY: dispatch checked w holds whole tiles; tables has pairs·32 bytes; the
                // caller guarantees the ISA.
                let s = unsafe {
                    tile_sums(a.w.as_ptr().add(tile * a.row_bytes), tables.as_ptr(), pairs)
                };
                let end = r1.min((tile + 1) * TILE_ROWS);
                for rr in r..end {
                    // SAFETY: rr in this call's range.
                    unsafe { a.store(t, rr, s[rr % TILE_ROWS]) };
                }
                r = end;
            }
        })
    }
}
