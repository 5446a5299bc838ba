//! The row-wise ops of the forward pass: RMSNorm, the gated activation and the residual add,
//! split over the pool only for prompt chunks.

use crate::config::Activation;

/// RMSNorm of each row of `x` times `w`, into `out`.
pub(super) fn rmsnorm(out: &mut [f32], x: &[f32], w: &[f32], eps: f32) {
    let n = w.len();
    for (o, xr) in out.chunks_exact_mut(n).zip(x.chunks_exact(n)) {
        let ms = xr.iter().map(|v| v * v).sum::<f32>() / n as f32;
        let r = 1.0 / (ms + eps).sqrt();
        for ((o, &xv), &wv) in o.iter_mut().zip(xr).zip(w) {
            *o = xv * r * wv;
        }
    }
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
