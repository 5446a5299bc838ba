//! Perplexity over a text, computed the way llama.cpp's `llama-perplexity` computes it, so
//! the figures of two engines on the same file and text can be compared directly.
//!
//! The token stream is cut into chunks of `n_ctx` tokens (the remainder is dropped); each
//! chunk is evaluated from an empty context with its first token replaced by BOS when the
//! tokenizer adds one; only the second half of each chunk is scored (position `j` predicts
//! token `j + 1` for `j` from `n_ctx / 2` to `n_ctx - 2`), so every scored token has at least
//! half a context before it. The error bar is the standard error of the mean negative
//! log-likelihood, carried through `exp` (`ppl · sqrt(var / (count − 1))`).

use crate::engine::{Model, Session, SessionOptions};
use crate::error::{Error, Result};

/// How to run [`perplexity`].
#[derive(Clone, Copy, Debug)]
pub struct PerplexityOptions {
    /// Tokens per chunk (llama-perplexity's `-c`).
    pub n_ctx: usize,
    /// Rows per forward pass.
    pub batch: usize,
    /// At most this many chunks (`None`: all that fit).
    pub max_chunks: Option<usize>,
    /// Replace each chunk's first token with this BOS id.
    pub bos: Option<u32>,
    /// KV cache type.
    pub kv: crate::engine::KvDtype,
}

/// The running or final result.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Perplexity {
    /// Chunks scored so far.
    pub chunks: usize,
    /// Tokens scored so far.
    pub tokens: usize,
    /// exp(mean negative log-likelihood).
    pub ppl: f64,
    /// Standard error of `ppl` (0 until two tokens are scored).
    pub error: f64,
}

/// Scores `tokens` chunk by chunk; `on_chunk` sees the running value after each chunk.
pub fn perplexity(
    model: &Model,
    tokens: &[u32],
    o: &PerplexityOptions,
    on_chunk: &mut dyn FnMut(&Perplexity),
) -> Result<Perplexity> {
    let n_ctx = o.n_ctx;
    if n_ctx < 4 {
        return Err(Error::Config(format!("perplexity: context {n_ctx} is too short (>= 4)")));
    }
    if n_ctx > model.config.max_positions {
        return Err(Error::Config(format!(
            "perplexity: context {n_ctx} exceeds the model's {} positions",
            model.config.max_positions
        )));
    }
    let mut chunks = tokens.len() / n_ctx;
    if let Some(m) = o.max_chunks {
        chunks = chunks.min(m);
    }
    if chunks == 0 {
        return Err(Error::Config(format!(
            "perplexity: {} tokens are fewer than one chunk of {n_ctx} (use a smaller --ctx)",
            tokens.len()
        )));
    }
    let mut session = Session::with_options(
        model,
        SessionOptions { max_ctx: n_ctx, max_batch: o.batch.clamp(1, n_ctx), slots: 1, kv: o.kv },
    );
    let first = n_ctx / 2;
    let (mut nll, mut nll2, mut count) = (0f64, 0f64, 0usize);
    let mut result = Perplexity { chunks: 0, tokens: 0, ppl: f64::NAN, error: 0.0 };
    let mut chunk_tokens = vec![0u32; n_ctx];
    for c in 0..chunks {
        chunk_tokens.copy_from_slice(&tokens[c * n_ctx..(c + 1) * n_ctx]);
        if let Some(b) = o.bos {
            chunk_tokens[0] = b;
        }
        session.reset();
        // The targets are the file's tokens (chunk_tokens[0] may be BOS, but it is never a target).
        let targets = &tokens[c * n_ctx..(c + 1) * n_ctx];
        session.forward_each(0, &chunk_tokens, &mut |j, logits| {
            if j < first || j + 1 >= n_ctx {
                return;
            }
            let v = -log_softmax_at(logits, targets[j + 1] as usize);
            nll += v;
            nll2 += v * v;
            count += 1;
        })?;
        result = summarize(c + 1, count, nll, nll2);
        on_chunk(&result);
    }
    Ok(result)
}

/// log p(target) under softmax(logits), in f64 as llama-perplexity sums it.
fn log_softmax_at(logits: &[f32], target: usize) -> f64 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum: f64 = logits.iter().map(|&l| (l as f64 - max).exp()).sum();
    logits[target] as f64 - max - sum.ln()
}

fn summarize(chunks: usize, count: usize, nll: f64, nll2: f64) -> Perplexity {
    let mean = nll / count as f64;
    let ppl = mean.exp();
    let var = nll2 / count as f64 - mean * mean;
    let error = if var > 0.0 && count > 1 { ppl * (var / (count - 1) as f64).sqrt() } else { 0.0 };
    Perplexity { chunks, tokens: count, ppl, error }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_softmax_of_uniform_logits_is_minus_log_n() {
        let l = vec![3.0f32; 8];
        assert!((log_softmax_at(&l, 5) + (8f64).ln()).abs() < 1e-12);
    }

    #[test]
    fn error_bar_is_the_standard_error_through_exp() {
        // nll values 1 and 3: mean 2, population variance 1, standard error sqrt(1/1).
        let p = summarize(1, 2, 4.0, 10.0);
        assert!((p.ppl - 2f64.exp()).abs() < 1e-12);
        assert!((p.error - 2f64.exp()).abs() < 1e-12);
    }
}
