//! `onebit chat`: an interactive conversation on standard input, rendered with the model's
//! chat template. Each turn feeds only the tokens the session has not seen yet (the KV cache
//! keeps the conversation so far).

use super::generate::{continue_reply, GenArgs};
use anyhow::Result;
use onebit_model::chat_template::{ChatTemplate, Message};
use onebit_model::Sequence;
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
    let mut loaded = a.mesh.load(&a.m, a.g.session_options(a.g.ctx)?)?;
    let (vocab, eos, max_positions) = {
        let c = &loaded.0.config;
        (c.vocab, c.eos, c.max_positions)
    };
    tok.check_model_vocab(vocab)?;
    let ctx = a.g.ctx.min(max_positions);
    let opts = a.g.session_options(ctx)?;
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
    // A reply cut short by a mesh node's failure: the whole history to feed the mesh formed
    // again, and the reply to go on with.
    let mut resume: Option<(Vec<u32>, Sequence, String)> = None;
    loop {
        let (model, comm, split) = loaded;
        let mut runner = a.mesh.runner(&model, comm, &split, opts)?;
        let session = runner.engine();
        loop {
            let (feed, mut seq) = match resume.take() {
                Some((history, seq, _)) => (history, seq),
                None => {
                    raw.clear();
                    if input.read_until(b'\n', &mut raw)? == 0 {
                        break;
                    }
                    let line = match String::from_utf8(raw.clone()) {
                        Ok(l) => l,
                        Err(_) => {
                            eprintln!(
                                "(that line is not valid UTF-8: invalid bytes shown as U+FFFD)"
                            );
                            String::from_utf8_lossy(&raw).into_owned()
                        }
                    };
                    let line = line.trim_end_matches(['\n', '\r']).to_string();
                    if line.trim().is_empty() {
                        break;
                    }
                    messages.push(Message { role: "user".into(), content: line });
                    let Some(ids) =
                        prompt_ids(&a, &tok, &template, &mut messages, ctx, reply_room)?
                    else {
                        continue;
                    };
                    // Reuse the cache when the new prompt extends what the session has seen.
                    let shared = consumed.iter().zip(&ids).take_while(|(a, b)| a == b).count();
                    if shared < consumed.len() {
                        session.reset_slot(0)?;
                        consumed.clear();
                    }
                    (ids, Sequence::new(a.g.params()?, vocab, eos)?)
                }
            };
            let fresh = &feed[consumed.len()..];
            match continue_reply(session, &mut consumed, fresh, &mut seq, &tok, &mut stdout) {
                Ok(out) => {
                    writeln!(stdout)?;
                    messages.push(Message { role: "assistant".into(), content: out.text });
                }
                // A mesh node failed mid-reply: form the mesh again from the nodes that
                // answer, feed it the whole history and go on with the reply.
                Err(e) if a.mesh.mesh.is_some() && session.broken().is_some() => {
                    eprintln!("\n{e:#}: forming the mesh again from the nodes that answer");
                    let history: Vec<u32> = feed.iter().chain(seq.tokens()).copied().collect();
                    resume = Some((history, seq, format!("{e:#}")));
                    consumed.clear();
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        let Some((_, _, why)) = &resume else {
            if let Some(line) = runner.wire_summary(&split) {
                eprintln!("{line}");
            }
            return Ok(());
        };
        let why = why.clone();
        drop(runner);
        loaded = a.mesh.reform_or_alone(&a.m, opts, &why)?;
    }
}

/// The token ids of the conversation's prompt, dropping the oldest turns (never the system
/// prompt) until it leaves room for a reply, as llama.cpp's context shift discards old
/// tokens; None (and the message taken back) when the last message alone does not fit.
fn prompt_ids(
    a: &Args,
    tok: &onebit_model::Tokenizer,
    template: &ChatTemplate,
    messages: &mut Vec<Message>,
    ctx: usize,
    reply_room: usize,
) -> Result<Option<Vec<u32>>> {
    let first = usize::from(a.system.is_some());
    let mut dropped = 0;
    let ids = loop {
        let ids = tok.encode(&template.render(messages)?, false)?;
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
        return Ok(None);
    }
    Ok(Some(ids))
}
