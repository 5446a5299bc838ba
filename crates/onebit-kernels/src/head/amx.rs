//! The int8 head on AMX for batches of tokens (a decode step of several sequences): the
//! head's rows are already int8, so `tdpbssd` reads them straight from the matrix — 64 rows
//! × 16 tokens per block, each weight tile loaded once per token tile instead of once per
//! token as the AVX-512 dot products do. The sums are the same exact integers, scaled by
//! the same float expression, so the output is bit-identical to the scalar kernel.

use super::Q8Matrix;
use crate::gemm::amx;
use crate::quant::ActQuant;

thread_local! {
    /// The activations of one call packed into VNNI tiles.
    static PACKED: std::cell::RefCell<crate::AlignedBuf<u8>> =
        const { std::cell::RefCell::new(crate::AlignedBuf::empty()) };
}

/// Rows per AMX block: four 16-row tiles.
pub(super) const BLOCK_ROWS: usize = 64;

/// Fewest tokens for which the head takes AMX (below, a token tile is mostly padding). At 8
/// the AMX head is ahead of the AVX-512 one: 2B4T-shaped decode of 8 sequences 77 vs 72 tok/s,
/// median of 5 alternating pairs, AMX ahead in each (Xeon, 2 threads).
pub(super) const MIN_TOKENS: usize = 8;

/// `out[t·rows + r]` for rows `r0..r1` (a multiple of [`BLOCK_ROWS`] long) of an 8-bit head.
///
/// # Safety
/// [`amx::available`] returned true; `m` has 8-bit rows; `out` holds `x.tokens() · m.rows`
/// floats and no other thread writes rows `r0..r1`.
pub(super) unsafe fn rows(m: &Q8Matrix, x: &ActQuant, r0: usize, r1: usize, out: *mut f32) {
    debug_assert!(m.bits == 8 && (r1 - r0).is_multiple_of(BLOCK_ROWS));
    let k = m.padded;
    let kblocks = k / 64;
    let tiles = x.tokens().div_ceil(16);
    PACKED.with(|packed| {
        let mut packed = packed.borrow_mut();
        let packed = packed.scratch(tiles * kblocks * 1024);
        assert!(k <= x.padded_cols(), "head: activation rows shorter than the weight rows");
        // SAFETY: AMX available (caller), which implies AVX-512F.
        unsafe { amx::pack_tiles(amx::bytes(x.q()), x.padded_cols(), x.tokens(), k, packed) };
        let mut c = [0i32; 1024];
        // SAFETY: AMX available (caller); released at the end of this closure.
        unsafe { amx::load_config() };
        for r in (r0..r1).step_by(BLOCK_ROWS) {
            let w = m.row(r).as_ptr() as *const u8;
            for tb in 0..tiles {
                // SAFETY: config loaded; rows r..r+64 exist, each `k` bytes apart; the
                // packed token tile tb holds `kblocks` tiles.
                unsafe {
                    amx::zero4();
                    amx::steps_r4(w, k, packed[tb * kblocks * 1024..].as_ptr(), kblocks, true);
                    amx::store4(&mut c);
                }
                for ti in 0..4 {
                    for col in 0..16.min(x.tokens() - tb * 16) {
                        let t = tb * 16 + col;
                        let a = x.scales()[t];
                        for i in 0..16 {
                            let row = r + 16 * ti + i;
                            let v = c[ti * 256 + i * 16 + col];
                            // SAFETY: row < r1 is this thread's; t·rows + row < out's length.
                            unsafe { *out.add(t * m.rows + row) = v as f32 * m.scale[row] / a };
                        }
                    }
                }
            }
        }
        // SAFETY: loaded above on this thread.
        unsafe { amx::release() };
    });
}
