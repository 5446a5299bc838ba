//! Dense f32 and f16 products with the same shape convention as [`crate::matmul`]
//! (`out[t·rows + r] = Σ_k W[r][k]·x[t][k]`): the baselines the ternary kernels are
//! measured against, and the path for the high-precision parts of a model.
//!
//! Products of many tokens go through the `gemm` crate (the CPU GEMM candle uses). For one
//! token, `gemm` is not tuned, so a plain loop with eight independent accumulators (which
//! the compiler vectorizes, for every ISA) streams each row at memory speed; the f16 GEMV
//! widens 1024 weights at a time into a stack buffer with `half`'s slice conversion.

use crate::dispatch::{CpuFeatures, Isa};
use crate::error::{Error, Result};
use crate::pool::{split, SyncPtr, ThreadPool};
use half::f16;

/// `y = W·x` for one token, f32 weights `rows x cols`, rows split over the pool.
pub fn gemv_f32(
    pool: &ThreadPool,
    w: &[f32],
    rows: usize,
    cols: usize,
    x: &[f32],
    out: &mut [f32],
) {
    assert!(
        w.len() >= rows * cols && x.len() >= cols && out.len() >= rows,
        "gemv_f32 operand sizes"
    );
    let out_ptr = SyncPtr(out.as_mut_ptr());
    let threads = pool.threads();
    pool.run(&|i| {
        let r = split(rows, threads, i, 8);
        for row in r {
            let v = dot_f32(&w[row * cols..(row + 1) * cols], &x[..cols]);
            // SAFETY: rows are split disjointly between threads; row < rows ≤ out.len().
            unsafe { *out_ptr.get().add(row) = v };
        }
    });
}

/// `y = W·x` for one token, f16 weights.
pub fn gemv_f16(
    pool: &ThreadPool,
    w: &[f16],
    rows: usize,
    cols: usize,
    x: &[f32],
    out: &mut [f32],
) {
    assert!(
        w.len() >= rows * cols && x.len() >= cols && out.len() >= rows,
        "gemv_f16 operand sizes"
    );
    let out_ptr = SyncPtr(out.as_mut_ptr());
    let threads = pool.threads();
    pool.run(&|i| {
        let r = split(rows, threads, i, 8);
        let mut buf = [0f32; 1024];
        for row in r {
            let wr = &w[row * cols..(row + 1) * cols];
            let mut acc = 0f32;
            for (wc, xc) in wr.chunks(1024).zip(x[..cols].chunks(1024)) {
                let b = &mut buf[..wc.len()];
                half::slice::HalfFloatSliceExt::convert_to_f32_slice(wc, b);
                acc += dot_f32(b, xc);
            }
            // SAFETY: rows are split disjointly between threads.
            unsafe { *out_ptr.get().add(row) = acc };
        }
    });
}

/// `out = X·Wᵀ` for `tokens` tokens through the `gemm` crate, f32 weights.
pub fn gemm_f32(
    threads: usize,
    w: &[f32],
    rows: usize,
    cols: usize,
    x: &[f32],
    tokens: usize,
    out: &mut [f32],
) {
    gemm_any(threads, w, rows, cols, x, tokens, out)
}

/// `out = X·Wᵀ` through the `gemm` crate, f16 weights and activations (f16 output widened).
pub fn gemm_f16(
    threads: usize,
    w: &[f16],
    rows: usize,
    cols: usize,
    x: &[f16],
    tokens: usize,
    out: &mut [f16],
) {
    gemm_any(threads, w, rows, cols, x, tokens, out)
}

fn gemm_any<T>(
    threads: usize,
    w: &[T],
    rows: usize,
    cols: usize,
    x: &[T],
    tokens: usize,
    out: &mut [T],
) where
    T: 'static + Copy + num_zero::Zero,
{
    assert!(
        w.len() >= rows * cols && x.len() >= tokens * cols && out.len() >= tokens * rows,
        "gemm operand sizes"
    );
    let par = if threads > 1 { gemm::Parallelism::Rayon(threads) } else { gemm::Parallelism::None };
    // SAFETY: the strides describe X (tokens x cols, row-major), Wᵀ (cols x rows, viewing
    // W row-major) and out (tokens x rows, row-major), all within the asserted lengths.
    unsafe {
        gemm::gemm(
            tokens,
            rows,
            cols,
            out.as_mut_ptr(),
            1,
            rows as isize,
            false,
            x.as_ptr(),
            1,
            cols as isize,
            w.as_ptr(),
            cols as isize,
            1,
            T::zero(),
            T::one(),
            false,
            false,
            false,
            par,
        )
    }
}

