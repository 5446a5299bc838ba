//! Log-probabilities of tokens under the model: what the OpenAI API's `logprobs` report
//! (for a reply's tokens, and with `echo` for the prompt's), computed from a row of raw
//! logits — the model's own distribution, before any penalty or temperature, as OpenAI,
//! vLLM and llama-server report it.

use crate::engine::top_k;

/// Most alternatives a caller may ask for at one position (OpenAI's chat API allows 20).
pub const MAX_TOP_LOGPROBS: usize = 20;

/// A token's log-probability and the most likely tokens at its position.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenLogprob {
    /// The token.
    pub token: u32,
    /// `ln p(token)`.
    pub logprob: f32,
    /// The `n` most likely tokens there, most likely first, with their log-probabilities.
    pub top: Vec<(u32, f32)>,
}

/// `ln Σ exp(logits)`, the log-softmax's normalizer (summed in f64 from the largest logit,
/// so a 128k-token row loses nothing to rounding; NaN if a logit is NaN).
pub fn log_sum_exp(logits: &[f32]) -> f64 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if logits.iter().any(|v| v.is_nan()) {
        return f64::NAN;
    }
    if max == f32::NEG_INFINITY {
        return f64::NEG_INFINITY;
    }
    let m = max as f64;
    m + logits.iter().map(|&v| (v as f64 - m).exp()).sum::<f64>().ln()
}

/// Log-probabilities of one row of logits; `idx` is scratch for the top-`n` search.
pub fn token_logprob(logits: &[f32], token: u32, n: usize, idx: &mut Vec<u32>) -> TokenLogprob {
    let lse = log_sum_exp(logits);
    let lp =
        |t: u32| logits.get(t as usize).map_or(f32::NEG_INFINITY, |&v| (v as f64 - lse) as f32);
    let mut top = Vec::with_capacity(n);
    if n > 0 {
        top_k(logits, n.min(logits.len()), idx);
        top.extend(idx.iter().map(|&t| (t, lp(t))));
    }
    TokenLogprob { token, logprob: lp(token), top }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logprobs_are_the_log_softmax_computed_by_hand() {
        // ln(e^1 + e^2 + e^3) = 3.40760596444...
        let logits = [1.0f32, 3.0, 2.0];
        let lse = log_sum_exp(&logits);
        assert!((lse - 3.407_605_964_444_38).abs() < 1e-12);
        let mut idx = Vec::new();
        let t = token_logprob(&logits, 2, 2, &mut idx);
        assert_eq!(t.token, 2);
        assert!((t.logprob - (2.0 - 3.407_606)).abs() < 1e-6);
        assert_eq!(t.top.iter().map(|p| p.0).collect::<Vec<_>>(), [1, 2]);
        assert!((t.top[0].1 - (3.0 - 3.407_606)).abs() < 1e-6);
        let probs: f64 = logits.iter().map(|&v| (v as f64 - lse).exp()).sum();
        assert!((probs - 1.0).abs() < 1e-12);
    }

    #[test]
    fn a_large_row_keeps_its_precision_and_a_token_outside_it_is_impossible() {
        // 128k equal logits of 100: every token has ln(1/n), no overflow from exp(100).
        let n = 128 * 1024;
        let logits = vec![100.0f32; n];
        let mut idx = Vec::new();
        let t = token_logprob(&logits, 7, 0, &mut idx);
        assert!((t.logprob as f64 + (n as f64).ln()).abs() < 1e-5);
        assert!(t.top.is_empty());
        assert_eq!(token_logprob(&logits, n as u32, 0, &mut idx).logprob, f32::NEG_INFINITY);
        assert!(log_sum_exp(&[1.0, f32::NAN]).is_nan());
        assert_eq!(log_sum_exp(&[f32::NEG_INFINITY; 3]), f64::NEG_INFINITY);
    }
}
