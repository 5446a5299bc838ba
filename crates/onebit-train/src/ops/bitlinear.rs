//! BitLinear (BitNet b1.58) with the straight-through estimator, as the BitNet b1.58 papers
//! define it (Ma et al. 2024 and its training-tips follow-up): per-tensor absmean ternary weights `γ·Wq`, per-token
//! int8 absmax activations `Xq/s`, `Y = (Xq·Wqᵀ)·γ/s`. The forward runs on the integer
//! kernels of onebit-kernels (the same code the engine decodes with); the backward is the
//! STE: `dX = dY·(γ·Wq)` and `dW = dYᵀ·(Xq/s)`, two dense products.
//!
//! During fine-tuning phase-in (λ < 1) both operands are blends, `x + λ(Xq/s − x)` and
//! `W + λ(γWq − W)`, and the forward is a dense product instead.
//!
//! [`bitlinear_forward_reference`] / [`bitlinear_backward_reference`] are the plain
//! fake-quant definition the fast path is tested against.

use crate::ops::linear::{linear_backward, linear_forward};
use crate::params::{ternarize, TernaryCache};
use onebit_kernels::quant::EPS;
use onebit_kernels::{ActQuant, Kernel, ThreadPool};

/// What the forward keeps for the backward.
#[derive(Debug, Default)]
pub struct BitLinearSaved {
    /// The int8 activations and their per-token scales.
    pub act: ActQuant,
    /// The activations the weight gradient multiplies: `Xq/s` (or the λ blend).
    pub x_used: Vec<f32>,
    /// int8 output gradients (int8 backward option).
    pub dy_q: ActQuant,
    /// dX before it is added to the input's gradient (int8 backward option).
    pub dx_tmp: Vec<f32>,
}

/// `out (tokens × rows) = BitLinear(x (tokens × cols))` with the step's quantized weight.
/// Returns how many int8 activations hit ±127 (the clipping monitor).
#[allow(clippy::too_many_arguments)] // llm.c order: outputs, inputs, sizes
pub fn bitlinear_forward(
    pool: &ThreadPool,
    out: &mut [f32],
    saved: &mut BitLinearSaved,
    x: &[f32],
    w: &TernaryCache,
    kernel: &Kernel,
    (tokens, rows, cols): (usize, usize, usize),
) -> onebit_kernels::Result<u64> {
    let clipped = quantize_input(pool, saved, x, w.lambda, (tokens, cols));
    let lambda = w.lambda;
    if lambda == 1.0 {
        onebit_kernels::matmul(pool, kernel, &w.packed, &saved.act, out)?;
    } else {
        linear_forward(pool, out, &saved.x_used, &w.dense, (tokens, rows, cols));
    }
    Ok(clipped)
}

/// Quantizes `x` per token into `saved.act` and writes the activations the weight gradient
/// multiplies (`Xq/s`, or the λ blend with `x`) into `saved.x_used`; returns how many int8
/// values hit ±127.
pub fn quantize_input(
    pool: &ThreadPool,
    saved: &mut BitLinearSaved,
    x: &[f32],
    lambda: f32,
    (tokens, cols): (usize, usize),
) -> u64 {
    let clipped = quantize_act(pool, &mut saved.act, x, cols);
    let mut x_used = std::mem::take(&mut saved.x_used);
    x_used.resize(tokens * cols, 0.0);
    write_x_used(pool, &mut x_used, &saved.act, x, lambda);
    saved.x_used = x_used;
    clipped
}