/// `dst[i·dst_rs + j] = alpha · Σ_k a[i·a_rs + k·a_cs] · b[k·b_rs + j·b_cs]` for i < m, j < n,
/// overwriting `dst`, on the calling thread (for callers that already split work, such as
/// attention per head). Strides let it read K/V cache rows and transposes in place.
#[allow(clippy::too_many_arguments)] // one call mirrors one BLAS call: shapes and strides
pub fn gemm_strided(
    (m, n, k): (usize, usize, usize),
    dst: &mut [f32],
    dst_rs: usize,
    (a, a_rs, a_cs): (&[f32], usize, usize),
    (b, b_rs, b_cs): (&[f32], usize, usize),
    alpha: f32,
) {
    gemm_f32_ex(
        1,
        (m, n, k),
        dst,
        dst_rs,
        MatRef { data: a, rs: a_rs, cs: a_cs },
        MatRef { data: b, rs: b_rs, cs: b_cs },
        alpha,
        false,
    )
}

/// A read-only strided f32 matrix: element (i, j) is `data[i·rs + j·cs]`, so a transpose is
/// the same data with the strides swapped.
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a> {
    /// The backing slice.
    pub data: &'a [f32],
    /// Row stride in elements.
    pub rs: usize,
    /// Column stride in elements.
    pub cs: usize,
}

impl<'a> MatRef<'a> {
    /// A row-major matrix with `cols` columns.
    pub fn rows(data: &'a [f32], cols: usize) -> Self {
        MatRef { data, rs: cols, cs: 1 }
    }
    /// The transpose of a row-major matrix with `cols` columns.
    pub fn transposed(data: &'a [f32], cols: usize) -> Self {
        MatRef { data, rs: 1, cs: cols }
    }
}

/// `dst = alpha·A·B (+ dst when accumulate)` with `A` m×k and `B` k×n strided, `dst` m×n
/// row-major with row stride `dst_rs`, through the `gemm` crate on up to `threads` threads
/// (rayon inside `gemm`). Training uses it for every dense product and its transposes.
#[allow(clippy::too_many_arguments)] // one call mirrors one BLAS call: shapes and operands
pub fn gemm_f32_ex(
    threads: usize,
    (m, n, k): (usize, usize, usize),
    dst: &mut [f32],
    dst_rs: usize,
    a: MatRef<'_>,
    b: MatRef<'_>,
    alpha: f32,
    accumulate: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                dst[i * dst_rs..i * dst_rs + n].fill(0.0);
            }
        }
        return;
    }
    let last = |rows: usize, rs: usize, cols: usize, cs: usize| (rows - 1) * rs + (cols - 1) * cs;
    assert!(last(m, dst_rs, n, 1) < dst.len(), "gemm_f32_ex: dst too short");
    assert!(last(m, a.rs, k, a.cs) < a.data.len(), "gemm_f32_ex: a too short");
    assert!(last(k, b.rs, n, b.cs) < b.data.len(), "gemm_f32_ex: b too short");
    assert!(dst_rs >= n, "gemm_f32_ex: rows of dst overlap");
    // Small products lose more to the fork than they gain.
    let par = if threads > 1 && m * n * k >= 1 << 18 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the asserts above bound every index the strides describe within each slice;
    // dst rows do not overlap (dst_rs ≥ n) and dst is the only output, borrowed mutably.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_rs as isize,
            accumulate,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            if accumulate { 1.0 } else { 0.0 },
            alpha,
            false,
            false,
            false,
            par,
        )
    }
}

/// [`gemm_f32_ex`] with the rows of `dst` split over `pool` (each thread runs `gemm`
/// single-threaded on its block), so dense products share the kernels' threads instead of
/// waking rayon's: on a 2-core machine two spinning pools steal each other's cores.
#[allow(clippy::too_many_arguments)] // one call mirrors one BLAS call: shapes and operands
pub fn gemm_f32_pool(
    pool: &ThreadPool,
    (m, n, k): (usize, usize, usize),
    dst: &mut [f32],
    dst_rs: usize,
    a: MatRef<'_>,
    b: MatRef<'_>,
    alpha: f32,
    accumulate: bool,
) {
    let threads = pool.threads();
    if threads == 1 || m < 2 * threads || m * n * k < 1 << 18 || dst.len() < m * dst_rs {
        return gemm_f32_ex(1, (m, n, k), dst, dst_rs, a, b, alpha, accumulate);
    }
    pool.run_parts(m, [(&mut dst[..m * dst_rs], dst_rs)], &|_, rows, [d]| {
        let a_part = MatRef { data: &a.data[rows.start * a.rs..], rs: a.rs, cs: a.cs };
        gemm_f32_ex(1, (rows.len(), n, k), d, dst_rs, a_part, b, alpha, accumulate);
    });
}

