//! Dense f32 and f16 products with the same shape convention as [`crate::matmul`]
//! (`out[t·rows + r] = Σ_k W[r][k]·x[t][k]`): the baselines the ternary kernels are
//! measured against, and the path for the high-precision parts of a model.
//!
//! Products of many tokens go through the `gemm` crate (the CPU GEMM candle uses). For one
//! token, `gemm` is not tuned, so a plain loop with eight independent accumulators (which
//! the compiler vectorizes, for every ISA) streams each row at memory speed; the f16 GEMV
//! widens 1024 weights at a time into a stack buffer with `half`'s slice conversion.
//!
//! `gemm` holds the products of matrices, `exp` an exponential every backend computes to the
//! same bits, `vecops` the vector ops attention and
//! the KV cache use (dot, axpy, f16 and int8 widening), chosen once per ISA in
//! [`DenseKernels`].

mod attend;
mod exp;
mod gemm;
mod vecops;

pub use attend::{scores, weigh, KvRows};
pub use exp::{exp_f32, exp_sub_f32, EXP_COEFFS, EXP_LN2_HI, EXP_LN2_MID, EXP_LOG2E};
pub use gemm::{
    gemm_f16, gemm_f32, gemm_f32_ex, gemm_f32_pool, gemm_strided, gemv_f16, gemv_f32, MatRef,
};
pub use vecops::{axpy_f32, dot_f32, widen_f16, widen_q8, DenseKernels};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::ThreadPool;
    use half::f16;

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
