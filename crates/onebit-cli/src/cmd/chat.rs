//! `onebit chat`: an interactive conversation on standard input, rendered with the model's
//! chat template. Each turn feeds only the tokens the session has not seen yet (the KV cache
//! keeps the conversation so far).

use super::generate::{generate, GenArgs};
use anyhow::Result;
use onebit_model::chat_template::{ChatTemplate, Message};
use std::io::{BufRead, Write};

/// Flags of `onebit chat`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    m: super::model_args::ModelArgs,
    /// System prompt.
    #[arg(long)]
    system: Option<String>,
    #[command(flatten)]
    g: GenArgs,
    #[command(flatten)]
    mesh: super::mesh_args::MeshArgs,
}

/// Runs `onebit chat`.
pub fn run(a: Args) -> Result<()> {
    a.g.check()?;
    let tok = a.g.tokenizer(&a.m.model)?;
    let template = ChatTemplate::for_model(&a.m.model)?;
    let (model, comm, split) = a.mesh.load(&a.m, a.g.session_options(a.g.ctx)?)?;
    tok.check_model_vocab(model.config.vocab)?;
    let c = &model.config;
    let ctx = a.g.ctx.min(c.max_positions);
    let mut runner = a.mesh.runner(&model, comm, &split, a.g.session_options(ctx)?)?;
    let session = runner.engine();
    let mut consumed: Vec<u32> = Vec::with_capacity(ctx);
    let mut messages: Vec<Message> =
        a.system.iter().map(|s| Message { role: "system".into(), content: s.clone() }).collect();
    if !template.is_model_template() {
        eprintln!("(no chat template found beside the model: using a plain 'role: text' layout)");
    }
    let stdin = std::io::stdin();
    let mut stdout = std::io::stdout().lock();
    eprintln!("chat with {} — empty line or end of input to quit", a.m.model);
    // Room kept for a reply when old turns must go: what -n asks, at most a quarter of it all.
    let reply_room = a.g.max_tokens.clamp(1, (ctx / 4).max(1));
    let mut input = stdin.lock();
    let mut raw = Vec::new();
    loop {
        raw.clear();
        if input.read_until(b'\n', &mut raw)? == 0 {
            break;
        }
        let line = match String::from_utf8(raw.clone()) {
            Ok(l) => l,
            Err(_) => {
                eprintln!("(that line is not valid UTF-8: invalid bytes shown as U+FFFD)");
                String::from_utf8_lossy(&raw).into_owned()
            }
        };
        let line = line.trim_end_matches(['\n', '\r']).to_string();
        if line.trim().is_empty() {
            break;
        }
        messages.push(Message { role: "user".into(), content: line });
        // Drop the oldest turns (never the system prompt) until the prompt leaves room for a
        // reply, as llama.cpp's context shift discards old tokens.
        let first = usize::from(a.system.is_some());
        let mut dropped = 0;
        let ids = loop {
            let ids = tok.encode(&template.render(&messages)?, false)?;
            if ids.len() + reply_room <= ctx || messages.len() <= first + 1 {
                break ids;
            }
            messages.remove(first);
            dropped += 1;
        };
        if dropped > 0 {
            eprintln!("(context of {ctx} tokens full: the oldest {dropped} message(s) dropped)");
        }
        if ids.len() >= ctx {
            eprintln!(
                "(that message alone is {} tokens, more than the context of {ctx}: not sent)",
                ids.len()
            );
            messages.pop();
            continue;
        }
        // Reuse the cache when the new prompt extends what the session has seen.
        let shared = consumed.iter().zip(&ids).take_while(|(a, b)| a == b).count();
        if shared < consumed.len() {
            session.reset_slot(0)?;
            consumed.clear();
        }
        let feed = &ids[consumed.len()..];
        let out = generate(session, &mut consumed, feed, &tok, &a.g, c.eos, &mut stdout)?;
        writeln!(stdout)?;
        messages.push(Message { role: "assistant".into(), content: out.text });
    }
    if let Some(line) = runner.wire_summary(&split) {
        eprintln!("{line}");
    }
    Ok(())
}
