//! `onebit run`: generate text from a prompt, streaming tokens as they come.

use super::generate::{generate, GenArgs};
use super::mesh_args::MeshArgs;
use anyhow::{bail, Result};
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
    #[command(flatten)]
    g: GenArgs,
    #[command(flatten)]
    mesh: MeshArgs,
}

/// Runs `onebit run`.
pub fn run(a: Args) -> Result<()> {
    a.g.check()?;
    let tok = a.g.tokenizer(&a.m.model)?;
    let (model, comm, split) = a.mesh.load(&a.m, a.g.session_options(a.g.ctx)?)?;
    tok.check_model_vocab(model.config.vocab)?;
    let c = &model.config;
    let prompt = tok.encode(&a.prompt, true)?;
    if prompt.is_empty() {
        bail!("the prompt encodes to no tokens");
    }
    let ctx = a.g.ctx.min(c.max_positions);
    if prompt.len() >= ctx {
        bail!("prompt of {} tokens does not fit the context of {ctx}", prompt.len());
    }
    let mut runner = a.mesh.runner(&model, comm, &split, a.g.session_options(ctx)?)?;
    let mut stdout = std::io::stdout().lock();
    let t0 = Instant::now();
    let mut consumed = Vec::with_capacity(ctx);
    // The prompt first, as llama.cpp prints it, so the output reads as one text.
    write!(stdout, "{}", a.prompt)?;
    let out = generate(runner.engine(), &mut consumed, &prompt, &tok, &a.g, c.eos, &mut stdout)?;
    writeln!(stdout)?;
    let s = t0.elapsed().as_secs_f64();
    eprintln!(
        "prompt: {} tokens · generated: {} tokens · {:.2} s in all ({:.1} tok/s overall) · kernel {}",
        prompt.len(),
        out.tokens,
        s,
        (prompt.len() + out.tokens) as f64 / s,
        model.kernel_name()
    );
    if let Some(line) = runner.wire_summary(&split) {
        eprintln!("{line}");
    }
    Ok(())
}
