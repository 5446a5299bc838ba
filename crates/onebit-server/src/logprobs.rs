//! The OpenAI API's `logprobs` objects from the engine's [`TokenLogprob`]s: chat's
//! `{"content": [{token, logprob, bytes, top_logprobs}]}` and text completions' legacy
//! `{tokens, token_logprobs, top_logprobs, text_offset}` (what lm-evaluation-harness reads
//! with `echo` to score a text).
//!
//! A token's text is its own decoding (a special token, which decodes to nothing, shows as
//! its vocabulary string); `bytes` are that text's UTF-8, so a token holding part of a
//! character shows the replacement character. `text_offset` is where each token starts in
//! the returned `text` (which, with `echo`, starts with the prompt), in characters, counted
//! over the tokens' own texts: where a token reads differently alone than in context (a
//! SentencePiece word's leading space), later offsets are off by that much.

use crate::scheduler::Event;
use onebit_model::{TokenLogprob, Tokenizer};
use serde_json::{json, Value};

/// What token `id` reads as on its own.
pub fn token_text(tok: &Tokenizer, id: u32) -> String {
    match tok.decode(&[id]) {
        Ok(t) if !t.is_empty() => t,
        _ => tok.id_to_token(id).unwrap_or_default(),
    }
}

/// One token's entry with its alternatives, as chat's `logprobs.content` and (with `ids`:
/// each entry's token id too) llama-server's `completion_probabilities` list them.
pub fn entry(tok: &Tokenizer, lp: &TokenLogprob, ids: bool) -> Value {
    let one = |id: u32, logprob: f32| {
        let t = token_text(tok, id);
        let mut e = json!({"token": t, "logprob": logprob, "bytes": t.as_bytes()});
        if ids {
            e["id"] = json!(id);
        }
        e
    };
    let mut e = one(lp.token, lp.logprob);
    e["top_logprobs"] = lp.top.iter().map(|&(id, l)| one(id, l)).collect();
    e
}

/// Chat's `logprobs` object for `lps`.
pub fn chat(tok: &Tokenizer, lps: &[TokenLogprob]) -> Value {
    let content: Vec<Value> = lps.iter().map(|lp| entry(tok, lp, false)).collect();
    json!({"content": content, "refusal": null})
}

/// Text completions' `logprobs` object, built token by token (a stream sends it in parts).
#[derive(Default)]
pub struct TextLogprobs {
    tokens: Vec<String>,
    token_logprobs: Vec<Value>,
    top_logprobs: Vec<Value>,
    text_offset: Vec<usize>,
    /// Characters of the returned text before the next token.
    offset: usize,
}

impl TextLogprobs {
    /// A token with no log-probability (the prompt's first, which nothing predicts).
    pub fn first(&mut self, tok: &Tokenizer, id: u32) {
        self.add(token_text(tok, id), Value::Null, Value::Null);
    }

    /// A token and its alternatives.
    pub fn push(&mut self, tok: &Tokenizer, lp: &TokenLogprob) {
        let mut top = serde_json::Map::new();
        for &(id, l) in &lp.top {
            // Tokens that read alike share a key; the likelier one (first) stays.
            top.entry(token_text(tok, id)).or_insert(json!(l));
        }
        self.add(token_text(tok, lp.token), json!(lp.logprob), Value::Object(top));
    }

    fn add(&mut self, text: String, logprob: Value, top: Value) {
        self.text_offset.push(self.offset);
        self.offset += text.chars().count();
        self.tokens.push(text);
        self.token_logprobs.push(logprob);
        self.top_logprobs.push(top);
    }

    /// Whether no token is waiting to be sent.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The tokens so far as the object, which then starts empty (at the same offset).
    pub fn take(&mut self) -> Value {
        json!({
            "tokens": std::mem::take(&mut self.tokens),
            "token_logprobs": std::mem::take(&mut self.token_logprobs),
            "top_logprobs": std::mem::take(&mut self.top_logprobs),
            "text_offset": std::mem::take(&mut self.text_offset),
        })
    }
}

/// A reply's log-probabilities as its events arrive, in its endpoint's shape.
pub enum ReplyLogprobs {
    /// Not asked for.
    None,
    /// Chat's, the reply's tokens.
    Chat(Vec<TokenLogprob>),
    /// Text completions', the prompt's too under `echo`.
    Text(TextLogprobs),
}

impl ReplyLogprobs {
    /// For a reply reporting `logprobs` alternatives (None: none) on the chat endpoint
    /// (`chat`) or the text completions one.
    pub fn new(logprobs: Option<usize>, chat: bool) -> Self {
        match (logprobs, chat) {
            (None, _) => ReplyLogprobs::None,
            (Some(_), true) => ReplyLogprobs::Chat(Vec::new()),
            (Some(_), false) => ReplyLogprobs::Text(TextLogprobs::default()),
        }
    }

    /// Takes an event's log-probabilities (`first`: the prompt's first token, which
    /// nothing predicts); false for other events.
    pub fn take(&mut self, tok: &Tokenizer, first: Option<u32>, ev: &Event) -> bool {
        match (self, ev) {
            (ReplyLogprobs::Chat(v), Event::Logprob(lp)) => v.push(lp.clone()),
            (ReplyLogprobs::Text(t), Event::Logprob(lp)) => t.push(tok, lp),
            (ReplyLogprobs::Text(t), Event::PromptLogprobs(lps)) => {
                if let Some(id) = first {
                    t.first(tok, id);
                }
                lps.iter().for_each(|lp| t.push(tok, lp));
            }
            (_, Event::Logprob(_) | Event::PromptLogprobs(_)) => {}
            _ => return false,
        }
        true
    }

    /// The `logprobs` field for what arrived since the last call.
    pub fn field(&mut self, tok: &Tokenizer) -> Value {
        match self {
            ReplyLogprobs::None => Value::Null,
            ReplyLogprobs::Chat(v) => {
                let f = chat(tok, v);
                v.clear();
                f
            }
            ReplyLogprobs::Text(t) => t.take(),
        }
    }
}
