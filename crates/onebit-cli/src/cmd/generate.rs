//! Sampling flags and the streaming generation loop shared by `run` and `chat`.

use anyhow::Result;
use onebit_model::{Sampler, SamplerConfig, Session, StreamDecoder, Tokenizer};
use std::io::Write;

/// Generation flags.
#[derive(clap::Args, Debug)]
pub struct GenArgs {
    /// Most tokens to generate (per reply in chat).
    #[arg(short = 'n', long, default_value_t = 128)]
    pub max_tokens: usize,
    /// Context length.
    #[arg(long, default_value_t = 2048)]
    pub ctx: usize,
    /// KV cache element type: f16 (half the memory), f32 (exact) or q8 (int8 in blocks of
    /// 32: about half of f16's memory).
    #[arg(long, default_value = "f16")]
    pub kv_cache: String,
    /// tokenizer.json (default: inside the model directory or beside the model file).
    #[arg(long)]
    pub tokenizer: Option<String>,
    /// Sampling temperature (0 = greedy).
    #[arg(long, default_value_t = 0.0)]
    pub temp: f32,
    /// Top-k (0 = off).
    #[arg(long, default_value_t = 40)]
    pub top_k: usize,
    /// Top-p.
    #[arg(long, default_value_t = 0.95)]
    pub top_p: f32,
    /// Min-p.
    #[arg(long, default_value_t = 0.05)]
    pub min_p: f32,
    /// Repetition penalty (1 = off).
    #[arg(long, default_value_t = 1.0)]
    pub repeat_penalty: f32,
    /// RNG seed.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Stop when the output contains this string (repeatable).
    #[arg(long)]
    pub stop: Vec<String>,
}

impl GenArgs {
    /// The sampler settings, range-checked.
    pub fn sampler(&self, vocab: usize) -> Result<Sampler> {
        let cfg = SamplerConfig {
            temperature: self.temp,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            repeat_penalty: self.repeat_penalty,
            seed: self.seed,
            ..SamplerConfig::default()
        };
        cfg.validate()?;
        Ok(Sampler::new(cfg, vocab))
    }

    /// A one-sequence session of `ctx` positions with the `--kv-cache` type.
    pub fn session<'m>(
        &self,
        model: &'m onebit_model::Model,
        ctx: usize,
    ) -> Result<onebit_model::Session<'m>> {
        let kv = onebit_model::KvDtype::from_name(&self.kv_cache).ok_or_else(|| {
            anyhow::anyhow!("unknown --kv-cache '{}' (f16, f32, q8)", self.kv_cache)
        })?;
        let opts = onebit_model::SessionOptions { max_ctx: ctx, max_batch: 128, slots: 1, kv };
        Ok(onebit_model::Session::try_with_options(model, opts)?)
    }

    /// The tokenizer named by `--tokenizer`, or the model's.
    pub fn tokenizer(&self, model: &str) -> Result<Tokenizer> {
        Ok(match &self.tokenizer {
            Some(p) => Tokenizer::from_file(p)?,
            None => Tokenizer::for_model(model)?,
        })
    }

    /// Checks the settings that need no model (sampling ranges, context).
    pub fn check(&self) -> Result<()> {
        if self.ctx < 2 {
            anyhow::bail!("--ctx {} is too small (at least 2)", self.ctx);
        }
        self.sampler(1).map(|_| ())
    }
}

/// What one generation did.
pub struct Generated {
    /// The reply text (stop string excluded).
    pub text: String,
    /// Tokens generated.
    pub tokens: usize,
}

/// Feeds `feed` to the session (appending to `consumed`, which mirrors what the session has
/// seen), then samples and streams up to `max` tokens to `out`.
#[allow(clippy::too_many_arguments)] // the loop's collaborators, passed once per call
pub fn generate(
    session: &mut Session<'_>,
    consumed: &mut Vec<u32>,
    feed: &[u32],
    sampler: &mut Sampler,
    tok: &Tokenizer,
    g: &GenArgs,
    eos: Option<u32>,
    out: &mut dyn Write,
) -> Result<Generated> {
    let mut logits = session.forward(feed)?.to_vec();
    consumed.extend_from_slice(feed);
    let room = session.capacity().saturating_sub(session.position());
    let mut ids = Vec::new();
    let mut text = String::new();
    let mut stream = StreamDecoder::new();
    // A stop string can only end in the new piece, so only this tail of the text is searched.
    let longest_stop = g.stop.iter().map(String::len).max().unwrap_or(0);
    // Bytes of `text` written to `out`; the tail after it may be the start of a stop string.
    let mut printed = 0;
    let mut stopped = false;
    for _ in 0..g.max_tokens.min(room) {
        let next = sampler.sample(&mut logits, consumed);
        if Some(next) == eos {
            break;
        }
        ids.push(next);
        if let Some(piece) = stream.next_piece(tok, &ids)? {
            let mut from = text.len().saturating_sub(longest_stop);
            while !text.is_char_boundary(from) {
                from -= 1;
            }
            text.push_str(&piece);
            let found = g.stop.iter().filter_map(|s| text[from..].find(s.as_str())).min();
            if let Some(cut) = found.map(|at| from + at) {
                out.write_all(&text.as_bytes()[printed.min(cut)..cut])?;
                text.truncate(cut);
                stopped = true;
                break;
            }
            // Hold back a tail that a stop string could still complete, as llama.cpp does,
            // so no part of a stop string is ever printed.
            let upto = text.len() - stop_prefix_len(&text, &g.stop);
            if upto > printed {
                out.write_all(&text.as_bytes()[printed..upto])?;
                out.flush()?;
                printed = upto;
            }
        }
        if session.position() + 1 > session.capacity() {
            break;
        }
        logits.copy_from_slice(session.forward(&[next])?);
        consumed.push(next);
    }
    if !stopped {
        // A held-back tail that did not become a stop string is part of the reply.
        out.write_all(&text.as_bytes()[printed..])?;
        out.flush()?;
        // An incomplete character at the very end stays out of the printed stream.
        text.push_str(&stream.rest(tok, &ids)?);
    }
    Ok(Generated { text, tokens: ids.len() })
}

/// Bytes at the end of `text` that are a proper prefix of some stop string (0 if none).
fn stop_prefix_len(text: &str, stops: &[String]) -> usize {
    stops
        .iter()
        .flat_map(|s| (1..s.len()).rev().filter(|&k| s.is_char_boundary(k)).map(move |k| &s[..k]))
        .filter(|p| text.ends_with(p))
        .map(str::len)
        .max()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::stop_prefix_len;

    #[test]
    fn a_tail_that_could_start_a_stop_string_is_held_back() {
        let stops = ["</s>".to_string(), "User:".to_string(), "é!".to_string()];
        assert_eq!(stop_prefix_len("Hello </", &stops), 2);
        assert_eq!(stop_prefix_len("Hello <", &stops), 1);
        assert_eq!(stop_prefix_len("ask the Use", &stops), 3);
        assert_eq!(stop_prefix_len("café", &stops), "é".len());
        assert_eq!(stop_prefix_len("Hello", &stops), 0);
        // A whole stop string is found by the search, not held here.
        assert_eq!(stop_prefix_len("x</s>", &stops), 0);
        assert_eq!(stop_prefix_len("", &stops), 0);
        assert_eq!(stop_prefix_len("abc", &[]), 0);
    }
}
