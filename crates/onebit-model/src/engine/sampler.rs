//! Token sampling: greedy, temperature, top-k, top-p, min-p, repetition penalty, seeded.
//! Buffers are sized once for the vocabulary, so sampling allocates nothing per token.

/// Sampling settings (`temperature == 0` is greedy).
#[derive(Clone, Debug, PartialEq)]
pub struct SamplerConfig {
    /// Softmax temperature; 0 picks the argmax.
    pub temperature: f32,
    /// Keep the k most likely tokens (0 = all).
    pub top_k: usize,
    /// Keep the smallest set whose probability reaches p (1 = all).
    pub top_p: f32,
    /// Drop tokens below min_p × the top probability (0 = none).
    pub min_p: f32,
    /// Divide positive logits (multiply negative) of recent tokens by this (1 = off).
    pub repeat_penalty: f32,
    /// How many recent tokens the penalty looks at.
    pub repeat_last_n: usize,
    /// RNG seed.
    pub seed: u64,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        SamplerConfig {
            temperature: 0.0,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            seed: 42,
        }
    }
}

impl SamplerConfig {
    /// Checks every setting is in its range, naming the first that is not.
    pub fn validate(&self) -> crate::Result<()> {
        let bad = |what: &str, v: f32, range: &str| {
            Err(crate::Error::Sampling(format!("{what} {v} is out of range ({range})")))
        };
        let t = self.temperature;
        if !t.is_finite() || t < 0.0 {
            return bad("temperature", t, "a finite number >= 0; 0 is greedy");
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad("top-p", self.top_p, "above 0 and at most 1");
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return bad("min-p", self.min_p, "0 to 1");
        }
        let r = self.repeat_penalty;
        if !r.is_finite() || r <= 0.0 {
            return bad("repeat penalty", r, "a finite number > 0; 1 is off");
        }
        Ok(())
    }
}

/// The greedy token of a row of logits: the largest, the lowest index among equals (a later
/// value must be strictly greater, so NaN is never chosen over an earlier number).
pub fn argmax(logits: &[f32]) -> u32 {
    logits.iter().enumerate().fold(0, |b, (i, &v)| if v > logits[b] { i } else { b }) as u32
}

/// A sampler with its RNG state and scratch.
pub struct Sampler {
    cfg: SamplerConfig,
    rng: u64,
    idx: Vec<u32>,
    probs: Vec<f32>,
}

impl Sampler {
    /// A sampler for a vocabulary of `vocab` tokens.
    pub fn new(cfg: SamplerConfig, vocab: usize) -> Self {
        let rng = cfg.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        Sampler { cfg, rng, idx: Vec::with_capacity(vocab), probs: Vec::with_capacity(vocab) }
    }

    fn uniform(&mut self) -> f32 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Picks the next token from `logits` (modified in place by the penalty), given `history`.
    pub fn sample(&mut self, logits: &mut [f32], history: &[u32]) -> u32 {
        let c = &self.cfg;
        if c.repeat_penalty != 1.0 {
            for &t in history.iter().rev().take(c.repeat_last_n) {
                if let Some(l) = logits.get_mut(t as usize) {
                    *l = if *l > 0.0 { *l / c.repeat_penalty } else { *l * c.repeat_penalty };
                }
            }
        }
        if c.temperature <= 0.0 {
            return argmax(logits);
        }
        self.idx.clear();
        self.idx.extend(0..logits.len() as u32);
        let k = if c.top_k == 0 { logits.len() } else { c.top_k.min(logits.len()) };
        if k < logits.len() {
            self.idx.select_nth_unstable_by(k - 1, |&a, &b| {
                logits[b as usize].total_cmp(&logits[a as usize])
            });
            self.idx.truncate(k);
        }
        self.idx.sort_unstable_by(|&a, &b| logits[b as usize].total_cmp(&logits[a as usize]));
        let top = logits[self.idx[0] as usize];
        self.probs.clear();
        let mut total = 0.0;
        for &i in &self.idx {
            let p = ((logits[i as usize] - top) / c.temperature).exp();
            self.probs.push(p);
            total += p;
        }
        let (mut keep, mut cum) = (0, 0.0);
        for &p in &self.probs {
            if keep > 0 && (cum >= c.top_p * total || p < c.min_p * self.probs[0]) {
                break;
            }
            cum += p;
            keep += 1;
        }
        let mut r = self.uniform() * cum;
        for (j, &p) in self.probs[..keep].iter().enumerate() {
            r -= p;
            if r <= 0.0 {
                return self.idx[j];
            }
        }
        self.idx[keep - 1]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_is_argmax() {
        let mut s = Sampler::new(SamplerConfig::default(), 4);
        assert_eq!(s.sample(&mut [0.1, 3.0, -1.0, 2.9], &[]), 1);
    }

    #[test]
    fn top_k_one_is_greedy_and_seed_repeats() {
        let cfg = SamplerConfig { temperature: 1.0, top_k: 1, ..SamplerConfig::default() };
        let mut s = Sampler::new(cfg, 4);
        assert_eq!(s.sample(&mut [0.1, 3.0, -1.0, 2.9], &[]), 1);
        let cfg = SamplerConfig {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            ..SamplerConfig::default()
        };
        let draw = |seed| {
            let mut s = Sampler::new(SamplerConfig { seed, ..cfg.clone() }, 4);
            (0..32).map(|_| s.sample(&mut [1.0, 1.0, 1.0, 1.0], &[])).collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert!(
            draw(7).iter().any(|&t| t != draw(7)[0]),
            "uniform logits should give varied tokens"
        );
    }

    #[test]
    fn repeat_penalty_demotes_history() {
        let cfg = SamplerConfig { repeat_penalty: 2.0, ..SamplerConfig::default() };
        let mut s = Sampler::new(cfg, 3);
        assert_eq!(s.sample(&mut [1.0, 1.5, 0.0], &[1]), 0);
    }

    #[test]
    fn min_p_drops_unlikely_tokens() {
        let cfg = SamplerConfig {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.5,
            ..SamplerConfig::default()
        };
        let mut s = Sampler::new(cfg, 3);
        for _ in 0..50 {
            assert_eq!(s.sample(&mut [5.0, 0.0, 0.0], &[]), 0);
        }
    }
}
