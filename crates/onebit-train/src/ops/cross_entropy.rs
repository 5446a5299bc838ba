//! Softmax cross-entropy over the vocabulary, fused: the forward keeps only the log-sum-exp
//! of each row; the backward rebuilds the softmax from the logits, so no `tokens × vocab`
//! probability buffer exists. Targets equal to [`IGNORE`] contribute nothing.

use onebit_kernels::ThreadPool;

/// A target that is not scored (padding).
pub const IGNORE: u32 = u32::MAX;

/// Saves `lse[t]` and returns the mean loss over scored tokens (and how many there were).
pub fn cross_entropy_forward(
    pool: &ThreadPool,
    lse: &mut [f32],
    logits: &[f32],
    targets: &[u32],
    vocab: usize,
) -> (f32, usize) {
    let rows = targets.len();
    pool.run_parts(rows, [(lse, 1)], &|_, r, [lse]| {
        for (i, t) in r.enumerate() {
            let row = &logits[t * vocab..(t + 1) * vocab];
            let m = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
            let s: f32 = row.iter().map(|&v| (v - m).exp()).sum();
            lse[i] = m + s.ln();
        }
    });
    let mut total = 0.0f64;
    let mut n = 0;
    for (t, &tg) in targets.iter().enumerate() {
        if tg != IGNORE {
            total += (lse[t] - logits[t * vocab + tg as usize]) as f64;
            n += 1;
        }
    }
    ((total / n.max(1) as f64) as f32, n)
}

/// `dlogits += dloss · (softmax − onehot) / n` for scored rows.
pub fn cross_entropy_backward(
    pool: &ThreadPool,
    dlogits: &mut [f32],
    logits: &[f32],
    lse: &[f32],
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
            let row = &logits[t * vocab..(t + 1) * vocab];
            let dr = &mut d[i * vocab..(i + 1) * vocab];
            for (g, &v) in dr.iter_mut().zip(row) {
                *g += scale * (v - lse[t]).exp();
            }
            dr[targets[t] as usize] -= scale;
        }
    });
}
