//! Int8 rows with a per-row scale: the quantized lm_head. A tied f16 head of BitNet 2B4T is
//! 657 MB read every token, more than all ternary weights; as int8 it is half that, and the
//! 4-bit option (values -7..7 in nibbles times a 4-bit multiplier per 64 columns, so the
//! widened values stay exact int8, and a least-squares row scale) halves it again. 4-bit rows are widened to int8 a block of rows at a time into a
//! per-thread buffer and then take the same integer dot kernels, so both widths are exact
//! integer sums with one float scale per (row, token).
//!
//! `y[r] = (Σ_k w[r][k]·q[k]) · row_scale[r] / a`. AVX-512 VNNI needs an unsigned operand, so
//! activations are offset by 128 (q ^ 0x80) and 128·Σw is subtracted; AVX2 uses ggml's sign
//! trick (|w| as unsigned, q·sign(w) as signed) so `vpmaddubsw` cannot saturate.

use crate::dispatch::{CpuFeatures, Isa};
use crate::pool::{split, SyncPtr, ThreadPool};
use crate::quant::ActQuant;

/// A row-quantized int8 matrix.
#[derive(Clone, Debug)]
pub struct Q8Matrix {
    rows: usize,
    cols: usize,
    padded: usize,
    data: Vec<i8>,
    nibbles: Vec<u8>,
    mults: Vec<u8>,
    bits: u8,
    scale: Vec<f32>,
    wsum: Vec<i32>,
}

