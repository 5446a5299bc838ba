//! Quantizers: absmean ternarization of weights (per tensor), per-token int8 absmax
//! activations ([`ActQuant`], BitNet b1.58), and llama.cpp's Q8_K blocks for the TQ types.
//! All rounding is half to even, as bitnet.cpp and ggml's `nearest_int` do.

use crate::aligned::AlignedBuf;
use half::bf16;

/// Smallest weight scale and activation absmax, as in BitNet b1.58.
pub const EPS: f32 = 1e-5;

/// Every activation row is zero-padded to a multiple of this, the least common multiple
/// of the block lengths of all layouts (T2: 256, B3: 320), so any kernel can read whole blocks.
pub const ACT_ALIGN: usize = 1280;

/// Ternarizes weights per tensor: `s = max(mean|W|, 1e-5)`, `T = clamp(round(W/s), -1, 1)`.
/// Returns the trits (same order as `w`) and `s`.
pub fn ternarize_absmean(w: &[f32]) -> (Vec<i8>, f32) {
    let mean = w.iter().map(|v| v.abs() as f64).sum::<f64>() / w.len().max(1) as f64;
    let s = (mean as f32).max(EPS);
    let t = w.iter().map(|&v| (v / s).round_ties_even().clamp(-1.0, 1.0) as i8).collect();
    (t, s)
}

/// Writes `clamp(round_half_even(v/γ), -1, 1)` of every `w` into `dst` (the rule of
/// [`ternarize_absmean`] for a γ found elsewhere, e.g. the trainer's absmean): training
/// re-ternarizes every weight at every step, and baseline x86-64 code does it one value at a
/// time.
pub fn ternarize_into(w: &[f32], gamma: f32, dst: &mut [i8]) {
    assert_eq!(w.len(), dst.len(), "ternarize_into: lengths");
    #[cfg(target_arch = "x86_64")]
    if crate::CpuFeatures::get().avx2 {
        // SAFETY: the CPU has AVX2 (checked once at first use).
        return unsafe { ternarize_into_avx2(w, gamma, dst) };
    }
    ternarize_into_portable(w, gamma, dst)
}

/// [`ternarize_into_portable`] compiled for AVX2: the same operations, so the same bits.
///
/// # Safety
/// The CPU has AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn ternarize_into_avx2(w: &[f32], gamma: f32, dst: &mut [i8]) {
    ternarize_into_portable(w, gamma, dst)
}

/// The definition of [`ternarize_into`], a value at a time ([`ternarize_value`]).
#[inline(always)]
pub fn ternarize_into_portable(w: &[f32], gamma: f32, dst: &mut [i8]) {
    for (t, &v) in dst.iter_mut().zip(w) {
        *t = ternarize_value(v, gamma);
    }
}

/// One weight's trit, `clamp(round_half_even(v/γ), -1, 1)` (NaN: 0). Clamped to ±2 first,
/// rounded by adding 1.5·2²³ and reading the integer out of the low mantissa bits, as
/// [`quantize_row_portable`] does: no libm `round_ties_even` and no saturating float→int
/// conversion, so the loops over it vectorize.
#[inline(always)]
pub fn ternarize_value(v: f32, gamma: f32) -> i8 {
    let y = (v / gamma).clamp(-2.0, 2.0);
    let y = if y.is_nan() { 0.0 } else { y };
    (((y + 12_582_912.0f32).to_bits() as i32) - 0x4B40_0000).clamp(-1, 1) as i8
}

/// [`ternarize_absmean`] for bf16 master weights.
pub fn ternarize_absmean_bf16(w: &[bf16]) -> (Vec<i8>, f32) {
    let f: Vec<f32> = w.iter().map(|v| v.to_f32()).collect();
    ternarize_absmean(&f)
}

