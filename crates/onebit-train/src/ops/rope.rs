//! Rotary position embedding on q or k (`tokens × heads·head_dim`), positions restart at 0
//! for every sequence of the batch. The same angles as the engine (`θ^(-2i/head_dim)`), on
//! halves (HF/BitNet) or adjacent pairs (llama.cpp's permuted GGUF layout).

use onebit_kernels::ThreadPool;

/// cos/sin of every (position, frequency) pair: `table[(p·half + i)·2] = cos`, `+1 = sin`.
pub fn rope_table(seq: usize, head_dim: usize, theta: f32) -> Vec<f32> {
    let half = head_dim / 2;
    let mut t = vec![0.0; seq * half * 2];
    for p in 0..seq {
        for i in 0..half {
            let f = theta.powf(-(2.0 * i as f32) / head_dim as f32);
            let (s, c) = (p as f32 * f).sin_cos();
            t[(p * half + i) * 2] = c;
            t[(p * half + i) * 2 + 1] = s;
        }
    }
    t
}

#[allow(clippy::too_many_arguments)] // the op's operands plus direction and mode
fn rotate(
    pool: &ThreadPool,
    out: &mut [f32],
    x: &[f32],
    (width, head_dim, seq): (usize, usize, usize),
    table: &[f32],
    interleaved: bool,
    sign: f32,
    accumulate: bool,
) {
    let half = head_dim / 2;
    let rows = out.len() / width;
    pool.run_parts(rows, [(out, width)], &|_, r, [out]| {
        for (i, t) in r.enumerate() {
            let cs = &table[(t % seq) * half * 2..(t % seq + 1) * half * 2];
            let src = &x[t * width..(t + 1) * width];
            let dst = &mut out[i * width..(i + 1) * width];
            for (h, s) in dst.chunks_exact_mut(head_dim).zip(src.chunks_exact(head_dim)) {
                for j in 0..half {
                    let (c, sn) = (cs[2 * j], sign * cs[2 * j + 1]);
                    let (a, b) = if interleaved { (2 * j, 2 * j + 1) } else { (j, j + half) };
                    let (x0, x1) = (s[a], s[b]);
                    let (y0, y1) = (x0 * c - x1 * sn, x0 * sn + x1 * c);
                    if accumulate {
                        h[a] += y0;
                        h[b] += y1;
                    } else {
                        h[a] = y0;
                        h[b] = y1;
                    }
                }
            }
        }
    });
}

/// `out = rope(x)` for `tokens × width` (width = heads · head_dim), token t at position t mod seq.
pub fn rope_forward(
    pool: &ThreadPool,
    out: &mut [f32],
    x: &[f32],
    dims: (usize, usize, usize),
    table: &[f32],
    interleaved: bool,
) {
    rotate(pool, out, x, dims, table, interleaved, 1.0, false)
}

/// `dx += rope⁻¹(dout)`: the rotation is orthogonal, so its transpose rotates backwards.
pub fn rope_backward(
    pool: &ThreadPool,
    dx: &mut [f32],
    dout: &[f32],
    dims: (usize, usize, usize),
    table: &[f32],
    interleaved: bool,
) {
    rotate(pool, dx, dout, dims, table, interleaved, -1.0, true)
}
