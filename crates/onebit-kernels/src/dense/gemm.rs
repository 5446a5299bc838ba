//! Dense f32/f16 GEMV (a plain loop the compiler vectorizes) and GEMM (the `gemm` crate).

use super::vecops::dot_f32;
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
    gemv_rows(pool, &mut out[..rows], &|row, _| {
        dot_f32(&w[row * cols..(row + 1) * cols], &x[..cols])
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
    gemv_rows(pool, &mut out[..rows], &|row, buf| {
        let wr = &w[row * cols..(row + 1) * cols];
        let mut acc = 0f32;
        for (wc, xc) in wr.chunks(GEMV_CHUNK).zip(x[..cols].chunks(GEMV_CHUNK)) {
            let b = &mut buf[..wc.len()];
            half::slice::HalfFloatSliceExt::convert_to_f32_slice(wc, b);
            acc += dot_f32(b, xc);
        }
        acc
    });
}

/// f16 weights are widened this many at a time into a per-thread stack buffer.
const GEMV_CHUNK: usize = 1024;

/// `out[r] = row_dot(r, scratch)` with rows split over the pool in multiples of 8; each thread
/// passes its own [`GEMV_CHUNK`]-float stack buffer as scratch.
fn gemv_rows(
    pool: &ThreadPool,
    out: &mut [f32],
    row_dot: &(dyn Fn(usize, &mut [f32; GEMV_CHUNK]) -> f32 + Sync),
) {
    let rows = out.len();
    let out_ptr = SyncPtr(out.as_mut_ptr());
    let threads = pool.threads();
    pool.run(&|i| {
        let mut buf = [0f32; GEMV_CHUNK];
        for row in split(rows, threads, i, 8) {
            let v = row_dot(row, &mut buf);
            // SAFETY: rows are split disjointly between threads; row < rows = out.len().
            unsafe { *out_ptr.get().add(row) = v };
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