/// Per-token int8 activations with their scales, reused across calls.
///
/// Row t holds `q[t·padded .. t·padded + cols]` = `clamp(round(x·a_t), -128, 127)` with
/// `a_t = 127 / max(|x_t|, 1e-5)`, zeros up to `padded`; `sum[t]` = Σ q (for kernels that
/// multiply unsigned codes w+1 and subtract it).
#[derive(Clone, Debug, Default)]
pub struct ActQuant {
    cols: usize,
    padded: usize,
    tokens: usize,
    /// On a cache line, so every row is ([`ACT_ALIGN`] is a multiple of 64): the kernels
    /// and AMX tile loads read rows 64 bytes at a time.
    q: AlignedBuf<i8>,
    scale: Vec<f32>,
    sum: Vec<i32>,
}

impl ActQuant {
    /// Buffers for up to `max_tokens` rows of `cols` values; quantizing within that allocates nothing.
    pub fn new(max_tokens: usize, cols: usize) -> Self {
        let padded = cols.div_ceil(ACT_ALIGN) * ACT_ALIGN;
        ActQuant {
            cols,
            padded,
            tokens: 0,
            q: AlignedBuf::new(max_tokens * padded),
            scale: vec![0.0; max_tokens],
            sum: vec![0; max_tokens],
        }
    }

    /// Quantizes `x` (`tokens x cols`, row-major); grows the buffers only when `tokens` exceeds them.
    ///
    /// # Panics
    /// When `x` is not a whole number of rows of `cols` values (callers size their buffers
    /// from the same shape; [`ActQuant::try_quantize`] checks instead).
    pub fn quantize(&mut self, x: &[f32]) {
        assert_eq!(x.len() % self.cols, 0, "ActQuant: input is not a whole number of rows");
        let tokens = x.len() / self.cols;
        if tokens * self.padded > self.q.len() {
            self.q.resize(tokens * self.padded);
            self.scale.resize(tokens, 0.0);
            self.sum.resize(tokens, 0);
        }
        self.tokens = tokens;
        for (t, row) in x.chunks_exact(self.cols).enumerate() {
            let dst = &mut self.q.as_mut_slice()[t * self.padded..(t + 1) * self.padded];
            let (s, sum) = quantize_row(row, &mut dst[..self.cols]);
            dst[self.cols..].fill(0);
            self.scale[t] = s;
            self.sum[t] = sum;
        }
    }

    /// [`ActQuant::quantize`] returning an error for input that is not whole rows.
    pub fn try_quantize(&mut self, x: &[f32]) -> crate::Result<()> {
        if !x.len().is_multiple_of(self.cols) {
            return Err(crate::Error::Mismatch {
                op: "ActQuant rows",
                expected: x.len().div_ceil(self.cols) * self.cols,
                found: x.len(),
            });
        }
        self.quantize(x);
        Ok(())
    }

    /// [`ActQuant::quantize`] with rows split over the pool (prefill-sized inputs).
    pub fn quantize_par(&mut self, x: &[f32], pool: &crate::ThreadPool) {
        assert_eq!(x.len() % self.cols, 0, "ActQuant: input is not a whole number of rows");
        let tokens = x.len() / self.cols;
        if tokens < 2 * pool.threads() {
            return self.quantize(x);
        }
        if tokens * self.padded > self.q.len() {
            self.q.resize(tokens * self.padded);
            self.scale.resize(tokens, 0.0);
            self.sum.resize(tokens, 0);
        }
        self.tokens = tokens;
        let cols = self.cols;
        pool.run_rows(
            tokens,
            (&mut self.q.as_mut_slice()[..tokens * self.padded], self.padded),
            &mut self.scale[..tokens],
            &mut self.sum[..tokens],
            &|rows, q, scale, sum| {
                let padded = q.len() / rows.len();
                for (i, t) in rows.enumerate() {
                    let dst = &mut q[i * padded..(i + 1) * padded];
                    let (a, s) = quantize_row(&x[t * cols..(t + 1) * cols], &mut dst[..cols]);
                    dst[cols..].fill(0);
                    scale[i] = a;
                    sum[i] = s;
                }
            },
        );
    }