mod num_zero {
    /// The scalars `gemm` is called with here.
    pub trait Zero {
        fn zero() -> Self;
        fn one() -> Self;
    }
    impl Zero for f32 {
        fn zero() -> Self {
            0.0
        }
        fn one() -> Self {
            1.0
        }
    }
    impl Zero for half::f16 {
        fn zero() -> Self {
            half::f16::ZERO
        }
        fn one() -> Self {
            half::f16::ONE
        }
    }
}

/// Dot product at [`Isa::selected`] (the compiler vectorizes the same body for AVX-512,
/// AVX2+FMA or the baseline), so every caller in a process rounds alike.
#[inline]
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    (selected().dot)(a, b)
}

/// `y += alpha · x`, dispatched like [`dot_f32`].
#[inline]
pub fn axpy_f32(alpha: f32, x: &[f32], y: &mut [f32]) {
    (selected().axpy)(alpha, x, y)
}

/// `dst[i] = src[i]` widened from IEEE half (F16C / AVX-512 conversions where the CPU has
/// them): the f16 KV cache's read path, called for every attended position.
#[inline]
pub fn widen_f16(src: &[f16], dst: &mut [f32]) {
    selected().widen_f16(src, dst)
}

/// `dst[i] = src[i] · scales[i / block]`: the int8 KV cache's read path.
#[inline]
pub fn widen_q8(src: &[i8], scales: &[f32], block: usize, dst: &mut [f32]) {
    selected().widen_q8(src, scales, block, dst)
}

/// The dense vector kernels of one [`Isa`]: the same safe bodies compiled for wider units.
#[derive(Clone, Copy)]
pub struct DenseKernels {
    isa: Isa,
    dot: fn(&[f32], &[f32]) -> f32,
    axpy: fn(f32, &[f32], &mut [f32]),
    widen_f16: fn(&[f16], &mut [f32]),
    widen_q8: fn(&[i8], &[f32], usize, &mut [f32]),
}

impl DenseKernels {
    /// The kernels for `isa`, if this CPU can run them (AMX uses the AVX-512 ones; NEON
    /// the plain bodies, which the compiler vectorizes for NEON by default).
    pub fn get(isa: Isa) -> Result<DenseKernels> {
        let f = CpuFeatures::get();
        let unavailable = || Error::Unavailable(format!("dense/{}", isa.name()));
        if !f.has(isa) {
            return Err(unavailable());
        }
        let scalar = DenseKernels {
            isa,
            dot: dot_body,
            axpy: axpy_body,
            widen_f16: widen_f16_body,
            widen_q8: widen_q8_body,
        };
        match isa {
            Isa::Scalar | Isa::Neon | Isa::NeonDot => Ok(scalar),
            #[cfg(target_arch = "x86_64")]
            // Every AVX-512 CPU also has AVX2, FMA and F16C; checked so each installed
            // function's feature claim holds.
            Isa::Avx512 | Isa::Amx if f.avx2 && f.fma && f.f16c => Ok(DenseKernels {
                isa,
                dot: x86::dot_avx512,
                axpy: x86::axpy_avx512,
                widen_f16: x86::widen_f16_avx2,
                widen_q8: x86::widen_q8_avx512,
            }),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 if f.fma && f.f16c => Ok(DenseKernels {
                isa,
                dot: x86::dot_avx2,
                axpy: x86::axpy_avx2,
                widen_f16: x86::widen_f16_avx2,
                widen_q8: x86::widen_q8_avx2,
            }),
            _ => Err(unavailable()),
        }
    }

    /// The ISA these kernels were chosen for.
    pub fn isa(&self) -> Isa {
        self.isa
    }

    /// `Σ a[i]·b[i]` over the shorter of the two.
    pub fn dot(&self, a: &[f32], b: &[f32]) -> f32 {
        (self.dot)(a, b)
    }

    /// `y += alpha · x`.
    pub fn axpy(&self, alpha: f32, x: &[f32], y: &mut [f32]) {
        (self.axpy)(alpha, x, y)
    }

