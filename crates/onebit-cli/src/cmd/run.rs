//! `onebit run`: generate text from a prompt, streaming tokens as they come.

use anyhow::{bail, Result};
use onebit_model::{Sampler, SamplerConfig, Session, Tokenizer};
use std::io::Write;
use std::time::Instant;

/// Flags of `onebit run`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    m: super::model_args::ModelArgs,
    /// Prompt text.
    #[arg(short, long)]
    prompt: String,
    /// Most tokens to generate.
    #[arg(short = 'n', long, default_value_t = 128)]
    max_tokens: usize,
    /// Context length (prompt + generation).
    #[arg(long, default_value_t = 2048)]
    ctx: usize,
    /// tokenizer.json (default: inside the model directory or beside the model file).
    #[arg(long)]
    tokenizer: Option<String>,
    /// Sampling temperature (0 = greedy).
    #[arg(long, default_value_t = 0.0)]
    temp: f32,
    /// Top-k (0 = off).
    #[arg(long, default_value_t = 40)]
    top_k: usize,
    /// Top-p.
    #[arg(long, default_value_t = 0.95)]
    top_p: f32,
    /// Min-p.
    #[arg(long, default_value_t = 0.05)]
    min_p: f32,
    /// Repetition penalty (1 = off).
    #[arg(long, default_value_t = 1.0)]
    repeat_penalty: f32,
    /// RNG seed.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Stop when the output contains this string (repeatable).
    #[arg(long)]
    stop: Vec<String>,
}

/// Runs `onebit run`.
pub fn run(a: Args) -> Result<()> {
    let tok = match &a.tokenizer {
        Some(p) => Tokenizer::from_file(p)?,
        None => Tokenizer::for_model(&a.m.model)?,
    };
    let model = a.m.load()?;
    let c = &model.config;
    let prompt = tok.encode(&a.prompt, true)?;
    if prompt.is_empty() {
        bail!("the prompt encodes to no tokens");
    }
    let ctx = a.ctx.min(c.max_positions);
    if prompt.len() >= ctx {
        bail!("prompt of {} tokens does not fit the context of {ctx}", prompt.len());
    }
    let cfg = SamplerConfig {
        temperature: a.temp,
        top_k: a.top_k,
        top_p: a.top_p,
        min_p: a.min_p,
        repeat_penalty: a.repeat_penalty,
        seed: a.seed,
        ..SamplerConfig::default()
    };
    let mut sampler = Sampler::new(cfg, c.vocab);
    let mut session = Session::new(&model, ctx, 128);
    let mut history = prompt.clone();
    let t0 = Instant::now();
    let mut logits = session.forward(&prompt)?;
    let prompt_s = t0.elapsed().as_secs_f64();
    let (mut out_ids, mut printed) = (Vec::new(), 0usize);
    let mut stdout = std::io::stdout().lock();
    let t1 = Instant::now();
    for _ in 0..a.max_tokens.min(ctx - prompt.len()) {
        let next = sampler.sample(logits, &history);
        if Some(next) == c.eos {
            break;
        }
        history.push(next);
        out_ids.push(next);
        let text = tok.decode(&out_ids)?;
        if let Some(cut) = a.stop.iter().filter_map(|s| text.find(s.as_str())).min() {
            stdout.write_all(&text.as_bytes()[printed.min(cut)..cut])?;
            break;
        }
        // Hold back text that may still change (an incomplete UTF-8 sequence decodes as U+FFFD).
        if text.len() > printed && !text.ends_with('\u{FFFD}') {
            stdout.write_all(&text.as_bytes()[printed..])?;
            stdout.flush()?;
            printed = text.len();
        }
        logits = session.forward(&[next])?;
    }
    writeln!(stdout)?;
    let gen_s = t1.elapsed().as_secs_f64();
    eprintln!(
        "prompt: {} tokens in {:.2} s ({:.1} tok/s) · generated: {} tokens in {:.2} s ({:.1} tok/s) · kernel {}",
        prompt.len(),
        prompt_s,
        prompt.len() as f64 / prompt_s,
        out_ids.len(),
        gen_s,
        out_ids.len() as f64 / gen_s.max(1e-9),
        model.kernel_name()
    );
    Ok(())
}