    /// Builds from already-quantized rows (tests and training use this); `q` is `tokens x cols`.
    pub fn from_quantized(q: &[i8], cols: usize, scales: &[f32]) -> Self {
        let tokens = scales.len();
        let mut a = ActQuant::new(tokens, cols);
        a.tokens = tokens;
        for t in 0..tokens {
            let src = &q[t * cols..(t + 1) * cols];
            a.q.as_mut_slice()[t * a.padded..t * a.padded + cols].copy_from_slice(src);
            a.scale[t] = scales[t];
            a.sum[t] = src.iter().map(|&v| v as i32).sum();
        }
        a
    }

    /// Logical columns.
    pub fn cols(&self) -> usize {
        self.cols
    }
    /// Row stride of [`ActQuant::q`] (cols rounded up to [`ACT_ALIGN`]).
    pub fn padded_cols(&self) -> usize {
        self.padded
    }
    /// Rows quantized by the last call.
    pub fn tokens(&self) -> usize {
        self.tokens
    }
    /// All rows, `tokens x padded_cols`.
    pub fn q(&self) -> &[i8] {
        &self.q.as_slice()[..self.tokens * self.padded]
    }
    /// Row `t`, padded.
    pub fn row(&self, t: usize) -> &[i8] {
        &self.q.as_slice()[t * self.padded..(t + 1) * self.padded]
    }
    /// The per-token scales `a_t = 127 / absmax` (output = acc · w_scale / a_t).
    pub fn scales(&self) -> &[f32] {
        &self.scale[..self.tokens]
    }
    /// Σ q per token.
    pub fn sums(&self) -> &[i32] {
        &self.sum[..self.tokens]
    }
}

/// Quantizes one row into `dst`; returns (a, Σq). NaN inputs count as 0.
pub fn quantize_row(x: &[f32], dst: &mut [i8]) -> (f32, i32) {
    #[cfg(target_arch = "x86_64")]
    if crate::CpuFeatures::get().avx2 {
        // SAFETY: the CPU has AVX2 (checked once at first use).
        return unsafe { quantize_row_avx2(x, dst) };
    }
    quantize_row_portable(x, dst)
}

/// [`quantize_row_portable`] compiled for AVX2: the same operations in the same order
/// (no FMA contraction), so the same bits, on 8 lanes instead of baseline x86-64's 4
/// (prefill and training quantize millions of activations a step).
///
/// # Safety
/// The CPU has AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn quantize_row_avx2(x: &[f32], dst: &mut [i8]) -> (f32, i32) {
    quantize_row_portable(x, dst)
}

/// The definition of [`quantize_row`], in code that vectorizes on every target.
#[inline(always)]
pub fn quantize_row_portable(x: &[f32], dst: &mut [i8]) -> (f32, i32) {
    // Eight independent lanes so the loops vectorize on every target.
    let mut lanes = [EPS; 8];
    let chunks = x.chunks_exact(8);
    for v in chunks.remainder() {
        let a = v.abs();
        lanes[0] = if a > lanes[0] { a } else { lanes[0] };
    }
    for c in chunks {
        for i in 0..8 {
            let a = c[i].abs();
            lanes[i] = if a > lanes[i] { a } else { lanes[i] };
        }
    }
    let max = lanes.iter().fold(EPS, |m, &v| if v > m { v } else { m });
    let a = 127.0 / max;
    let mut sum = 0i32;
    for (d, &v) in dst.iter_mut().zip(x) {
        // Clamp, then round by adding 1.5·2²³ and read the integer out of the low mantissa
        // bits: the same value as round-half-even then clamp, and no saturating float→int
        // conversion, so the loop vectorizes. NaN becomes 0.
        let y = (v * a).clamp(-128.0, 127.0);
        let y = if y.is_nan() { 0.0 } else { y };
        let q = ((y + 12_582_912.0f32).to_bits() as i32) - 0x4B40_0000;
        sum += q;
        *d = q as i8;
    }
    (a, sum)
}

/// Round half to even for |x| < 2²²: adding and removing 1.5·2²³ leaves the float unit
/// to round in the default (nearest-even) mode. Unlike `f32::round_ties_even`, this needs no
/// SSE4.1 and vectorizes on baseline x86-64. Larger values (or NaN) are passed through; the
/// callers clamp to ±128 right after, so only the small range matters.
#[inline(always)]
pub fn round_half_even_small(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0;
    if x.abs() < 4_194_304.0 {
        (x + MAGIC) - MAGIC
    } else {
        x
    }
}

