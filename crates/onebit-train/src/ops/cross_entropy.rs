//! Softmax cross-entropy over the vocabulary, fused in llm.c's way: the forward pass already
//! writes `exp(logit − max)` into the logits' gradient buffer and keeps `1/Σ` and the
//! log-sum-exp per row, so the backward is one multiply per logit (no second `exp`) and no
//! `tokens × vocab` probability buffer exists. It must be the last op on the tape (the loss).
//! Targets equal to [`IGNORE`] contribute nothing.

use onebit_kernels::ThreadPool;

/// A target that is not scored (padding).
pub const IGNORE: u32 = u32::MAX;

/// Writes `exp(l − max)` per scored row into `dlogits`, `(lse, 1/Σ)` into `stats`
/// (2 per row), and returns the mean loss over scored tokens and how many there were.
pub fn cross_entropy_forward(
    pool: &ThreadPool,
    stats: &mut [f32],
    dlogits: &mut [f32],
    logits: &[f32],
    targets: &[u32],
    vocab: usize,
) -> (f32, usize) {
    let rows = targets.len();
    pool.run_parts(rows, [(stats, 2), (dlogits, vocab)], &|_, r, [st, e]| {
        for (i, t) in r.enumerate() {
            let er = &mut e[i * vocab..(i + 1) * vocab];
            if targets[t] == IGNORE {
                er.fill(0.0);
                continue;
            }
            let row = &logits[t * vocab..(t + 1) * vocab];
            let m = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
            let mut s = 0.0;
            for (d, &v) in er.iter_mut().zip(row) {
                *d = (v - m).exp();
                s += *d;
            }
            st[2 * i] = m + s.ln();
            st[2 * i + 1] = 1.0 / s;
        }
    });
    let mut total = 0.0f64;
    let mut n = 0;
    for (t, &tg) in targets.iter().enumerate() {
        if tg != IGNORE {
            total += (stats[2 * t] - logits[t * vocab + tg as usize]) as f64;
            n += 1;
        }
    }
    ((total / n.max(1) as f64) as f32, n)
}

/// Turns the forward's `exp(l − max)` in `dlogits` into `scale · (softmax − onehot)`.
pub fn cross_entropy_backward(
    pool: &ThreadPool,
    dlogits: &mut [f32],
    stats: &[f32],
    targets: &[u32],
    vocab: usize,
    scale: f32,
) {
    let rows = targets.len();
    pool.run_parts(rows, [(dlogits, vocab)], &|_, r, [d]| {
        for (i, t) in r.enumerate() {
            if targets[t] == IGNORE {
                continue;
            }
            let dr = &mut d[i * vocab..(i + 1) * vocab];
            let k = scale * stats[2 * t + 1];
            dr.iter_mut().for_each(|g| *g *= k);
            dr[targets[t] as usize] -= scale;
        }
    });
}
