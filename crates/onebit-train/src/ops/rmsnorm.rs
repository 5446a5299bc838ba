//! RMSNorm: `out = x · rstd · w` with `rstd = 1 / sqrt(mean(x²) + eps)` per row.

use onebit_kernels::ThreadPool;

/// Normalizes each row of `x` (`rows × cols`); saves `rstd` (one per row) for the backward.
#[allow(clippy::too_many_arguments)] // llm.c order: outputs, inputs, sizes
pub fn rmsnorm_forward(
    pool: &ThreadPool,
    out: &mut [f32],
    rstd: &mut [f32],
    x: &[f32],
    w: &[f32],
    rows: usize,
    cols: usize,
    eps: f32,
) {
    pool.run_parts(rows, [(out, cols), (rstd, 1)], &|_, r, [out, rstd]| {
        for (i, t) in r.enumerate() {
            let xr = &x[t * cols..(t + 1) * cols];
            let ms = xr.iter().map(|v| v * v).sum::<f32>() / cols as f32;
            let s = 1.0 / (ms + eps).sqrt();
            rstd[i] = s;
            for ((o, &v), &g) in out[i * cols..(i + 1) * cols].iter_mut().zip(xr).zip(w) {
                *o = v * s * g;
            }
        }
    });
}

/// `dx += ∂L/∂x`, `dw += ∂L/∂w` given `dout`.
#[allow(clippy::too_many_arguments)] // llm.c order: outputs, inputs, sizes
pub fn rmsnorm_backward(
    pool: &ThreadPool,
    dx: &mut [f32],
    dw: &mut [f32],
    dout: &[f32],
    x: &[f32],
    w: &[f32],
    rstd: &[f32],
    rows: usize,
    cols: usize,
) {
    pool.run_parts(rows, [(dx, cols)], &|_, r, [dx]| {
        for (i, t) in r.enumerate() {
            let (xr, dr) = (&x[t * cols..(t + 1) * cols], &dout[t * cols..(t + 1) * cols]);
            let s = rstd[t];
            // d/dx of x·s·w: s·(dy·w) − x·s³·mean(dy·w·x).
            let dot: f32 = xr.iter().zip(dr).zip(w).map(|((&v, &d), &g)| v * d * g).sum();
            let k = dot * s * s * s / cols as f32;
            for (((o, &v), &d), &g) in
                dx[i * cols..(i + 1) * cols].iter_mut().zip(xr).zip(dr).zip(w)
            {
                *o += s * d * g - v * k;
            }
        }
    });
    for t in 0..rows {
        let s = rstd[t];
        let (xr, dr) = (&x[t * cols..(t + 1) * cols], &dout[t * cols..(t + 1) * cols]);
        for ((g, &v), &d) in dw.iter_mut().zip(xr).zip(dr) {
            *g += d * v * s;
        }
    }
}
