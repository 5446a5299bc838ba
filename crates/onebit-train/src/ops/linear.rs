//! Dense linear layer `out = x · Wᵀ` (the output head), W `rows × cols` row-major, through
//! the `gemm` crate.

use onebit_kernels::dense::{gemm_f32_pool, MatRef};
use onebit_kernels::ThreadPool;

/// `out (tokens × rows) = x (tokens × cols) · Wᵀ`.
pub fn linear_forward(
    pool: &ThreadPool,
    out: &mut [f32],
    x: &[f32],
    w: &[f32],
    (tokens, rows, cols): (usize, usize, usize),
) {
    gemm_f32_pool(
        pool,
        (tokens, rows, cols),
        out,
        rows,
        MatRef::rows(x, cols),
        MatRef::transposed(w, cols),
        1.0,
        false,
    );
}

/// `dx += dout · W`, `dw += doutᵀ · x`.
#[allow(clippy::too_many_arguments)] // llm.c order: outputs, inputs, sizes
pub fn linear_backward(
    pool: &ThreadPool,
    dx: Option<&mut [f32]>,
    dw: &mut [f32],
    dout: &[f32],
    x: &[f32],
    w: &[f32],
    (tokens, rows, cols): (usize, usize, usize),
) {
    if let Some(dx) = dx {
        gemm_f32_pool(
            pool,
            (tokens, cols, rows),
            dx,
            cols,
            MatRef::rows(dout, rows),
            MatRef::rows(w, cols),
            1.0,
            true,
        );
    }
    gemm_f32_pool(
        pool,
        (rows, cols, tokens),
        dw,
        cols,
        MatRef::transposed(dout, rows),
        MatRef::rows(x, cols),
        1.0,
        true,
    );
}
