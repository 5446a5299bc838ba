//! KV cache storage: f32 (exact, the default of the API), f16 (half the memory and the
//! bytes read per attended position; llama.cpp's default and the CLI's) or q8 (int8 in
//! blocks of 32 with an f32 scale each, like ggml's Q8_0: 1.125 bytes per value, a little
//! over half of f16, for long contexts and many slots). Attention reads a head's rows
//! through [`KvStore::view`]: f32 rows in place, the others widened into the caller's
//! per-thread scratch, so the attention code is one path for all three. Decode attention
//! goes through [`KvStore::scores`] and [`KvStore::weigh`], which read an f16 or q8 cache
//! without the scratch (fused kernels, the same bits).

use half::f16;
use half::slice::HalfFloatSliceExt;
use half::vec::HalfBitsVecExt;
use onebit_kernels::dense::{self, widen_f16, widen_q8};

/// Values per scale of the q8 cache when the head width allows (as ggml's Q8_0); otherwise
/// one scale per head vector, so that blocks never straddle two heads.
pub const Q8_BLOCK: usize = 32;

/// Element type of the KV cache.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KvDtype {
    /// 32-bit floats.
    #[default]
    F32,
    /// IEEE half.
    F16,
    /// int8 with one f32 scale per 32 values (absmax / 127, round half to even).
    Q8,
}

impl KvDtype {
    /// Parses `f32` / `f16` / `q8` (also `q8_0`, `int8`).
    pub fn from_name(s: &str) -> Option<Self> {
        match s {
            "f32" => Some(KvDtype::F32),
            "f16" => Some(KvDtype::F16),
            "q8" | "q8_0" | "int8" => Some(KvDtype::Q8),
            _ => None,
        }
    }

    /// Bytes per cached value.
    pub fn bytes_per_value(self) -> f64 {
        match self {
            KvDtype::F32 => 4.0,
            KvDtype::F16 => 2.0,
            KvDtype::Q8 => 1.0 + 4.0 / Q8_BLOCK as f64,
        }
    }
}

/// One cache tensor (all slots, layers and positions of K, or of V).
pub(crate) enum KvStore {
    F32(Vec<f32>),
    F16(Vec<f16>),
    /// Values, one scale per `block` values, and `block` ([`Q8_BLOCK`] or the head width);
    /// head vectors start on blocks.
    Q8(Vec<i8>, Vec<f32>, usize),
}

impl KvStore {
    /// A zeroed store of `len` values whose head vectors are `head_dim` wide.
    pub(crate) fn new(dtype: KvDtype, len: usize, head_dim: usize) -> Self {
        match dtype {
            KvDtype::F32 => KvStore::F32(vec![0.0; len]),
            // Zeroed u16s reinterpreted (no copy): `vec![f16::ZERO; len]` writes every byte
            // (f16 is not a type the standard library knows to be zero), which faulted in the
            // whole cache up front, 157 MB for the 2B4T shape at 2048 positions (~1-2 s here,
            // and all of it resident); a zeroed allocation is mapped lazily, a page at a time
            // as positions fill.
            KvDtype::F16 => KvStore::F16(vec![0u16; len].reinterpret_into()),
            KvDtype::Q8 => {
                let block = if head_dim.is_multiple_of(Q8_BLOCK) { Q8_BLOCK } else { head_dim };
                KvStore::Q8(vec![0; len], vec![0.0; len.div_ceil(block)], block)
            }
        }
    }

    /// Stores `src` at element `at`.
    pub(crate) fn write(&mut self, at: usize, src: &[f32]) {
        match self {
            KvStore::F32(v) => v[at..at + src.len()].copy_from_slice(src),
            KvStore::F16(v) => v[at..at + src.len()].convert_from_f32_slice(src),
            KvStore::Q8(v, scales, block) => {
                let block = *block;
                debug_assert!(at.is_multiple_of(block));
                let blocks = v[at..at + src.len()].chunks_mut(block).zip(src.chunks(block));
                for ((dst, x), scale) in blocks.zip(&mut scales[at / block..]) {
                    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
                    *scale = amax / 127.0;
                    let inv = if amax > 0.0 { 127.0 / amax } else { 0.0 };
                    for (d, &x) in dst.iter_mut().zip(x) {
                        *d = (x * inv).round_ties_even().clamp(-127.0, 127.0) as i8;
                    }
                }
            }
        }
    }

    /// Rows `0..n` of `width` values starting at `at`, `stride` apart, as f32:
    /// `(data, row_stride)` where row p is `data[p·row_stride..][..width]`.
    pub(crate) fn view<'a>(
        &'a self,
        at: usize,
        n: usize,
        stride: usize,
        width: usize,
        scratch: &'a mut [f32],
    ) -> (&'a [f32], usize) {
        match self {
            KvStore::F32(v) => (&v[at..], stride),
            KvStore::F16(v) => {
                for p in 0..n {
                    let src = &v[at + p * stride..at + p * stride + width];
                    widen_f16(src, &mut scratch[p * width..(p + 1) * width]);
                }
                (&scratch[..n * width], width)
            }
            KvStore::Q8(v, scales, block) => {
                let block = *block;
                for p in 0..n {
                    let a = at + p * stride;
                    let (src, k) =
                        (&v[a..a + width], &scales[a / block..(a + width).div_ceil(block)]);
                    widen_q8(src, k, block, &mut scratch[p * width..(p + 1) * width]);
                }
                (&scratch[..n * width], width)
            }
        }
    }
}

