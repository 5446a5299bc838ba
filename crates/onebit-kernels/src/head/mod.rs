//! Int8 rows with a per-row scale: the quantized lm_head. A tied f16 head of BitNet 2B4T is
//! 657 MB read every token, more than all ternary weights; as int8 it is half that, and the
//! 4-bit option (values -7..7 in nibbles times a 4-bit multiplier per 64 columns, so the
//! widened values stay exact int8, and a least-squares row scale) halves it again. 4-bit rows
//! are widened to int8 a block of rows at a time into a per-thread buffer and then take the
//! same integer dot kernels, so both widths are exact integer sums with one float scale per
//! (row, token); on AVX-512 the 4-bit rows are read straight from the nibbles instead.
//!
//! `y[r] = (Σ_k w[r][k]·q[k]) · row_scale[r] / a`. AVX-512 VNNI needs an unsigned operand, so
//! activations are offset by 128 (q ^ 0x80) and 128·Σw is subtracted; AVX2 uses ggml's sign
//! trick (|w| as unsigned, q·sign(w) as signed) so `vpmaddubsw` cannot saturate.
//!
//! Files: this one holds the matrix and its quantizers, `q4` the 4-bit row packing,
//! `matmul` the kernel over rows and tokens (scalar, AVX2, AVX-512), `q4_avx512` the 4-bit
//! head read straight from nibbles, `amx` 8-bit rows for batches of tokens on AMX, `avx2` /
//! `avx512` the dot products.

#[cfg(target_arch = "x86_64")]
mod amx;
#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
mod matmul;
mod q4;
#[cfg(target_arch = "x86_64")]
mod q4_avx512;

pub use matmul::{dot_scalar, q8_matmul, q8_matmul_on};
use q4::{quantize_row_4bit, Q4_BLOCK};

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

/// Head rows are stored padded to a multiple of this (the widest SIMD step and the 4-bit
/// block), not to the activations' 1280: a 64-wide head with a large vocabulary would
/// otherwise hold 20 times its bytes (21.5 GB instead of 1.1 GB for 2^24 rows).
const ROW_ALIGN: usize = 64;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::ThreadPool;
    use crate::quant::ActQuant;

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
        // Every ISA this CPU has, ragged rows (tiles of four rows and the rest) and token
        // counts (tiles of four or two tokens and the rest).
        let features = crate::dispatch::CpuFeatures::get();
        let pool = ThreadPool::new(2);
        for (rows, cols, tokens) in [(37, 1000, 2), (70, 96, 7), (5, 33, 1), (41, 260, 5)] {
            let w: Vec<f32> =
                (0..rows * cols).map(|i| ((i * 7919) % 1999) as f32 / 999.0 - 1.0).collect();
            let m = Q8Matrix::from_f32(&w, rows, cols).unwrap();
            let xs: Vec<f32> =
                (0..tokens * cols).map(|i| ((i * 104729) % 3001) as f32 / 1500.0 - 1.0).collect();
            let mut x = ActQuant::new(tokens, cols);
            x.quantize(&xs);
            let isas = || crate::dispatch::Isa::ALL.into_iter().filter(|&i| features.has(i));
            // The tiles of one ISA with the leftover tokens' rows of another (`Isa::rows`).
            for (isa, row_isa) in isas().flat_map(|i| isas().map(move |r| (i, r))) {
                let mut y = vec![0f32; tokens * rows];
                matmul::q8_matmul_with(&pool, isa, row_isa, &m, &x, &mut y).unwrap();
                for t in 0..tokens {
                    for r in 0..rows {
                        let acc = dot_scalar(m.row(r), x.row(t));
                        assert_eq!(
                            y[t * rows + r],
                            acc as f32 * m.row_scale(r) / x.scales()[t],
                            "{isa:?} rows {row_isa:?} {rows}x{cols} t={t} r={r}"
                        );
                    }
                }
            }
        }
    }
}
