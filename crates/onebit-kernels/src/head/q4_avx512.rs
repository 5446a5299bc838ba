//! The 4-bit head on AVX-512 VNNI, read straight from the nibbles.

use super::matmul::ROW_BLOCK;
use super::{avx512, Q8Matrix, Q4_BLOCK};
use crate::pool::{split, SyncPtr, ThreadPool};
use crate::quant::ActQuant;

thread_local! {
    /// Per-token, per-64-column sums of the int8 activations (the 4-bit kernel's offset).
    static XSUM: std::cell::RefCell<Vec<i32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The 4-bit head on AVX-512 VNNI straight from the nibbles (no widening pass): per block,
/// `dpbusd` of the codes (q + 8) with the activations, times the block multiplier, and
/// `8·Σ m_b·Σx_b` subtracted at the end; the same integer as the widened scalar dot.
pub(super) fn q4_matmul_avx512(pool: &ThreadPool, m: &Q8Matrix, x: &ActQuant, out: &mut [f32]) {
    let nb = m.padded / Q4_BLOCK;
    let tokens = x.tokens();
    let threads = pool.threads();
    let outp = SyncPtr(out.as_mut_ptr());
    pool.run(&|i| {
        let rows = split(m.rows, threads, i, 16);
        if rows.is_empty() {
            return;
        }
        XSUM.with(|xs| {
            let mut xs = xs.borrow_mut();
            xs.clear();
            xs.resize(tokens * nb, 0);
            for t in 0..tokens {
                for (b, blk) in x.row(t)[..m.padded].chunks_exact(Q4_BLOCK).enumerate() {
                    xs[t * nb + b] = blk.iter().map(|&v| v as i32).sum();
                }
            }
            let mut b0 = rows.start;
            while b0 < rows.end {
                let b1 = (b0 + ROW_BLOCK).min(rows.end);
                for t in 0..tokens {
                    let q = &x.row(t)[..m.padded];
                    let (a, xsum) = (x.scales()[t], &xs[t * nb..(t + 1) * nb]);
                    let nib = |r: usize| &m.nibbles[r * m.padded / 2..(r + 1) * m.padded / 2];
                    let mults = |r: usize| &m.mults[r * nb..(r + 1) * nb];
                    let mut r = b0;
                    while r < b1 {
                        // A ragged tail repeats its last row to fill the four (results dropped).
                        let n = (b1 - r).min(4);
                        let row = |i: usize| r + i.min(n - 1);
                        // SAFETY: AVX-512 BW + VNNI checked by the caller; each row holds nb
                        // blocks of 32 nibble bytes and nb multipliers, q and xsum nb blocks.
                        let acc = unsafe {
                            avx512::dot4_q4(
                                std::array::from_fn(|i| nib(row(i))),
                                std::array::from_fn(|i| mults(row(i))),
                                q,
                                xsum,
                            )
                        };
                        for (i, &v) in acc.iter().enumerate().take(n) {
                            let row = r + i;
                            // SAFETY: rows are split disjointly; t·rows + row < out.len() by the assert.
                            unsafe {
                                *outp.get().add(t * m.rows + row) = v as f32 * m.scale[row] / a
                            };
                        }
                        r += n;
                    }
                }
                b0 = b1;
            }
        });
    });
}