impl KvStore {
    /// `len` stored values from `at` for the fused kernels (f16, and int8 whose rows start on
    /// a block, as head vectors do); f32 rows are read in place by `view`.
    fn rows(&self, at: usize, len: usize) -> Option<dense::KvRows<'_>> {
        match self {
            KvStore::F32(_) => None,
            KvStore::F16(v) => Some(dense::KvRows::F16(&v[at..at + len])),
            KvStore::Q8(v, scales, block) => {
                debug_assert!(at.is_multiple_of(*block));
                let sc = &scales[at / block..(at + len).div_ceil(*block)];
                Some(dense::KvRows::Q8(&v[at..at + len], sc, *block))
            }
        }
    }

    /// `s[g·n + p] = dot(q[g], row p) · scale` for the heads of `q` (`hd` values each) over
    /// the rows `0..n` of `hd` values from `at`, `stride` apart, in `dot_f32`'s order.
    #[allow(clippy::too_many_arguments)] // the cache window, the queries and the output
    pub(crate) fn scores(
        &self,
        (at, n, stride): (usize, usize, usize),
        q: &[f32],
        hd: usize,
        scale: f32,
        s: &mut [f32],
        scratch: &mut [f32],
    ) {
        if n == 0 {
            return;
        }
        if let Some(rows) = self.rows(at, (n - 1) * stride + hd) {
            return dense::scores(q, hd, rows, stride, scale, s);
        }
        let (rows, rs) = self.view(at, n, stride, hd, scratch);
        for (qg, sg) in q.chunks_exact(hd).zip(s.chunks_exact_mut(n)) {
            for (p, sp) in sg.iter_mut().enumerate() {
                *sp = dense::dot_f32(qg, &rows[p * rs..][..hd]) * scale;
            }
        }
    }

    /// `o[g] += Σ_p s[g·n + p] · row p`, position by position, for the heads of `o` over the
    /// rows `0..n` as in [`KvStore::scores`] (`axpy_f32`'s order).
    pub(crate) fn weigh(
        &self,
        (at, n, stride): (usize, usize, usize),
        s: &[f32],
        hd: usize,
        o: &mut [f32],
        scratch: &mut [f32],
    ) {
        if n == 0 {
            return;
        }
        if let Some(rows) = self.rows(at, (n - 1) * stride + hd) {
            return dense::weigh(s, rows, stride, hd, o);
        }
        let (rows, rs) = self.view(at, n, stride, hd, scratch);
        for p in 0..n {
            let row = &rows[p * rs..][..hd];
            for (g, og) in o.chunks_exact_mut(hd).enumerate() {
                dense::axpy_f32(s[g * n + p], row, og);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes random head vectors at every position of a small cache and reads each head
    /// back through `view`: f32 exact, f16 within half-precision rounding, q8 within half a
    /// step of its block's scale, for head widths that are and are not multiples of 32.
    #[test]
    fn every_dtype_reads_back_what_was_written() {
        let mut seed = 11u64;
        let mut next = || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 8.0
        };
        for head_dim in [8usize, 24, 32, 128] {
            let (heads, positions) = (3, 5);
            let kvd = heads * head_dim;
            let data: Vec<f32> = (0..positions * kvd).map(|_| next()).collect();
            for dtype in [KvDtype::F32, KvDtype::F16, KvDtype::Q8] {
                let mut store = KvStore::new(dtype, positions * kvd, head_dim);
                for p in 0..positions {
                    store.write(p * kvd, &data[p * kvd..(p + 1) * kvd]);
                }
                let mut scratch = vec![0f32; positions * head_dim];
                for h in 0..heads {
                    let (rows, stride) =
                        store.view(h * head_dim, positions, kvd, head_dim, &mut scratch);
                    for p in 0..positions {
                        let want = &data[p * kvd + h * head_dim..][..head_dim];
                        let got = &rows[p * stride..][..head_dim];
                        let block = if head_dim % Q8_BLOCK == 0 { Q8_BLOCK } else { head_dim };
                        for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
                            let tol = match dtype {
                                KvDtype::F32 => 0.0,
                                KvDtype::F16 => w.abs() * 1e-3,
                                KvDtype::Q8 => {
                                    let b = i / block * block;
                                    let amax =
                                        want[b..b + block].iter().fold(0f32, |m, v| m.max(v.abs()));
                                    amax / 254.0 * 1.0001
                                }
                            };
                            assert!((g - w).abs() <= tol, "{dtype:?} hd {head_dim}: {g} vs {w}");
                        }
                    }
                }
            }
        }
    }
}
