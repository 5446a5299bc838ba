//! `onebit run`: generate text from a prompt, streaming tokens as they come.

use super::generate::{continue_reply, GenArgs};
use super::mesh_args::MeshArgs;
use anyhow::{bail, Result};
use onebit_model::Sequence;
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
    let mut loaded = a.mesh.load(&a.m, a.g.session_options(a.g.ctx)?)?;
    let (vocab, eos, max_positions) = {
        let c = &loaded.0.config;
        (c.vocab, c.eos, c.max_positions)
    };
    tok.check_model_vocab(vocab)?;
    let prompt = tok.encode(&a.prompt, true)?;
    if prompt.is_empty() {
        bail!("the prompt encodes to no tokens");
    }
    let ctx = a.g.ctx.min(max_positions);
    if prompt.len() >= ctx {
        bail!("prompt of {} tokens does not fit the context of {ctx}", prompt.len());
    }
    let opts = a.g.session_options(ctx)?;
    let mut stdout = std::io::stdout().lock();
    let t0 = Instant::now();
    let mut consumed = Vec::with_capacity(ctx);
    let mut seq = Sequence::new(a.g.params()?, vocab, eos)?;
    let mut feed = prompt.clone();
    // The prompt first, as llama.cpp prints it, so the output reads as one text.
    write!(stdout, "{}", a.prompt)?;
    loop {
        let (model, comm, split) = loaded;
        let mut runner = a.mesh.runner(&model, comm, &split, opts)?;
        match continue_reply(runner.engine(), &mut consumed, &feed, &mut seq, &tok, &mut stdout) {
            Ok(out) => {
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
                return Ok(());
            }
            // A mesh node failed mid-reply: the head forms the mesh again from the workers
            // still answering (or takes the whole model where none does) and feeds it the
            // whole history, so the reply goes on where it stopped. The history is read as
            // a prompt, whose rounding differs from step-by-step decode's: a greedy reply's
            // later tokens may differ from what one node would have printed.
            Err(e) if a.mesh.mesh.is_some() && runner.engine().broken().is_some() => {
                eprintln!("\n{e:#}: forming the mesh again from the nodes that answer");
                drop(runner);
                loaded = a.mesh.reform_or_alone(&a.m, opts, &format!("{e:#}"))?;
                consumed.clear();
                feed = prompt.iter().chain(seq.tokens()).copied().collect();
            }
            Err(e) => return Err(e),
        }
    }
}
