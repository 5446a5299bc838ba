//! Sampling flags and the streaming generation loop shared by `run` and `chat`.

use anyhow::Result;
use onebit_model::gbnf::Grammar;
use onebit_model::json_schema::JsonSchema;
use onebit_model::{Engine, Generated, GenerationParams, SamplerConfig, Sequence, Tokenizer};
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
    /// Subtracted from the logit of every token the reply already holds (OpenAI's; -2 to 2).
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub presence_penalty: f32,
    /// Subtracted from a token's logit for each time the reply holds it (OpenAI's; -2 to 2).
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub frequency_penalty: f32,
    /// RNG seed.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Stop when the output contains this string (repeatable).
    #[arg(long)]
    pub stop: Vec<String>,
    /// JSON mode: the reply is one JSON object (tokens that cannot continue one are never
    /// sampled) and ends when it closes.
    #[arg(long)]
    pub json: bool,
    /// Structured output: the reply is one document of this JSON schema (given as JSON
    /// text) and ends when it is complete.
    #[arg(long, value_name = "SCHEMA", conflicts_with = "json_schema_file")]
    pub json_schema: Option<String>,
    /// Structured output with the JSON schema in this file.
    #[arg(long, value_name = "FILE")]
    pub json_schema_file: Option<std::path::PathBuf>,
    /// The reply is a sentence of this GBNF grammar (llama.cpp's syntax, with a `root`
    /// rule) and ends where nothing may follow.
    #[arg(long, value_name = "GBNF", conflicts_with_all = ["grammar_file", "json", "json_schema", "json_schema_file"])]
    pub grammar: Option<String>,
    /// The GBNF grammar in this file (llama.cpp's `--grammar-file`).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["json", "json_schema", "json_schema_file"])]
    pub grammar_file: Option<std::path::PathBuf>,
}

impl GenArgs {
    /// The generation settings of the flags (a JSON schema compiled or a grammar parsed, or
    /// refused by name).
    pub fn params(&self) -> Result<GenerationParams> {
        let sampling = SamplerConfig {
            temperature: self.temp,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            repeat_penalty: self.repeat_penalty,
            seed: self.seed,
            ..SamplerConfig::default()
        };
        let text = match (&self.json_schema, &self.json_schema_file) {
            (Some(t), _) => Some(t.clone()),
            (None, Some(f)) => Some(
                std::fs::read_to_string(f)
                    .map_err(|e| anyhow::anyhow!("--json-schema-file {}: {e}", f.display()))?,
            ),
            (None, None) => None,
        };
        let json_schema = match text {
            Some(t) => Some(std::sync::Arc::new(JsonSchema::from_json(&t)?)),
            None => None,
        };
        let grammar = match (&self.grammar, &self.grammar_file) {
            (Some(t), _) => Some(Grammar::parse(t)?),
            (None, Some(f)) => {
                let t = std::fs::read_to_string(f)
                    .map_err(|e| anyhow::anyhow!("--grammar-file {}: {e}", f.display()))?;
                Some(Grammar::parse(&t).map_err(|e| anyhow::anyhow!("{}: {e}", f.display()))?)
            }
            (None, None) => None,
        };
        Ok(GenerationParams {
            max_tokens: self.max_tokens,
            sampling,
            stop: self.stop.clone(),
            logprobs: None,
            adjust: onebit_model::LogitAdjust {
                bias: Vec::new(),
                presence_penalty: self.presence_penalty,
                frequency_penalty: self.frequency_penalty,
            },
            json_object: self.json,
            json_schema,
            schema_optional: false,
            schema_more: 0,
            grammar: grammar.map(std::sync::Arc::new),
        })
    }

    /// The size of a one-sequence session of `ctx` positions with the `--kv-cache` type.
    pub fn session_options(&self, ctx: usize) -> Result<onebit_model::SessionOptions> {
        let kv = onebit_model::KvDtype::from_name(&self.kv_cache).ok_or_else(|| {
            anyhow::anyhow!("unknown --kv-cache '{}' (f16, f32, q8)", self.kv_cache)
        })?;
        Ok(onebit_model::SessionOptions { max_ctx: ctx, max_batch: 128, slots: 1, kv })
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
        Ok(self.params()?.sampling.validate()?)
    }
}

/// Feeds `feed` to the session (appending to `consumed`, which mirrors what the session has
/// seen), then generates `seq` on to its end and streams it to `out` (`onebit_model::generate`
/// does the work): a reply's start, or its continuation on another engine (a mesh formed
/// again, fed the whole history).
pub fn continue_reply(
    session: &mut dyn Engine,
    consumed: &mut Vec<u32>,
    feed: &[u32],
    seq: &mut Sequence,
    tok: &Tokenizer,
    out: &mut dyn Write,
) -> Result<Generated> {
    let mut failed = None;
    let r = onebit_model::generate(session, consumed, feed, seq, tok, &mut |piece| match out
        .write_all(piece.as_bytes())
        .and_then(|_| out.flush())
    {
        Ok(()) => true,
        Err(e) => {
            failed = Some(e);
            false
        }
    })?;
    if let Some(e) = failed {
        return Err(e.into());
    }
    Ok(r)
}