/// Quantizes `x` (whole rows of `cols`) per token into `act`; returns how many int8 values
/// hit ±127 (the clipping monitor).
pub fn quantize_act(pool: &ThreadPool, act: &mut ActQuant, x: &[f32], cols: usize) -> u64 {
    if act.cols() != cols {
        *act = ActQuant::new(x.len() / cols.max(1), cols);
    }
    act.quantize_par(x, pool);
    // Counted on every thread (a count on the caller alone was 9 % of a training forward,
    // with the other threads waiting).
    let (padded, rows, threads) = (act.padded_cols(), x.len() / cols.max(1), pool.threads());
    let total = std::sync::atomic::AtomicU64::new(0);
    let q = act.q();
    pool.run(&|i| {
        let part: u64 = onebit_kernels::pool::split(rows, threads, i, 1)
            .map(|r| count_saturated(&q[r * padded..r * padded + cols]))
            .sum();
        total.fetch_add(part, std::sync::atomic::Ordering::Relaxed);
    });
    total.into_inner()
}

/// How many of `row` are ±127 (or -128): byte lanes over runs of 255 (no overflow) vectorize
/// four times wider than a u32 count.
fn count_saturated(row: &[i8]) -> u64 {
    row.chunks(255)
        .map(|c| c.iter().fold(0u8, |a, &v| a.wrapping_add(u8::from(v.unsigned_abs() >= 127))))
        .map(u64::from)
        .sum()
}

/// Writes `Xq/s` (λ = 1) or the blend `x + λ(Xq/s − x)` from the quantized `act` of `x` into
/// `dst` (tokens × cols): the activations the weight gradient multiplies.
pub fn write_x_used(pool: &ThreadPool, dst: &mut [f32], act: &ActQuant, x: &[f32], lambda: f32) {
    let (cols, padded) = (act.cols(), act.padded_cols());
    pool.run_chunks(dst, cols, &|_, r, xu| {
        for (i, t) in r.enumerate() {
            let inv = 1.0 / act.scales()[t];
            let q = &act.q()[t * padded..t * padded + cols];
            let dst = &mut xu[i * cols..(i + 1) * cols];
            if lambda == 1.0 {
                for (d, &v) in dst.iter_mut().zip(q) {
                    *d = v as f32 * inv;
                }
            } else {
                for ((d, &v), &xv) in dst.iter_mut().zip(q).zip(&x[t * cols..(t + 1) * cols]) {
                    *d = xv + lambda * (v as f32 * inv - xv);
                }
            }
        }
    });
}

/// STE backward: `dx += dout·(γ·Wq)` (when wanted), `dw += doutᵀ·(Xq/s)`.
///
/// When the cache holds `Wqᵀ` (int8 backward option, λ = 1) the input gradient runs on the
/// integer kernels: `dout` is quantized per token to int8 (absmax, as activations are) and
/// multiplied by the packed transpose, which trades the exactness of `dx` (relative error
/// about 1/254 of each row's largest gradient) for the int8 kernels' speed. The weight
/// gradient always stays an exact dense product.
#[allow(clippy::too_many_arguments)] // llm.c order: outputs, inputs, sizes
pub fn bitlinear_backward(
    pool: &ThreadPool,
    dx: Option<&mut [f32]>,
    dw: &mut [f32],
    dout: &[f32],
    saved: &mut BitLinearSaved,
    w: &TernaryCache,
    kernel: &Kernel,
    (tokens, rows, cols): (usize, usize, usize),
) -> onebit_kernels::Result<()> {
    // The STE products are those of a dense linear layer whose weight is γ·Wq (or the λ
    // blend) and whose input is Xq/s: the same code as the head's backward.
    let dims = (tokens, rows, cols);
    match (dx, &w.packed_t) {
        (Some(dx), Some(pt)) if w.lambda == 1.0 => {
            if saved.dy_q.cols() != rows {
                saved.dy_q = ActQuant::new(tokens, rows);
            }
            saved.dy_q.quantize_par(dout, pool);
            saved.dx_tmp.resize(tokens * cols, 0.0);
            onebit_kernels::matmul(pool, kernel, pt, &saved.dy_q, &mut saved.dx_tmp)?;
            let src = &saved.dx_tmp;
            pool.run_parts(tokens, [(&mut dx[..tokens * cols], cols)], &|_, r, [d]| {
                for (a, &b) in d.iter_mut().zip(&src[r.start * cols..r.end * cols]) {
                    *a += b;
                }
            });
            linear_backward(pool, None, dw, dout, &saved.x_used, &w.dense, dims);
        }
        (dx, _) => linear_backward(pool, dx, dw, dout, &saved.x_used, &w.dense, dims),
    }
    Ok(())
}

