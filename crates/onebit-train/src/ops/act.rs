//! Gated FFN activation: `out = act(gate) · up`, relu² (BitNet b1.58) or SiLU (Llama).

use onebit_kernels::ThreadPool;
use onebit_model::config::Activation;

#[inline]
fn act_and_grad(a: Activation, g: f32) -> (f32, f32) {
    match a {
        Activation::Relu2 => {
            let r = g.max(0.0);
            (r * r, 2.0 * r)
        }
        Activation::Silu => {
            let s = 1.0 / (1.0 + (-g).exp());
            (g * s, s * (1.0 + g * (1.0 - s)))
        }
    }
}

/// `out = act(gate) · up`, element-wise.
pub fn gated_forward(
    pool: &ThreadPool,
    out: &mut [f32],
    gate: &[f32],
    up: &[f32],
    act: Activation,
) {
    let n = out.len();
    let chunk = 4096.min(n.max(1));
    let rows = n.div_ceil(chunk);
    if rows * chunk != n {
        for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
            *o = act_and_grad(act, g).0 * u;
        }
        return;
    }
    pool.run_parts(rows, [(out, chunk)], &|_, r, [out]| {
        let base = r.start * chunk;
        for (i, o) in out.iter_mut().enumerate() {
            *o = act_and_grad(act, gate[base + i]).0 * up[base + i];
        }
    });
}

/// `dgate += dout · up · act'(gate)`, `dup += dout · act(gate)`.
pub fn gated_backward(
    pool: &ThreadPool,
    dgate: &mut [f32],
    dup: &mut [f32],
    dout: &[f32],
    gate: &[f32],
    up: &[f32],
    act: Activation,
) {
    let n = dout.len();
    let chunk = 4096.min(n.max(1));
    let rows = n.div_ceil(chunk);
    let body = |base: usize, dg: &mut [f32], du: &mut [f32]| {
        for i in 0..dg.len() {
            let (a, da) = act_and_grad(act, gate[base + i]);
            let d = dout[base + i];
            dg[i] += d * up[base + i] * da;
            du[i] += d * a;
        }
    };
    if rows * chunk != n {
        return body(0, dgate, dup);
    }
    pool.run_parts(rows, [(dgate, chunk), (dup, chunk)], &|_, r, [dg, du]| {
        body(r.start * chunk, dg, du)
    });
}
