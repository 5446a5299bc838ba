//! Scalar lookup-table kernel: the definition of the family's arithmetic, one lookup per
//! row and pair.

use super::{with_tables, TABLE_BYTES};
use crate::format::lut::{PAIR_BYTES, TILE_ROWS};
use crate::gemv::MatmulArgs;

/// Lut layout, rows `r0..r1` (`r0` a multiple of 32).
///
/// # Safety
/// See [`crate::gemv::MatmulFn`].
pub unsafe fn lut(a: &MatmulArgs<'_>, r0: usize, r1: usize) {
    let pairs = a.cols.div_ceil(2);
    for t in 0..a.tokens {
        let act = &a.act[t * a.act_stride..(t + 1) * a.act_stride];
        with_tables(act, pairs, |tables| {
            for r in r0..r1 {
                let (tile, j) = (r / TILE_ROWS, r % TILE_ROWS);
                let base = &a.w[tile * a.row_bytes..];
                let mut acc = 0i32;
                for g in 0..pairs {
                    let byte = base[g * PAIR_BYTES + j % 16];
                    let idx = if j < 16 { byte & 15 } else { byte >> 4 } as usize;
                    let tb = &tables[g * TABLE_BYTES..];
                    acc += i16::from_le_bytes([tb[idx], tb[16 + idx]]) as i32;
                }
                // SAFETY: r in this call's range.
                unsafe { a.store(t, r, acc) };
            }
        })
    }
}
