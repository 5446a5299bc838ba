//! Token embedding lookup: `out[t] = table[token[t]]`.

/// Copies the rows of `table` (`vocab × cols`) named by `tokens` into `out`.
pub fn embedding_forward(out: &mut [f32], tokens: &[u32], table: &[f32], cols: usize) {
    for (o, &tok) in out.chunks_exact_mut(cols).zip(tokens) {
        let r = tok as usize * cols;
        o.copy_from_slice(&table[r..r + cols]);
    }
}

/// `dtable[token[t]] += dout[t]`.
pub fn embedding_backward(dtable: &mut [f32], dout: &[f32], tokens: &[u32], cols: usize) {
    for (d, &tok) in dout.chunks_exact(cols).zip(tokens) {
        let r = tok as usize * cols;
        for (g, &v) in dtable[r..r + cols].iter_mut().zip(d) {
            *g += v;
        }
    }
}