thread_local! {
    /// Widened 4-bit rows of the block a thread is working on.
    static WIDE: std::cell::RefCell<Vec<i8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Columns sharing one 4-bit block multiplier.
const Q4_BLOCK: usize = 64;

/// Head rows are stored padded to a multiple of this (the widest SIMD step and the 4-bit
/// block), not to the activations' 1280: a 64-wide head with a large vocabulary would
/// otherwise hold 20 times its bytes (21.5 GB instead of 1.1 GB for 2^24 rows).
const ROW_ALIGN: usize = 64;

/// Quantizes one row for the 4-bit head: `w ≈ s · m_b · q` with q in -7..7 (nibbles q + 8)
/// and a multiplier m_b in 1..15 per block of 64 columns; byte j of a block's 32 bytes
/// holds elements j (low nibble) and j + 32 (high nibble). Widened values `m_b · q` stay within ±105, so the int8 kernels apply exactly.
/// The row scale is chosen by least squares over a few clip ratios. Returns (s, Σ m_b·q).
fn quantize_row_4bit(w: &[f32], dst: &mut [u8], mults: &mut [u8]) -> (f32, i32) {
    let amax = w.iter().fold(0f32, |m, &v| m.max(v.abs()));
    dst.fill(0x88);
    mults.fill(1);
    if amax == 0.0 {
        return (1.0, 0);
    }
    // The clip search below encodes every row eight times, so its loop must vectorize: a
    // reciprocal multiply instead of a division, and a lane sum of the error (measured: a
    // 2b4t load with the 4-bit head took 9.0 s before, 7.4 s after).
    let q = |v: f32, inv: f32| crate::quant::round_half_even_small(v * inv).clamp(-7.0, 7.0);
    let encode = |s: f32, mults: &mut [u8]| -> f64 {
        let mut err = 0f64;
        for (b, blk) in w.chunks(Q4_BLOCK).enumerate() {
            let bmax = blk.iter().fold(0f32, |m, &v| m.max(v.abs()));
            let m = (bmax / (7.0 * s)).ceil().clamp(1.0, 15.0);
            mults[b] = m as u8;
            let (step, inv) = (s * m, 1.0 / (s * m));
            // Eight lanes so the sum vectorizes (a single f32 sum is a serial chain).
            let mut lanes = [0f32; 8];
            for c in blk.chunks(8) {
                for (l, &v) in lanes.iter_mut().zip(c) {
                    *l += (v - step * q(v, inv)).powi(2);
                }
            }
            err += lanes.iter().sum::<f32>() as f64;
        }
        err
    };
    let mut best = (f64::MAX, amax / 105.0);
    for i in 0..=6 {
        let s = amax * (1.0 - 0.05 * i as f32) / 105.0;
        let err = encode(s, mults);
        if err < best.0 {
            best = (err, s);
        }
    }
    let s = best.1;
    encode(s, mults);
    let mut sum = 0;
    for (k, &v) in w.iter().enumerate() {
        let m = mults[k / Q4_BLOCK] as f32;
        let n = q(v, 1.0 / (s * m)) as i32;
        sum += n * m as i32;
        let code = (n + 8) as u8;
        let (block, local) = (k / Q4_BLOCK, k % Q4_BLOCK);
        let at = block * Q4_BLOCK / 2 + local % (Q4_BLOCK / 2);
        dst[at] = if local < Q4_BLOCK / 2 {
            (dst[at] & 0xF0) | code
        } else {
            (dst[at] & 0x0F) | (code << 4)
        };
    }
    (s, sum)
}

impl Q8Matrix {
    /// Quantizes f32 rows symmetrically: `w ≈ scale[r] · q`, q in [-127, 127].
    pub fn from_f32(w: &[f32], rows: usize, cols: usize) -> crate::Result<Self> {
        if w.len() != rows * cols {
            return Err(crate::Error::Mismatch {
                op: "Q8Matrix::from_f32",
                expected: rows * cols,
                found: w.len(),
            });
        }
        let padded = cols.div_ceil(ROW_ALIGN) * ROW_ALIGN;
        let mut data = vec![0i8; rows * padded];
        let mut scale = vec![0f32; rows];
        let mut wsum = vec![0i32; rows];
        for r in 0..rows {
            let (a, s) = crate::quant::quantize_row(
                &w[r * cols..(r + 1) * cols],
                &mut data[r * padded..r * padded + cols],
            );
            scale[r] = 1.0 / a;
            wsum[r] = s;
        }
        Ok(Q8Matrix {
            rows,
            cols,
            padded,
            data,
            nibbles: Vec::new(),
            mults: Vec::new(),
            bits: 8,
            scale,
            wsum,
        })
    }

    /// Like [`Q8Matrix::from_row_fn`] with `bits` = 8 or 4 per weight.
    pub fn from_row_fn_bits(
        rows: usize,
        cols: usize,
        bits: u8,
        mut fill: impl FnMut(usize, &mut [f32]),
    ) -> Self {
        if bits != 4 {
            return Self::from_row_fn(rows, cols, fill);
        }
        let padded = cols.div_ceil(ROW_ALIGN) * ROW_ALIGN;
        let mut m = Q8Matrix {
            rows,
            cols,
            padded,
            data: Vec::new(),
            nibbles: vec![0x88; rows * padded / 2],
            mults: vec![1; rows * padded / Q4_BLOCK],
            bits: 4,
            scale: vec![0.0; rows],
            wsum: vec![0; rows],
        };
        let mut buf = vec![0f32; cols];
        for r in 0..rows {
            fill(r, &mut buf);
            let nb = padded / Q4_BLOCK;
            let (s, sum) = quantize_row_4bit(
                &buf,
                &mut m.nibbles[r * padded / 2..(r + 1) * padded / 2],
                &mut m.mults[r * nb..(r + 1) * nb],
            );
            m.scale[r] = s;
            m.wsum[r] = sum;
        }
        m
    }

    /// Bits per weight (8 or 4).
    pub fn bits(&self) -> u8 {
        self.bits
    }

    /// Row r widened to int8 (padded with zeros), for either width.
    pub fn unpack_row(&self, r: usize, dst: &mut [i8]) {
        if self.bits == 8 {
            dst[..self.padded].copy_from_slice(self.row(r));
            return;
        }
        let src = &self.nibbles[r * self.padded / 2..(r + 1) * self.padded / 2];
        let nb = self.padded / Q4_BLOCK;
        let mults = &self.mults[r * nb..(r + 1) * nb];
        for ((d, s), &m) in dst[..self.padded]
            .chunks_exact_mut(Q4_BLOCK)
            .zip(src.chunks_exact(Q4_BLOCK / 2))
            .zip(mults)
        {
            // Byte j of a block holds elements j (low nibble) and j + 32 (high): two
            // contiguous halves, so this loop vectorizes without byte interleaving.
            let m = m as i8;
            let (lo, hi) = d.split_at_mut(Q4_BLOCK / 2);
            for ((l, h), &b) in lo.iter_mut().zip(hi.iter_mut()).zip(s) {
                *l = ((b & 15) as i8 - 8) * m;
                *h = ((b >> 4) as i8 - 8) * m;
            }
        }
    }

    /// Quantizes rows produced by `fill(r, buf)` one at a time (no full f32 copy).
    pub fn from_row_fn(rows: usize, cols: usize, mut fill: impl FnMut(usize, &mut [f32])) -> Self {
        let padded = cols.div_ceil(ROW_ALIGN) * ROW_ALIGN;
        let mut m = Q8Matrix {
            rows,
            cols,
            padded,
            data: vec![0; rows * padded],
            nibbles: Vec::new(),
            mults: Vec::new(),
            bits: 8,
            scale: vec![0.0; rows],
            wsum: vec![0; rows],
        };
        let mut buf = vec![0f32; cols];
        for r in 0..rows {
            fill(r, &mut buf);
            let (a, s) =
                crate::quant::quantize_row(&buf, &mut m.data[r * padded..r * padded + cols]);
            m.scale[r] = 1.0 / a;
            m.wsum[r] = s;
        }
        m
    }

    /// Output rows.
    pub fn rows(&self) -> usize {
        self.rows
    }
    /// Input columns.
    pub fn cols(&self) -> usize {
        self.cols
    }
    /// Bytes held (weights and scales).
    pub fn bytes(&self) -> usize {
        self.rows * self.cols * self.bits as usize / 8 + self.mults.len() + self.rows * 8
    }
    /// Row r's int8 values (padded with zeros); 8-bit matrices only (see [`Q8Matrix::unpack_row`]).
    pub fn row(&self, r: usize) -> &[i8] {
        &self.data[r * self.padded..(r + 1) * self.padded]
    }
    /// Row r's scale.
    pub fn row_scale(&self, r: usize) -> f32 {
        self.scale[r]
    }
}

/// Σ w·q over one padded row, plain Rust (the definition of correct).
pub fn dot_scalar(w: &[i8], q: &[i8]) -> i32 {
    w.iter().zip(q).map(|(&a, &b)| a as i32 * b as i32).sum()
}

/// `out[t·rows + r]` for every token of `x`, rows split over the pool, at [`Isa::selected`].
pub fn q8_matmul(
    pool: &ThreadPool,
    m: &Q8Matrix,
    x: &ActQuant,
    out: &mut [f32],
) -> crate::Result<()> {
    q8_matmul_on(pool, Isa::selected(), m, x, out)
}

/// [`q8_matmul`] with the head kernels of `isa` (AMX shares the AVX-512 rows; NEON has no
/// head kernel of its own yet and runs the scalar one, which the compiler vectorizes).
pub fn q8_matmul_on(
    pool: &ThreadPool,
    isa: Isa,
    m: &Q8Matrix,
    x: &ActQuant,
    out: &mut [f32],
) -> crate::Result<()> {
    if x.cols() != m.cols {
        return Err(crate::Error::Mismatch {
            op: "q8_matmul cols",
            expected: m.cols,
            found: x.cols(),
        });
    }
    if out.len() < x.tokens() * m.rows {
        return Err(crate::Error::Mismatch {
            op: "q8_matmul out",
            expected: x.tokens() * m.rows,
            found: out.len(),
        });
    }
    if !CpuFeatures::get().has(isa) {
        return Err(crate::Error::Unavailable(format!("q8 head/{}", isa.name())));
    }
    let path = HeadPath::of(isa);
    #[cfg(target_arch = "x86_64")]
    if m.bits == 4 && path == HeadPath::Avx512 {
        q4_matmul_avx512(pool, m, x, out);
        return Ok(());
    }
    let threads = pool.threads();
    let outp = SyncPtr(out.as_mut_ptr());
    pool.run(&|i| {
        let rows = split(m.rows, threads, i, 16);
        // Blocks of rows small enough to stay in L2 while every token passes over them, so
        // a batch of tokens reads the head from memory once, not once per token.
        let mut b0 = rows.start;
        WIDE.with(|wide| {
            let mut wide = wide.borrow_mut();
            if m.bits == 4 && wide.len() < ROW_BLOCK * m.padded {
                wide.resize(ROW_BLOCK * m.padded, 0);
            }
            while b0 < rows.end {
                let b1 = (b0 + ROW_BLOCK).min(rows.end);
                if m.bits == 4 {
                    for r in b0..b1 {
                        m.unpack_row(r, &mut wide[(r - b0) * m.padded..(r - b0 + 1) * m.padded]);
                    }
                }
                let wide: &[i8] = &wide;
                let row = |r: usize| -> &[i8] {
                    if m.bits == 4 {
                        &wide[(r - b0) * m.padded..(r - b0 + 1) * m.padded]
                    } else {
                        m.row(r)
                    }
                };
                for t in 0..x.tokens() {
                    let q = &x.row(t)[..m.padded];
                    let a = x.scales()[t];
                    let mut r = b0;
                    while r < b1 {
                        // Four rows at a time share the activation loads on AVX-512.
                        let n = if path == HeadPath::Avx512 { 4.min(b1 - r) } else { 1 };
                        let mut acc = [0i32; 4];
                        match (path, n) {
                            #[cfg(target_arch = "x86_64")]
                            (HeadPath::Avx512, 4) => {
                                // SAFETY: features checked above; rows r..r+4 exist and hold `padded` bytes.
                                acc = unsafe {
                                    avx512::dot4([row(r), row(r + 1), row(r + 2), row(r + 3)], q)
                                }
                            }
                            #[cfg(target_arch = "x86_64")]
                            (HeadPath::Avx512, _) => {
                                for (i, a) in acc.iter_mut().enumerate().take(n) {
                                    // SAFETY: features checked above; row r + i exists.
                                    *a = unsafe { avx512::dot(row(r + i), q) };
                                }
                            }
                            // SAFETY: AVX2 checked above; one padded row.
                            #[cfg(target_arch = "x86_64")]
                            (HeadPath::Avx2, _) => acc[0] = unsafe { avx2::dot(row(r), q) },
                            _ => acc[0] = dot_scalar(row(r), q),
                        }
                        for (i, &v) in acc.iter().enumerate().take(n) {
                            let v =
                                if path == HeadPath::Avx512 { v - 128 * m.wsum[r + i] } else { v };
                            // SAFETY: rows are split disjointly; t·rows + r + i < out.len() by the check above.
                            unsafe {
                                *outp.get().add(t * m.rows + r + i) = v as f32 * m.scale[r + i] / a
                            };
                        }
                        r += n;
                    }
                }
                b0 = b1;
            }
        });
    });
    Ok(())
}

/// Which head kernel an [`Isa`] runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum HeadPath {
    Scalar,
    Avx2,
    Avx512,
}