/// The fake-quant operands of the reference: (`Xq/s`, `γ·Wq`), in plain loops.
pub fn fake_quant(x: &[f32], w: &[f32], tokens: usize, cols: usize) -> (Vec<f32>, Vec<f32>) {
    let gamma = ((w.iter().map(|v| v.abs() as f64).sum::<f64>() / w.len() as f64) as f32).max(EPS);
    let wq: Vec<f32> = w.iter().map(|&v| gamma * ternarize(v, gamma) as f32).collect();
    let mut xq = vec![0.0; tokens * cols];
    for t in 0..tokens {
        let row = &x[t * cols..(t + 1) * cols];
        let amax = row.iter().fold(0.0f32, |a, &v| a.max(v.abs())).max(EPS);
        let s = 127.0 / amax;
        for k in 0..cols {
            xq[t * cols + k] = (row[k] * s).round_ties_even().clamp(-128.0, 127.0) / s;
        }
    }
    (xq, wq)
}

/// Reference forward: `y = fq(x)·fq(W)ᵀ` with f64 sums.
pub fn bitlinear_forward_reference(
    x: &[f32],
    w: &[f32],
    tokens: usize,
    rows: usize,
    cols: usize,
) -> Vec<f32> {
    let (xq, wq) = fake_quant(x, w, tokens, cols);
    let mut y = vec![0.0; tokens * rows];
    for t in 0..tokens {
        for r in 0..rows {
            let s: f64 = (0..cols).map(|k| xq[t * cols + k] as f64 * wq[r * cols + k] as f64).sum();
            y[t * rows + r] = s as f32;
        }
    }
    y
}

/// Reference STE backward: (`dx = dy·fq(W)`, `dw = dyᵀ·fq(x)`).
pub fn bitlinear_backward_reference(
    dy: &[f32],
    x: &[f32],
    w: &[f32],
    tokens: usize,
    rows: usize,
    cols: usize,
) -> (Vec<f32>, Vec<f32>) {
    let (xq, wq) = fake_quant(x, w, tokens, cols);
    let mut dx = vec![0.0; tokens * cols];
    let mut dw = vec![0.0; rows * cols];
    for t in 0..tokens {
        for k in 0..cols {
            dx[t * cols + k] = (0..rows)
                .map(|r| dy[t * rows + r] as f64 * wq[r * cols + k] as f64)
                .sum::<f64>() as f32;
        }
    }
    for r in 0..rows {
        for k in 0..cols {
            dw[r * cols + k] = (0..tokens)
                .map(|t| dy[t * rows + r] as f64 * xq[t * cols + k] as f64)
                .sum::<f64>() as f32;
        }
    }
    (dx, dw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saturated_activations_are_counted_on_every_thread_alike() {
        let (rows, cols) = (37, 600);
        let x: Vec<f32> = (0..rows * cols)
            .map(|i| if i % 7 == 0 { 9.0 } else { (i % 13) as f32 - 6.0 })
            .collect();
        let mut act = ActQuant::new(rows, cols);
        let got = quantize_act(&ThreadPool::new(3), &mut act, &x, cols);
        let padded = act.padded_cols();
        let want: usize = (0..rows)
            .map(|r| {
                act.q()[r * padded..r * padded + cols]
                    .iter()
                    .filter(|v| v.unsigned_abs() >= 127)
                    .count()
            })
            .sum();
        assert!(want > 255, "the rows must hold runs longer than one byte count");
        assert_eq!(got, want as u64);
        assert_eq!(count_saturated(&[127, -127, -128, 126, 0, -126]), 3);
    }
}