    /// `dst[i] = src[i]` widened from IEEE half.
    pub fn widen_f16(&self, src: &[f16], dst: &mut [f32]) {
        assert_eq!(src.len(), dst.len(), "widen_f16: lengths");
        (self.widen_f16)(src, dst)
    }

    /// `dst[i] = src[i] · scales[i / block]`.
    pub fn widen_q8(&self, src: &[i8], scales: &[f32], block: usize, dst: &mut [f32]) {
        assert!(
            block > 0 && src.len() == dst.len() && scales.len() == src.len().div_ceil(block),
            "widen_q8: lengths"
        );
        (self.widen_q8)(src, scales, block, dst)
    }
}

/// The kernels of [`Isa::selected`], falling back to the plain bodies (AVX2 without FMA).
fn selected() -> &'static DenseKernels {
    static FNS: std::sync::OnceLock<DenseKernels> = std::sync::OnceLock::new();
    FNS.get_or_init(|| {
        DenseKernels::get(Isa::selected())
            .or_else(|_| DenseKernels::get(Isa::Scalar))
            .expect("scalar dense kernels run everywhere")
    })
}

/// Sixteen independent accumulators so the loop vectorizes at any width.
#[inline(always)]
fn dot_body(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let (ac, bc) = (a.chunks_exact(16), b.chunks_exact(16));
    let tail: f32 = ac.remainder().iter().zip(bc.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ac.zip(bc) {
        for i in 0..16 {
            acc[i] = x[i].mul_add(y[i], acc[i]);
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[inline(always)]
fn axpy_body(alpha: f32, x: &[f32], y: &mut [f32]) {
    for (y, &x) in y.iter_mut().zip(x) {
        *y = alpha.mul_add(x, *y);
    }
}

fn widen_f16_body(src: &[f16], dst: &mut [f32]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d = s.to_f32();
    }
}

#[inline(always)]
fn widen_q8_body(src: &[i8], scales: &[f32], block: usize, dst: &mut [f32]) {
    for ((d, s), &k) in dst.chunks_mut(block).zip(src.chunks(block)).zip(scales) {
        for (d, &s) in d.iter_mut().zip(s) {
            *d = f32::from(s) * k;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use half::f16;
    use std::arch::x86_64::*;

    // The bodies are safe code; the wrappers only let the compiler use wider vectors.
    // Calling them is sound because `DenseKernels::get` installs them only after detecting the features.
    #[target_feature(enable = "avx512f,fma")]
    fn dot_512(a: &[f32], b: &[f32]) -> f32 {
        super::dot_body(a, b)
    }
    #[target_feature(enable = "avx512f,fma")]
    fn axpy_512(alpha: f32, x: &[f32], y: &mut [f32]) {
        super::axpy_body(alpha, x, y)
    }
    #[target_feature(enable = "avx2,fma")]
    fn dot_256(a: &[f32], b: &[f32]) -> f32 {
        super::dot_body(a, b)
    }
    #[target_feature(enable = "avx2,fma")]
    fn axpy_256(alpha: f32, x: &[f32], y: &mut [f32]) {
        super::axpy_body(alpha, x, y)
    }
    pub fn dot_avx512(a: &[f32], b: &[f32]) -> f32 {
        // SAFETY: installed only where AVX-512F and FMA were detected.
        unsafe { dot_512(a, b) }
    }
    pub fn axpy_avx512(alpha: f32, x: &[f32], y: &mut [f32]) {
        // SAFETY: as above.
        unsafe { axpy_512(alpha, x, y) }
    }
    #[target_feature(enable = "avx512f")]
    fn widen_q8_512(src: &[i8], scales: &[f32], block: usize, dst: &mut [f32]) {
        super::widen_q8_body(src, scales, block, dst)
    }
    #[target_feature(enable = "avx2")]
    fn widen_q8_256(src: &[i8], scales: &[f32], block: usize, dst: &mut [f32]) {
        super::widen_q8_body(src, scales, block, dst)
    }
    pub fn widen_q8_avx512(src: &[i8], scales: &[f32], block: usize, dst: &mut [f32]) {
        // SAFETY: installed only where AVX-512F was detected.
        unsafe { widen_q8_512(src, scales, block, dst) }
    }
    pub fn widen_q8_avx2(src: &[i8], scales: &[f32], block: usize, dst: &mut [f32]) {
        // SAFETY: installed only where AVX2 was detected.
        unsafe { widen_q8_256(src, scales, block, dst) }
    }

    /// `vcvtph2ps` 8 at a time (F16C, which every AVX2 and AVX-512 CPU has; a 16-wide
    /// AVX-512 version is not needed for a conversion that streams from the KV cache).
    #[target_feature(enable = "avx2,f16c")]
    fn widen_f16_256(src: &[f16], dst: &mut [f32]) {
        let n = src.len().min(dst.len());
        let mut i = 0;
        while i + 8 <= n {
            // SAFETY: i + 8 ≤ n ≤ both lengths; f16 is 2 bytes (repr(transparent) u16).
            unsafe {
                let h = _mm_loadu_si128(src.as_ptr().add(i) as *const __m128i);
                _mm256_storeu_ps(dst.as_mut_ptr().add(i), _mm256_cvtph_ps(h));
            }
            i += 8;
        }
        super::widen_f16_body(&src[i..n], &mut dst[i..n]);
    }
    pub fn widen_f16_avx2(src: &[f16], dst: &mut [f32]) {
        // SAFETY: installed only where AVX2 and F16C were detected.
        unsafe { widen_f16_256(src, dst) }
    }
    pub fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
        // SAFETY: installed only where AVX2 and FMA were detected.
        unsafe { dot_256(a, b) }
    }
    pub fn axpy_avx2(alpha: f32, x: &[f32], y: &mut [f32]) {
        // SAFETY: as above.
        unsafe { axpy_256(alpha, x, y) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strided_gemm_reads_transposes_in_place() {
        // a: 2x3 row-major; b given as its transpose (3x2 stored as 2 rows of 3).
        let a = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let bt = [1.0, 0.0, 2.0, 0.0, 1.0, 0.0];
        let mut d = [0f32; 4];
        gemm_strided((2, 2, 3), &mut d, 2, (&a, 3, 1), (&bt, 1, 3), 0.5);
        // a·btᵀ = [[1+6, 2], [4+12, 5]] · 0.5
        assert_eq!(d, [3.5, 1.0, 8.0, 2.5]);
    }

    #[test]
    fn dense_paths_agree() {
        let (rows, cols, tokens) = (37, 70, 3);
        let w: Vec<f32> = (0..rows * cols).map(|i| ((i * 7) % 13) as f32 - 6.0).collect();
        let x: Vec<f32> = (0..tokens * cols).map(|i| ((i * 5) % 11) as f32 - 5.0).collect();
        let pool = ThreadPool::new(2);
        let mut y = vec![0f32; tokens * rows];
        gemm_f32(2, &w, rows, cols, &x, tokens, &mut y);
        for t in 0..tokens {
            let mut g = vec![0f32; rows];
            gemv_f32(&pool, &w, rows, cols, &x[t * cols..], &mut g);
            let wh: Vec<f16> = w.iter().map(|&v| f16::from_f32(v)).collect();
            let mut h = vec![0f32; rows];
            gemv_f16(&pool, &wh, rows, cols, &x[t * cols..], &mut h);
            for r in 0..rows {
                let exact: f32 = (0..cols).map(|k| w[r * cols + k] * x[t * cols + k]).sum();
                assert_eq!(g[r], exact);
                assert_eq!(h[r], exact);
                assert_eq!(y[t * rows + r], exact);
            }
        }
    }

    #[test]
    fn widening_matches_scalar_on_ragged_lengths() {
        let mut seed = 7u64;
        let mut next = || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (seed >> 33) as u32
        };
        for n in [0usize, 1, 7, 8, 15, 16, 17, 31, 32, 33, 128, 129, 1000] {
            // Every f16 bit pattern class: normals, subnormals, ±0, ±inf, NaN (compared as NaN).
            let src: Vec<f16> = (0..n).map(|_| f16::from_bits(next() as u16)).collect();
            let mut got = vec![0f32; n];
            widen_f16(&src, &mut got);
            for (g, s) in got.iter().zip(&src) {
                if s.is_nan() {
                    assert!(g.is_nan()); // quieting may set a payload bit
                } else {
                    assert_eq!(g.to_bits(), s.to_f32().to_bits(), "{s:?}");
                }
            }
            let q: Vec<i8> = (0..n).map(|_| next() as i8).collect();
            for block in [8, 32] {
                let scales: Vec<f32> =
                    (0..n.div_ceil(block)).map(|i| 0.01 * (i + 1) as f32).collect();
                let mut got = vec![0f32; n];
                widen_q8(&q, &scales, block, &mut got);
                for (i, g) in got.iter().enumerate() {
                    assert_eq!(*g, f32::from(q[i]) * scales[i / block]);
                }
            }
        }
    }
}