impl HeadPath {
    fn of(isa: Isa) -> HeadPath {
        match isa {
            Isa::Avx2 => HeadPath::Avx2,
            Isa::Avx512 | Isa::Amx => HeadPath::Avx512,
            Isa::Scalar | Isa::Neon | Isa::NeonDot => HeadPath::Scalar,
        }
    }
}

/// Rows per L2-resident block of [`q8_matmul`] (32 rows of a 2560-wide head: 80 KB).
const ROW_BLOCK: usize = 32;

thread_local! {
    /// Per-token, per-64-column sums of the int8 activations (the 4-bit kernel's offset).
    static XSUM: std::cell::RefCell<Vec<i32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The 4-bit head on AVX-512 VNNI straight from the nibbles (no widening pass): per block,
/// `dpbusd` of the codes (q + 8) with the activations, times the block multiplier, and
/// `8·Σ m_b·Σx_b` subtracted at the end; the same integer as the widened scalar dot.
#[cfg(target_arch = "x86_64")]
fn q4_matmul_avx512(pool: &ThreadPool, m: &Q8Matrix, x: &ActQuant, out: &mut [f32]) {
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

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    /// `MUL_TABLES[m]`: byte c ↦ c·m for nibbles c < 16 (≤ 225, still an unsigned byte),
    /// repeated in each 128-bit lane for `vpshufb`.
    static MUL_TABLES: [[u8; 64]; 16] = {
        let mut t = [[0u8; 64]; 16];
        let mut m = 0;
        while m < 16 {
            let mut i = 0;
            while i < 64 {
                t[m][i] = ((i % 16) * m) as u8;
                i += 1;
            }
            m += 1;
        }
        t
    };

    /// Σ_b m_b · Σ_k (code − 8)·q over 4-bit blocks of 64 (byte j: elements j and j + 32),
    /// for four rows sharing the activation loads. The block multiplier is applied to the
    /// codes by a `vpshufb` lookup (c·m ≤ 225 fits the unsigned operand of `vpdpbusd`), so
    /// each block is one multiply-add; `8·Σ m_b·Σx_b` is subtracted at the end.
    ///
    /// # Safety
    /// AVX-512 BW + VNNI; for every row `nib.len() == 32·mults.len()`; `q.len() ≥ 64·xsum.len()`,
    /// `mults.len() == xsum.len()`, with `xsum[b]` = Σ of block b of `q`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub unsafe fn dot4_q4(nib: [&[u8]; 4], mults: [&[u8]; 4], q: &[i8], xsum: &[i32]) -> [i32; 4] {
        let mask = _mm256_set1_epi8(0x0F);
        let mut acc = [_mm512_setzero_si512(); 4];
        let mut corr = [0i32; 4];
        for (b, &s) in xsum.iter().enumerate() {
            // SAFETY: block b lies within every slice (caller contract); m < 16 indexes the tables.
            unsafe {
                let x = _mm512_loadu_si512(q.as_ptr().add(64 * b) as *const _);
                for r in 0..4 {
                    // Prefetch this row's block four rows on (the next group of four).
                    _mm_prefetch::<_MM_HINT_T0>(
                        nib[r].as_ptr().wrapping_add(4 * nib[r].len() + 32 * b) as *const i8,
                    );
                    let m = *mults[r].get_unchecked(b) as usize;
                    let raw = _mm256_loadu_si256(nib[r].as_ptr().add(32 * b) as *const __m256i);
                    let lo = _mm256_and_si256(raw, mask);
                    let hi = _mm256_and_si256(_mm256_srli_epi16(raw, 4), mask);
                    let codes = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
                    let table = _mm512_loadu_si512(MUL_TABLES[m & 15].as_ptr() as *const _);
                    let scaled = _mm512_shuffle_epi8(table, codes);
                    acc[r] = _mm512_dpbusd_epi32(acc[r], scaled, x);
                    corr[r] += m as i32 * s;
                }
            }
        }
        std::array::from_fn(|r| _mm512_reduce_add_epi32(acc[r]) - 8 * corr[r])
    }

    /// Σ w·(q + 128) (the caller subtracts 128·Σw).
    ///
    /// # Safety
    /// AVX-512 BW + VNNI; `w.len() == q.len()`, a multiple of 64.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub unsafe fn dot(w: &[i8], q: &[i8]) -> i32 {
        let flip = _mm512_set1_epi8(-128);
        let (mut a0, mut a1) = (_mm512_setzero_si512(), _mm512_setzero_si512());
        let n = w.len() / 64;
        let mut k = 0;
        while k + 2 <= n {
            // SAFETY: k + 2 ≤ n blocks of 64 in both slices.
            unsafe {
                let x0 =
                    _mm512_xor_si512(_mm512_loadu_si512(q.as_ptr().add(64 * k) as *const _), flip);
                let x1 = _mm512_xor_si512(
                    _mm512_loadu_si512(q.as_ptr().add(64 * k + 64) as *const _),
                    flip,
                );
                a0 = _mm512_dpbusd_epi32(
                    a0,
                    x0,
                    _mm512_loadu_si512(w.as_ptr().add(64 * k) as *const _),
                );
                a1 = _mm512_dpbusd_epi32(
                    a1,
                    x1,
                    _mm512_loadu_si512(w.as_ptr().add(64 * k + 64) as *const _),
                );
            }
            k += 2;
        }
        if k < n {
            // SAFETY: block k < n.
            unsafe {
                let x0 =
                    _mm512_xor_si512(_mm512_loadu_si512(q.as_ptr().add(64 * k) as *const _), flip);
                a0 = _mm512_dpbusd_epi32(
                    a0,
                    x0,
                    _mm512_loadu_si512(w.as_ptr().add(64 * k) as *const _),
                );
            }
        }
        _mm512_reduce_add_epi32(_mm512_add_epi32(a0, a1))
    }

    /// [`dot`] for four rows sharing the activation loads.
    ///
    /// # Safety
    /// AVX-512 BW + VNNI; every slice as long as `q`, a multiple of 64.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub unsafe fn dot4(w: [&[i8]; 4], q: &[i8]) -> [i32; 4] {
        let flip = _mm512_set1_epi8(-128);
        let mut acc = [_mm512_setzero_si512(); 4];
        for k in 0..q.len() / 64 {
            // SAFETY: block k lies within q and every row.
            unsafe {
                let x =
                    _mm512_xor_si512(_mm512_loadu_si512(q.as_ptr().add(64 * k) as *const _), flip);
                for (a, row) in acc.iter_mut().zip(&w) {
                    // The next group of four rows, same block: rows are adjacent, `row.len()` apart.
                    _mm_prefetch::<_MM_HINT_T0>(row.as_ptr().wrapping_add(4 * row.len() + 64 * k));
                    *a = _mm512_dpbusd_epi32(
                        *a,
                        x,
                        _mm512_loadu_si512(row.as_ptr().add(64 * k) as *const _),
                    );
                }
            }
        }
        acc.map(|a| _mm512_reduce_add_epi32(a))
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    /// Σ w·q with the sign trick (|w| unsigned, q·sign(w) signed).
    ///
    /// # Safety
    /// AVX2; `w.len() == q.len()`, a multiple of 32; q ≥ -127.
    #[target_feature(enable = "avx2")]
    pub unsafe fn dot(w: &[i8], q: &[i8]) -> i32 {
        let ones = _mm256_set1_epi16(1);
        let mut acc = _mm256_setzero_si256();
        for k in 0..w.len() / 32 {
            // SAFETY: block k within both slices.
            let (wv, qv) = unsafe {
                (
                    _mm256_loadu_si256(w.as_ptr().add(32 * k) as *const _),
                    _mm256_loadu_si256(q.as_ptr().add(32 * k) as *const _),
                )
            };
            let p = _mm256_maddubs_epi16(_mm256_sign_epi8(wv, wv), _mm256_sign_epi8(qv, wv));
            acc = _mm256_add_epi32(acc, _mm256_madd_epi16(p, ones));
        }
        let s = _mm_add_epi32(_mm256_castsi256_si128(acc), _mm256_extracti128_si256::<1>(acc));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
        _mm_cvtsi128_si32(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn four_bit_head_matches_scalar_bit_exact_and_stays_close() {
        // The last shape grades block magnitudes so that most multipliers 1..15 occur (the
        // AVX-512 kernel applies them through a lookup table per multiplier).
        for (rows, cols, graded) in
            [(37, 1000, false), (70, 2560, false), (5, 33, false), (41, 1984, true)]
        {
            let w: Vec<f32> = (0..rows * cols)
                .map(|i| {
                    let v = ((i * 7919) % 1999) as f32 / 999.0 - 1.0;
                    let block = (i % cols) / Q4_BLOCK;
                    if graded {
                        v * ((block + i / cols) % 15 + 1) as f32 / 15.0
                    } else {
                        v
                    }
                })
                .collect();
            let m = Q8Matrix::from_row_fn_bits(rows, cols, 4, |r, b| {
                b.copy_from_slice(&w[r * cols..(r + 1) * cols])
            });
            assert_eq!(m.bits(), 4);
            if graded {
                let mut seen = [false; 16];
                m.mults.iter().for_each(|&v| seen[v as usize] = true);
                assert!(seen.iter().filter(|&&b| b).count() >= 12, "multipliers {seen:?}");
            }
            let mut wide = vec![0i8; cols.div_ceil(ROW_ALIGN) * ROW_ALIGN];
            let mut err = 0f64;
            for r in 0..rows {
                m.unpack_row(r, &mut wide);
                assert!(wide.iter().all(|&v| (-105..=105).contains(&v)));
                assert!(wide[cols..].iter().all(|&v| v == 0), "padding decodes to 0");
                for k in 0..cols {
                    err += ((w[r * cols + k] - m.row_scale(r) * wide[k] as f32) as f64).powi(2);
                }
            }
            let rms = (err / (rows * cols) as f64).sqrt();
            assert!(rms < 0.05, "4-bit reconstruction rms {rms} on values in [-1, 1]");
            let xs: Vec<f32> =
                (0..3 * cols).map(|i| ((i * 104729) % 3001) as f32 / 1500.0 - 1.0).collect();
            let mut x = ActQuant::new(3, cols);
            x.quantize(&xs);
            let mut y = vec![0f32; 3 * rows];
            q8_matmul(&ThreadPool::new(2), &m, &x, &mut y).unwrap();
            for t in 0..3 {
                for r in 0..rows {
                    m.unpack_row(r, &mut wide);
                    let acc = dot_scalar(&wide, x.row(t));
                    assert_eq!(
                        y[t * rows + r],
                        acc as f32 * m.row_scale(r) / x.scales()[t],
                        "t={t} r={r}"
                    );
                }
            }
        }
    }

    #[test]
    fn simd_head_matches_scalar_bit_exact() {
        let (rows, cols) = (37, 1000);
        let w: Vec<f32> =
            (0..rows * cols).map(|i| ((i * 7919) % 1999) as f32 / 999.0 - 1.0).collect();
        let m = Q8Matrix::from_f32(&w, rows, cols).unwrap();
        let xs: Vec<f32> =
            (0..2 * cols).map(|i| ((i * 104729) % 3001) as f32 / 1500.0 - 1.0).collect();
        let mut x = ActQuant::new(2, cols);
        x.quantize(&xs);
        let mut y = vec![0f32; 2 * rows];
        q8_matmul(&ThreadPool::new(2), &m, &x, &mut y).unwrap();
        for t in 0..2 {
            for r in 0..rows {
                let acc = dot_scalar(m.row(r), x.row(t));
                assert_eq!(
                    y[t * rows + r],
                    acc as f32 * m.row_scale(r) / x.scales()[t],
                    "t={t} r={r}"
                );
            }
        }
    }
}
