//! `onebit perplexity`: perplexity of a model on a text file, computed as llama.cpp's
//! `llama-perplexity` computes it (chunks of `--ctx` tokens, the second half of each scored),
//! printing the running value per chunk and the final one with its error bar.

use anyhow::{bail, Context, Result};
use onebit_model::perplexity::{perplexity, PerplexityOptions};
use std::io::Write;
use std::time::Instant;

/// Flags of `onebit perplexity`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    m: super::model_args::ModelArgs,
    /// Text file to score.
    #[arg(short = 'f', long = "file")]
    file: String,
    /// Tokens per chunk (llama-perplexity's -c); default: 512 or the model's context.
    #[arg(short = 'c', long)]
    ctx: Option<usize>,
    /// Score at most this many chunks.
    #[arg(long)]
    chunks: Option<usize>,
    /// Rows per forward pass.
    #[arg(short = 'b', long, default_value_t = 512)]
    batch: usize,
    /// KV cache type: f16, f32 or q8.
    #[arg(long, default_value = "f16")]
    kv_cache: String,
    /// tokenizer.json (default: inside the model directory or beside the model file).
    #[arg(long)]
    tokenizer: Option<String>,
}

/// Runs `onebit perplexity`.
pub fn run(a: Args) -> Result<()> {
    let text = std::fs::read_to_string(&a.file)
        .with_context(|| format!("reading text file {}", a.file))?;
    let tok = match &a.tokenizer {
        Some(p) => onebit_model::Tokenizer::from_file(p)?,
        None => onebit_model::Tokenizer::for_model(&a.m.model)?,
    };
    let kv = onebit_model::KvDtype::from_name(&a.kv_cache)
        .with_context(|| format!("unknown --kv-cache '{}' (f16, f32, q8)", a.kv_cache))?;
    let model = a.m.load()?;
    let n_ctx = a.ctx.unwrap_or(512.min(model.config.max_positions));
    let tokens = tok.encode(&text, true)?;
    if tokens.len() < 2 * n_ctx {
        bail!(
            "{}: {} tokens; at least 2 x {n_ctx} are needed (use a smaller --ctx)",
            a.file,
            tokens.len()
        );
    }
    let o =
        PerplexityOptions { n_ctx, batch: a.batch, max_chunks: a.chunks, bos: tok.added_bos(), kv };
    eprintln!(
        "{}: {} tokens, {} chunks of {n_ctx} (second half of each scored)",
        a.file,
        tokens.len(),
        (tokens.len() / n_ctx).min(a.chunks.unwrap_or(usize::MAX))
    );
    let t0 = Instant::now();
    let mut out = std::io::stdout().lock();
    let p = perplexity(&model, &tokens, &o, &mut |p| {
        let _ = write!(out, "[{}]{:.4},", p.chunks, p.ppl);
        let _ = out.flush();
    })?;
    writeln!(out)?;
    writeln!(out, "Final estimate: PPL = {:.4} +/- {:.5}", p.ppl, p.error)?;
    eprintln!(
        "{} tokens scored in {:.1} s ({:.0} tokens/s evaluated)",
        p.tokens,
        t0.elapsed().as_secs_f64(),
        (p.chunks * n_ctx) as f64 / t0.elapsed().as_secs_f64()
    );
    Ok(())
}
