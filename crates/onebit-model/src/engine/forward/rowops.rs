//! The row-wise ops of the forward pass: RMSNorm, the gated activation and the residual add,
//! split over the pool only for prompt chunks.

use crate::config::Activation;

/// RMSNorm of each row of `x` times `w`, into `out`.
pub(super) fn rmsnorm(out: &mut [f32], x: &[f32], w: &[f32], eps: f32) {
    let n = w.len();
    if n == 0 {
        return;
    }
    let rows = out.len().min(x.len()) / n;
    let mut done = 0;
    while done < rows {
        let (o, xs) = (&mut out[done * n..rows * n], &x[done * n..rows * n]);
        done += match rows - done {
            8.. => norm_rows::<8>(o, xs, w, eps),
            4.. => norm_rows::<4>(o, xs, w, eps),
            _ => norm_rows::<1>(o, xs, w, eps),
        };
    }
}

/// Normalizes the first K rows of `x` into `out`; returns K.
fn norm_rows<const K: usize>(out: &mut [f32], x: &[f32], w: &[f32], eps: f32) -> usize {
    let n = w.len();
    for (t, ss) in square_sums::<K>(x, n).into_iter().enumerate() {
        let r = 1.0 / (ss / n as f32 + eps).sqrt();
        let (o, xr) = (&mut out[t * n..(t + 1) * n], &x[t * n..(t + 1) * n]);
        for ((o, &xv), &wv) in o.iter_mut().zip(xr).zip(w) {
            *o = xv * r * wv;
        }
    }
    K
}

/// Σ x² of K rows of `n` at once, each row's sum in column order (so every row's norm is
/// bit for bit what one running sum gives, as the GPU shaders and the reference forward
/// compute it): one row's sum is a chain of dependent adds, ~4 cycles a value, and K rows
/// interleaved keep K adds in flight. A tensor-parallel node normalizes every gathered row
/// itself, so at 8 rows the chain was 3 % of its decode.
fn square_sums<const K: usize>(x: &[f32], n: usize) -> [f32; K] {
    let mut s = [0f32; K];
    let rows: [&[f32]; K] = std::array::from_fn(|r| &x[r * n..(r + 1) * n]);
    for c in 0..n {
        for (s, row) in s.iter_mut().zip(&rows) {
            *s += row[c] * row[c];
        }
    }
    s
}

/// [`rmsnorm`] with rows split over the pool for prompt chunks (a decode row stays on the
/// calling thread: waking the pool would cost more than the row).
pub(super) fn rmsnorm_par(
    pool: &onebit_kernels::ThreadPool,
    out: &mut [f32],
    x: &[f32],
    w: &[f32],
    eps: f32,
) {
    let n = w.len();
    if out.len() / n < 2 * pool.threads() {
        return rmsnorm(out, x, w, eps);
    }
    pool.run_chunks(out, n, &|_, rows, o| rmsnorm(o, &x[rows.start * n..rows.end * n], w, eps));
}

/// `gate = act(gate) · up` in place, rows split over the pool for prompt chunks.
pub(super) fn gated_par(
    pool: &onebit_kernels::ThreadPool,
    gate: &mut [f32],
    up: &[f32],
    width: usize,
    act: Activation,
) {
    let body = |g: &mut [f32], u: &[f32]| {
        for (g, u) in g.iter_mut().zip(u) {
            let a = match act {
                Activation::Relu2 => {
                    let r = g.max(0.0);
                    r * r
                }
                Activation::Silu => *g / (1.0 + onebit_kernels::dense::exp_f32(-*g)),
            };
            *g = a * u;
        }
    };
    if gate.len() / width < 2 * pool.threads() {
        return body(gate, up);
    }
    pool.run_chunks(gate, width, &|_, rows, g| body(g, &up[rows.start * width..rows.end * width]));
}

/// The residual connection: `x += d`.
pub(super) fn add_into(x: &mut [f32], d: &[f32]) {
    for (x, d) in x.iter_mut().zip(d) {
        *x += d;
    }
}

/// A BitNet sub-norm (when the block has one) and the int8 quantization of the rows of `x`
/// into `aq`, `scratch` holding the normalized rows: what `o` and `down` take as input.
pub(super) fn sub_norm_quantize(
    pool: &onebit_kernels::ThreadPool,
    aq: &mut onebit_kernels::ActQuant,
    scratch: &mut [f32],
    x: &[f32],
    norm: Option<&Vec<f32>>,
    eps: f32,
) {
    match norm {
        Some(w) => {
            rmsnorm_par(pool, scratch, x, w, eps);
            aq.quantize_par(scratch, pool);
        }
        None => aq.quantize_par(x, pool),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interleaved_rows_normalize_bit_for_bit_as_one_row_at_a_time() {
        let mut s = 0x9e37_79b9_u32;
        let mut next = || {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s as f32 / u32::MAX as f32 - 0.5) * 8.0
        };
        for (rows, n) in [(1, 5), (3, 17), (4, 64), (7, 33), (8, 256), (13, 100), (17, 2560)] {
            let x: Vec<f32> = (0..rows * n).map(|_| next()).collect();
            let w: Vec<f32> = (0..n).map(|_| next()).collect();
            let mut got = vec![0f32; rows * n];
            rmsnorm(&mut got, &x, &w, 1e-5);
            for (t, xr) in x.chunks_exact(n).enumerate() {
                let ms = xr.iter().map(|v| v * v).sum::<f32>() / n as f32;
                let r = 1.0 / (ms + 1e-5).sqrt();
                for c in 0..n {
                    let want = xr[c] * r * w[c];
                    assert_eq!(got[t * n + c].to_bits(), want.to_bits(), "{rows}x{n} row {t}");
                }
            }
        }
    }
}
