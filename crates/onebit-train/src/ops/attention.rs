//! Causal self-attention with grouped-query heads over a batch of sequences, q/k/v
//! token-major (`tokens × heads·head_dim`). Per (sequence, head): `S = Q·Kᵀ/√d`, causal
//! softmax `P`, `O = P·V`, each product one strided GEMM that reads the head's columns in
//! place. `P` is saved for the backward (`batch · heads · seq²` floats); sequences are split
//! over the threads, so the heads of one KV group never race on dK/dV.

use onebit_kernels::dense::{gemm_f32_ex, MatRef};
use onebit_kernels::ThreadPool;

/// Shape of one attention call.
#[derive(Clone, Copy, Debug)]
pub struct AttnDims {
    /// Sequences.
    pub batch: usize,
    /// Tokens per sequence.
    pub seq: usize,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads (divides `heads`).
    pub kv_heads: usize,
    /// Width of a head.
    pub head_dim: usize,
}

impl AttnDims {
    fn q_dim(&self) -> usize {
        self.heads * self.head_dim
    }
    fn kv_dim(&self) -> usize {
        self.kv_heads * self.head_dim
    }
    /// Floats of saved probabilities.
    pub fn probs_len(&self) -> usize {
        self.batch * self.heads * self.seq * self.seq
    }
}

/// `out = softmax_causal(Q·Kᵀ/√d)·V`; saves the probabilities in `probs`.
pub fn attention_forward(
    pool: &ThreadPool,
    out: &mut [f32],
    probs: &mut [f32],
    q: &[f32],
    k: &[f32],
    v: &[f32],
    d: AttnDims,
) {
    let (t_n, hd, qd, kvd) = (d.seq, d.head_dim, d.q_dim(), d.kv_dim());
    let group = d.heads / d.kv_heads;
    let scale = 1.0 / (hd as f32).sqrt();
    let tt = t_n * t_n;
    pool.run_parts(d.batch, [(out, t_n * qd), (probs, d.heads * tt)], &|_, bs, [out, probs]| {
        for (bi, b) in bs.enumerate() {
            let (qb, kb, vb) = (
                &q[b * t_n * qd..],
                &k[b * t_n * kvd..(b + 1) * t_n * kvd],
                &v[b * t_n * kvd..(b + 1) * t_n * kvd],
            );
            let ob = &mut out[bi * t_n * qd..(bi + 1) * t_n * qd];
            for h in 0..d.heads {
                let g = h / group;
                let p = &mut probs[(bi * d.heads + h) * tt..(bi * d.heads + h + 1) * tt];
                gemm_f32_ex(
                    1,
                    (t_n, t_n, hd),
                    p,
                    t_n,
                    MatRef { data: &qb[h * hd..], rs: qd, cs: 1 },
                    MatRef { data: &kb[g * hd..], rs: 1, cs: kvd },
                    scale,
                    false,
                );
                for i in 0..t_n {
                    let row = &mut p[i * t_n..(i + 1) * t_n];
                    let m = row[..=i].iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
                    let mut s = 0.0;
                    for x in &mut row[..=i] {
                        *x = (*x - m).exp();
                        s += *x;
                    }
                    let inv = 1.0 / s;
                    row[..=i].iter_mut().for_each(|x| *x *= inv);
                    row[i + 1..].fill(0.0);
                }
                gemm_f32_ex(
                    1,
                    (t_n, hd, t_n),
                    &mut ob[h * hd..],
                    qd,
                    MatRef::rows(p, t_n),
                    MatRef { data: &vb[g * hd..], rs: kvd, cs: 1 },
                    1.0,
                    false,
                );
            }
        }
    });
}

/// `dq, dk, dv += ∂L/∂(q, k, v)` given `dout`. Overwrites `probs` with dS and uses
/// `scratch` (`batch · seq²` floats) for dP.
#[allow(clippy::too_many_arguments)] // llm.c order: outputs, inputs, sizes
pub fn attention_backward(
    pool: &ThreadPool,
    dq: &mut [f32],
    dk: &mut [f32],
    dv: &mut [f32],
    probs: &mut [f32],
    scratch: &mut [f32],
    dout: &[f32],
    q: &[f32],
    k: &[f32],
    v: &[f32],
    d: AttnDims,
) {
    let (t_n, hd, qd, kvd) = (d.seq, d.head_dim, d.q_dim(), d.kv_dim());
    let group = d.heads / d.kv_heads;
    let scale = 1.0 / (hd as f32).sqrt();
    let tt = t_n * t_n;
    pool.run_parts(
        d.batch,
        [(dq, t_n * qd), (dk, t_n * kvd), (dv, t_n * kvd), (probs, d.heads * tt), (scratch, tt)],
        &|_, bs, [dq, dk, dv, probs, dp]| {
            for (bi, b) in bs.enumerate() {
                let (qb, kb, vb, dob) = (
                    &q[b * t_n * qd..(b + 1) * t_n * qd],
                    &k[b * t_n * kvd..(b + 1) * t_n * kvd],
                    &v[b * t_n * kvd..(b + 1) * t_n * kvd],
                    &dout[b * t_n * qd..(b + 1) * t_n * qd],
                );
                let dqb = &mut dq[bi * t_n * qd..(bi + 1) * t_n * qd];
                let dkb = &mut dk[bi * t_n * kvd..(bi + 1) * t_n * kvd];
                let dvb = &mut dv[bi * t_n * kvd..(bi + 1) * t_n * kvd];
                let dp = &mut dp[bi * tt..(bi + 1) * tt];
                for h in 0..d.heads {
                    let g = h / group;
                    let p = &mut probs[(bi * d.heads + h) * tt..(bi * d.heads + h + 1) * tt];
                    let do_h = MatRef { data: &dob[h * hd..], rs: qd, cs: 1 };
                    // dV += Pᵀ·dO
                    gemm_f32_ex(
                        1,
                        (t_n, hd, t_n),
                        &mut dvb[g * hd..],
                        kvd,
                        MatRef::transposed(p, t_n),
                        do_h,
                        1.0,
                        true,
                    );
                    // dP = dO·Vᵀ
                    gemm_f32_ex(
                        1,
                        (t_n, t_n, hd),
                        dp,
                        t_n,
                        do_h,
                        MatRef { data: &vb[g * hd..], rs: 1, cs: kvd },
                        1.0,
                        false,
                    );
                    // dS = P ∘ (dP − rowsum(P ∘ dP)), written over P.
                    for i in 0..t_n {
                        let (pr, dr) =
                            (&mut p[i * t_n..i * t_n + i + 1], &dp[i * t_n..i * t_n + i + 1]);
                        let dsum: f32 = pr.iter().zip(dr).map(|(&a, &b)| a * b).sum();
                        for (x, &g) in pr.iter_mut().zip(dr) {
                            *x *= g - dsum;
                        }
                    }
                    // dQ += scale · dS·K ; dK += scale · dSᵀ·Q
                    gemm_f32_ex(
                        1,
                        (t_n, hd, t_n),
                        &mut dqb[h * hd..],
                        qd,
                        MatRef::rows(p, t_n),
                        MatRef { data: &kb[g * hd..], rs: kvd, cs: 1 },
                        scale,
                        true,
                    );
                    gemm_f32_ex(
                        1,
                        (t_n, hd, t_n),
                        &mut dkb[g * hd..],
                        kvd,
                        MatRef::transposed(p, t_n),
                        MatRef { data: &qb[h * hd..], rs: qd, cs: 1 },
                        scale,
                        true,
                    );
                }
            }
        },
    );
}