/// The one epilogue every ternary kernel shares, so all of them round identically:
/// `acc · (w_scale / a_t)`. The factor depends only on the token, so kernels that store a
/// whole column hoist it ([`dequant_factor`]) and get the same bits.
#[inline]
pub fn dequantize(acc: i32, act_scale: f32, w_scale: f32) -> f32 {
    acc as f32 * dequant_factor(act_scale, w_scale)
}

/// `w_scale / a_t`, the per-token factor of [`dequantize`].
#[inline]
pub fn dequant_factor(act_scale: f32, w_scale: f32) -> f32 {
    w_scale / act_scale
}

/// llama.cpp `block_q8_K`: the activation partner of TQ1_0/TQ2_0.
#[derive(Clone, Debug, PartialEq)]
pub struct Q8K {
    /// Dequantization multiplier (negative when the largest-magnitude value is positive).
    pub d: f32,
    /// 256 int8 values.
    pub qs: [i8; 256],
    /// Sums of each 16 values.
    pub bsums: [i16; 16],
}

/// Quantizes `x` (a multiple of 256 long) into Q8_K blocks exactly as ggml's reference does.
pub fn quantize_q8k(x: &[f32]) -> Vec<Q8K> {
    assert_eq!(x.len() % 256, 0, "Q8_K needs a multiple of 256 values");
    x.chunks_exact(256)
        .map(|blk| {
            let (mut amax, mut max) = (0.0f32, 0.0f32);
            for &v in blk {
                if v.abs() > amax {
                    amax = v.abs();
                    max = v;
                }
            }
            let mut b = Q8K { d: 0.0, qs: [0; 256], bsums: [0; 16] };
            if amax == 0.0 {
                return b;
            }
            let iscale = -127.0 / max;
            for (q, &v) in b.qs.iter_mut().zip(blk) {
                *q = ((iscale * v).round_ties_even() as i32).min(127) as i8;
            }
            for (s, chunk) in b.bsums.iter_mut().zip(b.qs.chunks_exact(16)) {
                *s = chunk.iter().map(|&v| v as i16).sum();
            }
            b.d = 1.0 / iscale;
            b
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ternarize_into_is_the_rule_value_by_value() {
        let gamma = 0.37f32;
        let mut w: Vec<f32> =
            (0..1000).map(|i| ((i * 7919) % 2001) as f32 / 1000.0 - 1.0).collect();
        // Exact ties, both signs, and values no ternary range holds.
        w.extend([0.5, 1.5, -0.5, -1.5, 2.5].map(|t| t * gamma));
        w.extend([f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 0.0, -0.0, 1e30, -1e-30]);
        let mut got = vec![9i8; w.len()];
        ternarize_into(&w, gamma, &mut got);
        for (i, (&v, &t)) in w.iter().zip(&got).enumerate() {
            assert_eq!(t, ternarize_value(v, gamma), "{i}: {v}");
            if v.is_finite() {
                assert_eq!(t, (v / gamma).round_ties_even().clamp(-1.0, 1.0) as i8, "{v}");
            }
        }
        assert_eq!(&got[1000..1005], &[0, 1, 0, -1, 1]);
    }

    #[test]
    fn quantize_row_dispatch_matches_the_portable_definition() {
        let mut seed = 11u32;
        for len in [1usize, 7, 8, 9, 31, 64, 100, 257] {
            let x: Vec<f32> = (0..len)
                .map(|i| {
                    seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    let v = (seed >> 8) as f32 / (1u32 << 24) as f32 * 8.0 - 4.0;
                    if i == 3 {
                        f32::NAN
                    } else {
                        v
                    }
                })
                .collect();
            let (mut a, mut b) = (vec![0i8; len], vec![0i8; len]);
            let got = quantize_row(&x, &mut a);
            let want = quantize_row_portable(&x, &mut b);
            assert_eq!((got.0.to_bits(), got.1, &a), (want.0.to_bits(), want.1, &b), "len {len}");
        }
    }

    #[test]
    fn quantize_row_matches_round_half_even_definition() {
        let mut x: Vec<f32> = (0..4000).map(|i| ((i * 7919) % 4001) as f32 / 40.0 - 50.0).collect();
        // Exact ties after scaling by 127/50: ±0.5/a steps, and a NaN that must count as 0.
        x.extend([
            50.0,
            -50.0,
            0.5 * 50.0 / 127.0,
            1.5 * 50.0 / 127.0,
            -2.5 * 50.0 / 127.0,
            f32::NAN,
        ]);
        let mut q = vec![0i8; x.len()];
        let (a, sum) = quantize_row(&x, &mut q);
        let mut want_sum = 0;
        for (&v, &got) in x.iter().zip(&q) {
            let want =
                if v.is_nan() { 0 } else { (v * a).round_ties_even().clamp(-128.0, 127.0) as i32 };
            assert_eq!(got as i32, want, "x = {v}");
            want_sum += want;
        }
        assert_eq!(sum, want_sum);
    }

    #[test]
    fn absmean_hand_example() {
        // mean|W| = (0.5+1+0+2)/4 = 0.875; W/s = 0.571, -1.143, 0, 2.286.
        let (t, s) = ternarize_absmean(&[0.5, -1.0, 0.0, 2.0]);
        assert_eq!(s, 0.875);
        assert_eq!(t, vec![1, -1, 0, 1]);
    }

    #[test]
    fn act_rounds_half_to_even_and_pads() {
        // absmax 127 -> a = 1: 2.5 -> 2, 3.5 -> 4, -0.5 -> 0.
        let mut a = ActQuant::new(1, 4);
        a.quantize(&[2.5, 3.5, -0.5, 127.0]);
        assert_eq!(&a.row(0)[..4], &[2, 4, 0, 127]);
        assert_eq!(a.row(0).len(), ACT_ALIGN);
        assert!(a.row(0)[4..].iter().all(|&v| v == 0));
        assert_eq!(a.sums(), &[133]);
        assert_eq!(a.scales(), &[1.0]);
    }

    #[test]
    fn act_zero_row_uses_eps() {
        let mut a = ActQuant::new(1, 3);
        a.quantize(&[0.0; 3]);
        assert_eq!(a.scales(), &[127.0 / EPS]);
        assert_eq!(&a.row(0)[..3], &[0, 0, 0]);
    }

    #[test]
    fn parallel_quantize_matches_serial_and_std_rounding() {
        let (tokens, cols) = (37, 300);
        let x: Vec<f32> =
            (0..tokens * cols).map(|i| ((i * 7919) % 2001) as f32 / 7.0 - 140.0).collect();
        let mut a = ActQuant::new(1, cols);
        a.quantize(&x);
        let mut b = ActQuant::new(1, cols);
        b.quantize_par(&x, &crate::ThreadPool::new(3));
        assert_eq!(a.q(), b.q());
        assert_eq!(a.scales(), b.scales());
        assert_eq!(a.sums(), b.sums());
        for t in 0..tokens {
            let row = &x[t * cols..(t + 1) * cols];
            let s = 127.0 / row.iter().fold(EPS, |m, v| m.max(v.abs()));
            for (k, &v) in row.iter().enumerate() {
                let want = (v * s).round_ties_even().clamp(-128.0, 127.0) as i8;
                assert_eq!(a.row(t)[k], want);
            }
        }
    }

    #[test]
    fn q8k_matches_ggml_sign_convention() {
        let mut x = vec![0.0f32; 256];
        x[0] = 2.0;
        x[1] = -1.0;
        x[17] = 0.5;
        let b = &quantize_q8k(&x)[0];
        assert_eq!(b.qs[0], -127);
        assert_eq!(b.qs[1], 64); // -127/2 * -1 = 63.5 -> 64 (half to even)
        assert_eq!(b.qs[17], -32); // -31.75 -> -32
        assert_eq!(b.bsums[0], -63);
        assert_eq!(b.bsums[1], -32);
        assert!((b.d - (-2.0 / 127.0)).abs() < 1e-9);
    }
}
